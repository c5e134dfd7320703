package session

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	hp "kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/remote/api"
)

// weakKDF is what a hostile server answers: about 19,000 guesses/s per core.
func weakKDF() api.KDFParams { return api.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1} }

// downgrade makes p answer prelogin with kdf instead of the account's parameters.
func downgrade(p *hp.Proxy, kdf api.KDFParams) {
	p.On("POST", "/v1/prelogin", hp.EditJSON(func(r *api.PreloginResponse) { r.KDF = kdf }))
}

// storedKDF is what the server holds for email (an honest prelogin).
func storedKDF(t *testing.T, url, email string) api.KDFParams {
	t.Helper()
	pre, err := newClient(t, url).Prelogin(ctx(t), email)
	if err != nil {
		t.Fatal(err)
	}
	return pre.KDF
}

// A server answering parameters below the client's floor gets nothing derived
// from the password: the login request is never sent.
func TestLoginRefusesKDFBelowFloor(t *testing.T) {
	url := startServer(t)
	if _, err := Signup(ctx(t), newClient(t, url), url, "alice@example.com", []byte("pw"), keys.DefaultKDF()); err != nil {
		t.Fatal(err)
	}
	p := hp.Start(t, url)
	downgrade(p, weakKDF())
	known := filepath.Join(t.TempDir(), "known_accounts.json")
	_, err := LoginWith(ctx(t), newClient(t, p.URL), p.URL, "alice@example.com", []byte("pw"), Options{Known: known})
	if !errors.Is(err, ErrKDFDowngrade) || !strings.Contains(err.Error(), "t=1 m=64KiB p=1 < floor t=3 m=65536KiB p=2") {
		t.Fatalf("login through a downgrading server: %v; want %v with the parameters", err, ErrKDFDowngrade)
	}
	if n := p.Count("", "*"); n != 1 || p.Count("POST", "/v1/login") != 0 {
		t.Fatalf("the client sent %d requests (%d logins) to a server that asked for weak hashing; want the prelogin only", n, p.Count("POST", "/v1/login"))
	}
	if _, err := os.Stat(known); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused login remembered something: %v", err)
	}
	// The plain Login (the embedded cloud's) has the same floor.
	if _, err := Login(ctx(t), newClient(t, p.URL), p.URL, "alice@example.com", []byte("pw")); !errors.Is(err, ErrKDFDowngrade) || p.Count("POST", "/v1/login") != 0 {
		t.Fatalf("Login through a downgrading server: %v", err)
	}
	// Honest again: the same login works, and the parameters are remembered, 0600.
	p.Honest()
	if _, err := LoginWith(ctx(t), newClient(t, p.URL), p.URL, "alice@example.com", []byte("pw"), Options{Known: known}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(known)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("known accounts file: %v, %v", st, err)
	}
	if got, ok, err := (Options{Known: known}).Remembered(p.URL+"/", "Alice@Example.com"); err != nil || !ok || got != keys.DefaultKDF() {
		t.Fatalf("remembered %v %v %v; want %v", got, ok, err, keys.DefaultKDF())
	}
}

// An account seen at some parameters is refused weaker ones later, even above
// the floor, and any single weaker field is enough.
func TestLoginRefusesKDFWeakerThanRemembered(t *testing.T) {
	url := startServer(t)
	strong := keys.KDFParams{Time: 2, MemoryKiB: 256, Threads: 2}
	if _, err := Signup(ctx(t), newClient(t, url), url, "bob@example.com", []byte("pw"), strong); err != nil {
		t.Fatal(err)
	}
	p := hp.Start(t, url)
	opts := Options{Floor: keys.TestKDF(), Known: filepath.Join(t.TempDir(), "known_accounts.json")}
	if _, err := LoginWith(ctx(t), newClient(t, p.URL), p.URL, "bob@example.com", []byte("pw"), opts); err != nil {
		t.Fatal(err)
	}
	for _, weak := range []api.KDFParams{
		{Time: 1, MemoryKiB: 256, Threads: 2},
		{Time: 2, MemoryKiB: 128, Threads: 2},
		{Time: 2, MemoryKiB: 256, Threads: 1},
		weakKDF(),
	} {
		p.Honest()
		downgrade(p, weak)
		logins := p.Count("POST", "/v1/login")
		_, err := LoginWith(ctx(t), newClient(t, p.URL), p.URL, "bob@example.com", []byte("pw"), opts)
		if !errors.Is(err, ErrKDFDowngrade) || !strings.Contains(err.Error(), "seen before for bob@example.com") || !strings.Contains(err.Error(), opts.Known) {
			t.Fatalf("login answered %+v after seeing %v: %v; want %v", weak, strong, err, ErrKDFDowngrade)
		}
		if p.Count("POST", "/v1/login") != logins {
			t.Fatalf("login request sent after the server answered %+v", weak)
		}
	}
	// Another e-mail on the same server is not held to bob's parameters.
	p.Honest()
	if _, err := Signup(ctx(t), newClient(t, url), url, "carol@example.com", []byte("pw"), keys.TestKDF()); err != nil {
		t.Fatal(err)
	}
	if _, err := LoginWith(ctx(t), newClient(t, p.URL), p.URL, "carol@example.com", []byte("pw"), opts); err != nil {
		t.Fatal(err)
	}
}

// passwd derives the old auth key only with acceptable parameters and wraps the
// master key with the client's own parameters, whatever prelogin says.
func TestChangePasswordUsesClientKDF(t *testing.T) {
	url := startServer(t)
	s, err := Signup(ctx(t), newClient(t, url), url, "dave@example.com", []byte("pw-one"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	p := hp.Start(t, url)
	known := filepath.Join(t.TempDir(), "known_accounts.json")
	c := newClient(t, p.URL)
	c.SetToken(s.Token)
	s.Server = p.URL

	// Through a server answering below the floor: refused, nothing sent.
	downgrade(p, weakKDF())
	if err := ChangePassword(ctx(t), c, s, []byte("pw-one"), []byte("pw-two"), Options{Known: known}); !errors.Is(err, ErrKDFDowngrade) {
		t.Fatalf("passwd through a downgrading server: %v", err)
	}
	if n := p.Count("POST", "/v1/password"); n != 0 {
		t.Fatalf("passwd sent %d password requests to a downgrading server", n)
	}
	p.Honest()

	// The account's own (test) parameters are accepted for the old password,
	// but the new wrapping uses the client's default, not what prelogin said.
	opts := Options{Floor: keys.TestKDF(), Known: known}
	if err := ChangePassword(ctx(t), c, s, []byte("pw-one"), []byte("pw-two"), opts); err != nil {
		t.Fatal(err)
	}
	want := toAPI(keys.DefaultKDF())
	if got := storedKDF(t, url, "dave@example.com"); got != want {
		t.Fatalf("the server stores %+v after passwd; want the client's %+v", got, want)
	}
	var sent api.PasswordRequest
	ex := p.Exchanges("POST", "/v1/password")
	if len(ex) != 1 || json.Unmarshal(ex[0].Request.Body, &sent) != nil || sent.NewKDF != want {
		t.Fatalf("password request: %d sent, new_kdf %+v", len(ex), sent.NewKDF)
	}
	if got, ok, _ := opts.Remembered(p.URL, "dave@example.com"); !ok || got != keys.DefaultKDF() {
		t.Fatalf("remembered after passwd: %v %v", got, ok)
	}

	// Parameters remembered stronger than the default are kept at the next change.
	stronger := keys.KDFParams{Time: 4, MemoryKiB: 64 * 1024, Threads: 2}
	if err := opts.Remember(p.URL, "dave@example.com", stronger); err != nil {
		t.Fatal(err)
	}
	// The server still holds t=3, now below what this client remembers: refused.
	if err := ChangePassword(ctx(t), c, s, []byte("pw-two"), []byte("pw-three"), opts); !errors.Is(err, ErrKDFDowngrade) {
		t.Fatalf("passwd with parameters below those remembered: %v", err)
	}
	if err := os.WriteFile(known, []byte(`{"accounts":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := opts.Remember(p.URL, "dave@example.com", keys.KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}); err != nil {
		t.Fatal(err)
	}
	if err := ChangePassword(ctx(t), c, s, []byte("pw-two"), []byte("pw-three"), opts); !errors.Is(err, ErrKDFDowngrade) {
		t.Fatalf("passwd with fewer threads than remembered: %v", err)
	}
}

// Every failure to open at login is the same error, word for word: a wrong
// password, an unknown e-mail, a wrapped master key changed by the server.
func TestLoginFailuresLookAlike(t *testing.T) {
	url := startServer(t)
	if _, err := Signup(ctx(t), newClient(t, url), url, "erin@example.com", []byte("pw"), keys.TestKDF()); err != nil {
		t.Fatal(err)
	}
	p := hp.Start(t, url)
	login := func(email, pw string) error {
		_, err := LoginWith(ctx(t), newClient(t, p.URL), p.URL, email, []byte(pw), testOpts())
		return err
	}
	wrongPW := login("erin@example.com", "wrong")
	unknown := login("nobody@example.com", "pw")
	p.On("POST", "/v1/login", hp.EditJSON(func(r *api.LoginResponse) { r.WrappedMaster[len(r.WrappedMaster)-1] ^= 1 }))
	badTag := login("erin@example.com", "pw")
	p.Honest()
	p.On("POST", "/v1/login", hp.EditJSON(func(r *api.LoginResponse) { r.WrappedMaster = r.WrappedMaster[:10] }))
	short := login("erin@example.com", "pw")
	for _, err := range []error{unknown, badTag, short} {
		if !errors.Is(err, ErrWrongPassword) || err.Error() != wrongPW.Error() {
			t.Errorf("login failure %q; want exactly %q", err, wrongPW)
		}
	}
}

// An unknown e-mail's answer looks like an account made by kumo signup and
// stays the same: a stable salt with the default parameters, which pass the
// floor (an unknown e-mail must not be told apart by a downgrade refusal), and
// the login fails with the wrong-password error, word for word.
func TestUnknownEmailLooksLikeAnAccount(t *testing.T) {
	url := startServer(t)
	if _, err := Signup(ctx(t), newClient(t, url), url, "real@example.com", []byte("pw"), keys.DefaultKDF()); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, url)
	a, err := c.Prelogin(ctx(t), "ghost@example.com")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Prelogin(ctx(t), "Ghost@Example.com ")
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Salt) != string(b.Salt) || a.KDF != b.KDF {
		t.Fatalf("unknown e-mail answered %+v then %+v", a, b)
	}
	if fromAPI(a.KDF) != keys.DefaultKDF() || fromAPI(a.KDF).Weaker(keys.FloorKDF()) {
		t.Fatalf("unknown e-mail's parameters %+v: not those of a new account (%v) or below the floor", a.KDF, keys.DefaultKDF())
	}
	_, ghost := Login(ctx(t), newClient(t, url), url, "ghost@example.com", []byte("pw"))
	_, wrong := Login(ctx(t), newClient(t, url), url, "real@example.com", []byte("not-pw"))
	if !errors.Is(wrong, ErrWrongPassword) || ghost == nil || ghost.Error() != wrong.Error() {
		t.Fatalf("unknown e-mail: %v; wrong password: %v; want the same error", ghost, wrong)
	}
}
