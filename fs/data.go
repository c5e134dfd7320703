package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"kumo/cache"
	"kumo/internal/chunk"
	"kumo/internal/meta"
	"kumo/remote/api"
)

const segSize = chunk.SegmentSize

// The content of a file is, per 64 KiB segment: the newest layer holding the
// segment; else the base chunks (below the truncation watermark); else zeros.
// Invariant: no layer holds data beyond the file size, and the base holds none
// beyond min(watermark, size).

// dataView is a consistent snapshot for reading.
type dataView struct {
	size   uint64
	base   []meta.ChunkRef
	trunc  uint64
	layers []*layer // newest last
}

// view snapshots st. Caller holds st.dmu (read or write).
func (d *Drive) view(st *nodeState) dataView {
	d.mu.Lock()
	v := dataView{size: st.attrs.Size, base: st.attrs.Chunks, trunc: st.trunc, layers: st.layers}
	d.mu.Unlock()
	return v
}

// segment returns the plaintext of segment j (may be shorter than segSize;
// nil means zeros) from layers newer-first, then base.
func (d *Drive) segment(ctx context.Context, st *nodeState, v dataView, j int64, seq bool) ([]byte, error) {
	return d.segmentInto(ctx, st, v, j, seq, nil)
}

// segmentInto is segment, reading into dst's spare capacity when it fits
// (the result then aliases dst).
func (d *Drive) segmentInto(ctx context.Context, st *nodeState, v dataView, j int64, seq bool, dst []byte) ([]byte, error) {
	for i := len(v.layers) - 1; i >= 0; i-- {
		p, ok, err := v.layers[i].f.AppendSegment(dst, j)
		if err != nil {
			d.log.Error("local write-back data fails authentication", "node", st.id, "segment", j, "err", err)
			return nil, syscall.EIO
		}
		if ok {
			d.reads.hits.Add(1) // write-back data
			return p, nil
		}
	}
	return d.baseSegment(ctx, st.id, v.base, v.trunc, j, seq, dst)
}

// baseSegment reads segment j of the base chunk list, cut at trunc, into dst
// (see segmentInto).
func (d *Drive) baseSegment(ctx context.Context, node uint64, base []meta.ChunkRef, trunc uint64, j int64, seq bool, dst []byte) ([]byte, error) {
	off := uint64(j) * segSize
	if off >= trunc {
		return nil, nil
	}
	ci := chunkOf(off)
	if ci >= len(base) || base[ci].ID.IsZero() {
		return nil, nil
	}
	ref := base[ci]
	k := int((off % chunk.Size) / segSize)
	if k >= chunk.Segments(int(ref.Len)) {
		return nil, nil
	}
	p, err := d.fetch.segment(ctx, node, base, ci, k, seq, dst)
	if err != nil {
		return nil, err
	}
	if end := off + uint64(len(p)); end > trunc {
		p = p[:trunc-off] // ours: decrypted just now
	}
	return p, nil
}

// readAt reads into dest at off. A whole segment the read covers is
// decrypted straight into dest; a partial one into a scratch buffer.
//
// With spare set, a read within one segment of the base (no local data) that
// covers it only in part keeps the segment's plaintext there, for storeSpare.
func (d *Drive) readAt(ctx context.Context, st *nodeState, dest []byte, off int64, seq bool, spare *spareSegment) (int, error) {
	st.dmu.RLock()
	defer st.dmu.RUnlock()
	v := d.view(st)
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if uint64(off) >= v.size {
		return 0, nil
	}
	n := min(uint64(len(dest)), v.size-uint64(off))
	dest = dest[:n]
	var scratch *[]byte
	defer func() {
		if scratch != nil {
			d.fetch.bufs.Put(scratch)
		}
	}()
	for pos := uint64(0); pos < n; {
		o := uint64(off) + pos
		j := int64(o / segSize)
		in := o % segSize
		take := min(segSize-in, n-pos)
		out := dest[pos : pos+take]
		var buf []byte
		if take == segSize {
			buf = out[:0:take]
		} else {
			if scratch == nil {
				scratch = d.fetch.buf()
			}
			buf = (*scratch)[:0]
		}
		p, err := d.segmentInto(ctx, st, v, j, seq, buf)
		if err != nil {
			return 0, err
		}
		if spare != nil && take == n && take < segSize && len(v.layers) == 0 && v.trunc == noTrunc && len(p) > 0 {
			keepSpare(spare, v, j, p)
		}
		got := 0
		if len(p) > 0 && &p[0] == &out[0] {
			got = len(p) // decrypted in place
		} else if in < uint64(len(p)) {
			got = copy(out, p[in:])
		}
		clear(out[got:]) // beyond the data: zeros
		pos += take
	}
	return int(n), nil
}

// topLayer returns the layer writes go to, creating it: an inline layer
// while the file stays small (inline), else a segment file. Caller holds st.dmu.
func (d *Drive) topLayer(st *nodeState, inline bool) (*layer, error) {
	if n := len(st.layers); n > 0 {
		l := st.layers[n-1]
		_, isInline := l.f.(*inlineLayer)
		if (!st.uploading || l.gen > st.frozenUpTo) && (inline || !isInline) {
			return l, nil
		}
	}
	var f layerFile
	if inline {
		f = newInlineLayer(d.store, st.id, st.nextGen)
	} else {
		sf, err := d.store.OpenSegmentFile(st.id, st.nextGen)
		if err != nil {
			return nil, fmt.Errorf("open segment file: %w", err)
		}
		f = sf
	}
	l := &layer{gen: st.nextGen, f: f}
	st.nextGen++
	d.mu.Lock()
	st.layers = append(slices.Clip(st.layers), l)
	d.dirty[st.id] = st
	d.mu.Unlock()
	return l, nil
}

// write writes data at off.
func (d *Drive) write(ctx context.Context, st *nodeState, data []byte, off int64) (int, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	end := uint64(off) + uint64(len(data))
	if end > maxFileSize {
		return 0, syscall.EFBIG
	}
	st.dmu.Lock()
	defer st.dmu.Unlock()
	v := d.view(st)
	if end > v.size {
		if e := d.checkQuota(int64(end - v.size)); e != 0 {
			return 0, e
		}
	}
	newSize := max(v.size, end)
	top, err := d.topLayer(st, newSize <= cache.InlineMax)
	if err != nil {
		d.log.Error("write-back store", "node", st.id, "err", err)
		return 0, syscall.EIO
	}
	v.layers = st.layers
	sf, _ := top.f.(*cache.SegmentFile)
	var buf []byte // one segment buffer per call: WriteSegment does not keep it
	for pos := uint64(0); pos < uint64(len(data)); {
		o := uint64(off) + pos
		j := int64(o / segSize)
		in := o % segSize
		take := min(segSize-in, uint64(len(data))-pos)
		segEnd := min(segSize, newSize-uint64(j)*segSize)
		p := data[pos : pos+take]
		pos += take
		if in == 0 && take == segEnd {
			// The whole segment: written as is (the layer copies it).
			if err := top.f.WriteSegment(j, p); err != nil {
				d.log.Error("write-back store", "node", st.id, "err", err)
				return 0, syscall.EIO
			}
			continue
		}
		if il, ok := top.f.(*inlineLayer); ok && il.patch(int(in), p, int(segEnd)) {
			continue // appended in memory (inline.go)
		}
		if sf != nil {
			// A segment the top layer holds is patched there (in memory
			// while it waits to be written: small appends cost no crypto).
			ok, err := sf.PatchSegment(j, int(in), p, int(segEnd))
			if err != nil {
				d.log.Error("write-back store", "node", st.id, "err", err)
				return 0, syscall.EIO
			}
			if ok {
				continue
			}
		}
		// Read-modify-write from older layers or the base.
		old, err := d.segment(ctx, st, v, j, false)
		if err != nil {
			return 0, errno(err)
		}
		if uint64(cap(buf)) < segEnd {
			// Sized to this segment: a small file's append would
			// otherwise allocate and clear a whole 64 KiB per write.
			buf = make([]byte, segEnd)
		}
		buf = buf[:segEnd]
		clear(buf[copy(buf, old):])
		copy(buf[in:], p)
		if err := top.f.WriteSegment(j, buf); err != nil {
			d.log.Error("write-back store", "node", st.id, "err", err)
			return 0, syscall.EIO
		}
	}
	st.notePartialPages(uint64(off), end)
	now := nowNs()
	d.mu.Lock()
	if newSize > st.attrs.Size {
		st.attrs.Size = newSize
	}
	st.attrs.Mtime, st.attrs.Ctime = now, now
	d.addQueuedLocked(st, int64(len(data)))
	st.lastWrite = time.Now()
	d.dirty[st.id] = st
	d.mu.Unlock()
	return len(data), 0
}

// maxFileSize is the largest file kumo supports (README): 32768 chunks of
// 4 MiB. A file's whole chunk list travels in one request (its sealed
// attributes, 36 bytes a chunk, base64 in JSON, and a 64-hex id a data
// chunk), and the cloud takes at most api.MaxJSONBody (4 MiB) a request:
// 128 GiB of data needs about 3.6 MiB, leaving room for the name and
// xattrs (TestMaxFileSizeFits). Beyond it: EFBIG, as at any file system's limit.
const maxFileSize = 128 << 30

// truncate sets the size. Caller must not hold st.dmu.
func (d *Drive) truncate(ctx context.Context, st *nodeState, size uint64) syscall.Errno {
	if size > maxFileSize {
		return syscall.EFBIG
	}
	st.cacheMu.Lock() // no page-cache store of the old content in flight (pagecache.go)
	defer st.cacheMu.Unlock()
	st.dmu.Lock()
	defer st.dmu.Unlock()
	d.waitUpload(st)
	v := d.view(st)
	if size > v.size {
		if e := d.checkQuota(int64(size - v.size)); e != 0 {
			return e
		}
	}
	if e := d.truncateLocked(ctx, st, v, size); e != 0 {
		return e
	}
	now := nowNs()
	d.mu.Lock()
	st.attrs.Mtime, st.attrs.Ctime = now, now
	err := d.persistLocked(st)
	d.mu.Unlock()
	if err != nil {
		return syscall.EIO
	}
	return 0
}

// waitUpload waits for a running upload of st to end. Caller holds st.dmu
// (write); it is released while waiting.
func (d *Drive) waitUpload(st *nodeState) {
	for st.uploading {
		ch := st.uploadDone
		st.dmu.Unlock()
		<-ch
		st.dmu.Lock()
	}
}

// truncateLocked cuts or extends the data to size. Caller holds st.dmu (write)
// and no upload runs.
func (d *Drive) truncateLocked(ctx context.Context, st *nodeState, v dataView, size uint64) syscall.Errno {
	// topLayer marks the node dirty, even with no data written.
	if _, err := d.topLayer(st, size <= cache.InlineMax && v.size <= cache.InlineMax); err != nil {
		d.log.Error("write-back store", "node", st.id, "err", err)
		return syscall.EIO
	}
	d.mu.Lock()
	if size < v.size && size < st.trunc {
		st.trunc = size
	}
	st.attrs.Size = size
	st.lastWrite = time.Now()
	d.mu.Unlock()
	if size < v.size {
		if d.segmentDataFrom(st, size) {
			// Cutting a segment file is a file-system change the kernel may
			// write to disk before the redo log: the new size must be on
			// disk first, or a power loss could keep the cut and lose the
			// size (a file rewritten with O_TRUNC, never synced, would come
			// back at its old size with its data gone). One sync, only when
			// data not yet uploaded is cut (ext4 pays the same for this
			// pattern: auto_da_alloc).
			d.mu.Lock()
			err := d.persistLocked(st)
			d.mu.Unlock()
			if err == nil {
				err = d.store.SyncTree()
			}
			if err != nil {
				d.log.Error("saving the size before a truncate", "node", st.id, "err", err)
				return syscall.EIO
			}
			d.mu.Lock()
			st.syncOnClose = true
			d.mu.Unlock()
		}
		if err := d.cutLayers(st, size); err != nil {
			d.log.Error("write-back store", "node", st.id, "err", err)
			return syscall.EIO
		}
	}
	return 0
}

// segmentDataFrom reports a segment-file layer holding data at or beyond
// size. Caller holds st.dmu.
func (d *Drive) segmentDataFrom(st *nodeState, size uint64) bool {
	first := int64(size / segSize)
	for _, l := range st.layers {
		sf, ok := l.f.(*cache.SegmentFile)
		if !ok {
			continue
		}
		segs, err := sf.Present()
		if err == nil && len(segs) > 0 && segs[len(segs)-1] >= first {
			return true
		}
	}
	return false
}

// cutLayers removes layer data at or beyond size. Caller holds st.dmu (write).
func (d *Drive) cutLayers(st *nodeState, size uint64) error {
	from := int64((size + segSize - 1) / segSize)
	cut := size % segSize
	for _, l := range st.layers {
		if err := l.f.Drop(from); err != nil {
			return err
		}
		if cut == 0 {
			continue
		}
		j := int64(size / segSize)
		p, ok, err := l.f.AppendSegment(nil, j)
		if err != nil {
			return err
		}
		if ok && uint64(len(p)) > cut {
			if err := l.f.WriteSegment(j, p[:cut]); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeDurable saves st's written data and its local attributes together
// with its inline layers (one Apply). With sync (fsync, or close with
// DurableClose) the layers are fdatasynced and the store synced (one shared
// sync): durable on local disk. Without (close): the layers' waiting
// segments are written to their files and the Apply's record to the redo
// log, so the kernel holds everything (kill -9 loses nothing) and no device
// flush is waited for; the next fsync, SyncAll (the store's periodic
// commit) or unmount makes it durable. The record then says it describes
// unsynced data (AfterData), so the store makes that data durable before
// the record: a power loss never keeps the new size without the bytes.
func (d *Drive) makeDurable(st *nodeState, urgent, sync bool) syscall.Errno {
	d.mu.Lock()
	sync = sync || st.syncOnClose
	st.syncOnClose = false
	d.mu.Unlock()
	// With sync, st.dmu is not held across the fdatasyncs (writes go on
	// meanwhile). Without, it is held from the flush to the Apply: lock
	// order st.dmu, then DataOrder (a truncate syncs the log under st.dmu).
	st.dmu.RLock()
	ls := st.layers
	if sync {
		st.dmu.RUnlock()
	}
	afterData := false
	release := func() {}
	for _, l := range ls {
		if _, ok := l.f.(*inlineLayer); ok {
			continue
		}
		if !sync && !afterData {
			afterData = true
			release = d.store.DataOrder() // no log sync between this data and its record
		}
		save := l.f.Flush
		if sync {
			save = l.f.Sync
		}
		if err := save(); err != nil && !isClosed(err) {
			release()
			if !sync {
				st.dmu.RUnlock()
			}
			d.log.Error("syncing write-back data", "node", st.id, "err", err)
			return syscall.EIO
		}
	}
	type savedInline struct {
		l   *inlineLayer
		ver uint64
		del bool
	}
	var saved []savedInline
	if sync {
		st.dmu.RLock() // the layer list cannot change under us (an upload commit takes it)
	}
	d.mu.Lock()
	var err error
	if !st.deleted {
		m := cache.Mutation{AfterData: afterData}
		attrsSaved := st.unsavedAttrs
		if attrsSaved {
			m.Journal = append(m.Journal, d.updateOp(st)) // first: the local node then carries its revision
		}
		m.PutNodes = []api.Node{d.localNode(st)}
		for _, l := range st.layers {
			il, ok := l.f.(*inlineLayer)
			if !ok {
				continue
			}
			seg, del, changed, ver := il.snapshot()
			if !changed {
				continue
			}
			if del {
				m.DeleteInline = append(m.DeleteInline, [2]uint64{seg.Node, seg.Gen})
			} else {
				m.PutInline = append(m.PutInline, seg)
			}
			saved = append(saved, savedInline{il, ver, del})
		}
		err = d.apply(m)
		if err == nil && attrsSaved {
			st.unsavedAttrs = false
		}
	}
	if urgent && len(ls) > 0 {
		st.urgent = true
	}
	d.mu.Unlock()
	st.dmu.RUnlock()
	release()
	if err != nil {
		return syscall.EIO
	}
	if sync {
		if err := d.store.SyncTree(); err != nil {
			d.log.Error("syncing local store", "err", err)
			return syscall.EIO
		}
	}
	for _, s := range saved {
		s.l.saved(s.ver, s.del)
	}
	if urgent && len(ls) > 0 {
		d.noteClose()
	}
	return 0
}

func isClosed(err error) bool { return errors.Is(err, cache.ErrClosed) }

// checkQuota refuses growth the known quota cannot hold. It runs on every
// growing write, so it reads the running total of queued bytes (O(1)); only
// when that says no does it recount (the total still counts files deleted
// before their upload, so it can only be too high).
func (d *Drive) checkQuota(grow int64) syscall.Errno {
	d.stat.Lock()
	a := d.stat.account
	d.stat.Unlock()
	if a.QuotaLimit > 0 && a.LiveUsed()+d.up.queued.Load()+grow > a.QuotaLimit &&
		a.LiveUsed()+d.queuedBytes()+grow > a.QuotaLimit {
		return syscall.EDQUOT
	}
	if grow > 0 && d.isMember() && d.quotaRefused() {
		// A shared folder's data counts against its owner's quota, which a
		// member's drive does not know: once the cloud refused an upload
		// for it, growing writes fail until an upload goes through again.
		return syscall.EDQUOT
	}
	return d.checkDisk(grow) // disk.go: the embedded cloud's disk
}

// queuedBytes is the data written but not uploaded yet, counted over the
// dirty files; it also resets the running total to that count.
func (d *Drive) queuedBytes() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var n int64
	for _, st := range d.dirty {
		n += st.queued
	}
	d.up.queued.Store(n)
	return n
}

// addQueuedLocked changes st.queued by n, and the running total with it.
// Under d.mu.
func (d *Drive) addQueuedLocked(st *nodeState, n int64) {
	st.queued += n
	d.up.queued.Add(n)
}

// nodeIsFile reports a regular file (symlinks, fifos: no data).
func isReg(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFREG }
