package fs

import (
	"context"
	"sync/atomic"
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

// pushDirCreate creates the directory /dir on a drive of cloud c while the
// cloud is down (a directory: no chunk to upload, whose upload would lift a
// quota block too), has answer answer its create (nil: the cloud's own
// answer), brings the cloud back and flushes.
func pushDirCreate(t *testing.T, c *cloud, answer func(api.BatchOp) *api.BatchResult) *Drive {
	t.Helper()
	p, d, down := proxiedDrive(t, c)
	down.Store(true)
	st, e := d.create(api.RootID, newNode{name: "dir", mode: syscall.S_IFDIR | 0o755})
	if e != 0 {
		t.Fatal(e)
	}
	answerCreate(p, st.id, answer)
	down.Store(false)
	kick(d.pushKick)
	flushWithin(t, d, 20*time.Second)
	return d
}

// A push the cloud refuses for quota holds the queue. Once the op it
// refused goes through (the cloud has room again), the drive is no longer
// blocked for quota: .kumo stops saying "quota full" and uploads are not
// paused. Here the account refreshes never show more room (as when the
// refusal comes after the refresh that showed a raise, or for a shared
// folder, whose room is its owner's); before, only such a refresh or an
// upload of a new chunk lifted the block, so it stayed for good (a
// directory's create here: no chunk to upload).
func TestCoreQuotaBlockLiftedByPush(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	var refused atomic.Bool
	d := pushDirCreate(t, c, func(api.BatchOp) *api.BatchResult {
		if refused.Swap(true) {
			return nil // the cloud answers: it has room
		}
		return &api.BatchResult{Error: &api.Error{Code: api.CodeQuota, Message: "quota exceeded"}}
	})
	if !refused.Load() {
		t.Fatal("the create was never refused for quota")
	}
	if _, ok := cloudRootNames(t, c)["dir"]; !ok {
		t.Fatal("the refused create is not in the cloud after the flush")
	}
	if d.Status().QuotaBlocked {
		t.Fatal("still blocked for quota after the refused op went through")
	}
	if d.uploadPaused() {
		t.Fatal("uploads paused after the refused op went through")
	}
}
