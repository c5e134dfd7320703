package session

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/server"
)

// notFound is a made-up 404 answer, as a server without the route gives.
func notFound() *hostile.Response {
	return &hostile.Response{Status: http.StatusNotFound, Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"error":{"code":"not_found","message":"endpoint not found"}}`)}
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
	s2, err := LoginWith(ctx(t), newClient(t, url), url, "alice@example.com", []byte("pw"), testOpts())
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
	old := hostile.Start(t, url)
	old.On("", "/v1/account/identity", hostile.Reply(notFound()))
	old.On("", "/v1/keys", hostile.Reply(notFound()))
	c := newClient(t, old.URL)
	s, err := Signup(ctx(t), c, old.URL, "v1@example.com", []byte("pw"), keys.TestKDF())
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
	if _, err := LoginWith(ctx(t), newClient(t, old.URL), old.URL, "v1@example.com", []byte("pw"), testOpts()); err != nil {
		t.Fatalf("login through an old server: %v", err)
	}
	direct := newClient(t, url)
	direct.SetToken(s.Token)
	if rec, err := direct.Identity(ctx(t)); err != nil || rec.Sealed != nil {
		t.Fatalf("identity before migration: %+v %v", rec, err)
	}

	s2, err := LoginWith(ctx(t), newClient(t, url), url, "v1@example.com", []byte("pw"), testOpts())
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
	s3, err := LoginWith(ctx(t), newClient(t, url), url, "v1@example.com", []byte("pw"), testOpts())
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
	h := hostile.Start(t, url)
	c := newClient(t, h.URL)
	s, err := Signup(ctx(t), c, h.URL, "alice@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := Signup(ctx(t), newClient(t, h.URL), h.URL, "mallory@example.com", []byte("pw"), keys.TestKDF())
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

	type rule struct {
		method, path string
		rule         hostile.Rule
	}
	cases := []struct {
		name  string
		rules []rule
	}{
		{"keys shown to others swapped", []rule{{"GET", "/v1/keys", hostile.EditJSON(func(p *api.PublicKeys) {
			p.BoxPublic, p.SignPublic = evil.Public.Box[:], evil.Public.Sign[:]
		})}}},
		{"only the signing key swapped", []rule{{"GET", "/v1/keys", hostile.EditJSON(func(p *api.PublicKeys) { p.SignPublic = evil.Public.Sign[:] })}}},
		{"keys shown to the owner swapped", []rule{{"GET", "/v1/account/identity", hostile.EditJSON(func(p *api.Identity) {
			p.BoxPublic, p.SignPublic = evil.Public.Box[:], evil.Public.Sign[:]
		})}}},
		{"whole record replaced by another account's", []rule{{"GET", "/v1/account/identity", hostile.EditJSON(func(p *api.Identity) { *p = mrec })}}},
		{"sealed blob tampered", []rule{{"GET", "/v1/account/identity", hostile.EditJSON(func(p *api.Identity) { p.Sealed[30] ^= 1 })}}},
		{"identity dropped", []rule{{"GET", "/v1/account/identity", hostile.EditJSON(func(p *api.Identity) { *p = api.Identity{} })}}},
		{"keys hidden from others", []rule{{"GET", "/v1/keys", hostile.Reply(notFound())}}},
		{"keys of another e-mail", []rule{{"GET", "/v1/keys", hostile.EditJSON(func(p *api.PublicKeys) { p.Email = "mallory@example.com" })}}},
	}
	for _, tc := range cases {
		h.Honest()
		for _, r := range tc.rules {
			h.On(r.method, r.path, r.rule)
		}
		saved := *s
		if _, _, err := EnsureIdentity(ctx(t), c, &saved); !errors.Is(err, ErrIdentityMismatch) {
			t.Errorf("%s: whoami got %v, want ErrIdentityMismatch", tc.name, err)
		}
		// A login through the hostile server is refused too (no fingerprint
		// known yet on a new machine: the check stands on the sealed keys).
		if _, err := LoginWith(ctx(t), newClient(t, h.URL), h.URL, "alice@example.com", []byte("pw"), testOpts()); !errors.Is(err, ErrIdentityMismatch) {
			t.Errorf("%s: login got %v, want ErrIdentityMismatch", tc.name, err)
		}
	}
	// A dropped identity made the new device try to publish new keys; the
	// server refuses to replace published ones: only the two signups' went in.
	accepted := 0
	for _, ex := range h.Exchanges("PUT", "/v1/account/identity") {
		if ex.Upstream != nil && ex.Upstream.Status == http.StatusOK {
			accepted++
		}
	}
	if accepted != 2 {
		t.Errorf("%d identity uploads accepted, want 2 (the signups')", accepted)
	}
	h.Honest()
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

// TestIdentityInProcess: the embedded cloud (no socket, client.InProcess)
// serves the identity routes too, query string included.
func TestIdentityInProcess(t *testing.T) {
	srv, err := server.New(server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 30,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), LoginLimit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, err := client.New(client.Options{BaseURL: "http://embedded.invalid",
		HTTPClient: &http.Client{Transport: client.NewInProcess(srv.Handler())}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Signup(ctx(t), c, "", "local@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	if s.Identity == "" {
		t.Fatal("no identity keys in the embedded cloud")
	}
	if _, fp, err := PeerKeys(ctx(t), c, "local@example.com"); err != nil || fp != s.Identity {
		t.Fatalf("peer keys in process: %s %v", fp, err)
	}
}
