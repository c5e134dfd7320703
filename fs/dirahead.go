package fs

import (
	"sync"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// Small files read one after another after a fresh mount (cat dir/*, grep -r,
// a build reading its sources) each wait for the cloud: a round trip per
// file over a network, a request handled on the reader's core in-process.
// So when a small file's data must come from the cloud, the other small
// files of its directory are fetched in the background, at most maxFetches
// at a time, and their reads find them in memory (from a remote cloud, in the
// chunk cache too). A directory is read ahead at most once per
// dirAheadAgain, and not at all if it has more than dirAheadFiles small
// files: the local tree lists entries by name MAC, so telling which come
// next in name order (readdir's, a glob's) would mean opening every name,
// and fetching them all would be a lot of data for one read.
const (
	dirAheadFiles = 256
	dirAheadAgain = 30 * time.Second
	// dirAheadDirs bounds the directories remembered as read ahead.
	dirAheadDirs = 4096
)

// dirAheads remembers when each directory was read ahead.
type dirAheads struct {
	mu   sync.Mutex
	done map[uint64]time.Time
}

// claim says whether dir is to be read ahead now, and notes it.
func (a *dirAheads) claim(dir uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if t, ok := a.done[dir]; ok && now.Sub(t) < dirAheadAgain {
		return false
	}
	if a.done == nil || len(a.done) >= dirAheadDirs {
		for d, t := range a.done {
			if now.Sub(t) >= dirAheadAgain {
				delete(a.done, d)
			}
		}
		if len(a.done) >= dirAheadDirs {
			clear(a.done)
		}
		if a.done == nil {
			a.done = map[uint64]time.Time{}
		}
	}
	a.done[dir] = now
	return true
}

// isSmallBase says whether a base chunk list is one chunk of one segment.
func isSmallBase(base []meta.ChunkRef) bool {
	return len(base) == 1 && !base[0].ID.IsZero() && base[0].Len > 0 && chunk.Segments(int(base[0].Len)) == 1
}

// dirAhead fetches the small files of node's directory (see dirAheads).
func (d *Drive) dirAhead(node uint64) {
	if d.ctx.Err() != nil {
		return // unmounting
	}
	d.mu.Lock()
	fn := d.inodes[node]
	d.mu.Unlock()
	if fn == nil {
		return
	}
	_, parent := fn.Parent()
	if parent == nil {
		return
	}
	dir := parent.StableAttr().Ino
	if !d.ahead.claim(dir) {
		return
	}
	entries, err := d.store.List(dir)
	if err != nil {
		d.log.Debug("read-ahead of a directory: listing", "dir", dir, "err", err)
		return
	}
	var refs []meta.ChunkRef
	for _, e := range entries {
		if e.Child == node {
			continue
		}
		ref, ok := d.smallBaseOf(e.Child)
		if !ok {
			continue
		}
		if len(refs) == dirAheadFiles {
			return // too many to guess which come next
		}
		refs = append(refs, ref)
	}
	for _, ref := range refs {
		d.fetch.prefetch(ref)
	}
}

// smallBaseOf returns the base chunk of node if it is a file whose base is
// one small chunk. A node with a decoded state is read from it (it may hold
// changes not in the local tree yet); others are decoded here without being
// kept, as only a lookup makes a state live.
func (d *Drive) smallBaseOf(node uint64) (meta.ChunkRef, bool) {
	d.mu.Lock()
	if st := d.states[node]; st != nil {
		defer d.mu.Unlock()
		if st.typ != api.TypeFile || st.deleted || !isSmallBase(st.attrs.Chunks) {
			return meta.ChunkRef{}, false
		}
		return st.attrs.Chunks[0], true
	}
	d.mu.Unlock()
	n, err := d.store.GetNode(node)
	if err != nil || n.Type != api.TypeFile {
		return meta.ChunkRef{}, false
	}
	a, _, err := d.openAttrs(n.ID, n.Attrs)
	if err != nil || !isSmallBase(a.Chunks) {
		return meta.ChunkRef{}, false
	}
	return a.Chunks[0], true
}
