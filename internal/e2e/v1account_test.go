package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// An account and a drive cache made by the last v1 release still mount and
// read back byte for byte; a file rewritten now is sealed in format v2, and a
// new device (empty cache) reads the mixed tree too.
func TestV1AccountStillMounts(t *testing.T) {
	bin := needKumo(t)
	root := t.TempDir()
	out, err := exec.Command("tar", "-xzf", filepath.Join("testdata", "v1-account.tar.gz"), "-C", root).CombinedOutput()
	if err != nil {
		t.Fatalf("untar fixture: %v\n%s", err, out)
	}
	env := []string{"KUMO_CONFIG_DIR=" + filepath.Join(root, "config")}
	m := &kumoMount{bin: bin, cloud: filepath.Join(root, "cloud"), cache: filepath.Join(root, "cache"),
		dir: filepath.Join(root, "mnt"), env: env}
	m.start(t)
	checkV1Tree(t, m.dir, root, "")

	// Rewrite one file: its record becomes v2; the rest stays v1.
	if err := os.WriteFile(filepath.Join(m.dir, "docs", "notes.txt"), []byte("rewritten in v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.unmount(t)

	fresh := m.again(t, filepath.Join(root, "cache2"))
	checkV1Tree(t, fresh.dir, root, "rewritten in v2\n")
	fresh.unmount(t)
}

// checkV1Tree compares the mounted fixture tree with sums.txt (notes, when
// set, is the new content of docs/notes.txt and its hard link).
func checkV1Tree(t *testing.T, mnt, root, notes string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "sums.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("bad sums line %q", sc.Text())
		}
		b, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if notes != "" && (name == "./docs/notes.txt" || name == "./docs/hardlink.txt") {
			if string(b) != notes {
				t.Fatalf("%s: %q, want %q", name, b, notes)
			}
		} else if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
			t.Fatalf("%s: sha256 %x, want %s", name, h, sum)
		}
		n++
	}
	if n != 7 {
		t.Fatalf("checked %d files, want 7", n)
	}
	if target, err := os.Readlink(filepath.Join(mnt, "docs", "link")); err != nil || target != "../hello.txt" {
		t.Fatalf("symlink: %q, %v", target, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, "docs", "notes.txt"), &st); err != nil || st.Nlink != 2 {
		t.Fatalf("hard link count %d, %v", st.Nlink, err)
	}
	if err := syscall.Stat(filepath.Join(mnt, "docs", "secret.txt"), &st); err != nil || st.Mode&0o7777 != 0o640 {
		t.Fatalf("secret.txt mode %o, %v", st.Mode&0o7777, err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(mnt, "hello.txt"), "user.color", buf); err != nil || string(buf[:n]) != "blue" {
		t.Fatalf("xattr user.color: %q, %v", buf[:max(n, 0)], err)
	}
}
