package fs

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/remote/api"
)

// Files whose upload is committed locally but whose update is still queued
// for the cloud are deleted: the update must be dropped, not turned into a
// "recovered" conflict copy of a file the user deleted.
func TestCoreDeleteWhileUpdateQueued(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	const n = 40
	for i := range n {
		coreFile(t, d, api.RootID, fmt.Sprintf("f%02d", i), "first")
	}
	coreFlush(t, d)
	for i := range n {
		coreRewrite(t, d, fmt.Sprintf("f%02d", i), fmt.Sprintf("second %d", i))
	}
	// Keep changing another file so the pusher holds its queue while the
	// uploads commit (each queues an update) and the files are deleted.
	_, release := holdPusher(t, d)
	waitFor(t, 20*time.Second, func() bool { return d.Status().Queue.Files == 0 })
	// More ops than one batch holds, so the deletes reach the cloud in a
	// later batch than the updates.
	for i := range pushBatch + 20 {
		coreMkdir(t, d, api.RootID, fmt.Sprintf("dir%03d", i))
	}
	// Deleted with no open handle, the nodes' state goes at once: the
	// queued updates then name nodes the drive no longer has.
	for i := range n {
		if e := d.unlink(api.RootID, fmt.Sprintf("f%02d", i), false); e != 0 {
			t.Fatal(e)
		}
	}
	release()
	coreFlush(t, d)
	check := func(d *Drive) {
		t.Helper()
		var left []string
		for _, name := range coreNames(t, d, api.RootID) {
			if name != "keep" && !strings.HasPrefix(name, "dir") {
				left = append(left, name)
			}
		}
		if len(left) > 0 {
			t.Fatalf("deleted files came back: %d names, first %q", len(left), left[0])
		}
	}
	check(d)
	check(coreDrive(t, c))
}

// Removing a closed small file deletes its inline data in the unlink's own
// local mutation (it used to be one more mutation per file, applied in the
// background): when unlink returns, the store holds none of it. (The old
// code usually passes too, its background removal being quick; this guards
// the folded delete: a layer marked gone without its delete in the mutation
// would leave the data in the store for good.)
func TestCoreUnlinkDropsInlineAtOnce(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	// No upload while the test runs: the files' data stays inline.
	d := coreDriveAt(t, c, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour }, nil)
	_, release := holdPusher(t, d)
	defer release()
	const n = 20
	ids := map[uint64]bool{}
	for i := range n {
		st := coreFile(t, d, api.RootID, fmt.Sprintf("small%02d", i), fmt.Sprintf("content %d", i))
		ids[st.id] = true
	}
	inlineOf := func() int {
		segs, err := d.store.InlineSegments()
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for _, s := range segs {
			if ids[s[0]] {
				k++
			}
		}
		return k
	}
	if k := inlineOf(); k != n {
		t.Fatalf("%d of %d small files have inline data in the store after close", k, n)
	}
	for i := range n {
		if e := d.unlink(api.RootID, fmt.Sprintf("small%02d", i), false); e != 0 {
			t.Fatal(e)
		}
	}
	if k := inlineOf(); k != 0 {
		t.Fatalf("%d removed files still have inline data in the store after unlink returned", k)
	}
}

// A second restore asked for while one runs is refused with EBUSY, and the
// control file keeps showing the running restore's progress (the refusal
// used to take its place as the last command, hiding what it said to wait
// for).
func TestCoreSecondRestoreBusy(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	d.ctl.running("restore /Docs 2h", "3 of 10 entries")
	d.restoring.Store(true)
	if e := d.runCommand("restore /Other 2026-12-05T10:00:00Z"); e != syscall.EBUSY {
		t.Fatalf("second restore: %v, want EBUSY", e)
	}
	d.ctl.mu.Lock()
	last := *d.ctl.last
	d.ctl.mu.Unlock()
	if !last.Running || last.Command != "restore /Docs 2h" || last.Message != "3 of 10 entries" {
		t.Fatalf("last command after the refusal: %+v, want the running restore", last)
	}
}
