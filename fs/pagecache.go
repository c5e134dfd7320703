package fs

import (
	"context"
	"slices"
	"sync"

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

// page is the kernel's page size: what a store fills or leaves alone.
const page = 4096

// mayStoreLocked says whether node n's page cache may take a store of st's
// content: no handle can write, the file is not deleted, st is still the
// node's state (a resync may have dropped it for a fresh one, with its own
// cacheMu and writers) and not one a shared folder's raised roster refuses
// (sharestale.go: such a state is never served). Caller holds st.cacheMu
// and d.mu.
func (d *Drive) mayStoreLocked(n *fnode, st *nodeState) bool {
	return st.writers == 0 && !st.deleted && d.states[st.id] == st && d.inodes[st.id] == n &&
		!d.staleStateLocked(st)
}

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
	ok := d.mayStoreLocked(n, st) && len(st.layers) == 0 && st.attrs.Size == sp.size &&
		st.trunc == noTrunc && sp.ci < len(st.attrs.Chunks) && st.attrs.Chunks[sp.ci] == sp.chunk
	d.mu.Unlock()
	if !ok {
		return
	}
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

// A write that covers a page only in part leaves that page in the kernel's
// cache not up to date (the kernel holds what was written but not the rest),
// so the next read of it is a READ request even though the drive has every
// byte: a file unpacked by tar -x, written in 10 KiB records, has one to three
// such pages, and git add's reads of a freshly unpacked Go tree were 19,000
// READs of 4 KiB, a third of its requests' time. When the last writer closes,
// the drive stores those pages whole (storeWritten), so reads of a file just
// written are page-cache hits, under the rules above: writers == 0 checked
// under cacheMu.

// maxPartialPages bounds the pages a file remembers for storeWritten (and
// what one store copies: 1 MiB): a file tar writes in 10 KiB records has one
// every 20 KiB, so files up to 5 MiB.
const maxPartialPages = 256

// notePartialPages records the pages a write of [off, end) covered in part.
// Under st.dmu.
func (st *nodeState) notePartialPages(off, end uint64) {
	if off%page != 0 {
		st.addPartialPage(off / page)
	}
	if end%page != 0 {
		st.addPartialPage(end / page)
	}
}

func (st *nodeState) addPartialPage(p uint64) {
	if st.partialOver || len(st.partial) > 0 && st.partial[len(st.partial)-1] == p {
		return // writes mostly append: storeWritten drops other repeats
	}
	if len(st.partial) == maxPartialPages {
		st.partial, st.partialOver = nil, true
		return
	}
	st.partial = append(st.partial, p)
}

// heldPages keeps the pages (sorted, without repeats) whose segment one of
// layers holds. Caller holds st.dmu.
func heldPages(layers []*layer, pages []uint64) []uint64 {
	slices.Sort(pages)
	pages = slices.Compact(pages)
	held := make(map[int64]bool, 4) // the pages' segments: held or not
	for _, p := range pages {
		held[int64(p*page/segSize)] = false
	}
	for _, l := range layers {
		segs, err := l.f.Present()
		if err != nil {
			return nil
		}
		for _, j := range segs {
			if _, ok := held[j]; ok {
				held[j] = true
			}
		}
	}
	return slices.DeleteFunc(pages, func(p uint64) bool { return !held[int64(p*page/segSize)] })
}

// afterWriter runs when a handle that could write is released: if writes
// left pages the kernel cannot vouch for, they are queued for one background
// worker to store (the kernel does not wait for a release).
func (d *Drive) afterWriter(n *fnode, st *nodeState) {
	st.dmu.RLock()
	pending := len(st.partial) > 0 || st.partialOver
	st.dmu.RUnlock()
	if pending {
		d.written.add(d, writtenFile{n, st})
	}
}

// writtenQueue holds the files whose written pages wait for storeWritten,
// stored in turn by one worker that runs while the queue is not empty. A
// goroutine per release (cp -a of the Go tree: 11,000 of them) contended
// for d.mu with the kernel's requests: handoffs of the lock through a queue
// of stores held requests for 10-50 ms, the more so on the one processor a
// burst of small changes runs on (internal/procs).
type writtenQueue struct {
	mu      sync.Mutex
	files   []writtenFile
	working bool
}

type writtenFile struct {
	n  *fnode
	st *nodeState
}

// maxWrittenQueued bounds the queue, which holds a file once however often
// it is released (nodeState.storeQueued). A file that finds it full (4,096
// files behind) keeps its pages recorded: they are stored if it is written
// and closed again, and read through the drive otherwise (correct, slower).
const maxWrittenQueued = 4096

func (q *writtenQueue) add(d *Drive, f writtenFile) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if f.st.storeQueued || len(q.files) >= maxWrittenQueued {
		return
	}
	f.st.storeQueued = true
	q.files = append(q.files, f)
	if !q.working {
		q.working = true
		go q.work(d)
	}
}

// work stores the queued files in turn. One whose cacheMu is held (a
// truncate waiting for its upload, say) gets a goroutine of its own, so it
// does not hold up the others.
func (q *writtenQueue) work(d *Drive) {
	for {
		q.mu.Lock()
		if len(q.files) == 0 {
			q.files, q.working = nil, false // a burst's backing array goes too
			q.mu.Unlock()
			return
		}
		f := q.files[0]
		q.files[0] = writtenFile{}
		q.files = q.files[1:]
		f.st.storeQueued = false // a release from now on queues it again
		q.mu.Unlock()
		store := func() {
			defer f.st.cacheMu.Unlock()
			d.storeWrittenLocked(f.n, f.st)
		}
		if f.st.cacheMu.TryLock() {
			store()
		} else {
			go func() { f.st.cacheMu.Lock(); store() }()
		}
	}
}

// storeWrittenLocked puts the pages writes covered in part into the kernel's
// page cache of node n, once no handle can write (a later open for writing
// waits for it); the next writer's release does it otherwise. Only pages a
// local layer holds: reading others could wait for the cloud, and every open
// for writing, truncate and pulled change of the file with it (cacheMu, which
// the caller holds).
func (d *Drive) storeWrittenLocked(n *fnode, st *nodeState) {
	if d.ctx.Err() != nil {
		return // shutting down: the layers close
	}
	d.mu.Lock()
	ok := d.mayStoreLocked(n, st)
	d.mu.Unlock()
	if !ok {
		return
	}
	st.dmu.Lock()
	pages, over := st.partial, st.partialOver
	st.partial, st.partialOver = nil, false
	if !over {
		pages = heldPages(st.layers, pages)
	}
	st.dmu.Unlock()
	if over || len(pages) == 0 {
		return
	}
	pb := d.segBufs.Get().(*[]byte)
	defer d.segBufs.Put(pb)
	for i := 0; i < len(pages); {
		// One read per segment: it decrypts the whole segment anyway.
		seg := pages[i] * page / segSize
		j := i + 1
		for j < len(pages) && pages[j]*page/segSize == seg {
			j++
		}
		lo := pages[i] * page
		size := (pages[j-1]+1)*page - lo
		buf := (*pb)[:size] // pages of one segment
		// readAt stops at the file's size: a store never grows the
		// kernel's idea of it, and one ending there marks the last page up
		// to date.
		got, err := d.readAt(context.Background(), st, buf, int64(lo), false, nil)
		if err != nil {
			return
		}
		for a := i; a < j; {
			// One store per run of adjacent pages.
			b := a + 1
			for b < j && pages[b] == pages[b-1]+1 {
				b++
			}
			from, to := pages[a]*page-lo, min((pages[b-1]+1)*page-lo, uint64(got))
			if from < to {
				n.WriteCache(int64(lo+from), buf[from:to])
			}
			a = b
		}
		i = j
	}
}
