package procs

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	w := Window
	// Per 100 ms window: 500 changes = 5,000 a second.
	untar := Load{Changes: 500, DataOps: 300, DataBytes: 300 * 8 << 10}
	rm := Load{Changes: 900}
	bigWrite := Load{Changes: 1, DataOps: 30, DataBytes: 30 << 20}
	quiet := Load{Changes: 3, DataOps: 10, DataBytes: 40 << 10}
	grep := Load{DataOps: 1500, DataBytes: 1500 * 8 << 10}
	manySmallWrites := Load{Changes: 500, DataOps: 5000, DataBytes: 5000 * 4 << 10} // 200 MB/s of 4 KiB writes
	makeJ := Load{Changes: 500, CallerSwitches: 400}                                // several writers at once
	untarBeside := Load{Changes: 500, CallerSwitches: 30}                           // one writer, another thread now and then
	cases := []struct {
		name  string
		loads []Load
		want  []int
	}{
		{"a burst of small changes drops to one after two windows", []Load{untar, untar, untar}, []int{2, 1, 1}},
		{"an rm -rf is a burst", []Load{rm, rm}, []int{2, 1}},
		{"the burst ending gives the processors back at once", []Load{untar, untar, quiet, untar}, []int{2, 1, 2, 2}},
		{"bulk data is never a burst", []Load{bigWrite, bigWrite, bigWrite}, []int{2, 2, 2}},
		{"bulk data ends a burst", []Load{rm, rm, bigWrite}, []int{2, 1, 2}},
		{"reads without changes are not a burst", []Load{grep, grep, grep}, []int{2, 2, 2}},
		{"small writes in bulk are not a burst", []Load{manySmallWrites, manySmallWrites}, []int{2, 2}},
		{"several writers at once are not a burst", []Load{makeJ, makeJ, makeJ}, []int{2, 2, 2}},
		{"one writer with a few other requests is", []Load{untarBeside, untarBeside}, []int{2, 1}},
		{"several writers end a burst", []Load{rm, rm, makeJ}, []int{2, 1, 2}},
	}
	for _, c := range cases {
		g := New(2)
		for i, l := range c.loads {
			if got := g.Decide(l, w); got != c.want[i] {
				t.Errorf("%s: window %d: %d processors, want %d", c.name, i, got, c.want[i])
			}
		}
	}
	if got := New(1).Decide(rm, w); got != 1 {
		t.Errorf("one processor at most: got %d", got)
	}
}

// Run switches on a burst and restores the count when it ends and when
// its context ends.
func TestRunSwitchesAndRestores(t *testing.T) {
	var mu sync.Mutex
	var l Load
	var sets []int
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, 2, func() Load { mu.Lock(); defer mu.Unlock(); return l }, func(n int) { mu.Lock(); sets = append(sets, n); mu.Unlock() })
	}()
	last := func() (int, []int) {
		mu.Lock()
		defer mu.Unlock()
		if len(sets) == 0 {
			return 0, nil
		}
		return sets[len(sets)-1], append([]int(nil), sets...)
	}
	// waitFor feeds a burst of 5,000 changes every half window (far above
	// the threshold even if a loaded machine stretches the windows), or
	// nothing, until Run has set want.
	deadline := time.Now().Add(10 * time.Second)
	waitFor := func(what string, want int, burst bool) {
		t.Helper()
		for n, _ := last(); n != want; n, _ = last() {
			if time.Now().After(deadline) {
				_, got := last()
				t.Fatalf("%s: sets %v, want %d last", what, got, want)
			}
			if burst {
				mu.Lock()
				l.Changes += 5000
				mu.Unlock()
			}
			time.Sleep(Window / 2)
		}
	}
	waitFor("a burst", 1, true)
	waitFor("after the burst", 2, false)
	waitFor("a second burst", 1, true)
	// The burst goes on while Run ends: only its end restores the count.
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for {
			select {
			case <-stop:
				return
			case <-time.After(Window / 4):
			}
			mu.Lock()
			l.Changes += 5000
			mu.Unlock()
		}
	}()
	time.Sleep(Window)
	_, before := last()
	cancel()
	<-done
	close(stop)
	<-fed
	_, after := last()
	if before[len(before)-1] != 1 || len(after) != len(before)+1 || after[len(after)-1] != 2 {
		t.Fatalf("sets %v during the burst, %v after Run returned: want 1 last, then 2 set by Run's end", before, after)
	}
}

// Thresholds: exactly at them is a burst, just past them is not, and a
// window stretched by a loaded machine is judged by its rate.
func TestDecideThresholds(t *testing.T) {
	cases := []struct {
		name   string
		l      Load
		period time.Duration
		burst  bool
	}{
		{"2,000 changes a second", Load{Changes: 200}, Window, true},
		{"1,990 changes a second", Load{Changes: 199}, Window, false},
		{"500 changes in a stretched second", Load{Changes: 500}, time.Second, false},
		{"one change in 8 from another thread", Load{Changes: 800, CallerSwitches: 100}, Window, true},
		{"a little more than one in 8", Load{Changes: 800, CallerSwitches: 101}, Window, false},
		{"32 MiB/s of data", Load{Changes: 800, DataOps: 64, DataBytes: 32 << 20 / 10}, Window, true},
		{"more than 32 MiB/s", Load{Changes: 800, DataOps: 64, DataBytes: 32<<20/10 + 64}, Window, false},
		{"writes of 64 KiB", Load{Changes: 800, DataOps: 10, DataBytes: 10 * 64 << 10}, Window, true},
		{"writes a little over 64 KiB", Load{Changes: 800, DataOps: 10, DataBytes: 10*64<<10 + 10}, Window, false},
	}
	for _, c := range cases {
		g := New(2)
		g.Decide(c.l, c.period)
		if got := g.Decide(c.l, c.period) == 1; got != c.burst {
			t.Errorf("%s: burst %v, want %v", c.name, got, c.burst)
		}
	}
	if !Measured(2) || Measured(1) || Measured(4) {
		t.Error("Measured: only two processors were measured")
	}
}
