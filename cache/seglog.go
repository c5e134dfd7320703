package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"kumo/internal/chunk"
)

// Small synced data goes into the redo log. An fsync of a segment file
// made two device flushes: the file's fdatasync, then the redo log's (its
// record must not outlive its data). When the file's unsynced data is small
// (at most segLogMax), Sync instead appends the sealed slots to the redo log
// (a segment record), and the store's SyncTree that follows every fsync
// makes them durable with the file's record in one flush. The segment file
// itself is synced later: by the next SyncAll (the 5 s commit, or a data
// sync for a close), or by the checkpoint that starts the log over, which
// syncs every file whose data the log holds first. A restart replays the
// logged slots of the log's epoch into their files (creating a file whose
// directory entry was never synced), whatever badger holds.
//
// Replay writes the logged version of a slot over what the file holds, so
// the log must hold the newest version any durable record depends on,
// and nothing the file holds must be newer and needed. Hence, while a
// file has data in the log (its logEpoch is the log's epoch):
//   - every sync of it logs its unlogged slots, or fdatasyncs the file and
//     then appends "clean" (replay drops its earlier entries): the file holds
//     them all now;
//   - close (Flush) logs what it hands over too (a close's record describes
//     that data and is appended after it);
//   - a truncate (Drop) and a removal append "drop" and "gone" before they
//     happen, so the replay does not bring cut or removed data back.
//
// Entries (the payload of a segment record holds only these):
//
//	3 slot:  node be64 | gen be64 | uvarint index | uvarint length | sealed slot (as in the file)
//	4 drop:  node be64 | gen be64 | uvarint first dropped index
//	5 clean: node be64 | gen be64 (the file holds every earlier entry, synced)
//	6 gone:  node be64 | gen be64 (the file is removed)
//
// A logged slot is opened with the file's key before it is replayed: one
// that does not authenticate is not written (and logged as an error).

const (
	redoSegSlot  = 3
	redoSegDrop  = 4
	redoSegClean = 5
	redoSegGone  = 6

	// segLogMax bounds the unsynced data an fsync puts into the redo log
	// (sealed slots, about 68 KiB each): sqlite's commits change a few
	// segments of the database. More is fdatasynced in place, as before.
	segLogMax = 1 << 20
)

// segLogLimit is the bound for a log of size bytes: a small log (small
// cache budget) takes less, so it still holds many fsyncs.
func segLogLimit(size int64) int64 { return min(segLogMax, size/8) }

func isSegOp(op byte) bool { return op >= redoSegSlot && op <= redoSegGone }

// segOp is one segment-file entry of the redo log.
type segOp struct {
	op        byte
	node, gen uint64
	i         int64  // slot index (slot), first dropped index (drop)
	slot      []byte // sealed slot (slot)
}

func appendSegOp(b []byte, o segOp) []byte {
	b = append(b, o.op)
	b = binary.BigEndian.AppendUint64(b, o.node)
	b = binary.BigEndian.AppendUint64(b, o.gen)
	switch o.op {
	case redoSegSlot:
		b = binary.AppendUvarint(b, uint64(o.i))
		b = binary.AppendUvarint(b, uint64(len(o.slot)))
		b = append(b, o.slot...)
	case redoSegDrop:
		b = binary.AppendUvarint(b, uint64(o.i))
	}
	return b
}

// parseSegPayload decodes a segment record's payload. The bytes passed the
// record's CRC but are still checked: a bad payload is an error.
func parseSegPayload(p []byte) ([]segOp, error) {
	var out []segOp
	for len(p) > 0 {
		o := segOp{op: p[0]}
		if !isSegOp(o.op) {
			return nil, fmt.Errorf("redo segment record: unexpected op %d", o.op)
		}
		if len(p) < 17 {
			return nil, errors.New("redo segment record: short entry")
		}
		o.node = binary.BigEndian.Uint64(p[1:])
		o.gen = binary.BigEndian.Uint64(p[9:])
		p = p[17:]
		if o.op == redoSegSlot || o.op == redoSegDrop {
			v, n := binary.Uvarint(p)
			if n <= 0 || n != uvarintLen(v) || v > maxSegIndex || (o.op == redoSegSlot && v == maxSegIndex) {
				return nil, errors.New("redo segment record: bad index")
			}
			o.i = int64(v)
			p = p[n:]
		}
		if o.op == redoSegSlot {
			l, n := binary.Uvarint(p)
			if n <= 0 || n != uvarintLen(l) || l < segHeader+segTag || l > segHeader+chunk.SegmentSize+segTag || l > uint64(len(p)-n) {
				return nil, errors.New("redo segment record: bad slot length")
			}
			o.slot = p[n : n+int(l)]
			p = p[n+int(l):]
		}
		out = append(out, o)
	}
	return out, nil
}

// segReplay writes the redo log's segment entries into the segment files
// of a store's dirty directory.
type segReplay struct {
	dir string // the store's dirty directory
	key segKey // the segment files' purpose key (Store.segKey)
	log *slog.Logger
}

// replay applies ops (in log order) to the files, syncs what it changed and
// returns once that is durable.
func (r segReplay) replay(ops []segOp) error {
	type fileOps struct {
		trunc int64 // truncate to this many slots first (-1: no)
		slots map[int64][]byte
		gone  bool
	}
	files := map[[2]uint64]*fileOps{}
	var order [][2]uint64
	for _, o := range ops {
		k := [2]uint64{o.node, o.gen}
		fo := files[k]
		if fo == nil {
			fo = &fileOps{trunc: -1, slots: map[int64][]byte{}}
			files[k] = fo
			order = append(order, k)
		}
		switch o.op {
		case redoSegSlot:
			fo.slots[o.i] = o.slot
			fo.gone = false
		case redoSegDrop:
			for i := range fo.slots {
				if i >= o.i {
					delete(fo.slots, i)
				}
			}
			if fo.trunc < 0 || o.i < fo.trunc {
				fo.trunc = o.i
			}
		case redoSegClean:
			*fo = fileOps{trunc: -1, slots: map[int64][]byte{}}
		case redoSegGone:
			*fo = fileOps{trunc: 0, slots: map[int64][]byte{}, gone: true}
		}
	}
	dirChanged := false
	for _, k := range order {
		fo := files[k]
		path := filepath.Join(r.dir, segFileName(k[0], k[1]))
		if fo.gone {
			err := os.Remove(path)
			if err == nil {
				dirChanged = true
			} else if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cache: replay redo log: remove %s: %w", path, err)
			}
			continue
		}
		if len(fo.slots) == 0 && fo.trunc < 0 {
			continue
		}
		created, err := r.replayFile(path, k[0], k[1], fo.trunc, fo.slots)
		if err != nil {
			return fmt.Errorf("cache: replay redo log into %s: %w", path, err)
		}
		dirChanged = dirChanged || created
	}
	if dirChanged {
		if err := syncDir(r.dir); err != nil {
			return fmt.Errorf("cache: replay redo log: %w", err)
		}
	}
	return nil
}

// replayFile truncates the file to trunc slots (if trunc >= 0 and it is
// longer), writes the slots that authenticate, and syncs it.
func (r segReplay) replayFile(path string, node, gen uint64, trunc int64, slots map[int64][]byte) (created bool, err error) {
	aead, err := segFileAEAD(r.key, node, gen)
	if err != nil {
		return false, err
	}
	idx := make([]int64, 0, len(slots))
	for i, slot := range slots {
		if _, _, err := openSlot(nil, aead, node, gen, i, slot); err != nil {
			// Passed the record's CRC, yet does not open: not ours to
			// write. The file keeps what it holds for this slot.
			r.log.Error("local store: a segment logged in the redo log does not authenticate; not replayed (the file keeps its older content for it)",
				"node", node, "gen", gen, "segment", i, "err", err)
			continue
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 && trunc < 0 {
		return false, nil
	}
	slices.Sort(idx)
	var f *os.File
	if len(idx) > 0 {
		// Its directory entry may never have been synced: the log is
		// what makes the file durable then.
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		created = err == nil
	}
	if len(idx) == 0 || errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0o600)
		if len(idx) == 0 && errors.Is(err, os.ErrNotExist) {
			return false, nil // only a truncation, of a file that is not there
		}
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if trunc >= 0 {
		fi, err := f.Stat()
		if err != nil {
			return created, err
		}
		if fi.Size() > trunc*slotStride {
			if err := f.Truncate(trunc * slotStride); err != nil {
				return created, err
			}
		}
	}
	for _, i := range idx {
		if _, err := f.WriteAt(slots[i], i*slotStride); err != nil {
			return created, err
		}
	}
	return created, f.Sync()
}

// logMode reports whether the redo log holds data of f (under syncMu or mu).
func (f *SegmentFile) logMode() bool {
	e := f.logEpoch.Load()
	return e != 0 && e == f.store.redo.epochNow.Load()
}

// syncToLog puts f's unlogged slots into the redo log, if they are few
// enough and the log takes them. done=false: the caller syncs the file
// instead. The data is durable once the log is synced (SyncTree).
func (f *SegmentFile) syncToLog() (done bool, err error) {
	f.mu.Lock() // no slot write while its bytes are read back
	defer f.mu.Unlock()
	if f.closed {
		return true, ErrClosed
	}
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	if f.syncErr != nil {
		return true, f.syncErr
	}
	if f.gone {
		return false, nil
	}
	logMode := f.logMode()
	f.sinceMu.Lock()
	trunc := f.since[-1]
	idx := make([]int64, 0, len(f.unlogged))
	for i := range f.unlogged {
		idx = append(idx, i)
	}
	f.sinceMu.Unlock()
	if len(idx) == 0 {
		if logMode || (!f.unsynced.Load() && !f.dirSync.Load()) {
			return true, nil // what was written is logged, or synced
		}
		return false, nil
	}
	// A truncation not yet synced is a change of the file's size, which
	// only its own sync makes durable (once logged, Drop logs it instead).
	limit := segLogLimit(f.store.redo.size)
	if trunc && !logMode || int64(len(idx))*slotStride > limit {
		return false, nil
	}
	slices.Sort(idx)
	bp := f.slots.Get().(*[]byte)
	defer f.slots.Put(bp)
	payload := make([]byte, 0, len(idx)*(slotStride+32))
	for _, i := range idx {
		buf := (*bp)[:segHeader+chunk.SegmentSize+segTag]
		n, err := f.f.ReadAt(buf, i*slotStride)
		if err != nil && !errors.Is(err, io.EOF) {
			return true, fmt.Errorf("cache: read %s segment %d for the redo log: %w", f.path, i, err)
		}
		if n < segHeader || allZero(buf[:segHeader]) {
			continue // cut since: nothing to log
		}
		lf := binary.BigEndian.Uint32(buf)
		end := segHeader + int(lf) - 1 + segTag
		if lf == 0 || lf-1 > chunk.SegmentSize || end > n {
			return true, fmt.Errorf("cache: segment %d of %s for the redo log: %w", i, f.path, ErrCorrupt)
		}
		payload = appendSegOp(payload, segOp{op: redoSegSlot, node: f.node, gen: f.gen, i: i, slot: buf[:end]})
	}
	if len(payload) == 0 {
		return false, nil
	}
	// In the set before the record is in the log: a checkpoint that
	// starts meanwhile must find the file to sync it (it waits for our
	// locks to do so).
	f.store.addLogged(f)
	ok, _, epoch, err := f.store.redo.appendData(payload, false)
	if err != nil || !ok {
		if !logMode {
			f.store.dropLogged(f)
		}
		return false, err // full, or a checkpoint runs: sync the file
	}
	f.logEpoch.Store(epoch)
	f.sinceMu.Lock()
	for _, i := range idx {
		delete(f.unlogged, i)
	}
	f.sinceMu.Unlock()
	return true, nil
}

// logFinal appends an entry that ends (part of) f's logged data, if the log
// holds any: clean after a sync, drop before a truncate, gone before a
// removal. Caller holds f.mu or f.syncMu so no slot of f is logged meanwhile.
func (f *SegmentFile) logFinal(op byte, from int64) error {
	if !f.logMode() {
		return nil
	}
	ok, _, _, err := f.store.redo.appendData(appendSegOp(nil, segOp{op: op, node: f.node, gen: f.gen, i: from}), true)
	if err == nil && !ok {
		err = errors.New("redo log full") // the reserve holds far more than a log's data records can need
	}
	if err != nil {
		return fmt.Errorf("cache: log the end of %s's logged data: %w", f.path, err)
	}
	if op != redoSegDrop {
		f.logEpoch.Store(0)
		f.store.dropLogged(f)
	}
	return nil
}

// addLogged and dropLogged keep the set of files whose data the log holds.
func (s *Store) addLogged(f *SegmentFile) {
	s.loggedMu.Lock()
	s.logged[f] = struct{}{}
	s.loggedMu.Unlock()
}

func (s *Store) dropLogged(f *SegmentFile) {
	s.loggedMu.Lock()
	delete(s.logged, f)
	s.loggedMu.Unlock()
}

// syncLogged syncs every segment file whose data the redo log holds: a
// checkpoint is about to invalidate those records.
func (s *Store) syncLogged() error {
	files := fileSet(&s.loggedMu, s.logged)
	var errs []error
	for _, f := range files {
		if err := f.syncFileIf(true); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
