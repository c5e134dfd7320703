package fs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// tmpfs mounts a tmpfs of size bytes for the test (root only; it may skip
// elsewhere, never with CI=true).
func tmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Skipf("mount tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	must(t, syscall.Statfs(dir, &st))
	return int64(st.Bavail) * st.Bsize
}

// TestDiskFollowsEmbeddedCloud: over an embedded-style cloud on a small real
// disk (a 64 MiB tmpfs holding the cloud's data and the drive's cache, the
// quota far beyond it), df's size and room follow the disk's free space
// minus the reserve, also when something else fills the disk; a write the
// disk cannot take fails with ENOSPC at the call, and everything accepted
// reaches the cloud and reads back.
func TestDiskFollowsEmbeddedCloud(t *testing.T) {
	needFUSE(t)
	disk := tmpfs(t, 64<<20)
	const reserve = 4 << 20
	c := startCloud(t, filepath.Join(disk, "cloud"), 1<<40)
	m := c.mount(t, filepath.Join(disk, "cache"), func(o *Options) {
		o.DiskRoom = DiskRoom(c.dir, func(int64) int64 { return reserve })
	})
	avail := func() (size, avail int64) {
		var st syscall.Statfs_t
		must(t, syscall.Statfs(m.mnt, &st))
		return int64(st.Blocks) * int64(st.Bsize), int64(st.Bavail) * int64(st.Bsize)
	}
	near := func(what string, got, want int64) {
		t.Helper()
		if d := got - want; d < -(1<<20) || d > 1<<20 {
			t.Fatalf("%s: %d, want %d ± 1 MiB", what, got, want)
		}
	}
	size, a := avail()
	near("df avail", a, freeBytes(t, disk)-reserve)
	if size >= 64<<20 {
		t.Fatalf("df size %d: not cut to the 64 MiB disk", size)
	}

	// Something else takes 20 MiB of the disk: df shows it at once.
	must(t, os.WriteFile(filepath.Join(disk, "other"), make([]byte, 20<<20), 0o600))
	_, a = avail()
	near("df avail after 20 MiB elsewhere", a, freeBytes(t, disk)-reserve)

	// Write until the disk refuses: ENOSPC at a write, not later.
	f, err := os.Create(m.p("big"))
	must(t, err)
	block := bytes.Repeat([]byte("kumo disk"), (1<<20)/9+1)[:1<<20]
	written := 0
	for ; written < 64; written++ {
		if _, err = f.Write(block); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("after %d MiB: write error %v, want ENOSPC", written, err)
	}
	if written == 0 {
		t.Fatalf("no room at all for a 1 MiB write")
	}
	must(t, f.Close())
	m.flush()
	got, err := os.ReadFile(m.p("big"))
	must(t, err)
	if len(got) != written<<20 || !bytes.Equal(got[:1<<20], block) {
		t.Fatalf("read back %d bytes, want %d", len(got), written<<20)
	}
	t.Logf("accepted %d MiB on a 64 MiB disk with 20 MiB taken elsewhere", written)
}
