package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"

	"kumo/internal/keys"
	"kumo/remote/api"
)

// hostile is a proxy in front of a real server that can rewrite the answers
// of chosen routes, as a server operator (or anyone on the way) could.
type hostile struct {
	url string
	mu  sync.Mutex
	// rewrite, if set, gets every answer (method, path, status, body) and
	// returns the status and body to send instead.
	rewrite func(method, path string, status int, body []byte) (int, []byte)
}

func startHostile(t *testing.T, target string) *hostile {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		h.mu.Lock()
		f := h.rewrite
		h.mu.Unlock()
		if f == nil {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		st, nb := f(resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, b)
		resp.StatusCode = st
		resp.Body = io.NopCloser(bytes.NewReader(nb))
		resp.ContentLength = int64(len(nb))
		resp.Header.Set("Content-Length", strconv.Itoa(len(nb)))
		return nil
	}
	hs := httptest.NewServer(rp)
	t.Cleanup(hs.Close)
	h.url = hs.URL
	return h
}

func (h *hostile) set(f func(method, path string, status int, body []byte) (int, []byte)) {
	h.mu.Lock()
	h.rewrite = f
	h.mu.Unlock()
}

// rewriteJSON decodes an answer of path into a T, lets f change it, and re-encodes it.
func rewriteJSON[T any](t *testing.T, path string, f func(*T)) func(string, string, int, []byte) (int, []byte) {
	return func(method, p string, st int, body []byte) (int, []byte) {
		if p != path || st != http.StatusOK {
			return st, body
		}
		var v T
		if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("decode %s: %v", p, err)
			return st, body
		}
		f(&v)
		b, _ := json.Marshal(v)
		return st, b
	}
}

func TestIdentityAtSignupAndLogin(t *testing.T) {
	url := startServer(t)
	c := newClient(t, url)
	s, err := Signup(ctx(t), c, url, "alice@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	if s.Identity == "" {
		t.Fatal("signup made no identity keys")
	}
	rec, err := c.Identity(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	id, err := keys.OpenIdentity(s.Master, s.Email, rec.Sealed)
	if err != nil || id.Public.Fingerprint() != s.Identity {
		t.Fatalf("sealed identity: %v", err)
	}
	// A login on another machine finds the same keys; so does another account.
	s2, err := Login(ctx(t), newClient(t, url), url, "alice@example.com", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if s2.Identity != s.Identity {
		t.Fatalf("login saw %s, signup %s", s2.Identity, s.Identity)
	}
	cb := newClient(t, url)
	if _, err := Signup(ctx(t), cb, url, "bob@example.com", []byte("pw"), keys.TestKDF()); err != nil {
		t.Fatal(err)
	}
	pub, fp, err := PeerKeys(ctx(t), cb, "Alice@Example.com")
	if err != nil || fp != s.Identity || !pub.Equal(id.Public) {
		t.Fatalf("bob sees %s (%v), alice is %s", fp, err, s.Identity)
	}
	if _, _, err := PeerKeys(ctx(t), cb, "nobody@example.com"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("unknown peer: %v", err)
	}
	// EnsureIdentity again changes nothing.
	if _, created, err := EnsureIdentity(ctx(t), c, s); err != nil || created {
		t.Fatalf("second ensure: created %v, %v", created, err)
	}
}

// TestIdentityMigration: an account made without identity keys (by a v1
// client, here a signup through a server that has no identity API) gets them
// at its first login with this code, and keeps them afterwards.
func TestIdentityMigration(t *testing.T) {
	url := startServer(t)
	old := startHostile(t, url)
	old.set(func(method, path string, st int, body []byte) (int, []byte) {
		if path == "/v1/account/identity" || path == "/v1/keys" {
			return http.StatusNotFound, []byte(`{"error":{"code":"not_found","message":"endpoint not found"}}`)
		}
		return st, body
	})
	c := newClient(t, old.url)
	s, err := Signup(ctx(t), c, old.url, "v1@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	if s.Identity != "" {
		t.Fatal("identity through a server without identity API")
	}
	if _, _, err := EnsureIdentity(ctx(t), c, s); !errors.Is(err, ErrIdentityUnsupported) {
		t.Fatalf("old server: %v", err)
	}
	// A login through the old server still works (no identity, no failure).
	if _, err := Login(ctx(t), newClient(t, old.url), old.url, "v1@example.com", []byte("pw")); err != nil {
		t.Fatalf("login through an old server: %v", err)
	}
	direct := newClient(t, url)
	direct.SetToken(s.Token)
	if rec, err := direct.Identity(ctx(t)); err != nil || rec.Sealed != nil {
		t.Fatalf("identity before migration: %+v %v", rec, err)
	}

	s2, err := Login(ctx(t), newClient(t, url), url, "v1@example.com", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if s2.Identity == "" {
		t.Fatal("login did not migrate")
	}
	rec, err := direct.Identity(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := keys.OpenIdentity(s2.Master, s2.Email, rec.Sealed); err != nil || id.Public.Fingerprint() != s2.Identity {
		t.Fatalf("migrated identity: %v", err)
	}
	s3, err := Login(ctx(t), newClient(t, url), url, "v1@example.com", []byte("pw"))
	if err != nil || s3.Identity != s2.Identity {
		t.Fatalf("second login: %v, %s vs %s", err, s3.Identity, s2.Identity)
	}
}

// TestIdentitySwapDetected: a server that publishes other public keys for the
// account — to other accounts, to the owner, or with another account's sealed
// blob — or drops them after they were seen, is caught by the owner's check
// (kumo whoami, login).
func TestIdentitySwapDetected(t *testing.T) {
	url := startServer(t)
	h := startHostile(t, url)
	c := newClient(t, h.url)
	s, err := Signup(ctx(t), c, h.url, "alice@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := Signup(ctx(t), newClient(t, h.url), h.url, "mallory@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	mc := newClient(t, url)
	mc.SetToken(mallory.Token)
	mrec, err := mc.Identity(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	evil, _ := keys.NewIdentity()

	cases := []struct {
		name    string
		rewrite func(string, string, int, []byte) (int, []byte)
	}{
		{"keys shown to others swapped", rewriteJSON(t, "/v1/keys", func(p *api.PublicKeys) {
			p.BoxPublic, p.SignPublic = evil.Public.Box[:], evil.Public.Sign[:]
		})},
		{"only the signing key swapped", rewriteJSON(t, "/v1/keys", func(p *api.PublicKeys) { p.SignPublic = evil.Public.Sign[:] })},
		{"keys shown to the owner swapped", rewriteJSON(t, "/v1/account/identity", func(p *api.Identity) {
			p.BoxPublic, p.SignPublic = evil.Public.Box[:], evil.Public.Sign[:]
		})},
		{"whole record replaced by another account's", rewriteJSON(t, "/v1/account/identity", func(p *api.Identity) { *p = mrec })},
		{"sealed blob tampered", rewriteJSON(t, "/v1/account/identity", func(p *api.Identity) { p.Sealed[30] ^= 1 })},
		{"identity dropped", rewriteJSON(t, "/v1/account/identity", func(p *api.Identity) { *p = api.Identity{} })},
		{"keys hidden from others", func(m, p string, st int, b []byte) (int, []byte) {
			if p == "/v1/keys" {
				return http.StatusNotFound, []byte(`{"error":{"code":"not_found","message":"published keys of this e-mail not found"}}`)
			}
			return st, b
		}},
		{"keys of another e-mail", rewriteJSON(t, "/v1/keys", func(p *api.PublicKeys) { p.Email = "mallory@example.com" })},
	}
	for _, tc := range cases {
		h.set(tc.rewrite)
		saved := *s
		if _, _, err := EnsureIdentity(ctx(t), c, &saved); !errors.Is(err, ErrIdentityMismatch) {
			t.Errorf("%s: whoami got %v, want ErrIdentityMismatch", tc.name, err)
		}
		// A login through the hostile server is refused too (no fingerprint
		// known yet on a new machine: the check stands on the sealed keys).
		if _, err := Login(ctx(t), newClient(t, h.url), h.url, "alice@example.com", []byte("pw")); !errors.Is(err, ErrIdentityMismatch) {
			t.Errorf("%s: login got %v, want ErrIdentityMismatch", tc.name, err)
		}
	}
	h.set(nil)
	if _, _, err := EnsureIdentity(ctx(t), c, s); err != nil {
		t.Fatalf("honest again: %v", err)
	}
	// The refused answers changed nothing on the server.
	dc := newClient(t, url)
	dc.SetToken(s.Token)
	rec, _ := dc.Identity(ctx(t))
	if id, err := keys.OpenIdentity(s.Master, s.Email, rec.Sealed); err != nil || id.Public.Fingerprint() != s.Identity {
		t.Fatalf("stored identity changed: %v", err)
	}
}
