package fs

import "kumo/remote/api"

// unsentTree finds journal ops the cloud never needs to see: a file or empty
// directory created here and removed again before the pusher sent its
// create. Its create, its updates and its unlink would only make the cloud
// create and delete it (a commit, a change-feed entry and history for a few
// seconds of life); after an untar, a build or a checkout that is most of the
// queue an `rm -rf` finds. Such ops are cancelled in memory, not deleted from
// the journal: the pusher skips them and acks them with the ops around them.
// A crash forgets the cancellation and the journal replays every op as
// written, which gives the same tree in the cloud.
//
// Only nodes whose ops are their own can go: a node that was renamed or
// hard-linked, or a directory that still has ops of its children queued, is
// sent as usual. Under d.mu.
type unsentTree struct {
	nodes     map[uint64]*unsentNode
	cancelled map[uint64]struct{} // journal seqs the pusher skips
	// sentFrom is the first seq not yet planned into a request: ops at or
	// before it may be on their way to the cloud, so they are never cancelled.
	sentFrom uint64
}

// unsentNode is a node whose create is queued and not yet sent.
type unsentNode struct {
	parent uint64
	create uint64   // seq of its create
	own    []uint64 // seqs of its create and updates
	refs   int      // queued ops of others that name it (children's creates and unlinks, renames, links)
	pinned bool     // renamed or linked: its entry's ops are not its alone
}

func newUnsentTree() unsentTree {
	return unsentTree{nodes: map[uint64]*unsentNode{}, cancelled: map[uint64]struct{}{}}
}

// queued notes journal op op at seq.
func (u *unsentTree) queued(seq uint64, op api.BatchOp) {
	ref := func(id uint64) {
		if n := u.nodes[id]; n != nil {
			n.refs++
		}
	}
	pin := func(id uint64) {
		if n := u.nodes[id]; n != nil {
			n.pinned = true
		}
	}
	switch op.Op {
	case api.OpCreate:
		if c := op.Create; c != nil {
			ref(c.Parent)
			u.nodes[c.ID] = &unsentNode{parent: c.Parent, create: seq, own: []uint64{seq}}
		}
	case api.OpUpdate:
		if n := u.nodes[op.ID]; n != nil {
			n.own = append(n.own, seq)
		}
	case api.OpLink:
		if l := op.Link; l != nil {
			pin(l.ID)
			ref(l.Parent)
		}
	case api.OpRename:
		if r := op.Rename; r != nil {
			pin(r.Node)
			pin(r.DstNode)
			ref(r.SrcParent)
			ref(r.DstParent)
		}
	case api.OpUnlink:
		if ul := op.Unlink; ul != nil {
			ref(ul.Parent)
		}
	}
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
	if n.pinned || n.refs > 0 || n.create < u.sentFrom {
		return false
	}
	for _, s := range n.own {
		u.cancelled[s] = struct{}{}
	}
	u.cancelled[seq] = struct{}{}
	if p := u.nodes[n.parent]; p != nil {
		p.refs -= 2 // the create and the unlink named it
	}
	return true
}

// isCancelled says whether the pusher skips the op at seq.
func (u *unsentTree) isCancelled(seq uint64) bool {
	_, ok := u.cancelled[seq]
	return ok
}

// planning notes that ops up to seq are being sent: they stay as they are.
func (u *unsentTree) planning(seq uint64) { u.sentFrom = max(u.sentFrom, seq+1) }

// acked forgets what the acked journal ops ops told it.
func (u *unsentTree) acked(ops []api.BatchOp, seqs []uint64) {
	for i, op := range ops {
		delete(u.cancelled, seqs[i])
		if op.Op == api.OpCreate && op.Create != nil {
			delete(u.nodes, op.Create.ID)
		}
	}
}
