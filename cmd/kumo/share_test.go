package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIShare: kumo share, shares, share accept, share get/put/ls, share rm
// and contacts verify between two accounts of one server.
func TestCLIShare(t *testing.T) {
	bin := buildKumo(t)
	url, _ := startServe(t, bin)
	alice := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw alice"}}
	bob := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw bob"}}
	alice.ok("signup", "--server", url, "--email", "alice@example.com")
	bob.ok("signup", "--server", url, "--email", "bob@example.com")

	src := t.TempDir()
	data := make([]byte, 5<<20+3)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big.bin"), data, 0o644)
	alice.ok("put", filepath.Join(src, "big.bin"), "/Docs/big.bin")

	out := alice.ok("share", "/Docs", "--with", "bob@example.com", "--role", "writer")
	if !strings.Contains(out, "shared /Docs with bob@example.com as writer") {
		t.Fatalf("share said %q", out)
	}
	// The owner still reads the folder (now sealed under the share's keys) with ls and get.
	if ls := alice.ok("ls", "/Docs"); !strings.Contains(ls, "big.bin") {
		t.Fatalf("owner's ls /Docs: %q", ls)
	}
	fp := strings.TrimSpace(strings.TrimPrefix(strings.Split(alice.ok("whoami"), "identity: ")[1], ""))
	shares := bob.ok("shares")
	if !strings.Contains(shares, "invited") || !strings.Contains(shares, "alice@example.com/Docs") || !strings.Contains(shares, fp) {
		t.Fatalf("bob's shares (want alice's fingerprint %s):\n%s", fp, shares)
	}
	bob.ok("share", "accept", "alice@example.com/Docs")
	dst := t.TempDir()
	bob.ok("share", "get", "alice@example.com/Docs/big.bin", filepath.Join(dst, "big.out"))
	if got, err := os.ReadFile(filepath.Join(dst, "big.out")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("member's get: %d bytes, %v", len(got), err)
	}
	os.WriteFile(filepath.Join(src, "b.txt"), []byte("from bob\n"), 0o644)
	bob.ok("share", "put", filepath.Join(src, "b.txt"), "alice@example.com/Docs/b.txt")
	alice.ok("get", "/Docs/b.txt", filepath.Join(dst, "b.out"))
	if got, _ := os.ReadFile(filepath.Join(dst, "b.out")); string(got) != "from bob\n" {
		t.Fatalf("owner reads the member's file: %q", got)
	}
	if ls := bob.ok("share", "ls", "alice@example.com/Docs"); !strings.Contains(ls, "b.txt") || !strings.Contains(ls, "big.bin") {
		t.Fatalf("member's ls: %q", ls)
	}
	// kumo ls shows the joined folder where a mount shows it.
	if ls := bob.ok("ls", "/Shared"); !strings.Contains(ls, " Docs") || !strings.HasPrefix(ls, "d") {
		t.Fatalf("member's kumo ls /Shared: %q", ls)
	}
	if ls := bob.ok("ls", "/Shared/Docs"); !strings.Contains(ls, "b.txt") || !strings.Contains(ls, "big.bin") {
		t.Fatalf("member's kumo ls /Shared/Docs: %q", ls)
	}
	bob.fails("no folder of that name", "ls", "/Shared/Nope")
	// The owner's home tree does not write into the share.
	alice.fails("shared folder", "put", filepath.Join(src, "b.txt"), "/Docs/c.txt")

	bob.fails("not", "contacts", "verify", "alice@example.com", "0000 0000 0000 0000 0000 0000 0000 0000")
	if out := bob.ok("contacts", "verify", "alice@example.com", fp); !strings.Contains(out, "pinned alice@example.com") {
		t.Fatalf("contacts verify: %q", out)
	}

	// Removing a writer re-seals the folder; the owner still reads all of it.
	if out := alice.ok("share", "rm", "/Docs", "--with", "bob@example.com"); !strings.Contains(out, "re-sealed: records under key generations before 2 are refused") {
		t.Fatalf("share rm of a writer said %q", out)
	}
	alice.ok("get", "/Docs/big.bin", filepath.Join(dst, "big.again"))
	if got, err := os.ReadFile(filepath.Join(dst, "big.again")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("owner's get after the re-seal: %d bytes, %v", len(got), err)
	}
	if out := alice.ok("shares"); strings.Contains(out, "re-seal pending") {
		t.Fatalf("shares after a finished re-seal:\n%s", out)
	}
	bob.fails("alice@example.com/Docs", "share", "ls", "alice@example.com/Docs")
	if _, _, err := bob.run("ls", "/Shared"); err == nil {
		t.Fatal("kumo ls /Shared lists a share bob was removed from")
	}
}
