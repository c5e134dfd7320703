package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kumo/internal/hostile"
	"kumo/remote/api"
)

// kumo login through a server that asks for weak password hashing: refused
// with the parameters and what to do, and no login request is sent. An
// account's parameters are remembered at signup, and a later login below
// them is refused.
func TestCLILoginRefusesKDFDowngrade(t *testing.T) {
	bin := buildKumo(t)
	url, _ := startServe(t, bin)
	cfg := t.TempDir()
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=correct horse"}}
	r.ok("signup", "--server", url, "--email", "kdf@example.com")
	known := filepath.Join(cfg, "known_accounts.json")
	if st, err := os.Stat(known); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("known accounts after signup: %v %v", st, err)
	}

	p := hostile.Start(t, url)
	p.On("POST", "/v1/prelogin", hostile.EditJSON(func(r *api.PreloginResponse) {
		r.KDF = api.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	}))
	errs := r.fails("the server asked for weaker password hashing than this client allows (t=1 m=64KiB p=1 < floor t=3 m=65536KiB p=2): refusing to log in",
		"login", "--server", p.URL, "--email", "kdf@example.com")
	if !strings.Contains(errs, "nothing derived from the password was sent") {
		t.Errorf("the refusal does not say nothing was sent: %s", errs)
	}
	if n := p.Count("POST", "/v1/login"); n != 0 {
		t.Fatalf("kumo login sent %d login requests to a downgrading server", n)
	}

	// Remembered stronger than the server now answers: refused, naming the file.
	b, err := json.Marshal(map[string]any{"accounts": []map[string]any{{
		"server": url, "email": "kdf@example.com",
		"kdf": api.KDFParams{Time: 4, MemoryKiB: 64 * 1024, Threads: 2},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(known, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r.fails("seen before for kdf@example.com on "+url, "login", "--server", url, "--email", "kdf@example.com")
	r.fails(known, "login", "--server", url, "--email", "kdf@example.com")
	// Removing the entry (the documented way out) lets the login through.
	os.Remove(known)
	r.ok("login", "--server", url, "--email", "kdf@example.com")
}
