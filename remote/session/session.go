// Package session is a logged-in account on the client side: server address,
// bearer token and master key, how they are derived from e-mail and password,
// and how they are kept on disk (0600 file in a 0700 directory).
package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/internal/tlspin"
	"kumo/remote/api"
	"kumo/remote/client"
)

// Session is what `kumo login` leaves behind for later commands and the drive.
type Session struct {
	Server      string    `json:"server"`
	Email       string    `json:"email"`
	Token       string    `json:"token"`
	Expires     time.Time `json:"expires"`
	Master      keys.Key  `json:"master"`
	Fingerprint string    `json:"fingerprint,omitempty"` // pinned TLS certificate SHA-256, hex
	// Insecure records the user's --insecure at login: plain http to a
	// non-loopback server is then allowed for this session.
	Insecure bool `json:"insecure,omitempty"`
	// Identity is the fingerprint of the account's identity keys once seen
	// (identity.go): a server that later shows others is caught.
	Identity string `json:"identity,omitempty"`
	// SealedIdentity is the account's identity keys as the server stores
	// them (sealed under the master key; base64), kept at EnsureIdentity so
	// that a mount started while the server is unreachable can sign its
	// writes into shared folders (SavedIdentity).
	SealedIdentity string `json:"sealed_identity,omitempty"`
	// AccountID is the account's id as the server last said it (kumo
	// mount names its cache directory by it, also when the server is
	// unreachable at start).
	AccountID string `json:"account_id,omitempty"`
}

// NewClient returns a client of server: plain http only to loopback (unless
// insecure), https verified against the pinned certificate fingerprint if
// there is one, else against the system CAs.
func NewClient(server, fingerprint string, insecure bool) (*client.Client, error) {
	if err := tlspin.RequireTLS(server, insecure); err != nil {
		return nil, err
	}
	hc := client.NewHTTPClient()
	hc.Transport.(*http.Transport).TLSClientConfig = tlspin.ClientConfig(fingerprint)
	return client.New(client.Options{BaseURL: server, HTTPClient: hc})
}

// Client returns a client of the session's server, with its token, that
// refuses any certificate other than the pinned one. The drive and every
// command after login use it.
func (s *Session) Client() (*client.Client, error) {
	c, err := NewClient(s.Server, s.Fingerprint, s.Insecure)
	if err != nil {
		return nil, err
	}
	c.SetToken(s.Token)
	return c, nil
}

// ErrWrongPassword is returned by Login and ChangePassword when the server
// refuses the e-mail/password pair or the master key does not unwrap.
var ErrWrongPassword = errors.New("wrong e-mail or password")

// ErrNoSession is returned by Load when no session file exists.
var ErrNoSession = errors.New("not logged in")

// NormalizeEmail is how e-mails are compared: trimmed and lower-cased.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

func toAPI(p keys.KDFParams) api.KDFParams {
	return api.KDFParams{Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads}
}

func fromAPI(p api.KDFParams) keys.KDFParams {
	return keys.KDFParams{Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads}
}

// Signup creates the account (fresh salt and master key, sealed root directory) and logs in.
func Signup(ctx context.Context, c *client.Client, server, email string, password []byte, kdf keys.KDFParams) (*Session, error) {
	email = NormalizeEmail(email)
	if email == "" || !strings.Contains(email, "@") {
		return nil, fmt.Errorf("signup: %q is not an e-mail address", email)
	}
	if len(password) == 0 {
		return nil, errors.New("signup: empty password")
	}
	salt, err := keys.NewSalt()
	if err != nil {
		return nil, fmt.Errorf("signup: %w", err)
	}
	authKey, kek, err := keys.FromPassword(password, salt, kdf)
	if err != nil {
		return nil, fmt.Errorf("signup: derive keys: %w", err)
	}
	master, err := keys.NewMasterKey()
	if err != nil {
		return nil, fmt.Errorf("signup: %w", err)
	}
	wrapped, err := keys.WrapMaster(kek, master)
	if err != nil {
		return nil, fmt.Errorf("signup: wrap master key: %w", err)
	}
	now := time.Now().UnixNano()
	root := &meta.Attrs{
		Mode:  0o755 | syscall.S_IFDIR,
		UID:   uint32(os.Getuid()),
		GID:   uint32(os.Getgid()),
		Atime: now, Mtime: now, Ctime: now,
		// A new account's tree is all v2: its clients refuse any v1 record.
		Xattrs: map[string][]byte{meta.FormatMark: []byte(meta.FormatMarkV2)},
	}
	sealer := meta.NewSealer(keys.Derive(master))
	resp, err := c.Signup(ctx, api.SignupRequest{
		Email:         email,
		Salt:          salt,
		KDF:           toAPI(kdf),
		AuthKey:       authKey[:],
		WrappedMaster: wrapped,
		RootAttrs:     sealer.SealAttrs(api.RootID, meta.NextRev(0), root),
	})
	if err != nil {
		if errors.Is(err, api.ErrExists) || errors.Is(err, api.ErrConflict) {
			return nil, fmt.Errorf("signup: an account for %s exists already: %w", email, err)
		}
		return nil, fmt.Errorf("signup: %w", err)
	}
	c.SetToken(resp.Token)
	s := &Session{Server: serverName(c, server), Email: email, Token: resp.Token, Expires: resp.Expires, Master: master}
	// Identity keys right away. The account exists already, so a failure here
	// does not fail the signup: the next login or whoami publishes them.
	_, _, _ = EnsureIdentity(ctx, c, s)
	return s, nil
}

// Login is LoginWith the default Options: the client's floor, nothing remembered.
func Login(ctx context.Context, c *client.Client, server, email string, password []byte) (*Session, error) {
	return LoginWith(ctx, c, server, email, password, Options{})
}

// LoginWith derives the keys from the password, logs in and unwraps the
// master key. It refuses, before sending anything derived from the password,
// parameters below opts' floor or below those remembered for the account
// (ErrKDFDowngrade), and remembers the parameters once the master key opens.
// Every failure to authenticate or to open the master key is the same
// ErrWrongPassword, word for word (no oracle telling them apart).
func LoginWith(ctx context.Context, c *client.Client, server, email string, password []byte, opts Options) (*Session, error) {
	email = NormalizeEmail(email)
	srv := serverName(c, server)
	salt, kdf, err := opts.prelogin(ctx, c, srv, email)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	authKey, kek, err := keys.FromPassword(password, salt, kdf)
	if err != nil {
		return nil, fmt.Errorf("login: derive keys: %w", err)
	}
	failed := fmt.Errorf("login: %w", ErrWrongPassword)
	resp, err := c.Login(ctx, api.LoginRequest{Email: email, AuthKey: authKey[:]})
	if err != nil {
		if errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrForbidden) {
			return nil, failed
		}
		return nil, fmt.Errorf("login: %w", err)
	}
	master, err := keys.UnwrapMaster(kek, resp.WrappedMaster)
	if err != nil {
		// The server accepted the auth key but the master key does not open
		// (tampered wrapping, bad tag): the same error as a wrong password.
		return nil, failed
	}
	if err := opts.Remember(srv, email, kdf); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	c.SetToken(resp.Token)
	s := &Session{Server: srv, Email: email, Token: resp.Token, Expires: resp.Expires, Master: master}
	// Identity keys: made for a v1 account (migration), checked otherwise.
	if _, _, err := EnsureIdentity(ctx, c, s); err != nil && !errors.Is(err, ErrIdentityUnsupported) {
		return nil, fmt.Errorf("login: %w", err)
	}
	return s, nil
}

// ChangePassword re-wraps the master key under a new password, with the
// client's own parameters: the strongest of keys.DefaultKDF, opts' floor and
// those remembered for the account, never what the server suggests. The old
// password's auth key is derived only with parameters LoginWith would accept.
func ChangePassword(ctx context.Context, c *client.Client, s *Session, oldPassword, newPassword []byte, opts Options) error {
	if len(newPassword) == 0 {
		return errors.New("passwd: empty new password")
	}
	oldSalt, oldKDF, err := opts.prelogin(ctx, c, s.Server, s.Email)
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	// The server checks the old password (as its auth key); the master key
	// itself comes from the session, so only its wrapping changes.
	oldAuth, _, err := keys.FromPassword(oldPassword, oldSalt, oldKDF)
	if err != nil {
		return fmt.Errorf("passwd: derive old keys: %w", err)
	}
	kdf := keys.MaxKDF(keys.DefaultKDF(), opts.floor())
	if known, ok, err := opts.Remembered(s.Server, s.Email); err != nil {
		return fmt.Errorf("passwd: %w", err)
	} else if ok {
		kdf = keys.MaxKDF(kdf, known)
	}
	salt, err := keys.NewSalt()
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	newAuth, newKEK, err := keys.FromPassword(newPassword, salt, kdf)
	if err != nil {
		return fmt.Errorf("passwd: derive new keys: %w", err)
	}
	wrapped, err := keys.WrapMaster(newKEK, s.Master)
	if err != nil {
		return fmt.Errorf("passwd: wrap master key: %w", err)
	}
	err = c.ChangePassword(ctx, api.PasswordRequest{
		OldAuthKey:       oldAuth[:],
		NewSalt:          salt,
		NewKDF:           toAPI(kdf),
		NewAuthKey:       newAuth[:],
		NewWrappedMaster: wrapped,
	})
	if err != nil {
		if errors.Is(err, api.ErrForbidden) || errors.Is(err, api.ErrUnauthorized) {
			return fmt.Errorf("passwd: %w (or the session has expired: run kumo login)", ErrWrongPassword)
		}
		return fmt.Errorf("passwd: %w", err)
	}
	if err := opts.Remember(s.Server, s.Email, kdf); err != nil {
		return fmt.Errorf("passwd: the password is changed, but: %w", err)
	}
	return nil
}

// DefaultPath is $KUMO_CONFIG_DIR/session.json, else $XDG_CONFIG_HOME/kumo/session.json,
// else ~/.config/kumo/session.json.
func DefaultPath() string {
	if d := os.Getenv("KUMO_CONFIG_DIR"); d != "" {
		return filepath.Join(d, "session.json")
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "kumo", "session.json")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "."
	}
	return filepath.Join(home, ".config", "kumo", "session.json")
}

// Load reads a saved session.
func Load(path string) (*Session, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no %s)", ErrNoSession, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	var s Session
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read session %s: %w", path, err)
	}
	if s.Server == "" || s.Token == "" {
		return nil, fmt.Errorf("read session %s: incomplete (no server or token)", path)
	}
	return &s, nil
}

// Save writes the session atomically with mode 0600 (directory 0700).
func (s *Session) Save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	if err := writeConfig(path, append(b, '\n')); err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	return nil
}

// serverName is the address saved in the session: as the user gave it, else the client's.
func serverName(c *client.Client, server string) string {
	if server != "" {
		return strings.TrimRight(server, "/")
	}
	return c.BaseURL()
}

// Remove deletes the saved session at path; a missing file is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove session: %w", err)
	}
	return nil
}

// Subkeys returns the per-purpose keys of the account.
func (s *Session) Subkeys() keys.Subkeys { return keys.Derive(s.Master) }
