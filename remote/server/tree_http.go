package server

// HTTP handlers of the tree: the single-op endpoints, /v1/batch and its
// plumbing (several ops per transaction, the failing op alone), and the reads.

import (
	"errors"
	"net/http"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

var okBody = struct{}{}

// serveJSON is the shape of the plain JSON endpoints: decode the body into a
// Req, run do, answer its result.
func serveJSON[Req, Resp any](w http.ResponseWriter, r *http.Request, do func(*Req) (Resp, error)) error {
	var req Req
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	out, err := do(&req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request, acct string) error {
	return serveJSON(w, r, func(req *api.CreateRequest) (*api.Entry, error) { return s.doCreate(acct, req) })
}

func (s *Server) doCreate(acct string, req *api.CreateRequest) (*api.Entry, error) {
	if err := validateCreate(req); err != nil {
		return nil, err
	}
	var e *api.Entry
	err := s.mutate(acct, true, func(m *mtx) (err error) { e, err = m.create(req); return err })
	return e, err
}

func (s *Server) doUpdate(acct string, id uint64, req *api.UpdateRequest) (*api.Node, error) {
	if err := validateUpdate(id, req); err != nil {
		return nil, err
	}
	var n *api.Node
	err := s.mutate(acct, true, func(m *mtx) (err error) { n, err = m.update(id, req); return err })
	return n, err
}

func (s *Server) doRename(acct string, req *api.RenameRequest) error {
	if err := validateRename(req); err != nil {
		return err
	}
	return s.mutate(acct, true, func(m *mtx) error { return m.rename(req) })
}

func (s *Server) doLink(acct string, req *api.LinkRequest) (*api.Entry, error) {
	if err := validateLink(req); err != nil {
		return nil, err
	}
	var e *api.Entry
	err := s.mutate(acct, true, func(m *mtx) (err error) { e, err = m.link(req); return err })
	return e, err
}

// doUnlink is allowed on read-only accounts: deleting is how they get back under quota.
func (s *Server) doUnlink(acct string, req *api.UnlinkRequest) error {
	if err := validateUnlink(req); err != nil {
		return err
	}
	return s.mutate(acct, false, func(m *mtx) error { return m.unlink(req) })
}

func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request, acct string) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	var req api.UpdateRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	n, err := s.doUpdate(acct, id, &req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, n)
}

func (s *Server) handleRename(w http.ResponseWriter, r *http.Request, acct string) error {
	return serveJSON(w, r, func(req *api.RenameRequest) (struct{}, error) { return okBody, s.doRename(acct, req) })
}

func (s *Server) handleLink(w http.ResponseWriter, r *http.Request, acct string) error {
	return serveJSON(w, r, func(req *api.LinkRequest) (*api.Entry, error) { return s.doLink(acct, req) })
}

func (s *Server) handleUnlink(w http.ResponseWriter, r *http.Request, acct string) error {
	return serveJSON(w, r, func(req *api.UnlinkRequest) (struct{}, error) { return okBody, s.doUnlink(acct, req) })
}

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request, acct string) error {
	return s.serveBatch(w, r, acct, nil)
}

// opGuard checks one op inside its transaction before it runs (a share's
// access checks, shares_access.go); nil: none.
type opGuard func(tx *badger.Txn, op api.BatchOp) error

func (s *Server) serveBatch(w http.ResponseWriter, r *http.Request, acct string, guard opGuard) error {
	var req api.BatchRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := validateBatch(&req); err != nil {
		return err
	}
	resp := api.BatchResponse{Results: make([]api.BatchResult, len(req.Ops))}
	s.runBatch(acct, req.Ops, guard, func(i int, node *api.Node, err error) {
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) {
				s.log.Error("batch op failed", "req", info(r).id, "account", acct, "op", req.Ops[i].Op, "err", err)
				ae = apiErr(http.StatusInternalServerError, api.CodeInternal, "internal error")
			}
			resp.Results[i].Error = &api.Error{Code: ae.Code, Message: ae.Message}
			return
		}
		resp.Results[i].Node = node
	})
	return writeJSON(w, http.StatusOK, resp)
}

// errBatchStop ends a batch transaction at the first op that fails.
var errBatchStop = errors.New("batch op failed")

// runBatch runs ops in order, reporting each result, committing as many
// consecutive ops per transaction as it can: a batch of N ops costs one
// commit (one fsync with SyncWrites), not N. An op that fails ends its
// transaction without effect; the ops before it are committed again without
// it (ops are deterministic on the same state), the failing op runs alone so
// its error is reported exactly as for a single request, and the rest
// continue after it.
func (s *Server) runBatch(acct string, ops []api.BatchOp, guard opGuard, report func(int, *api.Node, error)) {
	one := func(i int) {
		var node *api.Node
		var err error
		if guard == nil {
			node, err = s.batchOp(acct, ops[i])
		} else {
			node, err = s.guardedOp(acct, guard, ops[i])
		}
		report(i, node, err)
	}
	for i := 0; i < len(ops); {
		nodes, err := s.batchTxn(acct, ops[i:], guard)
		if errors.Is(err, errBatchStop) && len(nodes) > 0 {
			nodes, err = s.batchTxn(acct, ops[i:i+len(nodes)], guard)
		}
		switch {
		case err == nil:
			for _, n := range nodes {
				report(i, n, nil)
				i++
			}
		case errors.Is(err, errBatchStop):
			one(i)
			i++
		default:
			// Not an op's own refusal (a transaction too big, storage
			// trouble): go op by op, each in its own transaction.
			for ; i < len(ops); i++ {
				one(i)
			}
		}
	}
}

// batchTxn runs ops in one transaction of the account. If an op fails,
// nothing is committed, the error is errBatchStop and len(nodes) is the
// index of the failing op.
func (s *Server) batchTxn(acct string, ops []api.BatchOp, guard opGuard) (nodes []*api.Node, err error) {
	mu := s.locks.get(acct)
	mu.Lock()
	var changed bool
	var room int64
	for attempt := 0; attempt < 20; attempt++ {
		nodes = nodes[:0]
		err = s.db.Update(func(tx *badger.Txn) error {
			var err error
			// write=false: the read-only check is per op (unlink is allowed).
			changed, err = s.mutateTxn(tx, acct, false, func(m *mtx) error {
				defer func() { room = m.room }()
				for _, op := range ops {
					if guard != nil && guard(m.tx, op) != nil {
						return errBatchStop
					}
					n, err := m.batchOp(op)
					if err != nil {
						return errBatchStop
					}
					nodes = append(nodes, n)
				}
				return nil
			})
			return err
		})
		if !errors.Is(err, badger.ErrConflict) {
			break
		}
	}
	mu.Unlock()
	if err == nil && changed {
		s.feed.notify(acct)
	}
	if err == nil {
		s.makeRoom(acct, room)
	}
	if err != nil && !errors.Is(err, errBatchStop) {
		nodes = nil
	}
	return nodes, err
}

// batchOp runs one op of a batch; exactly the field named by op.Op must be set.
func (s *Server) batchOp(acct string, op api.BatchOp) (*api.Node, error) {
	set := 0
	for _, p := range []bool{op.Create != nil, op.Update != nil, op.Rename != nil, op.Link != nil, op.Unlink != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return nil, badRequest("exactly one operation per batch entry")
	}
	switch {
	case op.Op == api.OpCreate && op.Create != nil:
		e, err := s.doCreate(acct, op.Create)
		if err != nil {
			return nil, err
		}
		return &e.Node, nil
	case op.Op == api.OpUpdate && op.Update != nil:
		return s.doUpdate(acct, op.ID, op.Update)
	case op.Op == api.OpRename && op.Rename != nil:
		return nil, s.doRename(acct, op.Rename)
	case op.Op == api.OpLink && op.Link != nil:
		e, err := s.doLink(acct, op.Link)
		if err != nil {
			return nil, err
		}
		return &e.Node, nil
	case op.Op == api.OpUnlink && op.Unlink != nil:
		return nil, s.doUnlink(acct, op.Unlink)
	}
	return nil, badRequest("invalid batch op %q", op.Op)
}

func (s *Server) handleGetNode(w http.ResponseWriter, r *http.Request, acct string) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	var n *api.Node
	err = s.db.View(func(tx *badger.Txn) (err error) { n, err = readNode(tx, acct, id); return err })
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, n)
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, acct string) error {
	id, err := parseNodeID(r.PathValue("id"))
	if err != nil {
		return err
	}
	var entries []api.Entry
	err = s.db.View(func(tx *badger.Txn) error {
		if _, err := readDir(tx, acct, id); err != nil {
			return err
		}
		entries, err = s.listDir(tx, acct, id, nil)
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, entries)
}

// listDir lists directory id of acct, each entry with its node (readdirplus);
// keep, if set, leaves out the entries whose node it refuses.
func (s *Server) listDir(tx *badger.Txn, acct string, id uint64, keep func(*api.Node) bool) ([]api.Entry, error) {
	entries := []api.Entry{}
	prefix := pEnt(acct, id)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		mac := string(it.Item().Key()[len(prefix):])
		var e entryRec
		if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &e) }); err != nil {
			return nil, err
		}
		n, err := readNode(tx, acct, e.ID)
		if err != nil {
			s.log.Warn("entry without node", "account", acct, "node", e.ID, "err", err)
			continue
		}
		if keep != nil && !keep(n) {
			continue
		}
		entries = append(entries, api.Entry{Parent: id, NameMAC: mac, Name: e.Name, Node: *n})
	}
	return entries, nil
}

func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request, acct string) error {
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
		if _, err := readDir(tx, acct, id); err != nil {
			return err
		}
		e, err := readEntry(tx, acct, id, mac)
		if err != nil {
			return err
		}
		if e == nil {
			return notFound("entry")
		}
		n, err := readNode(tx, acct, e.ID)
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
