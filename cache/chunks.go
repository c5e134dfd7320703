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
// index (allocated size, access time) is in memory, rebuilt at open from the
// files; access times are persisted lazily as file mtimes (Sync, Close, and
// once a minute), so reads never write.
const (
	cacheHeader  = 8
	maxCachedSeg = slotStride - cacheHeader
	maxChunkSegs = (chunk.Size + chunk.SegmentSize - 1) / chunk.SegmentSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type centry struct {
	id      string
	size    int64 // bytes allocated on disk
	atime   time.Time
	touched bool // atime not yet persisted
	writers int  // PutSegments in flight: not evictable
	elem    *list.Element
}

type chunkCache struct {
	dir, metaDir string
	budget       int64
	log          *slog.Logger
	bufs         sync.Pool

	mu         sync.Mutex
	idx        map[string]*centry
	lru        *list.List // front: most recently used
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
	c := &chunkCache{dir: dir, metaDir: metaDir, budget: budget, log: log, idx: map[string]*centry{}, lru: list.New()}
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

func (c *chunkCache) get(id string, seg int) ([]byte, bool) {
	if !validSeg(id, seg) {
		c.misses.Add(1)
		return nil, false
	}
	c.mu.Lock()
	e := c.idx[id]
	if e != nil {
		e.atime = time.Now()
		e.touched = true
		c.lru.MoveToFront(e.elem)
	}
	c.mu.Unlock()
	if e == nil {
		c.misses.Add(1)
		return nil, false
	}
	p, ok := c.readSlot(id, seg)
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	return p, true
}

func (c *chunkCache) readSlot(id string, seg int) ([]byte, bool) {
	f, err := os.Open(c.path(id))
	if err != nil {
		return nil, false // evicted meanwhile
	}
	defer f.Close()
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	n, err := f.ReadAt(*bp, int64(seg)*slotStride)
	if err != nil && !errors.Is(err, io.EOF) {
		c.log.Warn("cache: read cached segment", "chunk", id, "seg", seg, "err", err)
		return nil, false
	}
	data, ok := parseCacheSlot((*bp)[:n])
	if !ok {
		return nil, false
	}
	return append([]byte(nil), data...), true
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
		e = &centry{id: id}
		e.elem = c.lru.PushFront(e)
		c.idx[id] = e
	} else {
		c.lru.MoveToFront(e.elem)
	}
	e.atime = time.Now()
	e.writers++
	c.mu.Unlock()

	size, err := c.writeSlots(id, first, sealed)

	c.mu.Lock()
	e.writers--
	if size >= 0 {
		c.chunkBytes += size - e.size
		e.size = size
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.maybeEvict()
	return nil
}

// writeSlots writes the slots and returns the file's allocated size (-1 if unknown).
func (c *chunkCache) writeSlots(id string, first int, sealed [][]byte) (int64, error) {
	f, err := os.OpenFile(c.path(id), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return -1, fmt.Errorf("cache: put segments of %s: %w", id, err)
	}
	defer f.Close()
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	var werr error
	for i, p := range sealed {
		buf := (*bp)[:cacheHeader+len(p)]
		binary.BigEndian.PutUint32(buf, uint32(len(p)))
		binary.BigEndian.PutUint32(buf[4:], crc32.Checksum(p, castagnoli))
		copy(buf[cacheHeader:], p)
		if _, err := f.WriteAt(buf, int64(first+i)*slotStride); err != nil {
			werr = fmt.Errorf("cache: put segment %d of %s: %w", first+i, id, err)
			break
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return -1, errors.Join(werr, fmt.Errorf("cache: put segments of %s: %w", id, err))
	}
	return diskUsage(fi), werr
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

// persistAccess records access times as file mtimes, so LRU order survives restarts.
func (c *chunkCache) persistAccess() {
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
	return CacheStats{Bytes: c.chunkBytes + c.metaBytes, Budget: c.budget, Hits: c.hits.Load(), Misses: c.misses.Load()}
}

// GetSegment returns the cached sealed bytes of segment seg of chunk id.
func (s *Store) GetSegment(id string, seg int) ([]byte, bool) { return s.chunks.get(id, seg) }

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
	Hits, Misses  uint64
}

func (s *Store) Stats() CacheStats { return s.chunks.stats() }
