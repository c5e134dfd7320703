package fs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// vfsCapV2 is a valid security.capability value (VFS_CAP_REVISION_2,
// CAP_NET_BIND_SERVICE permitted), as setcap writes it.
var vfsCapV2 = []byte{0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// killPrivDirs mounts a drive that other users reach (allow_other) and makes
// a local directory beside it, both open to an unprivileged user, for tests
// that compare the drive with the kernel's own file system as root does
// something as another user (why: what needs root).
func killPrivDirs(t *testing.T, why string) (*mounted, string) {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs root (%s)", why)
		}
		t.Skip("needs root")
	}
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), func(o *Options) { o.AllowOther = true })
	local := t.TempDir()
	for _, d := range []string{m.mnt, local, filepath.Dir(m.mnt), filepath.Dir(local)} {
		must(t, os.Chmod(d, 0o755))
	}
	return m, local
}

// TestKillPrivOnWrite: the drive negotiates FUSE_HANDLE_KILLPRIV_V2, so it
// must clear setuid/setgid and capabilities on write and truncate itself.
// Each case runs on a local directory and on the drive; the drive must end
// where the kernel's own file system does, and stat must show it at once.
func TestKillPrivOnWrite(t *testing.T) {
	m, local := killPrivDirs(t, "a write by another user")

	nobody := func(t *testing.T, script, p string) {
		t.Helper()
		cmd := exec.Command("sh", "-c", script, "sh", p)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s as nobody: %v %s", script, err, out)
		}
	}
	root := func(t *testing.T, script, p string) {
		t.Helper()
		if out, err := exec.Command("sh", "-c", script, "sh", p).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", script, err, out)
		}
	}
	const appendX, truncate = `printf x >> "$1"`, `: > "$1"`
	cases := []struct {
		name     string
		mode     uint32
		cap      bool
		run      func(*testing.T, string, string)
		script   string
		wantMode uint32
		wantCap  bool
	}{
		{"write by a user drops setuid and setgid", 0o6777, false, nobody, appendX, 0o777, false},
		{"setgid without group execute goes for a caller outside the group", 0o2767, false, nobody, appendX, 0o767, false},
		{"setgid without group execute stays for root", 0o2767, false, root, appendX, 0o2767, false},
		{"chown by root drops setuid", 0o4755, false, root, `chown 1:1 "$1"`, 0o755, false},
		{"truncate by a user drops setuid", 0o4777, false, nobody, truncate, 0o777, false},
		{"write by root keeps setuid", 0o4777, false, root, appendX, 0o4777, false},
		{"write by root drops capabilities", 0o755, true, root, appendX, 0o755, false},
		{"no write keeps capabilities", 0o755, true, root, `test -f "$1"`, 0o755, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, dir := range []string{local, m.mnt} {
				p := filepath.Join(dir, "f"+string(rune('a'+i)))
				must(t, os.WriteFile(p, []byte("data"), 0o600))
				must(t, os.Chmod(p, os.FileMode(tc.mode&0o777)|modeBits(tc.mode)))
				if tc.cap {
					must(t, unix.Setxattr(p, xattrCapability, vfsCapV2, 0))
				}
				var st syscall.Stat_t
				must(t, syscall.Stat(p, &st)) // the kernel now caches the mode
				tc.run(t, tc.script, p)
				must(t, syscall.Stat(p, &st))
				_, err := unix.Getxattr(p, xattrCapability, make([]byte, 64))
				hasCap := err == nil
				if err != nil && !errors.Is(err, unix.ENODATA) {
					t.Fatalf("%s: getxattr: %v", p, err)
				}
				if st.Mode&0o7777 != tc.wantMode || hasCap != tc.wantCap {
					t.Errorf("%s: mode %o, capabilities %v; want %o, %v", p, st.Mode&0o7777, hasCap, tc.wantMode, tc.wantCap)
				}
			}
		})
	}
}

func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&syscall.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	return fm
}

// TestKillPrivOnChownSpecial: a chown clears setuid and setgid on every
// non-directory, as Linux does: fifos, sockets and device nodes too, not
// only regular files. Each case runs on a local directory and on the drive.
func TestKillPrivOnChownSpecial(t *testing.T) {
	m, local := killPrivDirs(t, "mknod, a chown by another user")
	const nobody = 65534
	chown := func(t *testing.T, p string, asNobody bool) {
		t.Helper()
		cmd := exec.Command("chown", "65534:65534", p)
		if asNobody {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("chown %s (as nobody: %v): %v %s", p, asNobody, err, out)
		}
	}
	kinds := []struct {
		name string
		typ  uint32
		dev  int
	}{
		{"fifo", syscall.S_IFIFO, 0},
		{"socket", syscall.S_IFSOCK, 0},
		{"character device", syscall.S_IFCHR, int(unix.Mkdev(1, 3))},
		{"block device", syscall.S_IFBLK, int(unix.Mkdev(7, 0))},
	}
	modes := []struct {
		name     string
		mode     uint32
		asNobody bool
		want     uint32
	}{
		{"by its owner", 0o6775, true, 0o775},
		{"by its owner, setgid without group execute stays", 0o6765, true, 0o2765},
		{"by root", 0o6775, false, 0o775},
	}
	i := 0
	for _, k := range kinds {
		for _, md := range modes {
			i++
			t.Run(k.name+" "+md.name, func(t *testing.T) {
				for _, dir := range []string{local, m.mnt} {
					p := filepath.Join(dir, fmt.Sprintf("n%d", i))
					must(t, unix.Mknod(p, k.typ|0o600, k.dev))
					must(t, os.Chown(p, nobody, nobody)) // before the bits: a chown by root clears them
					must(t, syscall.Chmod(p, md.mode))
					var st syscall.Stat_t
					must(t, syscall.Lstat(p, &st))
					if st.Mode&0o7777 != md.mode {
						t.Fatalf("%s: mode %o after chmod, want %o", p, st.Mode&0o7777, md.mode)
					}
					chown(t, p, md.asNobody)
					must(t, syscall.Lstat(p, &st))
					if st.Mode&syscall.S_IFMT != k.typ || st.Mode&0o7777 != md.want {
						t.Errorf("%s: mode %o after chown, want %o", p, st.Mode, k.typ|md.want)
					}
				}
			})
		}
	}
}
