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
	return s.historyEntries(w, r, ownHistory(acct))
}

func (s *Server) handleHistoryNode(w http.ResponseWriter, r *http.Request, acct string) error {
	return s.historyNode(w, r, ownHistory(acct))
}

// histView is whose history a read answers and how much of it: an
// account's own tree, or a share's (history_share.go) from the caller's
// floor.
type histView struct {
	acct  string
	share uint64 // 0: the account's whole tree
	root  uint64 // the share's root (with share)
	floor int64  // Unix ns: no moment, version or deletion before it is answered
}

func ownHistory(acct string) *histView { return &histView{acct: acct} }

// hours is the prefix of the view's hour index: the account's hh/ or the
// share's hsh/.
func (v *histView) hours() []byte {
	if v.share != 0 {
		return pShareHour(v.acct, v.share)
	}
	return pHour(v.acct)
}

// keep reports whether a node (a version of it) is in the view.
func (v *histView) keep(n *api.Node) bool { return v.share == 0 || inShare(n, v.share) }

// histAt reads ?at=: a moment before the account's window or the view's floor
// is history_gone.
func (s *Server) histAt(tx *badger.Txn, r *http.Request, v *histView) (int64, error) {
	t, err := s.atTime(tx, r, v.acct)
	if err == nil && t < v.floor {
		return 0, errBeforeHistory()
	}
	return t, err
}

func (s *Server) historyEntries(w http.ResponseWriter, r *http.Request, v *histView) error {
	dir, err := parseNodeID(r.URL.Query().Get("parent"))
	if err != nil {
		return err
	}
	var out api.HistoryListResponse
	err = s.db.View(func(tx *badger.Txn) error {
		t, err := s.histAt(tx, r, v)
		if err != nil {
			return err
		}
		n, err := nodeAt(tx, v.acct, dir, t)
		if err != nil {
			return err
		}
		if n == nil || !v.keep(n) {
			return notFound("directory at that moment")
		}
		if n.Type != api.TypeDir {
			return conflict(api.CodeNotDir, "not a directory")
		}
		all, err := s.entriesAt(tx, v.acct, dir, t)
		if err != nil {
			return err
		}
		out.At, out.Entries = t, []api.Entry{}
		for _, e := range all {
			if v.keep(&e.Node) { // a nested share's root is left out of a share's, as in shareList
				out.Entries = append(out.Entries, e)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) historyNode(w http.ResponseWriter, r *http.Request, v *histView) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	var n *api.Node
	err = s.db.View(func(tx *badger.Txn) error {
		t, err := s.histAt(tx, r, v)
		if err != nil {
			return err
		}
		n, err = nodeAt(tx, v.acct, id, t)
		if err == nil && (n == nil || !v.keep(n)) {
			err = notFound("node at that moment")
		}
		if err == nil && v.share != 0 && id == v.root {
			n.Parent = 0 // where the folder was in the owner's tree is the owner's
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
	var curUntil int64
	var curID uint64
	if cursor != "" {
		var ok bool
		if curUntil, curID, ok = parseTrashCursor(cursor); !ok {
			return badRequest("bad cursor")
		}
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
			start = append(p, hexTime(curUntil)...)
			skipTo = curID
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
			if cursor == "" || until != curUntil {
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
					out.Cursor = trashCursor(last.Deleted, last.Node.ID)
					return nil
				}
				item, ok, err := trashItem(tx, acct, ref.id, until)
				if err != nil {
					return err
				}
				if ok {
					out.Items = append(out.Items, item)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// trashItem is the trash item of node id deleted at until; ok is false
// when its kept version is gone (purged meanwhile) or is not a deletion.
// Only a missing record is "gone": one that cannot be read or decoded is
// an error, not an item silently left out of the trash (or of the share
// trash index built from it).
func trashItem(tx *badger.Txn, acct string, id uint64, until int64) (api.TrashItem, bool, error) {
	var h histNode
	err := getRec(tx, kHNode(acct, id, until), &h)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return api.TrashItem{}, false, nil
	}
	if err != nil {
		return api.TrashItem{}, false, fmt.Errorf("read the kept version of node %d of account %s deleted at %s: %w "+
			"(if this repeats, the metadata store is damaged: restore DATA/meta from a kumo admin backup)",
			id, acct, time.Unix(0, until).UTC().Format(time.RFC3339Nano), err)
	}
	if h.Trash == nil {
		return api.TrashItem{}, false, nil
	}
	name, err := trashName(tx, acct, &h)
	if err != nil {
		return api.TrashItem{}, false, err
	}
	return api.TrashItem{Deleted: until, Parent: h.Trash.Parent, NameMAC: h.Trash.NameMAC, Name: name, Node: h.Node}, true, nil
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

// trashCursor is where a trash page ends, UNTIL/NODEID (16 lowercase hex
// digits each) of its last item: the cursor of the account's trash and of
// a share's, and the tail of a share trash key (kHShareTrash).
func trashCursor(until int64, id uint64) string { return fmt.Sprintf("%016x/%016x", until, id) }

// parseTrashCursor reads a trashCursor; ok is false for anything else.
func parseTrashCursor(c string) (until int64, id uint64, ok bool) {
	if !validCursor(c) {
		return 0, 0, false
	}
	until, err1 := strconv.ParseInt(c[:16], 16, 64)
	id, err2 := strconv.ParseUint(c[17:], 16, 64)
	return until, id, err1 == nil && err2 == nil
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
	return s.historyTimes(w, r, ownHistory(acct))
}

// historyTimes gives how far back the view's history goes (for a member no
// earlier than its floor: it learns nothing of the owner's window moves
// from before it joined) and the hours of its hour index.
func (s *Server) historyTimes(w http.ResponseWriter, r *http.Request, v *histView) error {
	out := api.HistoryTimesResponse{Hours: []int64{}}
	err := s.db.View(func(tx *badger.Txn) error {
		var a accountRec
		if err := getJSON(tx, kAcct(v.acct), &a); err != nil {
			return err
		}
		out.From = max(s.histCutoff(&a, time.Now()), v.floor)
		if s.retention(&a) == 0 {
			return nil
		}
		p := v.hours()
		it := tx.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Seek(append(p, hexTime(hourOf(out.From))...)); it.Valid(); it.Next() {
			_, h, err := splitHourKey(it.Item().Key())
			if err != nil {
				return err
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
