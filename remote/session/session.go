// Package session is a logged-in account on the client side: server address,
// bearer token and master key, how they are derived from e-mail and password,
// and how they are kept on disk (0600 file in a 0700 directory).
package session

import (
	"context"
	"time"

	"kumo/internal/keys"
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
}

// Signup creates the account (fresh salt and master key, sealed root directory) and logs in.
func Signup(ctx context.Context, c *client.Client, server, email string, password []byte, kdf keys.KDFParams) (*Session, error) {
	panic("TODO")
}

// Login derives the keys from the password, logs in and unwraps the master key.
func Login(ctx context.Context, c *client.Client, server, email string, password []byte) (*Session, error) {
	panic("TODO")
}

// ChangePassword re-wraps the master key under a new password.
func ChangePassword(ctx context.Context, c *client.Client, s *Session, oldPassword, newPassword []byte) error {
	panic("TODO")
}

// DefaultPath is $KUMO_CONFIG_DIR/session.json, else $XDG_CONFIG_HOME/kumo/session.json,
// else ~/.config/kumo/session.json.
func DefaultPath() string { panic("TODO") }

// Load reads a saved session.
func Load(path string) (*Session, error) { panic("TODO") }

// Save writes the session atomically with mode 0600 (directory 0700).
func (s *Session) Save(path string) error { panic("TODO") }

// Subkeys returns the per-purpose keys of the account.
func (s *Session) Subkeys() keys.Subkeys { return keys.Derive(s.Master) }
