package server

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// maxChangesPerAnswer bounds one answer of the change feed.
const maxChangesPerAnswer = 1000

// feedNotifier wakes the long-polls of an account: each waiter holds the
// account's current channel, which a commit closes (and forgets).
type feedNotifier struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (f *feedNotifier) wait(acct string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := f.m[acct]
	if ch == nil {
		ch = make(chan struct{})
		f.m[acct] = ch
	}
	return ch
}

func (f *feedNotifier) notify(acct string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch := f.m[acct]; ch != nil {
		close(ch)
		delete(f.m, acct)
	}
}

// parseChangesQuery reads after= and wait= (seconds, capped at MaxChangeWait).
func parseChangesQuery(q map[string][]string) (after uint64, wait time.Duration, err error) {
	for k, v := range q {
		if (k != "after" && k != "wait") || len(v) != 1 {
			return 0, 0, badRequest("invalid query parameter %q", k)
		}
	}
	if v, ok := q["after"]; ok {
		after, err = strconv.ParseUint(v[0], 10, 64)
		if err != nil {
			return 0, 0, badRequest("invalid after")
		}
	}
	if v, ok := q["wait"]; ok {
		n, err := strconv.ParseUint(v[0], 10, 32)
		if err != nil {
			return 0, 0, badRequest("invalid wait")
		}
		wait = min(time.Duration(n)*time.Second, api.MaxChangeWait)
	}
	return after, wait, nil
}

func (s *Server) readChanges(acct string, after uint64) (api.ChangesResponse, error) {
	resp := api.ChangesResponse{Changes: []api.Change{}}
	err := s.db.View(func(tx *badger.Txn) error {
		var a accountRec
		if err := getJSON(tx, kAcct(acct), &a); err != nil {
			return err
		}
		resp.Seq = a.Seq
		if after > a.Seq || after+1 < a.FeedMin {
			resp.Reset = true
			return nil
		}
		prefix := []byte("feed/" + acct + "/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Seek(kFeed(acct, after+1)); it.Valid(); it.Next() {
			if len(resp.Changes) == maxChangesPerAnswer {
				resp.Seq = resp.Changes[len(resp.Changes)-1].Seq
				break
			}
			var c api.Change
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &c) }); err != nil {
				return err
			}
			if c.Seq > a.Seq { // committed after our snapshot's account record: cannot happen, but be exact
				break
			}
			resp.Changes = append(resp.Changes, c)
		}
		return nil
	})
	return resp, err
}

func (s *Server) handleChanges(w http.ResponseWriter, r *http.Request, acct string) error {
	return s.serveChanges(w, r, acct, nil)
}

// serveChanges answers GET /v1/changes from acct's feed: at once when there
// are changes, else after up to ?wait= seconds of long-polling. filter, if
// set, narrows each read (a share's view); reads it empties are skipped.
func (s *Server) serveChanges(w http.ResponseWriter, r *http.Request, acct string, filter func(api.ChangesResponse) (api.ChangesResponse, error)) error {
	after, wait, err := parseChangesQuery(r.URL.Query())
	if err != nil {
		return err
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		// Take the channel before reading, so a commit in between is not missed.
		wake := s.feed.wait(acct)
		resp, err := s.readChanges(acct, after)
		if err != nil {
			return err
		}
		if filter != nil {
			if resp, err = filter(resp); err != nil {
				return err
			}
		}
		if len(resp.Changes) > 0 || resp.Reset || timeout == nil {
			return writeJSON(w, http.StatusOK, resp)
		}
		if resp.Seq > after {
			after = resp.Seq // nothing left by the filter in there: look further on
			continue
		}
		select {
		case <-wake:
		case <-timeout:
			timeout = nil
		case <-s.closing:
			timeout = nil
		case <-r.Context().Done():
			return nil
		}
	}
}
