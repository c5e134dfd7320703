package fs

import (
	"fmt"
	"sync"

	"kumo/cache"
)

// layerFile is where a layer's segments live: a segment file, or for small
// files an inline layer kept in the local store.
type layerFile interface {
	// AppendSegment appends segment i's plaintext to dst (ok=false: never
	// written), so readers can decrypt into a buffer they reuse.
	AppendSegment(dst []byte, i int64) ([]byte, bool, error)
	WriteSegment(i int64, p []byte) error
	Present() ([]int64, error)
	Drop(from int64) error
	Sync() error
	Flush() error // to the kernel, no device flush (close)
	Close() error
	Remove() error
}

var _ layerFile = (*cache.SegmentFile)(nil)

// inlineLayer holds segment 0 only, of a file no larger than cache.InlineMax.
// Its data is saved with the node's attributes (makeDurable: one Apply, one
// store sync), so closing a small file creates no segment file. Saved data is
// dropped from memory and read back from the store when needed.
type inlineLayer struct {
	store     *cache.Store
	node, gen uint64

	mu       sync.Mutex
	data     []byte // the content if loaded
	has      bool   // segment 0 written
	loaded   bool   // data is the current content (else read it from the store)
	stored   bool   // a record may exist in the store
	ver      uint64 // bumped by every change
	savedVer uint64 // version the store holds
}

func newInlineLayer(s *cache.Store, node, gen uint64) *inlineLayer {
	return &inlineLayer{store: s, node: node, gen: gen, loaded: true}
}

// resumedInlineLayer is a layer found in the store at mount.
func resumedInlineLayer(s *cache.Store, node, gen uint64) *inlineLayer {
	return &inlineLayer{store: s, node: node, gen: gen, has: true, stored: true}
}

func (l *inlineLayer) AppendSegment(dst []byte, i int64) ([]byte, bool, error) {
	if i != 0 {
		return dst, false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.has {
		return dst, false, nil
	}
	if !l.loaded {
		// Not kept: reads of saved small files stay cheap in memory.
		return l.store.AppendInline(dst, l.node, l.gen)
	}
	if dst == nil {
		// Read-only, and capped at its length: a write replaces l.data or
		// extends it in place (patch), never changes the bytes shown here.
		return l.data[:len(l.data):len(l.data)], true, nil
	}
	return append(dst, l.data...), true, nil
}

func (l *inlineLayer) WriteSegment(i int64, p []byte) error {
	if i != 0 || len(p) > cache.InlineMax {
		return fmt.Errorf("inline layer of node %d: segment %d of %d bytes", l.node, i, len(p))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.data = append(l.data[:0:0], p...) // callers may reuse p; readers may hold the old slice
	l.has, l.loaded = true, true
	l.ver++
	return nil
}

// patch zero-extends the content to n bytes and writes p at off
// (off+len(p) <= n), in place when that changes only bytes past the current
// end: a small file written in several appends (git's objects, in 4 KiB
// writes) then costs one copy of each byte, not a copy of the whole file per
// write. ok=false, nothing changed, when the write would change bytes a
// reader or a save may hold (the caller copies the segment instead) or the
// content is not in memory.
func (l *inlineLayer) patch(off int, p []byte, n int) (ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := len(l.data)
	if !l.has || !l.loaded || off < old || n < old || off+len(p) > n || n > cache.InlineMax {
		return false
	}
	if n > cap(l.data) {
		// Doubling: a file grown by many appends is copied a few times, not
		// once per append.
		grown := make([]byte, old, min(max(n, 2*cap(l.data)), cache.InlineMax))
		copy(grown, l.data)
		l.data = grown
	}
	l.data = l.data[:n]
	clear(l.data[old:]) // the spare capacity is not known to be zero
	copy(l.data[off:], p)
	l.ver++
	return true
}

func (l *inlineLayer) Present() ([]int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.has {
		return []int64{0}, nil
	}
	return nil, nil
}

func (l *inlineLayer) Drop(from int64) error {
	if from > 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.has {
		l.data, l.has, l.loaded = nil, false, true
		l.ver++
	}
	return nil
}

// snapshot returns what to save (ok=false: the store is up to date) and
// the version it reflects.
func (l *inlineLayer) snapshot() (seg cache.InlineSegment, del, ok bool, ver uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ver == l.savedVer {
		return seg, false, false, l.ver
	}
	if !l.has {
		return cache.InlineSegment{Node: l.node, Gen: l.gen}, true, true, l.ver
	}
	return cache.InlineSegment{Node: l.node, Gen: l.gen, Data: l.data[:len(l.data):len(l.data)]}, false, true, l.ver
}

// saved records that the store holds version ver; the memory copy is dropped
// unless written meanwhile.
func (l *inlineLayer) saved(ver uint64, deleted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stored = !deleted
	l.savedVer = ver
	if l.ver == ver && l.has {
		l.data, l.loaded = nil, false
	}
}

// gone records that the record was deleted (upload commit).
func (l *inlineLayer) gone() {
	l.mu.Lock()
	l.stored, l.savedVer = false, l.ver
	l.mu.Unlock()
}

// Sync: inline data becomes durable with the node (makeDurable).
func (l *inlineLayer) Sync() error  { return nil }
func (l *inlineLayer) Flush() error { return nil }
func (l *inlineLayer) Close() error { return nil }

// Remove deletes the stored record (a deleted node); uploads delete it in
// their commit instead.
func (l *inlineLayer) Remove() error {
	l.mu.Lock()
	stored := l.stored
	l.stored, l.data, l.has = false, nil, false
	l.mu.Unlock()
	if !stored {
		return nil
	}
	return l.store.Apply(cache.Mutation{DeleteInline: [][2]uint64{{l.node, l.gen}}})
}
