package session

// The client's own rules for password hashing: a floor below which it never
// derives, and the parameters of every account it has logged in to, kept per
// server and e-mail in known_accounts.json next to session.json. A server
// cannot make the client derive cheaper keys (and send an auth key that is
// cheap to attack offline) than the client saw for the account before.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"kumo/internal/atomicfile"
	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/client"
)

// Options are the client's own rules for deriving keys from a password. The
// zero value is the rules of a real client, except that no parameters are
// remembered.
type Options struct {
	// Floor is the weakest Argon2id parameters the client derives with,
	// whatever the server answers; zero means keys.FloorKDF(). Only tests
	// lower it (to keys.TestKDF()), explicitly.
	Floor keys.KDFParams
	// Known is the file of account parameters seen before (KnownPath); ""
	// remembers nothing.
	Known string
}

// ErrKDFDowngrade is returned when the server answers weaker password-hashing
// parameters than the client's floor or than it saw before for the account.
// Nothing derived from the password has been sent.
var ErrKDFDowngrade = errors.New("the server asked for weaker password hashing than this client allows")

func (o Options) floor() keys.KDFParams {
	if o.Floor == (keys.KDFParams{}) {
		return keys.FloorKDF()
	}
	return o.Floor
}

// KnownPath is the known-accounts file next to the session file at sessionPath.
func KnownPath(sessionPath string) string {
	return filepath.Join(filepath.Dir(sessionPath), "known_accounts.json")
}

// knownFile is the JSON of known_accounts.json.
type knownFile struct {
	Accounts []knownAccount `json:"accounts"`
}

type knownAccount struct {
	Server string        `json:"server"`
	Email  string        `json:"email"`
	KDF    api.KDFParams `json:"kdf"`
}

// knownServer is how servers are compared: scheme and host lower-cased, no trailing slash.
func knownServer(server string) string {
	server = strings.TrimRight(server, "/")
	if u, err := url.Parse(server); err == nil {
		u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
		return u.String()
	}
	return server
}

func (o Options) readKnown() (*knownFile, error) {
	var f knownFile
	if o.Known == "" {
		return &f, nil
	}
	b, err := os.ReadFile(o.Known)
	if errors.Is(err, os.ErrNotExist) {
		return &f, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err != nil {
		return nil, fmt.Errorf("read the known accounts %s (fix or remove the file): %w", o.Known, err)
	}
	return &f, nil
}

// Remembered returns the parameters seen before for email on server (ok false if none).
func (o Options) Remembered(server, email string) (p keys.KDFParams, ok bool, err error) {
	f, err := o.readKnown()
	if err != nil {
		return keys.KDFParams{}, false, err
	}
	server, email = knownServer(server), NormalizeEmail(email)
	for _, a := range f.Accounts {
		if a.Server == server && a.Email == email {
			return fromAPI(a.KDF), true, nil
		}
	}
	return keys.KDFParams{}, false, nil
}

// Remember records p for email on server (field by field at least what was
// recorded before) in the known-accounts file, written atomically, mode 0600.
func (o Options) Remember(server, email string, p keys.KDFParams) error {
	if o.Known == "" {
		return nil
	}
	f, err := o.readKnown()
	if err != nil {
		return err
	}
	server, email = knownServer(server), NormalizeEmail(email)
	found := false
	for i, a := range f.Accounts {
		if a.Server == server && a.Email == email {
			f.Accounts[i].KDF = toAPI(keys.MaxKDF(fromAPI(a.KDF), p))
			found = true
		}
	}
	if !found {
		f.Accounts = append(f.Accounts, knownAccount{Server: server, Email: email, KDF: toAPI(p)})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("save the known accounts: %w", err)
	}
	if err := writeConfig(o.Known, append(b, '\n')); err != nil {
		return fmt.Errorf("save the known accounts: %w", err)
	}
	return nil
}

// prelogin asks the server for the account's salt and parameters and refuses
// parameters that are out of range, below the client's floor or below those
// remembered for the account, before anything is derived from the password.
func (o Options) prelogin(ctx context.Context, c *client.Client, server, email string) (salt []byte, kdf keys.KDFParams, err error) {
	pre, err := c.Prelogin(ctx, email)
	if err != nil {
		return nil, keys.KDFParams{}, err
	}
	kdf = fromAPI(pre.KDF)
	if err := kdf.Validate(); err != nil {
		return nil, keys.KDFParams{}, fmt.Errorf("the server answered unusable password-hashing parameters (%v): %w; refusing to log in (nothing derived from the password was sent)", kdf, err)
	}
	if floor := o.floor(); kdf.Weaker(floor) {
		return nil, keys.KDFParams{}, fmt.Errorf("%w (%v < floor %v): refusing to log in, nothing derived from the password was sent; "+
			"kumo accounts are made with at least the floor, so the server or something on the way is likely trying to make the password cheap to guess: "+
			"check the server address and its certificate, and if you trust the server, have its operator check the account", ErrKDFDowngrade, kdf, floor)
	}
	known, ok, err := o.Remembered(server, email)
	if err != nil {
		return nil, keys.KDFParams{}, err
	}
	if ok && kdf.Weaker(known) {
		return nil, keys.KDFParams{}, fmt.Errorf("%w (%v < %v, seen before for %s on %s): refusing to log in, nothing derived from the password was sent; "+
			"if you trust the server and the password was changed since with weaker parameters, remove the account's entry from %s and log in again",
			ErrKDFDowngrade, kdf, known, NormalizeEmail(email), knownServer(server), o.Known)
	}
	return pre.Salt, kdf, nil
}

// writeConfig writes b to path, mode 0600 in a 0700 directory, atomically.
func writeConfig(path string, b []byte) error {
	return atomicfile.WritePrivate(path, b)
}
