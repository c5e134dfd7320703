// Package cache is the drive's local state in badger: the local copy of the tree
// (as sealed by the client, so nothing on disk is plaintext), the journal of tree
// operations not yet pushed to the cloud, the chunk cache with a size budget, and
// encrypted segment files that hold written data until it is uploaded.
//
// Layout under Options.Dir:
//
//	meta/    badger: nodes, entries, change-feed cursor, push journal;
//	         redo.log: the store's writes since badger's last sync (redo.go);
//	         badger is applied behind it (behind.go)
//	chunks/  one sparse file per cached chunk, sealed segments at fixed slots
//	dirty/   one encrypted sparse segment file per (node, gen)
package cache

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"

	"kumo/internal/badgerlog"
	"kumo/internal/keys"
)

// ErrNotFound is returned when a node or entry is not in the local tree.
var ErrNotFound = errors.New("cache: not found")

// ErrCorrupt is returned when stored bytes fail authentication or do not parse
// (a tampered or torn segment file slot, a bad record). The drive maps it to EIO.
var ErrCorrupt = errors.New("cache: corrupt data")

// ErrClosed is returned by operations on a closed Store or SegmentFile.
var ErrClosed = errors.New("cache: closed")

// DefaultBudget is the chunk cache budget when Options.Budget is 0.
const DefaultBudget int64 = 4 << 30

// Options configure a Store.
type Options struct {
	Dir    string   // everything lives under Dir
	Key    keys.Key // keys.Subkeys.Cache: seals segment files and anything else at rest
	Budget int64    // bytes the chunk cache may use on disk (0: 4 GiB); dirty data is not counted against eviction
	Logger *slog.Logger

	commitInterval time.Duration // the periodic commit's period (0: commitInterval); tests shorten it
}

// Store is one drive's local state. Safe for concurrent use.
type Store struct {
	dir    string
	log    *slog.Logger
	db     *badger.DB
	segKey segKey    // purpose key for segment files, from Options.Key
	inline aeadCache // inline segments' keys, derived once per (node, gen)

	// journal state, guarded by applyMu: Apply is serialised so the journal
	// sequence counter can live in memory and never conflicts.
	applyMu sync.Mutex
	lastSeq uint64 // last journal seq assigned (persisted under keySeq)
	pending int    // journal ops not yet acked
	// ackedUpto is the highest acked journal seq: scans seek past it instead of
	// walking the tombstones of every acked op (which made pushing superlinear).
	ackedUpto atomic.Uint64

	chunks *chunkCache
	slots  sync.Pool // *[]byte of slotStride bytes, for sealing

	segMu   sync.Mutex
	segOpen map[[2]uint64]*SegmentFile // open segment files, shared by reference count

	entryGens entryGens // per-directory change counters; see EntriesGen

	newDirs newDirs      // names of directories made in this session; see newdirs.go
	listed  listedDirs   // entries of the directories listed last; see listed.go
	redo    *redoLog     // cheap durability points; see redo.go
	behind  *writeBehind // badger applied behind Apply; see behind.go

	// Segment files written since their last fdatasync (SyncAll syncs them).
	unsyncMu sync.Mutex
	unsynced map[*SegmentFile]struct{}
	flushes  atomic.Int64 // fdatasync/fsync calls made (Flushes)

	// Segment files whose data the redo log holds (seglog.go): a
	// checkpoint syncs them first.
	loggedMu sync.Mutex
	logged   map[*SegmentFile]struct{}

	// Data before the records that describe it (Mutation.AfterData).
	// fenced counts AfterData records; dataSynced is the count whose data
	// a syncData made durable. dataOrder is held (shared) by whoever
	// flushes data and applies its AfterData record, and exclusively by a
	// redo log sync from its data sync to its fdatasync, so no AfterData
	// record lands in the log between the two.
	fenced     atomic.Uint64
	dataSynced atomic.Uint64
	dataMu     sync.Mutex // one syncData at a time
	// dirtyRemoved: a segment file was removed since syncData last synced
	// their directory (a created file's entry is synced by syncDataDir
	// with others, or by its own first sync: SegmentFile.dirSync), so a
	// data sync with nothing removed or created costs no directory fsync.
	dirtyRemoved atomic.Bool
	dataOrder    sync.RWMutex
	synced       atomic.Int64 // redo log offset covered by the last sync of everything (commit)

	// presync is kicked as the redo log fills (maybePresync): badger's
	// files are synced in the background then, so the checkpoint at the
	// log's end, which holds every change while it runs, writes back only
	// what came after. presyncEpoch and presyncNext (the offset of the
	// next kick in that epoch) are under applyMu.
	presync      chan struct{}
	presyncEpoch uint64
	presyncNext  int64
	presyncs     atomic.Int64 // background syncs of badger done

	closeOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup
	closeErr  error
}

const (
	metaDir  = "meta"
	chunkDir = "chunks"
	dirtyDir = "dirty"
)

// Open opens or creates the store under o.Dir.
func Open(o Options) (*Store, error) {
	if o.Dir == "" {
		return nil, errors.New("cache: open: empty Dir")
	}
	if o.Key == (keys.Key{}) {
		return nil, errors.New("cache: open: zero key")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	budget := o.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	for _, d := range []string{o.Dir, filepath.Join(o.Dir, metaDir), filepath.Join(o.Dir, chunkDir), filepath.Join(o.Dir, dirtyDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("cache: open: %w", err)
		}
	}
	segPurpose, err := hkdf.Key(sha256.New, o.Key[:], nil, "kumo cache segment files v1", 32)
	if err != nil {
		return nil, fmt.Errorf("cache: open: derive key: %w", err)
	}
	db, err := badger.Open(badgerOptions(filepath.Join(o.Dir, metaDir), log))
	if err != nil {
		return nil, fmt.Errorf("cache: open badger: %w", err)
	}
	seg := segReplay{dir: filepath.Join(o.Dir, dirtyDir), key: newSegKey(segPurpose), log: log}
	redo, replayed, err := openRedo(filepath.Join(o.Dir, metaDir), redoSizeFor(budget), db, seg)
	if err != nil {
		db.Close()
		return nil, err
	}
	if replayed > 0 {
		log.Info("local store: replayed redo log after an unclean stop", "records", replayed)
	}
	s := &Store{
		redo:     redo,
		dir:      o.Dir,
		log:      log,
		db:       db,
		stop:     make(chan struct{}),
		segOpen:  map[[2]uint64]*SegmentFile{},
		unsynced: map[*SegmentFile]struct{}{},
		logged:   map[*SegmentFile]struct{}{},
	}
	redo.sync.do = func() error {
		s.dataOrder.Lock()
		defer s.dataOrder.Unlock()
		if s.fenced.Load() > s.dataSynced.Load() {
			if err := s.syncData(); err != nil {
				return err
			}
		}
		off, bytes := redo.mark()
		if bytes <= redo.durableBytes.Load() {
			return nil // nothing appended since the last sync: no flush
		}
		if err := s.fdatasync(redo.f); err != nil {
			return redo.failSync(fmt.Errorf("sync redo log: %w", err)) // for good: see fail
		}
		redo.syncedTo(off, bytes)
		return nil
	}
	redo.beforeCheckpoint = s.syncLogged
	s.behind = newWriteBehind(db, log, s.syncDataUpTo, &s.dataSynced)
	s.behind.logData = redo
	s.behind.syncFiles = s.syncData
	s.segKey = seg.key
	s.slots.New = func() any { b := make([]byte, slotStride); return &b }
	if err := s.loadJournalState(); err != nil {
		s.behind.close()
		db.Close()
		redo.close()
		return nil, err
	}
	s.chunks, err = openChunkCache(filepath.Join(o.Dir, chunkDir), filepath.Join(o.Dir, metaDir), budget, log)
	if err != nil {
		s.behind.close()
		db.Close()
		redo.close()
		return nil, err
	}
	s.presync = make(chan struct{}, 1)
	s.wg.Add(3)
	go s.background()
	go s.presyncLoop()
	every := commitInterval
	if o.commitInterval > 0 {
		every = o.commitInterval
	}
	go s.commitLoop(every)
	return s, nil
}

// commitInterval is how often written data and tree changes nobody synced
// are made durable anyway, like ext4's journal commit (5 s by default): a
// power loss then loses at most the last few seconds of closed files even
// where no program calls fsync (sync(2) does not reach a FUSE daemon).
const commitInterval = 5 * time.Second

// commitLoop runs SyncAll every period (commitInterval) while something is
// unsynced. Once the store has failed for good (the redo log: redoLog.fail;
// or applying to badger: writeBehind.run; each logs its failure itself) no
// sync succeeds until the drive is remounted, and the tree takes no change
// that could refer to data synced now: the loop says so once and stops,
// instead of syncing segment files and failing every period. Other failures
// (a segment file's sync) are logged each time.
func (s *Store) commitLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		err := s.redo.failed()
		if err == nil && s.needsCommit() {
			// With badger's applier failed, this still makes what the
			// log holds durable, then fails.
			err = s.SyncAll()
		}
		switch {
		case err == nil || errors.Is(err, ErrClosed):
		case errors.Is(err, errRedoFailed) || s.behind.failed() != nil:
			s.log.Error("local store: periodic syncs stopped: the store failed; remount the drive to use it again", "err", err)
			return
		default:
			s.log.Error("local store: periodic sync failed", "err", err)
		}
	}
}

// needsCommit reports writes since the last SyncAll.
func (s *Store) needsCommit() bool {
	s.unsyncMu.Lock()
	n := len(s.unsynced)
	s.unsyncMu.Unlock()
	return n > 0 || s.redo.offset() != s.synced.Load()
}

// DataOrder holds back the redo log's syncs while the caller writes a
// file's data to the kernel (SegmentFile.Flush) and applies the
// AfterData mutation that describes it; call the returned func after.
func (s *Store) DataOrder() (release func()) {
	s.dataOrder.RLock()
	return s.dataOrder.RUnlock
}

// fileSet lists the segment files of set, read under mu.
func fileSet(mu *sync.Mutex, set map[*SegmentFile]struct{}) []*SegmentFile {
	mu.Lock()
	defer mu.Unlock()
	files := make([]*SegmentFile, 0, len(set))
	for f := range set {
		files = append(files, f)
	}
	return files
}

// syncData makes the data of every segment file written so far durable
// (fdatasync of each; their directory first if files were created or
// removed since, syncDataDir): what the AfterData records applied so far
// describe.
func (s *Store) syncData() error {
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	fence := s.fenced.Load() // records up to here flushed their data before they were counted
	files := fileSet(&s.unsyncMu, s.unsynced)
	var errs []error
	if err := s.syncDataDir(files); err != nil {
		errs = append(errs, err)
	}
	for _, f := range files {
		if err := f.syncInPlace(); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for {
		old := s.dataSynced.Load()
		if old >= fence || s.dataSynced.CompareAndSwap(old, fence) {
			return nil
		}
	}
}

// syncDataDir fsyncs the segment files' directory once, before syncData
// syncs their data, when files were created since their last sync or a
// file was removed since the last data sync, and marks the new ones
// synced: one flush for a burst of new files (an untar's closed files, at
// the 5 s commit) instead of one each after its fdatasync. A new file's
// entry is then durable before it logs "clean" (seglog.go), the order that
// matters. Every segment file lives in that directory (OpenSegmentFile);
// a file created after the fsync began is not in files, and a removal
// after the swap is left for the next data sync.
func (s *Store) syncDataDir(files []*SegmentFile) error {
	var created []*SegmentFile
	for _, f := range files {
		if f.dirSync.Load() {
			created = append(created, f)
		}
	}
	removed := s.dirtyRemoved.Swap(false)
	if len(created) == 0 && !removed {
		return nil
	}
	if err := s.syncDir(filepath.Join(s.dir, dirtyDir)); err != nil {
		if removed {
			s.dirtyRemoved.Store(true)
		}
		return fmt.Errorf("cache: sync segment files' directory: %w", err)
	}
	for _, f := range created {
		f.dirSync.Store(false)
	}
	return nil
}

// syncDataUpTo runs syncData unless one already covered AfterData record
// fence; the write-behind applier calls it, after letting such records
// gather for behindDataWait (one data sync for many closes).
func (s *Store) syncDataUpTo(fence uint64) error {
	if s.dataSynced.Load() >= fence {
		return nil
	}
	if err := s.syncData(); err != nil {
		return fmt.Errorf("syncing closed files' data before badger gets their records: %w", err)
	}
	return nil
}

// SyncAll makes everything written so far durable on local disk: the data
// of every segment file (closed files' data included: close only writes it
// to the kernel), the segment files' directory, then the tree (the redo
// log). Data is synced before the log that describes it. This is what
// sync/syncfs would mean, and what the periodic commit runs.
func (s *Store) SyncAll() error {
	off := s.redo.offset()
	err := s.syncData()
	if err == nil {
		err = s.SyncTree()
	}
	if err == nil {
		s.synced.Store(off)
	}
	return err
}

// Flushes is how many fdatasync/fsync calls (device flushes) the store has
// made since it opened: tests use it to check which operations flush.
func (s *Store) Flushes() int64 { return s.flushes.Load() }

// fdatasync syncs f's data, counted.
func (s *Store) fdatasync(f *os.File) error {
	s.flushes.Add(1)
	return unix.Fdatasync(int(f.Fd()))
}

// syncDir fsyncs a directory, counted.
func (s *Store) syncDir(dir string) error {
	s.flushes.Add(1)
	return syncDir(dir)
}

// badgerOptions keep badger small on disk and in memory: the tree is small
// compared to the chunk cache, and its footprint counts against the budget.
// The memtable size sets most of badger's heap: each memtable is an arena of
// about that size (the one being filled plus one being flushed), and a flush
// builds the whole level-0 table in memory (buffers growing by doubling past
// the memtable's size, kept in a pool for seconds after). It stays at 16 MiB
// for the transaction limit (2.4 MB of keys and values under the threshold:
// a pull saves listings in parts of 2,000 nodes and entries); the embedded
// cloud's is 8 MiB. Values of 1 KiB and more (small files' inline data, big
// attributes) go to the value log: written once, not through the memtable,
// its WAL, a level-0 table and each compaction, and not counted against the
// transaction limit. There is no block cache: tables are not compressed or
// encrypted, so blocks are read in place from the mapped files. Level 0 holds
// up to 6 tables before they are compacted (badger's default is 5; it was 3):
// an rm -rf writes a tombstone per key, and merging them into level 1 every
// third memtable took a quarter of the daemon's CPU during the rm. Tree
// sequence (tar, git, grep, rm -rf of the Go tree), three alternating pairs:
// rm 4.67–5.39 → 4.02–4.42 s (daemon CPU 5.5–6.4 → 4.5–5.0 s), git 19.2–20.2
// → 16.4–18.7 s, grep 6.8–7.6 → 6.2–6.7 s, peak RSS unchanged.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(false). // the mmap'd memtable WAL survives kill -9; Sync() covers power loss
		WithLogger(badgerlog.Logger{L: log}).
		WithMemTableSize(16 << 20). // txn limit is 15% of this: 2.4 MB of keys and small values
		WithNumMemtables(2).
		WithValueThreshold(1 << 10). // inline data and big attrs go to the value log: written once, outside the txn limit
		WithValueLogFileSize(16 << 20).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(8 << 20).
		WithNumLevelZeroTables(6).
		WithNumLevelZeroTablesStall(12).
		WithNumCompactors(2).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithMetricsEnabled(false).
		WithCompression(options.None). // values are sealed (incompressible); also keeps grep tests honest
		WithDetectConflicts(false)     // writers are serialised by Store
}

// background runs badger's value log GC and persists chunk access times now and then.
func (s *Store) background() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
			}
			s.chunks.persistAccess()
			s.chunks.refreshMeta()
			s.chunks.maybeEvict()
		}
	}
}

// presyncParts is how many parts of the redo log's capacity are filled
// between the background syncs of badger (maybePresync).
const presyncParts = 4

// maybePresync kicks presyncLoop each time the redo log passes another
// quarter of its capacity. A checkpoint syncs badger with every change
// waiting (applyMu); creating 4 KiB files filled the 16 MiB log every ~3,300
// files (1.3 s), and the checkpoint's msync of badger's value log (the files'
// inline data) took 25-49 ms of its 40-85 ms. Under applyMu.
func (s *Store) maybePresync() {
	epoch, off := s.redo.epochNow.Load(), s.redo.offNow.Load()
	part := s.redo.size / presyncParts
	if epoch != s.presyncEpoch {
		s.presyncEpoch, s.presyncNext = epoch, part
	}
	if off < s.presyncNext {
		return
	}
	s.presyncNext = (off/part + 1) * part
	select {
	case s.presync <- struct{}{}:
	default: // one is pending: it covers this too
	}
}

// presyncLoop syncs badger's files when kicked (maybePresync). Only the
// checkpoint's own sync counts for durability; this one only moves the
// write-back out of it, so a failure is logged, not returned (the
// checkpoint reports its own).
func (s *Store) presyncLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.presync:
		}
		if err := s.db.Sync(); err != nil {
			s.log.Warn("local store: background sync of badger failed; the next checkpoint retries it", "err", err)
			continue
		}
		s.presyncs.Add(1)
	}
}

// Close flushes and closes.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.listed.close()
		close(s.stop)
		s.wg.Wait()
		s.chunks.persistAccess()
		var errs []error
		// A clean stop leaves no record to replay: the next open would
		// re-apply up to the whole log (16 MiB), one transaction per record.
		s.applyMu.Lock()
		if err := s.behind.drain(); err != nil {
			errs = append(errs, err) // the redo log still holds what badger lacks
		} else if err := s.redo.checkpoint(s.db); err != nil {
			errs = append(errs, err)
		}
		s.applyMu.Unlock()
		s.behind.close()
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cache: close badger: %w", err))
		}
		if err := s.redo.close(); err != nil {
			errs = append(errs, fmt.Errorf("cache: close redo log: %w", err))
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Sync makes everything applied so far durable on local disk (the tree and
// segment files' directory).
func (s *Store) Sync() error {
	if err := s.SyncTree(); err != nil {
		return err
	}
	if err := s.syncDir(filepath.Join(s.dir, dirtyDir)); err != nil {
		return fmt.Errorf("cache: sync: %w", err)
	}
	s.chunks.persistAccess()
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
