package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// Badger keys. Every key starts with a one-byte kind so each kind is a prefix scan.
const (
	kindNode    = 'n' // 'n' id(be64)                 -> encodeNode
	kindEntry   = 'e' // 'e' parent(be64) nameMAC     -> encodeEntry
	kindJournal = 'j' // 'j' seq(be64)                -> api.BatchOp (encodeJournal)
)

var (
	keyCursor = []byte("c") // be64 change-feed cursor
	keySeq    = []byte("s") // be64 last journal seq assigned (never reused)
)

func nodeKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindNode
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

func entryPrefix(parent uint64) []byte {
	k := make([]byte, 9, 9+64)
	k[0] = kindEntry
	binary.BigEndian.PutUint64(k[1:], parent)
	return k
}

func entryKey(parent uint64, nameMAC string) []byte {
	return append(entryPrefix(parent), nameMAC...)
}

func journalKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindJournal
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

// Entry is a directory entry of the local tree.
type Entry struct {
	Parent  uint64
	NameMAC string
	Name    []byte // sealed
	Child   uint64
}

// GetNode returns a node of the local tree, or ErrNotFound.
func (s *Store) GetNode(id uint64) (api.Node, error) {
	var n api.Node
	err := s.value(nodeKey(id), func(v []byte) error {
		var err error
		n, err = decodeNode(v)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return api.Node{}, ErrNotFound
	}
	if err != nil {
		return api.Node{}, fmt.Errorf("cache: get node %d: %w", id, err)
	}
	if n.ID != id {
		return api.Node{}, fmt.Errorf("cache: get node %d: record holds node %d: %w", id, n.ID, ErrCorrupt)
	}
	return n, nil
}

// Lookup returns the entry (parent, nameMAC), or ErrNotFound.
func (s *Store) Lookup(parent uint64, nameMAC string) (Entry, error) {
	if s.newDirs.absent(parent, nameMAC) {
		return Entry{}, ErrNotFound
	}
	if e, ok, hit := s.listed.lookup(parent, nameMAC, s.entryGens.slot(parent)); hit {
		return listedAnswer(e, ok)
	}
	e := Entry{Parent: parent, NameMAC: nameMAC}
	err := s.value(entryKey(parent, nameMAC), func(v []byte) error {
		var err error
		e.Child, e.Name, err = decodeEntry(v)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("cache: lookup %d/%s: %w", parent, nameMAC, err)
	}
	// Found only in the store, twice in a row in this directory: list it,
	// so the lookups of the names after this one are answered from memory
	// (listedDirs). Names that are not there (a create's lookup) never list.
	if s.listed.listAfterMiss(parent) {
		if _, err := s.List(parent); err != nil {
			s.log.Warn("listing a directory ahead of its lookups failed; they read the store one by one", "dir", parent, "err", err)
		}
	}
	return e, nil
}

// listedAnswer is a remembered listing's answer to Lookup.
func listedAnswer(e Entry, ok bool) (Entry, error) {
	if !ok {
		return Entry{}, ErrNotFound
	}
	return e, nil
}

// value calls fn with key's current value: its queued write if it has one
// (behind.go), else badger's. A missing or deleted key is
// badger.ErrKeyNotFound. fn must not keep or modify the bytes.
func (s *Store) value(key []byte, fn func([]byte) error) error {
	return s.behind.read(key, fn)
}

// DirEmpty reports whether directory parent has no entries. Like List it
// does not wait for queued writes to reach badger: an rmdir after its
// directory's unlinks was a wait for a badger commit (900 µs of an rm -rf's
// rmdir).
func (s *Store) DirEmpty(parent uint64) (bool, error) {
	empty, err := s.behind.dirEmpty(parent)
	if err != nil {
		return false, fmt.Errorf("cache: is directory %d empty: %w", parent, err)
	}
	return empty, nil
}

// List returns the entries of a directory in nameMAC order. Like DirEmpty
// it does not wait for queued writes to reach badger.
func (s *Store) List(parent uint64) ([]Entry, error) {
	gen := s.entryGens.slot(parent).Load() // before the listing: see listedDirs
	var out []Entry
	prefix := entryPrefix(parent)
	err := s.behind.list(parent, func(k, v []byte) error {
		e := Entry{Parent: parent, NameMAC: string(k[len(prefix):])}
		var err error
		e.Child, e.Name, err = decodeEntry(v)
		out = append(out, e)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cache: list %d: %w", parent, err)
	}
	// Queued entries badger lacks come after badger's.
	if !slices.IsSortedFunc(out, byNameMAC) {
		slices.SortFunc(out, byNameMAC)
	}
	s.listed.remember(parent, gen, s.entryGens.slot(parent), out)
	return out, nil
}

func byNameMAC(a, b Entry) int { return strings.Compare(a.NameMAC, b.NameMAC) }

// JournalOp is a tree operation waiting to be pushed to the cloud, in order.
type JournalOp struct {
	Seq uint64 // local journal position, increasing
	Op  api.BatchOp
}

// Mutation is applied atomically (one badger transaction) by Apply.
type Mutation struct {
	PutNodes      []api.Node
	DeleteNodes   []uint64
	PutEntries    []Entry
	DeleteEntries []Entry       // only Parent and NameMAC are used
	Journal       []api.BatchOp // appended to the push journal
	Cursor        *uint64       // new change-feed cursor, if set
	PutInline     []InlineSegment
	DeleteInline  [][2]uint64 // (node, gen)
	// NewDirs are directories created by this mutation, empty: the store
	// then answers lookups of names they lack from memory (newdirs.go).
	NewDirs []uint64
	// AfterData marks a mutation that describes segment-file data written
	// (SegmentFile.Flush) but not synced, such as a file's new size at
	// close. Neither the redo log nor badger makes it durable before that
	// data: a power loss must not keep the size and lose the bytes (the
	// file would read as zeros). Apply it while holding DataOrder.
	AfterData bool
}

// EntriesGen is a counter of changes to directory dir's entries (shared
// with other directories: a change to one of those changes it too). It is
// odd while a change is being applied. A listing taken after reading an
// even gen still holds, name for name, as long as EntriesGen returns that
// same gen: readdir's lookups use the listing's entries instead of looking
// each name up again (fs.dirHandle).
func (s *Store) EntriesGen(dir uint64) uint64 {
	return s.entryGens.slot(dir).Load()
}

// entryGens are the counters of EntriesGen: a directory's is slot dir mod
// the count, so they take fixed memory.
type entryGens [1024]atomic.Uint64

func (g *entryGens) slot(dir uint64) *atomic.Uint64 { return &g[dir%uint64(len(g))] }

// bump moves, once each, the slots of the directories whose entries m
// changes. Called before and after m is applied (under Store.applyMu), so
// they are odd in between.
func (g *entryGens) bump(m *Mutation) {
	var buf [8]*atomic.Uint64
	done := buf[:0]
	for _, es := range [2][]Entry{m.DeleteEntries, m.PutEntries} {
		for _, e := range es {
			if c := g.slot(e.Parent); !slices.Contains(done, c) {
				c.Add(1)
				done = append(done, c)
			}
		}
	}
}

// bumpAll moves every slot (Reset: every directory's entries).
func (g *entryGens) bumpAll() {
	for i := range g {
		g[i].Add(1)
	}
}

// ErrTooBig is returned by Apply when a mutation does not fit in one badger
// transaction (millions of entries); nothing of it is applied.
var ErrTooBig = errors.New("cache: mutation too big for one transaction")

// Apply applies m atomically: visible to readers at once, recoverable after
// a crash (its redo record is written before Apply returns; SyncTree makes it
// durable), applied to badger behind the caller (behind.go) unless it is big.
// Deletes are applied before puts, so a mutation may delete and re-put the
// same key. Nothing is applied on error.
func (s *Store) Apply(m Mutation) error {
	_, err := s.ApplySeq(m)
	return err
}

// ApplySeq is Apply, and returns the journal seq of m's last journal op (or
// of the journal's last op when m adds none).
func (s *Store) ApplySeq(m Mutation) (uint64, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	carrying := s.listed.carry(&m, &s.entryGens)
	applied := false
	defer func() { s.listed.carried(carrying, &m, &s.entryGens, applied) }() // after the second bump
	s.entryGens.bump(&m)
	defer s.entryGens.bump(&m)
	s.newDirs.adding(&m)
	rec := s.redo.record()
	seq, err := s.writeMutation(rec, m)
	if err == nil {
		if len(rec.entries) > behindMaxEntries || s.redo.payloadSize() > behindMaxBytes {
			if m.AfterData || s.redo.dataPending() {
				err = s.syncData() // badger gets it now
			}
			if err == nil {
				err = s.applyNow(rec.entries)
			}
		} else {
			err = s.applyBehind(rec.entries, s.redo.payloadSize(), m.AfterData)
		}
	}
	if errors.Is(err, badger.ErrTxnTooBig) {
		return 0, fmt.Errorf("cache: apply (%d nodes, %d entries, %d journal ops): %w",
			len(m.PutNodes)+len(m.DeleteNodes), len(m.PutEntries)+len(m.DeleteEntries), len(m.Journal), ErrTooBig)
	}
	if err != nil {
		return 0, fmt.Errorf("cache: apply: %w", err)
	}
	s.newDirs.applied(&m)
	applied = true
	s.lastSeq = seq
	s.pending += len(m.Journal)
	return seq, nil
}

// writeMutation records m's key writes in rec and returns the journal's last
// seq after it.
func (s *Store) writeMutation(rec *redoRecorder, m Mutation) (uint64, error) {
	seq := s.lastSeq
	for _, id := range m.DeleteNodes {
		rec.del(nodeKey(id))
	}
	for _, e := range m.DeleteEntries {
		rec.del(entryKey(e.Parent, e.NameMAC))
	}
	for _, k := range m.DeleteInline {
		rec.del(inlineKey(k[0], k[1]))
	}
	for _, in := range m.PutInline {
		v, err := s.sealInline(in.Node, in.Gen, in.Data)
		if err != nil {
			return 0, err
		}
		rec.set(inlineKey(in.Node, in.Gen), v)
	}
	for _, n := range m.PutNodes {
		rec.set(nodeKey(n.ID), encodeNode(n))
	}
	for _, e := range m.PutEntries {
		if e.NameMAC == "" {
			return 0, fmt.Errorf("entry under %d with empty name MAC", e.Parent)
		}
		rec.set(entryKey(e.Parent, e.NameMAC), encodeEntry(e.Child, e.Name))
	}
	for _, op := range m.Journal {
		seq++
		rec.set(journalKey(seq), encodeJournal(op))
	}
	if len(m.Journal) > 0 {
		rec.set(keySeq, be64(seq))
	}
	if m.Cursor != nil {
		rec.set(keyCursor, be64(*m.Cursor))
	}
	return seq, nil
}

// applyNow applies a mutation recorded with s.redo.record to badger in one
// transaction, after what is queued, then logs it (or checkpoints when it
// does not fit the log). Under applyMu. A failure to log is reported, but
// the transaction stands: the next checkpoint makes it durable.
func (s *Store) applyNow(entries []redoEntry) error {
	if err := s.behind.drain(); err != nil {
		return err
	}
	// A failed log takes nothing (redoLog.fail): the change must not reach
	// badger (visible, and durable whenever badger is written back) while
	// the caller is told it failed. Checked after the drain (which may wait
	// for data syncs) and held until the change is logged (admit), so a
	// sync failing meanwhile cannot let it into badger.
	done, err := s.redo.admit()
	if err != nil {
		return err
	}
	defer done()
	// Badger first, with the position the record will have (if it does not
	// fit the log, the checkpoint below starts a new epoch anyway).
	if err := applyTxn(s.db, []behindRecord{{entries: entries, pos: s.redo.next()}}); err != nil {
		return err
	}
	s.behind.renew()
	fits, err := s.redo.appendRecord()
	if err == nil && !fits {
		err = s.redo.checkpoint(s.db)
	}
	if err == nil {
		s.maybePresync()
	}
	return err
}

// applyBehind logs a small mutation and queues it for badger. When the log is
// full, badger gets it now and the log starts over. Under applyMu.
func (s *Store) applyBehind(entries []redoEntry, size int, afterData bool) error {
	if err := s.behind.failed(); err != nil {
		return err
	}
	pos := s.redo.next()
	fits, err := s.redo.appendRecord()
	if err != nil {
		return err
	}
	var fence uint64
	if afterData {
		fence = s.fenced.Add(1) // its data was written (Flush) before: the next syncData covers it
	}
	var needLog int64
	if s.redo.dataPending() {
		needLog = s.redo.dataEnd.Load() // segment data logged before it (seglog.go)
	}
	if fits {
		s.maybePresync()
		return s.behind.add(entries, size, pos, fence, needLog)
	}
	if err := s.behind.drain(); err != nil {
		return err
	}
	if afterData || needLog > 0 {
		if err := s.syncData(); err != nil { // badger gets it now, and a checkpoint syncs badger
			return err
		}
	}
	done, err := s.redo.admit() // failed since appendRecord: nothing for badger
	if err != nil {
		return err
	}
	defer done()
	if err := applyRecords(s.db, []behindRecord{{entries: entries}}); err != nil {
		return err
	}
	s.behind.renew()
	return s.redo.checkpoint(s.db)
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func getU64(txn *badger.Txn, key []byte) (uint64, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var v uint64
	err = it.Value(func(b []byte) (err error) { v, err = decodeU64(key, b); return })
	return v, err
}

// decodeU64 reads a counter record (the journal seq, the cursor).
func decodeU64(key, b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%q holds %d bytes: %w", key, len(b), ErrCorrupt)
	}
	return binary.BigEndian.Uint64(b), nil
}

// Cursor returns the change-feed sequence number the local tree reflects.
func (s *Store) Cursor() (uint64, error) {
	var c uint64
	err := s.value(keyCursor, func(b []byte) (err error) { c, err = decodeU64(keyCursor, b); return })
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return 0, fmt.Errorf("cache: cursor: %w", err)
	}
	return c, nil
}

// loadJournalState reads the journal counter and counts pending ops at open.
func (s *Store) loadJournalState() error {
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if s.lastSeq, err = getU64(txn, keySeq); err != nil {
			return err
		}
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte{kindJournal}
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		first := uint64(0)
		for it.Rewind(); it.Valid(); it.Next() {
			s.pending++
			if k := it.Item().Key(); len(k) == 9 {
				seq := binary.BigEndian.Uint64(k[1:])
				if first == 0 {
					first = seq
				}
				// Never reuse a seq, even if the counter record were missing.
				s.lastSeq = max(s.lastSeq, seq)
			}
		}
		// Everything before the first pending op is acked (Ack relies on it).
		if first > 0 {
			s.ackedUpto.Store(first - 1)
		} else {
			s.ackedUpto.Store(s.lastSeq)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: load journal: %w", err)
	}
	return nil
}

// Pending returns up to max journal ops in order.
func (s *Store) Pending(max int) ([]JournalOp, error) {
	return s.PendingAfter(0, max)
}

// PendingAfter returns up to n unacknowledged journal ops with Seq > after,
// in order: a reader that keeps ops it already decoded asks only for the rest.
func (s *Store) PendingAfter(after uint64, n int) ([]JournalOp, error) {
	if err := s.behind.drain(); err != nil {
		return nil, fmt.Errorf("cache: pending: %w", err)
	}
	var out []JournalOp
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte{kindJournal}
		o.PrefetchSize = max(1, min(o.PrefetchSize, n))
		// Values are decoded (copied) in item.Value: prefetching them made
		// badger copy each into its own buffer first, 3.4x the cost of a
		// drain of queued ops (BenchmarkPendingDrain: 38 -> 11 ms per 30,000).
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek(journalKey(max(s.ackedUpto.Load(), after) + 1)); it.Valid() && len(out) < n; it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != 9 {
				return fmt.Errorf("journal key %x: %w", k, ErrCorrupt)
			}
			j := JournalOp{Seq: binary.BigEndian.Uint64(k[1:])}
			err := item.Value(func(v []byte) error {
				var err error
				j.Op, err = decodeJournal(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("journal op %d: %w", j.Seq, err)
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache: pending: %w", err)
	}
	return out, nil
}

// AckedUpto is the Seq up to which the journal is acknowledged.
func (s *Store) AckedUpto() uint64 { return s.ackedUpto.Load() }

// PendingCount returns how many journal ops wait.
func (s *Store) PendingCount() (int, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.pending, nil
}

// Ack removes journal ops with Seq <= upto. The pending ops are the
// consecutive seqs after AckedUpto (Apply numbers them one by one, and only
// prefixes are acked), so their keys are known without reading badger: the
// deletes go through the write-behind like any small mutation. Draining it
// and scanning badger here, under applyMu, stalled every Apply (every
// create, close and chmod) for as long as the queued records and their data
// syncs took, once per push.
func (s *Store) Ack(upto uint64) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	upto = min(upto, s.lastSeq)
	for lo := s.ackedUpto.Load() + 1; lo <= upto; {
		hi := min(upto, lo+ackBatch-1)
		rec := s.redo.record()
		for seq := lo; seq <= hi; seq++ {
			rec.del(journalKey(seq))
		}
		if err := s.applyBehind(rec.entries, s.redo.payloadSize(), false); err != nil {
			return fmt.Errorf("cache: ack %d: %w", upto, err)
		}
		s.ackedUpto.Store(hi)
		s.pending = max(0, s.pending-int(hi-lo+1))
		lo = hi + 1
	}
	return nil
}

// ackBatch is how many journal ops one record of Ack deletes: within
// behindMaxEntries, so it queues like a small mutation.
const ackBatch = 500

// Reset drops the whole local tree (not the journal or segment files), for a
// relist. The cursor is reset to 0 first, so a crash during Reset leaves a tree
// that will be relisted again.
func (s *Store) Reset() error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if err := s.behind.drain(); err != nil {
		return fmt.Errorf("cache: reset: %w", err)
	}
	s.entryGens.bumpAll()
	defer s.entryGens.bumpAll()
	s.newDirs.reset()
	rec := s.redo.record()
	rec.del(keyCursor)
	err := s.applyNow(rec.entries)
	if err != nil {
		return fmt.Errorf("cache: reset: %w", err)
	}
	if err := s.db.DropPrefix([]byte{kindNode}, []byte{kindEntry}); err != nil {
		return fmt.Errorf("cache: reset: %w", err)
	}
	s.behind.renew()
	// DropPrefix is not in the redo log: make it durable, and keep older
	// records from putting dropped keys back at the next open.
	if err := s.redo.checkpoint(s.db); err != nil {
		return fmt.Errorf("cache: reset: %w", err)
	}
	return nil
}
