package cache

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"kumo/internal/chunk"
)

// dirUsage is what a directory tree really occupies on disk (like du).
func dirUsage(t testing.TB, dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			total += diskUsage(fi)
		}
		return nil
	})
	return total
}

func chunkID(i int) string { return fmt.Sprintf("%064x", 0xc0ffee000000+i) }

// sealedSeg is fake sealed bytes that say which chunk and segment they are.
func sealedSeg(id string, seg, n int) []byte {
	p := make([]byte, n)
	rand.Read(p)
	copy(p, id[:16])
	binary.BigEndian.PutUint32(p[16:], uint32(seg))
	return p
}

func TestChunkCacheBudget(t *testing.T) {
	const budget = 24 << 20
	dir := t.TempDir()
	s := openTest(t, dir, budget)
	segLen := chunk.SegmentSize + chunk.Overhead
	segsPerChunk := chunk.Size / chunk.SegmentSize
	var written int64
	var last []string
	for c := 0; written < 3*budget; c++ {
		id := chunkID(c)
		// write each chunk in a few calls, as read-ahead would
		for first := 0; first < segsPerChunk; first += 16 {
			var segs [][]byte
			for i := first; i < first+16; i++ {
				segs = append(segs, sealedSeg(id, i, segLen))
			}
			if err := s.PutSegments(id, first, segs); err != nil {
				t.Fatal(err)
			}
			written += int64(16 * segLen)
		}
		// keep reading chunk 0 so it stays hot
		if _, ok := s.GetSegment(chunkID(0), 5); !ok {
			t.Fatalf("hot chunk 0 evicted after %d chunks", c)
		}
		last = append(last, id)
		if use := dirUsage(t, dir); use > budget+budget/10 {
			t.Fatalf("after %d MiB written, cache dir uses %d bytes > budget %d +10%%", written>>20, use, budget)
		}
	}
	st := s.Stats()
	use := dirUsage(t, dir)
	t.Logf("wrote %d MiB, dir uses %d KiB (badger %d KiB), stats %+v", written>>20, use>>10, dirUsage(t, filepath.Join(dir, metaDir))>>10, st)
	if st.Bytes > budget || st.Budget != budget {
		t.Fatalf("stats %+v over budget", st)
	}
	if st.Hits == 0 {
		t.Fatal("no hits counted")
	}
	// the most recent chunks survive, whole and correct
	for _, id := range append(last[len(last)-2:], chunkID(0)) {
		for i := 0; i < segsPerChunk; i++ {
			p, ok := s.GetSegment(id, i)
			if !ok || len(p) != segLen || !bytes.Equal(p[:16], []byte(id[:16])) || binary.BigEndian.Uint32(p[16:]) != uint32(i) {
				t.Fatalf("recent chunk %s seg %d: ok=%v", id[:16], i, ok)
			}
		}
	}
	// the oldest cold chunk is gone
	if _, ok := s.GetSegment(chunkID(1), 0); ok {
		t.Fatal("oldest cold chunk survived 3x budget of writes")
	}
	misses := s.Stats().Misses
	if misses == 0 {
		t.Fatal("no misses counted")
	}
	s.Close()

	// the index and LRU order survive a reopen, with a smaller budget
	s = openTest(t, dir, budget/2)
	defer s.Close()
	if use := dirUsage(t, dir); use > budget/2+budget/20 {
		t.Fatalf("after reopen with half budget: %d bytes", use)
	}
	if _, ok := s.GetSegment(chunkID(0), 5); !ok {
		t.Fatal("hot chunk lost on reopen")
	}
	if _, ok := s.GetSegment(last[len(last)-1], 63); !ok {
		t.Fatal("newest chunk lost on reopen")
	}
}

func TestChunkCacheSegments(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	id := chunkID(1)
	if _, ok := s.GetSegment(id, 0); ok {
		t.Fatal("hit on empty cache")
	}
	a, b := sealedSeg(id, 3, 100), sealedSeg(id, 4, maxCachedSeg)
	if err := s.PutSegments(id, 3, [][]byte{a, b}); err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int][]byte{3: a, 4: b, 2: nil, 5: nil, 0: nil} {
		p, ok := s.GetSegment(id, i)
		if ok != (want != nil) || !bytes.Equal(p, want) {
			t.Fatalf("seg %d: ok=%v", i, ok)
		}
	}
	for _, bad := range []struct {
		id    string
		first int
		segs  [][]byte
	}{
		{"../../etc/passwd", 0, [][]byte{a}},
		{id[:63], 0, [][]byte{a}},
		{id, -1, [][]byte{a}},
		{id, 64, [][]byte{a}},
		{id, 0, [][]byte{{}}},
		{id, 0, [][]byte{make([]byte, slotStride)}},
	} {
		if err := s.PutSegments(bad.id, bad.first, bad.segs); err == nil {
			t.Fatalf("PutSegments(%q, %d) accepted", bad.id, bad.first)
		}
	}
	if _, ok := s.GetSegment("../x", 0); ok {
		t.Fatal("bad id hit")
	}
	if err := s.ForgetChunk(id); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.GetSegment(id, 3); ok {
		t.Fatal("hit after ForgetChunk")
	}
	if st := s.Stats(); st.Budget != DefaultBudget {
		t.Fatalf("default budget: %+v", st)
	}
}

func TestChunkCacheConcurrent(t *testing.T) {
	s := openTest(t, t.TempDir(), 8<<20)
	defer s.Close()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				id := chunkID(i % 7)
				seg := (i * 7) % 64
				if err := s.PutSegments(id, seg, [][]byte{sealedSeg(id, seg, 30000)}); err != nil {
					t.Error(err)
					return
				}
				if p, ok := s.GetSegment(id, (i*5)%64); ok && (len(p) != 30000 || !bytes.Equal(p[:16], []byte(id[:16]))) {
					t.Error("wrong bytes")
					return
				}
			}
		}(w)
	}
	wg.Wait()
}

// TestChunkCacheIndexKnowsSlots: which slots hold data is known without
// reading for chunks written since the open, learnt by reading for older
// ones; AppendSegment appends to the caller's buffer.
func TestChunkCacheIndexKnowsSlots(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	id := chunkID(1)
	a := sealedSeg(id, 3, 1000)
	if err := s.PutSegments(id, 3, [][]byte{a}); err != nil {
		t.Fatal(err)
	}
	if !s.HasSegment(id, 3) || s.HasSegment(id, 4) || s.HasSegment(chunkID(2), 3) || s.HasSegment("../x", 3) {
		t.Fatal("HasSegment wrong after a put")
	}
	// A slot the index knows to be empty is a miss without reading the file:
	// a valid slot 4 written behind the cache's back is not seen.
	b := sealedSeg(id, 4, 2000)
	slot := make([]byte, cacheHeader+len(b))
	binary.BigEndian.PutUint32(slot, uint32(len(b)))
	binary.BigEndian.PutUint32(slot[4:], crc32.Checksum(b, castagnoli))
	copy(slot[cacheHeader:], b)
	f, err := os.OpenFile(filepath.Join(dir, "chunks", id), os.O_RDWR, 0)
	must(err)
	_, err = f.WriteAt(slot, 4*slotStride)
	must(err)
	must(f.Close())
	before := s.Stats().Misses
	if _, ok := s.GetSegment(id, 4); ok || s.Stats().Misses != before+1 {
		t.Fatal("slot known empty: read anyway, or miss not counted")
	}
	dst := []byte("prefix")
	p, ok := s.AppendSegment(dst, id, 3)
	if !ok || string(p[:6]) != "prefix" || !bytes.Equal(p[6:], a) {
		t.Fatalf("AppendSegment: ok=%v", ok)
	}
	must(s.Close())

	// Reopened: the slots are learnt from the file.
	s = openTest(t, dir, 0)
	defer s.Close()
	if !s.HasSegment(id, 3) || !s.HasSegment(id, 4) || s.HasSegment(id, 5) {
		t.Fatal("HasSegment wrong after reopening")
	}
	if p, ok := s.GetSegment(id, 3); !ok || !bytes.Equal(p, a) {
		t.Fatal("segment lost on reopen")
	}
	if p, ok := s.GetSegment(id, 4); !ok || !bytes.Equal(p, b) {
		t.Fatal("slot written behind the cache's back not found after reopening")
	}
	// A torn slot (bad CRC) is learnt as empty.
	f, err = os.OpenFile(filepath.Join(dir, "chunks", id), os.O_RDWR, 0)
	must(err)
	_, err = f.WriteAt([]byte{0xff}, 5*slotStride+cacheHeader+10)
	must(err)
	_, err = f.WriteAt([]byte{0, 0, 0, 100}, 5*slotStride)
	must(err)
	must(f.Close())
	if s.HasSegment(id, 5) {
		t.Fatal("torn slot counted as cached")
	}
}

// TestChunkCacheOpenFiles: chunk files stay open between accesses, at most
// maxOpenChunks of them; removed chunks and Close release them.
func TestChunkCacheOpenFiles(t *testing.T) {
	dir := t.TempDir()
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	base := fds()
	s := openTest(t, dir, 0)
	opened := fds() - base // badger's and the redo log's
	n := maxOpenChunks + 20
	for i := 0; i < n; i++ {
		id := chunkID(i)
		if err := s.PutSegments(id, 0, [][]byte{sealedSeg(id, 0, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := fds() - base - opened; got != maxOpenChunks {
		t.Fatalf("%d chunk files open, want %d", got, maxOpenChunks)
	}
	for i := 0; i < n; i++ {
		if _, ok := s.GetSegment(chunkID(i), 0); !ok {
			t.Fatalf("chunk %d: miss", i)
		}
	}
	must(s.ForgetChunk(chunkID(n - 1)))
	if got := fds() - base - opened; got != maxOpenChunks-1 {
		t.Fatalf("%d chunk files open after a forget, want %d", got, maxOpenChunks-1)
	}
	if _, err := os.Stat(filepath.Join(dir, "chunks", chunkID(n-1))); !os.IsNotExist(err) {
		t.Fatalf("forgotten chunk's file: %v", err)
	}
	must(s.Close())
	if got := fds() - base; got != 0 {
		t.Fatalf("%d files still open after Close", got)
	}
}
