package fs

import (
	"sync"
	"time"

	"kumo/cache"
)

// discards holds deleted nodes whose data layers are still to be removed.
// One goroutine (discardLoop) removes them in batches, so one sync of the
// local store's log covers a batch's segment files. A goroutine for each
// deleted node, each waiting for a sync of its own, made an rm -rf wake
// thousands of goroutines after every sync, and with one processor the
// kernel's next requests waited behind them (runnable-but-waiting time in a
// 3 s trace of the rm: 20.9 -> 11.5 goroutine-seconds).
type discards struct {
	mu      sync.Mutex
	pending []*nodeState
	kick    chan struct{}
}

// discardGather is how long the remover lets deletions gather after the
// first one: a burst's files are removed a batch at a time, with one sync a
// batch, while the burst goes on.
const discardGather = 100 * time.Millisecond

// discard queues a deleted node's layers for removal. Under d.mu or not.
func (d *Drive) discard(st *nodeState) {
	d.discards.mu.Lock()
	d.discards.pending = append(d.discards.pending, st)
	d.discards.mu.Unlock()
	kick(d.discards.kick)
}

// discardLoop removes queued nodes' layers until the drive stops, and what
// was queued before it stopped.
func (d *Drive) discardLoop() {
	defer d.wg.Done()
	for {
		select {
		case <-d.discards.kick:
		case <-d.ctx.Done():
			d.discardQueued()
			return
		}
		sleepCtx(d.ctx, discardGather)
		d.discardQueued()
	}
}

// discardQueued removes the layers of every node queued so far: the inline
// ones one by one, the segment files together. A node whose upload is
// reading its layers is queued again once the upload ends (discardAfterUpload).
func (d *Drive) discardQueued() {
	d.discards.mu.Lock()
	sts := d.discards.pending
	d.discards.pending = nil
	d.discards.mu.Unlock()
	var files []*cache.SegmentFile
	for _, st := range sts {
		st.dmu.Lock()
		if st.uploading {
			st.dmu.Unlock()
			go d.discardAfterUpload(st)
			continue
		}
		ls := st.layers
		st.layers = nil
		st.dmu.Unlock()
		for _, l := range ls {
			if f, ok := l.f.(*cache.SegmentFile); ok {
				files = append(files, f)
			} else if err := l.f.Remove(); err != nil {
				d.log.Warn("removing a deleted file's data", "node", st.id, "err", err)
			}
		}
	}
	if len(files) == 0 {
		return
	}
	if err := d.store.RemoveSegmentFiles(files); err != nil {
		d.log.Warn("removing deleted files' segment files (what is left is removed at the next mount)", "files", len(files), "err", err)
	}
}

// discardAfterUpload waits for the upload reading a deleted node's layers,
// then queues the node again. Queued after the drive stopped, its files are
// left to the next mount, which drops write-back data of deleted nodes.
func (d *Drive) discardAfterUpload(st *nodeState) {
	st.dmu.Lock()
	d.waitUpload(st) // data.go
	st.dmu.Unlock()
	d.discard(st)
}
