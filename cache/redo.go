package cache

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// The redo log makes the local store's durability points cheap. Every badger
// write the Store makes (Apply, Ack, Reset's cursor delete) is also appended,
// as raw key writes (small mutations before badger gets them: behind.go), to
// a preallocated zero-filled file; making everything so
// far durable is then one fdatasync of that file, which on a file whose
// blocks are all written changes no metadata and costs one device flush —
// instead of badger's Sync, which msyncs its memtable WAL and value log and
// costs a journal commit each (measured on ext4: ~0.25 ms against ~2 ms).
// Durability counts on badger's sync only at checkpoints: when the log is
// full, after Reset, at open and at a clean close (so a clean restart
// replays nothing). The Store also syncs badger in the background as the log
// fills (Store.maybePresync), only so the checkpoint has less to write back.
// At open, the records of the current epoch are replayed into badger in
// order (key sets and deletes are idempotent, and badger holds some prefix
// of the same writes), then badger is synced and the log starts over.
//
// File layout (docs/FORMAT.md, "Local redo log"):
//
//	header (redoHeader bytes): "KUMOREDO" | version u32 | epoch u64 | crc32c(previous 20 bytes)
//	records from offset redoHeader: length u32 | crc32c(epoch be64 | payload) u32 | payload
//	payload: entries, each op u8 (1 set, 2 delete) | uvarint key length | key [| uvarint value length | value]
//	         or segment-file entries (seglog.go), ops 3-6; a record holds one kind only
//
// A record of another epoch (left over from before a checkpoint), a torn
// record and the zeros after the last record all fail the CRC, which ends
// the replay. That holds only if an epoch never repeats within a file: a
// header that does not parse makes openRedo keep the file aside and start a
// new one, and a failed header update fails the log for good (fail).
//
// Records of key writes are numbered (badger's position counts them);
// records of segment-file data (an fsync of a file with little unsynced
// data puts that data here, so the fsync costs one device flush: seglog.go)
// are not, and are replayed whatever badger holds.

const (
	redoFile    = "redo.log"
	redoMaxSize = 16 << 20 // capacity with the default budget: a checkpoint every ~2,500 small-file closes
	redoHeader  = 4096
	redoVersion = 1
	redoMagic   = "KUMOREDO"
	redoRecHead = 8

	redoSet    = 1
	redoDelete = 2

	// redoReserve is room only records that end a file's logging (seglog.go)
	// may use, so they always fit: a file's logged data can always be
	// declared stale after its segment file was synced.
	redoReserve = 16 << 10
)

var redoCRC = crc32.MakeTable(crc32.Castagnoli)

// redoLog is the file and its write position. Records of key writes and
// checkpoints are serialised by the Store's applyMu; segment-file records
// (seglog.go) are appended without it. appendMu serialises the writes
// themselves; syncs may run concurrently with them.
type redoLog struct {
	f    *os.File
	size int64 // capacity (the file's size)
	// m maps the whole file (shared): records under redoWriteMin are
	// copied into it, so an append is a copy into the page cache, not a
	// pwrite (a system call per small-file create, close or unlink, and an
	// inode time update each: 8 % of the daemon's CPU in an rm -rf; through
	// the mapping the time is updated at the first write to a page after
	// each writeback). The page
	// cache holds it just the same (a kill -9 loses nothing) and fdatasync
	// writes it back. The header is written through f. released is the
	// prefix of m whose pages were given back (put), under appendMu.
	m        []byte
	released int64
	// populated is the offset up to which the mapping's pages were made
	// writable ahead of the appends (populateAhead), under appendMu;
	// populating is the goroutine doing it, which close waits for.
	populated  int64
	populating sync.WaitGroup
	popBusy    atomic.Bool
	// popSize is how far ahead populateAhead goes: about what is copied
	// into the mapping between syncs (syncedTo), under appendMu;
	// mappedSince counts those bytes since the last sync.
	popSize     int64
	mappedSince int64
	appendMu    sync.Mutex
	epoch       uint64 // under appendMu (and applyMu to change)
	off         int64  // under appendMu
	count       uint64 // key-write records appended in this epoch (under applyMu)
	buf         []byte // record being built: header room, then entries (under applyMu)
	dbuf        []byte // segment-file record being written (under appendMu)
	// frozen: a checkpoint is syncing the files whose data is logged; no
	// new data goes into the log until the new epoch (under appendMu).
	frozen bool
	// full: segment data did not fit; the next record of key writes
	// checkpoints, so the next fsyncs find room (under appendMu).
	full bool
	sync groupSync
	// appended counts every byte ever appended (never reset): a cheap "was
	// anything logged since" for the periodic commit, read without applyMu.
	appended atomic.Int64
	// durable is the offset (in this epoch's file) up to which the log is
	// known synced; CrashImage drops what follows.
	durable atomic.Int64
	offNow  atomic.Int64 // off, readable without applyMu
	// epochNow is epoch, readable without a lock.
	epochNow atomic.Uint64
	// durableBytes is the value of appended a completed sync covered;
	// dataEnd the value of appended after the last segment data record.
	// Badger gets no record appended after such data before the data is
	// durable (in the log, or in its segment file): badger reaches the disk
	// whenever the kernel writes it back.
	durableBytes atomic.Int64
	dataEnd      atomic.Int64
	// beforeCheckpoint syncs the segment files whose data this epoch's
	// records hold, before the checkpoint invalidates them (Store.syncLogged).
	beforeCheckpoint func() error
	// failure is set (once, for good) when a checkpoint's header update or
	// a sync of the log failed: no record appended after it could be
	// trusted to replay (redoLog.fail).
	failure atomic.Pointer[error]
	// failMu is held shared by a change that reaches badger before its
	// record is in the log (admit), and exclusively by a failed sync while
	// it fails the log (failSync): a sync runs beside Apply, so without it
	// the log could fail between such a change's check and its append, and
	// the change would stand in badger while Apply returned the error.
	failMu sync.RWMutex
	log    *slog.Logger
}

// errRedoFailed is in the chain of every error of a log that failed (fail).
var errRedoFailed = errors.New("the local store's redo log could not be made durable")

// failed returns the log's sticky error, or nil.
func (l *redoLog) failed() error {
	if p := l.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// fail marks the log failed after its header update or one of its syncs
// failed (cause), and returns the sticky error every later append, sync and
// checkpoint returns. Why for good: after a failed write or fdatasync the
// disk may hold either header, and Linux may even mark the failed pages
// clean, so what the page cache shows is not what the disk holds. A later
// successful fdatasync would then report records durable that replay never
// reaches (a record lost in the middle ends the replay, as one of an epoch
// the header does not name does): changes acknowledged durable and lost.
// What a sync acknowledged before is durable, and badger holds what a
// checkpoint synced; the next open replays and checkpoints as usual. The
// cause is kept as text only: an errno in the chain (ENOSPC, EBADF) would
// reach the drive's callers as if retrying could help; this way they get
// EIO. Safe for concurrent use: the first failure is the one kept.
func (l *redoLog) fail(cause error) error {
	err := fmt.Errorf("cache: %w (%v): no change is accepted any more; remount the drive (its open replays the log)", errRedoFailed, cause)
	if !l.failure.CompareAndSwap(nil, &err) {
		return l.failed()
	}
	if l.log != nil {
		l.log.Error("local store: the redo log could not be made durable; every later change and sync fails with EIO. Changes acknowledged so far are safe: fix the cause (disk errors?) and remount the drive",
			"file", l.f.Name(), "err", cause)
	}
	return err
}

// failSync is fail for a failed sync of the log (Store's sync.do), which
// runs beside Apply: it waits until no admitted change is under way, so each
// such change is refused whole or logged whole.
func (l *redoLog) failSync(cause error) error {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	return l.fail(cause)
}

// admit starts a change that badger gets before the log (a big mutation,
// one that did not fit the log): it returns the sticky error if the log
// failed, or holds off a sync's failure (failSync) until done is called, so
// the log cannot fail between this check and the change's append or
// checkpoint. Under applyMu; the caller must not sync the log (SyncTree)
// before done (its own checkpoint fails the log directly: fail).
func (l *redoLog) admit() (done func(), err error) {
	l.failMu.RLock()
	if err := l.failed(); err != nil {
		l.failMu.RUnlock()
		return nil, err
	}
	return l.failMu.RUnlock, nil
}

// keyRedoPos is badger's position in the redo log: be64 epoch | be64 number
// of that epoch's records badger holds. It is written in the same badger
// transaction as the records it counts (behind.go, applyNow), so whatever
// state of badger survives a crash says which records it holds.
//
// Why: badger's files are not synced between checkpoints, but the kernel
// writes them back when it likes (memtable flushes even sync them), so after
// a power loss badger may hold *more* records than the synced log. Replaying
// the log over such a state would roll back only the keys the older records
// wrote, and keep the newer records' other keys: a mix of two states (a
// rename could leave both names). With the position, replay applies only
// the records badger lacks, and applies none when badger is ahead: the store
// is then the longer of the two prefixes, always one consistent state.
var keyRedoPos = []byte("r")

// redoPos is a position: count records of epoch.
type redoPos struct{ epoch, count uint64 }

func (p redoPos) encode() []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, p.epoch)
	binary.BigEndian.PutUint64(b[8:], p.count)
	return b
}

// readRedoPos reads badger's position (zero if none: a store from before
// positions were kept replays its whole log, as it did then).
func readRedoPos(db *badger.DB) (redoPos, error) {
	var p redoPos
	err := db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(keyRedoPos)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if len(v) != 16 {
				return fmt.Errorf("redo position of %d bytes: %w", len(v), ErrCorrupt)
			}
			p = redoPos{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])}
			return nil
		})
	})
	if err != nil {
		return p, fmt.Errorf("cache: read redo position: %w", err)
	}
	return p, nil
}

// redoRecorder records writes for the log and for the write-behind queue
// (behind.go), without a badger transaction: nothing here can fail.
type redoRecorder struct {
	rec     *[]byte
	entries []redoEntry
}

func (r *redoRecorder) set(k, v []byte) {
	*r.rec = appendRedoEntry(*r.rec, redoSet, k, v)
	r.entries = append(r.entries, redoEntry{k: k, v: v})
}

func (r *redoRecorder) del(k []byte) {
	*r.rec = appendRedoEntry(*r.rec, redoDelete, k, nil)
	r.entries = append(r.entries, redoEntry{del: true, k: k})
}

func appendRedoEntry(b []byte, op byte, k, v []byte) []byte {
	b = append(b, op)
	b = binary.AppendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	if op == redoSet {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

// redoEntry is one key write of a record.
type redoEntry struct {
	del  bool
	k, v []byte
}

// uvarintLen is the length of v's canonical encoding: the parser refuses
// others, so one payload has one meaning and one encoding.
func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// parseRedoPayload decodes a record's payload. The bytes passed the CRC but
// are still checked: a bad payload is an error, never a partial replay.
func parseRedoPayload(p []byte) ([]redoEntry, error) {
	var out []redoEntry
	for len(p) > 0 {
		op := p[0]
		p = p[1:]
		if op != redoSet && op != redoDelete {
			return nil, fmt.Errorf("redo record: unknown op %d", op)
		}
		kl, n := binary.Uvarint(p)
		if n <= 0 || n != uvarintLen(kl) || kl == 0 || kl > uint64(len(p)-n) {
			return nil, errors.New("redo record: bad key length")
		}
		p = p[n:]
		e := redoEntry{del: op == redoDelete, k: p[:kl]}
		p = p[kl:]
		if op == redoSet {
			vl, n := binary.Uvarint(p)
			if n <= 0 || n != uvarintLen(vl) || vl > uint64(len(p)-n) {
				return nil, errors.New("redo record: bad value length")
			}
			p = p[n:]
			e.v = p[:vl]
			p = p[vl:]
		}
		out = append(out, e)
	}
	return out, nil
}

// openRedo opens (or creates, zero-filled, size bytes) the log under dir and
// replays its records into db and its segment data into the segment files
// (seg). It ends with a checkpoint, so the log starts empty.
func openRedo(dir string, size int64, db *badger.DB, seg segReplay) (*redoLog, int, error) {
	path := filepath.Join(dir, redoFile)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = createRedo(path, size)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("cache: open redo log: %w", err)
	}
	l := &redoLog{f: f, log: seg.log, popSize: redoPopulate}
	l.sync.do = func() error { return syscall.Fdatasync(int(l.f.Fd())) }
	l.sync.failed = l.failed
	pos, err := readRedoPos(db)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	n, err := l.replay(db, seg, pos)
	var aside string // the damaged log kept aside at this open, if any
	if errors.Is(err, errRedoHeader) {
		// Nothing in the file can be trusted or replayed: its records'
		// epochs are unknown, so a new epoch could match some of them. A
		// new log is started, zero-filled; the damaged file is renamed
		// aside first, not overwritten: it may hold the only copy of
		// fsync'd changes, which someone could still recover by hand.
		//
		// The header is written only by a checkpoint, after badger and the
		// logged segment files were synced: if the power went during that
		// write, every record in the file is already in them and nothing is
		// lost. The header is 24 bytes in the file's first sector, which
		// disks write whole, so that is rare; otherwise the file was damaged,
		// and the changes logged since the last checkpoint (fsync'd ones
		// too) are lost: badger keeps what of them reached it (a prefix),
		// and small fsync'd data that was only in the log is gone. That is
		// not silent: it is logged as an error. Refusing to open would
		// recover nothing more automatically: the records' epoch is unknown.
		l.f.Close()
		l.f = nil
		n = 0
		herr := err
		if aside, err = moveAside(path); err == nil {
			seg.log.Error("local store: the redo log's header is unreadable; the file was kept aside and a new log started. If the power went during a checkpoint nothing is lost (remove the kept file); otherwise the file was damaged and the changes made since the last checkpoint are lost, except what can be recovered from the kept file by hand", "kept", aside, "err", herr)
			l.f, err = createRedo(path, size)
			l.size = size
		}
	}
	if err == nil {
		pruneDamaged(dir, redoKeepDamaged, aside, seg.log)
		// A new epoch must be above every epoch badger's position names:
		// the log may be new (created, moved away, started over) while
		// badger still holds a position in an older file's epoch, and a
		// replay under the same epoch number would skip this file's first
		// records as if badger held them.
		l.epoch = max(l.epoch, pos.epoch)
		err = l.checkpoint(db)
	}
	if err == nil && l.size != size {
		// Another budget: replayed and checkpointed, so the old file can go.
		l.f.Close()
		l.f, err = createRedo(path, size)
		if err == nil {
			l.size = size
			err = l.checkpoint(db)
		}
	}
	if err == nil {
		err = l.mapFile()
	}
	if err != nil {
		if l.f != nil {
			l.f.Close()
		}
		return nil, 0, err
	}
	return l, n, nil
}

// mapFile maps the log's file for appends. Its blocks are all allocated
// (createRedo writes it whole), so on ext4 and XFS a store into the mapping
// never needs room on the disk (on a copy-on-write file system it may: a
// store that finds none faults, and put makes that an error).
func (l *redoLog) mapFile() error {
	m, err := syscall.Mmap(int(l.f.Fd()), 0, int(l.size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("cache: map redo log: %w", err)
	}
	l.m = m
	l.smallPages()
	return nil
}

// smallPages has the log cached in single pages. A kernel that caches a
// file in large folios (ext4 since Linux 6.16, XFS before) writes a dirty
// folio back whole, so a record in a 1 MiB folio made every fdatasync write
// 1 MiB (sqlite: 608 MiB written for 200 commits, 23 MiB on gocryptfs). The
// folios the zero-filling and the replay brought in are dropped, and the
// file is read back without readahead (which allocates single pages), so
// the appends find their pages cached instead of each reading its own
// from the disk; a page evicted later is faulted back alone (MADV_RANDOM:
// no readaround; a pwrite of a big record into evicted pages makes folios
// of its size, at most about 64 KiB). Only hints: without them the log is
// as correct.
func (l *redoLog) smallPages() {
	fd := int(l.f.Fd())
	_ = unix.Fadvise(fd, 0, l.size, unix.FADV_DONTNEED)
	_ = unix.Madvise(l.m, unix.MADV_RANDOM)
	if unix.Fadvise(fd, 0, l.size, unix.FADV_RANDOM) != nil {
		return
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < l.size; off += int64(len(buf)) {
		if _, err := l.f.ReadAt(buf[:min(int64(len(buf)), l.size-off)], off); err != nil {
			return
		}
	}
}

// redoMappedMax is how much of the log's mapping may stay in the process's
// pages: past it, the pages behind the write position are released (the
// page cache keeps them, dirty ones too), so the log adds about this and
// the range populated ahead (redoPopulate) to the daemon's resident memory,
// not its whole size.
const redoMappedMax = 1 << 20

// redoWriteMin: records this big (segment data: an fsync's sealed 64 KiB
// slots) are written with pwrite, not copied into the mapping. A copy
// takes a write fault on each page the last sync cleaned (ext4's
// page_mkwrite), which for sqlite's commits, an fsync every few writes,
// cost more than the system call saves; the page cache is the same.
const redoWriteMin = 16 << 10

// put copies rec into the log at off (or writes it, from redoWriteMin on).
// A page of the file that cannot be read in (a disk error) or, on a
// copy-on-write file system, written faults the copy: that is an error
// here, as it was from a pwrite, not the end of the daemon. (Were the file
// cut short by something else, a pwrite would extend it instead: the bounds
// are the mapping's, the size the log was opened with.) Under appendMu.
func (l *redoLog) put(rec []byte, off int64) error {
	if l.m == nil {
		return fmt.Errorf("cache: write redo log: %w", os.ErrClosed)
	}
	if off < redoHeader || off+int64(len(rec)) > int64(len(l.m)) {
		return fmt.Errorf("cache: write redo log: record of %d bytes at %d outside the %d-byte log", len(rec), off, len(l.m))
	}
	if len(rec) >= redoWriteMin {
		if _, err := l.f.WriteAt(rec, off); err != nil {
			return fmt.Errorf("cache: write redo log: %w", err)
		}
		return nil
	}
	if err := copyFaulting(l.m[off:], rec); err != nil {
		return fmt.Errorf("cache: write redo log: %w", err)
	}
	l.mappedSince += int64(len(rec))
	l.populateAhead(off + int64(len(rec)))
	if off+int64(len(rec))-l.released <= redoMappedMax {
		return nil
	}
	// Whole pages below off: the one being written stays.
	to := off &^ int64(os.Getpagesize()-1)
	if to > l.released && syscall.Madvise(l.m[l.released:to], syscall.MADV_DONTNEED) == nil {
		l.released = to
	}
	return nil
}

// redoPopulate is how far ahead of the appends the mapping's pages are
// made writable at most; redoPopulateMin the least range (below it, none).
const (
	redoPopulate    = 1 << 20
	redoPopulateMin = 64 << 10
)

// populateAhead makes the pages after end writable in the background once
// the appends come within half a range of the last such range. The
// first write to a page of the mapping takes a fault that marks it dirty
// (ext4's page_mkwrite, a journal handle and an inode time update): 7 % of
// the daemon's CPU in a tar of many small files, in the requests that
// append (a close, a create). Ahead of them, another goroutine takes the
// faults (MADV_POPULATE_WRITE, Linux 5.14; an older kernel refuses it and
// the copies fault as before). A page made dirty ahead is written back
// with its old bytes, which replay ignores (zeros, or records of an older
// epoch). Only a hint. Under appendMu.
//
// A sync writes the pages made writable ahead back too, unused, and makes
// them read-only again, so the next write to each faults anyway: with a
// sync every few KiB (sqlite's commits) a 1 MiB range only added writes to
// the fsyncs (the first of each commit: p90 2.0-3.1 ms, 0.8-0.9 without).
// So the range follows what the appends copy into the mapping between
// syncs, from 64 KiB to 1 MiB, or nothing: it grows while the appends since
// the last sync pass it and halves at a sync they did not fill (syncedTo).
// An untar's 5 s commits keep 1 MiB, an rm -rf's syncs every ~125 ms
// 64-512 KiB, sqlite's commits (a few KiB each) nothing.
func (l *redoLog) populateAhead(end int64) {
	// What was copied since the last sync shows the syncs leave at least
	// that much room: the range grows to it (syncedTo shrinks it).
	for l.popSize < l.mappedSince && l.popSize < redoPopulate && l.mappedSince >= redoPopulateMin {
		l.popSize = max(2*l.popSize, redoPopulateMin)
	}
	size := l.popSize
	if size == 0 || end+size/2 < l.populated {
		return
	}
	pg := int64(os.Getpagesize())
	from := max(l.populated, (end+pg-1)&^(pg-1))
	to := min(from+size, int64(len(l.m)))
	if from >= to || !l.popBusy.CompareAndSwap(false, true) {
		return // the log's end, or one runs still
	}
	l.populated = to
	m := l.m[from:to]
	l.populating.Add(1)
	go func() {
		defer l.populating.Done()
		defer l.popBusy.Store(false)
		_ = unix.Madvise(m, unix.MADV_POPULATE_WRITE)
	}()
}

// syncedTo records a sync of the log up to off (bytes appended, as mark
// returned them) and adapts the populate range: when less than the range
// was copied into the mapping since the sync before, the range was too
// long (its end was written back unused) and is halved, to none below
// redoPopulateMin; and the pages past the appends, which the sync wrote
// back and made read-only, count as not populated.
func (l *redoLog) syncedTo(off, bytes int64) {
	l.durable.Store(off)
	l.noteDurable(bytes)
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if l.mappedSince < l.popSize {
		if l.popSize /= 2; l.popSize < redoPopulateMin {
			l.popSize = 0
		}
	}
	l.mappedSince = 0
	l.populated = min(l.populated, l.off)
}

// copyFaulting copies src into dst, returning a memory fault (SIGBUS from a
// mapped file's page that cannot be read or written) as an error. Other
// panics go on.
func copyFaulting(dst, src []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("memory fault at %#x: %v", f.Addr(), r)
				return
			}
			panic(r)
		}
	}()
	copy(dst, src)
	return nil
}

// moveAside renames a damaged log to path.damaged-<unix time> (with a
// suffix if that exists), durably, and returns the new name.
func moveAside(path string) (string, error) {
	base := fmt.Sprintf("%s.damaged-%d", path, time.Now().Unix())
	aside := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s.%d", base, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("cache: the redo log's header is unreadable, and keeping the file aside failed: %w; move %s away by hand to start a new log", err, path)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", fmt.Errorf("cache: keep the damaged redo log as %s: %w", aside, err)
	}
	return aside, nil
}

// redoKeepDamaged is how many damaged logs kept aside (moveAside) stay:
// each is as big as the log and counts against the cache budget, and a disk
// that damages the log again and again would otherwise fill meta/ with them.
const redoKeepDamaged = 3

// pruneDamaged removes all but the keep newest damaged logs kept aside in
// dir (newest by the time and suffix in their names, which moveAside wrote;
// other names are left alone), logging each file removed. The file kept at
// this open (justKept) counts as the newest whatever its name says: a clock
// set back must not remove it at once. A file that cannot be removed is
// logged and left: the store opens anyway.
func pruneDamaged(dir string, keep int, justKept string, log *slog.Logger) {
	type kept struct {
		name      string
		unix, seq uint64
	}
	names, err := filepath.Glob(filepath.Join(dir, redoFile+".damaged-*"))
	if err != nil {
		return // only a bad pattern fails, and this one is fixed
	}
	var all []kept
	for _, p := range names {
		k := kept{name: p}
		rest := strings.TrimPrefix(filepath.Base(p), redoFile+".damaged-")
		ts, suffix, hasSuffix := strings.Cut(rest, ".")
		if k.unix, err = strconv.ParseUint(ts, 10, 64); err != nil {
			continue
		}
		if hasSuffix {
			if k.seq, err = strconv.ParseUint(suffix, 10, 64); err != nil {
				continue
			}
		}
		all = append(all, k)
	}
	if len(all) <= keep {
		return
	}
	slices.SortFunc(all, func(a, b kept) int { // newest first
		if a.name == justKept {
			return -1
		}
		if b.name == justKept {
			return 1
		}
		if c := cmp.Compare(b.unix, a.unix); c != 0 {
			return c
		}
		return cmp.Compare(b.seq, a.seq)
	})
	for _, k := range all[keep:] {
		if err := os.Remove(k.name); err != nil {
			log.Warn("local store: could not remove an old damaged redo log; remove it by hand", "file", k.name, "err", err)
			continue
		}
		log.Warn("local store: removed an old damaged redo log (only the newest are kept)", "file", k.name, "kept", keep)
	}
}

// redoSizeFor is the log's capacity for a cache budget: the log counts
// against the budget, so small budgets get a small log (more checkpoints).
func redoSizeFor(budget int64) int64 {
	return min(max(budget/64, 1<<20), redoMaxSize) &^ (redoHeader - 1)
}

// createRedo writes a zero-filled log of size bytes (so later overwrites
// allocate nothing) with an epoch-0 header, durably, under path.
func createRedo(path string, size int64) (*os.File, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zero)) {
		if _, err := f.Write(zero[:min(int64(len(zero)), size-off)]); err != nil {
			return fail(err)
		}
	}
	if _, err := f.WriteAt(redoHeaderBytes(0), 0); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fail(err)
	}
	return f, nil
}

func redoHeaderBytes(epoch uint64) []byte {
	h := make([]byte, 24)
	copy(h, redoMagic)
	binary.BigEndian.PutUint32(h[8:], redoVersion)
	binary.BigEndian.PutUint64(h[12:], epoch)
	binary.BigEndian.PutUint32(h[20:], crc32.Checksum(h[:20], redoCRC))
	return h
}

// errRedoHeader: the log's header does not parse (a torn or damaged write).
var errRedoHeader = errors.New("redo log header unreadable")

// parseRedoHeader returns the epoch, ok=false for anything but a valid header.
func parseRedoHeader(h []byte) (uint64, bool) {
	if len(h) < 24 || string(h[:8]) != redoMagic || binary.BigEndian.Uint32(h[8:]) != redoVersion ||
		binary.BigEndian.Uint32(h[20:]) != crc32.Checksum(h[:20], redoCRC) {
		return 0, false
	}
	return binary.BigEndian.Uint64(h[12:]), true
}

// replay applies the current epoch's records to db in order, one
// transaction each (each was one transaction when written), and syncs db;
// and the epoch's segment data to the segment files, synced.
func (l *redoLog) replay(db *badger.DB, seg segReplay, pos redoPos) (int, error) {
	fi, err := l.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("cache: redo log: %w", err)
	}
	l.size = fi.Size()
	if l.size < redoHeader || l.size > redoMaxSize {
		return 0, fmt.Errorf("cache: redo log %s has size %d: not a kumo redo log; move it away to start over (records in it are lost)", l.f.Name(), l.size)
	}
	data := make([]byte, l.size)
	if _, err := io.ReadFull(io.NewSectionReader(l.f, 0, l.size), data); err != nil {
		return 0, fmt.Errorf("cache: read redo log: %w", err)
	}
	epoch, ok := parseRedoHeader(data[:redoHeader])
	if !ok {
		h := data[:24]
		if string(h[:8]) == redoMagic && binary.BigEndian.Uint32(h[20:]) == crc32.Checksum(h[:20], redoCRC) {
			return 0, fmt.Errorf("cache: redo log %s has format version %d, this kumo reads %d: open the store with the kumo that wrote it", l.f.Name(), binary.BigEndian.Uint32(h[8:]), redoVersion)
		}
		return 0, fmt.Errorf("cache: %s: %w", l.f.Name(), errRedoHeader)
	}
	l.epoch = epoch
	l.epochNow.Store(epoch)
	recs, segOps, err := redoRecords(data, epoch)
	if err != nil {
		return 0, err
	}
	// Segment data first: whatever badger holds, the data it may describe
	// must be in place before the checkpoint ends this epoch.
	if err := seg.replay(segOps); err != nil {
		return 0, err
	}
	if pos.epoch == epoch {
		// Badger holds the first pos.count records (all of them, or more
		// than survived here: then it is ahead and nothing is replayed).
		recs = recs[min(uint64(len(recs)), pos.count):]
	}
	for i, entries := range recs {
		if err := applyRecords(db, []behindRecord{{entries: entries}}); err != nil {
			return i, fmt.Errorf("cache: replay redo record %d: %w", i, err)
		}
	}
	if len(recs) > 0 {
		if err := db.Sync(); err != nil {
			return len(recs), fmt.Errorf("cache: sync after replay: %w", err)
		}
	}
	return len(recs), nil
}

// redoRecords decodes the valid records of epoch in a whole log image: the
// key-write records, and the segment-file entries in log order. The first
// record that fails its CRC ends the log; one that passes the CRC but does
// not parse is corruption (an error: replaying past it could apply later
// writes without earlier ones).
func redoRecords(data []byte, epoch uint64) ([][]redoEntry, []segOp, error) {
	var recs [][]redoEntry
	var segOps []segOp
	for off := int64(redoHeader); off+redoRecHead <= int64(len(data)); {
		n := int64(binary.BigEndian.Uint32(data[off:]))
		sum := binary.BigEndian.Uint32(data[off+4:])
		if n == 0 || off+redoRecHead+n > int64(len(data)) {
			break
		}
		p := data[off+redoRecHead : off+redoRecHead+n]
		if redoSum(epoch, p) != sum {
			break
		}
		if isSegOp(p[0]) {
			ops, err := parseSegPayload(p)
			if err != nil {
				return nil, nil, fmt.Errorf("cache: redo log at offset %d: %w", off, err)
			}
			segOps = append(segOps, ops...)
		} else {
			entries, err := parseRedoPayload(p)
			if err != nil {
				return nil, nil, fmt.Errorf("cache: redo log at offset %d: %w", off, err)
			}
			recs = append(recs, entries)
		}
		off += redoRecHead + n
	}
	return recs, segOps, nil
}

// redoSum is a record's checksum: it covers the epoch, so records left over
// from before a checkpoint never pass.
func redoSum(epoch uint64, payload []byte) uint32 {
	var ep [8]byte
	binary.BigEndian.PutUint64(ep[:], epoch)
	return crc32.Update(crc32.Checksum(ep[:], redoCRC), redoCRC, payload)
}

// record starts recording writes: the record is built in l.buf behind room
// for its header, so appending it is one write with no copy. Under applyMu.
func (l *redoLog) record() *redoRecorder {
	l.buf = append(l.buf[:0], make([]byte, redoRecHead)...)
	return &redoRecorder{rec: &l.buf}
}

// payloadSize is the size of the record being built.
func (l *redoLog) payloadSize() int { return len(l.buf) - redoRecHead }

// next is the position after the record being built, once appended: what
// badger's position key says when it holds that record. (An empty record is
// not appended.) Under applyMu.
func (l *redoLog) next() redoPos {
	if l.payloadSize() == 0 {
		return redoPos{l.epoch, l.count}
	}
	return redoPos{l.epoch, l.count + 1}
}

// offset counts the bytes appended since open (not reset by checkpoints).
func (l *redoLog) offset() int64 { return l.appended.Load() }

// appendRecord writes the record begun by record (no sync). It returns false when the record does
// not fit: the caller checkpoints instead.
func (l *redoLog) appendRecord() (bool, error) {
	rec := l.buf
	if cap(l.buf) > 1<<20 {
		l.buf = nil // do not keep a huge buffer after a huge mutation
	}
	payload := rec[redoRecHead:]
	if len(payload) == 0 {
		return true, nil
	}
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.failed(); err != nil {
		return false, err
	}
	if l.full || l.off+int64(len(rec))+redoReserve > l.size {
		return false, nil
	}
	binary.BigEndian.PutUint32(rec, uint32(len(payload)))
	binary.BigEndian.PutUint32(rec[4:], redoSum(l.epoch, payload))
	if err := l.put(rec, l.off); err != nil {
		return false, err
	}
	l.off += int64(len(rec))
	l.offNow.Store(l.off)
	l.count++
	l.appended.Add(int64(len(rec)))
	return true, nil
}

// appendData appends a record of segment-file entries (seglog.go), not
// numbered (no sync). It returns false, appending nothing, when the record
// does not fit or a checkpoint is under way, unless final: a record that
// ends logging of a file (its data was synced, or is dropped) may use the
// reserve and goes in during a checkpoint too. end is the value of
// appended after it, epoch the epoch it belongs to.
func (l *redoLog) appendData(payload []byte, final bool) (ok bool, end int64, epoch uint64, err error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.failed(); err != nil {
		return false, 0, 0, err
	}
	n := int64(redoRecHead + len(payload))
	room := l.size - l.off
	if !final {
		room -= redoReserve
	}
	if l.frozen && !final {
		return false, 0, 0, nil
	}
	if n > room {
		l.full = l.full || !final
		return false, 0, 0, nil
	}
	l.dbuf = append(l.dbuf[:0], make([]byte, redoRecHead)...)
	binary.BigEndian.PutUint32(l.dbuf, uint32(len(payload)))
	binary.BigEndian.PutUint32(l.dbuf[4:], redoSum(l.epoch, payload))
	l.dbuf = append(l.dbuf, payload...)
	if err := l.put(l.dbuf, l.off); err != nil {
		return false, 0, 0, err
	}
	if cap(l.dbuf) > 1<<20 {
		l.dbuf = nil
	}
	l.off += n
	l.offNow.Store(l.off)
	end = l.appended.Add(n)
	if !final {
		l.dataEnd.Store(end)
	}
	return true, end, l.epoch, nil
}

// mark is the current end of the log: its offset in this epoch and the
// value of appended, read together.
func (l *redoLog) mark() (off, bytes int64) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.off, l.appended.Load()
}

// dataPending reports segment data in the log that no sync covered yet.
func (l *redoLog) dataPending() bool { return l.dataEnd.Load() > l.durableBytes.Load() }

// noteDurable records that a sync covered the log up to bytes appended.
func (l *redoLog) noteDurable(bytes int64) {
	for {
		old := l.durableBytes.Load()
		if old >= bytes || l.durableBytes.CompareAndSwap(old, bytes) {
			return
		}
	}
}

// checkpoint makes badger and the segment files whose data the log holds
// durable, and starts the log over under a new epoch, which invalidates
// every record written so far. Under applyMu.
func (l *redoLog) checkpoint(db *badger.DB) error {
	if err := l.failed(); err != nil {
		return err
	}
	l.appendMu.Lock()
	l.frozen = true // data logged from now on would be lost with the epoch
	l.appendMu.Unlock()
	defer func() {
		l.appendMu.Lock()
		l.frozen = false
		l.appendMu.Unlock()
	}()
	if l.beforeCheckpoint != nil {
		if err := l.beforeCheckpoint(); err != nil {
			return fmt.Errorf("cache: checkpoint: %w", err)
		}
	}
	if err := db.Sync(); err != nil {
		return fmt.Errorf("cache: checkpoint: sync badger: %w", err)
	}
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	// The epoch changes only once its header is durable: records of a new
	// epoch under the old header could never be replayed, and badger's
	// position in the new epoch would not match the header's, so the next
	// open would replay the old epoch over badger's newer state. On failure
	// the old header is put back (best effort) and the log is failed for
	// good (fail says why): which header the disk holds is unknown.
	next := l.epoch + 1
	if _, err := l.f.WriteAt(redoHeaderBytes(next), 0); err != nil {
		_, _ = l.f.WriteAt(redoHeaderBytes(l.epoch), 0)
		return l.fail(fmt.Errorf("checkpoint: write redo header: %w", err))
	}
	if err := syscall.Fdatasync(int(l.f.Fd())); err != nil {
		_, _ = l.f.WriteAt(redoHeaderBytes(l.epoch), 0)
		return l.fail(fmt.Errorf("checkpoint: sync redo log: %w", err))
	}
	l.epoch = next
	l.epochNow.Store(l.epoch)
	l.full = false
	l.off = redoHeader
	if l.m != nil {
		// The new epoch writes from the start again: give back the old
		// epoch's pages still mapped (only a hint: memory, never data).
		_ = syscall.Madvise(l.m, syscall.MADV_DONTNEED)
	}
	l.released = 0
	l.populated = 0
	l.offNow.Store(l.off)
	l.durable.Store(l.off)
	l.noteDurable(l.appended.Load())
	l.count = 0
	return nil
}

func (l *redoLog) close() error {
	l.appendMu.Lock() // no append copies into the mapping while it goes
	defer l.appendMu.Unlock()
	l.populating.Wait() // nor populates it
	if l.m != nil {
		if err := syscall.Munmap(l.m); err != nil {
			l.f.Close()
			return fmt.Errorf("cache: unmap redo log: %w", err)
		}
		l.m = nil
	}
	return l.f.Close()
}

// groupSync runs do for concurrent callers together: a caller returns after
// a run of do that started after it called, so its writes are covered.
type groupSync struct {
	do func() error
	// failed, if set, returns an error once no sync may run any more (the
	// log's sticky error): a sync must not make a header of unknown epoch
	// durable, nor report records appended under it durable.
	failed  func() error
	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	started uint64 // runs started
	done    uint64 // runs finished
	err     error  // of the last finished run
}

func (g *groupSync) run() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
	need := g.started + 1 // a run that starts after now covers us
	for g.done < need {
		if g.running {
			g.cond.Wait()
			continue
		}
		if g.failed != nil {
			if err := g.failed(); err != nil {
				return err
			}
		}
		g.running = true
		g.started++
		n := g.started
		g.mu.Unlock()
		err := g.do()
		g.mu.Lock()
		g.running = false
		g.done, g.err = n, err
		g.cond.Broadcast()
	}
	return g.err
}
