package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// chunkRecord reads a chunk's record; nil if there is none.
func chunkRecord(t *testing.T, s *Server, acct, id string) *chunkRec {
	t.Helper()
	var c *chunkRec
	if err := s.db.View(func(tx *badger.Txn) (err error) { c, err = readChunk(tx, acct, id); return err }); err != nil {
		t.Fatal(err)
	}
	return c
}

// getRange GETs a chunk with a Range header and returns status and body.
func (u *user) getRange(id, rng string) (int, []byte) {
	u.e.t.Helper()
	req, _ := http.NewRequest("GET", u.e.url+"/v1/chunks/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+u.token)
	req.Header.Set("Range", rng)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		u.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		u.e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestSmallChunks: a chunk up to SmallChunkMax lives in the metadata store
// (no blob, no pending marker) and behaves like any other: whole and Range
// reads, idempotent re-upload, exact usage, GC, restart. One byte more goes
// to the blob store.
func TestSmallChunks(t *testing.T) {
	e := newEnv(t, localBlobs, nil)
	u := e.signup("small@example.com")
	small := randBytes(4<<10 + 16) // a 4 KiB file's sealed chunk
	id := randMAC()
	u.must("PUT", "/v1/chunks/"+id, small, nil)
	c := chunkRecord(t, e.s, u.id, id)
	if c == nil || !c.InDB || c.Size != int64(len(small)) || c.Sum != "" {
		t.Fatalf("record of a small chunk: %+v", c)
	}
	if _, err := e.s.blobs.Size(context.Background(), blobKey(u.id, id)); err == nil {
		t.Fatal("small chunk also written to the blob store")
	}
	var pend bool
	e.s.db.View(func(tx *badger.Txn) error { pend, _ = exists(tx, kPend(u.id, id)); return nil })
	if pend {
		t.Fatal("small chunk left a pending marker")
	}
	if a := u.chunkAccount(); a.QuotaUsed != int64(len(small)) {
		t.Fatalf("usage %d, want %d", a.QuotaUsed, len(small))
	}

	check := func() {
		t.Helper()
		var got []byte
		u.must("GET", "/v1/chunks/"+id, nil, &got)
		if !bytes.Equal(got, small) {
			t.Fatal("whole read differs")
		}
		n := len(small)
		for _, tc := range []struct {
			rng     string
			from, n int
		}{
			{"bytes=0-99", 0, 100},
			{"bytes=100-", 100, n - 100},
			{"bytes=-50", n - 50, 50},
			{"bytes=4000-999999", 4000, n - 4000},
			{fmt.Sprintf("bytes=%d-%d", n-1, n-1), n - 1, 1},
		} {
			st, body := u.getRange(id, tc.rng)
			if st != 206 || !bytes.Equal(body, small[tc.from:tc.from+tc.n]) {
				t.Errorf("range %s: %d, %d bytes", tc.rng, st, len(body))
			}
		}
		st, _ := u.getRange(id, fmt.Sprintf("bytes=%d-", n))
		if st != 416 {
			t.Errorf("range past the end: %d", st)
		}
	}
	check()

	// Idempotent: the same id again (even with other bytes) changes nothing.
	before := checkConsistent(t, e.s, u.id)
	u.must("PUT", "/v1/chunks/"+id, small, nil)
	u.must("PUT", "/v1/chunks/"+id, randBytes(100), nil)
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("re-upload changed state: %+v -> %+v", before, after)
	}
	check()

	// The threshold: SmallChunkMax bytes stay in the store, one more does not.
	at, over := randMAC(), randMAC()
	atData, overData := randBytes(DefaultSmallChunkMax), randBytes(DefaultSmallChunkMax+1)
	u.must("PUT", "/v1/chunks/"+at, atData, nil)
	u.must("PUT", "/v1/chunks/"+over, overData, nil)
	if c := chunkRecord(t, e.s, u.id, at); !c.InDB {
		t.Fatal("chunk of SmallChunkMax bytes went to the blob store")
	}
	if c := chunkRecord(t, e.s, u.id, over); c.InDB || c.Sum == "" {
		t.Fatalf("chunk over SmallChunkMax: %+v", c)
	}
	if n, err := e.s.blobs.Size(context.Background(), blobKey(u.id, over)); err != nil || n != int64(len(overData)) {
		t.Fatalf("big chunk's blob: %d %v", n, err)
	}
	total := int64(len(small) + len(atData) + len(overData))
	if a := u.chunkAccount(); a.QuotaUsed != total {
		t.Fatalf("usage %d, want %d", a.QuotaUsed, total)
	}

	// A restart keeps them.
	e.reopen()
	check()
	for cid, want := range map[string][]byte{at: atData, over: overData} {
		var got []byte
		u.must("GET", "/v1/chunks/"+cid, nil, &got)
		if !bytes.Equal(got, want) {
			t.Fatalf("chunk %s differs after restart", cid)
		}
	}
	checkConsistent(t, e.s, u.id)

	// Referenced, unlinked, collected: usage drops by exactly its size and
	// its bytes are gone.
	f := u.create(api.RootID, api.TypeFile, id, at)
	if n, _, err := e.s.RunGC(context.Background()); err != nil || n != 0 {
		t.Fatalf("gc within grace: %d %v", n, err)
	}
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: f.NameMAC}, nil)
	e.s.cfg.GCGrace = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	n, freed, err := e.s.RunGC(context.Background())
	if err != nil || n != 3 || freed != total {
		t.Fatalf("gc: %d chunks, %d bytes, %v; want 3, %d", n, freed, err, total)
	}
	if a := u.chunkAccount(); a.QuotaUsed != 0 {
		t.Fatalf("usage after gc %d", a.QuotaUsed)
	}
	for _, cid := range []string{id, at, over} {
		if chunkStored(t, e.s, u.id, cid) {
			t.Fatalf("collected chunk %s still stored", cid)
		}
		st, code := u.call("GET", "/v1/chunks/"+cid, nil, nil)
		expect(t, "collected chunk", st, code, 404, api.CodeNotFound)
	}
	checkConsistent(t, e.s, u.id)
	e.s.valueLogGC(context.Background())
}

// TestSmallChunkQuota: a small chunk that does not fit is refused and leaves
// nothing; one that fits exactly is stored.
func TestSmallChunkQuota(t *testing.T) {
	e := newEnv(t, localBlobs, func(c *Config) { c.DefaultQuota = 10000 })
	u := e.signup("smallq@example.com")
	u.putChunk(6000)
	before := checkConsistent(t, e.s, u.id)
	id := randMAC()
	st, code := u.call("PUT", "/v1/chunks/"+id, randBytes(4001), nil)
	expect(t, "over quota", st, code, 507, api.CodeQuota)
	if chunkStored(t, e.s, u.id, id) || chunkRecord(t, e.s, u.id, id) != nil {
		t.Fatal("refused chunk stored")
	}
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("refusal changed state: %+v -> %+v", before, after)
	}
	u.putChunk(4000 - int(u.metaUsed())) // the root's attributes count too
	if a := u.account(); a.QuotaUsed != 10000 {
		t.Fatalf("usage %d", a.QuotaUsed)
	}
	checkConsistent(t, e.s, u.id)
}

// TestSmallChunkStaleMarker: a big upload of an id crashed after writing its
// blob (marker, blob, no record); the id was then uploaded as a small chunk.
// The sweep deletes the orphan blob and the marker and keeps the chunk.
func TestSmallChunkStaleMarker(t *testing.T) {
	e := newEnv(t, localBlobs, func(c *Config) { c.GCGrace = time.Millisecond })
	u := e.signup("stale@example.com")
	id := randMAC()
	ctx := context.Background()
	if err := e.s.db.Update(func(tx *badger.Txn) error { return setJSON(tx, kPend(u.id, id), time.Now()) }); err != nil {
		t.Fatal(err)
	}
	if err := e.s.blobs.Put(ctx, blobKey(u.id, id), randBytes(100<<10)); err != nil {
		t.Fatal(err)
	}
	data := randBytes(3000)
	u.must("PUT", "/v1/chunks/"+id, data, nil)
	u.create(api.RootID, api.TypeFile, id)
	time.Sleep(5 * time.Millisecond)
	if n, err := e.s.sweepPending(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if _, err := e.s.blobs.Size(ctx, blobKey(u.id, id)); err == nil {
		t.Fatal("orphan blob kept")
	}
	var got []byte
	u.must("GET", "/v1/chunks/"+id, nil, &got)
	if !bytes.Equal(got, data) {
		t.Fatal("chunk changed")
	}
	checkConsistent(t, e.s, u.id)
}

// TestValueLogGC: the value log space of collected small chunks comes back
// once compactions have seen the deletions.
func TestValueLogGC(t *testing.T) {
	e := newEnv(t, localBlobs, func(c *Config) { c.SmallMemory = true }) // 16 MiB value log files
	u := e.signup("vlog@example.com")
	for range 300 { // 19 MiB: the first value log file fills up
		u.putChunk(DefaultSmallChunkMax)
	}
	e.s.cfg.GCGrace = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	if n, _, err := e.s.RunGC(context.Background()); err != nil || n != 300 {
		t.Fatalf("gc: %d %v", n, err)
	}
	first := filepath.Join(e.cfg.DataDir, "meta", "000001.vlog")
	if _, err := os.Stat(first); err != nil {
		t.Fatal(err)
	}
	// What time and writes do: memtables flush to level 0 (here at each
	// close), and enough level-0 tables get compacted, dropping the deleted
	// values and counting them as garbage of their value log file.
	e.s.cfg.GCGrace = time.Hour
	for range 6 {
		u.putChunk(100)
		e.reopen()
	}
	if err := e.s.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	// Compactions hand their discard counts to the value log asynchronously:
	// a GC run right after Flatten may not see them yet. (Under CI's load a
	// 10 s wait was once not enough; each try compacts again and the
	// failure lists the value log files.)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		e.s.valueLogGC(context.Background())
		if _, err := os.Stat(first); err != nil {
			break
		}
		if time.Now().After(deadline) {
			vlogs, _ := filepath.Glob(filepath.Join(e.cfg.DataDir, "meta", "*.vlog"))
			var sizes []string
			for _, v := range vlogs {
				if fi, err := os.Stat(v); err == nil {
					sizes = append(sizes, fmt.Sprintf("%s %d", filepath.Base(v), fi.Size()))
				}
			}
			t.Fatalf("the value log file of the collected chunks is still there after 30 s; value log files: %v", sizes)
		}
		if err := e.s.db.Flatten(1); err != nil {
			t.Fatal(err)
		}
	}
	checkConsistent(t, e.s, u.id)
}

// TestSmallChunkConcurrent: many uploaders of one account, some sending the
// same ids at once, run into the quota. Every acknowledged chunk reads back,
// every refused one left nothing, usage is exact.
func TestSmallChunkConcurrent(t *testing.T) {
	const quota = 200 << 10
	e := newEnv(t, localBlobs, func(c *Config) { c.DefaultQuota = quota })
	u := e.signup("conc-small@example.com")
	type put struct {
		id   string
		data []byte
	}
	var puts []put
	for i := range 120 {
		puts = append(puts, put{randMAC(), randBytes(1000 + i*37)})
	}
	var mu sync.Mutex
	acked := map[string][]byte{}
	refused := map[string]bool{}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w % 4; i < len(puts); i += 4 { // 4 workers send each id
				p := puts[i]
				st, code := u.call("PUT", "/v1/chunks/"+p.id, p.data, nil)
				mu.Lock()
				switch {
				case code == "":
					acked[p.id] = p.data
				case st == 507 && code == api.CodeQuota:
					refused[p.id] = true
				default:
					t.Errorf("PUT: %d %s", st, code)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(acked) == 0 || len(refused) == 0 {
		t.Fatalf("%d acked, %d refused: want both", len(acked), len(refused))
	}
	var used int64
	for id, data := range acked {
		var got []byte
		u.must("GET", "/v1/chunks/"+id, nil, &got)
		if !bytes.Equal(got, data) {
			t.Fatalf("chunk %s differs", id)
		}
		used += int64(len(data))
	}
	for id := range refused {
		if _, ok := acked[id]; !ok && chunkStored(t, e.s, u.id, id) {
			t.Fatalf("refused chunk %s stored", id)
		}
	}
	if a := u.chunkAccount(); a.QuotaUsed != used || used > quota {
		t.Fatalf("usage %d, acked chunks %d bytes, quota %d", a.QuotaUsed, used, quota)
	}
	checkConsistent(t, e.s, u.id)
	e.s.small.mu.Lock()
	defer e.s.small.mu.Unlock()
	if e.s.small.arriving != 0 || len(e.s.small.m) != 0 {
		t.Fatalf("after the uploads: %d arriving, %d queues", e.s.small.arriving, len(e.s.small.m))
	}
}

// TestSmallChunkReadOnly: a read-only account may upload a chunk it already
// has (idempotent), not a new one.
func TestSmallChunkReadOnly(t *testing.T) {
	e := newEnv(t, localBlobs, nil)
	u := e.signup("ro-small@example.com")
	data := randBytes(5000)
	id := randMAC()
	u.must("PUT", "/v1/chunks/"+id, data, nil)
	if err := e.s.SetQuota(u.email, 100); err != nil {
		t.Fatal(err)
	}
	u.must("PUT", "/v1/chunks/"+id, data, nil)
	st, code := u.call("PUT", "/v1/chunks/"+randMAC(), randBytes(10), nil)
	expect(t, "new chunk on a read-only account", st, code, 403, api.CodeReadOnly)
	checkConsistent(t, e.s, u.id)
}
