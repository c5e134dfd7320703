package session

// Recovery key (format v2) on the client: `kumo recovery-key` registers one,
// `kumo recover` sets a new password with it.

import (
	"context"
	"errors"
	"fmt"

	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/client"
)

// ErrRecoveryFailed is the one error of every failed recovery: unknown
// e-mail, no recovery key registered, wrong recovery key, a wrapped master key
// that does not open. No failure is told apart from another (no oracle).
var ErrRecoveryFailed = errors.New("wrong e-mail or recovery key")

// SetRecoveryKey makes a new recovery key for the account, registers it with
// the server (replacing any earlier one) and checks that it opens the master
// key as the server now holds it. The server wants the current password.
// The caller shows the key to the user once; it is stored nowhere here. The
// password's auth key is derived only with parameters LoginWith would accept
// under opts (no downgrade).
func SetRecoveryKey(ctx context.Context, c *client.Client, s *Session, password []byte, opts Options) (keys.RecoveryKey, error) {
	salt, kdf, err := opts.prelogin(ctx, c, s.Server, s.Email)
	if err != nil {
		return keys.RecoveryKey{}, fmt.Errorf("recovery key: %w", err)
	}
	auth, _, err := keys.FromPassword(password, salt, kdf)
	if err != nil {
		return keys.RecoveryKey{}, fmt.Errorf("recovery key: derive keys: %w", err)
	}
	rk, err := keys.NewRecoveryKey()
	if err != nil {
		return keys.RecoveryKey{}, err
	}
	wrapped, err := keys.WrapMasterRecovery(rk, s.Email, s.Master)
	if err != nil {
		return keys.RecoveryKey{}, err
	}
	rauth := rk.AuthKey()
	err = c.SetRecovery(ctx, api.RecoverySetRequest{AuthKey: auth[:], RecoveryAuthKey: rauth[:], WrappedMaster: wrapped})
	if err != nil {
		if errors.Is(err, api.ErrForbidden) {
			return keys.RecoveryKey{}, fmt.Errorf("recovery key: %w (or the account is disabled)", ErrWrongPassword)
		}
		return keys.RecoveryKey{}, fmt.Errorf("recovery key: %w", err)
	}
	// Read it back as a recovery would: a key shown to the user must work.
	open, err := c.RecoveryOpen(ctx, api.RecoveryOpenRequest{Email: s.Email, AuthKey: rauth[:]})
	if err != nil {
		return keys.RecoveryKey{}, fmt.Errorf("recovery key: registered, but reading it back failed (run kumo recovery-key again): %w", err)
	}
	if m, err := keys.UnwrapMasterRecovery(rk, s.Email, open.WrappedMaster); err != nil || m != s.Master {
		return keys.RecoveryKey{}, errors.New("recovery key: the server does not give back the wrapped master key it was sent: do not rely on this recovery key; run kumo recovery-key again")
	}
	return rk, nil
}

// Recover sets a new password for the account email with its recovery key,
// without the old password: it authenticates with the recovery auth key,
// unwraps the master key with the recovery key, wraps it under the new
// password (fresh salt; the client's own parameters, as ChangePassword: the
// strongest of keys.DefaultKDF, opts' floor and those remembered for the
// account) and has the server replace the password and end every other
// session. It returns the new session.
func Recover(ctx context.Context, c *client.Client, server, email string, rk keys.RecoveryKey, newPassword []byte, opts Options) (*Session, error) {
	email = NormalizeEmail(email)
	srv := serverName(c, server)
	if len(newPassword) == 0 {
		return nil, errors.New("recover: empty new password")
	}
	kdf := keys.MaxKDF(keys.DefaultKDF(), opts.floor())
	if known, ok, err := opts.Remembered(srv, email); err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	} else if ok {
		kdf = keys.MaxKDF(kdf, known)
	}
	rauth := rk.AuthKey()
	open, err := c.RecoveryOpen(ctx, api.RecoveryOpenRequest{Email: email, AuthKey: rauth[:]})
	if err != nil {
		return nil, recoveryErr(err)
	}
	master, err := keys.UnwrapMasterRecovery(rk, email, open.WrappedMaster)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", ErrRecoveryFailed)
	}
	salt, err := keys.NewSalt()
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	auth, kek, err := keys.FromPassword(newPassword, salt, kdf)
	if err != nil {
		return nil, fmt.Errorf("recover: derive new keys: %w", err)
	}
	wrapped, err := keys.WrapMaster(kek, master)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	resp, err := c.RecoveryReset(ctx, api.RecoveryResetRequest{
		Email: email, AuthKey: rauth[:],
		NewSalt: salt, NewKDF: toAPI(kdf), NewAuthKey: auth[:], NewWrappedMaster: wrapped,
	})
	if err != nil {
		return nil, recoveryErr(err)
	}
	if m, err := keys.UnwrapMaster(kek, resp.WrappedMaster); err != nil || m != master {
		return nil, errors.New("recover: the server answered with another wrapped master key than it was sent: log in again to check the new password")
	}
	if err := opts.Remember(srv, email, kdf); err != nil {
		return nil, fmt.Errorf("recover: the new password is set, but: %w", err)
	}
	c.SetToken(resp.Token)
	s := &Session{Server: srv, Email: email, Token: resp.Token, Expires: resp.Expires, Master: master}
	if _, _, err := EnsureIdentity(ctx, c, s); err != nil && !errors.Is(err, ErrIdentityUnsupported) {
		return nil, fmt.Errorf("recover: the new password is set, but: %w", err)
	}
	return s, nil
}

// recoveryErr maps the server's refusals to the one recovery error; other
// failures (rate limit, no connection) keep their cause so the user can act.
func recoveryErr(err error) error {
	if errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrForbidden) {
		return fmt.Errorf("recover: %w", ErrRecoveryFailed)
	}
	return fmt.Errorf("recover: %w", err)
}
