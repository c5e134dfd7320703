package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// posixCase is one row of the conformance table. Each case runs in its own empty
// directory d: setup must succeed, op must fail with want (or succeed when want
// is 0), then check inspects the result.
type posixCase struct {
	name  string
	setup func(d string) error
	op    func(d string) error
	want  syscall.Errno
	check func(t *testing.T, d string)
}

func TestPOSIX(t *testing.T) {
	forEachTarget(t, nil, func(t *testing.T, tg *target) {
		root := filepath.Join(tg.dir, "posix")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range posixCases() {
			t.Run(c.name, func(t *testing.T) {
				d := filepath.Join(root, c.name)
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				if c.setup != nil {
					if err := c.setup(d); err != nil {
						t.Fatalf("setup: %v", err)
					}
				}
				err := c.op(d)
				switch {
				case c.want == 0 && err != nil:
					t.Fatalf("got error %v, want success", err)
				case c.want != 0 && !errors.Is(err, c.want):
					t.Fatalf("got %v, want %v (%s)", err, c.want, unix.ErrnoName(c.want))
				}
				if c.check != nil {
					c.check(t, d)
				}
			})
		}
		// Everything the cases left behind must come back identical from the cloud:
		// names, types, modes, owners, sizes, bytes, links, xattrs, mtimes.
		t.Run("persist-after-remount", func(t *testing.T) {
			before := snapshot(t, root)
			tg.remount(t)
			after := snapshot(t, root)
			requireSameTree(t, "posix tree after remount", before, after, snapOpts{owners: true, mtimes: true})
			mustEqualFile(t, filepath.Join(root, "mmap-shared", "f"), mmapPattern())
		})
	})
}

// --- helpers for cases ---

func touch(p string, data string) error { return os.WriteFile(p, []byte(data), 0o644) }

func openClose(p string, flags int, mode uint32) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func all(fns ...func() error) error {
	for _, f := range fns {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

func wantContent(t *testing.T, p, want string) {
	t.Helper()
	mustEqualFile(t, p, []byte(want))
}

func wantMissing(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("lstat %s: %v, want ENOENT", p, err)
	}
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func readDirNames(t *testing.T, d string) []string {
	t.Helper()
	es, err := os.ReadDir(d)
	if err != nil {
		t.Fatalf("readdir %s: %v", d, err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func mmapPattern() []byte { return pattern(77, 64<<10) }

var oddNames = []string{
	"new\nline",
	"\xff\xfe invalid utf8",
	" leading and trailing spaces ",
	"ünïcødé 日本語 🙂",
	"-starts-with-dash",
	"a:b*c?d<e>f|g\"h'i",
	"back\\slash",
	"\x01\x1bcontrol",
	"...",
	".hidden",
	"tab\there",
	strings.Repeat("日", 85), // 255 bytes of UTF-8
}

func posixCases() []posixCase {
	long := func(n int) string { return strings.Repeat("a", n) }
	return []posixCase{
		// --- create, open, mkdir, rmdir, unlink ---
		{name: "create-excl-existing",
			setup: func(d string) error { return touch(d+"/f", "x") },
			op:    func(d string) error { return openClose(d+"/f", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644) },
			want:  unix.EEXIST,
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "x") }},
		{name: "create-excl-new",
			op: func(d string) error { return openClose(d+"/f", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o640) },
			check: func(t *testing.T, d string) {
				if st := lstat(t, d+"/f"); st.Mode != unix.S_IFREG|0o640 || st.Size != 0 {
					t.Fatalf("mode %#o size %d, want regular 0640 size 0", st.Mode, st.Size)
				}
			}},
		{name: "open-missing",
			op:   func(d string) error { return openClose(d+"/nope", unix.O_RDONLY, 0) },
			want: unix.ENOENT},
		{name: "create-in-missing-dir",
			op:   func(d string) error { return openClose(d+"/nope/f", unix.O_CREAT|unix.O_WRONLY, 0o644) },
			want: unix.ENOENT},
		{name: "mkdir-existing",
			setup: func(d string) error { return os.Mkdir(d+"/x", 0o755) },
			op:    func(d string) error { return unix.Mkdir(d+"/x", 0o755) },
			want:  unix.EEXIST},
		{name: "mkdir-over-file",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { return unix.Mkdir(d+"/f", 0o755) },
			want:  unix.EEXIST},
		{name: "mkdir-mode",
			op: func(d string) error { return unix.Mkdir(d+"/x", 0o750) },
			check: func(t *testing.T, d string) {
				if st := lstat(t, d+"/x"); st.Mode != unix.S_IFDIR|0o750 {
					t.Fatalf("mode %#o, want dir 0750", st.Mode)
				}
			}},
		{name: "rmdir-nonempty",
			setup: func(d string) error {
				return all(func() error { return os.Mkdir(d+"/x", 0o755) }, func() error { return touch(d+"/x/f", "") })
			},
			op:   func(d string) error { return unix.Rmdir(d + "/x") },
			want: unix.ENOTEMPTY},
		{name: "rmdir-file",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { return unix.Rmdir(d + "/f") },
			want:  unix.ENOTDIR},
		{name: "rmdir-empty",
			setup: func(d string) error { return os.Mkdir(d+"/x", 0o755) },
			op:    func(d string) error { return unix.Rmdir(d + "/x") },
			check: func(t *testing.T, d string) { wantMissing(t, d+"/x") }},
		{name: "unlink-dir",
			setup: func(d string) error { return os.Mkdir(d+"/x", 0o755) },
			op:    func(d string) error { return unix.Unlink(d + "/x") },
			want:  unix.EISDIR},
		{name: "unlink-missing",
			op:   func(d string) error { return unix.Unlink(d + "/nope") },
			want: unix.ENOENT},
		{name: "open-dir-for-write",
			setup: func(d string) error { return os.Mkdir(d+"/x", 0o755) },
			op:    func(d string) error { return openClose(d+"/x", unix.O_WRONLY, 0) },
			want:  unix.EISDIR},
		{name: "open-dir-rdwr",
			setup: func(d string) error { return os.Mkdir(d+"/x", 0o755) },
			op:    func(d string) error { return openClose(d+"/x", unix.O_RDWR, 0) },
			want:  unix.EISDIR},
		{name: "open-file-as-directory",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { return openClose(d+"/f", unix.O_RDONLY|unix.O_DIRECTORY, 0) },
			want:  unix.ENOTDIR},
		{name: "stat-through-file",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { var st unix.Stat_t; return unix.Stat(d+"/f/x", &st) },
			want:  unix.ENOTDIR},
		{name: "create-through-file",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { return openClose(d+"/f/x", unix.O_CREAT|unix.O_WRONLY, 0o644) },
			want:  unix.ENOTDIR},
		{name: "mkdir-through-file",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { return unix.Mkdir(d+"/f/x", 0o755) },
			want:  unix.ENOTDIR},

		// --- names ---
		{name: "name-256-create",
			op:   func(d string) error { return openClose(d+"/"+long(256), unix.O_CREAT|unix.O_WRONLY, 0o644) },
			want: unix.ENAMETOOLONG},
		{name: "name-256-mkdir",
			op:   func(d string) error { return unix.Mkdir(d+"/"+long(256), 0o755) },
			want: unix.ENAMETOOLONG},
		{name: "name-256-lookup",
			op:   func(d string) error { var st unix.Stat_t; return unix.Lstat(d+"/"+long(256), &st) },
			want: unix.ENAMETOOLONG},
		{name: "name-256-symlink",
			op:   func(d string) error { return unix.Symlink("t", d+"/"+long(256)) },
			want: unix.ENAMETOOLONG},
		{name: "name-256-rename",
			setup: func(d string) error { return touch(d+"/f", "x") },
			op:    func(d string) error { return unix.Rename(d+"/f", d+"/"+long(256)) },
			want:  unix.ENAMETOOLONG,
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "x") }},
		{name: "name-256-link",
			setup: func(d string) error { return touch(d+"/f", "x") },
			op:    func(d string) error { return unix.Link(d+"/f", d+"/"+long(256)) },
			want:  unix.ENAMETOOLONG},
		{name: "name-258-utf8",
			op: func(d string) error {
				return openClose(d+"/"+strings.Repeat("日", 86), unix.O_CREAT|unix.O_WRONLY, 0o644)
			},
			want: unix.ENAMETOOLONG},
		{name: "name-255",
			op: func(d string) error {
				return all(
					func() error { return touch(d+"/"+long(255), "255") },
					func() error { return os.Mkdir(d+"/"+strings.Repeat("b", 255), 0o755) },
					func() error { return touch(d+"/"+strings.Repeat("b", 255)+"/"+long(255), "nested") },
				)
			},
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/"+long(255), "255")
				wantContent(t, d+"/"+strings.Repeat("b", 255)+"/"+long(255), "nested")
				if got := readDirNames(t, d); !slices.Equal(got, []string{long(255), strings.Repeat("b", 255)}) {
					t.Fatalf("readdir: %q", got)
				}
			}},
		{name: "odd-names",
			op: func(d string) error {
				for _, n := range oddNames {
					if err := touch(d+"/"+n, n); err != nil {
						return err
					}
				}
				return all(
					func() error { return os.Mkdir(d+"/dir\nwith\xffodd name", 0o755) },
					func() error { return touch(d+"/dir\nwith\xffodd name/in side", "inner") },
				)
			},
			check: func(t *testing.T, d string) {
				want := append(slices.Clone(oddNames), "dir\nwith\xffodd name")
				sort.Strings(want)
				if got := readDirNames(t, d); !slices.Equal(got, want) {
					t.Fatalf("readdir:\n got %q\nwant %q", got, want)
				}
				for _, n := range oddNames {
					wantContent(t, d+"/"+n, n)
				}
				wantContent(t, d+"/dir\nwith\xffodd name/in side", "inner")
			}},
		{name: "readdir-1000",
			op: func(d string) error {
				for i := range 1000 {
					if err := touch(fmt.Sprintf("%s/file-%04d-%s", d, i, strings.Repeat("x", i%100)), ""); err != nil {
						return err
					}
				}
				return nil
			},
			check: func(t *testing.T, d string) {
				got := readDirNames(t, d)
				if len(got) != 1000 {
					t.Fatalf("readdir returned %d names, want 1000", len(got))
				}
				for i, n := range got {
					if want := fmt.Sprintf("file-%04d-%s", i, strings.Repeat("x", i%100)); n != want {
						t.Fatalf("readdir[%d] = %q, want %q", i, n, want)
					}
				}
			}},

		// --- rename ---
		{name: "rename-file-over-file",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/a", "A") }, func() error { return touch(d+"/b", "B") })
			},
			op: func(d string) error { return unix.Rename(d+"/a", d+"/b") },
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/b", "A")
				wantMissing(t, d+"/a")
				if st := lstat(t, d+"/b"); st.Nlink != 1 {
					t.Fatalf("nlink %d, want 1", st.Nlink)
				}
			}},
		{name: "rename-file-over-open-file",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/a", "A") }, func() error { return touch(d+"/b", "B") })
			},
			op: func(d string) error {
				f, err := os.Open(d + "/b")
				if err != nil {
					return err
				}
				defer f.Close()
				if err := unix.Rename(d+"/a", d+"/b"); err != nil {
					return err
				}
				// The replaced inode stays readable through the open descriptor.
				buf := make([]byte, 10)
				n, err := f.ReadAt(buf, 0)
				if string(buf[:n]) != "B" {
					return fmt.Errorf("replaced file read %q (%v), want %q", buf[:n], err, "B")
				}
				return nil
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/b", "A") }},
		{name: "rename-across-dirs",
			setup: func(d string) error {
				return all(func() error { return os.Mkdir(d+"/x", 0o755) }, func() error { return os.Mkdir(d+"/y", 0o755) },
					func() error { return touch(d+"/x/f", "F") })
			},
			op: func(d string) error { return unix.Rename(d+"/x/f", d+"/y/g") },
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/y/g", "F")
				wantMissing(t, d+"/x/f")
			}},
		{name: "rename-dir-keeps-children",
			setup: func(d string) error {
				return all(func() error { return os.MkdirAll(d+"/x/sub", 0o755) }, func() error { return touch(d+"/x/sub/f", "deep") })
			},
			op: func(d string) error { return unix.Rename(d+"/x", d+"/z") },
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/z/sub/f", "deep")
				wantMissing(t, d+"/x")
			}},
		{name: "rename-dir-over-empty-dir",
			setup: func(d string) error {
				return all(func() error { return os.Mkdir(d+"/x", 0o755) }, func() error { return touch(d+"/x/f", "F") },
					func() error { return os.Mkdir(d+"/y", 0o755) })
			},
			op: func(d string) error { return unix.Rename(d+"/x", d+"/y") },
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/y/f", "F")
				wantMissing(t, d+"/x")
			}},
		{name: "rename-dir-over-nonempty-dir",
			setup: func(d string) error {
				return all(func() error { return os.Mkdir(d+"/x", 0o755) }, func() error { return os.Mkdir(d+"/y", 0o755) },
					func() error { return touch(d+"/y/f", "F") })
			},
			op:    func(d string) error { return unix.Rename(d+"/x", d+"/y") },
			want:  unix.ENOTEMPTY,
			check: func(t *testing.T, d string) { wantContent(t, d+"/y/f", "F") }},
		{name: "rename-dir-over-file",
			setup: func(d string) error {
				return all(func() error { return os.Mkdir(d+"/x", 0o755) }, func() error { return touch(d+"/f", "F") })
			},
			op:   func(d string) error { return unix.Rename(d+"/x", d+"/f") },
			want: unix.ENOTDIR},
		{name: "rename-file-over-dir",
			setup: func(d string) error {
				return all(func() error { return os.Mkdir(d+"/x", 0o755) }, func() error { return touch(d+"/f", "F") })
			},
			op:   func(d string) error { return unix.Rename(d+"/f", d+"/x") },
			want: unix.EISDIR},
		{name: "rename-dir-into-own-subdir",
			setup: func(d string) error { return os.MkdirAll(d+"/x/y", 0o755) },
			op:    func(d string) error { return unix.Rename(d+"/x", d+"/x/y/z") },
			want:  unix.EINVAL},
		{name: "rename-missing",
			op:   func(d string) error { return unix.Rename(d+"/nope", d+"/b") },
			want: unix.ENOENT},
		{name: "rename-hardlink-onto-sibling",
			// POSIX: when both names are links to the same file, rename does nothing.
			setup: func(d string) error {
				return all(func() error { return touch(d+"/a", "A") }, func() error { return os.Link(d+"/a", d+"/b") })
			},
			op: func(d string) error { return unix.Rename(d+"/a", d+"/b") },
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/a", "A")
				wantContent(t, d+"/b", "A")
				if st := lstat(t, d+"/a"); st.Nlink != 2 {
					t.Fatalf("nlink %d, want 2", st.Nlink)
				}
			}},
		{name: "rename-noreplace-existing",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/a", "A") }, func() error { return touch(d+"/b", "B") })
			},
			op: func(d string) error {
				return unix.Renameat2(unix.AT_FDCWD, d+"/a", unix.AT_FDCWD, d+"/b", unix.RENAME_NOREPLACE)
			},
			want: unix.EEXIST,
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/a", "A")
				wantContent(t, d+"/b", "B")
			}},
		{name: "rename-noreplace-new",
			setup: func(d string) error { return touch(d+"/a", "A") },
			op: func(d string) error {
				return unix.Renameat2(unix.AT_FDCWD, d+"/a", unix.AT_FDCWD, d+"/c", unix.RENAME_NOREPLACE)
			},
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/c", "A")
				wantMissing(t, d+"/a")
			}},
		{name: "rename-exchange-files",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/a", "A") }, func() error { return touch(d+"/b", "BB") })
			},
			op: func(d string) error {
				return unix.Renameat2(unix.AT_FDCWD, d+"/a", unix.AT_FDCWD, d+"/b", unix.RENAME_EXCHANGE)
			},
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/a", "BB")
				wantContent(t, d+"/b", "A")
			}},
		{name: "rename-exchange-file-and-dir",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/a", "A") }, func() error { return os.MkdirAll(d+"/x", 0o755) },
					func() error { return touch(d+"/x/in", "in") })
			},
			op: func(d string) error {
				return unix.Renameat2(unix.AT_FDCWD, d+"/a", unix.AT_FDCWD, d+"/x", unix.RENAME_EXCHANGE)
			},
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/x", "A")
				wantContent(t, d+"/a/in", "in")
			}},
		{name: "rename-exchange-across-dirs",
			setup: func(d string) error {
				return all(func() error { return os.Mkdir(d+"/x", 0o755) }, func() error { return os.Mkdir(d+"/y", 0o755) },
					func() error { return touch(d+"/x/a", "A") }, func() error { return touch(d+"/y/b", "B") })
			},
			op: func(d string) error {
				return unix.Renameat2(unix.AT_FDCWD, d+"/x/a", unix.AT_FDCWD, d+"/y/b", unix.RENAME_EXCHANGE)
			},
			check: func(t *testing.T, d string) {
				wantContent(t, d+"/x/a", "B")
				wantContent(t, d+"/y/b", "A")
			}},
		{name: "rename-exchange-missing",
			setup: func(d string) error { return touch(d+"/a", "A") },
			op: func(d string) error {
				return unix.Renameat2(unix.AT_FDCWD, d+"/a", unix.AT_FDCWD, d+"/nope", unix.RENAME_EXCHANGE)
			},
			want: unix.ENOENT},

		// --- links ---
		{name: "hardlink-nlink",
			setup: func(d string) error { return touch(d+"/a", "A") },
			op: func(d string) error {
				return all(func() error { return unix.Link(d+"/a", d+"/b") }, func() error { return unix.Link(d+"/b", d+"/c") })
			},
			check: func(t *testing.T, d string) {
				sa, sb, sc := lstat(t, d+"/a"), lstat(t, d+"/b"), lstat(t, d+"/c")
				if sa.Nlink != 3 || sb.Nlink != 3 || sc.Nlink != 3 {
					t.Fatalf("nlink %d %d %d, want 3 3 3", sa.Nlink, sb.Nlink, sc.Nlink)
				}
				if sa.Ino != sb.Ino || sb.Ino != sc.Ino {
					t.Fatalf("inodes %d %d %d differ", sa.Ino, sb.Ino, sc.Ino)
				}
				if err := os.WriteFile(d+"/b", []byte("via b"), 0o644); err != nil {
					t.Fatal(err)
				}
				wantContent(t, d+"/a", "via b")
				if err := os.Chmod(d+"/c", 0o600); err != nil {
					t.Fatal(err)
				}
				if st := lstat(t, d+"/a"); st.Mode&0o777 != 0o600 {
					t.Fatalf("chmod via c not seen via a: %#o", st.Mode)
				}
				if err := os.Remove(d + "/a"); err != nil {
					t.Fatal(err)
				}
				if st := lstat(t, d+"/b"); st.Nlink != 2 {
					t.Fatalf("after unlink nlink %d, want 2", st.Nlink)
				}
				wantContent(t, d+"/c", "via b")
			}},
		{name: "hardlink-to-dir",
			setup: func(d string) error { return os.Mkdir(d+"/x", 0o755) },
			op:    func(d string) error { return unix.Link(d+"/x", d+"/y") },
			want:  unix.EPERM},
		{name: "hardlink-onto-existing",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/a", "A") }, func() error { return touch(d+"/b", "B") })
			},
			op:   func(d string) error { return unix.Link(d+"/a", d+"/b") },
			want: unix.EEXIST},
		{name: "hardlink-across-dirs",
			setup: func(d string) error {
				return all(func() error { return os.Mkdir(d+"/x", 0o755) }, func() error { return touch(d+"/a", "A") })
			},
			op: func(d string) error { return unix.Link(d+"/a", d+"/x/b") },
			check: func(t *testing.T, d string) {
				if st := lstat(t, d+"/x/b"); st.Nlink != 2 {
					t.Fatalf("nlink %d, want 2", st.Nlink)
				}
				wantContent(t, d+"/x/b", "A")
			}},
		{name: "symlink-readlink-lstat",
			setup: func(d string) error { return touch(d+"/target", "through the link") },
			op: func(d string) error {
				return all(func() error { return unix.Symlink("target", d+"/l") },
					func() error { return unix.Symlink("../nowhere/at all", d+"/dangling") })
			},
			check: func(t *testing.T, d string) {
				for l, target := range map[string]string{"l": "target", "dangling": "../nowhere/at all"} {
					got, err := os.Readlink(d + "/" + l)
					if err != nil || got != target {
						t.Fatalf("readlink %s = %q, %v; want %q", l, got, err, target)
					}
					st := lstat(t, d+"/"+l)
					if st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Size != int64(len(target)) {
						t.Fatalf("lstat %s: mode %#o size %d, want symlink of size %d", l, st.Mode, st.Size, len(target))
					}
				}
				wantContent(t, d+"/l", "through the link")
				var st unix.Stat_t
				if err := unix.Stat(d+"/dangling", &st); !errors.Is(err, unix.ENOENT) {
					t.Fatalf("stat dangling: %v, want ENOENT", err)
				}
			}},
		{name: "symlink-exists",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { return unix.Symlink("x", d+"/f") },
			want:  unix.EEXIST},
		{name: "readlink-on-file",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { _, err := unix.Readlink(d+"/f", make([]byte, 100)); return err },
			want:  unix.EINVAL},

		// --- attributes ---
		{name: "chmod",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/f", "") }, func() error { return os.Mkdir(d+"/x", 0o755) })
			},
			op: func(d string) error {
				for _, m := range []uint32{0, 0o644, 0o4755, 0o2711, 0o7777, 0o600} {
					if err := unix.Chmod(d+"/f", m); err != nil {
						return err
					}
					var st unix.Stat_t
					if err := unix.Lstat(d+"/f", &st); err != nil {
						return err
					}
					if st.Mode != unix.S_IFREG|m {
						return fmt.Errorf("after chmod %#o: mode %#o", m, st.Mode)
					}
				}
				return unix.Chmod(d+"/x", 0o1777)
			},
			check: func(t *testing.T, d string) {
				if st := lstat(t, d+"/x"); st.Mode != unix.S_IFDIR|0o1777 {
					t.Fatalf("dir mode %#o, want 01777", st.Mode)
				}
			}},
		{name: "chown",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/f", "") }, func() error { return unix.Symlink("f", d+"/l") })
			},
			op: func(d string) error {
				if os.Geteuid() != 0 {
					return nil
				}
				return all(
					func() error { return unix.Chown(d+"/f", 1234, 5678) },
					func() error { return unix.Chown(d+"/f", -1, -1) },
					func() error { return unix.Chown(d+"/f", -1, 42) },
					func() error { return unix.Lchown(d+"/l", 777, 888) },
				)
			},
			check: func(t *testing.T, d string) {
				if os.Geteuid() != 0 {
					t.Skip("needs root")
				}
				if st := lstat(t, d+"/f"); st.Uid != 1234 || st.Gid != 42 {
					t.Fatalf("file owner %d:%d, want 1234:42", st.Uid, st.Gid)
				}
				if st := lstat(t, d+"/l"); st.Uid != 777 || st.Gid != 888 {
					t.Fatalf("symlink owner %d:%d, want 777:888", st.Uid, st.Gid)
				}
			}},
		{name: "utimens",
			setup: func(d string) error { return touch(d+"/f", "") },
			op: func(d string) error {
				return unix.UtimesNanoAt(unix.AT_FDCWD, d+"/f", []unix.Timespec{
					{Sec: 1_000_000_000, Nsec: 123_456_789}, {Sec: 1_500_000_000, Nsec: 987_654_321}}, 0)
			},
			check: func(t *testing.T, d string) {
				st := lstat(t, d+"/f")
				if st.Atim != (unix.Timespec{Sec: 1_000_000_000, Nsec: 123_456_789}) ||
					st.Mtim != (unix.Timespec{Sec: 1_500_000_000, Nsec: 987_654_321}) {
					t.Fatalf("atime %v mtime %v, want exact values set", st.Atim, st.Mtim)
				}
				// UTIME_OMIT leaves atime alone; UTIME_NOW sets mtime to now.
				before := time.Now().Add(-2 * time.Second)
				err := unix.UtimesNanoAt(unix.AT_FDCWD, d+"/f", []unix.Timespec{
					{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}, 0)
				if err != nil {
					t.Fatal(err)
				}
				after := time.Now().Add(2 * time.Second)
				st = lstat(t, d+"/f")
				if st.Atim != (unix.Timespec{Sec: 1_000_000_000, Nsec: 123_456_789}) {
					t.Fatalf("UTIME_OMIT changed atime to %v", st.Atim)
				}
				if m := time.Unix(st.Mtim.Unix()); m.Before(before) || m.After(after) {
					t.Fatalf("UTIME_NOW set mtime %v, want about now", m)
				}
				mtime := st.Mtim
				err = unix.UtimesNanoAt(unix.AT_FDCWD, d+"/f", []unix.Timespec{
					{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}, 0)
				if err != nil {
					t.Fatal(err)
				}
				st = lstat(t, d+"/f")
				if st.Mtim != mtime {
					t.Fatalf("UTIME_OMIT changed mtime from %v to %v", mtime, st.Mtim)
				}
				if a := time.Unix(st.Atim.Unix()); a.Before(before) || a.After(time.Now().Add(2*time.Second)) {
					t.Fatalf("UTIME_NOW set atime %v, want about now", a)
				}
				// Leave a known mtime for the remount comparison.
				if err := unix.UtimesNanoAt(unix.AT_FDCWD, d+"/f", []unix.Timespec{
					{Sec: 1_000_000_000, Nsec: 1}, {Sec: 1_200_000_000, Nsec: 2}}, 0); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "utimens-symlink-nofollow",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/f", "") }, func() error { return unix.Symlink("f", d+"/l") })
			},
			op: func(d string) error {
				return unix.UtimesNanoAt(unix.AT_FDCWD, d+"/l", []unix.Timespec{{Sec: 5, Nsec: 6}, {Sec: 7, Nsec: 8}}, unix.AT_SYMLINK_NOFOLLOW)
			},
			check: func(t *testing.T, d string) {
				if st := lstat(t, d+"/l"); st.Mtim != (unix.Timespec{Sec: 7, Nsec: 8}) {
					t.Fatalf("symlink mtime %v, want 7.000000008", st.Mtim)
				}
				if st := lstat(t, d+"/f"); st.Mtim.Sec == 7 {
					t.Fatal("AT_SYMLINK_NOFOLLOW changed the target's mtime")
				}
			}},
		{name: "write-updates-mtime-and-size",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/f", "") },
					func() error { return unix.UtimesNano(d+"/f", []unix.Timespec{{Sec: 10}, {Sec: 10}}) })
			},
			op: func(d string) error { return os.WriteFile(d+"/f", []byte("hello"), 0o644) },
			check: func(t *testing.T, d string) {
				st := lstat(t, d+"/f")
				if st.Size != 5 || st.Mtim.Sec < time.Now().Add(-time.Minute).Unix() {
					t.Fatalf("size %d mtime %v after write, want 5 and now", st.Size, st.Mtim)
				}
			}},

		// --- data ---
		{name: "truncate-up",
			setup: func(d string) error { return touch(d+"/f", "abc") },
			op:    func(d string) error { return unix.Truncate(d+"/f", 1<<20) },
			check: func(t *testing.T, d string) {
				want := make([]byte, 1<<20)
				copy(want, "abc")
				mustEqualFile(t, d+"/f", want)
			}},
		{name: "truncate-down-then-up",
			setup: func(d string) error { return os.WriteFile(d+"/f", pattern(1, 300<<10), 0o644) },
			op: func(d string) error {
				return all(func() error { return unix.Truncate(d+"/f", 1000) }, func() error { return unix.Truncate(d+"/f", 200<<10) })
			},
			check: func(t *testing.T, d string) {
				// The bytes cut off must not come back when the file grows again.
				want := make([]byte, 200<<10)
				copy(want, pattern(1, 1000))
				mustEqualFile(t, d+"/f", want)
			}},
		{name: "ftruncate-open-file",
			setup: func(d string) error { return touch(d+"/f", "0123456789") },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := f.Truncate(4); err != nil {
					return err
				}
				_, err = f.WriteAt([]byte("XY"), 6)
				return err
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "0123\x00\x00XY") }},
		{name: "write-past-eof",
			setup: func(d string) error { return touch(d+"/f", "0123456789") },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = f.WriteAt([]byte("end"), 70000)
				return err
			},
			check: func(t *testing.T, d string) {
				want := make([]byte, 70003)
				copy(want, "0123456789")
				copy(want[70000:], "end")
				mustEqualFile(t, d+"/f", want)
			}},
		{name: "overwrite-middle-large",
			setup: func(d string) error { return os.WriteFile(d+"/f", pattern(2, 3<<20), 0o644) },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = f.WriteAt(pattern(3, 100_000), 1<<20-50_000)
				return err
			},
			check: func(t *testing.T, d string) {
				want := pattern(2, 3<<20)
				copy(want[1<<20-50_000:], pattern(3, 100_000))
				mustEqualFile(t, d+"/f", want)
			}},
		{name: "sparse-100MiB",
			op: func(d string) error {
				f, err := os.Create(d + "/f")
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = f.WriteAt([]byte("x"), 100<<20)
				return err
			},
			check: func(t *testing.T, d string) {
				if st := lstat(t, d+"/f"); st.Size != 100<<20+1 {
					t.Fatalf("size %d, want %d", st.Size, 100<<20+1)
				}
				f, err := os.Open(d + "/f")
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				buf := make([]byte, 64<<10)
				for _, off := range []int64{0, 1 << 20, 50 << 20, 100<<20 - 64<<10} {
					n, err := f.ReadAt(buf, off)
					if err != nil || n != len(buf) {
						t.Fatalf("read at %d: %d, %v", off, n, err)
					}
					if !bytes.Equal(buf, make([]byte, len(buf))) {
						t.Fatalf("hole at %d reads non-zero bytes", off)
					}
				}
				n, err := f.ReadAt(buf[:10], 100<<20)
				if n != 1 || buf[0] != 'x' {
					t.Fatalf("last byte: %q, %v", buf[:n], err)
				}
			}},
		{name: "o-append-two-fds",
			setup: func(d string) error { return touch(d+"/f", "start:") },
			op: func(d string) error {
				a, err := os.OpenFile(d+"/f", os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					return err
				}
				defer a.Close()
				b, err := os.OpenFile(d+"/f", os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					return err
				}
				defer b.Close()
				for _, w := range []struct {
					f *os.File
					s string
				}{{a, "a1,"}, {b, "b1,"}, {a, "a2,"}, {b, "b2"}} {
					if _, err := w.f.Write([]byte(w.s)); err != nil {
						return err
					}
				}
				return nil
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "start:a1,b1,a2,b2") }},
		{name: "o-trunc",
			setup: func(d string) error { return os.WriteFile(d+"/f", pattern(4, 100_000), 0o644) },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_WRONLY|os.O_TRUNC, 0)
				if err != nil {
					return err
				}
				if st, err := f.Stat(); err != nil || st.Size() != 0 {
					f.Close()
					return fmt.Errorf("size after O_TRUNC open: %v %v", st.Size(), err)
				}
				if _, err := f.Write([]byte("new")); err != nil {
					f.Close()
					return err
				}
				return f.Close()
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "new") }},
		{name: "read-write-same-fd",
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR|os.O_CREATE, 0o644)
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := f.Write([]byte("hello world")); err != nil {
					return err
				}
				buf := make([]byte, 5)
				if _, err := f.ReadAt(buf, 6); err != nil || string(buf) != "world" {
					return fmt.Errorf("read back %q: %v", buf, err)
				}
				return nil
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "hello world") }},
		{name: "fsync-file-and-dir",
			op: func(d string) error {
				if err := writeFileSync(d+"/f", []byte("durable"), 0o644); err != nil {
					return err
				}
				dir, err := os.Open(d)
				if err != nil {
					return err
				}
				defer dir.Close()
				if err := dir.Sync(); err != nil {
					return err
				}
				f, err := os.Open(d + "/f")
				if err != nil {
					return err
				}
				defer f.Close()
				return unix.Fdatasync(int(f.Fd()))
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "durable") }},
		{name: "fallocate",
			setup: func(d string) error { return touch(d+"/f", "abc") },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				return unix.Fallocate(int(f.Fd()), 0, 0, 1<<20)
			},
			check: func(t *testing.T, d string) {
				want := make([]byte, 1<<20)
				copy(want, "abc")
				mustEqualFile(t, d+"/f", want)
			}},
		{name: "fallocate-keep-size",
			setup: func(d string) error { return touch(d+"/f", "abc") },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20)
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "abc") }},

		// --- mmap ---
		{name: "mmap-shared",
			setup: func(d string) error { return os.WriteFile(d+"/f", make([]byte, 64<<10), 0o644) },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				m, err := unix.Mmap(int(f.Fd()), 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
				if err != nil {
					return fmt.Errorf("mmap: %w", err)
				}
				copy(m, mmapPattern())
				if err := unix.Msync(m, unix.MS_SYNC); err != nil {
					unix.Munmap(m)
					return fmt.Errorf("msync: %w", err)
				}
				return unix.Munmap(m)
			},
			check: func(t *testing.T, d string) { mustEqualFile(t, d+"/f", mmapPattern()) }},
		{name: "mmap-shared-then-close-without-msync",
			setup: func(d string) error { return os.WriteFile(d+"/f", make([]byte, 8192), 0o644) },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				m, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
				f.Close()
				if err != nil {
					return fmt.Errorf("mmap: %w", err)
				}
				copy(m[4096:], "written through a mapping after close")
				return unix.Munmap(m)
			},
			check: func(t *testing.T, d string) {
				want := make([]byte, 8192)
				copy(want[4096:], "written through a mapping after close")
				mustEqualFile(t, d+"/f", want)
			}},
		{name: "mmap-private",
			setup: func(d string) error { return touch(d+"/f", "original") },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				m, err := unix.Mmap(int(f.Fd()), 0, 8, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
				if err != nil {
					return fmt.Errorf("mmap: %w", err)
				}
				if string(m) != "original" {
					unix.Munmap(m)
					return fmt.Errorf("mapping reads %q", m)
				}
				copy(m, "PRIVATE!")
				return unix.Munmap(m)
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/f", "original") }},
		{name: "mmap-sees-write",
			setup: func(d string) error { return touch(d+"/f", "0000") },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				m, err := unix.Mmap(int(f.Fd()), 0, 4, unix.PROT_READ, unix.MAP_SHARED)
				if err != nil {
					return fmt.Errorf("mmap: %w", err)
				}
				defer unix.Munmap(m)
				if _, err := f.WriteAt([]byte("1234"), 0); err != nil {
					return err
				}
				if string(m) != "1234" {
					return fmt.Errorf("shared mapping reads %q after write(2), want %q", m, "1234")
				}
				return nil
			}},

		// --- open but unlinked ---
		{name: "open-unlinked",
			setup: func(d string) error { return touch(d+"/f", "before") },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := unix.Unlink(d + "/f"); err != nil {
					return err
				}
				var st unix.Stat_t
				if err := unix.Lstat(d+"/f", &st); !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("lstat after unlink: %v, want ENOENT", err)
				}
				if _, err := f.WriteAt(pattern(5, 200_000), 6); err != nil {
					return fmt.Errorf("write after unlink: %w", err)
				}
				got := make([]byte, 200_006)
				if _, err := f.ReadAt(got, 0); err != nil {
					return fmt.Errorf("read after unlink: %w", err)
				}
				if string(got[:6]) != "before" || !bytes.Equal(got[6:], pattern(5, 200_000)) {
					return errors.New("open-unlinked file reads back wrong bytes")
				}
				if err := unix.Fstat(int(f.Fd()), &st); err != nil {
					return fmt.Errorf("fstat: %w", err)
				}
				if st.Nlink != 0 || st.Size != 200_006 {
					return fmt.Errorf("fstat after unlink: nlink %d size %d, want 0 and 200006", st.Nlink, st.Size)
				}
				return f.Sync()
			},
			check: func(t *testing.T, d string) {
				if got := readDirNames(t, d); len(got) != 0 {
					t.Fatalf("directory not empty: %q", got)
				}
			}},
		{name: "open-file-replaced-by-rename",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/a", "old") }, func() error { return touch(d+"/b", "new") })
			},
			op: func(d string) error {
				f, err := os.OpenFile(d+"/a", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := unix.Rename(d+"/b", d+"/a"); err != nil {
					return err
				}
				if _, err := f.WriteAt([]byte("OLD!"), 0); err != nil {
					return err
				}
				buf := make([]byte, 4)
				if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "OLD!" {
					return fmt.Errorf("orphan reads %q, %v", buf, err)
				}
				return nil
			},
			check: func(t *testing.T, d string) { wantContent(t, d+"/a", "new") }},

		// --- special files, locks, statfs ---
		{name: "fifo-mknod",
			op: func(d string) error { return unix.Mknod(d+"/p", unix.S_IFIFO|0o640, 0) },
			check: func(t *testing.T, d string) {
				if st := lstat(t, d+"/p"); st.Mode != unix.S_IFIFO|0o640 {
					t.Fatalf("mode %#o, want fifo 0640", st.Mode)
				}
				r, err := os.OpenFile(d+"/p", os.O_RDONLY|unix.O_NONBLOCK, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				w, err := os.OpenFile(d+"/p", os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				if _, err := w.Write([]byte("through the pipe")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				n, err := r.Read(buf)
				if string(buf[:n]) != "through the pipe" {
					t.Fatalf("fifo read %q, %v", buf[:n], err)
				}
			}},
		{name: "flock-exclusive",
			setup: func(d string) error { return touch(d+"/f", "") },
			op: func(d string) error {
				a, err := os.Open(d + "/f")
				if err != nil {
					return err
				}
				defer a.Close()
				b, err := os.Open(d + "/f")
				if err != nil {
					return err
				}
				defer b.Close()
				if err := unix.Flock(int(a.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
					return fmt.Errorf("first lock: %w", err)
				}
				if err := unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
					return fmt.Errorf("second exclusive lock: %v, want EWOULDBLOCK", err)
				}
				if err := unix.Flock(int(a.Fd()), unix.LOCK_UN); err != nil {
					return err
				}
				return unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			}},
		{name: "fcntl-lock",
			setup: func(d string) error { return touch(d+"/f", "0123456789") },
			op: func(d string) error {
				f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 5}
				return unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
			}},
		{name: "statfs",
			op: func(d string) error {
				var s unix.Statfs_t
				if err := unix.Statfs(d, &s); err != nil {
					return err
				}
				if s.Bsize <= 0 || s.Namelen < 255 || s.Bfree > s.Blocks || s.Bavail > s.Blocks {
					return fmt.Errorf("implausible statfs: bsize %d namelen %d blocks %d bfree %d bavail %d",
						s.Bsize, s.Namelen, s.Blocks, s.Bfree, s.Bavail)
				}
				return nil
			}},
		{name: "dir-nlink",
			op: func(d string) error {
				return all(func() error { return os.MkdirAll(d+"/x/a", 0o755) }, func() error { return os.Mkdir(d+"/x/b", 0o755) },
					func() error { return touch(d+"/x/f", "") })
			},
			check: func(t *testing.T, d string) {
				if st := lstat(t, d+"/x"); st.Nlink != 4 {
					t.Fatalf("directory with 2 subdirectories has nlink %d, want 4 (2 + subdirs, as ext4/tmpfs)", st.Nlink)
				}
			}},

		// --- xattrs ---
		{name: "xattr-roundtrip",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/f", "") }, func() error { return os.Mkdir(d+"/x", 0o755) })
			},
			op: func(d string) error {
				big := pattern(6, 3000)
				return all(
					func() error { return unix.Setxattr(d+"/f", "user.a", []byte("1"), 0) },
					func() error { return unix.Setxattr(d+"/f", "user.empty", nil, 0) },
					func() error { return unix.Setxattr(d+"/f", "user.binary", big, 0) },
					func() error { return unix.Setxattr(d+"/f", "user.gone", []byte("x"), 0) },
					func() error { return unix.Removexattr(d+"/f", "user.gone") },
					func() error { return unix.Setxattr(d+"/f", "user.a", []byte("22"), unix.XATTR_REPLACE) },
					func() error { return unix.Setxattr(d+"/x", "user.on-dir", []byte("d"), unix.XATTR_CREATE) },
				)
			},
			check: func(t *testing.T, d string) {
				got, err := userXattrs(d + "/f")
				if err != nil {
					t.Fatal(err)
				}
				want := map[string]string{"user.a": "22", "user.empty": "", "user.binary": string(pattern(6, 3000))}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("xattrs %q, want %q", got, want)
				}
				if got, _ := userXattrs(d + "/x"); got["user.on-dir"] != "d" || len(got) != 1 {
					t.Fatalf("dir xattrs %q", got)
				}
				small := make([]byte, 1)
				if _, err := unix.Getxattr(d+"/f", "user.a", small); !errors.Is(err, unix.ERANGE) {
					t.Fatalf("getxattr with small buffer: %v, want ERANGE", err)
				}
				if n, err := unix.Getxattr(d+"/f", "user.binary", nil); err != nil || n != 3000 {
					t.Fatalf("getxattr size query: %d, %v; want 3000", n, err)
				}
			}},
		{name: "xattr-get-missing",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { _, err := unix.Getxattr(d+"/f", "user.nope", make([]byte, 10)); return err },
			want:  unix.ENODATA},
		{name: "xattr-remove-missing",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { return unix.Removexattr(d+"/f", "user.nope") },
			want:  unix.ENODATA},
		{name: "xattr-create-existing",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/f", "") }, func() error { return unix.Setxattr(d+"/f", "user.a", []byte("1"), 0) })
			},
			op:   func(d string) error { return unix.Setxattr(d+"/f", "user.a", []byte("2"), unix.XATTR_CREATE) },
			want: unix.EEXIST},
		{name: "xattr-replace-missing",
			setup: func(d string) error { return touch(d+"/f", "") },
			op:    func(d string) error { return unix.Setxattr(d+"/f", "user.a", []byte("2"), unix.XATTR_REPLACE) },
			want:  unix.ENODATA},
		{name: "xattr-survives-rename-and-link",
			setup: func(d string) error {
				return all(func() error { return touch(d+"/f", "") }, func() error { return unix.Setxattr(d+"/f", "user.k", []byte("v"), 0) })
			},
			op: func(d string) error {
				return all(func() error { return unix.Rename(d+"/f", d+"/g") }, func() error { return unix.Link(d+"/g", d+"/h") })
			},
			check: func(t *testing.T, d string) {
				for _, n := range []string{"g", "h"} {
					if got, _ := userXattrs(d + "/" + n); got["user.k"] != "v" {
						t.Fatalf("%s xattrs %q", n, got)
					}
				}
			}},
	}
}
