package fs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func TestBasicAndRemount(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)

	big := randBytes(9<<20 + 12345) // three chunks, last partial
	small := []byte("hello kumo\n")
	must(t, os.WriteFile(m.p("small.txt"), small, 0o640))
	must(t, os.WriteFile(m.p("big.bin"), big, 0o600))
	must(t, os.Mkdir(m.p("dir"), 0o755))
	must(t, os.Mkdir(m.p("dir/sub"), 0o700))
	must(t, os.WriteFile(m.p("dir/sub/f"), []byte("x"), 0o644))
	must(t, os.WriteFile(m.p("gone"), []byte("bye"), 0o644))
	must(t, os.Remove(m.p("gone")))
	must(t, os.Rename(m.p("small.txt"), m.p("dir/moved.txt")))
	must(t, os.Symlink("dir/moved.txt", m.p("link")))
	must(t, os.Link(m.p("big.bin"), m.p("dir/hard")))

	check := func(m *mounted) {
		t.Helper()
		got, err := os.ReadFile(m.p("dir/moved.txt"))
		if err != nil || !bytes.Equal(got, small) {
			t.Fatalf("moved.txt: %q %v", got, err)
		}
		got, err = os.ReadFile(m.p("big.bin"))
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("big.bin: %d bytes, %v", len(got), err)
		}
		got, err = os.ReadFile(m.p("link"))
		if err != nil || !bytes.Equal(got, small) {
			t.Fatalf("via symlink: %q %v", got, err)
		}
		if tg, err := os.Readlink(m.p("link")); err != nil || tg != "dir/moved.txt" {
			t.Fatalf("readlink %q %v", tg, err)
		}
		var st syscall.Stat_t
		must(t, syscall.Stat(m.p("dir/hard"), &st))
		if st.Nlink != 2 || st.Size != int64(len(big)) {
			t.Fatalf("hard link: nlink %d size %d", st.Nlink, st.Size)
		}
		must(t, syscall.Stat(m.p("dir/sub"), &st))
		if st.Mode&0o7777 != 0o700 || st.Mode&syscall.S_IFDIR == 0 {
			t.Fatalf("dir mode %o", st.Mode)
		}
		must(t, syscall.Stat(m.p("dir"), &st))
		if st.Nlink != 3 {
			t.Errorf("dir nlink %d, want 3", st.Nlink)
		}
		if names := readDirNames(t, m.mnt); !equal(names, []string{"big.bin", "dir", "link"}) {
			t.Fatalf("root: %v", names)
		}
		if names := readDirNames(t, m.p("dir")); !equal(names, []string{"hard", "moved.txt", "sub"}) {
			t.Fatalf("dir: %v", names)
		}
		if _, err := os.Stat(m.p("gone")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("gone: %v", err)
		}
	}
	check(m)
	m.flush()
	m.unmount()

	// Same cache: the local tree comes back without the cloud's help.
	m2 := c.mount(t, t.TempDir(), nil)
	check(m2)
	m2.unmount()
}

// TestAppend: O_APPEND writes land at the end (the kernel picks their
// offset); the rest of truncate and sparse files is TestCoreTruncateSparse.
func TestAppend(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	ap := m.p("append")
	for i := 0; i < 3; i++ {
		f, err := os.OpenFile(ap, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		must(t, err)
		_, err = f.Write([]byte("line\n"))
		must(t, err)
		must(t, f.Close())
	}
	checkFile(t, ap, []byte("line\nline\nline\n"))
	m.flush()
	m.unmount()
	m2 := c.mount(t, t.TempDir(), nil)
	checkFile(t, m2.p("append"), []byte("line\nline\nline\n"))
}

func TestXattrAndMmap(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	p := m.p("x")
	must(t, os.WriteFile(p, make([]byte, 8192), 0o644))
	must(t, unix.Setxattr(p, "user.color", []byte("blue"), 0))
	buf := make([]byte, 64)
	n, err := unix.Getxattr(p, "user.color", buf)
	if err != nil || string(buf[:n]) != "blue" {
		t.Fatalf("getxattr %q %v", buf[:n], err)
	}
	n, err = unix.Listxattr(p, buf)
	if err != nil || string(buf[:n]) != "user.color\x00" {
		t.Fatalf("listxattr %q %v", buf[:n], err)
	}
	if err := unix.Setxattr(p, "user.color", []byte("x"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("XATTR_CREATE on existing: %v", err)
	}
	must(t, unix.Removexattr(p, "user.color"))
	if _, err := unix.Getxattr(p, "user.color", buf); !errors.Is(err, syscall.ENODATA) {
		t.Fatalf("after remove: %v", err)
	}

	// No POSIX ACLs and no per-file SELinux labels: refused as by a file
	// system without them, so that ls -l, cp -a and rsync stop asking for
	// the rest of the mount (ENODATA makes ls -l ask twice for every file).
	for _, name := range []string{"system.posix_acl_access", "system.posix_acl_default", "security.selinux"} {
		if _, err := unix.Getxattr(p, name, buf); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("getxattr %s: %v, want EOPNOTSUPP", name, err)
		}
		switch name {
		case "system.posix_acl_default":
			// The kernel answers for a file: a file has no default ACL to
			// remove. A directory's: none is stored, removed at once (cp -a
			// removes it after setting the access ACL, and reports a refusal).
			must(t, unix.Removexattr(m.p("."), name))
		case "system.posix_acl_access":
			must(t, unix.Removexattr(p, name)) // nothing beyond the mode to remove
		default:
			if err := unix.Removexattr(p, name); !errors.Is(err, syscall.EOPNOTSUPP) {
				t.Errorf("removexattr %s: %v, want EOPNOTSUPP", name, err)
			}
		}
	}
	// An access ACL a mode can say is set as that mode (as ext4 does: cp -a
	// and rsync -A set one on every file), at once for stat and for the
	// kernel's permission checks; one naming a user is still refused.
	must(t, unix.Setxattr(p, "system.posix_acl_access", acl([2]uint16{aclUserObj, 7}, [2]uint16{aclGroupObj, 5}, [2]uint16{aclOther, 0}), 0))
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("after setting the ACL u::rwx,g::r-x,o::---: %v, %v; want mode 0750", fi.Mode(), err)
	}
	named := acl([2]uint16{aclUserObj, 6}, [2]uint16{aclUser, 6}, [2]uint16{aclGroupObj, 4}, [2]uint16{aclMask, 6}, [2]uint16{aclOther, 4})
	if err := unix.Setxattr(p, "system.posix_acl_access", named, 0); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("setxattr of an ACL naming a user: %v, want EOPNOTSUPP", err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("after a refused ACL: %v, %v; want mode 0750 unchanged", fi.Mode(), err)
	}
	must(t, os.Chmod(p, 0o644))
	if err := unix.Setxattr(p, "security.selinux", []byte("system_u:object_r:user_home_t:s0\x00"), 0); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("setxattr security.selinux: %v, want EOPNOTSUPP", err)
	}
	must(t, unix.Setxattr(p, "security.kumo-test", []byte("kept"), 0)) // the rest of security.* is stored
	n, err = unix.Listxattr(p, buf)
	if err != nil || string(buf[:n]) != "security.kumo-test\x00" {
		t.Fatalf("listxattr %q %v", buf[:n], err)
	}
	if out, err := exec.Command("ls", "-l", p).CombinedOutput(); err != nil || strings.Contains(string(out), "+") {
		t.Errorf("ls -l: %q, %v; want no error and no ACL mark", out, err)
	}

	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	mem, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	must(t, err)
	copy(mem[4000:], "mmapped")
	must(t, unix.Msync(mem, unix.MS_SYNC))
	must(t, unix.Munmap(mem))
	must(t, f.Close())
	want := make([]byte, 8192)
	copy(want[4000:], "mmapped")
	m.flush()
	m.unmount()
	m2 := c.mount(t, t.TempDir(), nil)
	checkFile(t, m2.p("x"), want)
}

func TestUnlinkedOpenFile(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	p := m.p("tmp")
	f, err := os.Create(p)
	must(t, err)
	_, err = f.Write([]byte("still here"))
	must(t, err)
	must(t, os.Remove(p))
	_, err = f.Write([]byte(" and more"))
	must(t, err)
	got := make([]byte, 64)
	n, err := f.ReadAt(got, 0)
	if string(got[:n]) != "still here and more" {
		t.Fatalf("read back %q %v", got[:n], err)
	}
	must(t, f.Close())
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

func checkFile(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(p), err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes, want %d; first difference at %d", filepath.Base(p), len(got), len(want), i)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
