package cache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"kumo/internal/chunk"
	"kumo/remote/api"
)

// fsyncFile is what the drive's fsync does with a file's segment layer: the
// layer's Sync, its record, and the tree's sync. It returns the device
// flushes it made.
func fsyncFile(t *testing.T, s *Store, f *SegmentFile, node uint64, fill byte) int64 {
	t.Helper()
	before := s.Flushes()
	must(f.Sync())
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(node, fill)}}))
	must(s.SyncTree())
	return s.Flushes() - before
}

// TestFsyncSmallDataOneFlush: an fsync of a file with little unsynced data
// costs one device flush (its data goes into the redo log with its record);
// before, it was two (the segment file, then the log), three for a new file
// (its directory too). A big write still syncs the file itself, and an fsync
// with nothing new costs none.
func TestFsyncSmallDataOneFlush(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(5, 1)
	must(err)
	defer f.Close()
	// A background sync (the 5 s commit) may land in a window: least of 3.
	least := int64(-1)
	for try := int64(0); try < 3; try++ {
		must(f.WriteSegment(try, segPattern(5, try, 4096)))
		must(f.WriteSegment(10+try, segPattern(5, 10+try, chunk.SegmentSize)))
		if n := fsyncFile(t, s, f, 5, byte(try)); least < 0 || n < least {
			least = n
		}
	}
	if least != 1 {
		t.Fatalf("fsync after a small write made %d device flushes, want 1", least)
	}
	if n := fsyncFile(t, s, f, 5, 9); n != 1 {
		t.Fatalf("fsync with nothing written made %d device flushes, want 1 (the record only)", n)
	}
	before := s.Flushes()
	must(f.Sync())
	must(s.SyncTree())
	if n := s.Flushes() - before; n != 0 {
		t.Fatalf("Sync and SyncTree with nothing new made %d device flushes, want 0", n)
	}
	// Big: the file is synced in place (and ends its logged data), then the log.
	for i := int64(20); i < 40; i++ {
		must(f.WriteSegment(i, segPattern(5, i, chunk.SegmentSize)))
	}
	if n := fsyncFile(t, s, f, 5, 10); n < 2 {
		t.Fatalf("fsync after a 1.25 MiB write made %d device flushes, want the file's and the log's", n)
	}
	if f.logMode() || f.unsynced.Load() {
		t.Fatal("after a big fsync the file should be synced and out of the log")
	}
}

// readAll checks segments of (node, gen) in a reopened store: want[i] nil
// means absent.
func checkSegments(t *testing.T, s *Store, node uint64, want map[int64][]byte) {
	t.Helper()
	f, err := s.OpenSegmentFile(node, 1)
	must(err)
	defer f.Close()
	for i, w := range want {
		p, ok, err := f.ReadSegment(i)
		if err != nil {
			t.Fatalf("node %d segment %d after the power loss: %v", node, i, err)
		}
		if w == nil {
			if ok {
				t.Fatalf("node %d segment %d after the power loss: present (%d bytes), want absent", node, i, len(p))
			}
			continue
		}
		if !ok || !bytes.Equal(p, w) {
			t.Fatalf("node %d segment %d after the power loss: ok=%v, %d bytes, not the synced content", node, i, ok, len(p))
		}
	}
}

// TestPowerLossLoggedFsync: data fsync'd through the redo log survives a
// power loss that drops everything unsynced (the segment file's slots and,
// the file being new, the file itself; the log's tail), byte for byte;
// what was written after it is dropped, and the store opens as one state.
func TestPowerLossLoggedFsync(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(6, 1)
	must(err)
	defer f.Close()
	a0, a2 := segPattern(6, 0, chunk.SegmentSize), segPattern(6, 2, 1000)
	must(f.WriteSegment(0, a0))
	must(f.WriteSegment(2, a2))
	if n := fsyncFile(t, s, f, 6, 1); n != 1 {
		t.Fatalf("test premise: the fsync should go through the log (1 flush), made %d", n)
	}
	// After the fsync: rewritten, extended, not synced.
	must(f.WriteSegment(0, segPattern(6, 100, 50)))
	must(f.WriteSegment(5, segPattern(6, 5, 500)))
	must(f.Flush())
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(6, 2)}}))
	img := t.TempDir()
	must(s.CrashImage(img))
	if _, err := os.Stat(filepath.Join(img, dirtyDir, segFileName(6, 1))); err == nil {
		t.Fatal("test premise: the new file's directory entry was never synced, the image should not have it")
	}

	r := openTest(t, img, 0)
	defer r.Close()
	checkSegments(t, r, 6, map[int64][]byte{0: a0, 2: a2, 5: nil})
	if n, err := r.GetNode(6); err != nil || n.Attrs[0] != 1 {
		t.Fatalf("node after the power loss: %v (want the fsync'd record)", err)
	}
}

// TestPowerLossLoggedThenSynced: once a file whose data is in the log is
// synced in place (a big fsync, the periodic commit), the log's older
// copies of its slots must not be replayed over newer synced data; nor
// must a truncate or a removal be undone by them.
func TestPowerLossLoggedThenSynced(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	// Logged, then a big fsync rewrote segment 0.
	f, err := s.OpenSegmentFile(7, 1)
	must(err)
	defer f.Close()
	must(f.WriteSegment(0, segPattern(7, 0, 100)))
	must(f.WriteSegment(3, segPattern(7, 3, 100)))
	fsyncFile(t, s, f, 7, 1)
	b0 := segPattern(7, 50, chunk.SegmentSize)
	must(f.WriteSegment(0, b0))
	for i := int64(10); i < 30; i++ {
		must(f.WriteSegment(i, segPattern(7, i, chunk.SegmentSize)))
	}
	fsyncFile(t, s, f, 7, 2)
	// Logged, then SyncAll (the periodic commit) synced newer data.
	g, err := s.OpenSegmentFile(8, 1)
	must(err)
	defer g.Close()
	must(g.WriteSegment(0, segPattern(8, 0, 100)))
	fsyncFile(t, s, g, 8, 1)
	g0 := segPattern(8, 60, 2000)
	must(g.WriteSegment(0, g0))
	must(g.Flush())
	must(s.SyncAll())
	// Logged, then truncated: segments 1 and 2 cut, the size saved first.
	h, err := s.OpenSegmentFile(9, 1)
	must(err)
	defer h.Close()
	h0 := segPattern(9, 0, chunk.SegmentSize)
	for i := int64(0); i < 3; i++ {
		must(h.WriteSegment(i, segPattern(9, i, chunk.SegmentSize)))
	}
	fsyncFile(t, s, h, 9, 1)
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(9, 2)}}))
	must(s.SyncTree())
	must(h.Drop(1))
	// Logged, then removed (its data uploaded).
	k, err := s.OpenSegmentFile(10, 1)
	must(err)
	must(k.WriteSegment(0, segPattern(10, 0, 100)))
	fsyncFile(t, s, k, 10, 1)
	must(k.Remove())
	img := t.TempDir()
	must(s.CrashImage(img))

	r := openTest(t, img, 0)
	defer r.Close()
	checkSegments(t, r, 7, map[int64][]byte{0: b0, 3: segPattern(7, 3, 100), 29: segPattern(7, 29, chunk.SegmentSize)})
	checkSegments(t, r, 8, map[int64][]byte{0: g0})
	checkSegments(t, r, 9, map[int64][]byte{0: h0, 1: nil, 2: nil})
	files, err := r.SegmentFiles()
	must(err)
	for _, sf := range files {
		if sf == [2]uint64{10, 1} {
			t.Fatal("a removed segment file came back with the log's replay")
		}
	}
}

// TestCloseOfLoggedFileLogsItsData: while the log holds data of a file, a
// close (Flush) puts what it hands over into the log too, before the record
// the caller applies next: otherwise a power loss that kept that record but
// not the later sync of the file would get the older logged data replayed
// under it.
func TestCloseOfLoggedFileLogsItsData(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(11, 1)
	must(err)
	defer f.Close()
	must(f.WriteSegment(0, segPattern(11, 0, 100)))
	fsyncFile(t, s, f, 11, 1)
	must(f.WriteSegment(0, segPattern(11, 1, 3000)))
	release := s.DataOrder()
	must(f.Flush())
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(11, 2)}, AfterData: true}))
	release()
	data, err := os.ReadFile(filepath.Join(dir, metaDir, redoFile))
	must(err)
	_, ops, err := redoRecords(data, s.redo.epochNow.Load())
	must(err)
	var slots []int
	for _, o := range ops {
		if o.op == redoSegSlot && o.node == 11 {
			slots = append(slots, len(o.slot))
		}
	}
	if len(slots) != 2 || slots[1] != segHeader+3000+segTag {
		t.Fatalf("logged slots of the file: %v, want the fsync's and the close's (3000 bytes)", slots)
	}
}

// TestRedoSegmentTornAndTampered: a torn segment record (power lost during
// its write) is ignored, with everything after it; one that passes its CRC
// but whose sealed slot does not authenticate is not written, with a log
// line; the store opens either way and reads no corrupt segment.
func TestRedoSegmentTornAndTampered(t *testing.T) {
	for _, c := range []string{"torn", "tampered"} {
		t.Run(c, func(t *testing.T) {
			s := openTest(t, t.TempDir(), 0)
			f, err := s.OpenSegmentFile(12, 1)
			must(err)
			must(f.WriteSegment(0, segPattern(12, 0, 5000)))
			fsyncFile(t, s, f, 12, 1)
			img := t.TempDir()
			must(s.CrashImage(img))
			f.Close()
			s.Close()
			p := filepath.Join(img, metaDir, redoFile)
			data, err := os.ReadFile(p)
			must(err)
			off := int64(redoHeader)
			for {
				n := int64(binary.BigEndian.Uint32(data[off:]))
				if isSegOp(data[off+redoRecHead]) {
					break
				}
				off += redoRecHead + n
			}
			n := int64(binary.BigEndian.Uint32(data[off:]))
			rec := data[off+redoRecHead : off+redoRecHead+n]
			if c == "torn" {
				clear(rec[n/2:])
			} else {
				rec[n-3] ^= 1 // in the slot's tag
				epoch, _ := parseRedoHeader(data)
				binary.BigEndian.PutUint32(data[off+4:], redoSum(epoch, rec))
			}
			must(os.WriteFile(p, data, 0o600))
			var logged bytes.Buffer
			var mu sync.Mutex
			r, err := Open(Options{Dir: img, Key: testKey(), Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logged, mu: &mu}, nil))})
			must(err)
			defer r.Close()
			checkSegments(t, r, 12, map[int64][]byte{0: nil})
			mu.Lock()
			out := logged.String()
			mu.Unlock()
			if got := strings.Contains(out, "does not authenticate"); got != (c == "tampered") {
				t.Fatalf("log line about the slot that does not authenticate: %v, want %v; log:\n%s", got, c == "tampered", out)
			}
		})
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestLoggedFsyncAcrossCheckpoints: with a small log (small budget) the
// log fills with fsync'd data and checkpoints; each checkpoint syncs the
// files whose data it held first, so everything fsync'd survives a power
// loss, and the file's newest fsync'd content is what comes back.
func TestLoggedFsyncAcrossCheckpoints(t *testing.T) {
	s := openTest(t, t.TempDir(), 24<<20) // 1 MiB log
	defer s.Close()
	f, err := s.OpenSegmentFile(13, 1)
	must(err)
	defer f.Close()
	want := map[int64][]byte{}
	logged := 0
	for round := 0; round < 40; round++ {
		i := int64(round % 7)
		p := segPattern(13, int64(round), chunk.SegmentSize-round)
		must(f.WriteSegment(i, p))
		want[i] = p
		if fsyncFile(t, s, f, 13, byte(round)) == 1 {
			logged++
		}
	}
	if logged < 20 {
		t.Fatalf("only %d of 40 fsyncs went through the log", logged)
	}
	// Logged, then the tree's records fill the log: its checkpoint must
	// sync the file before the new epoch voids the logged copy.
	p := segPattern(13, 99, 777)
	must(f.WriteSegment(2, p))
	want[2] = p
	if n := fsyncFile(t, s, f, 13, 99); n != 1 {
		t.Fatalf("test premise: the last fsync should go through the log, made %d flushes", n)
	}
	epoch := s.redo.epochNow.Load()
	big := bytes.Repeat([]byte{7}, 20<<10)
	for i := uint64(1); s.redo.epochNow.Load() == epoch; i++ {
		must(s.Apply(Mutation{PutInline: []InlineSegment{{Node: 1000 + i, Gen: 1, Data: big}}}))
	}
	img := t.TempDir()
	must(s.CrashImage(img))
	r := openTest(t, img, 24<<20)
	defer r.Close()
	checkSegments(t, r, 13, want)
}

func checkSegOp(t *testing.T, o segOp) {
	t.Helper()
	if !isSegOp(o.op) || o.i < 0 || o.i > maxSegIndex {
		t.Fatalf("bad op accepted: %+v", o)
	}
	if o.op == redoSegSlot && (len(o.slot) < segHeader+segTag || len(o.slot) > segHeader+chunk.SegmentSize+segTag) {
		t.Fatalf("slot of %d bytes accepted", len(o.slot))
	}
}

// FuzzSegPayload: the segment entries of the redo log are read from disk;
// whatever parses re-encodes to the same bytes (one meaning, one encoding).
func FuzzSegPayload(f *testing.F) {
	slot := make([]byte, segHeader+10+segTag)
	slot[3] = 11
	f.Add(appendSegOp(nil, segOp{op: redoSegSlot, node: 1, gen: 2, i: 3, slot: slot}))
	f.Add(appendSegOp(appendSegOp(nil, segOp{op: redoSegDrop, node: 1, gen: 2, i: 9}), segOp{op: redoSegClean, node: 1, gen: 2}))
	f.Add(appendSegOp(nil, segOp{op: redoSegGone, node: 1, gen: 2}))
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x80})
	f.Fuzz(func(t *testing.T, p []byte) {
		ops, err := parseSegPayload(p)
		if err != nil {
			return
		}
		var back []byte
		for _, o := range ops {
			checkSegOp(t, o)
			back = appendSegOp(back, o)
		}
		if !bytes.Equal(back, p) {
			t.Fatalf("re-encoded %x, read %x", back, p)
		}
	})
}

// TestRedoSegVector pins the segment entries' format of docs/FORMAT.md.
func TestRedoSegVector(t *testing.T) {
	payload := appendSegOp(nil, segOp{op: redoSegDrop, node: 1, gen: 2, i: 3})
	rec := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	rec = binary.BigEndian.AppendUint32(rec, redoSum(1, payload))
	rec = append(rec, payload...)
	if got := fmt.Sprintf("%x", rec); got != "00000012ab4a2562040000000000000001000000000000000203" {
		t.Fatalf("record = %s", got)
	}
}

// TestLoggedFsyncConcurrent: files fsync'd at once from several goroutines,
// with the periodic commit and checkpoints (a 1 MiB log) running between
// them: every file's last fsync'd content survives a power loss.
func TestLoggedFsyncConcurrent(t *testing.T) {
	s := openTest(t, t.TempDir(), 24<<20)
	defer s.Close()
	const files, rounds = 4, 25
	want := make([]map[int64][]byte, files)
	var wg sync.WaitGroup
	for n := range files {
		want[n] = map[int64][]byte{}
		f, err := s.OpenSegmentFile(uint64(20+n), 1)
		must(err)
		defer f.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				i := int64(r % 3)
				p := segPattern(uint64(20+n), int64(r), 1000+r*2000)
				must(f.WriteSegment(i, p))
				must(f.Sync())
				must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(uint64(20+n), byte(r))}}))
				must(s.SyncTree())
				want[n][i] = p
				if r%10 == 9 {
					must(f.Drop(2))
					delete(want[n], 2)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			must(s.SyncAll())
		}
	}()
	wg.Wait()
	<-done
	img := t.TempDir()
	must(s.CrashImage(img))
	r := openTest(t, img, 24<<20)
	defer r.Close()
	for n := range files {
		w := want[n]
		if _, ok := w[2]; !ok {
			w[2] = nil
		}
		checkSegments(t, r, uint64(20+n), w)
	}
}
