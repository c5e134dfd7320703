package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGetLinkSelfSigned: kumo get URL from a server with a self-signed
// certificate. With no pin and no terminal it is refused, saying to pass
// --fingerprint; a wrong fingerprint is refused before anything is sent;
// the right one (with colons, as login takes it)
// downloads the file byte-exact, and nothing is written on a refusal.
func TestGetLinkSelfSigned(t *testing.T) {
	bin := buildKumo(t)
	p := serveAt(t, bin, t.TempDir(), "127.0.0.1:0", "--tls-self-signed")
	if !strings.HasPrefix(p.url, "https://") || len(p.fingerprint) != 64 {
		t.Fatalf("serve: url %q fingerprint %q", p.url, p.fingerprint)
	}
	owner := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw"}}
	owner.ok("signup", "--server", p.url, "--email", "tlslink@example.com", "--fingerprint", p.fingerprint)
	src := filepath.Join(t.TempDir(), "f.txt")
	want := bytes.Repeat([]byte("pinned link\n"), 1000)
	os.WriteFile(src, want, 0o644)
	owner.ok("put", src, "/f.txt")
	u := makeLink(t, owner, "/f.txt")

	// Someone with the URL and no kumo account, a fresh config.
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir()}}
	dest := filepath.Join(t.TempDir(), "got.txt")
	r.fails("--fingerprint", "get", u, dest)
	r.fails("does not match --fingerprint", "get", "--fingerprint", strings.Repeat("ab", 32), u, dest)
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("refused gets left %s: %v", dest, err)
	}
	r.ok("get", "--fingerprint", colons(p.fingerprint), u, dest)
	if got, err := os.ReadFile(dest); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("get with --fingerprint: %d bytes, %v; want the %d bytes put", len(got), err, len(want))
	}
	// --fingerprint pins TLS: with a plain http link it is a mistake, said so.
	r.fails("needs an https://", "get", "--fingerprint", p.fingerprint, "http://127.0.0.1:1/s/"+u[strings.LastIndex(u, "/s/")+3:], dest+"2")
}
