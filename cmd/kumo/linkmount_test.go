package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/fs/mountpoint"
)

// TestCLIMountLink: kumo mount URL MNT with no account (built binary, real
// kumo serve): a folder link mounted by the daemon reads byte exact and
// refuses writes, kumo unmount unmounts it; a password link mounts with
// --password-file after the mount point and refuses a wrong one; a revoked
// link does not mount; in the foreground SIGTERM unmounts.
func TestCLIMountLink(t *testing.T) {
	bin := buildKumo(t)
	url, _, _ := serveLogged(t, bin, t.TempDir())
	owner := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=account pw", "HOME=" + t.TempDir()}}
	owner.ok("signup", "--server", url, "--email", "owner@example.com")
	src := filepath.Join(t.TempDir(), "folder")
	for i := range 50 {
		b := make([]byte, i*131)
		rand.Read(b)
		p := filepath.Join(src, fmt.Sprintf("d%d", i%5), fmt.Sprintf("f%02d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 5<<20+7)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big.bin"), big, 0o600)
	owner.ok("put", "-r", src, "/")
	folderURL := strings.TrimSpace(owner.ok("link", "/folder"))
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("link secret pw\n"), 0o600)
	pwURL := strings.TrimSpace(owner.ok("link", "/folder", "--password", "--link-password-file", pwFile))
	goneURL := strings.TrimSpace(owner.ok("link", "/folder"))
	owner.ok("link", "rm", goneURL)

	needFUSE(t)
	reader, mnt, mounted := linkReader(t, bin)

	_, errs, err := reader.run("mount", folderURL, mnt)
	if err != nil || !strings.Contains(errs, "mounted at "+mnt) || !strings.Contains(errs, "read-only link") {
		t.Fatalf("kumo mount URL: %v\n%s", err, errs)
	}
	*mounted = true
	if m, ok, _ := mountpoint.Lookup(mnt); !ok || !m.IsKumo() {
		t.Fatalf("%s: %+v mounted=%v", mnt, m, ok)
	}
	if n := sameTree(t, src, mnt); n != 51 {
		t.Fatalf("%d files", n)
	}
	if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write into a mounted link: %v, want EROFS", err)
	}
	reader.fails("already a kumo drive", "mount", folderURL, mnt)
	reader.ok("unmount", mnt)
	*mounted = false
	if _, ok, _ := mountpoint.Lookup(mnt); ok {
		t.Fatal("still mounted after kumo unmount")
	}

	// A password link: flags after the arguments, as kumo get takes them.
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	reader.fails("wrong password", "mount", pwURL, mnt, "--password-file", bad)
	if _, ok, _ := mountpoint.Lookup(mnt); ok {
		t.Fatal("mounted with a wrong password")
	}
	reader.ok("mount", pwURL, mnt, "--password-file", pwFile)
	*mounted = true
	if b, err := os.ReadFile(filepath.Join(mnt, "big.bin")); err != nil || len(b) != len(big) || string(b) != string(big) {
		t.Fatalf("big.bin through the password link: %d bytes, %v", len(b), err)
	}
	reader.ok("unmount", mnt)
	*mounted = false

	reader.fails("revoked", "mount", goneURL, mnt)
	reader.fails("does not open with its secret", "mount", folderURL[:len(folderURL)-2]+"AA", mnt)
	if _, ok, _ := mountpoint.Lookup(mnt); ok {
		t.Fatal("a revoked or wrong link mounted")
	}

	// Foreground: SIGTERM unmounts and exits.
	cmd := exec.Command(bin, "mount", "--foreground", folderURL, mnt)
	cmd.Env = append(os.Environ(), reader.env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok, _ := mountpoint.Lookup(mnt); ok {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the foreground mount did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	*mounted = true
	if b, err := os.ReadFile(filepath.Join(mnt, "d0", "f05")); err != nil || len(b) != 5*131 {
		t.Fatalf("d0/f05: %d bytes, %v", len(b), err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("foreground mount after SIGTERM: %v", err)
	}
	if _, ok, _ := mountpoint.Lookup(mnt); ok {
		t.Fatal("still mounted after SIGTERM")
	}
	*mounted = false
}

// TestCLIMountLinkSelfSigned: kumo mount URL MNT of a link on a server with
// a self-signed certificate pins it as kumo get does: with no pin and no
// terminal it is refused, saying to pass --fingerprint; a wrong
// --fingerprint is refused and nothing is mounted; the right one (with
// colons) mounts and the file reads byte exact.
func TestCLIMountLinkSelfSigned(t *testing.T) {
	bin := buildKumo(t)
	p := serveAt(t, bin, t.TempDir(), "127.0.0.1:0", "--tls-self-signed")
	if !strings.HasPrefix(p.url, "https://") || len(p.fingerprint) != 64 {
		t.Fatalf("serve: url %q fingerprint %q", p.url, p.fingerprint)
	}
	owner := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw", "HOME=" + t.TempDir()}}
	owner.ok("signup", "--server", p.url, "--email", "tlsmount@example.com", "--fingerprint", p.fingerprint)
	src := filepath.Join(t.TempDir(), "pinned")
	want := make([]byte, 3<<20+11)
	rand.Read(want)
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "f.bin"), want, 0o644)
	owner.ok("put", "-r", src, "/")
	u := makeLink(t, owner, "/pinned")

	needFUSE(t)
	reader, mnt, mounted := linkReader(t, bin)
	reader.fails("--fingerprint", "mount", u, mnt)
	reader.fails("does not match --fingerprint", "mount", "--fingerprint", strings.Repeat("ab", 32), u, mnt)
	reader.fails("does not match --fingerprint", "mount", "--foreground", "--fingerprint", strings.Repeat("ab", 32), u, mnt)
	if _, ok, _ := mountpoint.Lookup(mnt); ok {
		t.Fatal("mounted with no pin or a wrong one")
	}
	reader.ok("mount", u, mnt, "--fingerprint", colons(p.fingerprint))
	*mounted = true
	if got, err := os.ReadFile(filepath.Join(mnt, "f.bin")); err != nil || string(got) != string(want) {
		t.Fatalf("f.bin through the pinned mount: %d bytes, %v; want the %d bytes put", len(got), err, len(want))
	}
	reader.ok("unmount", mnt)
	*mounted = false
}

// linkReader is a user with no account of its own and an empty mountpoint
// for a link; the mount is forced off when the test ends while *mounted.
func linkReader(t *testing.T, bin string) (reader *runner, mnt string, mounted *bool) {
	t.Helper()
	home := t.TempDir()
	reader = &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "HOME=" + home, "XDG_CACHE_HOME=" + filepath.Join(home, "cache")}}
	mnt = filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	mounted = new(bool)
	t.Cleanup(func() {
		if *mounted {
			reader.run("unmount", "--force", mnt)
		}
	})
	return reader, mnt, mounted
}
