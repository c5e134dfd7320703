package server

// Tree transactions: the mtx methods that read and change an account's tree
// (nodes, entries, chunk references) inside one badger transaction, and the
// reads they share with the HTTP reads. Each operation (create, update, rename,
// link, unlink) runs inside one mutation and returns what the client gets.

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

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

// changeNode applies change to n, an existing node as read in this
// transaction, and saves it with a new change sequence number; the version
// it had goes to history (a copy taken here, so no second read).
func (m *mtx) changeNode(n *api.Node, change func(n *api.Node)) error {
	old := *n
	change(n)
	if err := m.archiveNode(&old, nil, old.Parent != n.Parent); err != nil {
		return err
	}
	return m.putNewNode(n)
}

// putNewNode saves n with a new change sequence number, current from now.
func (m *mtx) putNewNode(n *api.Node) error {
	seq, err := m.change(api.Change{Kind: api.ChangeNode, Node: n.ID})
	if err != nil {
		return err
	}
	n.Seq, n.Since = seq, m.when()
	return setJSON(m.tx, kNode(m.acct.ID, n.ID), n)
}

// deleteNode removes n and its chunk references, and credits its
// attributes; with history, n is kept as its last version and put in the
// trash under its last name (parent, mac, name).
func (m *mtx) deleteNode(n *api.Node, parent uint64, mac string, name []byte) error {
	if err := m.archiveNode(n, &trashRec{Parent: parent, NameMAC: mac, Name: name}, false); err != nil {
		return err
	}
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
		if err := m.archiveEntry(parent, mac, old); err != nil {
			return err
		}
	}
	e.Since = m.when()
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
	if err := m.archiveEntry(parent, mac, e); err != nil {
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
			if err := m.chunkReferenced(id, &c); err != nil {
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
			if err := m.chunkReferenced(id, &c); err != nil { // re-index by the new Unref
				return err
			}
			c.Unref = m.now
			if err := m.tx.Set(kZref(m.acct.ID, id), nil); err != nil {
				return err
			}
			if err := m.chunkUnreferenced(id, &c); err != nil {
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

func (m *mtx) create(r *api.CreateRequest) (*api.Entry, error) {
	a := m.acct.ID
	if err := m.currentGen(r.Attrs, r.Name); err != nil {
		return nil, err
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
	if err := m.putNewNode(&n); err != nil {
		return nil, err
	}
	return &api.Entry{Parent: r.Parent, NameMAC: r.NameMAC, Name: r.Name, Node: n}, nil
}

func (m *mtx) update(id uint64, r *api.UpdateRequest) (*api.Node, error) {
	if err := m.currentGen(r.Attrs); err != nil {
		return nil, err
	}
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
	err = m.changeNode(n, func(n *api.Node) {
		n.Attrs, n.Chunks = r.Attrs, r.Chunks
		n.Version++
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (m *mtx) rename(r *api.RenameRequest) error {
	a := m.acct.ID
	if err := m.currentGen(r.Name, r.SrcName); err != nil {
		return err
	}
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
				if err := m.changeNode(sn, func(n *api.Node) { n.Parent = r.DstParent }); err != nil {
					return err
				}
			}
			if dn.Type == api.TypeDir {
				if err := m.changeNode(dn, func(n *api.Node) { n.Parent = r.SrcParent }); err != nil {
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
				if err := m.deleteNode(dn, r.DstParent, r.DstNameMAC, de.Name); err != nil {
					return err
				}
			default:
				if err := m.dropLink(dn, r.DstParent, r.DstNameMAC, de.Name); err != nil {
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
		return m.changeNode(sn, func(n *api.Node) { n.Parent = r.DstParent })
	}
	return nil
}

// dropLink removes one link of a file node, deleting it with the last.
func (m *mtx) dropLink(n *api.Node, parent uint64, mac string, name []byte) error {
	if n.Nlink <= 1 {
		return m.deleteNode(n, parent, mac, name)
	}
	return m.changeNode(n, func(n *api.Node) { n.Nlink-- })
}

func (m *mtx) link(r *api.LinkRequest) (*api.Entry, error) {
	a := m.acct.ID
	if err := m.currentGen(r.Name); err != nil {
		return nil, err
	}
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
	if err := m.putEntry(r.Parent, r.NameMAC, nil, entryRec{ID: n.ID, Name: r.Name}); err != nil {
		return nil, err
	}
	if err := m.changeNode(n, func(n *api.Node) { n.Nlink++ }); err != nil {
		return nil, err
	}
	return &api.Entry{Parent: r.Parent, NameMAC: r.NameMAC, Name: r.Name, Node: *n}, nil
}

func (m *mtx) unlink(r *api.UnlinkRequest) error {
	a := m.acct.ID
	e, err := readEntry(m.tx, a, r.Parent, r.NameMAC)
	if err != nil {
		return err
	}
	if e == nil {
		// Which refusal: a missing or non-directory parent, or the entry.
		// The parent is read only here: an entry exists only under a live
		// directory (one is removed only when empty), and decoding the
		// parent for every unlink was a fifth of an rm -rf's pushes.
		if _, err := readDir(m.tx, a, r.Parent); err != nil {
			return err
		}
		return notFound("entry")
	}
	if r.Node != 0 && e.ID != r.Node {
		// Another node took the name since the client saw it: removing it
		// would drop a file the client never meant to delete.
		return conflict(api.CodeConflict, fmt.Sprintf("the entry names node %d now, not node %d which the unlink is for: list the directory again", e.ID, r.Node))
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
		return m.deleteNode(n, r.Parent, r.NameMAC, e.Name)
	}
	return m.dropLink(n, r.Parent, r.NameMAC, e.Name)
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
