package server

// History of a share, for its members: the history endpoints with the
// Kumo-Share header answer from the owner's history, limited to the
// versions sealed for the share (each version's own clear header names its
// share, as inShare reads a live node's). A member never sees a version of
// a node outside the share, of another share, or of the share's folder from
// before it was shared (sealed under the owner's keys). Readers read;
// restoring is writing, which the share's write checks govern.
//
// A member's history starts at its floor, the later of the share's creation
// and the member's acceptance (shareScope.histFloor): the invitation hands
// every generation's key, and a share id used again after DELETE
// /v1/shares finds the earlier sharing's records sealed for the same id, so
// without the floor a new member would read what was deleted or overwritten
// before it joined, or before the folder was shared this time. The owner
// has no floor.

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// kHShareTrash is the share's trash index: one empty key per node of the
// share deleted at until, so a member's trash listing reads the share's
// deletions only, not the owner's whole expiry index.
func kHShareTrash(a string, share uint64, until int64, id uint64) []byte {
	return append(pHShareTrash(a, share), trashCursor(until, id)...)
}
func pHShareTrash(a string, share uint64) []byte {
	return fmt.Appendf(nil, "hs/%s/%016x/", a, share)
}

// kShareHour marks an hour (Unix ns of its start) in which a version of a
// share's record ended: the share's own hours, for its members' listing of
// moments (the account's hh/ covers all of the owner's tree).
func kShareHour(a string, share uint64, hour int64) []byte {
	return fmt.Appendf(nil, "hsh/%s/%016x/%016x", a, share, hour)
}
func pShareHour(a string, share uint64) []byte { return fmt.Appendf(nil, "hsh/%s/%016x/", a, share) }

// pShareHours is the prefix of every hour key of a's shares.
func pShareHours(a string) []byte { return []byte("hsh/" + a + "/") }

// noteShareHour marks this change's hour for share (0: none, the home
// tree), which a record it ended is sealed for, once per mutation and share.
func (m *mtx) noteShareHour(share uint64) {
	if share == 0 || m.shareHours[share] {
		return
	}
	if m.shareHours == nil {
		m.shareHours = map[uint64]bool{}
	}
	m.shareHours[share] = true
	t := m.when()
	k := kShareHour(m.acct.ID, share, hourOf(t))
	// Read before writing, as the account's hour is (acct.LastHour): most
	// changes fall in an hour already noted, and a write is a new version
	// of the key to compact away and a conflict with concurrent changes.
	noted, err := exists(m.tx, k)
	if err == nil && !noted {
		err = m.tx.Set(k, nil)
	}
	if err != nil {
		m.err = err
	}
}

// sameVersion reports whether two versions of a node differ at most in
// when they were current.
func sameVersion(a, b *api.Node) bool {
	return a.Version == b.Version && a.Type == b.Type && a.Nlink == b.Nlink && a.Parent == b.Parent &&
		bytes.Equal(a.Attrs, b.Attrs) && slices.Equal(a.Chunks, b.Chunks)
}

// nameInShare reports whether a sealed entry name is sealed for share (not
// 0, the home tree): a node of a share deleted under such a name is in the
// share's trash; a shared folder's root, named in the owner's tree, is not.
func nameInShare(name []byte, share uint64) bool {
	sh, _, ok := api.RecordShare(name)
	return ok && share != 0 && sh == share
}

// dropShareTrash deletes the share trash key of a kept node version that
// is being dropped, if it is a deleted node of a share.
func (m *mtx) dropShareTrash(h *histNode) error {
	if h.Trash == nil {
		return nil
	}
	share, _, ok := api.RecordShare(h.Node.Attrs)
	if !ok || share == 0 { // the home tree (share 0) has no index of its own
		return nil
	}
	return m.tx.Delete(kHShareTrash(m.acct.ID, share, h.Until, h.Node.ID))
}

// histView is the share's history as the caller may read it.
func (sc *shareScope) histView() *histView {
	return &histView{acct: sc.owner, share: sc.share, root: sc.root, floor: sc.histFloor}
}

func (s *Server) shareHistoryEntries(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return s.historyEntries(w, r, sc.histView())
}

func (s *Server) shareHistoryNode(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return s.historyNode(w, r, sc.histView())
}

func (s *Server) shareHistoryTimes(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return s.historyTimes(w, r, sc.histView())
}

// shareVersions lists a node's versions sealed for the share; a node with
// none is not_found, as a node outside the share is for the live tree.
func (s *Server) shareVersions(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	out := api.VersionsResponse{Versions: []api.Version{}}
	err = s.db.View(func(tx *badger.Txn) error {
		vs, err := versions(tx, sc.owner, id)
		for _, v := range vs {
			if !inShare(&v.Node, sc.share) || v.Until != 0 && v.Until < sc.histFloor {
				continue
			}
			if id == sc.root {
				// The folder's root moved in the owner's tree is no version
				// of the share's: one version, with no parent.
				v.Node.Parent = 0
				if k := len(out.Versions); k > 0 && sameVersion(&out.Versions[k-1].Node, &v.Node) {
					out.Versions[k-1].Node.Since = v.Node.Since
					continue
				}
			}
			out.Versions = append(out.Versions, v)
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

// shareTrash lists the share's deleted nodes from its own trash index
// (hs/), in the owner's trash's pages and cursors (UNTIL/NODEID).
func (s *Server) shareTrash(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	after, err := parseTime(r, "after", 0)
	if err != nil {
		return err
	}
	cursor := r.URL.Query().Get("cursor")
	if _, _, ok := parseTrashCursor(cursor); cursor != "" && !ok {
		return badRequest("bad cursor")
	}
	out := api.TrashResponse{Items: []api.TrashItem{}}
	err = s.db.View(func(tx *badger.Txn) error {
		p := pHShareTrash(sc.owner, sc.share)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		start := append(p, hexTime(max(after+1, sc.histFloor))...)
		if cursor != "" {
			start = append(p, cursor...)
		}
		for it.Seek(start); it.Valid(); it.Next() {
			k := string(it.Item().Key()[len(p):])
			if k == cursor {
				continue
			}
			until, id, ok := parseTrashCursor(k)
			if !ok {
				return fmt.Errorf("bad share trash key %q", k)
			}
			if until < sc.histFloor {
				continue // a cursor from before the caller's floor
			}
			if len(out.Items) == api.MaxTrashPage {
				last := out.Items[len(out.Items)-1]
				out.Cursor = trashCursor(last.Deleted, last.Node.ID)
				return nil
			}
			item, ok, err := trashItem(tx, sc.owner, id, until)
			if err != nil {
				return err
			}
			// Gone (purged meanwhile), or the share's root, named in the
			// owner's tree (indexed by older servers): not the share's.
			if ok && inShare(&item.Node, sc.share) && nameInShare(item.Name, sc.share) {
				out.Items = append(out.Items, item)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// kShareTrashIndexed marks a data directory whose share trash index (hs/)
// covers every kept deletion, those from before the index existed too.
func kShareTrashIndexed() []byte { return []byte("sys/share-trash-indexed") }

// shareTrashProgress is how many keys the startup passes below read between
// progress lines in the log.
const shareTrashProgress = 100_000

// indexShareTrash writes the share trash index for the deletions kept from
// before it existed, and their hours in the shares' hour index, once per
// data directory (at its first start with the index), writing as it reads
// the expiry index's trash refs, so memory stays flat however long the
// history. (Older changes that deleted nothing get no hour: their moments
// are still reachable by name.)
func (s *Server) indexShareTrash() error {
	var indexed bool
	err := s.db.View(func(tx *badger.Txn) (err error) {
		indexed, err = exists(tx, kShareTrashIndexed())
		return err
	})
	if err != nil || indexed {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := s.backfillShareTrash(wb); err != nil {
		return err
	}
	if err := wb.Set(kShareTrashIndexed(), nil); err != nil {
		return err
	}
	return wb.Flush()
}

// backfillShareTrash adds to wb the share trash and hour keys of every kept
// deletion of a share's node under the share's name.
func (s *Server) backfillShareTrash(wb *badger.WriteBatch) error {
	var read, added int
	err := s.db.View(func(tx *badger.Txn) error {
		p := []byte("hx/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if read++; read%shareTrashProgress == 0 {
				s.log.Info("indexing the trash of shared folders", "history_changes_read", read, "deletions_indexed", added)
			}
			k := string(it.Item().Key()[len(p):]) // ACCT/UNTIL
			acct, hexUntil, ok := strings.Cut(k, "/")
			until, err := strconv.ParseInt(hexUntil, 16, 64)
			if !ok || err != nil {
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
			for _, ref := range refs {
				if ref.kind != refTrash {
					continue
				}
				item, ok, err := trashItem(tx, acct, ref.id, until)
				if err != nil {
					return err
				}
				share, _, _ := api.RecordShare(item.Node.Attrs)
				if !ok || !nameInShare(item.Name, share) {
					continue // purged, or not a share's node under its name
				}
				if err := wb.Set(kHShareTrash(acct, share, until, ref.id), nil); err != nil {
					return err
				}
				if err := wb.Set(kShareHour(acct, share, hourOf(until)), nil); err != nil {
					return err
				}
				added++
			}
		}
		return nil
	})
	if err == nil && added > 0 {
		s.log.Info("indexed the trash of shared folders kept from before the index", "deletions", added)
	}
	return err
}

// kMemberAcceptedStamped marks a data directory whose accepted members all
// have an acceptance time.
func kMemberAcceptedStamped() []byte { return []byte("sys/share-member-accepted") }

// stampMemberAccepted gives the members accepted before memberRec had an
// acceptance time this start's time: once per data directory. The safe
// side: the share's creation time would hand such a member the history from
// before it was invited (and, for a share id used again, from an earlier
// sharing); now hides their earlier history, which they can still read in
// their own copies.
func (s *Server) stampMemberAccepted() error {
	now := time.Now().UnixNano()
	n := 0
	err := s.dbUpdate(func(tx *badger.Txn) error {
		n = 0
		if ok, err := exists(tx, kMemberAcceptedStamped()); err != nil || ok {
			return err
		}
		p := []byte("smem/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var m memberRec
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &m) }); err != nil {
				return fmt.Errorf("member record %q: %w", it.Item().Key(), err)
			}
			if m.State != api.MemberAccepted || m.Accepted != 0 {
				continue
			}
			m.Accepted = now
			if err := setJSON(tx, it.Item().KeyCopy(nil), m); err != nil {
				return err
			}
			n++
		}
		return tx.Set(kMemberAcceptedStamped(), nil)
	})
	if err == nil && n > 0 {
		s.log.Info("members accepted before acceptance times were kept read their shares' history from now", "members", n)
	}
	return err
}
