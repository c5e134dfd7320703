package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"kumo/remote/api"
)

// Small chunks (at most Config.SmallChunkMax sealed bytes) are stored with
// their record in the metadata store: one transaction, no pending marker, no
// blob. Every mutation of an account writes the account record, so an
// account's uploads cannot commit side by side; instead, concurrent uploads
// of one account are committed together. Each joins the account's queue,
// and one committer per account takes what has queued up (at most
// maxSmallBatch) into one transaction, whose synced commit they all share.
//
// Uploads that arrive while a commit is syncing wait for it before they can
// join a queue (their session lookup is a badger read, and badger starts no
// read before the commits ahead of it are durable), so they all become ready
// just as the committer looks for its next batch. The committer therefore
// waits for uploads that have arrived but not joined yet, up to
// smallGatherMax, before it starts a transaction. A lone uploader never waits.
//
// No chunk lock is needed: the upload is a single transaction, serialized
// with the GC's transaction of the same chunk by the account lock and
// badger's conflict detection, and two uploads of the same id in one batch
// see each other (the second finds the record and is a no-op).

// maxSmallBatch bounds the chunks of one transaction: at most 8 MiB of
// values, far below badger's transaction limits (values over 1 KiB go to
// the value log and count there as pointers).
const maxSmallBatch = 128

// smallGatherMax bounds how long a committer waits for arriving uploads.
const smallGatherMax = time.Millisecond

type smallPut struct {
	id   string
	data []byte
	done chan error
}

type smallQueue struct {
	waiting []*smallPut
}

// smallQueues holds the queues of the accounts that have a committer
// running, and the small uploads on their way to a queue.
type smallQueues struct {
	mu       sync.Mutex
	m        map[string]*smallQueue
	arriving int           // small uploads received and not yet queued or answered
	changed  chan struct{} // closed (and replaced) when arriving drops
}

// arrival is one small upload counted in arriving until it joins a queue or
// its request ends.
type arrival struct{ counted bool }

type arrivalKey struct{}

// countArrival counts a PUT of a small chunk (by its Content-Length) as
// arriving from the moment the server has it, before its session lookup.
func (s *Server) countArrival(f handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if r.ContentLength <= 0 || r.ContentLength > s.cfg.SmallChunkMax {
			return f(w, r)
		}
		a := &arrival{counted: true}
		s.small.mu.Lock()
		s.small.arriving++
		s.small.mu.Unlock()
		defer func() {
			s.small.mu.Lock()
			s.small.leaveLocked(a)
			s.small.mu.Unlock()
		}()
		return f(w, r.WithContext(context.WithValue(r.Context(), arrivalKey{}, a)))
	}
}

// leaveLocked ends an arrival's count (once) and wakes gathering committers.
func (q *smallQueues) leaveLocked(a *arrival) {
	if a == nil || !a.counted {
		return
	}
	a.counted = false
	q.arriving--
	if q.changed != nil {
		close(q.changed)
		q.changed = nil
	}
}

// putSmallChunk stores a small chunk idempotently: it returns once the
// transaction holding it has committed (durably, with SyncWrites).
func (s *Server) putSmallChunk(ctx context.Context, acct, id string, data []byte) error {
	p := &smallPut{id: id, data: data, done: make(chan error, 1)}
	a, _ := ctx.Value(arrivalKey{}).(*arrival)
	s.small.mu.Lock()
	q := s.small.m[acct]
	start := q == nil
	if start {
		q = &smallQueue{}
		s.small.m[acct] = q
	}
	q.waiting = append(q.waiting, p)
	s.small.leaveLocked(a)
	s.small.mu.Unlock()
	if start {
		go s.commitSmall(acct, q)
	}
	return <-p.done
}

// commitSmall commits the account's queued small chunks, batch after batch,
// until the queue is empty. The requests wait for their answers, so the
// server is never closed under a running committer.
func (s *Server) commitSmall(acct string, q *smallQueue) {
	for {
		s.small.mu.Lock()
		s.gatherLocked(q)
		n := min(len(q.waiting), maxSmallBatch)
		if n == 0 {
			delete(s.small.m, acct)
			s.small.mu.Unlock()
			return
		}
		batch := q.waiting[:n:n]
		q.waiting = q.waiting[n:]
		if len(q.waiting) == 0 {
			q.waiting = nil
		}
		s.small.mu.Unlock()
		for i, err := range s.commitSmallBatch(acct, batch) {
			batch[i].done <- err
		}
	}
}

// gatherLocked waits (releasing s.small.mu meanwhile) while small uploads
// are arriving and the batch is not full, at most smallGatherMax.
func (s *Server) gatherLocked(q *smallQueue) {
	var timeout <-chan time.Time
	for s.small.arriving > 0 && len(q.waiting) < maxSmallBatch {
		if timeout == nil {
			t := time.NewTimer(smallGatherMax)
			defer t.Stop()
			timeout = t.C
		}
		if s.small.changed == nil {
			s.small.changed = make(chan struct{})
		}
		ch := s.small.changed
		s.small.mu.Unlock()
		select {
		case <-ch:
			s.small.mu.Lock()
		case <-timeout:
			s.small.mu.Lock()
			return
		}
	}
}

// commitSmallBatch records a batch in one transaction. A chunk refused for
// quota or a read-only account gets its refusal and writes nothing; any
// other error fails the whole batch.
func (s *Server) commitSmallBatch(acct string, batch []*smallPut) []error {
	errs := make([]error, len(batch))
	err := s.mutate(acct, false, func(m *mtx) error {
		clear(errs) // a retry after a conflict starts over
		for i, p := range batch {
			errs[i] = m.recordChunk(p.id, chunkRec{Size: int64(len(p.data)), InDB: true}, p.data)
			var ae *api.Error
			if errs[i] != nil && !errors.As(errs[i], &ae) {
				return errs[i]
			}
		}
		return nil
	})
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
}
