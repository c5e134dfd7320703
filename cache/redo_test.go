package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"kumo/remote/api"
)

// copyTree copies a directory (a snapshot of a closed store).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		return copyFileTo(p, to)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFileTo(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func smallNode(id uint64, fill byte) api.Node {
	return api.Node{ID: id, Type: api.TypeFile, Version: 1, Nlink: 1, Parent: api.RootID, Attrs: bytes.Repeat([]byte{fill}, 200)}
}

// smallFileMutation creates file i as the drive would: node 200+i with an
// entry under the root, a journal op and 4 KiB of inline data (byte i).
func smallFileMutation(i uint64) Mutation {
	return Mutation{
		PutNodes:   []api.Node{smallNode(200+i, byte(i))},
		PutEntries: []Entry{{Parent: api.RootID, NameMAC: mac(int(i)), Name: []byte{byte(i)}, Child: 200 + i}},
		Journal:    []api.BatchOp{op(int(i))},
		PutInline:  []InlineSegment{{Node: 200 + i, Gen: 1, Data: bytes.Repeat([]byte{byte(i)}, 4096)}},
	}
}

// TestRedoReplaysAfterPowerLoss simulates a power loss: badger's files are
// as they were at its last sync (a snapshot of a closed store), while the
// redo log holds what SyncTree made durable after that. Reopening must bring
// every synced mutation back, in order (a later delete wins over an earlier
// put), including the journal and inline data.
func TestRedoReplaysAfterPowerLoss(t *testing.T) {
	live := t.TempDir()
	s := openTest(t, live, 0)
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(100, 1)}}))
	must(s.Close())
	snap := t.TempDir()
	copyTree(t, live, snap) // badger as of its last sync

	s = openTest(t, live, 0)
	for i := uint64(0); i < 50; i++ {
		must(s.Apply(smallFileMutation(i)))
	}
	must(s.Apply(Mutation{DeleteNodes: []uint64{100, 210}, PutNodes: []api.Node{smallNode(211, 99)}}))
	must(s.SyncTree())
	// The power goes: badger's unsynced state is lost, the synced log is not.
	must(copyFileTo(filepath.Join(live, metaDir, redoFile), filepath.Join(snap, metaDir, redoFile)))
	s.Close()

	r := openTest(t, snap, 0)
	defer r.Close()
	if _, err := r.GetNode(100); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node 100 deleted after the snapshot: %v", err)
	}
	if _, err := r.GetNode(210); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node 210 deleted by the last mutation: %v", err)
	}
	if n, err := r.GetNode(211); err != nil || n.Attrs[0] != 99 {
		t.Fatalf("node 211 after replay: %v %v", n.Attrs[:1], err)
	}
	for i := uint64(0); i < 50; i++ {
		if i == 10 {
			continue
		}
		if _, err := r.GetNode(200 + i); err != nil && i != 11 {
			t.Fatalf("node %d lost: %v", 200+i, err)
		}
		e, err := r.Lookup(api.RootID, mac(int(i)))
		if err != nil || e.Child != 200+i {
			t.Fatalf("entry %d lost: %+v %v", i, e, err)
		}
		p, ok, err := r.GetInline(200+i, 1)
		if err != nil || !ok || !bytes.Equal(p, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("inline data of node %d lost: ok=%v err=%v", 200+i, ok, err)
		}
	}
	ops, err := r.Pending(100)
	if err != nil || len(ops) != 50 {
		t.Fatalf("journal after replay: %d ops, %v", len(ops), err)
	}
	for i, o := range ops {
		if o.Seq != uint64(i+1) {
			t.Fatalf("journal op %d has seq %d", i, o.Seq)
		}
	}
	// New ops continue the sequence, never reuse it.
	must(r.Apply(Mutation{Journal: []api.BatchOp{op(99)}}))
	ops, _ = r.Pending(100)
	if last := ops[len(ops)-1].Seq; last != 51 {
		t.Fatalf("next seq after replay = %d, want 51", last)
	}
}

// TestRedoTornTail: a record cut short (the power went during its write) and
// everything after it are ignored; the records before it are replayed.
func TestRedoTornTail(t *testing.T) {
	live := t.TempDir()
	s := openTest(t, live, 0)
	must(s.Close())
	snap := t.TempDir()
	copyTree(t, live, snap)
	s = openTest(t, live, 0)
	for i := uint64(1); i <= 3; i++ {
		must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(i, byte(i))}}))
	}
	must(s.SyncTree())
	log, err := os.ReadFile(filepath.Join(live, metaDir, redoFile))
	must(err)
	s.Close()
	// Find the third record and corrupt its last byte.
	off := redoHeader
	for i := 0; i < 2; i++ {
		off += redoRecHead + int(binary.BigEndian.Uint32(log[off:]))
	}
	end := off + redoRecHead + int(binary.BigEndian.Uint32(log[off:]))
	log[end-1] ^= 0xff
	must(os.WriteFile(filepath.Join(snap, metaDir, redoFile), log, 0o600))

	r := openTest(t, snap, 0)
	defer r.Close()
	for i := uint64(1); i <= 2; i++ {
		if _, err := r.GetNode(i); err != nil {
			t.Fatalf("node %d before the torn record lost: %v", i, err)
		}
	}
	if _, err := r.GetNode(3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node 3 of the torn record: %v, want not found", err)
	}
}

// TestRedoCheckpointWhenFull: far more writes than the log holds (1 MiB for
// a small budget) checkpoint as they go; all of it survives a reopen, and
// the log never grows.
func TestRedoCheckpointWhenFull(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 24<<20)
	big := bytes.Repeat([]byte{7}, 20<<10)
	for i := uint64(1); i <= 200; i++ { // ~4 MiB of records
		must(s.Apply(Mutation{PutInline: []InlineSegment{{Node: i, Gen: 1, Data: big}}, PutNodes: []api.Node{smallNode(i, 1)}}))
	}
	// A mutation bigger than the whole log is applied and made durable by a checkpoint.
	var m Mutation
	for i := uint64(1000); i < 1100; i++ {
		m.PutInline = append(m.PutInline, InlineSegment{Node: i, Gen: 1, Data: big})
	}
	must(s.Apply(m))
	must(s.SyncTree())
	must(s.Close())
	fi, err := os.Stat(filepath.Join(dir, metaDir, redoFile))
	must(err)
	if fi.Size() != redoSizeFor(24<<20) {
		t.Fatalf("redo log is %d bytes, want %d", fi.Size(), redoSizeFor(24<<20))
	}
	r := openTest(t, dir, 0) // default budget: the log is recreated at its bigger size
	defer r.Close()
	for _, i := range []uint64{1, 100, 200, 1000, 1099} {
		if p, ok, err := r.GetInline(i, 1); err != nil || !ok || !bytes.Equal(p, big) {
			t.Fatalf("inline %d: ok=%v err=%v", i, ok, err)
		}
	}
	fi, err = os.Stat(filepath.Join(dir, metaDir, redoFile))
	must(err)
	if fi.Size() != redoMaxSize {
		t.Fatalf("redo log is %d bytes after a budget change, want %d", fi.Size(), redoMaxSize)
	}
}

// TestRedoForeignFile: a file of the wrong kind where the log belongs is an
// error that says what to do, and nothing is changed.
func TestRedoForeignFile(t *testing.T) {
	dir := t.TempDir()
	must(os.MkdirAll(filepath.Join(dir, metaDir), 0o700))
	p := filepath.Join(dir, metaDir, redoFile)
	must(os.WriteFile(p, []byte("not a log"), 0o600))
	if s, err := Open(Options{Dir: dir, Key: testKey()}); err == nil {
		s.Close()
		t.Fatal("opened a store over a foreign redo log")
	}
	if b, _ := os.ReadFile(p); string(b) != "not a log" {
		t.Fatalf("foreign file changed: %q", b)
	}
}

func FuzzRedoRecords(f *testing.F) {
	payload := appendRedoEntry(appendRedoEntry(nil, redoSet, []byte("k"), []byte("v")), redoDelete, []byte("x"), nil)
	rec := make([]byte, redoRecHead)
	binary.BigEndian.PutUint32(rec, uint32(len(payload)))
	binary.BigEndian.PutUint32(rec[4:], redoSum(0, payload))
	f.Add(append(rec, payload...))
	f.Add([]byte{0, 0, 0, 3, 1, 2, 3, 4, 1, 1, 'k'})
	f.Fuzz(func(t *testing.T, body []byte) {
		data := append(make([]byte, redoHeader), body...)
		recs, segOps, err := redoRecords(data, 0)
		if err != nil {
			return
		}
		for _, r := range recs {
			for _, e := range r {
				if len(e.k) == 0 {
					t.Fatal("empty key accepted")
				}
			}
		}
		for _, o := range segOps {
			checkSegOp(t, o)
		}
	})
}

func FuzzRedoPayload(f *testing.F) {
	f.Add(appendRedoEntry(nil, redoSet, []byte("key"), []byte("value")))
	f.Add([]byte{2, 1, 'k'})
	f.Fuzz(func(t *testing.T, p []byte) {
		es, err := parseRedoPayload(p)
		if err != nil {
			return
		}
		var back []byte
		for _, e := range es {
			op := byte(redoSet)
			if e.del {
				op = redoDelete
			}
			back = appendRedoEntry(back, op, e.k, e.v)
		}
		if !bytes.Equal(back, p) {
			t.Fatalf("payload does not round-trip: %x -> %x", p, back)
		}
	})
}

// TestRedoVector pins the record format of docs/FORMAT.md.
func TestRedoVector(t *testing.T) {
	payload := appendRedoEntry(nil, redoSet, []byte("k"), []byte("v"))
	rec := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	rec = binary.BigEndian.AppendUint32(rec, redoSum(1, payload))
	rec = append(rec, payload...)
	if got := fmt.Sprintf("%x", rec); got != "0000000506faa50001016b0176" {
		t.Fatalf("record = %s", got)
	}
	if h := fmt.Sprintf("%x", redoHeaderBytes(1)[:12]); h != "4b554d4f5245444f00000001" {
		t.Fatalf("header = %s", h)
	}
}

// TestRedoEmptyAfterClose: a clean close leaves no record of the current
// epoch, so the next open replays nothing (a full log took most of a
// second to replay at mount).
func TestRedoEmptyAfterClose(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	for i := uint64(1); i <= 50; i++ {
		must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(i, 1)}}))
	}
	must(s.SyncTree())
	data, err := os.ReadFile(filepath.Join(dir, metaDir, redoFile))
	must(err)
	epoch, _ := parseRedoHeader(data)
	if recs, _, err := redoRecords(data, epoch); err != nil || len(recs) != 50 {
		t.Fatalf("before close: %d records, %v", len(recs), err)
	}
	must(s.Close())
	data, err = os.ReadFile(filepath.Join(dir, metaDir, redoFile))
	must(err)
	epoch, ok := parseRedoHeader(data)
	if recs, _, err := redoRecords(data, epoch); !ok || err != nil || len(recs) != 0 {
		t.Fatalf("after close: %d records of epoch %d (header ok %v), %v", len(recs), epoch, ok, err)
	}
	r := openTest(t, dir, 0)
	defer r.Close()
	if _, err := r.GetNode(50); err != nil {
		t.Fatalf("node 50 after reopen: %v", err)
	}
}

// TestRedoNewerVersion: a log whose header is whole (magic and CRC) but of
// another format version is not taken for a torn header and started over:
// the store does not open, and the file is unchanged.
func TestRedoNewerVersion(t *testing.T) {
	dir := t.TempDir()
	must(openTest(t, dir, 0).Close())
	p := filepath.Join(dir, metaDir, redoFile)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(err)
	h := redoHeaderBytes(7)
	binary.BigEndian.PutUint32(h[8:], redoVersion+1)
	binary.BigEndian.PutUint32(h[20:], crc32.Checksum(h[:20], redoCRC))
	_, err = f.WriteAt(h, 0)
	must(err)
	_, err = f.WriteAt([]byte("records of the newer format"), redoHeader)
	must(err)
	must(f.Close())
	before, err := os.ReadFile(p)
	must(err)
	if s, err := Open(Options{Dir: dir, Key: testKey()}); err == nil {
		s.Close()
		t.Fatal("opened a store over a redo log of another format version")
	} else if !strings.Contains(err.Error(), "format version") {
		t.Fatalf("error does not say why: %v", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("the log of another version was changed")
	}
}

// TestRedoTornHeaderKeptAside: a log whose header is unreadable is renamed
// aside (redo.log.damaged-<unix time>), not overwritten by the new log: if
// it was damaged rather than torn by a power loss, it holds the only copy
// of the changes fsync'd since the last checkpoint, which someone could
// still recover by hand. Before, createRedo replaced it. The error logged
// names the kept file.
func TestRedoTornHeaderKeptAside(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(3, 1)}}))
	must(s.SyncTree())
	dir := t.TempDir()
	must(s.CrashImage(dir)) // a power loss, with the record in the log
	p := filepath.Join(dir, metaDir, redoFile)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(err)
	_, err = f.WriteAt(bytes.Repeat([]byte{0x5a}, 24), 0) // and a damaged header
	must(err)
	must(f.Close())
	damaged, err := os.ReadFile(p)
	must(err)
	if recs, _, _ := redoRecords(damaged, s.redo.epochNow.Load()); len(recs) != 1 {
		t.Fatalf("test premise: the damaged log should hold the synced record, has %d", len(recs))
	}

	var logged bytes.Buffer
	var mu sync.Mutex
	r, err := Open(Options{Dir: dir, Key: testKey(), Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logged, mu: &mu}, nil))})
	must(err)
	defer r.Close()
	mu.Lock()
	out := logged.String()
	mu.Unlock()
	kept, err := filepath.Glob(p + ".damaged-*")
	must(err)
	if len(kept) != 1 {
		t.Fatalf("damaged logs kept: %v; want one", kept)
	}
	if b, err := os.ReadFile(kept[0]); err != nil || !bytes.Equal(b, damaged) {
		t.Fatalf("the kept file does not hold the damaged log's bytes (%v)", err)
	}
	if !strings.Contains(out, kept[0]) {
		t.Fatalf("the error logged does not name the kept file %s:\n%s", kept[0], out)
	}
	// The new log works.
	must(r.Apply(Mutation{PutNodes: []api.Node{smallNode(4, 1)}}))
	must(r.SyncTree())
	if b, err := os.ReadFile(p); err != nil || bytes.Equal(b, damaged) {
		t.Fatalf("no new log (%v)", err)
	}
}

// TestRedoMappingStaysSmall: records go into a mapping of the whole log, but
// the pages behind the write position are let go, so the log adds about
// redoMappedMax, and the range populated ahead (redoPopulate), to the
// process's resident memory, not its capacity. And what
// went through the mapping is in the file (read through a descriptor).
func TestRedoMappingStaysSmall(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	for i := range 20000 { // about 6 MiB of records
		must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(uint64(1000+i), byte(i))}}))
	}
	s.redo.appendMu.Lock()
	off, epoch := s.redo.off, s.redo.epoch
	s.redo.appendMu.Unlock()
	if off < 4<<20 {
		t.Fatalf("test premise: %d bytes of records in the log, want several MiB", off)
	}
	rss := mappingRSS(t, filepath.Join(dir, metaDir, redoFile))
	if want := int64(redoMappedMax + redoPopulate); rss > want+64<<10 {
		t.Fatalf("the redo log's mapping holds %d KiB resident after %d KiB of records, want at most about %d KiB", rss>>10, off>>10, want>>10)
	}
	b, err := os.ReadFile(filepath.Join(dir, metaDir, redoFile))
	must(err)
	recs, _, err := redoRecords(b, epoch)
	must(err)
	if len(recs) < 20000 {
		t.Fatalf("the file holds %d records of this epoch, want the 20000 appended", len(recs))
	}
}

// mappingRSS is the resident size of this process's mappings of path
// (/proc/self/smaps).
func mappingRSS(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	var rss int64
	in, found := false, false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && f[5] == path
			found = found || in
			continue
		}
		if in && len(f) == 3 && f[0] == "Rss:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			rss += kb << 10
		}
	}
	if !found {
		t.Fatalf("no mapping of %s in /proc/self/smaps", path)
	}
	return rss
}

// TestRedoMappingFaultIsAnError: a page of the log's mapping that cannot be
// had (here: the file cut short under it, as a disk error or a full
// copy-on-write file system would) makes the append fail with an error; the
// daemon does not die of the fault.
func TestRedoMappingFaultIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(1, 1)}}))
	must(os.Truncate(filepath.Join(dir, metaDir, redoFile), redoHeader))
	err := s.Apply(Mutation{PutNodes: []api.Node{smallNode(2, 2)}})
	if err == nil {
		t.Fatal("an append into a page past the file's end succeeded")
	}
	if !strings.Contains(err.Error(), "memory fault") {
		t.Fatalf("want the fault as the error, got %v", err)
	}
	_ = s.Close() // the log is failed: what Close says is not the point
}

// TestRedoSyncWritesLittle: an fsync's sync of the redo log writes back
// about what was appended since the last one, not the large folio holding
// it (a kernel that caches files in large folios, ext4 since Linux 6.16,
// made each fdatasync of a one-record append write 1 MiB). The process's
// write_bytes count each folio's size when it turns dirty.
func TestRedoSyncWritesLittle(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	const n = 200
	for i := range 20 { // badger's first pages turn dirty before the count
		must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(uint64(100+i), byte(i))}}))
	}
	must(s.SyncTree())
	before := writeBytes(t)
	for i := range n {
		must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(uint64(1000+i), byte(i))}}))
		must(s.SyncTree())
	}
	written := writeBytes(t) - before
	t.Logf("%d appends, each synced: %d KiB written", n, written>>10)
	if written == 0 {
		t.Log("nothing counted: a file system without dirty-page accounting (tmpfs); this run proves nothing")
	}
	limit := int64(n * 8 * os.Getpagesize()) // a few pages a sync, badger's pages besides
	if written > limit {
		t.Fatalf("%d synced appends of a few hundred bytes wrote %d KiB, want at most %d KiB (a few pages each)", n, written>>10, limit>>10)
	}
}

// writeBytes is this process's write_bytes (/proc/self/io).
func writeBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			must(err)
			return n
		}
	}
	t.Fatal("no write_bytes in /proc/self/io")
	return 0
}

// TestRedoFrequentSyncsPopulateNothing: when the log is synced after every
// few KiB (sqlite's commits), its pages are not made writable ahead: a sync
// would write them back unused and make them read-only again, so each page
// would turn dirty (and be written) twice. The process's write_bytes count
// each page as it turns dirty.
func TestRedoFrequentSyncsPopulateNothing(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	// badger's first pages turn dirty, and the syncs shrink the populate
	// range to none (it halves at each), before the count.
	for i := range 20 {
		must(s.Apply(smallFileMutation(uint64(i))))
		must(s.SyncTree())
	}
	const n = 800 // about 3.5 MiB of records, several 1 MiB ranges' worth
	start, _ := s.redo.mark()
	before := writeBytes(t)
	for i := range n {
		must(s.Apply(smallFileMutation(uint64(100 + i))))
		must(s.SyncTree())
	}
	written := writeBytes(t) - before
	end, _ := s.redo.mark()
	logged := end - start
	t.Logf("%d appends of %d KiB in all, each synced: %d KiB written", n, logged>>10, written>>10)
	if logged < 2*redoPopulate {
		t.Fatalf("test premise: %d KiB appended, want several populate ranges' worth (%d KiB each)", logged>>10, redoPopulate>>10)
	}
	if written == 0 {
		t.Log("nothing counted: a file system without dirty-page accounting (tmpfs); this run proves nothing")
	}
	// The log's pages once, its last page again at each sync, badger's
	// write of the same records, and a populate range's worth of slack
	// (each 1 MiB range populated costs that much).
	if limit := 2*logged + n*int64(os.Getpagesize()) + redoPopulate; written > limit {
		t.Fatalf("%d KiB appended, each append synced, wrote %d KiB: want at most %d KiB (pages made writable ahead are written twice)", logged>>10, written>>10, limit>>10)
	}
	// Appends that go on without syncs (an untar between the 5 s commits)
	// get the whole range ahead again.
	for i := range 400 {
		must(s.Apply(smallFileMutation(uint64(1000 + i))))
	}
	s.redo.appendMu.Lock()
	size, ahead := s.redo.popSize, s.redo.populated-s.redo.off
	s.redo.appendMu.Unlock()
	if size != redoPopulate || ahead <= 0 {
		t.Fatalf("after 400 appends without a sync: populate range %d KiB, %d KiB populated ahead; want %d KiB and some", size>>10, ahead>>10, redoPopulate>>10)
	}
}

// TestRedoPresyncsBadgerAsTheLogFills: badger's files are synced in the
// background at each quarter of the redo log's capacity, so the checkpoint
// at its end, which holds every change while it runs, has little left to
// write back; a checkpoint starts the count over.
func TestRedoPresyncsBadgerAsTheLogFills(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	part := s.redo.size / presyncParts
	waitPresyncs := func(want int64, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for s.presyncs.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d background syncs of badger, want %d", what, s.presyncs.Load(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	fill := func(until int64, from uint64) uint64 {
		for s.redo.offNow.Load() < until {
			must(s.Apply(smallFileMutation(from)))
			from++
		}
		return from
	}
	next := fill(part-part/8, 0)
	time.Sleep(100 * time.Millisecond)
	if n := s.presyncs.Load(); n != 0 {
		t.Fatalf("log under a quarter full: %d background syncs, want none", n)
	}
	next = fill(part, next)
	waitPresyncs(1, "log a quarter full")
	next = fill(2*part, next)
	waitPresyncs(2, "log half full")
	epoch := s.redo.epochNow.Load()
	for s.redo.epochNow.Load() == epoch { // the third quarter, then a checkpoint
		must(s.Apply(smallFileMutation(next)))
		next++
	}
	waitPresyncs(3, "log three quarters full")
	if n := s.presyncs.Load(); n != 3 { // none at the log's end: it checkpoints first
		t.Fatalf("one epoch: %d background syncs, want 3", n)
	}
	fill(part, next) // the new epoch's first quarter
	waitPresyncs(4, "the next epoch's log a quarter full")
}
