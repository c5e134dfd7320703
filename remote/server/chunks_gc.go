package server

// Chunk garbage collection: unreferenced chunks after GCGrace, and blobs
// written but never recorded (pending markers left by a crash or a failure).

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// sweepPending deletes blobs that were written but never recorded (a crash
// or a failure between the blob write and the record's commit). A marker
// still present while we hold the chunk's lock belongs to no running upload.
func (s *Server) sweepPending(ctx context.Context) (int, error) {
	type cand struct{ acct, id string }
	var cands []cand
	cutoff := time.Now().Add(-s.cfg.GCGrace)
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte("pend/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(cands) < 100000; it.Next() {
			acct, id, ok := strings.Cut(string(it.Item().Key()[len(prefix):]), "/")
			if !ok {
				continue
			}
			var at time.Time
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &at) }); err != nil {
				return err
			}
			if at.Before(cutoff) {
				cands = append(cands, cand{acct, id})
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep pending: %w", err)
	}
	n := 0
	for _, c := range cands {
		if ctx.Err() != nil {
			break
		}
		swept, err := s.sweepOne(ctx, c.acct, c.id)
		if err != nil {
			return n, err
		}
		if swept {
			n++
		}
	}
	return n, nil
}

func (s *Server) sweepOne(ctx context.Context, acct, id string) (bool, error) {
	mu := s.chunkLock(acct, id)
	mu.Lock()
	defer mu.Unlock()
	var pending bool
	var rec *chunkRec
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		if pending, err = exists(tx, kPend(acct, id)); err != nil || !pending {
			return err
		}
		rec, err = readChunk(tx, acct, id)
		return err
	})
	if err != nil || !pending {
		return false, err
	}
	if rec != nil && !rec.InDB {
		// Cannot happen (the record's transaction deletes the marker), but
		// never delete a recorded blob.
		return false, s.db.Update(func(tx *badger.Txn) error { return tx.Delete(kPend(acct, id)) })
	}
	// No record, or one whose bytes are in the metadata store (the id was
	// uploaded again as a small chunk after a failed big upload): the blob
	// is named by nothing.
	s.log.Info("gc: deleting unrecorded chunk", "account", acct, "chunk", id)
	s.dropPending(ctx, acct, id)
	return true, nil
}

// RunGC deletes chunks that have had no references for GCGrace: first the
// record (in a transaction that re-checks the reference count, so an update
// that referenced the chunk meanwhile wins, and one that comes later fails
// cleanly with "chunk not stored"), with the bytes of a small chunk, then
// the blob of a big one. It returns the number of chunks and bytes freed.
// The GC loop calls it every GCInterval.
func (s *Server) RunGC(ctx context.Context) (int, int64, error) {
	type cand struct{ acct, id string }
	var cands []cand
	now := time.Now()
	cutoff := now.Add(-s.cfg.GCGrace)
	if err := s.expireHistory(ctx); err != nil {
		return 0, 0, err
	}
	histCut := map[string]int64{} // per account: kept chunks unreferenced before this may go
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte("zref/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(cands) < 100000; it.Next() {
			acct, id, ok := strings.Cut(string(it.Item().Key()[len(prefix):]), "/")
			if !ok {
				continue
			}
			c, err := readChunk(tx, acct, id)
			if err != nil {
				return err
			}
			if c != nil && c.Hist {
				hc, ok := histCut[acct]
				if !ok {
					var a accountRec
					if err := getJSON(tx, kAcct(acct), &a); err != nil {
						return fmt.Errorf("gc: account %s: %w", acct, err)
					}
					hc = s.histCutoff(&a, now)
					histCut[acct] = hc
				}
				if c.Unref.UnixNano() >= hc {
					continue
				}
			}
			if c == nil || (c.Refs == 0 && c.Unref.Before(cutoff)) {
				cands = append(cands, cand{acct, id})
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("gc scan: %w", err)
	}
	var n int
	var freed int64
	touched := map[string]bool{}
	defer func() {
		// Announce the usage the GC left behind, once per account.
		for acct := range touched {
			if err := s.mutate(acct, false, func(m *mtx) error { return m.announceUsage(true) }); err != nil {
				s.log.Warn("gc: announce usage", "account", acct, "err", err)
			}
		}
	}()
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			return n, freed, nil
		}
		size, err := s.collect(ctx, c.acct, c.id)
		if err != nil {
			return n, freed, err
		}
		if size >= 0 {
			n++
			freed += size
			touched[c.acct] = true
		}
	}
	if swept, err := s.sweepPending(ctx); err != nil {
		return n, freed, err
	} else if swept > 0 {
		s.log.Info("gc: unrecorded chunks deleted", "chunks", swept)
	}
	return n, freed, nil
}

// collect deletes one unreferenced chunk that neither the grace period nor
// history keeps; it returns -1 if the chunk was kept.
func (s *Server) collect(ctx context.Context, acct, id string) (int64, error) {
	return s.collectIf(ctx, acct, id, false)
}

// collectNow deletes one unreferenced chunk now, whatever its age: history
// that needed it was just freed.
func (s *Server) collectNow(ctx context.Context, acct, id string) (int64, error) {
	return s.collectIf(ctx, acct, id, true)
}

func (s *Server) collectIf(ctx context.Context, acct, id string, now bool) (int64, error) {
	mu := s.chunkLock(acct, id)
	mu.Lock()
	defer mu.Unlock()
	size := int64(-1)
	inDB := false
	cutoff := time.Now().Add(-s.cfg.GCGrace)
	err := s.mutate(acct, false, func(m *mtx) error {
		size = -1
		c, err := readChunk(m.tx, acct, id)
		if err != nil {
			return err
		}
		if c == nil {
			return m.tx.Delete(kZref(acct, id))
		}
		if c.Refs > 0 {
			return nil
		}
		if !now && (!c.Unref.Before(cutoff) || (c.Hist && c.Unref.UnixNano() >= s.histCutoff(m.acct, m.now))) {
			return nil
		}
		size, inDB = c.Size, c.InDB
		if err := m.chunkReferenced(id, c); err != nil { // leaves history usage and index
			return err
		}
		m.acct.Used -= c.Size
		if c.InDB {
			// Its value log space comes back with valueLogGC.
			if err := m.tx.Delete(kChunkData(acct, id)); err != nil {
				return err
			}
		}
		if err := m.tx.Delete(kChunk(acct, id)); err != nil {
			return err
		}
		return m.tx.Delete(kZref(acct, id))
	})
	if err != nil {
		return -1, fmt.Errorf("gc %s/%s: %w", acct, id, err)
	}
	if size >= 0 && !inDB {
		// The record is gone; a failed delete leaves an orphan blob (no quota
		// is charged for it, and a new upload of the id overwrites it).
		if err := s.blobs.Delete(context.WithoutCancel(ctx), blobKey(acct, id)); err != nil {
			s.log.Warn("gc: delete blob failed", "account", acct, "chunk", id, "err", err)
		}
	}
	return size, nil
}
