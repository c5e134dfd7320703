package fs

import (
	"testing"
	"time"
)

// TestCoreClosedHeldScans: while changes keep coming (an rm -rf, a git
// add), closed files are held and the uploader passes over its dirty files
// at most every heldRescan, not on every wake-up: each pass holds d.mu over
// every dirty file, and with one processor the kernel's next request waited
// for it. Once changes pause, or a backlog is passed, closed files go and
// passes come at the usual pace again.
func TestCoreClosedHeldScans(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	burst := func(at time.Time) {
		d.lastChange.Store(at.UnixNano())
		d.up.lastClose.Store(at.UnixNano())
		d.fgAt.Store(at.UnixNano())
	}
	dirty := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.dirty)
	}
	// Changes "keep coming" for the whole test (stamped an hour ahead), so
	// a slow machine cannot end the burst early.
	burst(time.Now().Add(time.Hour))
	coreFile(t, d, 1, "closed", "data of a closed file")
	burst(time.Now().Add(time.Hour))
	if !d.closedHeld() {
		t.Fatal("changes keep coming: closed files should be held")
	}

	// The loop's passes while held: the ticker and kicks wake it about 80
	// times in 1.5 s.
	before := d.up.scans.Load()
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		kick(d.uploadKick)
		time.Sleep(20 * time.Millisecond)
	}
	if n := d.up.scans.Load() - before; n > 2 {
		t.Fatalf("held: %d passes over the dirty files in 1.5 s, want at most 2 (one per %v)", n, heldRescan)
	}
	if dirty() != 1 {
		t.Fatal("held: the closed file was uploaded during the burst")
	}

	// The backlogs and a Flush end the hold.
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

	// Changes pause: the file goes, passes come on wake-ups again.
	burst(time.Now().Add(-2 * time.Second))
	if d.closedHeld() {
		t.Fatal("changes paused two seconds ago: closed files should go")
	}
	before = d.up.scans.Load()
	for end := time.Now().Add(10 * time.Second); dirty() > 0; {
		if time.Now().After(end) {
			t.Fatal("changes paused: the closed file was not uploaded in 10 s")
		}
		kick(d.uploadKick)
		time.Sleep(20 * time.Millisecond)
	}
	if d.up.scans.Load() == before {
		t.Fatal("changes paused: the file went without a pass over the dirty files")
	}
}
