package server

// The account head (format v2): an opaque record the account's clients MAC and
// advance after they push, kept as a log so a client can check the chain from
// the last head it saw (internal/head). The server only orders them: a head is
// accepted if its counter is the next one (compare-and-swap), and the newest
// headKeep are kept.

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

const (
	headKeep    = 100_000 // heads kept per account (89 bytes each)
	headLogPage = 1000
)

func kHead(a string, counter uint64) []byte { return fmt.Appendf(nil, "head/%s/%016x", a, counter) }
func pHead(a string) []byte                 { return []byte("head/" + a + "/") }

// currentHead returns the newest head's counter (0 for none).
func currentHead(tx *badger.Txn, acct string) (uint64, error) {
	it := tx.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: pHead(acct)})
	defer it.Close()
	it.Seek(append(pHead(acct), 0xff))
	if !it.Valid() {
		return 0, nil
	}
	k := it.Item().Key()
	n, err := strconv.ParseUint(string(k[len(pHead(acct)):]), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("head key %q: %w", k, err)
	}
	return n, nil
}

// handlePutHead appends the next head.
func (s *Server) handlePutHead(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.HeadRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Head) == 0 || len(req.Head) > api.MaxHeadSize || req.Counter == 0 {
		return badRequest("head must be 1..%d bytes with a counter >= 1", api.MaxHeadSize)
	}
	err := s.mutate(acct, false, func(m *mtx) error {
		cur, err := currentHead(m.tx, acct)
		if err != nil {
			return err
		}
		if req.Counter != cur+1 {
			return conflict(api.CodeConflict, fmt.Sprintf("head %d is current: the next is %d, not %d", cur, cur+1, req.Counter))
		}
		if err := m.tx.Set(kHead(acct, req.Counter), req.Head); err != nil {
			return err
		}
		if req.Counter > headKeep {
			return m.tx.Delete(kHead(acct, req.Counter-headKeep))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// handleGetHead returns heads from ?from=N (default: the current one).
func (s *Server) handleGetHead(w http.ResponseWriter, r *http.Request, acct string) error {
	var from uint64
	if v := r.URL.Query().Get("from"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return badRequest("from: %v", err)
		}
		from = n
	}
	resp := api.HeadLog{Heads: [][]byte{}}
	err := s.db.View(func(tx *badger.Txn) error {
		cur, err := currentHead(tx, acct)
		if err != nil {
			return err
		}
		resp.Current = cur
		if from == 0 {
			from = max(cur, 1)
		}
		for c := from; c <= cur && len(resp.Heads) < headLogPage; c++ {
			item, err := tx.Get(kHead(acct, c))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return apiErr(http.StatusGone, api.CodeNotFound, fmt.Sprintf("head %d is no longer kept (the newest %d are)", c, headKeep))
			}
			if err != nil {
				return err
			}
			b, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			resp.Heads = append(resp.Heads, b)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}
