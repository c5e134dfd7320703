package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Badger is applied behind Apply. A small mutation is recorded in the redo
// log (which is what makes it recoverable: a restart replays the log into
// badger), made visible to readers through an in-memory overlay of the keys
// it writes, and handed to one goroutine that applies queued records to
// badger in batches. Apply so returns without waiting for badger's writer
// (two goroutine hand-offs and a memtable insert per commit, about a quarter
// of a small-file delete's daemon CPU), and a burst of tree operations costs
// one badger commit per batch instead of one each.
//
// Point reads (GetNode, Lookup, GetInline, Cursor) look in the overlay first,
// then in a shared read snapshot of badger (readSnap) taken after the last
// commit: a badger read transaction of its own waits for every commit in
// flight (badger's read watermark), so each lookup of an rm -rf waited for
// the applier's batch commit (UNLINK 252 µs on average).
// Directory listings (List, DirEmpty) merge a directory's queued entry
// writes over the same snapshot. Other scans (the journal, inline
// segments), journal acks, Reset and checkpoints first wait until everything
// queued is in badger ("drain"): they are rare on the paths that queue.
//
// Badger holds, as before, some prefix of the log's records (batches are
// applied in order), which is what replay needs.

const (
	// A mutation bigger than this is applied at once, as one badger
	// transaction (so a huge one still fails whole with ErrTooBig).
	behindMaxEntries = 512
	behindMaxBytes   = 256 << 10
	// Apply waits (backpressure) while this much is queued.
	behindQueueBytes   = 16 << 20
	behindQueueRecords = 8192
	// A batch: at most this much per badger transaction, far below badger's
	// limit (15% of the 16 MiB memtable).
	behindBatchBytes = 1 << 20
	// The applier lets records gather this long before a batch (unless a
	// reader waits for it): one wake-up and one commit for a burst, and a
	// key written several times in it (a new file's node: create, chmod,
	// utimes, close) goes into badger's memtable once.
	behindGather = 2 * time.Millisecond
	// When queued records wait for their data to be synced (AfterData),
	// the applier lets them gather this long (unless a reader waits), so
	// one round of fdatasyncs covers the closes of that while. Reads meanwhile
	// see the records (overlay); only scans wait.
	behindDataWait = 100 * time.Millisecond
)

// pendingWrite is the latest queued write of a key.
type pendingWrite struct {
	v   []byte
	del bool
	rec uint64 // number of the record that wrote it
}

type behindRecord struct {
	n       uint64
	entries []redoEntry
	size    int
	pos     redoPos // badger's redo position once it holds this record (zero: none to write)
	fence   uint64  // an AfterData record's number (Store.fenced): badger gets it once syncData covered it
	// needLog: segment data logged before this record (seglog.go), at
	// redoLog.appended = needLog: badger gets the record once a log sync
	// covered it, or the segment files were synced.
	needLog int64
}

// writeBehind is the overlay and the queue of records not yet in badger.
type writeBehind struct {
	db  *badger.DB
	log *slog.Logger
	// dataBefore makes the data of AfterData records up to fence durable
	// (Store.syncDataUpTo) before badger gets them: badger's files reach
	// the disk when the kernel likes, so badger must not hold a file's new
	// size before the disk holds its bytes.
	dataBefore func(fence uint64) error
	dataSynced *atomic.Uint64 // Store.dataSynced
	// logData is the redo log (its durableBytes say which needLog is met);
	// syncFiles syncs every segment file (Store.syncData), which meets any.
	logData   *redoLog
	syncFiles func() error
	// applying is held while a batch is written to badger (tests hold it to
	// keep records queued).
	applying sync.Mutex

	mu      sync.Mutex
	changed *sync.Cond // records queued or applied, or closing
	over    map[string]pendingWrite
	// entryKeys holds, per directory, the entry keys with a queued write
	// (put or delete), so listings merge them without scanning over.
	entryKeys map[uint64]map[string]struct{}
	queue     []behindRecord
	queued    uint64 // records queued so far
	applied   uint64 // records applied to badger so far
	bytes     int    // size of the records in queue and in the batch being applied
	err       error  // first failure to apply: sticky, the store is unusable
	closing   bool
	fence     uint64 // highest AfterData number queued so far
	needLog   int64  // highest needLog queued so far
	done      chan struct{}
	hurry     chan struct{} // someone waits: apply without gathering
	// snap is badger as of the last commit of tree keys (renew); point
	// reads that miss over use it. Under mu.
	snap *readSnap
}

// readSnap is a read-only badger transaction shared by point reads. Every
// key that left the overlay was committed before the snapshot was taken
// (the applier renews it after its commit, before it drops the batch's keys
// from over), so overlay-then-snapshot reads see every applied write.
// Listings iterate it too: a read-only transaction's NewIterator and
// Iterator.Close change only an atomic count of iterators.
// Badger's read-only Txn.Get and Item.Value change no state of the
// transaction (badger v4.9.6; its docs call transactions not thread-safe
// in general, so TestSnapshotConcurrent runs this under -race); refs (under
// writeBehind.mu) keeps one from being discarded while a reader uses it.
type readSnap struct {
	txn   *badger.Txn
	refs  int
	stale bool // replaced: discard once refs is 0
}

func newWriteBehind(db *badger.DB, log *slog.Logger, dataBefore func(uint64) error, dataSynced *atomic.Uint64) *writeBehind {
	w := &writeBehind{db: db, log: log, dataBefore: dataBefore, dataSynced: dataSynced, over: map[string]pendingWrite{}, entryKeys: map[uint64]map[string]struct{}{}, done: make(chan struct{}), hurry: make(chan struct{}, 1)}
	w.changed = sync.NewCond(&w.mu)
	w.snap = &readSnap{txn: db.NewTransaction(false)}
	go w.run()
	return w
}

// read calls fn with key's value: the queued write if any, else badger's
// as of the last commit. A missing or deleted key is badger.ErrKeyNotFound.
func (w *writeBehind) read(key []byte, fn func([]byte) error) error {
	w.mu.Lock()
	if pw, ok := w.over[string(key)]; ok {
		w.mu.Unlock()
		if pw.del {
			return badger.ErrKeyNotFound
		}
		return fn(pw.v)
	}
	sn := w.snap
	if sn == nil {
		w.mu.Unlock()
		return ErrClosed
	}
	sn.refs++
	w.mu.Unlock()
	defer w.release(sn)
	it, err := sn.txn.Get(key)
	if err != nil {
		return err
	}
	return it.Value(fn)
}

// release ends a reader's use of sn.
func (w *writeBehind) release(sn *readSnap) {
	w.mu.Lock()
	sn.refs--
	if sn.refs == 0 && sn.stale {
		sn.txn.Discard()
	}
	w.mu.Unlock()
}

// newSnap takes a snapshot of badger as it is now. Taken outside mu: it
// waits for commits in flight.
func (w *writeBehind) newSnap() *readSnap {
	return &readSnap{txn: w.db.NewTransaction(false)}
}

// installLocked makes sn the snapshot point reads use. Under mu.
func (w *writeBehind) installLocked(sn *readSnap) {
	old := w.snap
	if old == nil { // closed
		sn.txn.Discard()
		return
	}
	w.snap = sn
	old.stale = true
	if old.refs == 0 {
		old.txn.Discard()
	}
}

// renew makes point reads see what was committed to badger directly (not
// through the queue: Store.applyNow, Reset). The writer calls it before it
// returns, so its caller's next read sees the write.
func (w *writeBehind) renew() {
	sn := w.newSnap()
	w.mu.Lock()
	w.installLocked(sn)
	w.mu.Unlock()
}

// add queues a record (its entries must not be modified afterwards) and makes
// its writes visible to get. It waits while the queue is full.
func (w *writeBehind) add(entries []redoEntry, size int, pos redoPos, fence uint64, needLog int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.err == nil && (w.bytes >= behindQueueBytes || len(w.queue) >= behindQueueRecords) {
		w.hurryUp()
		w.changed.Wait()
	}
	if w.err != nil {
		return w.err
	}
	if w.closing {
		return ErrClosed
	}
	w.queued++
	w.fence = max(w.fence, fence)
	w.needLog = max(w.needLog, needLog)
	for _, e := range entries {
		w.setOver(string(e.k), pendingWrite{v: e.v, del: e.del, rec: w.queued}, true)
	}
	w.queue = append(w.queue, behindRecord{n: w.queued, entries: entries, size: size, pos: pos, fence: fence, needLog: needLog})
	w.bytes += size
	w.changed.Broadcast()
	return nil
}

// setOver puts pw as key's queued write (keep) or removes key's, keeping
// entryKeys in step. Under w.mu.
func (w *writeBehind) setOver(key string, pw pendingWrite, keep bool) {
	if len(key) >= 9 && key[0] == kindEntry {
		dir := binary.BigEndian.Uint64([]byte(key[1:9]))
		ks := w.entryKeys[dir]
		if keep {
			if ks == nil {
				ks = map[string]struct{}{}
				w.entryKeys[dir] = ks
			}
			ks[key] = struct{}{}
		} else if ks != nil {
			delete(ks, key)
			if len(ks) == 0 {
				delete(w.entryKeys, dir)
			}
		}
	}
	if keep {
		w.over[key] = pw
	} else {
		delete(w.over, key)
	}
}

// dirEmpty reports whether directory dir has no entries, queued writes
// included, without waiting for them to reach badger: list, stopped at the
// first entry.
func (w *writeBehind) dirEmpty(dir uint64) (bool, error) {
	err := w.list(dir, func(_, _ []byte) error { return errNotEmpty })
	if errors.Is(err, errNotEmpty) {
		return false, nil
	}
	return err == nil, err
}

// errNotEmpty stops dirEmpty's listing at the first entry.
var errNotEmpty = errors.New("cache: directory not empty")

// list calls fn with the key and value of every entry of directory dir,
// queued writes included, without waiting for them to reach badger (a
// listing during an rm -rf waited for the applier's commit: READDIRPLUS
// 576 µs median). It takes the snapshot and a copy of dir's queued writes
// in one step under mu: every key that left over before then is in the
// snapshot, and a queued write is newer than the snapshot's value. Badger's
// keys come in key order, then the queued puts of keys badger lacks, in
// key order. fn must not keep key or v.
func (w *writeBehind) list(dir uint64, fn func(key, v []byte) error) error {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
	sn := w.snap
	if sn == nil {
		w.mu.Unlock()
		return ErrClosed
	}
	var queued map[string]pendingWrite
	if ks := w.entryKeys[dir]; len(ks) > 0 {
		queued = make(map[string]pendingWrite, len(ks))
		for k := range ks {
			pw, ok := w.over[k]
			if !ok { // setOver keeps them in step: a bug, not a state to read
				w.mu.Unlock()
				return fmt.Errorf("cache: list %d: queued entry %x not in the overlay", dir, k)
			}
			queued[k] = pw
		}
	}
	sn.refs++
	w.mu.Unlock()
	defer w.release(sn)
	it := sn.txn.NewIterator(badger.IteratorOptions{Prefix: entryPrefix(dir)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if pw, ok := queued[string(item.Key())]; ok {
			delete(queued, string(item.Key()))
			if !pw.del {
				if err := fn(item.Key(), pw.v); err != nil {
					return err
				}
			}
			continue
		}
		if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
			return err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(queued)) {
		if pw := queued[k]; !pw.del {
			if err := fn([]byte(k), pw.v); err != nil {
				return err
			}
		}
	}
	return nil
}

// drain waits until every record queued so far is in badger.
func (w *writeBehind) drain() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for target := w.queued; w.applied < target && w.err == nil; {
		w.hurryUp()
		w.changed.Wait()
	}
	return w.err
}

// hurryUp ends the applier's gathering pause, if it is in one.
func (w *writeBehind) hurryUp() {
	select {
	case w.hurry <- struct{}{}:
	default:
	}
}

// failed returns the sticky apply error, if any.
func (w *writeBehind) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// close stops the goroutine after it applied what is queued.
func (w *writeBehind) close() {
	w.mu.Lock()
	w.closing = true
	w.changed.Broadcast()
	w.mu.Unlock()
	w.hurryUp()
	<-w.done
	w.mu.Lock()
	w.snap.stale = true
	if w.snap.refs == 0 {
		w.snap.txn.Discard()
	}
	w.snap = nil // reads after close: ErrClosed
	w.mu.Unlock()
}

func (w *writeBehind) run() {
	defer close(w.done)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.queue) == 0 && !w.closing {
			w.changed.Wait()
		}
		if len(w.queue) == 0 || w.err != nil {
			if w.closing {
				return
			}
			w.changed.Wait()
			continue
		}
		if !w.closing && w.bytes < behindBatchBytes {
			wait := behindGather
			if w.dataSynced != nil && w.fence > w.dataSynced.Load() {
				wait = behindDataWait // one data sync for the closes of this while
			}
			if w.logData != nil && w.needLog > w.logData.durableBytes.Load() {
				wait = behindDataWait // the fsync that logged the data syncs the log meanwhile
			}
			w.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-w.hurry:
				t.Stop()
			}
			w.mu.Lock()
		}
		n, size := 0, 0
		for n < len(w.queue) && (n == 0 || size+w.queue[n].size <= behindBatchBytes) {
			size += w.queue[n].size
			n++
		}
		batch := w.queue[:n:n]
		var fence uint64
		var needLog int64
		for _, r := range batch {
			fence = max(fence, r.fence)
			needLog = max(needLog, r.needLog)
		}
		w.mu.Unlock()
		var err error
		if fence > 0 && w.dataBefore != nil {
			err = w.dataBefore(fence)
		}
		if err == nil && w.logData != nil && needLog > w.logData.durableBytes.Load() {
			// No log sync covered the logged data yet (a reader waits, or
			// the fsync failed): the files' own sync makes it durable.
			err = w.syncFiles()
		}
		w.applying.Lock()
		if err == nil {
			err = applyRecords(w.db, batch)
		}
		w.applying.Unlock()
		var sn *readSnap
		if err == nil {
			sn = w.newSnap()
		}
		w.mu.Lock()
		if err != nil {
			w.err = fmt.Errorf("cache: apply to badger: %w", err)
			w.log.Error("local store: applying changes to badger failed; every later change and close fails with EIO. "+
				"Every change made so far is in the redo log: fix the cause (disk full? I/O errors?) and remount to replay it",
				"err", err)
			w.changed.Broadcast()
			continue
		}
		w.installLocked(sn) // before the batch's keys leave over
		w.queue = w.queue[n:]
		if len(w.queue) == 0 {
			w.queue = nil // let the old array go
		}
		last := batch[n-1].n
		for i, r := range batch {
			if i%32 == 31 {
				// A batch may hold thousands of keys: let readers (every
				// lookup goes through get) in between.
				w.mu.Unlock()
				w.mu.Lock()
			}
			for _, e := range r.entries {
				if pw, ok := w.over[string(e.k)]; ok && pw.rec <= last {
					w.setOver(string(e.k), pw, false)
				}
			}
		}
		w.applied = last
		w.bytes -= size
		w.changed.Broadcast()
	}
}

// applyRecords writes records to db in order, in one transaction that also
// sets badger's redo position (redo.go) to the last record's. If they do not
// fit one transaction, each record gets its own (a record alone always fits:
// bigger mutations are applied at once, not queued), so every commit ends at
// a record boundary and carries its position: whatever badger keeps after a
// crash is a whole prefix of the records, and says which.
func applyRecords(db *badger.DB, recs []behindRecord) error {
	err := applyTxn(db, recs)
	if !errors.Is(err, badger.ErrTxnTooBig) || len(recs) == 1 {
		return err
	}
	for i := range recs {
		if err := applyTxn(db, recs[i:i+1]); err != nil {
			return err
		}
	}
	return nil
}

// applyTxn writes recs and their position in one transaction.
func applyTxn(db *badger.DB, recs []behindRecord) error {
	txn := db.NewTransaction(true)
	defer txn.Discard()
	for _, r := range recs {
		for _, e := range r.entries {
			if err := applyEntry(txn, e); err != nil {
				return err
			}
		}
	}
	if pos := recs[len(recs)-1].pos; pos.epoch != 0 {
		if err := txn.Set(keyRedoPos, pos.encode()); err != nil {
			return err
		}
	}
	return txn.Commit()
}

func applyEntry(txn *badger.Txn, e redoEntry) error {
	if e.del {
		return txn.Delete(e.k)
	}
	return txn.Set(e.k, e.v)
}
