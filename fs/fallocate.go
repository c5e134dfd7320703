package fs

import (
	"context"
	"syscall"
	"time"

	"kumo/cache"
	"kumo/internal/chunk"
)

// fallocate(2) modes the drive implements (linux/falloc.h). The kernel
// checks the combinations before the request comes here (PUNCH_HOLE needs
// KEEP_SIZE); the drive checks again.
const (
	fallocKeepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	fallocZeroRange = 0x10 // FALLOC_FL_ZERO_RANGE
)

// fallocate implements:
//   - mode 0 and KEEP_SIZE: preallocate [off, off+length); mode 0 also
//     extends the size. The cloud reserves nothing, but the known quota must
//     hold the growth, and the range reports as allocated (st_blocks), as on
//     a local disk;
//   - PUNCH_HOLE|KEEP_SIZE: the range reads as zeros, the size stays;
//   - ZERO_RANGE: the range reads as zeros and is preallocated; without
//     KEEP_SIZE it extends the size.
//
// Zeros take no room in the cloud: a chunk left all zeros uploads as a hole.
func (d *Drive) fallocate(ctx context.Context, st *nodeState, off, length uint64, mode uint32) syscall.Errno {
	switch mode {
	case 0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocZeroRange | fallocKeepSize:
	default:
		return syscall.EOPNOTSUPP
	}
	if length == 0 {
		return syscall.EINVAL
	}
	end := off + length
	if end < off || end > maxFileSize {
		return syscall.EFBIG // as the kernel does past a file system's s_maxbytes
	}
	d.mu.Lock()
	size := st.attrs.Size
	d.mu.Unlock()
	punch := mode&fallocPunchHole != 0
	switch {
	case punch:
	case mode&fallocKeepSize == 0 && end > size:
		if e := d.truncate(ctx, st, end); e != 0 { // checks the quota for the growth
			return e
		}
	case end > size:
		if e := d.checkQuota(int64(end - max(off, size))); e != 0 {
			return e
		}
	}
	if mode&(fallocPunchHole|fallocZeroRange) != 0 {
		if e := d.zeroRange(ctx, st, off, end); e != 0 {
			return e
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if punch {
		st.prealloc = st.prealloc.punch(extent{off, end})
	} else {
		st.prealloc = st.prealloc.add(extent{off, end})
	}
	if mode&(fallocPunchHole|fallocZeroRange) != 0 {
		now := nowNs()
		st.attrs.Mtime, st.attrs.Ctime = now, now
	}
	if err := d.persistLocked(st); err != nil {
		d.log.Error("saving the local tree", "node", st.id, "err", err)
		return syscall.EIO
	}
	return 0
}

// zeroRange makes [off, end) ∩ [0, size) read as zeros. Segments no layer
// and not the base holds already do; every other one is written again to
// the top layer with the range cleared (whole segments as zeros, which the
// upload turns into holes where a whole chunk is zeros).
func (d *Drive) zeroRange(ctx context.Context, st *nodeState, off, end uint64) syscall.Errno {
	st.cacheMu.Lock() // no page-cache store of the old content in flight (pagecache.go)
	defer st.cacheMu.Unlock()
	st.dmu.Lock()
	defer st.dmu.Unlock()
	v := d.view(st)
	end = min(end, v.size)
	if off >= end {
		return 0
	}
	held := map[int64]bool{}
	for _, l := range v.layers {
		segs, err := l.f.Present()
		if err != nil {
			d.log.Error("write-back store", "node", st.id, "err", err)
			return syscall.EIO
		}
		for _, j := range segs {
			held[j] = true
		}
	}
	var top *layer
	buf := make([]byte, segSize) // WriteSegment does not keep it
	for j := int64(off / segSize); uint64(j)*segSize < end; j++ {
		if !held[j] && !baseHolds(v, j) {
			continue
		}
		if top == nil {
			t, err := d.topLayer(st, v.size <= cache.InlineMax)
			if err != nil {
				d.log.Error("write-back store", "node", st.id, "err", err)
				return syscall.EIO
			}
			top, v.layers = t, st.layers
		}
		start := uint64(j) * segSize
		n := min(segSize, v.size-start)
		lo, hi := max(off, start)-start, min(end, start+n)-start
		p := buf[:n]
		clear(p)
		if lo > 0 || hi < n {
			old, err := d.segment(ctx, st, v, j, false)
			if err != nil {
				return errno(err)
			}
			copy(p, old)
			clear(p[lo:hi])
		}
		if err := top.f.WriteSegment(j, p); err != nil {
			d.log.Error("write-back store", "node", st.id, "err", err)
			return syscall.EIO
		}
	}
	if top != nil {
		d.mu.Lock()
		st.lastWrite = time.Now()
		d.dirty[st.id] = st
		d.mu.Unlock()
	}
	return 0
}

// baseHolds reports whether the base chunks hold data for segment j (see
// baseSegment).
func baseHolds(v dataView, j int64) bool {
	off := uint64(j) * segSize
	if off >= v.trunc || off >= v.size {
		return false
	}
	ci := chunkOf(off)
	if ci >= len(v.base) || v.base[ci].ID.IsZero() {
		return false
	}
	return int((off%chunk.Size)/segSize) < chunk.Segments(int(v.base[ci].Len))
}

// extent is the byte range [start, end) a file has preallocated
// (fallocate); empty when end <= start. One extent per file is kept: the
// smallest covering every preallocation, so st_blocks, an estimate
// anyway, may count a gap between two of them.
type extent struct{ start, end uint64 }

func (e extent) empty() bool { return e.end <= e.start }

// add is the smallest extent covering e and o.
func (e extent) add(o extent) extent {
	if e.empty() {
		return o
	}
	return extent{min(e.start, o.start), max(e.end, o.end)}
}

// cut drops what lies at or beyond size (truncate frees it, as on ext4).
func (e extent) cut(size uint64) extent {
	e.end = min(e.end, size)
	if e.empty() {
		return extent{}
	}
	return e
}

// punch removes o from e where o covers one of e's ends (a hole punched in
// the middle still counts).
func (e extent) punch(o extent) extent {
	if o.start <= e.start && o.end > e.start {
		e.start = o.end
	}
	if o.start < e.end && o.end >= e.end {
		e.end = o.start
	}
	if e.empty() {
		return extent{}
	}
	return e
}

// bytes is e's length.
func (e extent) bytes() uint64 {
	if e.empty() {
		return 0
	}
	return e.end - e.start
}
