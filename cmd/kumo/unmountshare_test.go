package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMountUnmountProgressShared: `kumo unmount` waits for the queues of
// the folders shared with the account too (their member drives), and its
// progress now counts them. Bob's drive writes a file into the folder
// alice shares with him while the cloud is down; an unmount with a time
// limit reports the file it waits for and gives up saying so. Before, the
// progress counted bob's own queue alone (empty): it printed nothing and
// gave up "waiting for the daemon" as if nothing were queued.
func TestMountUnmountProgressShared(t *testing.T) {
	needFUSE(t)
	bin := buildKumo(t)
	srv := serveAt(t, bin, t.TempDir(), "127.0.0.1:0")
	base := t.TempDir()
	aliceCfg, bobCfg := t.TempDir(), t.TempDir()
	alice := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + aliceCfg, "KUMO_PASSWORD=pw alice", "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	bob := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + bobCfg, "KUMO_PASSWORD=pw bob", "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	alice.ok("signup", "--server", srv.url, "--email", "alice@example.com")
	bob.ok("signup", "--server", srv.url, "--email", "bob@example.com")
	src := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(src, []byte("shared a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	alice.ok("put", src, "/Docs/a.txt")
	alice.ok("share", "/Docs", "--with", "bob@example.com", "--role", "writer")
	bob.ok("share", "accept", "alice@example.com/Docs")

	mnt := filepath.Join(base, "bob")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	bob.ok("mount", "--server", srv.url, "--cache-dir", filepath.Join(base, "bob-cache"), mnt)
	t.Cleanup(func() { bob.run("unmount", "--force", mnt) })
	shared := filepath.Join(mnt, "Shared", "Docs")
	end := time.Now().Add(20 * time.Second)
	for {
		if got, err := os.ReadFile(filepath.Join(shared, "a.txt")); err == nil && string(got) == "shared a\n" {
			break
		}
		if time.Now().After(end) {
			t.Fatal("bob's mount does not show Shared/Docs/a.txt")
		}
		os.ReadFile(filepath.Join(mnt, ".kumo")) // loads the shares again
		time.Sleep(100 * time.Millisecond)
	}

	srv.stop() // the cloud is down: what bob writes now stays queued
	if err := os.WriteFile(filepath.Join(shared, "new.txt"), []byte("from bob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, err := bob.run("unmount", "--timeout", "3s", mnt)
	if err == nil {
		t.Fatalf("unmount with the shared folder's file queued and the cloud down succeeded:\n%s", errs)
	}
	if !strings.Contains(errs, "pushing pending uploads") || !strings.Contains(errs, "in 1 file") ||
		!strings.Contains(errs, "gave up after 3s waiting for 9 B in 1 file") {
		t.Fatalf("unmount's progress does not count the shared folder's queued file:\n%s", errs)
	}
}
