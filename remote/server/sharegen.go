package server

// Stale generations: once a share has rotated to generation G, a record
// sealed for it under a generation below G is refused, whoever writes it
// (the owner through its own tree as well as a member through the share's
// scope). A device (the owner's other one, or a member's) that has not yet
// learnt of a rotation would otherwise store, after the re-seal, bytes that
// the removed member's old keys open, and that every client refuses once
// the roster's lowest accepted generation is raised (a lost write). The
// writer reloads the share and seals again (docs/API.md, Shared folders).
// This protects against an honest server storing readable bytes, not
// against a hostile one: the writer has already uploaded the old-generation
// chunks and sent the records this refuses.

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// shareGenRec is the part of a shareRec this check reads (the roster is
// not decoded).
type shareGenRec struct {
	Generation uint32 `json:"generation"`
}

// currentGen refuses a record (node attributes or a sealed name) a change
// writes into the account's tree if its clear header names a share of the
// account under a generation older than the share's current one. It reads
// the share inside the change's transaction, so a rotation that commits in
// between makes the transaction conflict and run again, and is then seen.
// A share not (or no longer) created passes: `kumo share` seals under
// generation 1 before it creates the share, and a stopped share's records
// stay in the owner's tree. Empty records (an optional field) pass.
func (m *mtx) currentGen(recs ...[]byte) error {
	for _, b := range recs {
		share, gen, ok := api.RecordShare(b)
		if !ok || share == 0 {
			continue // no record, or a home one: the op's own checks answer
		}
		cur, err := m.shareGen(share)
		if err != nil {
			return err
		}
		if gen < cur {
			return staleGen(share, gen, cur)
		}
	}
	return nil
}

// shareGen returns share's current generation (0: no such share), read
// once per transaction: a batch writes many records of one share, and the
// share record (roster, wrapped secrets) is decoded once, not per record.
// No op of a tree change rotates a share, so it holds for the transaction.
func (m *mtx) shareGen(share uint64) (uint32, error) {
	if g, ok := m.shareGens[share]; ok {
		return g, nil
	}
	var sh shareGenRec
	if err := getJSON(m.tx, kShare(m.acct.ID, share), &sh); err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return 0, fmt.Errorf("read share %016x: %w", share, err)
	}
	if m.shareGens == nil {
		m.shareGens = map[uint64]uint32{}
	}
	m.shareGens[share] = sh.Generation
	return sh.Generation, nil
}

func staleGen(share uint64, gen, cur uint32) *api.Error {
	return apiErr(http.StatusConflict, api.CodeStaleGeneration, fmt.Sprintf(
		"record sealed under generation %d of share %016x, which is now at generation %d: reload the share's keys and seal the record again under the current generation (re-encrypting the chunks it names)",
		gen, share, cur))
}
