package server

// Requests on a share: a tree, chunk or change-feed request with the
// Kumo-Share header runs on the owner's account (its tree, chunks, quota and
// feed), after the checks here: the caller is the owner or an accepted
// member, a reader only reads, and every node and directory it names is in
// the share (its stored attributes' header names the share). Anything else
// with the header is refused: no handler of the home tree ever runs on
// another account's behalf.

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// shareScope is who asks for what on which share.
type shareScope struct {
	caller, owner string
	share         uint64
	root          uint64 // the share's root node in the owner's tree
	gen           uint32 // the share's current key generation
	role          string // the owner counts as a writer
	// histFloor (Unix ns) is where a member's history reads start: the
	// later of the share's creation and the member's acceptance (0 for the
	// owner). history_share.go.
	histFloor int64
}

func (sc *shareScope) isOwner() bool { return sc.caller == sc.owner }

type shareHandler func(w http.ResponseWriter, r *http.Request, sc *shareScope) error

// shareRoute is the handler of a request pattern on a share; nil for
// patterns the header is not for.
func (s *Server) shareRoute(pattern string) shareHandler {
	switch pattern {
	case "POST /v1/nodes":
		return s.shareCreate
	case "GET /v1/nodes/{id}":
		return s.shareGetNode
	case "PUT /v1/nodes/{id}":
		return s.shareUpdate
	case "GET /v1/nodes/{id}/entries":
		return s.shareList
	case "GET /v1/nodes/{id}/entries/{mac}":
		return s.shareLookup
	case "POST /v1/rename":
		return s.shareRename
	case "POST /v1/link":
		return s.shareLink
	case "POST /v1/unlink":
		return s.shareUnlink
	case "POST /v1/batch":
		return s.shareBatch
	case "PUT /v1/chunks/{id}":
		return s.sharePutChunk
	case "GET /v1/chunks/{id}":
		return func(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
			return s.handleGetChunk(w, r, sc.owner)
		}
	case "POST /v1/chunks/have":
		return func(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
			return s.handleHave(w, r, sc.owner)
		}
	case "GET /v1/changes":
		return s.shareChanges
	case "GET /v1/history/entries": // history_share.go
		return s.shareHistoryEntries
	case "GET /v1/history/nodes/{id}":
		return s.shareHistoryNode
	case "GET /v1/history/versions/{id}":
		return s.shareVersions
	case "GET /v1/history/trash":
		return s.shareTrash
	case "GET /v1/history/times":
		return s.shareHistoryTimes
	}
	return nil
}

// serveShared serves a request of caller that carries the Kumo-Share header.
func (s *Server) serveShared(w http.ResponseWriter, r *http.Request, caller string) error {
	vals := r.Header.Values(api.ShareHeader)
	if len(vals) != 1 {
		return badRequest("give one %s header", api.ShareHeader)
	}
	owner, share, err := api.ParseShareScope(vals[0])
	if err != nil {
		return badRequest("%v", err)
	}
	h := s.shareRoute(r.Pattern)
	if h == nil {
		return badRequest("the %s header is for tree, chunk, change-feed and history-read requests only", api.ShareHeader)
	}
	var sc *shareScope
	if err := s.db.View(func(tx *badger.Txn) (err error) { sc, err = loadScope(tx, caller, owner, share); return err }); err != nil {
		return err
	}
	return h(w, r, sc)
}

// loadScope checks that caller may use the share and returns its scope.
// Not a member, not yet accepted, and no such share get the same answer.
func loadScope(tx *badger.Txn, caller, owner string, share uint64) (*shareScope, error) {
	sh, err := readShare(tx, owner, share)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
			return nil, forbidden("not a member of this share (or it is no longer shared)")
		}
		return nil, err
	}
	sc := &shareScope{caller: caller, owner: owner, share: share, root: sh.Root, gen: sh.Generation, role: api.RoleWriter}
	if caller == owner {
		return sc, nil
	}
	var o accountRec
	if err := getJSON(tx, kAcct(owner), &o); err != nil {
		return nil, fmt.Errorf("owner of share %016x: %w", share, err)
	}
	if o.Disabled { // as its links: the operator stopped the account
		return nil, forbidden("the share's owner account is disabled")
	}
	m, err := readMember(tx, owner, share, caller)
	if err != nil {
		return nil, err
	}
	if m == nil || m.State != api.MemberAccepted {
		return nil, forbidden("not a member of this share (or it is no longer shared): accept an invitation first")
	}
	sc.role = m.Role
	sc.histFloor = max(sh.Created.UnixNano(), m.Accepted)
	return sc, nil
}

// inShare reports whether a node's stored attributes are sealed for share.
func inShare(n *api.Node, share uint64) bool {
	sh, _, ok := api.RecordShare(n.Attrs)
	return ok && sh == share
}

// node reads a node of the share. A node outside it is not_found, the
// answer for a node that does not exist, so a member cannot probe the
// owner's tree by id.
func (sc *shareScope) node(tx *badger.Txn, id uint64) (*api.Node, error) {
	n, err := readNode(tx, sc.owner, id)
	if err != nil {
		return nil, err
	}
	if !inShare(n, sc.share) {
		return nil, notFound("node")
	}
	return n, nil
}

func (sc *shareScope) dir(tx *badger.Txn, id uint64) (*api.Node, error) {
	n, err := sc.node(tx, id)
	if err != nil {
		return nil, err
	}
	if n.Type != api.TypeDir {
		return nil, conflict(api.CodeNotDir, "not a directory")
	}
	return n, nil
}

// target is a directory a rename or link moves into: outside the share
// (but in the owner's tree) it is cross_share.
func (sc *shareScope) target(tx *badger.Txn, id uint64) error {
	n, err := readDir(tx, sc.owner, id)
	if err != nil {
		return err
	}
	if !inShare(n, sc.share) {
		return conflict(api.CodeCrossShare, "the target directory is not in this share: copy instead")
	}
	return nil
}

// entryNode checks that an existing entry under a directory of the share
// names a node of the share (not a nested share's root); no entry, or one
// whose node is gone, passes: the operation itself answers for those.
func (sc *shareScope) entryNode(tx *badger.Txn, parent uint64, mac string, code string) error {
	e, err := readEntry(tx, sc.owner, parent, mac)
	if err != nil || e == nil {
		return err
	}
	n, err := readNode(tx, sc.owner, e.ID)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	if !inShare(n, sc.share) {
		if code == api.CodeCrossShare {
			return conflict(code, "the entry names a node of another share")
		}
		return forbidden("the entry names a node of another share")
	}
	return nil
}

// record checks the clear header of a record a request writes: sealed for
// this share, and by a member under no generation the share has not
// reached (forbidden). A record under an older generation is refused as
// stale_generation (409) by the tree change itself, whoever writes it
// (mtx.currentGen, sharegen.go): the member's drive fetches the new secret
// and seals the write again, as the owner's does, so the write is not
// lost.
func (sc *shareScope) record(b []byte, what string) error {
	share, gen, ok := api.RecordShare(b)
	if !ok || share != sc.share {
		return forbidden(what + " not sealed for this share")
	}
	if !sc.isOwner() && gen > sc.gen {
		return forbidden(what + " sealed under a key generation the share has not reached: fetch the share's new secret")
	}
	return nil
}

// checkOp checks one tree change on the share inside its transaction: the
// caller's membership and role are read again there, so a rotation or
// removal that commits first is seen (and one that commits in between makes
// this transaction conflict and run again).
func (s *Server) checkOp(tx *badger.Txn, sc *shareScope, op api.BatchOp) error {
	cur, err := loadScope(tx, sc.caller, sc.owner, sc.share)
	if err != nil {
		return err
	}
	if cur.role != api.RoleWriter {
		return forbidden("a reader of a share cannot change it")
	}
	// The op's own validation first, so the checks below see well-formed input.
	switch {
	case op.Op == api.OpCreate && op.Create != nil:
		r := op.Create
		if err := validateCreate(r); err != nil {
			return err
		}
		if _, err := cur.dir(tx, r.Parent); err != nil {
			return err
		}
		if err := cur.record(r.Attrs, "attributes"); err != nil {
			return err
		}
		return cur.record(r.Name, "name")
	case op.Op == api.OpUpdate && op.Update != nil:
		if err := validateUpdate(op.ID, op.Update); err != nil {
			return err
		}
		if _, err := cur.node(tx, op.ID); err != nil {
			return err
		}
		return cur.record(op.Update.Attrs, "attributes")
	case op.Op == api.OpRename && op.Rename != nil:
		r := op.Rename
		if err := validateRename(r); err != nil {
			return err
		}
		if _, err := cur.dir(tx, r.SrcParent); err != nil {
			return err
		}
		if err := cur.target(tx, r.DstParent); err != nil {
			return err
		}
		if err := cur.entryNode(tx, r.SrcParent, r.SrcNameMAC, api.CodeCrossShare); err != nil {
			return err
		}
		if err := cur.entryNode(tx, r.DstParent, r.DstNameMAC, api.CodeCrossShare); err != nil {
			return err
		}
		if len(r.SrcName) > 0 {
			if err := cur.record(r.SrcName, "source name"); err != nil {
				return err
			}
		}
		return cur.record(r.Name, "name")
	case op.Op == api.OpLink && op.Link != nil:
		r := op.Link
		if err := validateLink(r); err != nil {
			return err
		}
		if _, err := cur.node(tx, r.ID); err != nil {
			return err
		}
		if err := cur.target(tx, r.Parent); err != nil {
			return err
		}
		return cur.record(r.Name, "name")
	case op.Op == api.OpUnlink && op.Unlink != nil:
		r := op.Unlink
		if err := validateUnlink(r); err != nil {
			return err
		}
		if _, err := cur.dir(tx, r.Parent); err != nil {
			return err
		}
		return cur.entryNode(tx, r.Parent, r.NameMAC, api.CodeForbidden)
	}
	return nil // a malformed op: mtx.batchOp refuses it
}

func (s *Server) shareGuard(sc *shareScope) opGuard {
	return func(tx *badger.Txn, op api.BatchOp) error { return s.checkOp(tx, sc, op) }
}

// shareOp runs one tree change on the share, in a transaction of the
// owner's account (owner's quota, node cap and feed).
func (s *Server) shareOp(sc *shareScope, op api.BatchOp) (*api.Node, error) {
	return s.guardedOp(sc.owner, s.shareGuard(sc), op)
}

// guardedOp runs one op in its own transaction of acct after guard.
func (s *Server) guardedOp(acct string, guard opGuard, op api.BatchOp) (*api.Node, error) {
	var n *api.Node
	err := s.mutate(acct, false, func(m *mtx) (err error) {
		if err := guard(m.tx, op); err != nil {
			return err
		}
		n, err = m.batchOp(op)
		return err
	})
	return n, err
}

func (s *Server) shareCreate(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return serveJSON(w, r, func(req *api.CreateRequest) (*api.Entry, error) {
		n, err := s.shareOp(sc, api.BatchOp{Op: api.OpCreate, Create: req})
		if err != nil {
			return nil, err
		}
		return &api.Entry{Parent: req.Parent, NameMAC: req.NameMAC, Name: req.Name, Node: *n}, nil
	})
}

func (s *Server) shareUpdate(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	return serveJSON(w, r, func(req *api.UpdateRequest) (*api.Node, error) {
		return s.shareOp(sc, api.BatchOp{Op: api.OpUpdate, ID: id, Update: req})
	})
}

func (s *Server) shareRename(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return serveJSON(w, r, func(req *api.RenameRequest) (struct{}, error) {
		_, err := s.shareOp(sc, api.BatchOp{Op: api.OpRename, Rename: req})
		return okBody, err
	})
}

func (s *Server) shareLink(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return serveJSON(w, r, func(req *api.LinkRequest) (*api.Entry, error) {
		n, err := s.shareOp(sc, api.BatchOp{Op: api.OpLink, Link: req})
		if err != nil {
			return nil, err
		}
		return &api.Entry{Parent: req.Parent, NameMAC: req.NameMAC, Name: req.Name, Node: *n}, nil
	})
}

func (s *Server) shareUnlink(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return serveJSON(w, r, func(req *api.UnlinkRequest) (struct{}, error) {
		_, err := s.shareOp(sc, api.BatchOp{Op: api.OpUnlink, Unlink: req})
		return okBody, err
	})
}

// shareBatch runs a batch on the share as the home tree's runs (runs of
// ops committed together), each op checked in its transaction.
func (s *Server) shareBatch(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return s.serveBatch(w, r, sc.owner, s.shareGuard(sc))
}

func (s *Server) shareGetNode(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	var n *api.Node
	if err := s.db.View(func(tx *badger.Txn) (err error) { n, err = sc.node(tx, id); return err }); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, n)
}

// shareList lists a directory of the share: only entries whose node is in
// the share (a nested share's root is left out).
func (s *Server) shareList(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	var entries []api.Entry
	err = s.db.View(func(tx *badger.Txn) error {
		if _, err := sc.dir(tx, id); err != nil {
			return err
		}
		entries, err = s.listDir(tx, sc.owner, id, func(n *api.Node) bool { return inShare(n, sc.share) })
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, entries)
}

func (s *Server) shareLookup(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	mac := r.PathValue("mac")
	if err := validNameMAC(mac); err != nil {
		return err
	}
	var out api.Entry
	err = s.db.View(func(tx *badger.Txn) error {
		if _, err := sc.dir(tx, id); err != nil {
			return err
		}
		e, err := readEntry(tx, sc.owner, id, mac)
		if err != nil {
			return err
		}
		if e == nil {
			return notFound("entry")
		}
		n, err := sc.node(tx, e.ID)
		if err != nil {
			return err
		}
		out = api.Entry{Parent: id, NameMAC: mac, Name: e.Name, Node: *n}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// sharePutChunk stores a writer's chunk in the owner's chunk space, counted
// against the owner's quota (refused at its limit as for the owner).
func (s *Server) sharePutChunk(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	if sc.role != api.RoleWriter {
		return forbidden("a reader of a share cannot upload to it")
	}
	return s.handlePutChunk(w, r, sc.owner)
}

// shareChanges is the owner's change feed limited to the share: changes of
// nodes in the share and of entries under its directories. A node's
// deletion is not on it (the node is gone, so it cannot be placed): the
// removal of its entry is. Changes of the account (quota) are the owner's.
func (s *Server) shareChanges(w http.ResponseWriter, r *http.Request, sc *shareScope) error {
	return s.serveChanges(w, r, sc.owner, func(resp api.ChangesResponse) (api.ChangesResponse, error) {
		return s.filterChanges(sc, resp)
	})
}

func (s *Server) filterChanges(sc *shareScope, resp api.ChangesResponse) (api.ChangesResponse, error) {
	if len(resp.Changes) == 0 {
		return resp, nil
	}
	in := map[uint64]bool{}
	err := s.db.View(func(tx *badger.Txn) error {
		isIn := func(id uint64) (bool, error) {
			if v, ok := in[id]; ok {
				return v, nil
			}
			n, err := readNode(tx, sc.owner, id)
			var ae *api.Error
			if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
				in[id] = false
				return false, nil
			}
			if err != nil {
				return false, err
			}
			in[id] = inShare(n, sc.share)
			return in[id], nil
		}
		kept := []api.Change{}
		for _, c := range resp.Changes {
			var ok bool
			var err error
			switch c.Kind {
			case api.ChangeNode:
				if !c.Deleted {
					ok, err = isIn(c.Node)
				}
			case api.ChangeEntry:
				ok, err = isIn(c.Parent)
			}
			if err != nil {
				return err
			}
			if ok {
				kept = append(kept, c)
			}
		}
		resp.Changes = kept
		return nil
	})
	return resp, err
}
