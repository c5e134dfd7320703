package cache

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"sync"
	"testing"

	"kumo/internal/chunk"
	"kumo/remote/api"
)

// TestSegmentFileWriteBehind: segments waiting for the writer read back,
// patch in place, drop, and reach the file by Sync and Close.
func TestSegmentFileWriteBehind(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	f, err := s.OpenSegmentFile(3, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64][]byte{}
	check := func(f *SegmentFile) {
		t.Helper()
		for i := int64(0); i < 460; i++ {
			p, ok, err := f.ReadSegment(i)
			w, wok := want[i]
			if err != nil || ok != wok || !bytes.Equal(p, w) {
				t.Fatalf("segment %d: %d bytes, ok=%v, err=%v; want %d bytes, ok=%v", i, len(p), ok, err, len(w), wok)
			}
		}
	}
	// More than pendMax whole segments: WriteSegment blocks until the
	// writer catches up, and every one reads back at any time.
	for i := int64(0); i < 3*pendMax; i++ {
		p := make([]byte, chunk.SegmentSize)
		rand.Read(p)
		want[i] = p
		if err := f.WriteSegment(i, p); err != nil {
			t.Fatal(err)
		}
		p[0] ^= 0xff // the file keeps a copy
		want[i] = append([]byte(nil), p...)
		want[i][0] ^= 0xff
	}
	check(f)

	// PatchSegment: absent segments are left alone.
	if ok, err := f.PatchSegment(200, 0, []byte("x"), 1); ok || err != nil {
		t.Fatalf("patch of an absent segment: %v %v", ok, err)
	}
	if ok, err := f.PatchSegment(0, 10, []byte("too long"), 12); err == nil {
		t.Fatalf("patch beyond its length accepted (ok=%v)", ok)
	}
	// Small appends to one segment, 4 KiB each, as a 4 KiB write() loop does.
	var tail []byte
	for k := 0; k < 16; k++ {
		p := bytes.Repeat([]byte{byte(k + 1)}, 4096)
		tail = append(tail, p...)
		if k == 0 {
			err = f.WriteSegment(300, p)
		} else {
			var ok bool
			ok, err = f.PatchSegment(300, k*4096, p, (k+1)*4096)
			if !ok {
				t.Fatalf("append %d: segment absent", k)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	want[300] = tail
	// Once full, it is written without waiting for a Sync.
	idle := func() {
		f.wmu.Lock()
		for f.running {
			f.wcond.Wait()
		}
		f.wmu.Unlock()
	}
	idle()
	if p, ok, err := f.readSlot(nil, 300); err != nil || !ok || !bytes.Equal(p, tail) {
		t.Fatalf("full segment not written: ok=%v err=%v", ok, err)
	}
	// A partial segment alone in the queue is held back in memory, patched
	// there, and written when another segment comes or at a flush.
	if err := f.WriteSegment(301, []byte("partial")); err != nil {
		t.Fatal(err)
	}
	want[301] = []byte("partial")
	idle()
	if _, ok, err := f.readSlot(nil, 301); ok || err != nil {
		t.Fatalf("partial segment written at once: ok=%v err=%v", ok, err)
	}
	if ok, err := f.PatchSegment(301, 7, []byte(" and more"), 16); !ok || err != nil {
		t.Fatalf("patch of a held segment: %v %v", ok, err)
	}
	want[301] = []byte("partial and more")
	// Zero-extend and cut.
	if ok, err := f.PatchSegment(301, 20, []byte("!"), 21); !ok || err != nil {
		t.Fatalf("zero-extending patch: %v %v", ok, err)
	}
	want[301] = append([]byte("partial and more\x00\x00\x00\x00"), '!')
	// Cut, then extend: the cut bytes must not come back.
	if ok, err := f.PatchSegment(5, 0, nil, 3); !ok || err != nil {
		t.Fatalf("cutting patch: %v %v", ok, err)
	}
	if ok, err := f.PatchSegment(5, 10, []byte("x"), 11); !ok || err != nil {
		t.Fatalf("extending patch: %v %v", ok, err)
	}
	want[5] = append(want[5][:3:3], make([]byte, 7)...)
	want[5] = append(want[5], 'x')
	check(f)
	if err := f.WriteSegment(302, []byte("next")); err != nil {
		t.Fatal(err)
	}
	want[302] = []byte("next")
	idle()
	if p, ok, err := f.readSlot(nil, 301); err != nil || !ok || !bytes.Equal(p, want[301]) {
		t.Fatalf("held segment not written after the next one came: ok=%v err=%v", ok, err)
	}

	// Sync writes everything: a patch then reads the slot from the file.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.wmu.Lock()
	n := len(f.pend)
	f.wmu.Unlock()
	if n != 0 {
		t.Fatalf("%d segments still in memory after Sync", n)
	}
	if ok, err := f.PatchSegment(6, 100, []byte("patched on disk"), chunk.SegmentSize); !ok || err != nil {
		t.Fatalf("patch of a segment in the file: %v %v", ok, err)
	}
	copy(want[6][100:], "patched on disk")
	check(f)

	// Drop forgets waiting segments too.
	for i := int64(400); i < 450; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 1000+int(i))
		want[i] = p
		if err := f.WriteSegment(i, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Drop(420); err != nil {
		t.Fatal(err)
	}
	for i := int64(420); i < 450; i++ {
		delete(want, i)
	}
	check(f)
	if pres, _ := f.Present(); len(pres) != len(want) {
		t.Fatalf("Present: %d segments, want %d", len(pres), len(want))
	}

	// Close writes what waits; the reopened file has it all.
	if err := f.WriteSegment(410, []byte("last")); err != nil {
		t.Fatal(err)
	}
	want[410] = []byte("last")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, 0)
	defer s.Close()
	f, err = s.OpenSegmentFile(3, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	check(f)
}

// TestSegmentFileWriteError: a failed background write loses nothing: the
// segment stays readable in memory, Sync reports the failure, writes turn
// synchronous, and once the file can be written again Sync succeeds.
func TestSegmentFileWriteError(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteSegment(0, []byte("synced")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Make every pwrite fail: swap in a read-only descriptor.
	ro, err := os.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	rw := f.f
	f.f = ro
	f.mu.Unlock()

	if err := f.WriteSegment(1, []byte("waiting")); err != nil {
		t.Fatalf("write-behind reported the write early: %v", err)
	}
	if err := f.Sync(); err == nil {
		t.Fatal("Sync succeeded although the segment could not be written")
	}
	if p, ok, err := f.ReadSegment(1); err != nil || !ok || string(p) != "waiting" {
		t.Fatalf("failed segment not readable: %q %v %v", p, ok, err)
	}
	if err := f.WriteSegment(2, []byte("refused")); err == nil {
		t.Fatal("write after a failed background write did not report the failure")
	}
	if err := f.Sync(); err == nil {
		t.Fatal("second Sync succeeded")
	}

	f.mu.Lock()
	f.f = rw
	f.mu.Unlock()
	ro.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("Sync once writable again: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f, err = s.OpenSegmentFile(4, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if pres, _ := f.Present(); !reflect.DeepEqual(pres, []int64{0, 1}) {
		t.Fatalf("segments after recovery: %v", pres)
	}
	if p, ok, err := f.ReadSegment(1); err != nil || !ok || string(p) != "waiting" {
		t.Fatalf("segment 1 after recovery: %q %v %v", p, ok, err)
	}
}

// TestSegmentFileWriteBehindConcurrent: writers, patchers, readers and Syncs
// at once (run with -race).
func TestSegmentFileWriteBehindConcurrent(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(5, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := int64(0); w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := int64(0); k < 200; k++ {
				i := w*1000 + k%50 // rewrites of the same segments
				p := bytes.Repeat([]byte{byte(k)}, 512)
				if err := f.WriteSegment(i, p); err != nil {
					errs <- err
					return
				}
				if ok, err := f.PatchSegment(i, 512, []byte{byte(k + 1)}, 513); !ok || err != nil {
					errs <- err
					return
				}
				got, ok, err := f.ReadSegment(i)
				if err != nil || !ok || len(got) != 513 || got[0] != byte(k) || got[512] != byte(k+1) {
					errs <- err
					t.Errorf("segment %d after write %d: %d bytes, ok=%v", i, k, len(got), ok)
					return
				}
				if k%64 == 0 {
					if err := f.Sync(); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	for w := int64(0); w < 4; w++ {
		for k := int64(150); k < 200; k++ {
			i := w*1000 + k%50
			got, ok, err := f.readSlot(nil, i)
			if err != nil || !ok || len(got) != 513 || got[0] != byte(k) || got[512] != byte(k+1) {
				t.Fatalf("segment %d in the file: %d bytes, ok=%v, err=%v", i, len(got), ok, err)
			}
		}
	}
}

// TestSegmentFileWriteback: the writer starts writeback every
// writebackEvery bytes, over the range written since the last start.
func TestSegmentFileWriteback(t *testing.T) {
	var f SegmentFile
	per := int64(writebackEvery / slotStride)
	var starts [][2]int64
	for i := int64(0); i < 3*per; i++ {
		j := i
		if i == 5 {
			j = 1000 // out of order: widens the range
		}
		if from, to, ok := f.noteWrittenLocked(j); ok {
			starts = append(starts, [2]int64{from, to})
		}
	}
	if len(starts) != 2 {
		t.Fatalf("writeback started %d times, want 2: %v", len(starts), starts)
	}
	if starts[0] != [2]int64{0, 1001 * slotStride} {
		t.Fatalf("first range %v", starts[0])
	}
	if starts[1][0] != (per+1)*slotStride {
		t.Fatalf("second range %v", starts[1])
	}
}

// TestSegmentFileSyncErrorSticks: an error a background fdatasync took from
// the kernel is reported by every later Sync.
func TestSegmentFileSyncErrorSticks(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(6, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.WriteSegment(0, []byte("x")); err != nil {
		t.Fatal(err)
	}
	f.backgroundSync()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.syncMu.Lock()
	f.syncErr = errors.New("injected writeback error")
	f.syncMu.Unlock()
	for range 2 {
		if err := f.Sync(); err == nil {
			t.Fatal("Sync succeeded after a failed background fdatasync")
		}
	}
}

// TestSegKeyIsHKDF: the per-file key from the purpose key's extract done once
// is FORMAT's HKDF-SHA256(purpose, "kumo segment file v1" || node || gen): a
// segment sealed by one opens with the other, and the ciphertexts match.
func TestSegKeyIsHKDF(t *testing.T) {
	purpose := bytes.Repeat([]byte{0x5a}, 32)
	const node, gen = 0x0102030405060708, 9
	info := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte("kumo segment file v1"), node), gen)
	k, err := hkdf.Key(sha256.New, purpose, nil, string(info), 32)
	if err != nil {
		t.Fatal(err)
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	want, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := segFileAEAD(newSegKey(purpose), node, gen)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, want.NonceSize())
	plain := []byte("the same key, derived in one step or two")
	if a, b := want.Seal(nil, nonce, plain, nil), got.Seal(nil, nonce, plain, nil); !bytes.Equal(a, b) {
		t.Fatalf("sealed differently:\n%x\n%x", a, b)
	}
	other, err := segFileAEAD(newSegKey(purpose), node, gen+1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(nil, nonce, want.Seal(nil, nonce, plain, nil), nil); err == nil {
		t.Fatal("another generation's key opened the segment")
	}
}

// TestRemoveSegmentFilesSyncsOnce: a batch of files whose deletion records
// are not yet durable costs one sync of the log, not one a file (an rm -rf
// removes thousands a second), and every file of the batch goes.
func TestRemoveSegmentFilesSyncsOnce(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	var files []*SegmentFile
	for i := range 20 {
		f, err := s.OpenSegmentFile(uint64(1000+i), 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.WriteSegment(0, bytes.Repeat([]byte{byte(i)}, 4096)); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if list, _ := s.SegmentFiles(); len(list) != len(files) {
		t.Fatalf("%d files written, %d listed", len(files), len(list))
	}
	// The records that make the files unneeded, not yet synced.
	if err := s.Apply(Mutation{PutNodes: []api.Node{smallNode(999, 1)}}); err != nil {
		t.Fatal(err)
	}
	if s.redo.offNow.Load() <= s.redo.durable.Load() {
		t.Fatal("the log has nothing unsynced: the test would not see a sync")
	}
	runs := func() uint64 {
		s.redo.sync.mu.Lock()
		defer s.redo.sync.mu.Unlock()
		return s.redo.sync.started
	}
	before := runs()
	if err := s.RemoveSegmentFiles(files); err != nil {
		t.Fatal(err)
	}
	if n := runs() - before; n != 1 {
		t.Errorf("removing %d files synced the log %d times, want 1", len(files), n)
	}
	if list, _ := s.SegmentFiles(); len(list) != 0 {
		t.Fatalf("after RemoveSegmentFiles: %v left", list)
	}
}
