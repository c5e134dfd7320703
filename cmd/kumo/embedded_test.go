package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func needFUSE(t *testing.T) {
	t.Helper()
	_, err := os.Stat("/dev/fuse")
	if _, lerr := exec.LookPath("fusermount3"); err == nil && lerr != nil {
		err = lerr
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no FUSE: %v", err)
		}
		t.Skipf("no FUSE: %v", err)
	}
}

// TestEmbeddedWithoutLogin: with no server logged in, ls, put, get, status
// and topup work on this machine's embedded cloud (or, while it is mounted,
// say where); with nothing at all they say what to run.
func TestEmbeddedWithoutLogin(t *testing.T) {
	bin := buildKumo(t)
	base := t.TempDir()
	cloud := filepath.Join(base, "cloud")
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + filepath.Join(base, "cfg"), "HOME=" + base,
		"XDG_DATA_HOME=" + filepath.Join(base, "data"), "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	r.fails("or kumo mount DIR to use an embedded cloud", "ls")

	needFUSE(t)
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	r.ok("mount", "--cloud-dir", cloud, "--cache-dir", filepath.Join(base, "cache"), mnt)
	mounted := true
	defer func() {
		if mounted {
			r.run("unmount", "--force", mnt)
		}
	}()
	if err := os.WriteFile(filepath.Join(mnt, "hello.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.fails("is mounted at "+mnt+" (pid ", "ls", "--cloud-dir", cloud)
	r.ok("unmount", mnt)
	mounted = false

	if out := r.ok("ls", "--cloud-dir", cloud); !strings.Contains(out, "hello.txt") {
		t.Fatalf("kumo ls on the embedded cloud: %q", out)
	}
	local := filepath.Join(base, "local.txt")
	if err := os.WriteFile(local, []byte("put here"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.ok("put", "--cloud-dir", cloud, local, "/put.txt")
	got := filepath.Join(base, "got.txt")
	r.ok("get", "--cloud-dir", cloud, "/put.txt", got)
	if b, err := os.ReadFile(got); err != nil || string(b) != "put here" {
		t.Fatalf("kumo get: %q %v", b, err)
	}
	if out := r.ok("status", "--cloud-dir", cloud); !strings.Contains(out, "server      embedded") {
		t.Fatalf("kumo status on the embedded cloud: %q", out)
	}
	errs := r.fails("kumo admin --data "+cloud+" voucher create", "topup", "--cloud-dir", cloud, "1GiB")
	if strings.Contains(errs, "ask its operator") {
		t.Fatalf("topup on the embedded cloud tells its operator to ask the operator: %q", errs)
	}
}

// TestMountServerWithoutSession: one plain sentence, no nested parentheses.
func TestMountServerWithoutSession(t *testing.T) {
	bin := buildKumo(t)
	base := t.TempDir()
	cfg := filepath.Join(base, "cfg")
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	errs := r.fails("not logged in to http://127.0.0.1:9", "mount", "--foreground", "--server", "http://127.0.0.1:9", mnt)
	if !strings.Contains(errs, "kumo login --server http://127.0.0.1:9 --email E") {
		t.Fatalf("no next step: %q", errs)
	}
	depth := 0
	for _, ch := range errs {
		switch ch {
		case '(':
			if depth++; depth > 1 {
				t.Fatalf("nested parentheses: %q", errs)
			}
		case ')':
			depth--
		}
	}
}
