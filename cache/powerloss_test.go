package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"kumo/internal/chunk"
	"kumo/remote/api"
)

// TestPowerLossBadgerAhead: badger's files are not synced between
// checkpoints, but the kernel writes them back when it likes, so a power
// loss can leave badger holding changes the synced redo log lost. Here a
// file is created and synced, then renamed (not synced): the crash image
// has badger with the rename and the log without it. Replaying the log's
// create over that badger put the old name back next to the new one (two
// entries for one node, nlink 1) before badger's redo position was kept;
// now the store opens as one state: badger's, with only the new name.
func TestPowerLossBadgerAhead(t *testing.T) {
	live := t.TempDir()
	s := openTest(t, live, 0)
	defer s.Close()
	must(s.Apply(Mutation{
		PutNodes:   []api.Node{smallNode(100, 1)},
		PutEntries: []Entry{{Parent: api.RootID, NameMAC: mac(1), Name: []byte("a"), Child: 100}},
		Journal:    []api.BatchOp{op(1)},
	}))
	must(s.SyncAll())
	must(s.Apply(Mutation{ // rename a -> b, not synced
		DeleteEntries: []Entry{{Parent: api.RootID, NameMAC: mac(1)}},
		PutEntries:    []Entry{{Parent: api.RootID, NameMAC: mac(2), Name: []byte("b"), Child: 100}},
		PutNodes:      []api.Node{smallNode(100, 2)},
		Journal:       []api.BatchOp{op(2)},
	}))
	must(s.behind.drain()) // badger has it (in the kernel's page cache)
	img := t.TempDir()
	must(s.CrashImage(img))

	r := openTest(t, img, 0)
	defer r.Close()
	ents, err := r.List(api.RootID)
	must(err)
	if len(ents) != 1 || ents[0].NameMAC != mac(2) {
		var names []string
		for _, e := range ents {
			names = append(names, string(e.Name))
		}
		t.Fatalf("entries after the power loss: %q, want one state (only b, as badger kept it)", names)
	}
	if n, err := r.GetNode(100); err != nil || n.Attrs[0] != 2 {
		t.Fatalf("node after the power loss: %v", err)
	}
	ops, err := r.Pending(10)
	if err != nil || len(ops) != 2 {
		t.Fatalf("journal after the power loss: %d ops, %v (want both: badger's state)", len(ops), err)
	}
}

// TestPowerLossAfterSync: what SyncAll covered survives a power loss
// (CrashImage drops everything written after it: the log's tail, segment
// slots written since, segment files whose directory entry was not synced),
// whatever badger kept; what came after may be lost but leaves a store that
// opens, reads every synced segment, and whose tree is one state.
func TestPowerLossAfterSync(t *testing.T) {
	live := t.TempDir()
	s := openTest(t, live, 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(7, 1)
	must(err)
	defer f.Close()
	for i := int64(0); i < 8; i++ {
		must(f.WriteSegment(i, segPattern(7, i, chunk.SegmentSize)))
	}
	for i := uint64(0); i < 20; i++ {
		must(s.Apply(smallFileMutation(i)))
	}
	must(f.Flush()) // close's durability point: in the kernel only
	must(s.SyncAll())
	// After the sync: more data, a new file, tree changes; none synced.
	for i := int64(8); i < 12; i++ {
		must(f.WriteSegment(i, segPattern(7, i, 100)))
	}
	must(f.Flush())
	g, err := s.OpenSegmentFile(8, 1)
	must(err)
	defer g.Close()
	must(g.WriteSegment(0, []byte("new file")))
	must(g.Flush())
	for i := uint64(20); i < 40; i++ {
		must(s.Apply(smallFileMutation(i)))
	}
	must(s.Apply(Mutation{DeleteNodes: []uint64{203}, DeleteEntries: []Entry{{Parent: api.RootID, NameMAC: mac(3)}}}))
	img := t.TempDir()
	must(s.CrashImage(img))

	r := openTest(t, img, 0)
	defer r.Close()
	rf, err := r.OpenSegmentFile(7, 1)
	must(err)
	defer rf.Close()
	for i := int64(0); i < 8; i++ {
		p, ok, err := rf.ReadSegment(i)
		if err != nil || !ok || !bytes.Equal(p, segPattern(7, i, chunk.SegmentSize)) {
			t.Fatalf("synced segment %d after the power loss: ok=%v err=%v", i, ok, err)
		}
	}
	for i := int64(8); i < 12; i++ {
		if _, ok, err := rf.ReadSegment(i); ok || err != nil {
			t.Fatalf("segment %d written after the sync: ok=%v err=%v, want dropped by the image", i, ok, err)
		}
	}
	files, err := r.SegmentFiles()
	must(err)
	for _, sf := range files {
		if sf == [2]uint64{8, 1} {
			t.Fatal("a segment file whose directory entry was never synced is in the image")
		}
	}
	for i := uint64(0); i < 20; i++ {
		if i == 3 {
			continue // deleted later: either state is fine
		}
		if _, err := r.GetNode(200 + i); err != nil {
			t.Fatalf("synced node %d lost: %v", 200+i, err)
		}
		p, ok, err := r.GetInline(200+i, 1)
		if err != nil || !ok || !bytes.Equal(p, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("synced inline data of node %d: ok=%v err=%v", 200+i, ok, err)
		}
	}
	// One state: every entry's node exists, every journal op is in order.
	ents, err := r.List(api.RootID)
	must(err)
	for _, e := range ents {
		if _, err := r.GetNode(e.Child); err != nil {
			t.Fatalf("entry %x names node %d: %v", e.NameMAC[:4], e.Child, err)
		}
	}
	_, err3 := r.GetNode(203)
	_, errE := r.Lookup(api.RootID, mac(3))
	if errors.Is(err3, ErrNotFound) != errors.Is(errE, ErrNotFound) {
		t.Fatalf("node 203 and its entry disagree: %v / %v", err3, errE)
	}
	ops, err := r.Pending(100)
	must(err)
	for i, o := range ops {
		if o.Seq != uint64(i+1) {
			t.Fatalf("journal op %d has seq %d", i, o.Seq)
		}
	}
	if len(ops) < 20 {
		t.Fatalf("journal after the power loss: %d ops, want at least the 20 synced", len(ops))
	}
}

// TestAfterDataOrder: a mutation that describes unsynced segment data (a
// close's new size) reaches neither badger nor a synced redo log before
// that data is on disk. Badger's files reach the disk whenever the kernel
// writes them back, so badger holding the record first could, after a power
// loss, show the new size over bytes that never got there (zeros).
func TestAfterDataOrder(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(9, 1)
	must(err)
	defer f.Close()
	must(f.WriteSegment(0, segPattern(9, 0, chunk.SegmentSize)))
	must(f.Flush())
	release := s.DataOrder()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(9, 1)}, AfterData: true}))
	release()
	if n, err := s.GetNode(9); err != nil || n.Attrs[0] != 1 {
		t.Fatalf("the record is not visible at once: %v", err)
	}
	if inBadger(t, s, nodeKey(9)) {
		t.Fatal("badger holds the record before its data was synced")
	}
	flushes := s.Flushes()
	must(s.behind.drain()) // a reader waits: the applier syncs the data, then applies
	if !inBadger(t, s, nodeKey(9)) {
		t.Fatal("the record did not reach badger after the drain")
	}
	if s.Flushes() == flushes || f.unsynced.Load() {
		t.Fatal("badger got the record without the data being synced first")
	}

	// The redo log: a sync (another file's fsync) syncs the data first.
	must(f.WriteSegment(1, segPattern(9, 1, 10)))
	must(f.Flush())
	release = s.DataOrder()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(9, 2)}, AfterData: true}))
	release()
	if !f.unsynced.Load() {
		t.Fatal("test premise: the segment file should hold unsynced data")
	}
	must(s.SyncTree())
	if f.unsynced.Load() {
		t.Fatal("the redo log was synced with a record whose data was not")
	}
}

// TestPowerLossTornRedoHeader: a header left unreadable (a power loss while a
// checkpoint wrote it) must not let the log's epochs start over. Before, the
// store went back to epoch 0, so its next checkpoint reused epoch 1: a new
// record of the size of one of the old epoch 1 ended exactly where the old
// epoch's next record began, which then passed its CRC and was replayed after
// the next power loss, putting back a write the store had long replaced.
func TestPowerLossTornRedoHeader(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, metaDir, redoFile)
	s := openTest(t, dir, 0) // epoch 1
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(7, 1)}}))
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(5, 1)}})) // the record that goes stale
	must(s.Close())                                                // epoch 2
	s = openTest(t, dir, 0)                                        // epoch 3
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(5, 2)}})) // over the first record's bytes
	must(s.Close())                                                // epoch 4: badger has node 5 = 2

	data, err := os.ReadFile(logPath)
	must(err)
	first := int64(binary.BigEndian.Uint32(data[redoHeader:]))
	next := int64(redoHeader) + redoRecHead + first
	n := int64(binary.BigEndian.Uint32(data[next:]))
	if n == 0 || redoSum(1, data[next+redoRecHead:next+redoRecHead+n]) != binary.BigEndian.Uint32(data[next+4:]) {
		t.Fatal("test premise: epoch 1's second record should follow a record of the same size")
	}

	// The power went while a checkpoint wrote the header: its bytes are garbage.
	f, err := os.OpenFile(logPath, os.O_RDWR, 0)
	must(err)
	_, err = f.WriteAt(bytes.Repeat([]byte{0xa5}, 24), 0)
	must(err)
	must(f.Close())

	s = openTest(t, dir, 0)
	defer s.Close()
	if n, err := s.GetNode(5); err != nil || n.Attrs[0] != 2 {
		t.Fatalf("node 5 after reopening over a torn header: %v %v", n.Attrs[:1], err)
	}
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(7, 3)}})) // as big as epoch 1's first record
	must(s.SyncTree())
	img := t.TempDir()
	// A power loss now: everything written to the log is synced, and past
	// its end the image keeps the older epochs' records, as the disk does.
	must(s.CrashImage(img))

	r := openTest(t, img, 0)
	defer r.Close()
	if n, err := r.GetNode(5); err != nil || n.Attrs[0] != 2 {
		t.Fatalf("node 5 after the power loss: fill %v, %v; want 2 (1 is a stale record of an old epoch replayed)", n.Attrs[:1], err)
	}
	if n, err := r.GetNode(7); err != nil || n.Attrs[0] != 3 {
		t.Fatalf("node 7 (synced) after the power loss: fill %v, %v; want 3", n.Attrs[:1], err)
	}
}

// TestPowerLossNewRedoLogEpoch: a log created over an existing store (moved
// away, as the error for a foreign log advises, or a budget change's new log
// before its first checkpoint) must start above the epoch of badger's redo
// position. Before, it started at epoch 1 again: badger's position of the
// old log's epoch 1 then made the replay skip the new log's first records,
// so writes an fsync had made durable were lost at the next power loss.
func TestPowerLossNewRedoLogEpoch(t *testing.T) {
	live := t.TempDir()
	s := openTest(t, live, 0) // epoch 1
	for i := uint64(1); i <= 5; i++ {
		must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(i, 1)}}))
	}
	must(s.Close()) // badger's position: epoch 1, 5 records
	must(os.Remove(filepath.Join(live, metaDir, redoFile)))
	snap := t.TempDir()
	copyTree(t, live, snap) // badger as its last sync left it

	s = openTest(t, live, 0) // a new log
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(10, 1)}}))
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(11, 1)}}))
	must(s.SyncTree())
	// The power goes: badger's unsynced state is lost, the synced log is not.
	must(copyFileTo(filepath.Join(live, metaDir, redoFile), filepath.Join(snap, metaDir, redoFile)))
	s.Close()

	r := openTest(t, snap, 0)
	defer r.Close()
	for _, id := range []uint64{1, 5, 10, 11} {
		if _, err := r.GetNode(id); err != nil {
			t.Fatalf("node %d (synced) after the power loss: %v", id, err)
		}
	}
}

// TestPowerLossTornRedoHeaderSegments: segment records are not counted in
// badger's position, so an epoch above the position's is not enough after
// an unreadable header: this log's epoch 1 holds only a segment record (an
// fsync of a small write). Before, the store restarted at epoch 1, which
// made that record valid again, and the next power loss replayed its old
// slot over the newer data synced in the segment file since.
func TestPowerLossTornRedoHeaderSegments(t *testing.T) {
	s := openTest(t, t.TempDir(), 0) // epoch 1
	defer s.Close()
	f, err := s.OpenSegmentFile(6, 1)
	must(err)
	defer f.Close()
	must(f.WriteSegment(0, segPattern(6, 0, 1000)))
	must(f.Sync()) // into the log
	must(s.SyncTree())
	dir := t.TempDir()
	must(s.CrashImage(dir)) // a power loss
	logPath := filepath.Join(dir, metaDir, redoFile)
	lf, err := os.OpenFile(logPath, os.O_RDWR, 0)
	must(err)
	_, err = lf.WriteAt(bytes.Repeat([]byte{0x5a}, 24), 0) // and a damaged header
	must(err)
	must(lf.Close())

	s2 := openTest(t, dir, 0)
	defer s2.Close()
	f2, err := s2.OpenSegmentFile(6, 1)
	must(err)
	defer f2.Close()
	newer := segPattern(6, 100, 1000)
	must(f2.WriteSegment(0, newer))
	must(f2.Flush())
	must(s2.SyncAll()) // the segment file itself
	img := t.TempDir()
	must(s2.CrashImage(img)) // keeps epoch 1's segment record past the log's end

	r := openTest(t, img, 0)
	defer r.Close()
	checkSegments(t, r, 6, map[int64][]byte{0: newer})
}

// TestPowerLossAfterFailedCheckpoint: a checkpoint whose header update
// fails fails the log for good. Before dc46bad the store went on in the new
// epoch under the old header (records that could never be replayed); after
// it, in the old epoch under a header that may name the new one (written to
// the page cache, for a later successful fdatasync to make durable): the
// records fsync'd after it then fail their CRC. Now every later append,
// sync and checkpoint fails with the log's sticky error, so nothing is
// acknowledged durable under a header of unknown epoch; the drive answers
// EIO (no errno in the chain) until it is remounted.
func TestPowerLossAfterFailedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 1)}}))
	must(s.SyncTree())
	seg, err := s.OpenSegmentFile(6, 1)
	must(err)

	// The header write fails (a read-only descriptor stands in for the
	// disk's error).
	ro, err := os.Open(filepath.Join(dir, metaDir, redoFile))
	must(err)
	defer ro.Close()
	s.redo.appendMu.Lock()
	rw := s.redo.f
	s.redo.f = ro
	s.redo.appendMu.Unlock()
	s.applyMu.Lock()
	err = s.redo.checkpoint(s.db)
	s.applyMu.Unlock()
	s.redo.appendMu.Lock()
	s.redo.f = rw
	s.redo.appendMu.Unlock()
	if err == nil {
		t.Fatal("test premise: the checkpoint should fail")
	}

	sticky := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, errRedoFailed) {
			t.Fatalf("%s after the failed checkpoint: %v; want the log's sticky error", what, err)
		}
		if !strings.Contains(err.Error(), "remount") {
			t.Fatalf("%s: the error does not say what to do: %v", what, err)
		}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			t.Fatalf("%s: errno %v in the chain; the drive should answer EIO", what, errno)
		}
	}
	cpErr := err
	sticky("an apply", s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 2)}}))
	sticky("the failed checkpoint", cpErr)
	sticky("an apply", s.Apply(Mutation{PutNodes: []api.Node{smallNode(2, 2)}}))
	sticky("a sync", s.SyncTree())
	must(seg.WriteSegment(0, segPattern(6, 0, 1000)))
	sticky("a small segment file's sync (into the log)", seg.Sync())
	s.applyMu.Lock()
	err = s.redo.checkpoint(s.db)
	s.applyMu.Unlock()
	sticky("a checkpoint", err)

	// A power loss now keeps what was acknowledged before the failure.
	must(s.behind.drain())
	img := t.TempDir()
	must(s.CrashImage(img))
	r := openTest(t, img, 0)
	defer r.Close()
	if n, err := r.GetNode(1); err != nil || n.Attrs[0] != 1 {
		t.Fatalf("node 1 (synced) after the power loss: fill %v, %v; want 1", n.Attrs[:1], err)
	}
	if _, err := r.GetNode(2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node 2, whose apply failed: %v; want not found", err)
	}
	// And so does a remount: the close fails, the next open starts a new epoch.
	seg.Close()
	sticky("the close", s.Close())
	s2 := openTest(t, dir, 0)
	defer s2.Close()
	if n, err := s2.GetNode(1); err != nil || n.Attrs[0] != 1 {
		t.Fatalf("node 1 after the remount: fill %v, %v; want 1", n.Attrs[:1], err)
	}
	must(s2.Apply(Mutation{PutNodes: []api.Node{smallNode(2, 3)}}))
	must(s2.SyncTree())
}

// TestCrashImageKeepsOldEpochs: the redo log is overwritten in place from
// its start at every epoch, so after a power loss the disk still holds,
// past the current write position, the records of older epochs. The crash
// image keeps them (it zeroed everything after the synced end, which hid
// every bug that made such a record valid again), zeroes only the unsynced
// records, and the store recovers from it without replaying the old ones.
func TestCrashImageKeepsOldEpochs(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0) // epoch 1
	for i := uint64(1); i <= 6; i++ {
		must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(i, 1)}}))
	}
	must(s.Close())         // epoch 2
	s = openTest(t, dir, 0) // epoch 3
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(6, 2)}}))
	must(s.Close())         // epoch 4: badger has node 6 = 2
	s = openTest(t, dir, 0) // epoch 5
	defer s.Close()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 3)}})) // over epoch 1's first record
	must(s.SyncTree())

	// oldRecords counts epoch 1's records from off on in the image's log.
	oldRecords := func(img string, off int64) int {
		data, err := os.ReadFile(filepath.Join(img, metaDir, redoFile))
		must(err)
		recs, _, err := redoRecords(append(make([]byte, redoHeader), data[off:]...), 1)
		must(err)
		return len(recs)
	}
	reopen := func(img string, node2 ...byte) {
		t.Helper()
		r := openTest(t, img, 0)
		defer r.Close()
		want := map[uint64][]byte{1: {3}, 2: node2, 3: {1}, 4: {1}, 5: {1}, 6: {2}}
		for id, fills := range want {
			n, err := r.GetNode(id)
			if err != nil || !bytes.Contains(fills, n.Attrs[:1]) {
				t.Fatalf("node %d after the power loss: fill %v, %v; want one of %v (epoch 1's stale record replayed?)", id, n.Attrs[:1], err, fills)
			}
		}
	}

	// Everything is synced: the log's only epoch-5 record is followed by
	// epoch 1's records of nodes 2 to 6 (node 6 = 1 is stale).
	end := s.redo.offNow.Load()
	img := t.TempDir()
	must(s.CrashImage(img))
	if n := oldRecords(img, end); n != 5 {
		t.Fatalf("the image's log holds %d of epoch 1's records past the write position, want 5 (as on the disk)", n)
	}
	reopen(img, 1)

	// An unsynced record: dropped (zeros), the older records after it kept.
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(2, 3)}}))
	synced, off := s.redo.durable.Load(), s.redo.offNow.Load()
	if synced != end || off <= synced {
		t.Fatalf("test premise: synced end %d, write position %d (was %d)", synced, off, end)
	}
	img = t.TempDir()
	must(s.CrashImage(img))
	data, err := os.ReadFile(filepath.Join(img, metaDir, redoFile))
	must(err)
	if !bytes.Equal(data[synced:off], make([]byte, off-synced)) {
		t.Fatal("the unsynced record is in the image's log")
	}
	if n := oldRecords(img, off); n != 4 {
		t.Fatalf("the image's log holds %d of epoch 1's records past the write position, want 4", n)
	}
	reopen(img, 1, 3) // badger may have node 2 = 3
}

// TestPowerLossAfterFailedLogSync: a failed fdatasync of the redo log fails
// the log for good, as a failed checkpoint does. After a failed fdatasync
// Linux may mark the pages clean unwritten, so a later sync that succeeds
// would report records durable that replay never reaches (the lost one in
// the middle ends it). The old log took the next change and sync as if
// nothing had happened.
func TestPowerLossAfterFailedLogSync(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 1)}}))
	must(s.SyncTree())
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(2, 1)}}))

	failLogSync(t, s) // redofail_test.go
	for what, err := range map[string]error{
		"an apply after it":   s.Apply(Mutation{PutNodes: []api.Node{smallNode(3, 1)}}),
		"a sync after it":     s.SyncTree(),
		"another apply after": s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 2)}}),
	} {
		if !errors.Is(err, errRedoFailed) || !strings.Contains(err.Error(), "remount") {
			t.Errorf("%s: %v; want the log's sticky error saying to remount", what, err)
		}
	}
}
