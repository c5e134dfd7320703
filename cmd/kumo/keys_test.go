package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kumo/internal/keys"
)

// TestCLIWhoamiAndRecovery runs kumo whoami, recovery-key and recover through
// the built binary against kumo serve.
func TestCLIWhoamiAndRecovery(t *testing.T) {
	bin := buildKumo(t)
	url, _ := startServe(t, bin)
	cfg := t.TempDir()
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=first password"}}
	r.ok("signup", "--server", url, "--email", "alice@example.com")

	fpRe := regexp.MustCompile(`(?m)^identity: ([0-9a-f]{4}( [0-9a-f]{4}){7})$`)
	out := r.ok("whoami")
	m := fpRe.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "email:    alice@example.com\n") || !strings.Contains(out, "server:   "+url+"\n") {
		t.Fatalf("whoami:\n%s", out)
	}
	fp := m[1]
	if out := r.ok("whoami"); !strings.Contains(out, fp) {
		t.Fatalf("second whoami:\n%s", out)
	}
	// Another account sees the same fingerprint for alice.
	bob := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=bob pw"}}
	bob.ok("signup", "--server", url, "--email", "bob@example.com")
	if out := bob.ok("whoami", "Alice@example.com"); !strings.Contains(out, "identity: "+fp) {
		t.Fatalf("bob's whoami alice:\n%s", out)
	}

	src := filepath.Join(t.TempDir(), "note.txt")
	os.WriteFile(src, []byte("kept across recovery\n"), 0o644)
	r.ok("put", src, "/note.txt")

	wrongPw := filepath.Join(cfg, "wrong")
	os.WriteFile(wrongPw, []byte("not it\n"), 0o600)
	r.fails("wrong e-mail or password", "recovery-key", "--password-file", wrongPw)
	out = r.ok("recovery-key")
	key := regexp.MustCompile(`[A-Z2-7]{4}(-[A-Z2-7]{4}){13}`).FindString(out)
	if key == "" || !strings.Contains(out, "shown only this once") {
		t.Fatalf("recovery-key:\n%s", out)
	}

	newPw := filepath.Join(cfg, "new")
	os.WriteFile(newPw, []byte("second password\n"), 0o600)
	rec := func(k string) []string {
		f := filepath.Join(t.TempDir(), "rk")
		os.WriteFile(f, []byte(k+"\n"), 0o600)
		return []string{"recover", "--server", url, "--email", "alice@example.com", "--recovery-key-file", f, "--new-password-file", newPw}
	}
	// A typo: caught before anything is sent.
	typo := []byte(key)
	if typo[0] == 'A' {
		typo[0] = 'B'
	} else {
		typo[0] = 'A'
	}
	errs := r.fails("checksum does not match", rec(string(typo))...)
	if !strings.Contains(errs, "nothing was sent") {
		t.Fatalf("typo error: %s", errs)
	}
	other, _ := keys.NewRecoveryKey()
	r.fails("wrong e-mail or recovery key", rec(other.String())...)
	r.ok("whoami") // the refused recoveries ended nothing

	out = r.ok(rec(strings.ToLower(strings.ReplaceAll(key, "-", " ")))...)
	if !strings.Contains(out, "new password set with the recovery key") {
		t.Fatalf("recover: %s", out)
	}
	if out := r.ok("whoami"); !strings.Contains(out, "identity: "+fp) {
		t.Fatalf("whoami after recovery:\n%s", out)
	}
	dst := filepath.Join(t.TempDir(), "note.out")
	r.ok("get", "/note.txt", dst)
	if b, _ := os.ReadFile(dst); string(b) != "kept across recovery\n" {
		t.Fatalf("file after recovery: %q", b)
	}
	r.fails("wrong e-mail or password", "login", "--server", url, "--email", "alice@example.com")
	r.ok("login", "--server", url, "--email", "alice@example.com", "--password-file", newPw)
}
