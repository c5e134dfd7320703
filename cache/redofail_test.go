package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kumo/remote/api"
)

// failLogSync fails s's redo log as a failed fdatasync does: the sync runs
// through a closed descriptor (standing in for the disk's error).
func failLogSync(t *testing.T, s *Store) {
	t.Helper()
	closed, err := os.Open(filepath.Join(s.dir, metaDir, redoFile))
	must(err)
	must(closed.Close())
	s.redo.appendMu.Lock()
	rw := s.redo.f
	s.redo.f = closed
	s.redo.appendMu.Unlock()
	err = s.SyncTree()
	s.redo.appendMu.Lock()
	s.redo.f = rw
	s.redo.appendMu.Unlock()
	if !errors.Is(err, errRedoFailed) {
		t.Fatalf("test premise: the sync should fail the log, got %v", err)
	}
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
