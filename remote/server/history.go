package server

// History: every version of every node record and directory entry, and
// every chunk a version references, is kept for the account's retention
// window, so a client can show the tree as it was at any moment of it,
// list and restore what was deleted, and read old versions of a file.
//
// Versions are stamped with the server's clock (Unix ns), made strictly
// increasing per account, so one transaction's changes share one time and
// "the tree at T" is the state after every change at or before T. A current
// record carries Since (when it became current); when it is replaced or
// deleted, it moves to a history record keyed by its end time (Until). A
// version that began and ended in one transaction was never visible and is
// not kept.
//
// Chunks need no per-version reference counts: a chunk is referenced by
// some current record through the whole life of every version that names
// it, so every such version ended no later than the chunk's last loss of
// references (chunkRec.Unref). Keeping an unreferenced chunk for the
// retention window after Unref therefore keeps every chunk a retained
// version needs; freeing history before T frees exactly the unreferenced
// chunks with Unref < T.
//
// Quota: history counts against the account's quota (Used), shown apart as
// HistUsed, but never refuses a write: when live data needs room, the oldest
// history is freed first (freeRoom).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// Badger keys of history (see docs/API.md "Storage layout"):
//
//	hn/ACCT/NODEID/UNTIL        histNode: a node version that ended at UNTIL (a deleted
//	                            node's last version names its last entry: the trash)
//	he/ACCT/PARENT/MAC/UNTIL    histEntry: an entry version that ended at UNTIL
//	hx/ACCT/UNTIL               expiry index: the versions the change at UNTIL ended
//	                            (binary refs, history_codec.go), deleted nodes marked: it
//	                            is also the trash by time. One key per change, and no
//	                            trash key of its own, keep what a delete writes small
//	hh/ACCT/HOUR                empty; an hour (Unix ns of its start) in which the tree changed
//	hs/ACCT/SHARE/UNTIL/NODEID  empty; a node of share SHARE deleted at UNTIL (its hn
//	                            record): the share's trash, for its members
//	hsh/ACCT/SHARE/HOUR         empty; an hour in which a version of share SHARE ended
//
// Times are 16 hex digits (Unix ns), so keys sort by time.
func kHNode(a string, id uint64, until int64) []byte {
	return fmt.Appendf(nil, "hn/%s/%016x/%016x", a, id, until)
}
func pHNode(a string, id uint64) []byte { return fmt.Appendf(nil, "hn/%s/%016x/", a, id) }
func kHEnt(a string, parent uint64, mac string, until int64) []byte {
	return fmt.Appendf(nil, "he/%s/%016x/%s/%016x", a, parent, mac, until)
}
func pHEnt(a string, parent uint64) []byte { return fmt.Appendf(nil, "he/%s/%016x/", a, parent) }
func kHIdx(a string, until int64) []byte   { return fmt.Appendf(nil, "hx/%s/%016x", a, until) }
func pHIdx(a string) []byte                { return []byte("hx/" + a + "/") }
func kHour(a string, hour int64) []byte    { return fmt.Appendf(nil, "hh/%s/%016x", a, hour) }
func pHour(a string) []byte                { return []byte("hh/" + a + "/") }

func hexTime(t int64) string { return fmt.Sprintf("%016x", t) }

// hourOf is the start of t's hour (Unix ns): the hour indexes' unit.
func hourOf(t int64) int64 { return t - t%int64(time.Hour) }

// splitHourKey splits a key of an hour index (the account's hh/ or a
// share's hsh/) into its prefix, up to its last '/', and the hour (Unix ns
// of its start) written in hex after it.
func splitHourKey(k []byte) (prefix []byte, hour int64, err error) {
	i := bytes.LastIndexByte(k, '/')
	hour, err = strconv.ParseInt(string(k[i+1:]), 16, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("bad hour key %q", k)
	}
	return k[:i+1], hour, nil
}

// histNode and histEntry are kept versions (encoded by history_codec.go).
type histNode struct {
	Node  api.Node
	Until int64
	Trash *trashRec // deleted at Until, last named so
}

type histEntry struct {
	Entry entryRec
	Until int64
}

type trashRec struct {
	Parent  uint64
	NameMAC string
	Name    []byte
	// NameInEntry: Name is not stored here but in the entry version
	// (Parent, NameMAC) that ended at the same time (readTrashName).
	NameInEntry bool
}

// DefaultHistoryRetention is the retention window of `kumo serve` when the
// operator sets none.
const DefaultHistoryRetention = 30 * 24 * time.Hour

// retention is the account's effective retention window (0: no history).
func (s *Server) retention(a *accountRec) time.Duration {
	r := s.cfg.HistoryDefault
	if a.Retention != nil {
		r = time.Duration(*a.Retention) * time.Second
	}
	if s.cfg.HistoryMax > 0 && r > s.cfg.HistoryMax {
		r = s.cfg.HistoryMax
	}
	return max(r, 0)
}

// histCutoff is the oldest moment a snapshot of account a can show at now
// (Unix ns): versions that ended before it may be gone.
func (s *Server) histCutoff(a *accountRec, now time.Time) int64 {
	r := s.retention(a)
	if r == 0 {
		return now.UnixNano() + 1
	}
	return max(now.Add(-r).UnixNano(), a.HistFloor, a.HistStart)
}

func (m *mtx) history() bool { return m.s.retention(m.acct) > 0 }

// when is this mutation's change time: the server's clock, but after every
// earlier change of the account.
func (m *mtx) when() int64 {
	if m.t != 0 {
		return m.t
	}
	t := m.now.UnixNano()
	if t <= m.acct.LastT {
		t = m.acct.LastT + 1
	}
	m.acct.LastT, m.t = t, t
	if m.history() {
		if m.acct.HistStart == 0 {
			m.acct.HistStart = t
		}
		if hour := hourOf(t); hour != m.acct.LastHour {
			m.acct.LastHour = hour
			if err := m.tx.Set(kHour(m.acct.ID, hour), nil); err != nil {
				m.err = err
			}
		}
	}
	return t
}

// keepRecord adds bytes of a retained record to the account's usage (and
// history usage). It never refuses: history gives way to live data later.
func (m *mtx) keepRecord(n int64) {
	m.acct.Used += n
	m.acct.HistUsed += n
}

// archiveNode keeps the stored version old of a node, which ends now; trash
// (deletions) names the entry that named it last; moved: only its parent
// changed.
func (m *mtx) archiveNode(old *api.Node, trash *trashRec, moved bool) error {
	t := m.when()
	if !m.history() || old.Since >= t {
		return nil
	}
	m.keepRecord(attrsCharge(old.Attrs))
	share, _, _ := api.RecordShare(old.Attrs)
	if trash == nil && !moved {
		// A deletion or a move also ends the entry, whose version notes the
		// hour for the share its name is sealed for: a shared folder's root
		// deleted or moved in the owner's tree is no change of the share.
		m.noteShareHour(share)
	}
	// The share's own trash index, so a member's trash listing reads the
	// share's deletions only (history_share.go); not a shared folder's
	// root, whose entry is the owner's.
	if trash == nil || !nameInShare(trash.Name, share) {
		share = 0
	}
	ref := histRef{kind: refNode, id: old.ID}
	if trash != nil {
		ref.kind = refTrash
		if m.keptEntry(trash.Parent, trash.NameMAC) {
			t := *trash
			t.Name, t.NameInEntry = nil, true
			trash = &t
		}
	}
	if err := m.tx.Set(kHNode(m.acct.ID, old.ID, t), histNode{Node: *old, Until: t, Trash: trash}.encode()); err != nil {
		return err
	}
	if share != 0 {
		if err := m.tx.Set(kHShareTrash(m.acct.ID, share, t, old.ID), nil); err != nil {
			return err
		}
	}
	m.hidx, m.lastEntry = appendRef(m.hidx, ref), nil
	return nil
}

// keptEntry reports whether the version this mutation kept last is that of
// entry (parent, mac), ended now: an unlink keeps the entry just before the
// node, so the trash record can leave the name there.
func (m *mtx) keptEntry(parent uint64, mac string) bool {
	return m.lastEntry != nil && m.lastEntry.id == parent && m.lastEntry.mac == mac
}

// archiveEntry keeps the stored version old of entry (parent, mac), which ends now.
func (m *mtx) archiveEntry(parent uint64, mac string, old *entryRec) error {
	t := m.when()
	if !m.history() || old.Since >= t {
		return nil
	}
	m.keepRecord(entryCharge(mac, old.Name))
	share, _, _ := api.RecordShare(old.Name)
	m.noteShareHour(share)
	if err := m.tx.Set(kHEnt(m.acct.ID, parent, mac, t), histEntry{Entry: *old, Until: t}.encode()); err != nil {
		return err
	}
	ref := histRef{kind: refEntry, id: parent, mac: mac}
	m.hidx, m.lastEntry = appendRef(m.hidx, ref), &ref
	return nil
}

// writeIndex writes the expiry index of the versions this mutation ended
// (mutateTxn calls it last).
func (m *mtx) writeIndex() error {
	if len(m.hidx) == 0 {
		return nil
	}
	return m.tx.Set(kHIdx(m.acct.ID, m.t), m.hidx)
}

// chunkUnreferenced notes that chunk c (of id) lost its last reference now:
// with history on, it is kept for the window and counts as history.
func (m *mtx) chunkUnreferenced(id string, c *chunkRec) error {
	if !m.history() || c.Hist {
		return nil
	}
	c.Hist = true
	m.acct.HistUsed += c.Size
	return nil
}

// chunkReferenced undoes chunkUnreferenced when a chunk is referenced again
// (or collected).
func (m *mtx) chunkReferenced(id string, c *chunkRec) error {
	if !c.Hist {
		return nil
	}
	c.Hist = false
	m.acct.HistUsed -= c.Size
	return nil
}

// keptChunk is a chunk kept only for history.
type keptChunk struct {
	id    string
	unref int64
	size  int64
}

// keptChunks lists acct's chunks kept only for history, oldest loss of the
// last reference first. They are among the zero-reference chunks the
// collector indexes anyway (zref/), so history keeps no index of its own:
// that would be one more write in every delete, and this is read only to
// free history early.
func keptChunks(tx *badger.Txn, acct string) ([]keptChunk, error) {
	var out []keptChunk
	p := []byte("zref/" + acct + "/")
	it := tx.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: false})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		id := string(it.Item().Key()[len(p):])
		c, err := readChunk(tx, acct, id)
		if err != nil {
			return nil, err
		}
		if c != nil && c.Hist {
			out = append(out, keptChunk{id, c.Unref.UnixNano(), c.Size})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].unref < out[j].unref })
	return out, nil
}

// Reads at a moment.

func errBeforeHistory() error {
	return apiErr(http.StatusGone, api.CodeHistoryGone, "that moment is older than the history this account keeps")
}

// nodeAt returns node id as it was at t, or nil if it did not exist then.
func nodeAt(tx *badger.Txn, acct string, id uint64, t int64) (*api.Node, error) {
	cur, err := readNode(tx, acct, id)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if cur != nil && cur.Since <= t {
		return cur, nil
	}
	it := tx.NewIterator(badger.IteratorOptions{Prefix: pHNode(acct, id), PrefetchValues: false})
	defer it.Close()
	it.Seek(kHNode(acct, id, t+1)) // the first version that ended after t
	if !it.Valid() {
		return nil, nil
	}
	var h histNode
	if err := it.Item().Value(h.decode); err != nil {
		return nil, err
	}
	if h.Node.Since > t {
		return nil, nil
	}
	return &h.Node, nil
}

func isNotFound(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeNotFound
}

// entriesAt lists directory dir as it was at t, each entry with its node then.
func (s *Server) entriesAt(tx *badger.Txn, acct string, dir uint64, t int64) ([]api.Entry, error) {
	out := []api.Entry{}
	add := func(mac string, e entryRec) error {
		n, err := nodeAt(tx, acct, e.ID, t)
		if err != nil {
			return err
		}
		if n == nil {
			s.log.Warn("history: entry without node version", "account", acct, "node", e.ID, "at", t)
			return nil
		}
		out = append(out, api.Entry{Parent: dir, NameMAC: mac, Name: e.Name, Node: *n})
		return nil
	}
	prefix := pEnt(acct, dir)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	for it.Rewind(); it.Valid(); it.Next() {
		var e entryRec
		if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &e) }); err != nil {
			it.Close()
			return nil, err
		}
		if e.Since <= t {
			if err := add(string(it.Item().Key()[len(prefix):]), e); err != nil {
				it.Close()
				return nil, err
			}
		}
	}
	it.Close()
	prefix = pHEnt(acct, dir)
	it = tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		mac, until, ok := strings.Cut(string(it.Item().Key()[len(prefix):]), "/")
		if !ok || until <= hexTime(t) {
			continue
		}
		var h histEntry
		if err := it.Item().Value(h.decode); err != nil {
			return nil, err
		}
		if h.Entry.Since <= t {
			if err := add(mac, h.Entry); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// versions lists node id's versions, newest first.
func versions(tx *badger.Txn, acct string, id uint64) ([]api.Version, error) {
	var out []api.Version
	cur, err := readNode(tx, acct, id)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if cur != nil {
		out = append(out, api.Version{Node: *cur})
	}
	it := tx.NewIterator(badger.IteratorOptions{Prefix: pHNode(acct, id), PrefetchValues: true, Reverse: true})
	defer it.Close()
	seek := append(pHNode(acct, id), 0xff)
	for it.Seek(seek); it.ValidForPrefix(pHNode(acct, id)); it.Next() {
		var h histNode
		if err := it.Item().Value(h.decode); err != nil {
			return nil, err
		}
		out = append(out, api.Version{Until: h.Until, Node: h.Node})
	}
	return out, nil
}

// Freeing history.

// purgeBefore drops every version that ended before t (and the trash
// records of nodes deleted before t), a bounded number per transaction, and
// raises the account's history floor to t so the GC frees the chunks only
// those versions needed. It returns the versions dropped and the record
// bytes freed.
func (s *Server) purgeBefore(acct string, t int64) (int, int64, error) {
	var total int
	var freed int64
	for {
		var n int
		err := s.mutate(acct, false, func(m *mtx) error {
			n = 0
			if t > m.acct.HistFloor {
				m.acct.HistFloor = t
			}
			prefix := pHIdx(acct)
			it := m.tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
			type change struct {
				key  []byte
				refs []histRef
			}
			var changes []change
			refs := 0
			for it.Rewind(); it.Valid() && refs < 4000; it.Next() {
				k := it.Item().KeyCopy(nil)
				if string(k[len(prefix):]) >= hexTime(t) {
					break
				}
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				c := change{key: k}
				if c.refs, err = parseRefs(v); err != nil {
					it.Close()
					return fmt.Errorf("history index %q: %w", k, err)
				}
				changes = append(changes, c)
				refs += len(c.refs)
			}
			it.Close()
			for _, c := range changes {
				until, err := strconv.ParseInt(string(c.key[len(prefix):]), 16, 64)
				if err != nil {
					return fmt.Errorf("bad history index %q", c.key)
				}
				for _, ref := range c.refs {
					b, err := m.dropVersion(until, ref)
					if err != nil {
						return err
					}
					freed += b
					n++
				}
				if err := m.tx.Delete(c.key); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, freed, fmt.Errorf("purge history of %s: %w", acct, err)
		}
		total += n
		if n == 0 {
			if err := s.dropHoursBefore(acct, t); err != nil {
				return total, freed, fmt.Errorf("purge history of %s: %w", acct, err)
			}
			return total, freed, nil
		}
	}
}

// dropHoursBefore deletes the hour keys of acct's tree (hh/) and of its
// shares (hsh/) for the hours that ended by t: no moment in them can be
// shown once the history before t is gone. The hour t is in stays. Keys
// sort by hour within the account and within each share, so only the
// keys deleted (and one more each) are read; at most 1,000 a transaction.
func (s *Server) dropHoursBefore(acct string, t int64) error {
	const batch = 1000
	cut := hourOf(t)
	for _, p := range [][]byte{pHour(acct), pShareHours(acct)} {
		for {
			var dropped int
			err := s.dbUpdate(func(tx *badger.Txn) error {
				var ks [][]byte
				it := tx.NewIterator(badger.IteratorOptions{Prefix: p})
				for it.Rewind(); it.Valid() && len(ks) < batch; {
					k := it.Item().Key()
					prefix, hour, err := splitHourKey(k)
					if err != nil {
						it.Close()
						return err
					}
					if hour < cut {
						ks = append(ks, it.Item().KeyCopy(nil))
						it.Next()
						continue
					}
					// The later hours of this share (or of the account) stay:
					// on to the next share's keys.
					it.Seek(append(bytes.Clone(prefix), 0xff))
				}
				it.Close()
				for _, k := range ks {
					if err := tx.Delete(k); err != nil {
						return err
					}
				}
				dropped = len(ks)
				return nil
			})
			if err != nil {
				return fmt.Errorf("drop hour keys before %s: %w", time.Unix(0, cut).UTC(), err)
			}
			if dropped < batch {
				break
			}
		}
	}
	return nil
}

// dropVersion deletes the version ref (of the expiry index) that ended at
// until and credits its bytes; a record already gone (a path purge) is skipped.
func (m *mtx) dropVersion(until int64, ref histRef) (int64, error) {
	a := m.acct.ID
	if ref.kind == refEntry {
		var h histEntry
		k := kHEnt(a, ref.id, ref.mac, until)
		if err := getRec(m.tx, k, &h); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return 0, nil
			}
			return 0, err
		}
		b := entryCharge(ref.mac, h.Entry.Name)
		m.keepRecord(-b)
		return b, m.tx.Delete(k)
	}
	var h histNode
	k := kHNode(a, ref.id, until)
	if err := getRec(m.tx, k, &h); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return 0, nil
		}
		return 0, err
	}
	b := attrsCharge(h.Node.Attrs)
	m.keepRecord(-b)
	if err := m.dropShareTrash(&h); err != nil {
		return 0, err
	}
	return b, m.tx.Delete(k)
}

// purgeNode drops every version of node id and of everything that ever was
// below it (the history of a path), and frees at once the chunks no other
// kept version names.
func (s *Server) purgeNode(ctx context.Context, acct string, id uint64) (int, int64, error) {
	var ids []uint64
	var dirs []uint64
	err := s.db.View(func(tx *badger.Txn) error {
		seen := map[uint64]bool{id: true}
		queue := []uint64{id}
		for len(queue) > 0 {
			n := queue[0]
			queue = queue[1:]
			ids = append(ids, n)
			if !wasDir(tx, acct, n) {
				continue
			}
			dirs = append(dirs, n)
			for i, p := range [][]byte{pEnt(acct, n), pHEnt(acct, n)} {
				it := tx.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true})
				for it.Rewind(); it.Valid(); it.Next() {
					var child uint64
					err := it.Item().Value(func(b []byte) error {
						if i == 0 { // a current entry
							var e entryRec
							err := jsonUnmarshal(b, &e)
							child = e.ID
							return err
						}
						var h histEntry
						err := h.decode(b)
						child = h.Entry.ID
						return err
					})
					if err != nil {
						it.Close()
						return err
					}
					if child != 0 && !seen[child] {
						seen[child] = true
						queue = append(queue, child)
					}
				}
				it.Close()
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("purge history: walk: %w", err)
	}
	var total int
	var freed int64
	chunks := map[string]bool{}
	// One transaction per node or directory keeps each one small.
	drop := func(prefix []byte, f func(m *mtx, key []byte, val []byte) (int64, error)) error {
		return s.mutate(acct, false, func(m *mtx) error {
			it := m.tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().KeyCopy(nil)
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				b, err := f(m, k, v)
				if err != nil {
					return err
				}
				freed += b
				total++
				if err := m.tx.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for _, n := range ids {
		err := drop(pHNode(acct, n), func(m *mtx, _, v []byte) (int64, error) {
			var h histNode
			if err := h.decode(v); err != nil {
				return 0, err
			}
			for _, c := range h.Node.Chunks {
				chunks[c] = true
			}
			b := attrsCharge(h.Node.Attrs)
			m.keepRecord(-b)
			return b, m.dropShareTrash(&h)
		})
		if err != nil {
			return total, freed, fmt.Errorf("purge history of node %d: %w", n, err)
		}
	}
	for _, d := range dirs {
		err := drop(pHEnt(acct, d), func(m *mtx, k, v []byte) (int64, error) {
			var h histEntry
			if err := h.decode(v); err != nil {
				return 0, err
			}
			parts := strings.Split(string(k), "/")
			b := entryCharge(parts[len(parts)-2], h.Entry.Name)
			m.keepRecord(-b)
			return b, nil
		})
		if err != nil {
			return total, freed, fmt.Errorf("purge history of directory %d: %w", d, err)
		}
	}
	return total, freed, s.freeUnneeded(ctx, acct, chunks)
}

// wasDir reports whether node id is or was a directory.
func wasDir(tx *badger.Txn, acct string, id uint64) bool {
	if id == api.RootID {
		return true
	}
	if n, err := readNode(tx, acct, id); err == nil {
		return n.Type == api.TypeDir
	}
	it := tx.NewIterator(badger.IteratorOptions{Prefix: pHNode(acct, id), PrefetchValues: true})
	defer it.Close()
	it.Rewind()
	if !it.Valid() {
		return false
	}
	var h histNode
	if err := it.Item().Value(h.decode); err != nil {
		return false
	}
	return h.Node.Type == api.TypeDir
}

// freeUnneeded collects now the chunks among cands that no current record
// and no kept version names any more.
func (s *Server) freeUnneeded(ctx context.Context, acct string, cands map[string]bool) error {
	if len(cands) == 0 {
		return nil
	}
	err := s.db.View(func(tx *badger.Txn) error {
		for id := range cands {
			c, err := readChunk(tx, acct, id)
			if err != nil {
				return err
			}
			if c == nil || c.Refs > 0 {
				delete(cands, id)
			}
		}
		if len(cands) == 0 {
			return nil
		}
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte("hn/" + acct + "/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(cands) > 0; it.Next() {
			var h histNode
			if err := it.Item().Value(h.decode); err != nil {
				return err
			}
			for _, c := range h.Node.Chunks {
				delete(cands, c)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("find unneeded chunks: %w", err)
	}
	for id := range cands {
		if _, err := s.collectNow(ctx, acct, id); err != nil {
			return err
		}
	}
	return nil
}

// freeRoom frees the oldest history of acct until need bytes are free, when
// live data needs room that history holds. It returns the bytes freed.
func (s *Server) freeRoom(ctx context.Context, acct string, need int64) (int64, error) {
	if need <= 0 {
		return 0, nil
	}
	// Find the moment T such that the kept chunks unreferenced before T
	// (plus the records that ended before T) free at least need.
	var t int64
	err := s.db.View(func(tx *badger.Txn) error {
		var sum int64
		kept, err := keptChunks(tx, acct)
		if err != nil {
			return err
		}
		for _, c := range kept {
			sum += c.size
			t = c.unref + 1
			if sum >= need {
				return nil
			}
		}
		// Not enough in chunks: free every version.
		t = time.Now().UnixNano()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("free history for room: %w", err)
	}
	s.log.Info("history: freeing the oldest history to make room", "account", acct, "need", need, "before", time.Unix(0, t).UTC())
	if _, _, err := s.purgeBefore(acct, t); err != nil {
		return 0, err
	}
	err = s.mutate(acct, false, func(m *mtx) error {
		m.acct.HistFreed = m.now
		return m.accountChange()
	})
	if err != nil {
		return 0, err
	}
	return s.collectHistoryBefore(ctx, acct, t)
}

// collectHistoryBefore collects the kept chunks of acct that lost their last
// reference before t.
func (s *Server) collectHistoryBefore(ctx context.Context, acct string, t int64) (int64, error) {
	var ids []string
	err := s.db.View(func(tx *badger.Txn) error {
		kept, err := keptChunks(tx, acct)
		for _, c := range kept {
			if c.unref < t {
				ids = append(ids, c.id)
			}
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, id := range ids {
		n, err := s.collectNow(ctx, acct, id)
		if err != nil {
			return freed, err
		}
		freed += max(n, 0)
	}
	return freed, nil
}

// expireHistory drops, for every account, the history older than its window.
func (s *Server) expireHistory(ctx context.Context) error {
	type acctCut struct {
		id  string
		cut int64
	}
	var accts []acctCut
	now := time.Now()
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte("acct/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var a accountRec
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &a) }); err != nil {
				return err
			}
			if a.HistStart != 0 || a.HistUsed != 0 {
				cut := now.UnixNano()
				if r := s.retention(&a); r > 0 {
					cut = now.Add(-r).UnixNano()
				}
				accts = append(accts, acctCut{a.ID, cut})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("history expiry: %w", err)
	}
	for _, a := range accts {
		if ctx.Err() != nil {
			return nil
		}
		n, _, err := s.purgeBefore(a.id, a.cut)
		if err != nil {
			return err
		}
		if n > 0 {
			s.log.Info("history: expired versions dropped", "account", a.id, "versions", n)
		}
	}
	return nil
}
