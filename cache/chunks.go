package cache

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"kumo/internal/chunk"
	"kumo/remote/api"
)

// The chunk cache keeps sealed segments (already encrypted by the chunk format)
// in one sparse file per chunk under chunks/, segment i at offset i*slotStride:
//
//	be32 length | be32 CRC-32C of the data | sealed segment bytes
//
// A zero length is a never-written slot. The CRC only catches torn writes after
// a crash (a miss, refetched); authenticity comes from the chunk format. The
// index (allocated size, access time, which slots hold data) is in memory,
// rebuilt at open from the files; access times are persisted lazily as file
// mtimes (Sync, Close, and once a minute), so reads never write. Which slots
// hold data is known for chunks written since the open and learnt slot by slot
// for older ones, so a miss in a known chunk costs no file access.
const (
	cacheHeader  = 8
	maxCachedSeg = slotStride - cacheHeader
	maxChunkSegs = (chunk.Size + chunk.SegmentSize - 1) / chunk.SegmentSize
	// maxOpenChunks is how many chunk files stay open between reads and
	// writes (an open and a close cost as much as reading a cached segment).
	maxOpenChunks = 128
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type centry struct {
	id      string
	size    int64 // bytes allocated on disk
	atime   time.Time
	touched bool // atime not yet persisted
	writers int  // PutSegments in flight: not evictable
	elem    *list.Element
	// have says which slots hold data, for the slots whose bit in checked is
	// set; other slots (of files from before the open) must be read to know.
	have, checked uint64
	puts          uint64 // PutSegments started: a slot read older than a put says nothing

	// The chunk's file while open (see file); under chunkCache.mu.
	f        *os.File
	fusers   int           // goroutines using f: it is not closed under them
	openElem *list.Element // in chunkCache.open while f is set
	gone     bool          // removed from the index: close f once unused
}

type chunkCache struct {
	dir, metaDir string
	budget       int64
	log          *slog.Logger
	bufs         sync.Pool

	mu         sync.Mutex
	idx        map[string]*centry
	lru        *list.List // front: most recently used
	open       *list.List // entries whose file is open, front: most recently used
	chunkBytes int64
	metaBytes  int64
	metaAt     time.Time
	warned     bool

	hits, misses atomic.Uint64
}

// diskUsage is what a file really occupies (allocated blocks).
func diskUsage(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

func openChunkCache(dir, metaDir string, budget int64, log *slog.Logger) (*chunkCache, error) {
	c := &chunkCache{dir: dir, metaDir: metaDir, budget: budget, log: log, idx: map[string]*centry{}, lru: list.New(), open: list.New()}
	c.bufs.New = func() any { b := make([]byte, slotStride); return &b }
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cache: open chunk cache: %w", err)
	}
	var all []*centry
	for _, de := range ents {
		name := de.Name()
		if !api.ValidHexID(name) || !de.Type().IsRegular() {
			os.RemoveAll(filepath.Join(dir, name)) // leftovers are ours to clean
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // raced with a removal
		}
		all = append(all, &centry{id: name, size: diskUsage(fi), atime: fi.ModTime()})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].atime.Before(all[j].atime) })
	for _, e := range all {
		e.elem = c.lru.PushFront(e)
		c.idx[e.id] = e
		c.chunkBytes += e.size
	}
	c.refreshMeta()
	c.maybeEvict()
	return c, nil
}

func (c *chunkCache) path(id string) string { return filepath.Join(c.dir, id) }

// refreshMeta measures badger's directory (it counts against the budget).
func (c *chunkCache) refreshMeta() {
	var total int64
	filepath.WalkDir(c.metaDir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			total += diskUsage(fi)
		}
		return nil
	})
	c.mu.Lock()
	c.metaBytes = total
	c.metaAt = time.Now()
	c.mu.Unlock()
}

func validSeg(id string, seg int) bool {
	return api.ValidHexID(id) && seg >= 0 && seg < maxChunkSegs
}

// get appends the sealed bytes of segment seg of chunk id to dst.
func (c *chunkCache) get(dst []byte, id string, seg int) ([]byte, bool) {
	if !validSeg(id, seg) {
		c.misses.Add(1)
		return nil, false
	}
	bit := uint64(1) << seg
	c.mu.Lock()
	e := c.idx[id]
	absent := e == nil || e.checked&bit != 0 && e.have&bit == 0
	var puts uint64
	if !absent {
		e.atime = time.Now()
		e.touched = true
		c.lru.MoveToFront(e.elem)
		puts = e.puts
	}
	c.mu.Unlock()
	if absent {
		c.misses.Add(1)
		return nil, false
	}
	p, ok := c.readSlot(dst, e, seg, puts)
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	return p, true
}

// has reports whether segment seg of chunk id is cached, reading the slot
// only if the index does not know yet.
func (c *chunkCache) has(id string, seg int) bool {
	if !validSeg(id, seg) {
		return false
	}
	bit := uint64(1) << seg
	c.mu.Lock()
	e := c.idx[id]
	if e == nil || e.checked&bit != 0 {
		ok := e != nil && e.have&bit != 0
		c.mu.Unlock()
		return ok
	}
	puts := e.puts
	c.mu.Unlock()
	_, ok := c.readSlot(nil, e, seg, puts)
	return ok
}

// readSlot appends the data of slot seg of e's file to dst and records in
// the index whether the slot holds data, unless a put began since puts was
// taken (the slot may have been filled after it was read).
func (c *chunkCache) readSlot(dst []byte, e *centry, seg int, puts uint64) ([]byte, bool) {
	f, err := c.file(e, false)
	if err != nil {
		return nil, false // evicted meanwhile
	}
	defer c.release(e)
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	n, err := f.ReadAt(*bp, int64(seg)*slotStride)
	if err != nil && !errors.Is(err, io.EOF) {
		c.log.Warn("cache: read cached segment", "chunk", e.id, "seg", seg, "err", err)
		return nil, false
	}
	data, ok := parseCacheSlot((*bp)[:n])
	c.mu.Lock()
	if c.idx[e.id] == e && e.puts == puts {
		bit := uint64(1) << seg
		e.checked |= bit
		if ok {
			e.have |= bit
		} else {
			e.have &^= bit
		}
	}
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	return append(dst, data...), true
}

// parseCacheSlot returns the data of a chunk cache slot, ok=false if the slot
// is empty, short or torn.
func parseCacheSlot(slot []byte) ([]byte, bool) {
	if len(slot) < cacheHeader {
		return nil, false
	}
	n := binary.BigEndian.Uint32(slot)
	if n == 0 || n > maxCachedSeg || int(n) > len(slot)-cacheHeader {
		return nil, false
	}
	data := slot[cacheHeader : cacheHeader+int(n)]
	if crc32.Checksum(data, castagnoli) != binary.BigEndian.Uint32(slot[4:]) {
		return nil, false
	}
	return data, true
}

func (c *chunkCache) put(id string, first int, sealed [][]byte) error {
	if !api.ValidHexID(id) {
		return fmt.Errorf("cache: put segments: bad chunk id %q", id)
	}
	if first < 0 || first+len(sealed) > maxChunkSegs {
		return fmt.Errorf("cache: put segments %d+%d of %s: out of range", first, len(sealed), id)
	}
	for i, p := range sealed {
		if len(p) == 0 || len(p) > maxCachedSeg {
			return fmt.Errorf("cache: put segment %d of %s: %d bytes", first+i, id, len(p))
		}
	}
	if len(sealed) == 0 {
		return nil
	}
	c.mu.Lock()
	e := c.idx[id]
	if e == nil {
		e = &centry{id: id, checked: ^uint64(0)} // a new file: every slot is known (empty)
		e.elem = c.lru.PushFront(e)
		c.idx[id] = e
	} else {
		c.lru.MoveToFront(e.elem)
	}
	e.atime = time.Now()
	e.writers++
	e.puts++
	c.mu.Unlock()

	size, written, err := c.writeSlots(e, first, sealed)

	c.mu.Lock()
	e.writers--
	if size >= 0 {
		c.chunkBytes += size - e.size
		e.size = size
	}
	bits := (uint64(1)<<written - 1) << first
	e.have |= bits
	e.checked |= bits
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.maybeEvict()
	return nil
}

// writeSlots writes the slots and returns the file's allocated size (-1 if
// unknown) and how many slots from first were written.
func (c *chunkCache) writeSlots(e *centry, first int, sealed [][]byte) (int64, int, error) {
	id := e.id
	f, err := c.file(e, true)
	if err != nil {
		return -1, 0, fmt.Errorf("cache: put segments of %s: %w", id, err)
	}
	defer c.release(e)
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	var werr error
	written := 0
	for i, p := range sealed {
		buf := (*bp)[:cacheHeader+len(p)]
		binary.BigEndian.PutUint32(buf, uint32(len(p)))
		binary.BigEndian.PutUint32(buf[4:], crc32.Checksum(p, castagnoli))
		copy(buf[cacheHeader:], p)
		if _, err := f.WriteAt(buf, int64(first+i)*slotStride); err != nil {
			werr = fmt.Errorf("cache: put segment %d of %s: %w", first+i, id, err)
			break
		}
		written++
	}
	fi, err := f.Stat()
	if err != nil {
		return -1, written, errors.Join(werr, fmt.Errorf("cache: put segments of %s: %w", id, err))
	}
	return diskUsage(fi), written, werr
}

// forget drops a chunk from the cache (e.g. one that failed authentication).
func (c *chunkCache) forget(id string) error {
	if !api.ValidHexID(id) {
		return fmt.Errorf("cache: forget: bad chunk id %q", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.idx[id]
	if e == nil {
		return nil
	}
	return c.removeLocked(e)
}

func (c *chunkCache) removeLocked(e *centry) error {
	c.lru.Remove(e.elem)
	delete(c.idx, e.id)
	c.chunkBytes -= e.size
	e.gone = true
	c.closeIdleLocked(e)
	if err := os.Remove(c.path(e.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cache: evict %s: %w", e.id, err)
	}
	return nil
}

// maybeEvict removes least recently used chunks while the cache (chunk files and
// badger) is over budget, down to 90% of it.
func (c *chunkCache) maybeEvict() {
	c.mu.Lock()
	stale := time.Since(c.metaAt) > time.Second
	c.mu.Unlock()
	if stale {
		c.refreshMeta()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.chunkBytes+c.metaBytes <= c.budget {
		return
	}
	target := c.budget / 10 * 9
	for el := c.lru.Back(); el != nil && c.chunkBytes+c.metaBytes > target; {
		e := el.Value.(*centry)
		el = el.Prev()
		if e.writers > 0 {
			continue
		}
		if err := c.removeLocked(e); err != nil {
			c.log.Warn("cache: evict", "err", err)
		}
	}
	if c.metaBytes > c.budget && !c.warned {
		c.warned = true
		c.log.Warn("cache: local tree alone exceeds the cache budget", "tree_bytes", c.metaBytes, "budget", c.budget)
	}
}

// file returns e's file, opened if need be (created if create) and kept open
// for the next reads and writes; call release(e) when done with it. Files
// beyond maxOpenChunks are closed, least recently used first.
func (c *chunkCache) file(e *centry, create bool) (*os.File, error) {
	c.mu.Lock()
	if e.gone {
		c.mu.Unlock()
		return nil, os.ErrNotExist
	}
	if e.f != nil {
		e.fusers++
		c.open.MoveToFront(e.openElem)
		c.mu.Unlock()
		return e.f, nil
	}
	c.mu.Unlock()
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(c.path(e.id), flag, 0o600)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case e.gone: // removed while we opened it
		f.Close()
		return nil, os.ErrNotExist
	case e.f != nil: // opened meanwhile by someone else
		f.Close()
	default:
		e.f = f
		e.openElem = c.open.PushFront(e)
		for el := c.open.Back(); el != nil && c.open.Len() > maxOpenChunks; {
			o := el.Value.(*centry)
			el = el.Prev()
			c.closeIdleLocked(o)
		}
	}
	e.fusers++
	return e.f, nil
}

// release ends a use of e's file.
func (c *chunkCache) release(e *centry) {
	c.mu.Lock()
	e.fusers--
	if e.gone || c.open.Len() > maxOpenChunks {
		c.closeIdleLocked(e)
	}
	c.mu.Unlock()
}

// closeIdleLocked closes e's file unless it is in use. Caller holds c.mu.
func (c *chunkCache) closeIdleLocked(e *centry) {
	if e.f == nil || e.fusers > 0 {
		return
	}
	e.f.Close()
	e.f = nil
	c.open.Remove(e.openElem)
	e.openElem = nil
}

// closeFiles closes the chunk files not in use.
func (c *chunkCache) closeFiles() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.open.Front(); el != nil; {
		e := el.Value.(*centry)
		el = el.Next()
		c.closeIdleLocked(e)
	}
}

// persistAccess records access times as file mtimes, so LRU order survives
// restarts, and closes the chunk files kept open (it runs every minute and at
// Close: idle files do not stay open, and none outlives the store).
func (c *chunkCache) persistAccess() {
	c.closeFiles()
	type touch struct {
		id string
		t  time.Time
	}
	var ts []touch
	c.mu.Lock()
	for _, e := range c.idx {
		if e.touched {
			ts = append(ts, touch{e.id, e.atime})
			e.touched = false
		}
	}
	c.mu.Unlock()
	for _, t := range ts {
		os.Chtimes(c.path(t.id), t.t, t.t) // evicted meanwhile: nothing to keep
	}
}

func (c *chunkCache) stats() CacheStats {
	c.mu.Lock()
	stale := time.Since(c.metaAt) > time.Second
	c.mu.Unlock()
	if stale {
		c.refreshMeta()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Bytes: c.chunkBytes + c.metaBytes, Chunks: c.chunkBytes, Tree: c.metaBytes, Budget: c.budget, Hits: c.hits.Load(), Misses: c.misses.Load()}
}

// GetSegment returns the cached sealed bytes of segment seg of chunk id.
func (s *Store) GetSegment(id string, seg int) ([]byte, bool) { return s.chunks.get(nil, id, seg) }

// AppendSegment appends the cached sealed bytes of segment seg of chunk id to
// dst, so a reader can reuse one buffer.
func (s *Store) AppendSegment(dst []byte, id string, seg int) ([]byte, bool) {
	return s.chunks.get(dst, id, seg)
}

// HasSegment reports whether segment seg of chunk id is cached, without
// reading it when the index knows (a chunk written since the cache opened).
// It neither counts as a hit or miss nor as an access.
func (s *Store) HasSegment(id string, seg int) bool { return s.chunks.has(id, seg) }

// PutSegments caches consecutive sealed segments of chunk id starting at first.
// Least recently used segments are evicted to keep the cache within budget.
// Each segment may be up to slotStride-8 bytes (a sealed 64 KiB segment fits).
func (s *Store) PutSegments(id string, first int, sealed [][]byte) error {
	return s.chunks.put(id, first, sealed)
}

// ForgetChunk drops every cached segment of chunk id, e.g. after a cached
// segment failed authentication, so the next read refetches it.
func (s *Store) ForgetChunk(id string) error { return s.chunks.forget(id) }

// CacheStats reports the chunk cache's use.
type CacheStats struct {
	Bytes, Budget int64 // Bytes: chunk files plus badger's directory, as allocated on disk
	Chunks, Tree  int64 // the two parts of Bytes: cached chunks, the local tree's store (with its preallocated logs)
	Hits, Misses  uint64
}

func (s *Store) Stats() CacheStats { return s.chunks.stats() }

// Budget is the cache's size budget in bytes (Options.Budget, or DefaultBudget).
func (s *Store) Budget() int64 { return s.chunks.budget }
