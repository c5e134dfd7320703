package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/cache"
	"kumo/internal/chunk"
	"kumo/internal/meta"
	"kumo/internal/procs"
	"kumo/remote/api"
)

const (
	uploadFiles    = 4 // files of more than one segment uploaded at once
	uploadParallel = 4 // chunks of one file uploaded at once
	// uploadSmall is how many files of at most one segment (one small
	// chunk each) are uploaded at once: the cloud commits concurrent small
	// uploads together (one sync for many), so many in flight is what makes
	// thousands of small files cheap, and each holds at most 64 KiB. Each
	// upload also does local work between its requests, so only part of
	// them wait on the cloud's commit at a time: with 32, the Go tree's
	// 10,174 small chunks took 721 commits (14 a commit); with 128 (and the
	// cloud's batch at 128), 177.
	uploadSmall = 128
	// While foreground requests keep coming, at most this many run.
	uploadFilesBusy = 1
	uploadSmallBusy = 8
)

// isSmallUpload reports a file whose upload is one small chunk. Under d.mu.
func isSmallUpload(st *nodeState) bool { return st.attrs.Size <= segSize }

// uploadLoop starts uploads of dirty files: after their quiet time, at once
// when closed or flushed, and retries failures with backoff.
func (d *Drive) uploadLoop() {
	defer d.wg.Done()
	sem := make(chan struct{}, uploadFiles)
	semSmall := make(chan struct{}, uploadSmall)
	backoff := time.Duration(0)
	var retryAt time.Time
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var mu sync.Mutex // guards failed, backoff, busy
	failed := false
	busy := map[uint64]bool{} // nodes being uploaded
	var ready readyList       // candidates picked beyond the free slots
	for {
		select {
		case <-d.ctx.Done():
			for range uploadFiles {
				sem <- struct{}{}
			}
			for range uploadSmall {
				semSmall <- struct{}{}
			}
			return
		case <-t.C:
		case <-d.uploadKick:
		case <-d.quota.resume: // quota grew or `sync` was asked (quota.go)
			mu.Lock()
			retryAt, backoff, failed = time.Time{}, 0, false
			mu.Unlock()
		}
		if time.Now().Before(retryAt) || d.uploadPaused() {
			continue
		}
		mu.Lock()
		if failed {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			retryAt = time.Now().Add(backoff)
			failed = false
			mu.Unlock()
			continue
		}
		free, freeSmall := cap(sem)-len(sem), cap(semSmall)-len(semSmall)
		if d.up.flushing.Load() == 0 && d.foregroundActive() {
			// The kernel is asking for things (a grep, an rm -rf): uploads
			// go on, fewer at once, so they do not take both cores from it.
			free = max(0, min(free, uploadFilesBusy-len(sem)))
			freeSmall = max(0, min(freeSmall, uploadSmallBusy-len(semSmall)))
		}
		mu.Unlock()
		if free == 0 && freeSmall == 0 {
			continue // a finishing upload kicks again
		}
		mu.Lock()
		if !ready.fresh(d) && (ready.mayScan(d.closedHeld) || d.up.flushing.Load() > 0 && len(ready.cands) == 0) {
			ready.scan(d, busy)
		}
		cands := ready.take(free, freeSmall)
		for _, c := range cands {
			busy[c.st.id] = true
		}
		mu.Unlock()
		for _, c := range cands {
			st, slot := c.st, sem
			if c.small {
				slot = semSmall
			}
			slot <- struct{}{} // never blocks: at most free candidates of each kind
			d.uploadsRunning.Add(1)
			go func() {
				defer func() {
					mu.Lock()
					delete(busy, st.id)
					mu.Unlock()
					<-slot
					d.uploadsRunning.Add(-1)
					kick(d.uploadKick)
				}()
				err := d.upload(st)
				if err != nil {
					d.noteErr(err)
					d.log.Warn("upload failed; will retry", "node", st.id, "err", err)
					mu.Lock()
					failed = true
					mu.Unlock()
				} else {
					mu.Lock()
					backoff = 0
					mu.Unlock()
				}
			}()
		}
	}
}

// uploadState coalesces uploads of closed files: they start once closes
// pause (a writer creating many files is not slowed by uploads competing
// for the disk after every close) or when many wait.
type uploadState struct {
	lastClose atomic.Int64 // unix ns of the last close that left data to upload
	flushing  atomic.Int32 // Flush calls running: upload closed files at once
	// queued is the running total of nodeState.queued over the dirty files,
	// for the quota check on every growing write (checkQuota). Changed only
	// under d.mu (addQueuedLocked); it may still count a file deleted before
	// its upload until queuedBytes recounts.
	queued atomic.Int64
	scans  atomic.Int64 // passes over the dirty files (readyList.scan), for /metrics
}

// uploadBacklog and uploadBacklogBytes bound how much closed data may wait
// for closes to pause: uploads during a burst of closes compete with each
// close's own flush of the local log (the cloud's commits flush the same
// disk when the cloud is embedded), and the waiting data is durable locally.
// A burst bigger than this (a copy of more than 65,536 files, or than a
// quarter of the cache budget, at most 1 GiB) uploads as it goes.
const uploadBacklog = 65536

func (d *Drive) uploadBacklogBytes() int64 { return min(1<<30, d.store.Budget()/4) }

// Background work (uploads, pushes) that waited for closes to pause also
// waits while the kernel keeps asking for metadata or data (an ls -lR, a
// build reading sources right after a copy): on two cores it would slow
// every request down several times. It waits at most foregroundMax after
// the last change, so a busy reader cannot hold the uploads back for long.
const (
	foregroundIdle = 200 * time.Millisecond
	foregroundMax  = 10 * time.Second
)

// noteForeground records a request from the kernel (FUSE handlers).
func (d *Drive) noteForeground() { d.fgAt.Store(time.Now().UnixNano()) }

// loadCounts count the kernel's requests by kind since the mount (Load).
type loadCounts struct {
	changes, dataOps, dataBytes atomic.Int64
	// switches counts changes whose caller (thread) was not the previous
	// change's: about none for one writer, about one a change for several.
	switches atomic.Int64
	caller   atomic.Uint32
}

// noteChange counts a request that changes the tree (create, unlink,
// rename, link, attributes, a close after writing) and its caller. Counted
// here, in the kernel's requests, not where changes are queued: the
// uploader's commits are changes too, and a drain of small uploads is not
// a burst of the user's.
func (d *Drive) noteChange(ctx context.Context) {
	d.load.changes.Add(1)
	if c, ok := fuse.FromContext(ctx); ok && d.load.caller.Swap(c.Pid) != c.Pid {
		d.load.switches.Add(1)
	}
}

// noteData counts a read or write of n bytes.
func (d *Drive) noteData(n int) {
	d.load.dataOps.Add(1)
	d.load.dataBytes.Add(int64(n))
}

// Load is what the kernel asked of the mount since it started (its shared
// folders included): changes to the tree, and reads and writes of data.
// The mount command chooses its processor count from it (internal/procs).
func (d *Drive) Load() procs.Load {
	return procs.Load{Changes: d.load.changes.Load(), DataOps: d.load.dataOps.Load(), DataBytes: d.load.dataBytes.Load(),
		CallerSwitches: d.load.switches.Load()}
}

// foregroundBusy says whether background work should still wait for
// foreground requests to pause, sinceChange after the last local change.
func (d *Drive) foregroundBusy(sinceChange time.Duration) bool {
	return sinceChange < foregroundMax && d.foregroundActive()
}

// foregroundActive says whether the kernel asked for something within
// foregroundIdle.
func (d *Drive) foregroundActive() bool {
	return time.Since(time.Unix(0, d.fgAt.Load())) < foregroundIdle
}

// noteClose records a close with data to upload. It does not wake the
// uploader: closed files wait for closes to pause (or a big backlog), which
// the uploader's ticker notices; a wake-up per close would rescan every
// dirty file per close.
func (d *Drive) noteClose() {
	d.up.lastClose.Store(time.Now().UnixNano())
}

// candidate is a file the uploader may start now; small ones (one small
// chunk) take a slot of their own kind.
type candidate struct {
	st    *nodeState
	small bool
}

// uploadCandidates are up to max dirty files (and maxSmall small ones) ready
// to go, oldest write first, not in busy: files not written for the quiet
// time; closed (or flushed) files once no close happened for the quiet time,
// or when the backlog is large. It runs on every wake-up of the uploader, so
// it is one pass over the dirty files without sorting them all.
func (d *Drive) uploadCandidates(max, maxSmall int, busy map[uint64]bool) []candidate {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	cutoff := now.Add(-d.quiet())
	urgent := 0
	// The oldest of each kind, [0] big and [1] small.
	var oldUrgent, oldQuiet [2][]*nodeState
	limit := [2]int{max, maxSmall}
	for _, st := range d.dirty {
		if st.urgent {
			urgent++
		}
		if busy[st.id] {
			continue
		}
		k := 0
		if isSmallUpload(st) {
			k = 1
		}
		if limit[k] == 0 {
			continue
		}
		// Closed files wait for closes to pause however old they are: a
		// long burst of closes would otherwise upload its older files
		// while it runs and compete with every close.
		if st.urgent {
			oldUrgent[k] = keepOldest(oldUrgent[k], st, limit[k])
		} else if !st.lastWrite.After(cutoff) {
			oldQuiet[k] = keepOldest(oldQuiet[k], st, limit[k])
		}
	}
	mayGo := d.closedMayGo(now, urgent)
	var out []candidate
	for k := range 2 {
		pick := oldQuiet[k]
		if mayGo {
			for _, st := range oldUrgent[k] {
				pick = keepOldest(pick, st, limit[k])
			}
		}
		for _, st := range pick {
			out = append(out, candidate{st, k == 1})
		}
	}
	return out
}

// closesSettled says whether closes have settled: they paused for the
// quiet time (at most a second) and the kernel is not busy with changes, or
// a Flush waits. Busy foreground work holds uploads for up to foregroundMax
// after the last change, not only the last close: an rm -rf closes nothing,
// and uploading the files it is removing competed with it.
func (d *Drive) closesSettled(now time.Time) bool {
	sinceClose := now.Sub(time.Unix(0, d.up.lastClose.Load()))
	sinceChange := min(sinceClose, now.Sub(time.Unix(0, d.lastChange.Load())))
	return d.up.flushing.Load() > 0 || sinceClose >= min(d.quiet(), time.Second) && !d.foregroundBusy(sinceChange)
}

// closedMayGo says whether closed files may start uploading now, urgent of
// them waiting: closes settled, or a backlog (files or bytes) is passed.
func (d *Drive) closedMayGo(now time.Time, urgent int) bool {
	return d.closesSettled(now) || urgent >= uploadBacklog || d.up.queued.Load() >= d.uploadBacklogBytes()
}

// closedHeld says whether closed files wait now (uploadCandidates picks
// none of them): closedMayGo with every dirty file counted as closed, an
// answer without a pass over them. Only a file left open and unwritten for
// the quiet time can go then.
func (d *Drive) closedHeld() bool {
	d.mu.Lock()
	n := len(d.dirty)
	d.mu.Unlock()
	return !d.closedMayGo(time.Now(), n)
}

// readyList keeps what one scan of the dirty files picked beyond the free
// slots, so that each finished upload does not rescan every dirty file (a
// copy of 10,000 files made that quadratic, under d.mu). It is used while no
// close happened since the scan, for at most a second.
type readyList struct {
	at    time.Time
	took  time.Duration // how long the last scan took
	cands []candidate
}

// readySpare is how many times the free slots a scan picks.
const readySpare = 8

func (r *readyList) fresh(d *Drive) bool {
	return len(r.cands) > 0 && time.Since(r.at) < time.Second && d.up.lastClose.Load() < r.at.UnixNano()
}

// readyRescan is the least time between two scans, and at least
// readyScanShare times the last scan's own time. Each finished upload wakes
// the loop, and while files keep closing (a git add writing objects) no
// list stays fresh: without a floor, every finished upload rescanned every
// dirty file under d.mu, holding up the kernel's requests (24 % of the
// daemon's CPU during git add of the Go tree).
//
// While closed files are held (closedHeld), scans come at most every
// heldRescan: a scan can then only find a file left open and unwritten for
// the quiet time, which can wait that much longer, and with one processor
// (internal/procs) each pass over the dirty files held the kernel's next
// request for its whole length (10-15 ms with the Go tree's files dirty,
// every 300 ms during its rm -rf).
const (
	readyRescan    = 50 * time.Millisecond
	readyScanShare = 20
	heldRescan     = time.Second
)

// mayScan says whether a scan may run now, held saying whether closed files
// are held (asked only when the usual gap has passed: it takes d.mu); when
// not, the ticker or the next finished upload comes back.
func (r *readyList) mayScan(held func() bool) bool {
	since := time.Since(r.at)
	if since < max(readyRescan, readyScanShare*r.took) {
		return false
	}
	return since >= heldRescan || !held()
}

func (r *readyList) scan(d *Drive, busy map[uint64]bool) {
	d.up.scans.Add(1)
	r.at = time.Now()
	r.cands = d.uploadCandidates(readySpare*uploadFiles, readySpare*uploadSmall, busy)
	r.took = time.Since(r.at)
}

// take removes and returns up to free candidates of more than one segment
// and freeSmall small ones, oldest first.
func (r *readyList) take(free, freeSmall int) []candidate {
	var out []candidate
	rest := r.cands[:0]
	for _, c := range r.cands {
		if c.small && freeSmall > 0 {
			freeSmall--
			out = append(out, c)
		} else if !c.small && free > 0 {
			free--
			out = append(out, c)
		} else {
			rest = append(rest, c)
		}
	}
	clear(r.cands[len(rest):])
	r.cands = rest
	return out
}

// keepOldest inserts st into out (sorted by lastWrite, at most max long).
func keepOldest(out []*nodeState, st *nodeState, max int) []*nodeState {
	i := sort.Search(len(out), func(i int) bool { return st.lastWrite.Before(out[i].lastWrite) })
	if i >= max {
		return out
	}
	out = slices.Insert(out, i, st)
	if len(out) > max {
		out = out[:max]
	}
	return out
}

// upload freezes st's layers, uploads the touched chunks, and commits the new
// chunk list locally together with the journal op that tells the cloud.
func (d *Drive) upload(st *nodeState) error {
	st.dmu.Lock()
	if st.uploading || len(st.layers) == 0 {
		st.dmu.Unlock()
		return nil
	}
	frozen := slices.Clone(st.layers)
	st.uploading = true
	st.frozenUpTo = frozen[len(frozen)-1].gen
	st.uploadDone = make(chan struct{})
	d.mu.Lock()
	if st.deleted {
		d.mu.Unlock()
		st.uploading = false
		close(st.uploadDone)
		st.dmu.Unlock()
		return nil
	}
	size := st.attrs.Size
	base := st.attrs.Chunks
	trunc := st.trunc
	// New data in a shared folder goes under the share's current key
	// generation (a member removed since cannot open it): chunks under
	// another key id are re-encrypted (buildAndUpload).
	kid := d.writeKID(st.kid)
	queued := st.queued
	st.urgent = false
	d.mu.Unlock()
	st.dmu.Unlock()

	finish := func() {
		st.dmu.Lock()
		st.uploading = false
		st.frozenUpTo = 0
		close(st.uploadDone)
		st.dmu.Unlock()
	}
	refs, err := d.buildAndUpload(st.id, kid, base, trunc, size, frozen)
	if err != nil {
		finish()
		return err
	}

	// Commit: new base, watermark gone, one update op in the journal.
	st.dmu.Lock()
	d.mu.Lock()
	if st.deleted {
		d.mu.Unlock()
		st.uploading = false
		st.frozenUpTo = 0
		close(st.uploadDone)
		st.dmu.Unlock()
		return nil
	}
	st.attrs.Chunks = refs
	st.kid = kid
	st.trunc = noTrunc
	op := d.updateOp(st) // the pushed size is what the chunks hold (pushAttrs)
	m := cache.Mutation{PutNodes: []api.Node{d.localNode(st)}, Journal: []api.BatchOp{op}}
	segFiles := false
	for _, l := range frozen {
		if _, ok := l.f.(*inlineLayer); ok {
			m.DeleteInline = append(m.DeleteInline, [2]uint64{st.id, l.gen})
		} else {
			segFiles = true
		}
	}
	err = d.apply(m)
	if err != nil {
		d.mu.Unlock()
		st.uploading = false
		st.frozenUpTo = 0
		close(st.uploadDone)
		st.dmu.Unlock()
		return fmt.Errorf("commit upload: %w", err)
	}
	st.unsavedAttrs = false // this commit saved them: the op carries them
	d.addQueuedLocked(st, -min(queued, st.queued))
	st.layers = slices.Clone(st.layers[len(frozen):])
	if len(st.layers) == 0 {
		delete(d.dirty, st.id)
		d.addQueuedLocked(st, -st.queued)
	}
	d.mu.Unlock()
	st.uploading = false
	st.frozenUpTo = 0
	close(st.uploadDone)
	st.dmu.Unlock()

	// The data is now in uploaded chunks plus a journal op: the frozen
	// segment files can go once the journal op is on disk. Inline layers went
	// in the same Apply as the op (a crash before it is durable keeps both).
	if segFiles {
		if err := d.store.Sync(); err != nil {
			d.log.Error("syncing local store", "err", err)
		}
	}
	for _, l := range frozen {
		if il, ok := l.f.(*inlineLayer); ok {
			il.gone()
			continue
		}
		if err := l.f.Remove(); err != nil {
			d.log.Warn("removing segment file", "node", st.id, "err", err)
		}
	}
	d.stat.Lock()
	d.stat.uploadedB += int64(size)
	d.stat.Unlock()
	return nil
}

// buildAndUpload returns the new chunk list for size bytes: untouched chunks
// keep their ids; touched ones are rebuilt from base + frozen layers, named,
// and uploaded unless the cloud has them, with the chunk keys of key id kid.
func (d *Drive) buildAndUpload(node uint64, kid meta.KeyID, base []meta.ChunkRef, trunc, size uint64, frozen []*layer) ([]meta.ChunkRef, error) {
	touched := map[int]bool{}
	for _, l := range frozen {
		segs, err := l.f.Present()
		if err != nil {
			return nil, fmt.Errorf("list segments: %w", err)
		}
		for _, j := range segs {
			touched[int(uint64(j)*segSize/chunk.Size)] = true
		}
	}
	n := int((size + chunk.Size - 1) / chunk.Size)
	refs := make([]meta.ChunkRef, n)
	ctx := d.ctx
	v := dataView{size: size, base: base, trunc: trunc, layers: frozen}
	st := &nodeState{id: node}

	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, uploadParallel)
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return first != nil }
	for i := 0; i < n && !failed(); i++ {
		start := uint64(i) * chunk.Size
		need := min(size-start, chunk.Size)
		refs[i].Len = uint32(need)
		var b meta.ChunkRef
		if i < len(base) {
			b = base[i]
		}
		clean := !touched[i] && i < len(base) && uint64(b.Len) == need && (b.ID.IsZero() || start+need <= trunc && d.chunkKID(b.ID) == kid)
		if clean {
			refs[i] = b
			continue
		}
		hasBase := i < len(base) && !b.ID.IsZero() && start < trunc
		if !touched[i] && !hasBase {
			continue // a hole
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var p []byte
			if need >= chunk.Size/2 {
				// A big chunk: a pooled 4 MiB buffer. Only these: every
				// small upload holding one kept 130 MiB of buffers alive
				// while thousands of small files uploaded.
				pb := d.plainBufs.Get().(*[]byte)
				defer d.plainBufs.Put(pb)
				p = (*pb)[:need]
			} else {
				p = make([]byte, need) // its own size, zeroed
			}
			for k := 0; k < chunk.Segments(int(need)); k++ {
				j := int64(start/segSize) + int64(k)
				// Read in place where the segment fits its slot of p.
				dst := p[k*segSize : k*segSize : min((k+1)*segSize, len(p))]
				s, err := d.segmentInto(ctx, st, v, j, true, dst)
				if err != nil {
					fail(fmt.Errorf("read chunk %d of node %d: %w", i, node, err))
					return
				}
				// A reused buffer: what the segment does not cover (a
				// hole, a short last segment) must read as zeros.
				n := copy(p[k*segSize:], s) // a no-op when read in place
				clear(p[k*segSize+n : min((k+1)*segSize, len(p))])
			}
			if allZero(p) {
				return // stays a hole
			}
			id := d.cipherOf(kid).ID(p)
			d.noteChunkKeys(kid, id)
			mu.Lock()
			refs[i].ID = id
			mu.Unlock()
			if err := d.putChunk(ctx, id, p); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return refs, nil
}

// putChunk uploads plaintext p as chunk id unless the cloud has it, and keeps
// the sealed segments in the chunk cache so reads stay local (a remote cloud
// only).
func (d *Drive) putChunk(ctx context.Context, id chunk.ID, p []byte) error {
	hex := id.String()
	// Asking first saves sending a chunk the cloud has; for a chunk of one
	// segment the question costs about as much as the upload (PutChunk of a
	// stored chunk is a no-op), so small files skip it: one request, not two.
	upload := true
	if len(p) > segSize {
		have, err := d.chunks.HaveChunks(ctx, []string{hex})
		if err != nil {
			return fmt.Errorf("have chunks: %w", err)
		}
		upload = len(have) != 1 || !have[0]
	}
	sealed := d.chunkCipher(id).Seal(nil, id, p)
	if upload {
		if err := d.chunks.PutChunk(ctx, hex, sealed); err != nil {
			if errors.Is(err, api.ErrQuota) || errors.Is(err, api.ErrReadOnly) {
				d.stat.Lock()
				d.stat.quotaBlocked = true
				d.stat.Unlock()
			}
			return fmt.Errorf("put chunk: %w", err)
		}
		d.stat.Lock()
		d.stat.quotaBlocked = false
		d.stat.Unlock()
	}
	d.noteOnline()
	if !d.cachesChunks() {
		return nil
	}
	var segs [][]byte
	for off := 0; off < len(sealed); off += chunk.SealedSegmentSize {
		segs = append(segs, sealed[off:min(len(sealed), off+chunk.SealedSegmentSize)])
	}
	if err := d.store.PutSegments(hex, 0, segs); err != nil {
		d.log.Warn("caching uploaded chunk", "chunk", hex, "err", err)
	}
	return nil
}

func allZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// resumeUploads reopens segment files left by an earlier run.
func (d *Drive) resumeUploads() error {
	files, err := d.store.SegmentFiles()
	if err != nil {
		return fmt.Errorf("fs: list segment files: %w", err)
	}
	inl, err := d.store.InlineSegments()
	if err != nil {
		return fmt.Errorf("fs: %w", err)
	}
	type found struct {
		node, gen uint64
		inline    bool
	}
	var all []found
	for _, nf := range files {
		all = append(all, found{nf[0], nf[1], false})
	}
	for _, nf := range inl {
		all = append(all, found{nf[0], nf[1], true})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].node != all[j].node {
			return all[i].node < all[j].node
		}
		return all[i].gen < all[j].gen
	})
	for _, nf := range all {
		node, gen := nf.node, nf.gen
		var f layerFile
		if nf.inline {
			f = resumedInlineLayer(d.store, node, gen)
		} else {
			sf, err := d.store.OpenSegmentFile(node, gen)
			if err != nil {
				return fmt.Errorf("fs: open segment file: %w", err)
			}
			f = sf
		}
		d.mu.Lock()
		st, err := d.stateLocked(node)
		if err != nil {
			d.mu.Unlock()
			d.log.Info("dropping write-back data of a deleted node", "node", node)
			_ = f.Remove()
			continue
		}
		st.layers = append(st.layers, &layer{gen: gen, f: f})
		st.nextGen = max(st.nextGen, gen+1)
		st.urgent = true
		d.dirty[node] = st
		d.mu.Unlock()
	}
	// Data beyond the saved size was never fsync'd: cut it so it cannot reappear.
	d.mu.Lock()
	var sts []*nodeState
	for _, st := range d.dirty {
		sts = append(sts, st)
	}
	d.mu.Unlock()
	for _, st := range sts {
		st.dmu.Lock()
		if err := d.cutLayers(st, d.view(st).size); err != nil {
			d.log.Error("write-back store", "node", st.id, "err", err)
		}
		st.dmu.Unlock()
	}
	if len(sts) > 0 {
		d.log.Info("resuming uploads", "files", len(sts))
	}
	return nil
}
