package fs

import (
	"testing"
	"time"
)

// TestCoreClosedHeldScans: while changes keep coming (an rm -rf, a git
// add), closed files are held and the uploader scans its dirty files at
// most every heldRescan, not every readyRescan: each scan holds d.mu over
// every dirty file, and with one processor the kernel's next request waited
// for it. Once changes pause, or a backlog is passed, closed files go and
// scans come at the usual pace again.
func TestCoreClosedHeldScans(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	burst := func(at time.Time) {
		d.lastChange.Store(at.UnixNano())
		d.up.lastClose.Store(at.UnixNano())
		d.fgAt.Store(at.UnixNano())
	}
	last := readyList{at: time.Now().Add(-200 * time.Millisecond), took: time.Millisecond}

	burst(time.Now())
	if !d.closedHeld() {
		t.Fatal("changes keep coming: closed files should be held")
	}
	if last.mayScan(d.closedHeld()) {
		t.Fatalf("held: a scan 200 ms after the last one (heldRescan %v)", heldRescan)
	}
	if old := (readyList{at: time.Now().Add(-heldRescan), took: time.Millisecond}); !old.mayScan(true) {
		t.Fatal("held: no scan a heldRescan after the last one (files left open must still go)")
	}

	d.up.queued.Store(d.uploadBacklogBytes())
	if d.closedHeld() {
		t.Fatal("closed data past its backlog: closed files should go during the burst")
	}
	d.up.queued.Store(0)

	d.up.flushing.Add(1)
	if d.closedHeld() {
		t.Fatal("a Flush waits: closed files should go")
	}
	d.up.flushing.Add(-1)

	burst(time.Now().Add(-2 * time.Second))
	if d.closedHeld() {
		t.Fatal("changes paused two seconds ago: closed files should go")
	}
	if !last.mayScan(d.closedHeld()) {
		t.Fatalf("settled: no scan 200 ms after the last one (readyRescan %v)", readyRescan)
	}
}
