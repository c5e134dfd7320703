// Package procs chooses how many threads run Go code at once (GOMAXPROCS)
// from the drive's request mix.
//
// Every FUSE request is read by one goroutine that hands the next read to a
// new one (go-fuse), so a stream of small requests wakes threads on the
// other processor over and over. On two cores, unpacking a source tree cost
// the daemon 3.9 CPU s with two processors and 2.6 with one (5.9 against
// 4.5-4.7 s of tar), and creating or deleting small files ran 25-38 % faster
// with one; but a 1 GiB write ran at 139 instead of 392 MiB/s and cold
// reads at 453 instead of 702, since sealing and opening data use both
// cores. So the governor drops to one processor only while the drive takes
// a burst of small changes from one writer, and gives the others back as
// soon as it ends, data flows in bulk or several writers work at once. It
// was measured on two processors only, and runs only there (Measured): with
// more, one processor would also take the others from the collector,
// badger's compactions and the uploads and pushes that run past their
// backlogs during a burst.
package procs

import (
	"context"
	"time"
)

// Load counts what the drive was asked for since it started.
type Load struct {
	Changes   int64 // requests that change the tree (create, unlink, rename, link, attributes, a close after writing)
	DataOps   int64 // reads and writes
	DataBytes int64 // bytes read and written
	// CallerSwitches counts changes from another thread than the one
	// before: about none for one writer, about one a change for several
	// at once.
	CallerSwitches int64
}

func (l Load) sub(o Load) Load {
	return Load{l.Changes - o.Changes, l.DataOps - o.DataOps, l.DataBytes - o.DataBytes, l.CallerSwitches - o.CallerSwitches}
}

// Thresholds of a burst of small changes, per second of a window.
const (
	burstChanges  = 2000     // changes a second, at least
	burstMaxBytes = 32 << 20 // bytes read and written a second, at most
	burstMaxOp    = 64 << 10 // bytes a read or write, on average, at most
	// burstMaxSwitches: the changes come from one writer at a time (tar,
	// git, rm -rf, cp -a): at most one in 8 from another thread than the
	// change before. Several writers at once (make -j, a parallel checkout)
	// keep every processor: one would serialize them.
	burstMaxSwitches = 8
	// burstWindows in a row make a burst: one busy window (a short
	// unpack) is not worth a switch, which stops the world.
	burstWindows = 2
)

// Measured says whether the governor was measured with n processors (and
// so may run with them).
func Measured(n int) bool { return n == 2 }

// Window is how often Run samples the load.
const Window = 100 * time.Millisecond

// Governor decides the processor count window by window.
type Governor struct {
	max  int // processors outside bursts
	busy int // busy windows in a row
}

// New returns a governor that uses max processors outside bursts.
func New(max int) *Governor { return &Governor{max: max} }

// Decide returns the processors for the next window after one of length
// period in which the drive took d.
func (g *Governor) Decide(d Load, period time.Duration) int {
	if g.max <= 1 || period <= 0 {
		return max(g.max, 1)
	}
	perSec := func(n int64) float64 { return float64(n) / period.Seconds() }
	small := d.DataOps == 0 || d.DataBytes/d.DataOps <= burstMaxOp
	oneWriter := d.CallerSwitches*burstMaxSwitches <= d.Changes
	if perSec(d.Changes) >= burstChanges && small && oneWriter && perSec(d.DataBytes) <= burstMaxBytes {
		g.busy++
	} else {
		g.busy = 0
	}
	if g.busy >= burstWindows {
		return 1
	}
	return g.max
}

// Run samples load every Window and calls set with a new processor count
// when the decision changes, until ctx ends; it leaves max set.
func Run(ctx context.Context, max int, load func() Load, set func(int)) {
	g := New(max)
	t := time.NewTicker(Window)
	defer t.Stop()
	cur, last, at := max, load(), time.Now()
	defer func() {
		if cur != max {
			set(max)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, l := time.Now(), load()
		n := g.Decide(l.sub(last), now.Sub(at))
		last, at = l, now
		if n != cur {
			set(n)
			cur = n
		}
	}
}
