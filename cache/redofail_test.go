package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"kumo/remote/api"
)

// failLogSync fails s's redo log as a failed fdatasync does: the sync runs
// through a closed descriptor (standing in for the disk's error).
func failLogSync(t *testing.T, s *Store) {
	t.Helper()
	if err := failLogSyncErr(s); !errors.Is(err, errRedoFailed) {
		t.Fatalf("test premise: the sync should fail the log, got %v", err)
	}
}

// failLogSyncErr is failLogSync for any goroutine: it returns the sync's error.
func failLogSyncErr(s *Store) error {
	closed, err := os.Open(filepath.Join(s.dir, metaDir, redoFile))
	if err != nil {
		return err
	}
	if err := closed.Close(); err != nil {
		return err
	}
	s.redo.appendMu.Lock()
	rw := s.redo.f
	s.redo.f = closed
	s.redo.appendMu.Unlock()
	err = s.SyncTree()
	s.redo.appendMu.Lock()
	s.redo.f = rw
	s.redo.appendMu.Unlock()
	return err
}

// TestRedoFailedBigApplyChangesNothing: a big mutation (past the
// write-behind's limits) goes to badger first and is logged after. Once the
// log had failed, it still went to badger, visible at once and durable
// whenever badger is written back, while Apply returned the sticky error.
// Now a failed log takes nothing: the error, and no change.
func TestRedoFailedBigApplyChangesNothing(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 1)}}))
	failLogSync(t, s)

	var m Mutation
	for id := uint64(1000); id < 1000+behindMaxEntries+10; id++ {
		m.PutNodes = append(m.PutNodes, smallNode(id, 2))
	}
	err := s.Apply(m)
	if !errors.Is(err, errRedoFailed) || !strings.Contains(err.Error(), "remount") {
		t.Fatalf("big apply after the log failed: %v; want the log's sticky error", err)
	}
	for _, id := range []uint64{1000, 1000 + behindMaxEntries + 9} {
		if n, err := s.GetNode(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("node %d of the failed apply: %+v, %v; want not found", id, n.ID, err)
		}
	}
	// Reset goes the same way (its cursor delete is applied now).
	if err := s.Reset(); !errors.Is(err, errRedoFailed) {
		t.Fatalf("reset after the log failed: %v; want the log's sticky error", err)
	}
	if _, err := s.GetNode(1); err != nil {
		t.Fatalf("node 1 after the refused reset: %v", err)
	}
}

// countHandler counts the log records of each message.
type countHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countHandler) WithGroup(string) slog.Handler            { return h }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Message]++
	return nil
}

func (h *countHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// bigMutation puts n nodes from id on: past the write-behind's limits, so
// badger gets it before the log (applyNow).
func bigMutation(id uint64) Mutation {
	var m Mutation
	for n := id; n < id+behindMaxEntries+10; n++ {
		m.PutNodes = append(m.PutNodes, smallNode(n, 2))
	}
	return m
}

// TestRedoFailsDuringBigApply: a big mutation checked the log's sticky
// error, then waited for the write-behind queue to reach badger (which may
// wait for data syncs); a sync failing the log meanwhile let it into badger
// while Apply returned the error. Now the check comes after the wait and
// holds off a sync's failure until the change is logged: the error, and no
// change.
func TestRedoFailsDuringBigApply(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	w := s.behind
	// The applier calls dataBefore once it took a batch with an AfterData
	// record, past its gathering pause: from then on only a drain puts a
	// token in hurry.
	took := make(chan struct{}, 1)
	orig := w.dataBefore
	w.mu.Lock()
	w.dataBefore = func(fence uint64) error {
		select {
		case <-w.hurry:
		default:
		}
		took <- struct{}{}
		return orig(fence)
	}
	w.mu.Unlock()

	w.applying.Lock() // the queued record stays queued
	unlocked := false
	defer func() {
		if !unlocked {
			w.applying.Unlock()
		}
	}()
	release := s.DataOrder()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 1)}, AfterData: true}))
	release()
	<-took

	applied := make(chan error, 1)
	go func() { applied <- s.Apply(bigMutation(1000)) }()
	for deadline := time.Now().Add(10 * time.Second); len(w.hurry) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the big apply did not wait for the queue in 10 s")
		}
	}
	failLogSync(t, s) // while the big apply waits for the queue
	w.applying.Unlock()
	unlocked = true

	if err := <-applied; !errors.Is(err, errRedoFailed) {
		t.Fatalf("big apply while the log failed: %v; want the log's sticky error", err)
	}
	if n, err := s.GetNode(1000); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node 1000 of the refused apply: %+v, %v; want not found", n.ID, err)
	}
	if _, err := s.GetNode(1); err != nil { // logged before the failure: it stands
		t.Fatalf("node 1, applied before the failure: %v", err)
	}
}

// TestRedoSyncFailureWaitsForAdmitted: a change admitted (admit) before a
// sync fails the log is logged before the failure is recorded, so it is
// never left in badger with the error returned; the failing sync waits.
func TestRedoSyncFailureWaitsForAdmitted(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 1)}})) // something to sync
	done, err := s.redo.admit()
	must(err)
	synced := make(chan error, 1)
	go func() { synced <- failLogSyncErr(s) }()
	time.Sleep(50 * time.Millisecond)
	if err := s.redo.failed(); err != nil {
		done()
		t.Fatalf("the log failed while an admitted change was under way: %v", err)
	}
	done()
	if err := <-synced; !errors.Is(err, errRedoFailed) {
		t.Fatalf("the sync after the admitted change: %v; want the log's sticky error", err)
	}
	if _, err := s.redo.admit(); !errors.Is(err, errRedoFailed) {
		t.Fatalf("admit after the failure: %v; want the log's sticky error", err)
	}
}

// TestFailedStorePeriodicCommitStops: after the store failed for good (its
// redo log, or applying to badger), every periodic commit failed the same
// way until the drive was remounted: it went on syncing segment files
// written since (fdatasyncs for data no change of the tree can refer to
// any more) and logging, every period. Now it says once that it stopped,
// and to remount, and stops.
func TestFailedStorePeriodicCommitStops(t *testing.T) {
	const every = 5 * time.Millisecond
	const stopped = "local store: periodic syncs stopped: the store failed; remount the drive to use it again"
	for _, tc := range []struct {
		name string
		fail func(*Store)
	}{
		{"redo log", func(s *Store) { s.redo.fail(errors.New("test: the disk failed")) }},
		{"badger", func(s *Store) {
			s.behind.mu.Lock()
			s.behind.err = errors.New("test: applying to badger failed")
			s.behind.mu.Unlock()
			s.synced.Store(-1) // something is unsynced
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &countHandler{n: map[string]int{}}
			s, err := Open(Options{Dir: t.TempDir(), Key: testKey(), Logger: slog.New(h), commitInterval: every})
			must(err)
			defer s.Close()
			must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 1)}}))
			f, err := s.OpenSegmentFile(7, 1)
			must(err)
			defer f.Close()
			tc.fail(s)
			time.Sleep(10 * every) // a commit that began before the failure has ended
			flushes := s.Flushes()
			for i := range int64(20) { // new data, unsynced, for the periods to come
				must(f.WriteSegment(i, []byte("written after the failure")))
				must(f.flush())
				time.Sleep(2 * every)
			}
			if n := s.Flushes() - flushes; n != 0 {
				t.Fatalf("%d flushes in 40 periods after the store failed; want none", n)
			}
			if n, m := h.count(stopped), h.count("local store: periodic sync failed"); n != 1 || m != 0 {
				t.Fatalf("stop logged %d times, periodic failure %d times over 50 periods; want once and never", n, m)
			}
		})
	}
}

// TestRedoDamagedLogsPruned: damaged logs kept aside (moveAside) are as big
// as the log and count against the cache budget; they piled up in meta/.
// At open only the newest redoKeepDamaged stay (newest by the time in the
// name, numerically; then the suffix), each removal logged; other names are
// left alone.
func TestRedoDamagedLogsPruned(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	must(s.Close())
	meta := filepath.Join(dir, metaDir)
	base := filepath.Join(meta, redoFile+".damaged-")
	for _, name := range []string{"50", "100", "200", "200.1", "300", "notatime"} {
		must(os.WriteFile(base+name, []byte("damaged "+name), 0o600))
	}

	var logged bytes.Buffer
	var mu sync.Mutex
	r, err := Open(Options{Dir: dir, Key: testKey(), Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logged, mu: &mu}, nil))})
	must(err)
	defer r.Close()
	left, err := filepath.Glob(base + "*")
	must(err)
	want := []string{base + "200", base + "200.1", base + "300", base + "notatime"}
	if !slices.Equal(left, want) {
		t.Fatalf("damaged logs left: %v; want %v", left, want)
	}
	mu.Lock()
	out := logged.String()
	mu.Unlock()
	for _, gone := range []string{base + "50", base + "100"} {
		if !strings.Contains(out, gone) {
			t.Fatalf("the removal of %s is not logged:\n%s", gone, out)
		}
	}

	// A log damaged at this open is kept even if older ones bear later
	// times (a clock set back).
	must(r.Close())
	must(os.WriteFile(filepath.Join(meta, redoFile), make([]byte, redoHeader), 0o600))
	future := time.Now().Add(time.Hour).Unix()
	for i := range int64(3) {
		must(os.WriteFile(fmt.Sprintf("%s%d", base, future+i), nil, 0o600))
	}
	r2 := openTest(t, dir, 0)
	defer r2.Close()
	left, err = filepath.Glob(base + "*")
	must(err)
	var fresh int
	for _, p := range left {
		if b, _ := os.ReadFile(p); len(b) == redoHeader {
			fresh++
		}
	}
	if fresh != 1 || len(left) != redoKeepDamaged+1 { // + notatime
		t.Fatalf("after a damaged log at open with newer-named ones: %v (%d the log just kept); want it and the 2 newest", left, fresh)
	}
}
