package linkfs

import (
	"container/list"
	"sync"
)

// segCache keeps the last opened segments (least recently used out first)
// and the segments being fetched, so that two reads of one segment fetch it
// once. Safe for concurrent use.
type segCache struct {
	mu       sync.Mutex
	max      int // segments kept
	lru      *list.List
	items    map[segKey]*list.Element // element value: *cached
	inflight map[segKey]chan struct{} // closed when the fetch ends, either way
}

type cached struct {
	k segKey
	b []byte
}

func newSegCache(n int) *segCache {
	return &segCache{max: max(n, 1), lru: list.New(), items: map[segKey]*list.Element{}, inflight: map[segKey]chan struct{}{}}
}

// getOrClaim returns the cached segment k; or, while another read fetches
// it, a channel closed when that ends; or else claims k for the caller,
// who must call finish.
func (c *segCache) getOrClaim(k segKey) (b []byte, wait <-chan struct{}, claimed bool) {
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
func (c *segCache) claim(k segKey) bool {
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

// finish ends the fetch of k: b (opened) is cached, nil when it failed.
func (c *segCache) finish(k segKey, b []byte) {
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
		el.Value.(*cached).b = b
		c.lru.MoveToFront(el)
		return
	}
	c.items[k] = c.lru.PushFront(&cached{k, b})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.items, old.Value.(*cached).k)
	}
}

// len is the number of cached segments.
func (c *segCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
