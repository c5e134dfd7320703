package fs

import (
	"kumo/cache"
	"kumo/remote/api"
)

// unsentTree finds journal ops the cloud never needs to see, among those of
// nodes created here whose create the pusher has not sent yet:
//
//   - a file or empty directory removed again: its create, its updates and
//     its unlink would only make the cloud create and delete it (a commit, a
//     change-feed entry and history for a few seconds of life); after an
//     untar, a build or a checkout that is much of the queue an `rm -rf`
//     finds. They are cancelled.
//   - a file written under a temporary name and then renamed, or linked
//     under its final name and unlinked from the temporary one (rsync and
//     editors rename; git links each object): the create is sent under the
//     final name and the rename, or the link and the unlink, are cancelled.
//
// Cancelled ops stay in the journal: the pusher skips them and acks them
// with the ops around them, and sends a folded create under its new name. A
// crash forgets all this and the journal replays every op as written, which
// gives the same tree in the cloud.
//
// Only a node whose ops are its own qualifies: one renamed over another
// entry, exchanged, linked twice, or a directory with ops of other nodes
// naming it queued, is sent as usual. Only a file's create moves, and only
// to a free name in a directory whose own create comes before it in the
// journal. Under d.mu.
type unsentTree struct {
	nodes     map[uint64]*unsentNode
	cancelled map[uint64]struct{}   // journal seqs the pusher skips
	moved     map[uint64]entryPlace // create seq -> the entry it is sent as
	// touched is the seq of the last queued op that named an entry: a
	// create moves to an entry only if nothing named it after the create,
	// so the cloud has the name free where the create is sent.
	touched map[entryName]uint64
	// sentFrom is the first seq not yet planned into a request: ops before
	// it may be on their way to the cloud, so they are never changed.
	sentFrom uint64
}

// entryName names an entry: its directory and name MAC.
type entryName struct {
	parent uint64
	mac    string
}

// entryPlace is where a create puts its entry.
type entryPlace struct {
	parent uint64
	mac    string
	name   []byte
}

// unsentNode is a node whose create is queued and not yet sent.
type unsentNode struct {
	at     entryPlace // its create's entry, as it will be sent
	create uint64     // seq of its create
	own    []uint64   // seqs of its create and updates
	refs   int        // queued ops of others that name it (children's creates and unlinks, renames, links)
	pinned bool       // its entries' ops are not its alone: sent as they are
	dir    bool       // a directory: its create never moves (see mayMove)
	link   *unsentLink
}

// unsentLink is the one queued link of an unsent node.
type unsentLink struct {
	seq    uint64
	at     entryPlace
	before uint64 // the last op that named the link's entry before it
}

func newUnsentTree() unsentTree {
	return unsentTree{nodes: map[uint64]*unsentNode{}, cancelled: map[uint64]struct{}{}, moved: map[uint64]entryPlace{}, touched: map[entryName]uint64{}}
}

func (u *unsentTree) ref(id uint64, by int) {
	if n := u.nodes[id]; n != nil {
		n.refs += by
	}
}

func (u *unsentTree) pin(id uint64) {
	if n := u.nodes[id]; n != nil {
		n.pinned = true
	}
}

// touch notes that the op at seq names entry (parent, mac) and returns
// the seq of the last op that named it before.
func (u *unsentTree) touch(seq, parent uint64, mac string) uint64 {
	k := entryName{parent, mac}
	before := u.touched[k]
	u.touched[k] = seq
	return before
}

// queued notes journal op op at seq. Renames are noted by renamed, which
// knows whether the rename replaced an entry.
func (u *unsentTree) queued(seq uint64, op api.BatchOp) {
	switch op.Op {
	case api.OpCreate:
		if c := op.Create; c != nil {
			u.ref(c.Parent, 1)
			u.touch(seq, c.Parent, c.NameMAC)
			u.nodes[c.ID] = &unsentNode{at: entryPlace{c.Parent, c.NameMAC, c.Name}, create: seq, own: []uint64{seq}, dir: c.Type == api.TypeDir}
		}
	case api.OpUpdate:
		if n := u.nodes[op.ID]; n != nil {
			n.own = append(n.own, seq)
		}
	case api.OpLink:
		if l := op.Link; l != nil {
			u.ref(l.Parent, 1)
			before := u.touch(seq, l.Parent, l.NameMAC)
			if n := u.nodes[l.ID]; n != nil && n.link == nil && !n.pinned {
				n.link = &unsentLink{seq: seq, at: entryPlace{l.Parent, l.NameMAC, l.Name}, before: before}
			} else {
				u.pin(l.ID)
			}
		}
	case api.OpUnlink:
		if ul := op.Unlink; ul != nil {
			u.ref(ul.Parent, 1)
			u.touch(seq, ul.Parent, ul.NameMAC)
		}
	}
}

// mayMove says whether node n's create may be sent as entry (dir, mac),
// last named by an op at seq before: n is not a directory (ops queued after
// its create may have moved other directories into it, which the cloud
// would refuse as a cycle if it were created elsewhere), nothing of n was
// sent yet, the entry was not named by any op since n's create (so the
// cloud has it free there), and dir, if unsent too, was created before n.
func (u *unsentTree) mayMove(n *unsentNode, dir uint64, before uint64) bool {
	if n.dir || n.pinned || n.create < u.sentFrom || before > n.create {
		return false
	}
	p := u.nodes[dir]
	return p == nil || p.create < n.create
}

// moveCreate makes node n's create put its entry at to.
func (u *unsentTree) moveCreate(n *unsentNode, to entryPlace) {
	u.ref(n.at.parent, -1)
	u.ref(to.parent, 1)
	n.at = to
	u.moved[n.create] = to
}

// renamed notes the rename r queued at seq; replaced says it replaced
// another entry. A rename of an unsent node to a free name is folded into
// its create.
func (u *unsentTree) renamed(seq uint64, r *api.RenameRequest, replaced bool) {
	n := u.nodes[r.Node]
	u.touch(seq, r.SrcParent, r.SrcNameMAC)
	before := u.touch(seq, r.DstParent, r.DstNameMAC)
	if n != nil && !replaced && r.Mode != api.RenameExchange && n.link == nil &&
		n.at.parent == r.SrcParent && n.at.mac == r.SrcNameMAC && u.mayMove(n, r.DstParent, before) {
		u.moveCreate(n, entryPlace{r.DstParent, r.DstNameMAC, r.Name})
		u.cancelled[seq] = struct{}{}
		return
	}
	u.ref(r.SrcParent, 1)
	u.ref(r.DstParent, 1)
	u.pin(r.Node)
	u.pin(r.DstNode)
}

// unlinked notes the unlink at seq of node id's entry (parent, mac), the
// node keeping another link. An unlink of the entry an unsent node was
// created as, after a link of it, is folded: the create is sent as the
// link's entry. An unlink of the link's entry cancels the link.
func (u *unsentTree) unlinked(id, seq, parent uint64, mac string) {
	n := u.nodes[id]
	if n == nil {
		return
	}
	l := n.link
	switch {
	case l == nil || n.pinned || n.create < u.sentFrom:
	case n.at.parent == parent && n.at.mac == mac && u.mayMove(n, l.at.parent, l.before):
		u.ref(l.at.parent, -1) // the link's name moves to the create
		u.moveCreate(n, l.at)
		u.ref(parent, -1) // the unlink
		u.cancelled[l.seq] = struct{}{}
		u.cancelled[seq] = struct{}{}
		n.link = nil
		return
	case l.at.parent == parent && l.at.mac == mac:
		u.ref(parent, -2) // the link and the unlink
		u.cancelled[l.seq] = struct{}{}
		u.cancelled[seq] = struct{}{}
		n.link = nil
		return
	}
	n.pinned = true
}

// removed is called once the unlink at seq removed node id's last link. It
// cancels the node's ops and that unlink when none of them needs to reach
// the cloud, and says whether it did.
func (u *unsentTree) removed(id, seq uint64) bool {
	n := u.nodes[id]
	if n == nil {
		return false
	}
	delete(u.nodes, id) // gone here: it cannot be created or removed again
	if n.pinned || n.link != nil || n.refs > 0 || n.create < u.sentFrom {
		return false
	}
	for _, s := range n.own {
		u.cancelled[s] = struct{}{}
	}
	u.cancelled[seq] = struct{}{}
	delete(u.moved, n.create)
	u.ref(n.at.parent, -2) // the create and the unlink named it
	return true
}

// asSent is journal op jo as the pusher sends it: opCancelled, a create
// moved to its entry's final place, or jo's op itself (changed false).
func (u *unsentTree) asSent(jo cache.JournalOp) (op api.BatchOp, changed bool) {
	if _, ok := u.cancelled[jo.Seq]; ok {
		return api.BatchOp{Op: opCancelled}, true
	}
	at, ok := u.moved[jo.Seq]
	if !ok || jo.Op.Create == nil {
		return jo.Op, false
	}
	op = jo.Op
	c := *op.Create
	c.Parent, c.NameMAC, c.Name = at.parent, at.mac, at.name
	op.Create = &c
	return op, true
}

// planning notes that ops up to seq are being sent: they stay as they are.
func (u *unsentTree) planning(seq uint64) { u.sentFrom = max(u.sentFrom, seq+1) }

// acked forgets what the acked journal ops told it.
func (u *unsentTree) acked(ops []cache.JournalOp) {
	for _, jo := range ops {
		delete(u.cancelled, jo.Seq)
		delete(u.moved, jo.Seq)
		for _, k := range opEntries(jo.Op) {
			if u.touched[k] <= jo.Seq {
				delete(u.touched, k)
			}
		}
		if c := jo.Op.Create; c != nil {
			delete(u.nodes, c.ID)
		}
	}
}

// opEntries are the entries op names.
func opEntries(op api.BatchOp) []entryName {
	switch {
	case op.Create != nil:
		return []entryName{{op.Create.Parent, op.Create.NameMAC}}
	case op.Link != nil:
		return []entryName{{op.Link.Parent, op.Link.NameMAC}}
	case op.Unlink != nil:
		return []entryName{{op.Unlink.Parent, op.Unlink.NameMAC}}
	case op.Rename != nil:
		return []entryName{{op.Rename.SrcParent, op.Rename.SrcNameMAC}, {op.Rename.DstParent, op.Rename.DstNameMAC}}
	}
	return nil
}
