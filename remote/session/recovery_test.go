package session

import (
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/server"
)

func TestRecoveryKey(t *testing.T) {
	url := startServer(t)
	c := newClient(t, url)
	s, err := Signup(ctx(t), c, url, "alice@example.com", []byte("old-pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SetRecoveryKey(ctx(t), c, s, []byte("not-the-password"), testOpts()); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("recovery key with a wrong password: %v", err)
	}
	rk, err := SetRecoveryKey(ctx(t), c, s, []byte("old-pw"), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	// Typed back from its text form, as a user would.
	rk2, err := keys.ParseRecoveryKey(rk.String())
	if err != nil || rk2 != rk {
		t.Fatalf("text form: %v", err)
	}
	wrong, _ := keys.NewRecoveryKey()

	// Every failure is the same error, and changes nothing.
	var msgs []string
	for _, tc := range []struct {
		email string
		rk    keys.RecoveryKey
	}{
		{"alice@example.com", wrong},
		{"nobody@example.com", rk},
	} {
		_, err := Recover(ctx(t), newClient(t, url), url, tc.email, tc.rk, []byte("new-pw"), testOpts())
		if !errors.Is(err, ErrRecoveryFailed) {
			t.Fatalf("recover %s: %v", tc.email, err)
		}
		msgs = append(msgs, err.Error())
	}
	if _, err := Signup(ctx(t), newClient(t, url), url, "bob@example.com", []byte("pw"), keys.TestKDF()); err != nil {
		t.Fatal(err)
	}
	_, err = Recover(ctx(t), newClient(t, url), url, "bob@example.com", rk, []byte("new-pw"), testOpts())
	if !errors.Is(err, ErrRecoveryFailed) {
		t.Fatalf("recover an account without a recovery key: %v", err)
	}
	msgs = append(msgs, err.Error())
	for _, m := range msgs[1:] {
		if m != msgs[0] {
			t.Fatalf("recovery failures differ: %q vs %q", m, msgs[0])
		}
	}
	if _, err := c.Account(ctx(t)); err != nil {
		t.Fatalf("session after refused recoveries: %v", err)
	}
	if _, err := LoginWith(ctx(t), newClient(t, url), url, "alice@example.com", []byte("old-pw"), testOpts()); err != nil {
		t.Fatalf("old password after refused recoveries: %v", err)
	}

	// The right key: new password, same master key and identity, old password and sessions dead.
	nc := newClient(t, url)
	rs, err := Recover(ctx(t), nc, url, " Alice@example.com", rk, []byte("new-pw"), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if rs.Master != s.Master || rs.Identity != s.Identity || rs.Email != "alice@example.com" {
		t.Fatalf("recovered session %+v", rs)
	}
	root, err := nc.GetNode(ctx(t), api.RootID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := meta.NewSealer(rs.Subkeys()).OpenAttrs(api.RootID, root.Attrs); err != nil {
		t.Fatalf("root after recovery: %v", err)
	}
	if _, err := c.Account(ctx(t)); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("old session after recovery: %v", err)
	}
	if _, err := LoginWith(ctx(t), newClient(t, url), url, "alice@example.com", []byte("old-pw"), testOpts()); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("old password after recovery: %v", err)
	}
	ls, err := LoginWith(ctx(t), newClient(t, url), url, "alice@example.com", []byte("new-pw"), testOpts())
	if err != nil || ls.Master != s.Master {
		t.Fatalf("new password: %v", err)
	}
	// The recovery key still works (it wraps the same master key).
	if _, err := Recover(ctx(t), newClient(t, url), url, "alice@example.com", rk, []byte("third-pw"), testOpts()); err != nil {
		t.Fatalf("second recovery: %v", err)
	}
	// A new recovery key replaces the old one.
	lc, err := ls.Client()
	if err != nil {
		t.Fatal(err)
	}
	// The second recovery ended ls's session: log in with the third password.
	ls, err = LoginWith(ctx(t), lc, url, "alice@example.com", []byte("third-pw"), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	rk3, err := SetRecoveryKey(ctx(t), lc, ls, []byte("third-pw"), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Recover(ctx(t), newClient(t, url), url, "alice@example.com", rk, []byte("x"), testOpts()); !errors.Is(err, ErrRecoveryFailed) {
		t.Fatalf("replaced recovery key: %v", err)
	}
	if _, err := Recover(ctx(t), newClient(t, url), url, "alice@example.com", rk3, []byte("x"), testOpts()); err != nil {
		t.Fatalf("new recovery key: %v", err)
	}
}

// TestRecoveryHostileWrapping: a server that answers a recovery with a
// tampered or another wrapping of the master key gets the same one error,
// and no password is replaced.
func TestRecoveryHostileWrapping(t *testing.T) {
	url := startServer(t)
	c := newClient(t, url)
	s, err := Signup(ctx(t), c, url, "alice@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	rk, err := SetRecoveryKey(ctx(t), c, s, []byte("pw"), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	h := hostile.Start(t, url)
	h.On("POST", "/v1/recovery/open", hostile.EditJSON(func(r *api.RecoveryOpenResponse) { r.WrappedMaster[40] ^= 1 }))
	_, err = Recover(ctx(t), newClient(t, h.URL), h.URL, "alice@example.com", rk, []byte("new"), testOpts())
	if !errors.Is(err, ErrRecoveryFailed) {
		t.Fatalf("tampered wrapping: %v", err)
	}
	if resets := h.Count("", "/v1/recovery/reset"); resets != 0 {
		t.Fatal("a reset was sent after a wrapping that does not open")
	}
	if _, err := LoginWith(ctx(t), newClient(t, url), url, "alice@example.com", []byte("pw"), testOpts()); err != nil {
		t.Fatalf("password after a refused recovery: %v", err)
	}
}

// TestRecoveryRateLimit: guesses of the recovery key are limited like
// password guesses (and share their budget).
func TestRecoveryRateLimit(t *testing.T) {
	srv, err := server.New(server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 30,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), LoginLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	c := newClient(t, hs.URL)
	if _, err := Signup(ctx(t), c, hs.URL, "alice@example.com", []byte("pw"), keys.TestKDF()); err != nil {
		t.Fatal(err)
	}
	wrong, _ := keys.NewRecoveryKey()
	for i := 0; i < 2; i++ {
		if _, err := Recover(ctx(t), c, hs.URL, "alice@example.com", wrong, []byte("x"), testOpts()); !errors.Is(err, ErrRecoveryFailed) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	nr, err := client.New(client.Options{BaseURL: hs.URL, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Recover(ctx(t), nr, hs.URL, "alice@example.com", wrong, []byte("x"), testOpts())
	if !errors.Is(err, api.ErrRateLimited) || errors.Is(err, ErrRecoveryFailed) {
		t.Fatalf("third guess: %v", err)
	}
}
