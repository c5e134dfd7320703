package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/meta"
	"kumo/remote/api"
)

const (
	// readAhead is how many chunks after the current one a sequential reader fetches.
	readAhead = 3
	// keptChunks is how many whole chunks fetched lately stay in memory
	// (4 MiB each, sealed, or opened for a shared folder's): a sequential
	// reader's current chunk and its read-ahead, for two readers. Their segments are served from there, not
	// read back from the chunk cache on disk.
	keptChunks = 2 * (readAhead + 1)
	// keptMax bounds the number of kept chunks, mostly small files' chunks
	// fetched by a directory's read-ahead (dirahead.go).
	keptMax = keptChunks + dirAheadFiles
	// keptFor is how long a kept chunk stays after its last use.
	keptFor = 10 * time.Second
	// maxFetches is how many fetches from the cloud run at once.
	maxFetches = 8
	// maxOpeners bounds the per-chunk key cache (about 1 KiB each): random
	// reads over a few GiB find their chunk's key there.
	maxOpeners = 1024
	// maxFreeChunkBufs is how many whole-chunk buffers wait for reuse: a
	// fresh 4 MiB buffer per fetch costs page faults and zeroing.
	maxFreeChunkBufs = 4
	// cacheQueue is how many segments fetched by random readers wait to be
	// written to the chunk cache; beyond, they are not cached.
	cacheQueue = 64
)

// fetcher reads base chunk segments: chunks kept in memory first, then the
// chunk cache, then the cloud, with concurrent requests for the same data
// merged. Data fetched from the cloud is handed to the readers first and
// written to the chunk cache after.
type fetcher struct {
	d        *Drive
	mu       sync.Mutex
	inflight map[string]*fetchCall // "ID" (whole chunk) or "ID/k" (one segment); kept until cached
	kept     []*fetchCall          // whole chunks fetched lately, least recently used first
	prune    *time.Timer           // drops kept chunks unused for keptFor
	openers  map[meta.ChunkRef]*chunk.Opener
	sem      chan struct{}
	bufs     sync.Pool // *[]byte, capacity chunk.SealedSegmentSize: see buf
	free     [][]byte  // whole-chunk buffers for reuse (see fetchCall.buf)
	toCache  chan cacheJob
}

// cacheJob is a fetched segment for the cache writer (see cacheLater).
type cacheJob struct {
	c   *fetchCall
	key string
}

type fetchCall struct {
	id    chunk.ID
	len   int // plaintext length of the chunk
	done  chan struct{}
	first int
	segs  [][]byte // sealed segments from first; plaintext ones if plain
	err   error
	op    *chunk.Opener // whole chunks: set before done
	used  time.Time     // kept chunks: last use, under fetcher.mu
	bad   bool          // failed authentication: not cached, not kept (under fetcher.mu)
	// buf is the reusable buffer segs point into, if any. It goes back to
	// fetcher.free when nothing holds the call any more: refs counts the
	// inflight entry, the kept list and each reader between getting the call
	// and opening its segment (under fetcher.mu).
	buf  []byte
	refs int
	// seg is the pooled buffer (fetcher.bufs) a one-segment fetch read its
	// answer into; it goes back to the pool like buf.
	seg *[]byte
	// plain says segs hold plaintext: a shared folder's chunk, opened whole
	// and checked against its id when fetched (checkShared), so readers
	// copy its segments instead of opening them a second time. Its sealed
	// segments, for the chunk cache only, are in sealed (their buffer
	// sealedBuf) until cache wrote them.
	plain     bool
	sealed    [][]byte
	sealedBuf []byte
}

// segment appends the plaintext of segment k of base chunk ci to dst.
func (f *fetcher) segment(ctx context.Context, node uint64, base []meta.ChunkRef, ci, k int, seq bool, dst []byte) ([]byte, error) {
	ref := base[ci]
	id := ref.ID.String()
	if seq && k == 0 {
		f.readAhead(base, ci)
	}
	if c, sealed := f.inMemory(ref, id, k); c != nil {
		f.d.reads.hits.Add(1)
		defer f.release(c)
		return f.open(node, c, ref, k, sealed, dst)
	}
	if p, ok := f.fromCache(node, ref, id, k, dst); ok {
		f.d.reads.hits.Add(1)
		return p, nil
	}
	f.d.reads.misses.Add(1)
	var c *fetchCall
	lead := false // this reader fetched the segment: it caches it once opened
	if seq && ci == 0 && k == 0 && isSmallBase(base) {
		go f.d.dirAhead(node)
	}
	switch {
	case seq:
		c = f.chunk(ref, true)
		f.readAhead(base, ci)
	case f.d.chunkKID(ref.ID) != meta.Home:
		c = f.chunk(ref, true) // checked against its id (chunk)
	default:
		c, lead = f.seg(ref, k)
	}
	defer f.release(c)
	sealed, err := f.wait(ctx, c, k)
	if err != nil {
		f.d.log.Warn("reading chunk from the cloud failed", "node", node, "chunk", id, "segment", k, "err", err)
		return nil, syscall.EIO
	}
	p, err := f.open(node, c, ref, k, sealed, dst)
	if lead {
		f.cacheLater(c, segKey(id, k)) // not if it failed authentication just now
	}
	return p, err
}

// open authenticates and decrypts a segment fetched from the cloud by c. A
// failure is EIO, and the chunk is dropped from memory and the chunk cache so
// that a later read fetches it again: c leaves inflight now, not once its
// cache step is over, or a read right after would join it and fail again.
func (f *fetcher) open(node uint64, c *fetchCall, ref meta.ChunkRef, k int, sealed, dst []byte) ([]byte, error) {
	if c.plain {
		return append(dst, sealed...), nil // checked against the chunk's id when fetched
	}
	op := c.op
	var err error
	if op == nil {
		op, err = f.opener(ref)
	}
	var p []byte
	if err == nil {
		p, err = op.OpenSegment(dst, k, sealed)
	}
	if err != nil {
		id := ref.ID.String()
		f.d.log.Error("chunk fails authentication", "node", node, "chunk", id, "segment", k, "err", err)
		f.mu.Lock()
		c.bad = true
		f.unkeepLocked(func(x *fetchCall) bool { return x == c })
		for _, key := range []string{id, segKey(id, c.first)} {
			if f.inflight[key] == c {
				delete(f.inflight, key)
				f.releaseLocked(c)
			}
		}
		f.mu.Unlock()
		_ = f.d.store.ForgetChunk(id)
		return nil, syscall.EIO
	}
	return p, nil
}

// inMemory returns segment k of chunk ref (hex id) if a finished fetch holds
// it: a kept chunk, or a fetch whose data is being written to the cache.
func (f *fetcher) inMemory(ref meta.ChunkRef, id string, k int) (*fetchCall, []byte) {
	has := func(c *fetchCall) bool {
		return c != nil && !c.bad && c.len == int(ref.Len) && k >= c.first && k-c.first < len(c.segs)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.kept) - 1; i >= 0; i-- {
		if c := f.kept[i]; c.id == ref.ID && has(c) {
			c.used = time.Now()
			if i != len(f.kept)-1 { // most recently used last
				f.kept = append(slices.Delete(f.kept, i, i+1), c)
			}
			c.refs++
			return c, c.segs[k-c.first]
		}
	}
	for _, key := range []string{id, segKey(id, k)} {
		c := f.inflight[key]
		if c == nil {
			continue
		}
		select {
		case <-c.done: // the answer is set and no longer written
		default:
			continue
		}
		if c.err == nil && has(c) {
			c.refs++
			return c, c.segs[k-c.first]
		}
	}
	return nil, nil
}

// fromCache reads segment k from the chunk cache into dst. A cached segment
// that fails authentication is dropped (a miss: the cloud is asked).
func (f *fetcher) fromCache(node uint64, ref meta.ChunkRef, id string, k int, dst []byte) ([]byte, bool) {
	bp := f.buf()
	defer f.bufs.Put(bp)
	sealed, ok := f.d.store.AppendSegment((*bp)[:0], id, k)
	if !ok {
		return nil, false
	}
	op, err := f.opener(ref)
	if err == nil {
		var p []byte
		if p, err = op.OpenSegment(dst, k, sealed); err == nil {
			return p, true
		}
	}
	f.d.log.Error("cached chunk segment fails authentication; refetching", "node", node, "chunk", id, "segment", k, "err", err)
	_ = f.d.store.ForgetChunk(id)
	return nil, false
}

// buf returns a buffer for a sealed or plain segment; give it back to f.bufs.
func (f *fetcher) buf() *[]byte {
	if bp, ok := f.bufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, chunk.SealedSegmentSize)
	return &b
}

// opener returns the segment opener of ref's chunk, derived once per chunk
// for a while (sequential reads from the cache open 64 segments per chunk).
func (f *fetcher) opener(ref meta.ChunkRef) (*chunk.Opener, error) {
	f.mu.Lock()
	op := f.openers[ref]
	f.mu.Unlock()
	if op != nil {
		return op, nil
	}
	op, err := f.d.chunkCipher(ref.ID).Opener(ref.ID, int(ref.Len))
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if f.openers == nil {
		f.openers = map[meta.ChunkRef]*chunk.Opener{}
	}
	if len(f.openers) >= maxOpeners {
		// Full: forget a quarter, whichever the map yields first (random).
		n := maxOpeners / 4
		for id := range f.openers {
			if n--; n < 0 {
				break
			}
			delete(f.openers, id)
		}
	}
	f.openers[ref] = op
	f.mu.Unlock()
	return op, nil
}

// readAhead starts fetching the chunks after ci that are neither in memory,
// nor being fetched, nor cached.
func (f *fetcher) readAhead(base []meta.ChunkRef, ci int) {
	for i := ci + 1; i <= ci+readAhead && i < len(base); i++ {
		r := base[i]
		if r.ID.IsZero() || r.Len <= 0 {
			continue
		}
		f.prefetch(r)
	}
}

// prefetch starts fetching chunk r in the background unless it is in
// memory, being fetched, or cached (its last segment is).
func (f *fetcher) prefetch(r meta.ChunkRef) {
	id := r.ID.String()
	if !f.known(r.ID, id) && !f.d.store.HasSegment(id, chunk.Segments(int(r.Len))-1) {
		f.chunk(r, false)
	}
}

// known reports a whole-chunk fetch of chunk cid (hex id) running, done or kept.
func (f *fetcher) known(cid chunk.ID, id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inflight[id] != nil {
		return true
	}
	for _, c := range f.kept {
		if c.id == cid {
			return true
		}
	}
	return false
}

func (f *fetcher) wait(ctx context.Context, c *fetchCall, k int) ([]byte, error) {
	select {
	case <-c.done:
	default:
		t := time.NewTimer(readTimeout)
		defer t.Stop()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, fmt.Errorf("no answer from the cloud within %s", readTimeout)
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	if k < c.first || k-c.first >= len(c.segs) {
		return nil, fmt.Errorf("segment %d not in the answer", k)
	}
	return c.segs[k-c.first], nil
}

// chunk starts (or joins) a whole-chunk fetch; a reader acquires the call
// (and releases it once it opened its segment).
func (f *fetcher) chunk(ref meta.ChunkRef, acquire bool) *fetchCall {
	id := ref.ID.String()
	plainLen := int(ref.Len)
	return f.start(id, ref, acquire, func(ctx context.Context, c *fetchCall) error {
		buf := f.chunkBuf(chunk.SealedSize(plainLen))
		b, err := f.d.chunks.GetChunkInto(ctx, id, 0, -1, buf)
		if err == nil && len(b) != chunk.SealedSize(plainLen) {
			err = fmt.Errorf("chunk %s: %d sealed bytes, want %d: %w", id, len(b), chunk.SealedSize(plainLen), chunk.ErrAuth)
		}
		var plain, plainBuf []byte
		if err == nil {
			plain, plainBuf, err = f.checkShared(ref, b)
		}
		buf = f.keepBuf(buf, b, err)
		if err != nil {
			return err
		}
		if plain == nil {
			c.buf, c.segs = buf, splitSegs(b, chunk.SealedSegmentSize)
			return nil
		}
		c.buf, c.segs, c.plain = plainBuf, splitSegs(plain, chunk.SegmentSize), true
		if f.d.cachesChunks() {
			c.sealed, c.sealedBuf = splitSegs(b, chunk.SealedSegmentSize), buf
		} else {
			f.recycle(buf)
		}
		return nil
	})
}

// splitSegs cuts b into segments of n bytes (the last one shorter).
func splitSegs(b []byte, n int) [][]byte {
	segs := make([][]byte, 0, (len(b)+n-1)/n)
	for off := 0; off < len(b); off += n {
		segs = append(segs, b[off:min(len(b), off+n)])
	}
	return segs
}

// checkShared checks a whole sealed chunk of a shared folder against its
// id. Every member of a generation holds its chunk keys, so the AEAD of a
// segment does not tell the owner's chunk from one a member sealed under
// the same id; the id, a keyed hash of the whole plaintext that the signed
// record names, does. So a shared folder's chunks are only ever fetched
// whole and checked here, never one segment alone. It returns the checked
// plaintext (nil for this account's own chunks), which readers use instead
// of opening the segments again, and the reusable buffer it is in, if any
// (see fetchCall.buf). On a mismatch nothing of the plaintext is returned.
func (f *fetcher) checkShared(ref meta.ChunkRef, sealed []byte) (plain, buf []byte, err error) {
	kid := f.d.chunkKID(ref.ID)
	if kid == meta.Home {
		return nil, nil, nil // only this account holds its keys
	}
	buf = f.chunkBuf(chunk.SealedSize(int(ref.Len))) // room for the plaintext
	plain, err = f.d.cipherOf(kid).Open(buf[:0], ref.ID, sealed)
	buf = f.keepBuf(buf, plain, err)
	if err != nil {
		return nil, nil, fmt.Errorf("chunk %s of a shared folder: %w", ref.ID, err)
	}
	return plain, buf, nil
}

// keptSize is the memory a kept chunk holds: its reusable 4 MiB buffer, or
// its segments.
func (c *fetchCall) keptSize() int {
	if c.buf != nil {
		return cap(c.buf)
	}
	if len(c.segs) > 0 {
		return cap(c.segs[0]) // the answer's buffer, which every segment shares
	}
	return 0
}

// chunkBuf returns a buffer for a whole sealed chunk of n bytes. A chunk of
// one segment (a small file) gets a buffer of its size, not a reused 4 MiB
// one: many of them are kept at once after a directory's read-ahead.
func (f *fetcher) chunkBuf(n int) []byte {
	if n <= chunk.SealedSegmentSize {
		return make([]byte, 0, n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.free); n > 0 {
		b := f.free[n-1]
		f.free = f.free[:n-1]
		return b
	}
	return make([]byte, 0, chunk.MaxSealedSize)
}

// inBuf says whether result, read or opened into buf's start, is in buf: a
// callee may return an empty result or one it allocated itself.
func inBuf(result, buf []byte) bool {
	return len(result) > 0 && cap(buf) > 0 && &result[0] == &buf[:1][0]
}

// keepBuf returns buf if result (err nil) is in it (see inBuf); otherwise it
// recycles buf and returns nil.
func (f *fetcher) keepBuf(buf, result []byte, err error) []byte {
	if err == nil && inBuf(result, buf) {
		return buf
	}
	f.recycle(buf)
	return nil
}

// recycle is recycleLocked for a caller not holding f.mu.
func (f *fetcher) recycle(b []byte) {
	f.mu.Lock()
	f.recycleLocked(b)
	f.mu.Unlock()
}

// recycleLocked keeps b for reuse. Caller holds f.mu.
func (f *fetcher) recycleLocked(b []byte) {
	if cap(b) == chunk.MaxSealedSize && len(f.free) < maxFreeChunkBufs {
		f.free = append(f.free, b[:0])
	}
}

// release ends a hold on c (see fetchCall.buf).
func (f *fetcher) release(c *fetchCall) {
	f.mu.Lock()
	f.releaseLocked(c)
	f.mu.Unlock()
}

func (f *fetcher) releaseLocked(c *fetchCall) {
	c.refs--
	if c.refs == 0 && c.buf != nil {
		f.recycleLocked(c.buf)
		c.buf, c.segs = nil, nil
	}
	if c.refs == 0 && c.seg != nil {
		f.bufs.Put(c.seg)
		c.seg, c.segs = nil, nil
	}
}

// seg runs (or joins) a one-segment fetch; a running whole-chunk fetch is
// joined instead. A new fetch (lead) runs in the caller's goroutine and is
// over when seg returns; the caller then calls cache.
func (f *fetcher) seg(ref meta.ChunkRef, k int) (c *fetchCall, lead bool) {
	id := ref.ID.String()
	f.mu.Lock()
	if c := f.inflight[id]; c != nil {
		c.refs++
		f.mu.Unlock()
		return c, false
	}
	f.mu.Unlock()
	key := segKey(id, k)
	c, lead = f.join(key, ref, true)
	if lead {
		// Run by the reader itself: a random read waits for nothing else,
		// so a hand-off to another goroutine would only add latency. It
		// ends within readTimeout; an interrupted read waits for it too.
		f.run(c, key, func(ctx context.Context, c *fetchCall) error {
			off, n := chunk.SegmentRange(int(ref.Len), k)
			bp := f.buf() // the in-process cloud reads its blob straight into it
			b, err := f.d.chunks.GetChunkInto(ctx, id, int64(off), int64(n), (*bp)[:0])
			if err != nil || !inBuf(b, *bp) {
				f.bufs.Put(bp)
				bp = nil
			}
			if err != nil {
				return err
			}
			c.first, c.segs, c.seg = k, [][]byte{b}, bp
			return nil
		}, readTimeout)
	}
	return c, lead
}

func segKey(id string, k int) string { return fmt.Sprintf("%s/%d", id, k) }

// start runs fn once per key: the answer goes to every waiter as soon as it
// is there, then to the chunk cache; until it is cached the call stays in
// inflight, so readers find it in memory meanwhile. A new call runs in the
// background.
func (f *fetcher) start(key string, ref meta.ChunkRef, acquire bool, fn fetchFunc) *fetchCall {
	c, isNew := f.join(key, ref, acquire)
	if isNew {
		go func() {
			if f.run(c, key, fn, time.Minute) {
				f.cache(c, key)
			}
		}()
	}
	return c
}

// fetchFunc fetches sealed segments into c: first, segs and buf.
type fetchFunc func(context.Context, *fetchCall) error

// join returns the call of key, creating it (isNew) if there is none; with
// acquire, held by the caller.
func (f *fetcher) join(key string, ref meta.ChunkRef, acquire bool) (c *fetchCall, isNew bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c = f.inflight[key]; c == nil {
		if f.sem == nil {
			f.sem = make(chan struct{}, maxFetches)
		}
		c = &fetchCall{id: ref.ID, len: int(ref.Len), done: make(chan struct{}), refs: 1} // held by inflight
		f.inflight[key] = c
		isNew = true
	}
	if acquire {
		c.refs++
	}
	return c, isNew
}

// run fetches c within timeout and hands the answer out; then, if ok, cache
// must be called (the call stays in inflight until then).
func (f *fetcher) run(c *fetchCall, key string, fn fetchFunc, timeout time.Duration) (ok bool) {
	f.sem <- struct{}{}
	ctx, cancel := context.WithTimeout(f.d.ctx, timeout)
	c.err = fn(ctx, c)
	cancel()
	<-f.sem
	if c.err != nil {
		if errors.Is(c.err, api.ErrUnavailable) {
			f.d.noteErr(c.err)
		}
		f.forget(c, key)
		close(c.done)
		return false
	}
	f.d.noteOnline()
	if len(key) == api.HexIDLen { // a whole chunk
		c.op, _ = f.d.chunkCipher(c.id).Opener(c.id, c.len) // the length was checked against the answer
		f.mu.Lock()
		f.keep(c)
		f.mu.Unlock()
	}
	close(c.done)
	return true
}

// cache writes what c fetched to the chunk cache (unless it failed
// authentication), then forgets the call. It is called after run: a fetch
// that failed is forgotten already.
func (f *fetcher) cache(c *fetchCall, key string) {
	if c.err != nil {
		return
	}
	f.mu.Lock()
	bad := c.bad
	if !bad {
		c.refs++ // segs stay valid while written, even if a reader drops c meanwhile (open)
	}
	f.mu.Unlock()
	segs := c.segs
	if c.plain {
		segs = c.sealed // never the plaintext
	}
	if !bad && f.d.cachesChunks() && len(segs) > 0 {
		if err := f.d.store.PutSegments(key[:api.HexIDLen], c.first, segs); err != nil {
			f.d.log.Warn("caching chunk", "chunk", key, "err", err)
		}
	}
	f.mu.Lock()
	if !bad {
		f.releaseLocked(c)
	}
	if c.sealedBuf != nil { // only cache reads the sealed form
		f.recycleLocked(c.sealedBuf)
	}
	c.sealed, c.sealedBuf = nil, nil
	f.mu.Unlock()
	f.forget(c, key)
}

// cacheLater hands c to the cache writer, a goroutine that writes what random
// readers fetched to the chunk cache after they got it. When it is behind,
// the segment is not cached.
func (f *fetcher) cacheLater(c *fetchCall, key string) {
	f.mu.Lock()
	if f.toCache == nil {
		f.toCache = make(chan cacheJob, cacheQueue)
		go f.cacheWriter(f.toCache)
	}
	ch := f.toCache
	f.mu.Unlock()
	select {
	case ch <- cacheJob{c, key}:
	default:
		f.forget(c, key)
	}
}

func (f *fetcher) cacheWriter(ch chan cacheJob) {
	for {
		select {
		case j := <-ch:
			f.cache(j.c, j.key)
		case <-f.d.ctx.Done():
			return
		}
	}
}

// forget removes c from inflight (a newer call of the same key stays).
func (f *fetcher) forget(c *fetchCall, key string) {
	f.mu.Lock()
	if f.inflight[key] == c {
		delete(f.inflight, key)
		f.releaseLocked(c)
	}
	f.mu.Unlock()
}

// cachesChunks says whether chunk data read from or uploaded to the cloud
// goes to the chunk cache: only with a remote cloud. The embedded cloud's
// chunks are on this machine already, and reading one back from it
// (in-process, its blob file kept open) costs about what a chunk-cache hit
// does: a second copy would double the disk writes and space for nothing.
// Random reads still avoid coming back for a segment: its rest goes to the
// page cache (pagecache.go).
func (d *Drive) cachesChunks() bool { return !d.chunks.InProcess() }

// keep adds a whole chunk to the kept ones, dropping the least recently used
// beyond keptChunks full chunks' worth of memory or keptMax chunks. Caller
// holds f.mu.
func (f *fetcher) keep(c *fetchCall) {
	c.used = time.Now()
	f.unkeepLocked(func(x *fetchCall) bool { return x.id == c.id })
	c.refs++
	f.kept = append(f.kept, c)
	size := 0
	for _, x := range f.kept {
		size += x.keptSize()
	}
	n := 0
	for ; len(f.kept)-n > keptMax || size > keptChunks*chunk.MaxSealedSize; n++ {
		size -= f.kept[n].keptSize()
		f.releaseLocked(f.kept[n])
	}
	if n > 0 {
		clear(f.kept[:n])
		f.kept = f.kept[n:]
	}
	if f.prune == nil {
		f.prune = time.AfterFunc(keptFor, f.pruneKept)
	}
}

// pruneKept drops the kept chunks unused for keptFor, so an idle drive does
// not hold them.
func (f *fetcher) pruneKept() {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.unkeepLocked(func(c *fetchCall) bool { return now.Sub(c.used) >= keptFor })
	f.prune = nil
	if len(f.kept) > 0 {
		f.prune = time.AfterFunc(keptFor, f.pruneKept)
	} else {
		f.free = nil // idle: the spare chunk buffers go too
	}
}

// unkeepLocked drops the kept chunks drop says. Caller holds f.mu.
func (f *fetcher) unkeepLocked(drop func(*fetchCall) bool) {
	f.kept = slices.DeleteFunc(f.kept, func(c *fetchCall) bool {
		if drop(c) {
			f.releaseLocked(c)
			return true
		}
		return false
	})
}
