package fs

import (
	"slices"

	"kumo/internal/meta"
)

// A random read of 4 KiB fetches and decrypts a whole 64 KiB segment; the
// rest of it is handed to the kernel's page cache (FUSE NOTIFY_STORE), so
// the next reads in that segment are page-cache hits instead of requests.
//
// Storing stale data there would be silent corruption, so a store is ordered
// against everything that changes a file's content behind the kernel's back,
// by the node's cacheMu, held across the check and the store:
//   - opening for writing (every write, mmap write, fallocate or
//     copy_file_range needs a descriptor open for writing): writers > 0
//     stops stores, and the open waits for a store in flight;
//   - truncate (with or without a descriptor) takes cacheMu first;
//   - a change from the cloud updates the node, then invalidates the kernel's
//     cache under cacheMu (notifyContent): a store checked before the update
//     is invalidated after it, one checked after sees the new chunk list.
// A store never covers the pages of the read being answered (the kernel
// holds them locked until the answer) and never reaches past the file's
// size (it would grow the kernel's idea of the size).

// spareSegment is a decrypted base segment a random read covered only in
// part (see readAt).
type spareSegment struct {
	off   int64         // file offset of the segment
	data  []byte        // its plaintext, cut at the file's size
	size  uint64        // the file's size when it was read
	chunk meta.ChunkRef // the base chunk it came from
	ci    int           // that chunk's index
}

// storeSpare puts the parts of sp outside [off, off+n) into the kernel's
// page cache of node n, if nothing changed the file since it was read.
func (d *Drive) storeSpare(n *fnode, st *nodeState, sp *spareSegment, off int64, size int) {
	st.cacheMu.Lock()
	defer st.cacheMu.Unlock()
	d.mu.Lock()
	ok := st.writers == 0 && !st.deleted && len(st.layers) == 0 && st.attrs.Size == sp.size &&
		st.trunc == noTrunc && sp.ci < len(st.attrs.Chunks) && st.attrs.Chunks[sp.ci] == sp.chunk
	d.mu.Unlock()
	if !ok {
		return
	}
	const page = 4096
	reqStart := off &^ (page - 1)
	reqEnd := (off + int64(size) + page - 1) &^ (page - 1)
	segEnd := sp.off + int64(len(sp.data))
	if reqStart > sp.off {
		n.WriteCache(sp.off, sp.data[:min(reqStart, segEnd)-sp.off])
	}
	if reqEnd < segEnd {
		n.WriteCache(reqEnd, sp.data[reqEnd-sp.off:])
	}
}

// keepSpare records segment j's plaintext p in sp (a copy: p may be a
// pooled buffer). v is the view the read used.
func keepSpare(sp *spareSegment, v dataView, j int64, p []byte) {
	off := uint64(j) * segSize
	ci := chunkOf(off)
	if ci >= len(v.base) || off >= v.size {
		return
	}
	p = p[:min(uint64(len(p)), v.size-off)]
	sp.off, sp.size, sp.ci, sp.chunk = int64(off), v.size, ci, v.base[ci]
	sp.data = slices.Clone(p)
}
