package server

// History over HTTP: reads of the tree at a moment, a node's versions, the
// trash, the hours that changed, purge and the account's retention window.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// view is what the account's owner sees of a.
func (s *Server) view(a *accountRec, now time.Time) api.Account {
	v := a.view(now)
	if r := s.retention(a); r > 0 {
		v.HistoryUsed = a.HistUsed
		v.HistoryRetention = api.Duration(r / time.Second)
		if a.HistStart != 0 {
			v.HistoryFrom = time.Unix(0, s.histCutoff(a, now)).UTC()
		} else {
			v.HistoryFrom = now.UTC()
		}
	}
	v.HistoryFreed = a.HistFreed
	return v
}

// parseTime reads a query time: Unix ns, non-negative, decimal.
func parseTime(r *http.Request, name string, def int64) (int64, error) {
	q := r.URL.Query().Get(name)
	if q == "" {
		return def, nil
	}
	t, err := strconv.ParseInt(q, 10, 64)
	if err != nil || t < 0 || strconv.FormatInt(t, 10) != q {
		return 0, badRequest("%s must be Unix nanoseconds", name)
	}
	return t, nil
}

// atTime reads ?at= and refuses a moment older than the account's history.
func (s *Server) atTime(tx *badger.Txn, r *http.Request, acct string) (int64, error) {
	now := time.Now()
	t, err := parseTime(r, "at", now.UnixNano())
	if err != nil {
		return 0, err
	}
	var a accountRec
	if err := getJSON(tx, kAcct(acct), &a); err != nil {
		return 0, err
	}
	if t < s.histCutoff(&a, now) {
		return 0, errBeforeHistory()
	}
	return t, nil
}

func (s *Server) handleHistoryEntries(w http.ResponseWriter, r *http.Request, acct string) error {
	dir, err := parseNodeID(r.URL.Query().Get("parent"))
	if err != nil {
		return err
	}
	var out api.HistoryListResponse
	err = s.db.View(func(tx *badger.Txn) error {
		t, err := s.atTime(tx, r, acct)
		if err != nil {
			return err
		}
		n, err := nodeAt(tx, acct, dir, t)
		if err != nil {
			return err
		}
		if n == nil {
			return notFound("directory at that moment")
		}
		if n.Type != api.TypeDir {
			return conflict(api.CodeNotDir, "not a directory")
		}
		out.At = t
		out.Entries, err = s.entriesAt(tx, acct, dir, t)
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleHistoryNode(w http.ResponseWriter, r *http.Request, acct string) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	var n *api.Node
	err = s.db.View(func(tx *badger.Txn) error {
		t, err := s.atTime(tx, r, acct)
		if err != nil {
			return err
		}
		n, err = nodeAt(tx, acct, id, t)
		if err == nil && n == nil {
			err = notFound("node at that moment")
		}
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, n)
}

func (s *Server) handleVersions(w http.ResponseWriter, r *http.Request, acct string) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	out := api.VersionsResponse{Versions: []api.Version{}}
	err = s.db.View(func(tx *badger.Txn) error {
		vs, err := versions(tx, acct, id)
		if len(vs) > 0 {
			out.Versions = vs
		}
		return err
	})
	if err != nil {
		return err
	}
	if len(out.Versions) == 0 {
		return notFound("node")
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleTrash(w http.ResponseWriter, r *http.Request, acct string) error {
	after, err := parseTime(r, "after", 0)
	if err != nil {
		return err
	}
	cursor := r.URL.Query().Get("cursor")
	if cursor != "" && !validCursor(cursor) {
		return badRequest("bad cursor")
	}
	out := api.TrashResponse{Items: []api.TrashItem{}}
	err = s.db.View(func(tx *badger.Txn) error {
		// The expiry index is the trash by time: its refTrash refs are the
		// deleted nodes.
		p := pHIdx(acct)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true})
		defer it.Close()
		start := append(p, hexTime(after+1)...)
		var skipTo uint64 // resuming in the change at the cursor: after this node
		if cursor != "" {
			start = append(p, cursor[:16]...)
			skipTo, _ = strconv.ParseUint(cursor[17:], 16, 64)
		}
		for it.Seek(start); it.Valid(); it.Next() {
			k := string(it.Item().Key()[len(p):])
			until, err := strconv.ParseInt(k, 16, 64)
			if err != nil {
				return fmt.Errorf("bad history index key %q", k)
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			refs, err := parseRefs(v)
			if err != nil {
				return fmt.Errorf("history index %q: %w", k, err)
			}
			if cursor == "" || k != cursor[:16] {
				skipTo = 0
			}
			for _, ref := range refs {
				if ref.kind != refTrash {
					continue
				}
				if skipTo != 0 {
					if ref.id == skipTo {
						skipTo = 0
					}
					continue
				}
				if len(out.Items) == api.MaxTrashPage {
					last := out.Items[len(out.Items)-1]
					out.Cursor = hexTime(last.Deleted) + "/" + fmt.Sprintf("%016x", last.Node.ID)
					return nil
				}
				var h histNode
				if err := getRec(tx, kHNode(acct, ref.id, until), &h); err != nil || h.Trash == nil {
					continue // purged meanwhile
				}
				name, err := trashName(tx, acct, &h)
				if err != nil {
					return err
				}
				out.Items = append(out.Items, api.TrashItem{Deleted: until, Parent: h.Trash.Parent, NameMAC: h.Trash.NameMAC, Name: name, Node: h.Node})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// trashName is the sealed name a deleted node h had last: in its trash
// record, or in the entry version that ended with it.
func trashName(tx *badger.Txn, acct string, h *histNode) ([]byte, error) {
	if !h.Trash.NameInEntry {
		return h.Trash.Name, nil
	}
	var e histEntry
	err := getRec(tx, kHEnt(acct, h.Trash.Parent, h.Trash.NameMAC, h.Until), &e)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil // purged with its directory's history
	}
	if err != nil {
		return nil, err
	}
	return e.Entry.Name, nil
}

// validCursor: a trash cursor is UNTIL/NODEID, 16 hex digits each.
func validCursor(c string) bool {
	if len(c) != 33 || c[16] != '/' {
		return false
	}
	for i, b := range []byte(c) {
		if i != 16 && !(b >= '0' && b <= '9' || b >= 'a' && b <= 'f') {
			return false
		}
	}
	return true
}

func (s *Server) handleHistoryTimes(w http.ResponseWriter, r *http.Request, acct string) error {
	out := api.HistoryTimesResponse{Hours: []int64{}}
	err := s.db.View(func(tx *badger.Txn) error {
		var a accountRec
		if err := getJSON(tx, kAcct(acct), &a); err != nil {
			return err
		}
		out.From = s.histCutoff(&a, time.Now())
		if s.retention(&a) == 0 {
			return nil
		}
		p := pHour(acct)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		from := out.From - out.From%int64(time.Hour)
		for it.Seek(append(p, hexTime(from)...)); it.Valid(); it.Next() {
			h, err := strconv.ParseInt(string(it.Item().Key()[len(p):]), 16, 64)
			if err != nil {
				return fmt.Errorf("bad hour key: %w", err)
			}
			out.Hours = append(out.Hours, h)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handlePurge(w http.ResponseWriter, r *http.Request, acct string) error {
	return serveJSON(w, r, func(req *api.PurgeRequest) (api.PurgeResponse, error) {
		var out api.PurgeResponse
		if err := validatePurge(req); err != nil {
			return out, err
		}
		var err error
		ctx := context.WithoutCancel(r.Context())
		if req.Node != 0 {
			out.Versions, out.Bytes, err = s.purgeNode(ctx, acct, req.Node)
			return out, err
		}
		before := req.Before
		if before <= 0 || before > time.Now().UnixNano() {
			before = time.Now().UnixNano()
		}
		out.Versions, out.Bytes, err = s.purgeBefore(acct, before)
		if err != nil {
			return out, err
		}
		_, err = s.collectHistoryBefore(ctx, acct, before)
		return out, err
	})
}

func (s *Server) handleRetention(w http.ResponseWriter, r *http.Request, acct string) error {
	return serveJSON(w, r, func(req *api.RetentionRequest) (api.Account, error) {
		if err := validateRetention(req, s.cfg.HistoryMax); err != nil {
			return api.Account{}, err
		}
		var out api.Account
		err := s.mutate(acct, false, func(m *mtx) error {
			v := int64(req.Retention)
			m.acct.Retention = &v
			out = s.view(m.acct, m.now)
			return m.accountChange()
		})
		return out, err
	})
}

func validateRetention(r *api.RetentionRequest, max time.Duration) error {
	if r.Retention < 0 {
		return badRequest("retention must not be negative")
	}
	if max > 0 && r.Retention.D() > max {
		return badRequest("retention is at most %v on this server", max)
	}
	return nil
}

func validatePurge(r *api.PurgeRequest) error {
	if r.Before < 0 {
		return badRequest("before must not be negative")
	}
	if r.Node == 1 {
		return badRequest("purge the root's history with a time, not a node")
	}
	return nil
}
