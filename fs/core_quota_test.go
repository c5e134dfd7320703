package fs

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/remote/api"
)

// coreWriteQuota writes n bytes to a new file name and closes it; the
// first refused write's errno.
func coreWriteQuota(t *testing.T, d *Drive, name string, n int) syscall.Errno {
	t.Helper()
	st, e := d.create(api.RootID, newNode{name: name, mode: syscall.S_IFREG | 0o644})
	if e != 0 {
		t.Fatalf("create %s: %v", name, e)
	}
	data := randBytes(n)
	for off := 0; off < n; off += 128 << 10 {
		if _, e := d.write(context.Background(), st, data[off:min(n, off+128<<10)], int64(off)); e != 0 {
			return e
		}
	}
	return d.makeDurable(st, true, false)
}

// Growth the quota cannot hold fails with EDQUOT; df shows the quota.
func TestCoreQuota(t *testing.T) {
	c := startCloud(t, t.TempDir(), 4<<20)
	d := coreDrive(t, c)
	if e := coreWriteQuota(t, d, "ok", 1<<20); e != 0 {
		t.Fatal(e)
	}
	if e := coreWriteQuota(t, d, "big", 8<<20); e != syscall.EDQUOT {
		t.Fatalf("over quota: %v, want EDQUOT", e)
	}
	st := coreFileState(t, d, "big")
	if e := d.truncate(context.Background(), st, 8<<20); e != syscall.EDQUOT {
		t.Fatalf("truncate beyond the quota: %v, want EDQUOT", e)
	}
	var out fuse.StatfsOut
	if e := (&fnode{d: d, id: api.RootID}).Statfs(context.Background(), &out); e != 0 {
		t.Fatal(e)
	}
	if got := int64(out.Blocks) * int64(out.Bsize); got != 4<<20 {
		t.Errorf("statfs size %d, want %d", got, 4<<20)
	}
	if out.Bfree*uint64(out.Bsize) > 3<<20 {
		t.Errorf("statfs free %d after writing at least 1 MiB of 4", out.Bfree*uint64(out.Bsize))
	}
}

// Bytes of a file deleted (while open) before its upload stop counting
// against the quota once it is closed (the running total is recounted when
// it says no), and real growth is still refused.
func TestCoreQuotaAfterDelete(t *testing.T) {
	c := startCloud(t, t.TempDir(), 4<<20)
	d := coreDriveAt(t, c, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour }, nil)
	st, e := d.create(api.RootID, newNode{name: "gone", mode: syscall.S_IFREG | 0o644})
	if e != 0 {
		t.Fatal(e)
	}
	h := d.open(st, syscall.O_RDWR)
	coreWriteAt(t, d, st, randBytes(3<<20), 0)
	if e := d.unlink(api.RootID, "gone", false); e != 0 {
		t.Fatal(e)
	}
	if e := coreWriteQuota(t, d, "early", 2<<20); e != syscall.EDQUOT {
		t.Fatalf("while the deleted file is open its bytes count: %v, want EDQUOT", e)
	}
	if e := d.unlink(api.RootID, "early", false); e != 0 {
		t.Fatal(e)
	}
	if e := d.makeDurable(st, true, false); e != 0 {
		t.Fatal(e)
	}
	if e := d.release(h); e != 0 {
		t.Fatal(e)
	}
	if e := coreWriteQuota(t, d, "kept", 3<<20); e != 0 {
		t.Fatalf("after the deleted file's close: %v", e)
	}
	if e := coreWriteQuota(t, d, "more", 2<<20); e != syscall.EDQUOT {
		t.Fatalf("growth beyond the quota: %v, want EDQUOT", e)
	}
}
