package fs

import (
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kumo/remote/api"
)

// coreNames lists dir's names, sorted.
func coreNames(t *testing.T, d *Drive, dir uint64) []string {
	t.Helper()
	es, _, e := d.list(dir)
	if e != 0 {
		t.Fatalf("list %d: %v", dir, e)
	}
	var out []string
	for _, x := range es {
		out = append(out, x.name)
	}
	slices.Sort(out)
	return out
}

func coreMkdir(t *testing.T, d *Drive, parent uint64, name string) *nodeState {
	t.Helper()
	st, e := d.create(parent, newNode{name: name, mode: syscall.S_IFDIR | 0o755})
	if e != 0 {
		t.Fatalf("mkdir %s: %v", name, e)
	}
	return st
}

// Names and tree errors: rename over a file replaces it, a directory moved
// under itself, rmdir of a non-empty directory, reserved and too long
// names; what is left reaches another device. (The rename flags are the
// kernel's: FUSE passes renameat2's flags through.)
func TestCoreNamesAndErrors(t *testing.T) {
	if renameNoReplace != unix.RENAME_NOREPLACE || renameExchange != unix.RENAME_EXCHANGE || renameWhiteout != unix.RENAME_WHITEOUT {
		t.Fatal("rename flags differ from the kernel's")
	}
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	coreFile(t, d, api.RootID, "a", "A")
	coreFile(t, d, api.RootID, "b", "B")
	if e := d.rename(api.RootID, "a", api.RootID, "b", 0); e != 0 {
		t.Fatalf("rename a over b: %v", e)
	}
	if got := coreRead(t, d, api.RootID, "b"); got != "A" {
		t.Fatalf("b after the rename: %q", got)
	}
	if _, e := d.lookupForTest(api.RootID, "a"); e != syscall.ENOENT {
		t.Fatalf("a after the rename: %v", e)
	}
	dir := coreMkdir(t, d, api.RootID, "d")
	sub := coreMkdir(t, d, dir.id, "e")
	if e := d.rename(api.RootID, "d", sub.id, "f", 0); e != syscall.EINVAL {
		t.Fatalf("a directory under its own child: %v, want EINVAL", e)
	}
	if e := d.unlink(api.RootID, "d", true); e != syscall.ENOTEMPTY {
		t.Fatalf("rmdir of a non-empty directory: %v, want ENOTEMPTY", e)
	}
	if e := d.unlink(api.RootID, "b", true); e != syscall.ENOTDIR {
		t.Fatalf("rmdir of a file: %v, want ENOTDIR", e)
	}
	if e := d.unlink(api.RootID, "d", false); e != syscall.EISDIR {
		t.Fatalf("unlink of a directory: %v, want EISDIR", e)
	}
	// .kumo and its siblings are the control files (control_test.go): with
	// no open invoice .kumo-topup.png does not exist, and creating it is refused.
	for _, name := range ReservedNames {
		if _, e := d.create(api.RootID, newNode{name: name, mode: syscall.S_IFREG | 0o644}); e != syscall.EPERM {
			t.Errorf("create %s: %v, want EPERM", name, e)
		}
		if e := d.rename(api.RootID, "b", api.RootID, name, 0); e != syscall.EPERM {
			t.Errorf("rename onto %s: %v, want EPERM", name, e)
		}
	}
	if _, e := d.create(dir.id, newNode{name: ".kumo", mode: syscall.S_IFREG | 0o644}); e != 0 {
		t.Errorf("create .kumo below the root: %v (only the root's are reserved)", e)
	}
	if _, e := d.create(api.RootID, newNode{name: strings.Repeat("n", 256), mode: syscall.S_IFREG | 0o644}); e != syscall.ENAMETOOLONG {
		t.Fatalf("a 256-byte name: %v, want ENAMETOOLONG", e)
	}
	long := strings.Repeat("n", 255)
	coreFile(t, d, api.RootID, long, "")
	coreFlush(t, d)
	other := coreDrive(t, c)
	if names := coreNames(t, other, api.RootID); !equal(names, []string{"b", "d", long}) {
		t.Fatalf("the other device lists %q", names)
	}
	if got := coreRead(t, other, api.RootID, "b"); got != "A" {
		t.Fatalf("the other device reads b as %q", got)
	}
}
