package server

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// Validation of tree requests (before any transaction).

func validNameMAC(mac string) error {
	if !api.ValidHexID(mac) {
		return badRequest("invalid name_mac")
	}
	return nil
}

func validName(name []byte) error {
	if len(name) == 0 || len(name) > api.MaxNameSize {
		return badRequest("sealed name must be 1..%d bytes", api.MaxNameSize)
	}
	return nil
}

func validAttrs(attrs []byte) error {
	if len(attrs) == 0 || len(attrs) > api.MaxAttrsSize {
		return badRequest("sealed attributes must be 1..%d bytes", api.MaxAttrsSize)
	}
	return nil
}

func validChunks(typ string, ids []string) error {
	if typ == api.TypeDir && len(ids) > 0 {
		return badRequest("directories have no chunks")
	}
	for _, id := range ids {
		if !api.ValidHexID(id) {
			return badRequest("invalid chunk id")
		}
	}
	return nil
}

func validateCreate(r *api.CreateRequest) error {
	if r.Parent == 0 {
		return badRequest("invalid parent")
	}
	if r.ID <= api.RootID {
		return badRequest("node ids 0 and 1 are reserved")
	}
	if r.Type != api.TypeDir && r.Type != api.TypeFile {
		return badRequest("type must be %q or %q", api.TypeDir, api.TypeFile)
	}
	if err := validNameMAC(r.NameMAC); err != nil {
		return err
	}
	if err := validName(r.Name); err != nil {
		return err
	}
	if err := validAttrs(r.Attrs); err != nil {
		return err
	}
	return validChunks(r.Type, r.Chunks)
}

func validateUpdate(id uint64, r *api.UpdateRequest) error {
	if id == 0 {
		return badRequest("invalid node id")
	}
	if err := validAttrs(r.Attrs); err != nil {
		return err
	}
	return validChunks(api.TypeFile, r.Chunks)
}

func validateRename(r *api.RenameRequest) error {
	if r.SrcParent == 0 || r.DstParent == 0 {
		return badRequest("invalid parent")
	}
	if err := validNameMAC(r.SrcNameMAC); err != nil {
		return err
	}
	if err := validNameMAC(r.DstNameMAC); err != nil {
		return err
	}
	if err := validName(r.Name); err != nil {
		return err
	}
	switch r.Mode {
	case api.RenameExchange:
		return validName(r.SrcName)
	case api.RenamePlain, api.RenameNoReplace:
		if len(r.SrcName) != 0 {
			return badRequest("src_name is only for exchange")
		}
		return nil
	}
	return badRequest("invalid rename mode")
}

func validateLink(r *api.LinkRequest) error {
	if r.ID <= api.RootID {
		return badRequest("invalid node id")
	}
	if r.Parent == 0 {
		return badRequest("invalid parent")
	}
	if err := validNameMAC(r.NameMAC); err != nil {
		return err
	}
	return validName(r.Name)
}

func validateUnlink(r *api.UnlinkRequest) error {
	if r.Parent == 0 {
		return badRequest("invalid parent")
	}
	return validNameMAC(r.NameMAC)
}

// Tree access inside a mutation.

func readNode(tx *badger.Txn, acct string, id uint64) (*api.Node, error) {
	var n api.Node
	if err := getJSON(tx, kNode(acct, id), &n); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, notFound("node")
		}
		return nil, fmt.Errorf("read node %d: %w", id, err)
	}
	return &n, nil
}

func readDir(tx *badger.Txn, acct string, id uint64) (*api.Node, error) {
	n, err := readNode(tx, acct, id)
	if err != nil {
		return nil, err
	}
	if n.Type != api.TypeDir {
		return nil, conflict(api.CodeNotDir, "not a directory")
	}
	return n, nil
}

// readEntry returns nil, nil if the entry does not exist.
func readEntry(tx *badger.Txn, acct string, parent uint64, mac string) (*entryRec, error) {
	var e entryRec
	if err := getJSON(tx, kEnt(acct, parent, mac), &e); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("read entry: %w", err)
	}
	return &e, nil
}

func dirEmpty(tx *badger.Txn, acct string, id uint64) bool {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: pEnt(acct, id)})
	defer it.Close()
	it.Rewind()
	return !it.Valid()
}

// putNode saves n with a new change sequence number.
func (m *mtx) putNode(n *api.Node) error {
	seq, err := m.change(api.Change{Kind: api.ChangeNode, Node: n.ID})
	if err != nil {
		return err
	}
	n.Seq = seq
	return setJSON(m.tx, kNode(m.acct.ID, n.ID), n)
}

// deleteNode removes n and its chunk references, and credits its attributes.
func (m *mtx) deleteNode(n *api.Node) error {
	if err := m.setRefs(n.Chunks, nil); err != nil {
		return err
	}
	if err := m.charge(-attrsCharge(n.Attrs)); err != nil {
		return err
	}
	m.acct.Nodes--
	if _, err := m.change(api.Change{Kind: api.ChangeNode, Node: n.ID, Deleted: true}); err != nil {
		return err
	}
	return m.tx.Delete(kNode(m.acct.ID, n.ID))
}

// putEntry writes entry e at (parent, mac) over old (nil: none), charging
// the difference of their names.
func (m *mtx) putEntry(parent uint64, mac string, old *entryRec, e entryRec) error {
	delta := entryCharge(mac, e.Name)
	if old != nil {
		delta -= entryCharge(mac, old.Name)
	}
	if err := m.charge(delta); err != nil {
		return err
	}
	if _, err := m.change(api.Change{Kind: api.ChangeEntry, Parent: parent, NameMAC: mac, Node: e.ID}); err != nil {
		return err
	}
	return setJSON(m.tx, kEnt(m.acct.ID, parent, mac), e)
}

// deleteEntry removes entry e at (parent, mac) and credits its name.
func (m *mtx) deleteEntry(parent uint64, mac string, e *entryRec) error {
	if err := m.charge(-entryCharge(mac, e.Name)); err != nil {
		return err
	}
	if _, err := m.change(api.Change{Kind: api.ChangeEntry, Parent: parent, NameMAC: mac, Node: e.ID, Deleted: true}); err != nil {
		return err
	}
	return m.tx.Delete(kEnt(m.acct.ID, parent, mac))
}

func distinct(ids []string) map[string]bool {
	s := make(map[string]bool, len(ids))
	for _, id := range ids {
		s[id] = true
	}
	return s
}

// setRefs moves a node's chunk references from old to new. Every newly
// referenced chunk must be stored for this account; the check and the
// increment happen in this transaction, so a concurrent GC of that chunk
// either commits first (and this fails cleanly) or sees the reference.
func (m *mtx) setRefs(old, new []string) error {
	o, n := distinct(old), distinct(new)
	for id := range n {
		if o[id] {
			continue
		}
		var c chunkRec
		if err := getJSON(m.tx, kChunk(m.acct.ID, id), &c); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return badRequest("chunk %s is not stored", id)
			}
			return fmt.Errorf("read chunk: %w", err)
		}
		if c.Refs == 0 {
			if err := m.tx.Delete(kZref(m.acct.ID, id)); err != nil {
				return err
			}
		}
		c.Refs++
		if err := setJSON(m.tx, kChunk(m.acct.ID, id), &c); err != nil {
			return err
		}
	}
	for id := range o {
		if n[id] {
			continue
		}
		var c chunkRec
		if err := getJSON(m.tx, kChunk(m.acct.ID, id), &c); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				m.s.log.Warn("reference to a missing chunk", "account", m.acct.ID, "chunk", id)
				continue
			}
			return fmt.Errorf("read chunk: %w", err)
		}
		c.Refs--
		if c.Refs <= 0 {
			c.Refs = 0
			c.Unref = m.now
			if err := m.tx.Set(kZref(m.acct.ID, id), nil); err != nil {
				return err
			}
		}
		if err := setJSON(m.tx, kChunk(m.acct.ID, id), &c); err != nil {
			return err
		}
	}
	return nil
}

// isUnder reports whether node d is dir a or lies below it.
func isUnder(tx *badger.Txn, acct string, a, d uint64) (bool, error) {
	for steps := 0; steps < 1<<16; steps++ {
		if d == a {
			return true, nil
		}
		if d == api.RootID || d == 0 {
			return false, nil
		}
		n, err := readNode(tx, acct, d)
		if err != nil {
			return false, fmt.Errorf("walk up from %d: %w", d, err)
		}
		d = n.Parent
	}
	return false, fmt.Errorf("directory chain too deep or cyclic")
}

// Operations. Each runs inside one mutation and returns what the client gets.

func (m *mtx) create(r *api.CreateRequest) (*api.Entry, error) {
	a := m.acct.ID
	if _, err := readDir(m.tx, a, r.Parent); err != nil {
		return nil, err
	}
	if e, err := readEntry(m.tx, a, r.Parent, r.NameMAC); err != nil || e != nil {
		if e != nil {
			return nil, conflict(api.CodeExists, "name exists")
		}
		return nil, err
	}
	if ok, err := exists(m.tx, kNode(a, r.ID)); err != nil || ok {
		if ok {
			return nil, conflict(api.CodeConflict, "node id in use")
		}
		return nil, err
	}
	if err := m.addNode(); err != nil {
		return nil, err
	}
	if err := m.charge(attrsCharge(r.Attrs)); err != nil {
		return nil, err
	}
	if err := m.setRefs(nil, r.Chunks); err != nil {
		return nil, err
	}
	n := api.Node{ID: r.ID, Type: r.Type, Version: 1, Nlink: 1, Attrs: r.Attrs, Chunks: r.Chunks}
	if r.Type == api.TypeDir {
		n.Parent = r.Parent
	}
	if err := m.putEntry(r.Parent, r.NameMAC, nil, entryRec{ID: r.ID, Name: r.Name}); err != nil {
		return nil, err
	}
	if err := m.putNode(&n); err != nil {
		return nil, err
	}
	return &api.Entry{Parent: r.Parent, NameMAC: r.NameMAC, Name: r.Name, Node: n}, nil
}

func (m *mtx) update(id uint64, r *api.UpdateRequest) (*api.Node, error) {
	n, err := readNode(m.tx, m.acct.ID, id)
	if err != nil {
		return nil, err
	}
	if n.Version != r.Version {
		return nil, conflict(api.CodeConflict, fmt.Sprintf("node is at version %d", n.Version))
	}
	if err := validChunks(n.Type, r.Chunks); err != nil {
		return nil, err
	}
	if err := m.charge(attrsCharge(r.Attrs) - attrsCharge(n.Attrs)); err != nil {
		return nil, err
	}
	if err := m.setRefs(n.Chunks, r.Chunks); err != nil {
		return nil, err
	}
	n.Attrs, n.Chunks = r.Attrs, r.Chunks
	n.Version++
	if err := m.putNode(n); err != nil {
		return nil, err
	}
	return n, nil
}

func (m *mtx) rename(r *api.RenameRequest) error {
	a := m.acct.ID
	if _, err := readDir(m.tx, a, r.SrcParent); err != nil {
		return err
	}
	if _, err := readDir(m.tx, a, r.DstParent); err != nil {
		return err
	}
	se, err := readEntry(m.tx, a, r.SrcParent, r.SrcNameMAC)
	if err != nil {
		return err
	}
	if se == nil {
		return notFound("entry")
	}
	sn, err := readNode(m.tx, a, se.ID)
	if err != nil {
		return err
	}
	if r.Node != 0 && se.ID != r.Node {
		return conflict(api.CodeConflict, "the source entry names another node now")
	}
	if r.SrcParent == r.DstParent && r.SrcNameMAC == r.DstNameMAC {
		if r.Mode == api.RenameNoReplace {
			return conflict(api.CodeExists, "target exists")
		}
		if r.Mode == "" && r.Node != 0 && len(r.Name) > 0 && !bytes.Equal(r.Name, se.Name) {
			// The client re-seals the name in place (format migration).
			return m.putEntry(r.DstParent, r.DstNameMAC, se, entryRec{ID: se.ID, Name: r.Name})
		}
		return nil // rename(2) of a name onto itself does nothing
	}
	if sn.Type == api.TypeDir {
		if under, err := isUnder(m.tx, a, sn.ID, r.DstParent); err != nil || under {
			if under {
				return apiErr(http.StatusBadRequest, api.CodeInvalidMove, "cannot move a directory under itself")
			}
			return err
		}
	}
	de, err := readEntry(m.tx, a, r.DstParent, r.DstNameMAC)
	if err != nil {
		return err
	}
	switch r.Mode {
	case api.RenameExchange:
		if de == nil {
			return notFound("target entry")
		}
		if r.DstNode != 0 && de.ID != r.DstNode {
			return conflict(api.CodeConflict, "the target entry names another node now")
		}
		dn, err := readNode(m.tx, a, de.ID)
		if err != nil {
			return err
		}
		if dn.Type == api.TypeDir {
			if under, err := isUnder(m.tx, a, dn.ID, r.SrcParent); err != nil || under {
				if under {
					return apiErr(http.StatusBadRequest, api.CodeInvalidMove, "cannot move a directory under itself")
				}
				return err
			}
		}
		if err := m.putEntry(r.SrcParent, r.SrcNameMAC, se, entryRec{ID: dn.ID, Name: r.SrcName}); err != nil {
			return err
		}
		if err := m.putEntry(r.DstParent, r.DstNameMAC, de, entryRec{ID: sn.ID, Name: r.Name}); err != nil {
			return err
		}
		if r.SrcParent != r.DstParent {
			if sn.Type == api.TypeDir {
				sn.Parent = r.DstParent
				if err := m.putNode(sn); err != nil {
					return err
				}
			}
			if dn.Type == api.TypeDir {
				dn.Parent = r.SrcParent
				if err := m.putNode(dn); err != nil {
					return err
				}
			}
		}
		return nil
	case api.RenameNoReplace:
		if de != nil {
			return conflict(api.CodeExists, "target exists")
		}
	default:
		if de != nil {
			dn, err := readNode(m.tx, a, de.ID)
			if err != nil {
				return err
			}
			if dn.ID == sn.ID {
				return nil // both names link the same file: rename(2) does nothing
			}
			switch {
			case sn.Type == api.TypeDir && dn.Type != api.TypeDir:
				return conflict(api.CodeNotDir, "target is not a directory")
			case sn.Type != api.TypeDir && dn.Type == api.TypeDir:
				return conflict(api.CodeIsDir, "target is a directory")
			case dn.Type == api.TypeDir:
				if !dirEmpty(m.tx, a, dn.ID) {
					return conflict(api.CodeNotEmpty, "target directory not empty")
				}
				if err := m.deleteNode(dn); err != nil {
					return err
				}
			default:
				if err := m.dropLink(dn); err != nil {
					return err
				}
			}
		}
	}
	if err := m.deleteEntry(r.SrcParent, r.SrcNameMAC, se); err != nil {
		return err
	}
	if err := m.putEntry(r.DstParent, r.DstNameMAC, de, entryRec{ID: sn.ID, Name: r.Name}); err != nil {
		return err
	}
	if sn.Type == api.TypeDir && sn.Parent != r.DstParent {
		sn.Parent = r.DstParent
		return m.putNode(sn)
	}
	return nil
}

// dropLink removes one link of a file node, deleting it with the last.
func (m *mtx) dropLink(n *api.Node) error {
	if n.Nlink <= 1 {
		return m.deleteNode(n)
	}
	n.Nlink--
	return m.putNode(n)
}

func (m *mtx) link(r *api.LinkRequest) (*api.Entry, error) {
	a := m.acct.ID
	n, err := readNode(m.tx, a, r.ID)
	if err != nil {
		return nil, err
	}
	if n.Type == api.TypeDir {
		return nil, conflict(api.CodeIsDir, "cannot hard-link a directory")
	}
	if _, err := readDir(m.tx, a, r.Parent); err != nil {
		return nil, err
	}
	if e, err := readEntry(m.tx, a, r.Parent, r.NameMAC); err != nil || e != nil {
		if e != nil {
			return nil, conflict(api.CodeExists, "name exists")
		}
		return nil, err
	}
	if n.Nlink >= 1<<31 {
		return nil, badRequest("too many links")
	}
	n.Nlink++
	if err := m.putEntry(r.Parent, r.NameMAC, nil, entryRec{ID: n.ID, Name: r.Name}); err != nil {
		return nil, err
	}
	if err := m.putNode(n); err != nil {
		return nil, err
	}
	return &api.Entry{Parent: r.Parent, NameMAC: r.NameMAC, Name: r.Name, Node: *n}, nil
}

func (m *mtx) unlink(r *api.UnlinkRequest) error {
	a := m.acct.ID
	if _, err := readDir(m.tx, a, r.Parent); err != nil {
		return err
	}
	e, err := readEntry(m.tx, a, r.Parent, r.NameMAC)
	if err != nil {
		return err
	}
	if e == nil {
		return notFound("entry")
	}
	n, err := readNode(m.tx, a, e.ID)
	if err != nil {
		if ae, ok := err.(*api.Error); ok && ae.Code == api.CodeNotFound {
			m.s.log.Warn("dangling entry removed", "account", a, "node", e.ID)
			return m.deleteEntry(r.Parent, r.NameMAC, e)
		}
		return err
	}
	if r.Dir {
		if n.Type != api.TypeDir {
			return conflict(api.CodeNotDir, "not a directory")
		}
		if !dirEmpty(m.tx, a, n.ID) {
			return conflict(api.CodeNotEmpty, "directory not empty")
		}
	} else if n.Type == api.TypeDir {
		return conflict(api.CodeIsDir, "is a directory")
	}
	if err := m.deleteEntry(r.Parent, r.NameMAC, e); err != nil {
		return err
	}
	if n.Type == api.TypeDir {
		return m.deleteNode(n)
	}
	return m.dropLink(n)
}

// HTTP handlers of the tree.

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

func validateBatch(req *api.BatchRequest) error {
	if len(req.Ops) > api.MaxBatchOps {
		return badRequest("at most %d operations per batch", api.MaxBatchOps)
	}
	return nil
}

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.BatchRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := validateBatch(&req); err != nil {
		return err
	}
	resp := api.BatchResponse{Results: make([]api.BatchResult, len(req.Ops))}
	s.runBatch(acct, req.Ops, func(i int, node *api.Node, err error) {
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
func (s *Server) runBatch(acct string, ops []api.BatchOp, report func(int, *api.Node, error)) {
	one := func(i int) {
		node, err := s.batchOp(acct, ops[i])
		report(i, node, err)
	}
	for i := 0; i < len(ops); {
		nodes, err := s.batchTxn(acct, ops[i:])
		if errors.Is(err, errBatchStop) && len(nodes) > 0 {
			nodes, err = s.batchTxn(acct, ops[i:i+len(nodes)])
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
func (s *Server) batchTxn(acct string, ops []api.BatchOp) (nodes []*api.Node, err error) {
	mu := s.locks.get(acct)
	mu.Lock()
	defer mu.Unlock()
	var changed bool
	for attempt := 0; attempt < 20; attempt++ {
		nodes = nodes[:0]
		err = s.db.Update(func(tx *badger.Txn) error {
			var err error
			// write=false: the read-only check is per op (unlink is allowed).
			changed, err = s.mutateTxn(tx, acct, false, func(m *mtx) error {
				for _, op := range ops {
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
	if err == nil && changed {
		s.feed.notify(acct)
	}
	if err != nil && !errors.Is(err, errBatchStop) {
		nodes = nil
	}
	return nodes, err
}

// batchOp is Server.batchOp inside a transaction: the same validation, the
// same read-only rule (everything but unlink is refused on a read-only
// account), the same mutation.
func (m *mtx) batchOp(op api.BatchOp) (*api.Node, error) {
	set := 0
	for _, p := range []bool{op.Create != nil, op.Update != nil, op.Rename != nil, op.Link != nil, op.Unlink != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return nil, badRequest("exactly one operation per batch entry")
	}
	if op.Op != api.OpUnlink && m.acct.readOnly(m.now) {
		return nil, apiErr(http.StatusForbidden, api.CodeReadOnly, "account is read-only: usage exceeds quota")
	}
	switch {
	case op.Op == api.OpCreate && op.Create != nil:
		if err := validateCreate(op.Create); err != nil {
			return nil, err
		}
		e, err := m.create(op.Create)
		if err != nil {
			return nil, err
		}
		return &e.Node, nil
	case op.Op == api.OpUpdate && op.Update != nil:
		if err := validateUpdate(op.ID, op.Update); err != nil {
			return nil, err
		}
		return m.update(op.ID, op.Update)
	case op.Op == api.OpRename && op.Rename != nil:
		if err := validateRename(op.Rename); err != nil {
			return nil, err
		}
		return nil, m.rename(op.Rename)
	case op.Op == api.OpLink && op.Link != nil:
		if err := validateLink(op.Link); err != nil {
			return nil, err
		}
		e, err := m.link(op.Link)
		if err != nil {
			return nil, err
		}
		return &e.Node, nil
	case op.Op == api.OpUnlink && op.Unlink != nil:
		if err := validateUnlink(op.Unlink); err != nil {
			return nil, err
		}
		return nil, m.unlink(op.Unlink)
	}
	return nil, badRequest("invalid batch op %q", op.Op)
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

// Reads.

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
	entries := []api.Entry{}
	err = s.db.View(func(tx *badger.Txn) error {
		if _, err := readDir(tx, acct, id); err != nil {
			return err
		}
		prefix := pEnt(acct, id)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			mac := string(it.Item().Key()[len(prefix):])
			var e entryRec
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &e) }); err != nil {
				return err
			}
			n, err := readNode(tx, acct, e.ID)
			if err != nil {
				s.log.Warn("entry without node", "account", acct, "node", e.ID, "err", err)
				continue
			}
			entries = append(entries, api.Entry{Parent: id, NameMAC: mac, Name: e.Name, Node: *n})
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, entries)
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
