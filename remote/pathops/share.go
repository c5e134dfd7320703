package pathops

// Shared folders (docs/FORMAT.md §3g): a directory subtree of the owner's
// tree whose records are sealed under the share's own key generations and
// signed by their writer. This file holds the FS hooks that open, check and
// seal such records, and the owner's and members' operations.
//
// Sharing an existing folder re-seals its subtree: every node's attributes
// and every entry's name under the share's key id, and every file's chunks
// re-encrypted with the share's chunk keys (a chunk's keys are those of the
// key id of the attributes naming it, FORMAT §2, so a member could not open a
// chunk sealed under the owner's home keys). The owner's share secrets derive
// from its master key, so an interrupted share is resumed by running it again.
//
// Revoking a member rotates the share to a new generation: records written
// from then on are sealed under it. Removing a reader leaves older records
// under the generation they were written in (lazy rotation, as Keybase
// does: what a member already downloaded cannot be recalled anyway);
// lookups try the name MAC of every generation this client holds, newest
// first. Removing or demoting a writer also re-seals the whole folder under
// the new generation, signed by the owner, and then raises the roster's
// lowest accepted generation (finishRevoke), so that the former writer,
// who keeps its key and the old secrets, can no longer make a record that
// clients accept.

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
)

// ErrShare is the error of a shared-folder record this client must refuse:
// outside the share it claims, of a share this client does not hold, or not
// signed by a writer of the share. Reads return it instead of data.
var ErrShare = errors.New("shared folder record refused")

// ErrNotInShare is returned for a write this FS may not make there: into a
// shared folder through the home tree, or outside the share of a share view.
var ErrNotInShare = errors.New("write outside the tree this view writes to")

// Share is one shared folder as this client knows it: its owner-signed
// roster (verified against the owner's pinned keys) and the secrets of the
// key generations this client holds.
type Share struct {
	ID         uint64
	OwnerID    string // the owner's account id
	OwnerEmail string
	Root       uint64 // the share root's node id in the owner's tree
	Folder     string // the root's name in the owner's tree
	Owned      bool
	Role       keys.Role // this account's role (RoleWriter for the owner)
	Roster     *keys.Roster
	Secrets    map[uint32]keys.Key // by generation

	ciphers map[uint32]*chunk.Cipher
	// pending marks a share whose folder this account began to re-seal
	// but which the server does not know yet (kumo share was interrupted).
	pending bool
}

// Gen is the share's current key generation.
func (s *Share) Gen() uint32 { return s.Roster.Gen }

// Name is how the CLI names a share: OWNER_EMAIL/FOLDER.
func (s *Share) Name() string { return s.OwnerEmail + "/" + s.Folder }

// gens returns the generations this client holds, newest first.
func (s *Share) gens() []uint32 {
	out := make([]uint32, 0, len(s.Secrets))
	for g := range s.Secrets {
		out = append(out, g)
	}
	slices.Sort(out)
	slices.Reverse(out)
	return out
}

func (s *Share) kid(gen uint32) meta.KeyID { return meta.KeyID{Share: s.ID, Gen: gen} }

// WithShares returns a copy of f that opens (and checks the signatures of)
// records of the given shares, and signs its writes in them with me.
func (f *FS) WithShares(me *keys.Identity, shares ...*Share) *FS {
	c := *f
	c.me = me
	c.shares = make(map[uint64]*Share, len(f.shares)+len(shares))
	for id, s := range f.shares {
		c.shares[id] = s
	}
	for _, s := range shares {
		if s.ciphers == nil {
			s.ciphers = map[uint32]*chunk.Cipher{}
			for g, secret := range s.Secrets {
				k := keys.ShareSubkeys(secret, s.ID, g)
				c.sealer = c.sealer.WithShare(s.kid(g), k)
				s.ciphers[g] = chunk.NewCipher(k.ChunkID, k.Chunks)
			}
		} else {
			for g, secret := range s.Secrets {
				c.sealer = c.sealer.WithShare(s.kid(g), keys.ShareSubkeys(secret, s.ID, g))
			}
		}
		c.shares[s.ID] = s
	}
	return &c
}

// View returns an FS of share s alone, as a member (or its owner) sees it:
// rooted at the share root, its requests scoped to the share on the owner's
// account (the Kumo-Share header), its writes sealed under the share's
// current generation and signed with this account's identity.
func (f *FS) View(s *Share) (*FS, error) {
	if f.me == nil || f.shares[s.ID] != s {
		return nil, fmt.Errorf("share %016x: not loaded in this client (WithShares)", s.ID)
	}
	c := *f
	c.c = f.c.ForShare(s.OwnerID, s.ID)
	c.scope = s
	c.cipher = s.ciphers[s.Gen()]
	if c.cipher == nil {
		return nil, fmt.Errorf("share %016x: this client lacks the current generation %d's secret", s.ID, s.Gen())
	}
	return &c, nil
}

// Scope returns the share a View is of (nil for the home tree).
func (f *FS) Scope() *Share { return f.scope }

func (f *FS) rootID() uint64 {
	if f.scope != nil {
		return f.scope.Root
	}
	return api.RootID
}

// checkRoot requires a view's root to be sealed under its share.
func (f *FS) checkRoot(n api.Node) error {
	if f.scope == nil {
		return nil
	}
	if kid, _ := meta.RecordKeyID(n.Attrs); kid.Share != f.scope.ID || n.Type != api.TypeDir {
		return fmt.Errorf("share %s: root node %d is not a directory of the share: %w", f.scope.Name(), n.ID, ErrShare)
	}
	return nil
}

// verified checks the signature of a share record and returns the sealed
// record without it; a home record is returned as it is.
func (f *FS) verified(kind keys.RecordKind, id uint64, nameMAC string, b []byte) ([]byte, error) {
	kid, ok := meta.RecordKeyID(b)
	if !ok || kid.Share == 0 {
		return b, nil // home tree (or too short: the opener says so)
	}
	s := f.shares[kid.Share]
	if s == nil {
		return nil, fmt.Errorf("%w: sealed for shared folder %016x, which this client has not joined (if you were sharing this folder when kumo share was interrupted, run it again)", ErrShare, kid.Share)
	}
	if f.history {
		return s.VerifyHistory(kind, id, nameMAC, b)
	}
	return s.Verify(kind, id, nameMAC, b)
}

// Verify checks the signature of b, a record of share s (attributes of node
// id, or the name under parent id whose MAC is nameMAC), against the
// roster: of a generation the roster still accepts (MinGen), signed by the
// owner or a writer allowed to sign that generation.
// It returns the sealed record without the signature. The drive uses it too.
func (s *Share) Verify(kind keys.RecordKind, id uint64, nameMAC string, b []byte) ([]byte, error) {
	return s.verify(kind, id, nameMAC, b, false)
}

// VerifyOwn checks b as Verify does, and also accepts a record signed with
// self, this account's own signing key. The drive keeps its local records
// of a shared folder's nodes sealed and signed by this account whatever its
// role (a reader's drive too: a directory's link count, a kept mark), and a
// signature under this account's key was made by this account. The lowest
// accepted generation still applies.
func (s *Share) VerifyOwn(self [keys.PublicKeySize]byte, kind keys.RecordKind, id uint64, nameMAC string, b []byte) ([]byte, error) {
	sealed, signer, sig, err := keys.SplitRecord(b)
	if err == nil && signer == keys.SignerOf(self) {
		if kid, ok := meta.RecordKeyID(b); ok && kid.Share == s.ID && kid.Gen >= s.Roster.MinGen && kid.Gen <= s.Roster.Gen {
			return s.checkSig(self, kind, id, nameMAC, sealed, sig)
		}
	}
	return s.verify(kind, id, nameMAC, b, false)
}

// verify checks b as Verify does, or, for a kept version (past), by the
// history rule of keys.Roster.HistorySigner.
func (s *Share) verify(kind keys.RecordKind, id uint64, nameMAC string, b []byte, past bool) ([]byte, error) {
	kid, ok := meta.RecordKeyID(b)
	if !ok || kid.Share != s.ID {
		return nil, fmt.Errorf("%w: %s: record sealed for share %016x", ErrShare, s.Name(), kid.Share)
	}
	sealed, signer, sig, err := keys.SplitRecord(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrShare, s.Name(), err)
	}
	if past {
		pub, err := s.Roster.HistorySigner(signer, kid.Gen)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrShare, s.Name(), err)
		}
		return s.checkSig(pub, kind, id, nameMAC, sealed, sig)
	}
	if kid.Gen < s.Roster.MinGen {
		return nil, fmt.Errorf("%w: %s: record of key generation %d, below the lowest the roster accepts (%d, version %d): %w",
			ErrShare, s.Name(), kid.Gen, s.Roster.MinGen, s.Roster.Version, keys.ErrRecordSig)
	}
	pub, ok := s.Roster.Signer(signer, kid.Gen)
	if !ok {
		return nil, fmt.Errorf("%w: %s: signed by %x, not a writer of generation %d (roster version %d): %w",
			ErrShare, s.Name(), signer[:4], kid.Gen, s.Roster.Version, keys.ErrRecordSig)
	}
	return s.checkSig(pub, kind, id, nameMAC, sealed, sig)
}

// checkSig verifies sig over sealed with the signer's key pub.
func (s *Share) checkSig(pub [keys.PublicKeySize]byte, kind keys.RecordKind, id uint64, nameMAC string, sealed, sig []byte) ([]byte, error) {
	var mac []byte
	var err error
	if kind == keys.RecordName {
		if mac, err = hex.DecodeString(nameMAC); err != nil || len(mac) != keys.NameMACSize {
			return nil, fmt.Errorf("%w: %s: malformed name MAC", ErrShare, s.Name())
		}
	}
	if err := keys.VerifyRecord(pub, kind, id, mac, sealed, sig); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrShare, s.Name(), err)
	}
	return sealed, nil
}

// openAttrs authenticates a node's attributes, checking a share record's signature.
func (f *FS) openAttrs(n api.Node) (*meta.Attrs, error) {
	if k, _ := meta.RecordKeyID(n.Attrs); f.scope != nil && k.Share != f.scope.ID {
		// A view opens its share's records only: not the owner's other
		// nodes, nor another share's this account also holds.
		return nil, fmt.Errorf("%w: node %d is sealed for share %016x, not %s", ErrShare, n.ID, k.Share, f.scope.Name())
	}
	sealed, err := f.verified(keys.RecordAttrs, n.ID, "", n.Attrs)
	if err != nil {
		return nil, err
	}
	return f.sealer.OpenAttrs(n.ID, sealed)
}

// openName authenticates the name of entry e of dir. Besides the signature,
// it checks that the entry stays in dir's tree: in a share, the name and the
// node's attributes are the share's; in the home tree, the name is home and
// a node of a share must be that share's root.
func (f *FS) openName(dir *Node, e api.Entry) ([]byte, error) {
	dk, _ := meta.RecordKeyID(dir.Node.Attrs)
	nk, _ := meta.RecordKeyID(e.Name)
	ck, _ := meta.RecordKeyID(e.Node.Attrs)
	want := dk.Share
	if f.scope != nil {
		want = f.scope.ID
	}
	switch {
	case want != 0 && (nk.Share != want || ck.Share != want):
		return nil, fmt.Errorf("%w: entry of node %d in a shared folder is sealed for share %016x/%016x, not %016x", ErrShare, e.Node.ID, nk.Share, ck.Share, want)
	case want == 0 && nk.Share != 0:
		return nil, fmt.Errorf("%w: entry of node %d in the home tree is sealed for share %016x", ErrShare, e.Node.ID, nk.Share)
	case want == 0 && ck.Share != 0 && (f.shares[ck.Share] == nil || !f.shares[ck.Share].Owned || f.shares[ck.Share].Root != e.Node.ID):
		// Only the account's own share roots are in its home tree: a joined
		// share's records copied there by the server are refused.
		return nil, fmt.Errorf("%w: node %d in the home tree is sealed for share %016x but is not the root of a share this account owns", ErrShare, e.Node.ID, ck.Share)
	}
	sealed, err := f.verified(keys.RecordName, dir.ID(), e.NameMAC, e.Name)
	if err != nil {
		return nil, err
	}
	return f.sealer.OpenName(dir.ID(), e.Node.ID, meta.KindOf(e.Node.Type == api.TypeDir), e.NameMAC, sealed)
}

// lookup finds name in dir: in a share, under the name MAC of each
// generation this client holds, newest first.
func (f *FS) lookup(ctx context.Context, dir *Node, name string) (api.Entry, error) {
	dk, _ := meta.RecordKeyID(dir.Node.Attrs)
	s := f.shares[dk.Share]
	if dk.Share == 0 || s == nil {
		return f.c.Lookup(ctx, dir.ID(), f.sealer.NameMAC(dir.ID(), []byte(name)))
	}
	err := error(api.ErrNotFound)
	for _, g := range s.gens() {
		mac, merr := f.sealer.NameMACAs(s.kid(g), dir.ID(), []byte(name))
		if merr != nil {
			return api.Entry{}, merr
		}
		var e api.Entry
		if e, err = f.c.Lookup(ctx, dir.ID(), mac); err == nil || !errors.Is(err, api.ErrNotFound) {
			return e, err
		}
	}
	return api.Entry{}, err
}

// writeKID is the key id this FS seals new records with.
func (f *FS) writeKID() meta.KeyID {
	if f.scope != nil {
		return f.scope.kid(f.scope.Gen())
	}
	return meta.Home
}

// canWrite refuses a write into (or of) n outside the tree this FS writes:
// the home tree's FS does not write into a shared folder (its chunks would
// be sealed with the wrong keys), a share view writes only in its share.
func (f *FS) canWrite(n *Node) error {
	k, _ := meta.RecordKeyID(n.Node.Attrs)
	if k.Share == f.writeKID().Share {
		return nil
	}
	if f.scope != nil {
		return fmt.Errorf("%s: node %d is not in shared folder %s: %w", n.Path, n.ID(), f.scope.Name(), ErrNotInShare)
	}
	return fmt.Errorf("%s is in a shared folder: write to it through the share (kumo share views): %w", n.Path, ErrNotInShare)
}

// sealAttrs seals a node's attributes under the write key id, signed in a share.
func (f *FS) sealAttrs(id, rev uint64, a *meta.Attrs) ([]byte, error) {
	kid := f.writeKID()
	if kid == meta.Home {
		return f.sealer.SealAttrs(id, rev, a), nil
	}
	sealed, err := f.sealer.SealAttrsAs(kid, id, rev, a)
	if err != nil {
		return nil, err
	}
	return keys.SignRecord(f.me, keys.RecordAttrs, id, nil, sealed)
}

// sealName returns the name MAC and the sealed (in a share: signed) name of
// an entry under dir naming child.
func (f *FS) sealName(dir, child uint64, kind meta.Kind, name string) (string, []byte, error) {
	kid := f.writeKID()
	if kid == meta.Home {
		return f.sealer.NameMAC(dir, []byte(name)), f.sealer.SealName(dir, child, kind, []byte(name)), nil
	}
	return f.sealNameAs(kid, dir, child, kind, name)
}

func (f *FS) sealNameAs(kid meta.KeyID, dir, child uint64, kind meta.Kind, name string) (string, []byte, error) {
	mac, err := f.sealer.NameMACAs(kid, dir, []byte(name))
	if err != nil {
		return "", nil, err
	}
	sealed, err := f.sealer.SealNameAs(kid, dir, child, kind, []byte(name))
	if err != nil {
		return "", nil, err
	}
	raw, _ := hex.DecodeString(mac)
	signed, err := keys.SignRecord(f.me, keys.RecordName, dir, raw, sealed)
	return mac, signed, err
}

// chunkCipher returns the chunk keys of n's attributes' key id.
func (f *FS) chunkCipher(n *Node) *chunk.Cipher {
	k, _ := meta.RecordKeyID(n.Node.Attrs)
	if s := f.shares[k.Share]; k.Share != 0 && s != nil && s.ciphers[k.Gen] != nil {
		return s.ciphers[k.Gen]
	}
	return f.cipher
}

// Account is the logged-in account as sharing needs it.
type Account struct {
	ID       string // account id (api.Account.ID)
	Email    string // normalized
	Master   keys.Key
	Identity *keys.Identity
	Contacts *Contacts
}

// Invitation is a share this account was invited to, checked: the roster
// is signed by the key the owner shows, and the wrapped secret opens.
type Invitation struct {
	Share       *Share
	Fingerprint string // of the owner's identity keys, for the user to compare
	// Changed is set when the owner's keys differ from those pinned: the
	// invitation cannot be accepted until `kumo contacts verify`.
	Changed error
}

// Shares is what LoadShares finds.
type Shares struct {
	Owned, Joined []*Share
	Invitations   []*Invitation
}

// DirName is the name a joined share gets in a drive's shared directory
// (MNT/Shared/NAME, and kumo ls /Shared): its folder's name, made unique
// with the owner's e-mail, then the share id, against the names taken.
func (sh *Share) DirName(taken map[string]bool) string {
	name := sh.Folder
	if name == "" || len(name) > 255 || name == "." || name == ".." || strings.ContainsAny(name, "\x00/") {
		name = api.FormatShareID(sh.ID)
	}
	for _, n := range []string{name, name + " (" + sh.OwnerEmail + ")", name + " (" + sh.OwnerEmail + ", " + api.FormatShareID(sh.ID) + ")"} {
		if !taken[n] && len(n) <= 255 && !strings.Contains(n, "/") {
			return n
		}
	}
	return api.FormatShareID(sh.ID)
}

// JoinedByDirName names the joined shares as a drive mounted now shows
// them (DirName, in share id order).
func (s *Shares) JoinedByDirName() map[string]*Share {
	joined := slices.Clone(s.Joined)
	slices.SortFunc(joined, func(a, b *Share) int { return cmp.Compare(a.ID, b.ID) })
	out := map[string]*Share{}
	taken := map[string]bool{}
	for _, sh := range joined {
		n := sh.DirName(taken)
		taken[n] = true
		out[n] = sh
	}
	return out
}

// All returns the owned and joined shares, for WithShares.
func (s *Shares) All() []*Share { return append(slices.Clone(s.Owned), s.Joined...) }

// Find returns the owned or joined share named OWNER_EMAIL/FOLDER or by its
// id (16 hex digits).
func (s *Shares) Find(which string) (*Share, error) {
	return findShare(s.All(), which)
}

func findShare(list []*Share, which string) (*Share, error) {
	id, _ := api.ParseShareID(strings.ToLower(which))
	var found *Share
	for _, sh := range list {
		if sh.ID == id || strings.EqualFold(sh.Name(), which) {
			if found != nil && found != sh {
				return nil, fmt.Errorf("share %q: more than one share has this name; use its id", which)
			}
			found = sh
		}
	}
	if found == nil {
		return nil, fmt.Errorf("share %q: %w", which, api.ErrNotFound)
	}
	return found, nil
}

// LoadShares lists the account's shares and checks each: the roster's
// signature by the owner's pinned keys and its version, this account's place
// in it, and (for members) every wrapped secret. A share that fails a check
// is an error: the caller sees no data of a share it cannot trust.
func LoadShares(ctx context.Context, c *client.Client, acct Account) (*Shares, error) {
	resp, err := c.Shares(ctx)
	if err != nil {
		return nil, fmt.Errorf("list shares: %w", err)
	}
	owned, err := OwnedShares(acct, resp.Owned)
	if err != nil {
		return nil, err
	}
	out := &Shares{Owned: owned}
	for _, j := range resp.Joined {
		sh, err := memberShare(acct, j.OwnerID, j.OwnerEmail, j.Share, j.Root, j.Roster, j.Wrapped)
		if err != nil {
			return nil, err
		}
		out.Joined = append(out.Joined, sh)
	}
	for _, inv := range resp.Invitations {
		pub, fp, err := ownerKeys(ctx, c, acct, inv.OwnerEmail)
		it := &Invitation{Fingerprint: fp, Changed: err}
		if err != nil && !errors.Is(err, ErrContactChanged) {
			return nil, err
		}
		sh, serr := memberShareWith(acct, pub, inv.OwnerID, inv.OwnerEmail, inv.Share, inv.Root, inv.Roster, inv.Wrapped, false)
		if serr != nil {
			return nil, serr
		}
		it.Share = sh
		out.Invitations = append(out.Invitations, it)
	}
	return out, nil
}

// OwnedShares checks the shares the account owns (their rosters signed by
// its own identity, versions not rolled back) and derives their secrets.
func OwnedShares(acct Account, owned []api.OwnedShare) ([]*Share, error) {
	var out []*Share
	for _, o := range owned {
		r, err := checkRoster(acct, acct.ID, o.Share, o.Roster, acct.Identity.Public)
		if err != nil {
			return nil, err
		}
		sh := &Share{ID: o.Share, OwnerID: acct.ID, OwnerEmail: acct.Email, Root: o.Root, Owned: true, Role: keys.RoleWriter,
			Roster: r, Secrets: map[uint32]keys.Key{}}
		for g := uint32(1); g <= r.Gen; g++ {
			sh.Secrets[g] = keys.OwnerShareSecret(acct.Master, o.Share, g)
		}
		// The folder's name is in the owner's tree, not in the share's records.
		sh.Folder = api.FormatShareID(o.Share)
		out = append(out, sh)
	}
	return out, nil
}

// ownerKeys returns the keys the server shows for owner, checked against the
// pinned ones (pinning them on first use), and their fingerprint. On
// ErrContactChanged it returns the keys shown, for display only.
func ownerKeys(ctx context.Context, c *client.Client, acct Account, email string) (keys.PublicIdentity, string, error) {
	pk, err := c.PublicKeys(ctx, email)
	if err != nil {
		return keys.PublicIdentity{}, "", fmt.Errorf("public keys of %s: %w", email, err)
	}
	if !strings.EqualFold(strings.TrimSpace(pk.Email), email) {
		return keys.PublicIdentity{}, "", fmt.Errorf("public keys of %s: the server answered for %q", email, pk.Email)
	}
	pub, err := keys.PublicFromBytes(pk.BoxPublic, pk.SignPublic)
	if err != nil {
		return keys.PublicIdentity{}, "", fmt.Errorf("public keys of %s: %w", email, err)
	}
	return pub, pub.Fingerprint(), acct.Contacts.Check(email, pub)
}

// checkRoster opens a roster, requires it to be signed by owner for share,
// and pins its version.
func checkRoster(acct Account, ownerID string, share uint64, b []byte, owner keys.PublicIdentity) (*keys.Roster, error) {
	r, err := keys.OpenRoster(b)
	if err != nil {
		return nil, fmt.Errorf("share %016x: %w", share, err)
	}
	if r.Share != share {
		return nil, fmt.Errorf("share %016x: the server gave the roster of share %016x: %w", share, r.Share, ErrShare)
	}
	if !r.Owner.Equal(owner) {
		return nil, fmt.Errorf("share %016x: roster signed by %s, the owner's pinned keys are %s: %w", share, r.Owner.Fingerprint(), owner.Fingerprint(), ErrContactChanged)
	}
	if err := acct.Contacts.SeeRoster(ownerID, share, r.Version); err != nil {
		return nil, err
	}
	return r, nil
}

// memberShare checks a joined share against the owner's pinned keys.
func memberShare(acct Account, ownerID, ownerEmail string, share, root uint64, roster []byte, wrapped []api.ShareWrapped) (*Share, error) {
	pub, ok := acct.Contacts.Pinned(ownerEmail)
	if !ok {
		return nil, fmt.Errorf("share %016x of %s: no pinned keys for the owner (accept the share on this device, or run kumo contacts verify): %w", share, ownerEmail, ErrContactChanged)
	}
	return memberShareWith(acct, pub, ownerID, ownerEmail, share, root, roster, wrapped, true)
}

func memberShareWith(acct Account, owner keys.PublicIdentity, ownerID, ownerEmail string, share, root uint64, roster []byte, wrapped []api.ShareWrapped, pin bool) (*Share, error) {
	var r *keys.Roster
	var err error
	if pin {
		r, err = checkRoster(acct, ownerID, share, roster, owner)
	} else if r, err = keys.OpenRoster(roster); err == nil && (r.Share != share || !r.Owner.Equal(owner)) {
		err = fmt.Errorf("share %016x: roster not of this share or not signed by the keys %s shows: %w", share, ownerEmail, ErrShare)
	}
	if err != nil {
		return nil, err
	}
	if r.OwnerEmail != ownerEmail {
		return nil, fmt.Errorf("share %016x: roster of %s, the server says the owner is %s: %w", share, r.OwnerEmail, ownerEmail, ErrShare)
	}
	m, ok := r.Member(acct.Email)
	if !ok || m.Role == keys.RoleRemoved || !m.Keys.Equal(acct.Identity.Public) {
		return nil, fmt.Errorf("share %016x of %s: this account (with these keys) is not a member in its roster: %w", share, ownerEmail, ErrShare)
	}
	sh := &Share{ID: share, OwnerID: ownerID, OwnerEmail: ownerEmail, Root: root, Role: m.Role, Roster: r, Secrets: map[uint32]keys.Key{}}
	for _, w := range wrapped {
		inv, err := keys.OpenInvite(acct.Identity, acct.Email, owner.Sign, w.Blob)
		if err != nil {
			return nil, fmt.Errorf("share %016x of %s, generation %d: %w", share, ownerEmail, w.Generation, err)
		}
		if inv.Share != share || inv.Gen != w.Generation || inv.Root != root || inv.OwnerEmail != ownerEmail || inv.Gen > r.Gen {
			return nil, fmt.Errorf("share %016x of %s: the wrapped secret is for share %016x generation %d root %d of %s: %w",
				share, ownerEmail, inv.Share, inv.Gen, inv.Root, inv.OwnerEmail, ErrShare)
		}
		sh.Secrets[inv.Gen] = inv.Secret
		sh.Folder = inv.Folder
	}
	if _, ok := sh.Secrets[r.Gen]; !ok {
		return nil, fmt.Errorf("share %016x of %s: no wrapped secret of the current generation %d", share, ownerEmail, r.Gen)
	}
	return sh, nil
}

// AcceptShare accepts the invitation named OWNER_EMAIL/FOLDER or by share
// id, after checking it (owner keys pinned on first use).
func AcceptShare(ctx context.Context, c *client.Client, acct Account, which string) (*Share, error) {
	all, err := LoadShares(ctx, c, acct)
	if err != nil {
		return nil, err
	}
	var list []*Share
	byShare := map[*Share]*Invitation{}
	for _, it := range all.Invitations {
		list = append(list, it.Share)
		byShare[it.Share] = it
	}
	sh, err := findShare(list, which)
	if err != nil {
		return nil, fmt.Errorf("accept: no such invitation: %w", err)
	}
	if it := byShare[sh]; it.Changed != nil {
		return nil, fmt.Errorf("accept %s: %w", sh.Name(), it.Changed)
	}
	if err := acct.Contacts.SeeRoster(sh.OwnerID, sh.ID, sh.Roster.Version); err != nil {
		return nil, err
	}
	if err := c.AcceptShare(ctx, sh.OwnerID, sh.ID); err != nil {
		return nil, fmt.Errorf("accept %s: %w", sh.Name(), err)
	}
	return sh, nil
}

// newShareID returns a random share id (never 0).
func newShareID() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("share id: %w", err)
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id, nil
		}
	}
}

// ShareFolder shares the directory p of the owner's home tree with the
// account email in role: the first time, it makes p a share (re-sealing
// its subtree, see the file comment); later, it adds the member or changes
// its role. f must be the home FS WithShares of the owned shares.
func (f *FS) ShareFolder(ctx context.Context, acct Account, p, email string, role keys.Role) (*Share, error) {
	if f.scope != nil {
		return nil, fmt.Errorf("share %s: use the home tree's FS", p)
	}
	email = strings.ToLower(strings.TrimSpace(email))
	if email == acct.Email {
		return nil, fmt.Errorf("share %s: you own it already", p)
	}
	n, err := f.Resolve(ctx, p)
	if errors.Is(err, ErrShare) {
		// Maybe a folder whose sharing was interrupted: resume it.
		var pending *Share
		if pending, err = f.pendingShare(ctx, acct, p); err == nil {
			f = f.WithShares(acct.Identity, pending)
			n, err = f.Resolve(ctx, p)
		}
	}
	if err != nil {
		return nil, err
	}
	if !n.IsDir() || n.ID() == api.RootID {
		return nil, fmt.Errorf("share %s: only a directory other than the root can be shared", p)
	}
	pk, err := f.c.PublicKeys(ctx, email)
	if err != nil {
		return nil, fmt.Errorf("share %s with %s: their public keys: %w (they must have logged in with a client that makes identity keys)", p, email, err)
	}
	pub, err := keys.PublicFromBytes(pk.BoxPublic, pk.SignPublic)
	if err != nil {
		return nil, fmt.Errorf("share %s with %s: %w", p, email, err)
	}
	if err := acct.Contacts.Check(email, pub); err != nil {
		return nil, fmt.Errorf("share %s: %w", p, err)
	}
	sh, err := f.ownedShareAt(ctx, acct, n)
	if err != nil {
		return nil, err
	}
	sh.Folder = n.Name
	r := *sh.Roster
	r.Members = slices.Clone(r.Members)
	r.Version++
	m := keys.RosterMember{Email: email, Keys: pub, Role: role}
	if i := slices.IndexFunc(r.Members, func(m keys.RosterMember) bool { return m.Email == email }); i >= 0 {
		m.WroteUntil = r.Members[i].WroteUntil
		if r.Members[i].Role == keys.RoleWriter && role != keys.RoleWriter {
			m.WroteUntil = r.Gen
		}
		r.Members[i] = m
	} else {
		r.Members = append(r.Members, m)
	}
	r.SortMembers()
	signed, err := r.Sign(f.me)
	if err != nil {
		return nil, err
	}
	var wrapped []api.ShareWrapped
	for g := uint32(1); g <= r.Gen; g++ {
		blob, err := keys.SealInvite(f.me, email, pub, keys.Invite{Share: sh.ID, Gen: g, Secret: sh.Secrets[g], Root: sh.Root, OwnerEmail: acct.Email, Folder: sh.Folder})
		if err != nil {
			return nil, err
		}
		wrapped = append(wrapped, api.ShareWrapped{Generation: g, Blob: blob})
	}
	req := api.ShareMemberRequest{Email: email, Role: role.String(), Wrapped: wrapped, Roster: signed}
	if err := f.c.ShareMember(ctx, sh.ID, req); err != nil {
		return nil, fmt.Errorf("share %s with %s: %w", p, email, err)
	}
	if err := acct.Contacts.SeeRoster(acct.ID, sh.ID, r.Version); err != nil {
		return nil, err
	}
	sh.Roster = &r
	if r.NeedsReseal() || r.NeedsRotation() {
		// A writer demoted (or an earlier revoke left unfinished).
		return f.WithShares(acct.Identity, sh).finishRevoke(ctx, acct, p, sh)
	}
	return sh, nil
}

// pendingShare returns the share of the folder at p if its root is sealed
// under a share id the server does not list but whose generation-1 secret
// this account derives and whose root record it signed: a share that was
// being made when kumo share was interrupted. Anything else is ErrShare.
func (f *FS) pendingShare(ctx context.Context, acct Account, p string) (*Share, error) {
	names, err := Split(p)
	if err != nil || len(names) == 0 {
		return nil, fmt.Errorf("share %s: %w", p, ErrShare)
	}
	dir, err := f.Resolve(ctx, "/"+strings.Join(names[:len(names)-1], "/"))
	if err != nil {
		return nil, err
	}
	e, err := f.lookup(ctx, dir, names[len(names)-1])
	if err != nil {
		return nil, err
	}
	k, _ := meta.RecordKeyID(e.Node.Attrs)
	if k.Share == 0 || k.Gen != 1 || f.shares[k.Share] != nil || e.Node.Type != api.TypeDir {
		return nil, fmt.Errorf("share %s: the folder is sealed for share %016x generation %d: %w", p, k.Share, k.Gen, ErrShare)
	}
	r := &keys.Roster{Share: k.Share, Gen: 1, Version: 1, OwnerEmail: acct.Email, Owner: acct.Identity.Public}
	sh := &Share{ID: k.Share, OwnerID: acct.ID, OwnerEmail: acct.Email, Root: e.Node.ID, Folder: names[len(names)-1], Owned: true,
		Role: keys.RoleWriter, Roster: r, Secrets: map[uint32]keys.Key{1: keys.OwnerShareSecret(acct.Master, k.Share, 1)}, pending: true}
	// Only our own derived key and signature open it; the caller's Resolve checks that.
	return sh, nil
}

// ownedShareAt returns the owned share rooted at n, making n one (re-sealing
// its subtree, creating the share on the server) if it is not yet.
func (f *FS) ownedShareAt(ctx context.Context, acct Account, n *Node) (*Share, error) {
	var id uint64
	if k, _ := meta.RecordKeyID(n.Node.Attrs); k.Share != 0 {
		s := f.shares[k.Share]
		if s == nil || !s.Owned || s.Root != n.ID() {
			return nil, fmt.Errorf("share %s: it is inside a shared folder; share the shared folder itself: %w", n.Path, ErrShare)
		}
		if !s.pending {
			return s, nil
		}
		id = s.ID // an interrupted share: finish re-sealing, then create it
	} else {
		var err error
		if id, err = newShareID(); err != nil {
			return nil, err
		}
	}
	r := &keys.Roster{Share: id, Gen: 1, Version: 1, OwnerEmail: acct.Email, Owner: acct.Identity.Public}
	sh := &Share{ID: id, OwnerID: acct.ID, OwnerEmail: acct.Email, Root: n.ID(), Folder: n.Name, Owned: true,
		Role: keys.RoleWriter, Roster: r, Secrets: map[uint32]keys.Key{1: keys.OwnerShareSecret(acct.Master, id, 1)}}
	wf := f.WithShares(acct.Identity, sh)
	view := *wf
	view.scope = sh
	view.cipher = sh.ciphers[1]
	if err := view.reseal(ctx, f, n, &resealPass{}); err != nil {
		return nil, fmt.Errorf("share %s: re-sealing the folder under the share's keys (run the command again to resume): %w", n.Path, err)
	}
	signed, err := r.Sign(acct.Identity)
	if err != nil {
		return nil, err
	}
	if err := f.c.CreateShare(ctx, api.CreateShareRequest{Share: id, Root: n.ID(), Generation: 1, Roster: signed}); err != nil {
		return nil, fmt.Errorf("share %s: %w", n.Path, err)
	}
	if err := acct.Contacts.SeeRoster(acct.ID, id, r.Version); err != nil {
		return nil, err
	}
	return sh, nil
}

// reseal re-seals the subtree at n (read through home, the home FS) under
// v's write key id, top-down: a directory's attributes, then its entries'
// names, then its children. Files' chunks are re-encrypted with v's chunk
// keys. Requests go to the owner's home tree (v.c has no share scope yet:
// the share does not exist on the server until its root is sealed). Records
// under another key id are home records (sharing a folder) or the share's
// older generations (a re-seal after a writer left); each one it re-seals
// counts in pass.
func (v *FS) reseal(ctx context.Context, home *FS, n *Node, pass *resealPass) error {
	kid := v.writeKID()
	if k, _ := meta.RecordKeyID(n.Node.Attrs); k != kid && !pass.done[n.ID()] {
		// (A file hard-linked twice in the folder is listed with its old
		// record at its second name: re-sealed once.)
		pass.changed++
		if pass.done == nil {
			pass.done = map[uint64]bool{}
		}
		pass.done[n.ID()] = true
		a := n.Attrs
		if !n.IsDir() && len(a.Chunks) > 0 {
			var err error
			if a, err = v.recrypt(ctx, home, n); err != nil {
				return err
			}
		}
		req, err := v.updateRequest(n, a)
		if err != nil {
			return err
		}
		got, err := v.c.Update(ctx, n.ID(), req)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Path, err)
		}
		n.Node = got
	}
	if !n.IsDir() {
		return nil
	}
	es, err := v.c.List(ctx, n.ID())
	if err != nil {
		return fmt.Errorf("list %s: %w", n.Path, err)
	}
	for _, e := range es {
		if k, _ := meta.RecordKeyID(e.Name); k != kid {
			// Opened with the rules of the key id it has: home, or an older
			// generation of the share (signature checked against the roster).
			old, err := home.verified(keys.RecordName, n.ID(), e.NameMAC, e.Name)
			if errors.Is(err, keys.ErrRecordSig) {
				continue // planted, not the folder's: left as it is, refused by every client
			}
			if err != nil {
				return fmt.Errorf("%s: entry name: %w", n.Path, err)
			}
			name, err := home.sealer.OpenName(n.ID(), e.Node.ID, meta.KindOf(e.Node.Type == api.TypeDir), e.NameMAC, old)
			if err != nil {
				return fmt.Errorf("%s: entry name: %w", n.Path, err)
			}
			mac, sealed, err := v.sealNameAs(kid, n.ID(), e.Node.ID, meta.KindOf(e.Node.Type == api.TypeDir), string(name))
			if err != nil {
				return err
			}
			err = v.c.Rename(ctx, api.RenameRequest{SrcParent: n.ID(), SrcNameMAC: e.NameMAC, DstParent: n.ID(), DstNameMAC: mac,
				Name: sealed, Mode: api.RenameNoReplace, Node: e.Node.ID})
			if err != nil {
				return fmt.Errorf("%s/%s: re-seal name: %w", n.Path, name, err)
			}
			e.NameMAC, e.Name = mac, sealed
			pass.changed++
		}
		var child *Node
		if k, _ := meta.RecordKeyID(e.Node.Attrs); k == kid {
			child, err = v.openEntry(n, "", e)
		} else { // not yet re-sealed (home attributes): open them as home
			child, err = home.openEntryHomeAttrs(v, n, e)
		}
		if errors.Is(err, keys.ErrRecordSig) {
			continue // a planted record under an honest name: left, refused by every client
		}
		if err != nil {
			return err
		}
		if err := v.reseal(ctx, home, child, pass); err != nil {
			return err
		}
	}
	return nil
}

// resealPass is what one walk of reseal did: the records it re-sealed, and
// the nodes whose attributes it re-sealed.
type resealPass struct {
	changed int
	done    map[uint64]bool
}

// openEntryHomeAttrs opens an entry whose name v already re-sealed but whose
// node still has attributes of another key id (home, or an older generation
// of the share: an interrupted or ongoing re-seal).
func (home *FS) openEntryHomeAttrs(v *FS, dir *Node, e api.Entry) (*Node, error) {
	sealed, err := v.verified(keys.RecordName, dir.ID(), e.NameMAC, e.Name)
	if err != nil {
		return nil, err
	}
	name, err := v.sealer.OpenName(dir.ID(), e.Node.ID, meta.KindOf(e.Node.Type == api.TypeDir), e.NameMAC, sealed)
	if err != nil {
		return nil, fmt.Errorf("%s: entry name: %w", dir.Path, err)
	}
	return home.open(dir.Path+"/"+string(name), string(name), dir.ID(), e.NameMAC, e.Node)
}

// recrypt downloads n's chunks (home keys), re-encrypts them with v's chunk
// keys, uploads them, and returns n's attributes naming the new chunks.
func (v *FS) recrypt(ctx context.Context, home *FS, n *Node) (*meta.Attrs, error) {
	a := *n.Attrs
	a.Chunks = slices.Clone(n.Attrs.Chunks)
	from := home.chunkCipher(n)
	for i, r := range a.Chunks {
		if r.ID.IsZero() {
			continue
		}
		sealed, err := v.c.GetChunk(ctx, r.ID.String(), 0, -1)
		if err != nil {
			return nil, fmt.Errorf("%s: chunk %d: %w", n.Path, i, err)
		}
		plain, err := from.Open(nil, r.ID, sealed)
		if err != nil {
			return nil, fmt.Errorf("%s: chunk %d: %w", n.Path, i, err)
		}
		id := v.cipher.ID(plain)
		if err := v.c.PutChunk(ctx, id.String(), v.cipher.Seal(nil, id, plain)); err != nil {
			return nil, fmt.Errorf("%s: upload re-encrypted chunk %d: %w", n.Path, i, err)
		}
		a.Chunks[i].ID = id
	}
	return &a, nil
}

// RemoveMember removes email from the share rooted at p and rotates the
// share to a new key generation: what is written from then on is sealed
// under a secret the removed member never gets. If the member was a writer,
// the folder is then re-sealed (finishRevoke). Run again for a member
// already removed, it finishes an interrupted re-seal. f is the home FS
// WithShares of the owned shares.
func (f *FS) RemoveMember(ctx context.Context, acct Account, p, email string) (*Share, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	n, err := f.Resolve(ctx, p)
	if err != nil {
		return nil, err
	}
	k, _ := meta.RecordKeyID(n.Node.Attrs)
	sh := f.shares[k.Share]
	if k.Share == 0 || sh == nil || !sh.Owned || sh.Root != n.ID() {
		return nil, fmt.Errorf("share rm %s: not a folder you share", p)
	}
	r := *sh.Roster
	r.Members = slices.Clone(r.Members)
	i := slices.IndexFunc(r.Members, func(m keys.RosterMember) bool { return m.Email == email && m.Role != keys.RoleRemoved })
	if i < 0 {
		if m, ok := r.Member(email); ok && m.Role == keys.RoleRemoved && (r.NeedsReseal() || r.NeedsRotation()) {
			return f.finishRevoke(ctx, acct, p, sh) // an interrupted share rm
		}
		return nil, fmt.Errorf("share rm %s: %s is not a member", p, email)
	}
	if r.Members[i].Role == keys.RoleWriter {
		r.Members[i].WroteUntil = r.Gen
	}
	r.Members[i].Role = keys.RoleRemoved
	out, err := f.rotate(ctx, acct, sh, r, []string{email}, n.Name)
	if err != nil {
		return nil, fmt.Errorf("share rm %s: %w", p, err)
	}
	if !out.Roster.NeedsReseal() {
		return out, nil
	}
	return f.WithShares(acct.Identity, out).finishRevoke(ctx, acct, p, out)
}

// rotate moves share sh to the next key generation with roster r (sh's,
// changed by the caller), removing the members in remove on the server and
// giving every other member the new generation's secret. It returns the
// share at the new generation.
func (f *FS) rotate(ctx context.Context, acct Account, sh *Share, r keys.Roster, remove []string, folder string) (*Share, error) {
	r.Gen++
	r.Version++
	secret := keys.OwnerShareSecret(acct.Master, sh.ID, r.Gen)
	wrapped := map[string][]api.ShareWrapped{}
	for _, m := range r.Members {
		if m.Role == keys.RoleRemoved {
			continue
		}
		blob, err := keys.SealInvite(f.me, m.Email, m.Keys, keys.Invite{Share: sh.ID, Gen: r.Gen, Secret: secret, Root: sh.Root, OwnerEmail: acct.Email, Folder: folder})
		if err != nil {
			return nil, err
		}
		wrapped[m.Email] = []api.ShareWrapped{{Generation: r.Gen, Blob: blob}}
	}
	if err := f.publishRoster(ctx, acct, sh.ID, r, api.ShareRotateRequest{Remove: remove, Wrapped: wrapped}); err != nil {
		return nil, fmt.Errorf("rotate to key generation %d: %w", r.Gen, err)
	}
	out := *sh
	out.Roster = &r
	out.Secrets = maps.Clone(sh.Secrets)
	out.Secrets[r.Gen] = secret
	out.ciphers = nil
	return &out, nil
}

// publishRoster signs roster r of share id and sends it in req (at r's
// generation), then pins its version as seen.
func (f *FS) publishRoster(ctx context.Context, acct Account, id uint64, r keys.Roster, req api.ShareRotateRequest) error {
	signed, err := r.Sign(f.me)
	if err != nil {
		return err
	}
	req.Generation, req.Roster = r.Gen, signed
	if err := f.c.RotateShare(ctx, id, req); err != nil {
		return err
	}
	return acct.Contacts.SeeRoster(acct.ID, id, r.Version)
}

// finishRevoke closes the folder at p (share sh, held by f) to a writer who
// was removed or demoted: it rotates to a new generation if the former
// writer wrote in the current one, re-seals every record of the folder
// under the current generation, signed by the owner (chunks re-encrypted
// with its keys), checks with one more pass that no record of an older
// generation is left, and only then raises the roster's lowest accepted
// generation to the current one. Until that last step every record stays
// readable, so a run killed midway is finished by running it again (the
// roster says a re-seal is due: Roster.NeedsReseal).
func (f *FS) finishRevoke(ctx context.Context, acct Account, p string, sh *Share) (*Share, error) {
	n, err := f.Resolve(ctx, p)
	if err != nil {
		return nil, err
	}
	if sh.Roster.NeedsRotation() {
		r := *sh.Roster
		r.Members = slices.Clone(r.Members)
		if sh, err = f.rotate(ctx, acct, sh, r, nil, n.Name); err != nil {
			return nil, fmt.Errorf("share %s: %w", p, err)
		}
		f = f.WithShares(acct.Identity, sh)
	}
	if !sh.Roster.NeedsReseal() {
		return sh, nil
	}
	view := *f
	view.scope = sh
	view.cipher = sh.ciphers[sh.Gen()]
	// A pass that changes nothing proves the folder is all current; records
	// written meanwhile under an older generation (another device of the
	// owner) make another pass.
	for pass := 0; ; pass++ {
		if pass == 5 {
			return nil, fmt.Errorf("share %s: records under older key generations keep appearing; run the command again", p)
		}
		if n, err = f.Resolve(ctx, p); err != nil {
			return nil, err
		}
		var rp resealPass
		if err := view.reseal(ctx, f, n, &rp); err != nil {
			return nil, fmt.Errorf("share %s: re-sealing the folder under key generation %d (run the same command again to resume): %w", p, sh.Gen(), err)
		}
		if rp.changed == 0 {
			break
		}
	}
	r := *sh.Roster
	r.Version++
	r.MinGen = r.Gen
	if err := f.publishRoster(ctx, acct, sh.ID, r, api.ShareRotateRequest{}); err != nil {
		return nil, fmt.Errorf("share %s: raising the lowest accepted key generation to %d (run the same command again): %w", p, r.Gen, err)
	}
	out := *sh
	out.Roster = &r
	return &out, nil
}

// VerifyContact pins the keys the server shows for email after the user
// confirmed their fingerprint out of band (`kumo contacts verify`).
func VerifyContact(ctx context.Context, c *client.Client, contacts *Contacts, email, fingerprint string) (keys.PublicIdentity, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	pk, err := c.PublicKeys(ctx, email)
	if err != nil {
		return keys.PublicIdentity{}, fmt.Errorf("public keys of %s: %w", email, err)
	}
	pub, err := keys.PublicFromBytes(pk.BoxPublic, pk.SignPublic)
	if err != nil {
		return keys.PublicIdentity{}, fmt.Errorf("public keys of %s: %w", email, err)
	}
	return pub, contacts.Verify(email, fingerprint, pub)
}
