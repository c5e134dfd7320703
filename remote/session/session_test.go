package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/server"
)

// startServer runs a real server on a loopback port over a temp dir.
func startServer(t *testing.T) string {
	t.Helper()
	srv, err := server.New(server.Config{
		DataDir:      t.TempDir(),
		DefaultQuota: 1 << 30,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		LoginLimit:   1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return hs.URL
}

func newClient(t *testing.T, url string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{BaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testOpts lowers the client's floor to the cheap test parameters, which the
// tests' accounts are made with.
func testOpts() Options { return Options{Floor: keys.TestKDF()} }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSignupLoginPasswd(t *testing.T) {
	url := startServer(t)
	c := newClient(t, url)
	s, err := Signup(ctx(t), c, url, " Alice@Example.com ", []byte("pw-one"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	if s.Email != "alice@example.com" || s.Token == "" || s.Server != url {
		t.Fatalf("session %+v", s)
	}
	// The root is sealed with the master key and readable.
	root, err := c.GetNode(ctx(t), api.RootID)
	if err != nil {
		t.Fatal(err)
	}
	a, err := meta.NewSealer(s.Subkeys()).OpenAttrs(api.RootID, root.Attrs)
	if err != nil || a.Mode&0o170000 != 0o040000 || a.Mode&0o777 != 0o755 {
		t.Fatalf("root attrs %+v, %v", a, err)
	}
	if _, err := Signup(ctx(t), newClient(t, url), url, "alice@example.com", []byte("x"), keys.TestKDF()); !errors.Is(err, api.ErrExists) {
		t.Fatalf("second signup: %v", err)
	}

	// Login on a "new machine" with e-mail + password only gives the same master key.
	c2 := newClient(t, url)
	s2, err := LoginWith(ctx(t), c2, url, "alice@example.com", []byte("pw-one"), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if s2.Master != s.Master || s2.Token == s.Token {
		t.Fatal("login: different master key or same token")
	}
	if _, err := LoginWith(ctx(t), newClient(t, url), url, "alice@example.com", []byte("wrong"), testOpts()); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := LoginWith(ctx(t), newClient(t, url), url, "nobody@example.com", []byte("pw-one"), testOpts()); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("unknown e-mail: %v", err)
	}

	// Change the password through the first session.
	if err := ChangePassword(ctx(t), c, s, []byte("wrong"), []byte("pw-two"), testOpts()); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("passwd with wrong old password: %v", err)
	}
	if err := ChangePassword(ctx(t), c, s, []byte("pw-one"), []byte("pw-two"), testOpts()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Account(ctx(t)); err != nil {
		t.Fatalf("calling session ended by passwd: %v", err)
	}
	if _, err := c2.Account(ctx(t)); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("other session still alive after passwd: %v", err)
	}
	if _, err := LoginWith(ctx(t), newClient(t, url), url, "alice@example.com", []byte("pw-one"), testOpts()); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("old password still works: %v", err)
	}
	s3, err := LoginWith(ctx(t), newClient(t, url), url, "alice@example.com", []byte("pw-two"), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if s3.Master != s.Master {
		t.Fatal("master key changed with the password")
	}

	// Logout ends the token.
	c3 := newClient(t, url)
	c3.SetToken(s3.Token)
	if err := c3.Logout(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c3.Account(ctx(t)); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("after logout: %v", err)
	}
}

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cfg", "kumo")
	p := filepath.Join(dir, "session.json")
	if _, err := Load(p); !errors.Is(err, ErrNoSession) {
		t.Fatalf("load missing: %v", err)
	}
	s := &Session{Server: "http://127.0.0.1:1", Email: "a@b.c", Token: "tok", Expires: time.Now().Round(0).UTC(), Fingerprint: "ab"}
	s.Master[0], s.Master[31] = 7, 9
	if err := s.Save(p); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{p, 0o600}, {dir, 0o700}} {
		st, err := os.Stat(c.path)
		if err != nil || st.Mode().Perm() != c.mode {
			t.Fatalf("%s: mode %v, %v; want %v", c.path, st.Mode().Perm(), err, c.mode)
		}
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *s {
		t.Fatalf("loaded %+v, saved %+v", got, s)
	}
	// Overwrite leaves no temp files behind.
	s.Token = "tok2"
	if err := s.Save(p); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %d files", len(ents))
	}
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultPath(t *testing.T) {
	t.Setenv("KUMO_CONFIG_DIR", "/x/y")
	if p := DefaultPath(); p != "/x/y/session.json" {
		t.Fatal(p)
	}
	t.Setenv("KUMO_CONFIG_DIR", "")
	t.Setenv("XDG_CONFIG_HOME", "/xdg")
	if p := DefaultPath(); p != "/xdg/kumo/session.json" {
		t.Fatal(p)
	}
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", "/home/u")
	if p := DefaultPath(); p != "/home/u/.config/kumo/session.json" {
		t.Fatal(p)
	}
}
