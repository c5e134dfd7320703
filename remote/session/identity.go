package session

// Identity keys (format v2) on the client: made, sealed and published on
// first use, then opened and checked against what the server publishes.
//
// Migration of v1 accounts: an account made before v2 has no identity keys.
// The first login or `kumo whoami` of a v2 client finds none, makes them, seals
// them under the master key and publishes them (once: the server refuses to
// replace published keys). Nothing else of the account changes.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/client"
)

// ErrIdentityMismatch is returned when what the server publishes for the
// account is not the account's own identity: public keys other than those
// sealed with the master key, none although the session saw some, or another
// fingerprint than the session saw.
var ErrIdentityMismatch = errors.New("the server publishes identity keys for this account that are not its own (the server or someone on the way may be hostile): do not share files with this account until resolved")

// ErrIdentityUnsupported is returned when the server has no identity-key API
// (a server older than format v2).
var ErrIdentityUnsupported = errors.New("the server does not support identity keys (it predates format v2)")

// EnsureIdentity returns the account's identity keys: it opens the sealed
// keys the server holds and checks that the public keys the server publishes,
// to the owner and to other accounts (GET /v1/keys), are those sealed inside,
// and equal to the fingerprint this session saw before (s.Identity). An
// account without identity keys gets new ones (created is then true). On
// success s.Identity holds the fingerprint; the caller saves the session.
func EnsureIdentity(ctx context.Context, c *client.Client, s *Session) (id *keys.Identity, created bool, err error) {
	rec, err := c.Identity(ctx)
	if errors.Is(err, api.ErrNotFound) {
		if s.Identity != "" {
			return nil, false, fmt.Errorf("identity keys: the server no longer offers them, but this session saw %s: %w", s.Identity, ErrIdentityMismatch)
		}
		return nil, false, ErrIdentityUnsupported
	}
	if err != nil {
		return nil, false, fmt.Errorf("identity keys: %w", err)
	}
	if len(rec.Sealed) == 0 && len(rec.BoxPublic) == 0 && len(rec.SignPublic) == 0 {
		if s.Identity != "" {
			return nil, false, fmt.Errorf("identity keys: the server says the account has none, but this session saw %s: %w", s.Identity, ErrIdentityMismatch)
		}
		rec, created, err = publishIdentity(ctx, c, s)
		if err != nil {
			return nil, false, err
		}
	}
	id, err = keys.OpenIdentity(s.Master, s.Email, rec.Sealed)
	if err != nil {
		return nil, false, fmt.Errorf("identity keys: the sealed keys the server holds do not open with the account's master key (changed by the server?): %w: %w", ErrIdentityMismatch, err)
	}
	if err := samePublic(id, rec.BoxPublic, rec.SignPublic, "to the account itself"); err != nil {
		return nil, false, err
	}
	// What other accounts read when they share with this one.
	pk, err := c.PublicKeys(ctx, s.Email)
	if errors.Is(err, api.ErrNotFound) {
		return nil, false, fmt.Errorf("identity keys: the server publishes none for %s to other accounts: %w", s.Email, ErrIdentityMismatch)
	}
	if err != nil {
		return nil, false, fmt.Errorf("identity keys: %w", err)
	}
	if NormalizeEmail(pk.Email) != s.Email {
		return nil, false, fmt.Errorf("identity keys: asked for %s, the server answered for %q: %w", s.Email, pk.Email, ErrIdentityMismatch)
	}
	if err := samePublic(id, pk.BoxPublic, pk.SignPublic, "to other accounts"); err != nil {
		return nil, false, err
	}
	fp := id.Public.Fingerprint()
	if s.Identity != "" && s.Identity != fp {
		return nil, false, fmt.Errorf("identity keys: fingerprint %s, this session saw %s: %w", fp, s.Identity, ErrIdentityMismatch)
	}
	s.Identity = fp
	s.SealedIdentity = base64.StdEncoding.EncodeToString(rec.Sealed)
	return id, created, nil
}

// SavedIdentity opens the identity keys the session kept at its last
// EnsureIdentity, for a mount started while the server is unreachable:
// they must open under the master key and have the fingerprint the session
// saw (s.Identity).
func SavedIdentity(s *Session) (*keys.Identity, error) {
	if len(s.SealedIdentity) == 0 || s.Identity == "" {
		return nil, errors.New("identity keys: none kept in the session (mount once with the server reachable)")
	}
	sealed, err := base64.StdEncoding.DecodeString(s.SealedIdentity)
	if err != nil {
		return nil, fmt.Errorf("identity keys kept in the session: %w", err)
	}
	id, err := keys.OpenIdentity(s.Master, s.Email, sealed)
	if err != nil {
		return nil, fmt.Errorf("identity keys kept in the session do not open with the master key: %w", err)
	}
	if fp := id.Public.Fingerprint(); fp != s.Identity {
		return nil, fmt.Errorf("identity keys kept in the session: fingerprint %s, the session saw %s: %w", fp, s.Identity, ErrIdentityMismatch)
	}
	return id, nil
}

func samePublic(id *keys.Identity, box, sign []byte, where string) error {
	pub, err := keys.PublicFromBytes(box, sign)
	if err != nil || !pub.Equal(id.Public) {
		return fmt.Errorf("identity keys: the public keys the server shows %s are not the account's own (fingerprint %s): %w",
			where, id.Public.Fingerprint(), ErrIdentityMismatch)
	}
	return nil
}

// publishIdentity makes, seals and publishes new identity keys. If another
// client of the account published first, it returns theirs.
func publishIdentity(ctx context.Context, c *client.Client, s *Session) (api.Identity, bool, error) {
	id, err := keys.NewIdentity()
	if err != nil {
		return api.Identity{}, false, err
	}
	sealed, err := keys.SealIdentity(s.Master, s.Email, id)
	if err != nil {
		return api.Identity{}, false, err
	}
	rec := api.Identity{Sealed: sealed, BoxPublic: id.Public.Box[:], SignPublic: id.Public.Sign[:]}
	err = c.PutIdentity(ctx, rec)
	if errors.Is(err, api.ErrExists) {
		rec, err = c.Identity(ctx)
		if err != nil {
			return api.Identity{}, false, fmt.Errorf("identity keys: %w", err)
		}
		return rec, false, nil
	}
	if err != nil {
		return api.Identity{}, false, fmt.Errorf("identity keys: publish: %w", err)
	}
	return rec, true, nil
}

// PeerKeys returns the public identity keys the server publishes for another
// account (to share with it), and their fingerprint for the user to compare.
func PeerKeys(ctx context.Context, c *client.Client, email string) (keys.PublicIdentity, string, error) {
	email = NormalizeEmail(email)
	pk, err := c.PublicKeys(ctx, email)
	if err != nil {
		return keys.PublicIdentity{}, "", fmt.Errorf("public keys of %s: %w", email, err)
	}
	if NormalizeEmail(pk.Email) != email {
		return keys.PublicIdentity{}, "", fmt.Errorf("public keys of %s: the server answered for %q", email, pk.Email)
	}
	pub, err := keys.PublicFromBytes(pk.BoxPublic, pk.SignPublic)
	if err != nil {
		return keys.PublicIdentity{}, "", fmt.Errorf("public keys of %s: %w", email, err)
	}
	return pub, pub.Fingerprint(), nil
}
