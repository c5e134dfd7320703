package main

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMountOwnerShare: with the built binary, the owner mounts the drive
// after sharing a folder (kumo share): the folder reads through the mount,
// a file written there reads byte exact for the writer member (kumo share
// get checks its signature), and mv out of the folder is EXDEV. Before the
// drive knew shares, reading the folder was EIO.
func TestMountOwnerShare(t *testing.T) {
	needFUSE(t)
	bin := buildKumo(t)
	url, _ := startServe(t, bin)
	base := t.TempDir()
	alice := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw alice", "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	bob := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw bob"}}
	alice.ok("signup", "--server", url, "--email", "alice@example.com")
	bob.ok("signup", "--server", url, "--email", "bob@example.com")
	src := filepath.Join(base, "a.txt")
	if err := os.WriteFile(src, []byte("shared a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	alice.ok("put", src, "/Docs/a.txt")
	alice.ok("share", "/Docs", "--with", "bob@example.com", "--role", "writer")
	bob.ok("share", "accept", "alice@example.com/Docs")

	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	alice.ok("mount", "--server", url, "--cache-dir", filepath.Join(base, "cache"), mnt)
	mounted := true
	defer func() {
		if mounted {
			alice.run("unmount", "--force", mnt)
		}
	}()
	if got, err := os.ReadFile(filepath.Join(mnt, "Docs", "a.txt")); err != nil || string(got) != "shared a\n" {
		t.Fatalf("owner reads the shared folder through the mount: %q %v", got, err)
	}
	data := make([]byte, 200<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(mnt, "Docs", "w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "Docs", "w.bin"), filepath.Join(mnt, "w.bin")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("mv out of the shared folder: %v, want EXDEV", err)
	}
	alice.ok("unmount", mnt) // pushes what is queued
	mounted = false
	out := filepath.Join(t.TempDir(), "w.out")
	bob.ok("share", "get", "alice@example.com/Docs/w.bin", out)
	if got, err := os.ReadFile(out); err != nil || string(got) != string(data) {
		t.Fatalf("member reads the file the owner's mount wrote: %d bytes, %v", len(got), err)
	}
}
