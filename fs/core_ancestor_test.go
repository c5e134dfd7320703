package fs

import (
	"testing"
	"time"

	"kumo/remote/api"
)

// TestCoreAncestorWalkEndsOnLoop: directories' parents come from the cloud
// (a move from the change feed sets a moved directory's parent), so a
// hostile server could make them a loop. The walk up from a directory must
// then end, under d.mu, and count the loop as "below itself" so the move
// that asked is refused; it used to spin for ever, holding every file
// operation's lock.
func TestCoreAncestorWalkEndsOnLoop(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	x := coreMkdir(t, d, api.RootID, "x")
	y := coreMkdir(t, d, x.id, "y")
	z := coreMkdir(t, d, api.RootID, "z")

	d.mu.Lock()
	below, err := z.ancestorLocked(d, y.id)
	d.mu.Unlock()
	if below || err != nil {
		t.Fatalf("z above x/y: %v, %v; want no", below, err)
	}
	d.mu.Lock()
	below, err = x.ancestorLocked(d, y.id)
	d.mu.Unlock()
	if !below || err != nil {
		t.Fatalf("x above x/y: %v, %v; want yes", below, err)
	}

	d.mu.Lock()
	x.parent = y.id // x -> y -> x
	d.mu.Unlock()
	done := make(chan bool)
	go func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		done <- z.mayBeAncestorLocked(d, y.id)
	}()
	select {
	case below := <-done:
		if !below {
			t.Fatal("a parent loop counted as not below: the move would be made")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the walk up a parent loop did not end")
	}
	d.mu.Lock()
	x.parent = api.RootID
	d.mu.Unlock()
}
