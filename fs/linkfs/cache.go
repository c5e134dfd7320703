package linkfs

import (
	"container/list"
	"sync"
)

// chunkCache keeps the last opened chunks (least recently used out first)
// within a budget of bytes, and the chunks being fetched, so that two reads
// of one chunk fetch it once. Only chunks that passed their check against
// the link are put in. Safe for concurrent use.
type chunkCache struct {
	mu       sync.Mutex
	max      int // bytes kept (the newest chunk is kept even if bigger)
	size     int // bytes held
	lru      *list.List
	items    map[chunkKey]*list.Element // element value: *cached
	inflight map[chunkKey]chan struct{} // closed when the fetch ends, either way
}

type cached struct {
	k chunkKey
	b []byte
}

func newChunkCache(maxBytes int) *chunkCache {
	return &chunkCache{max: max(maxBytes, 1), lru: list.New(), items: map[chunkKey]*list.Element{}, inflight: map[chunkKey]chan struct{}{}}
}

// getOrClaim returns the cached chunk k; or, while another read fetches
// it, a channel closed when that ends; or else claims k for the caller,
// who must call finish.
func (c *chunkCache) getOrClaim(k chunkKey) (b []byte, wait <-chan struct{}, claimed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*cached).b, nil, false
	}
	if ch, ok := c.inflight[k]; ok {
		return nil, ch, false
	}
	c.inflight[k] = make(chan struct{})
	return nil, nil, true
}

// claim claims k for the caller (who must call finish) unless it is cached
// or being fetched.
func (c *chunkCache) claim(k chunkKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return false
	}
	if _, ok := c.inflight[k]; ok {
		return false
	}
	c.inflight[k] = make(chan struct{})
	return true
}

// finish ends the fetch of k: b (opened and checked) is cached, nil when it
// failed.
func (c *chunkCache) finish(k chunkKey, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.inflight[k]; ok {
		close(ch)
		delete(c.inflight, k)
	}
	if b == nil {
		return
	}
	if el, ok := c.items[k]; ok {
		c.size += len(b) - len(el.Value.(*cached).b)
		el.Value.(*cached).b = b
		c.lru.MoveToFront(el)
	} else {
		c.items[k] = c.lru.PushFront(&cached{k, b})
		c.size += len(b)
	}
	for c.size > c.max && c.lru.Len() > 1 {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.items, old.Value.(*cached).k)
		c.size -= len(old.Value.(*cached).b)
	}
}

// bytes is the number of bytes cached.
func (c *chunkCache) bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
