package fs

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"kumo/internal/meta"
	"kumo/remote/api"
)

// The rules of unsentTree on its own: which ops a sequence of queued ops,
// renames, unlinks and removals cancels, and where creates are sent.
func TestUnsentTreeRules(t *testing.T) {
	at := func(parent uint64, name string) entryPlace {
		return entryPlace{parent, name, []byte(name)}
	}
	// Each step queues one journal op (seqs 1, 2, ...) and tells the tree
	// what the drive would.
	type step func(u *unsentTree, seq uint64)
	create := func(id uint64, e entryPlace) step {
		return func(u *unsentTree, seq uint64) {
			u.queued(seq, api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{ID: id, Parent: e.parent, NameMAC: e.mac, Name: e.name}})
		}
	}
	mkdir := func(id uint64, e entryPlace) step {
		return func(u *unsentTree, seq uint64) {
			u.queued(seq, api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{ID: id, Type: api.TypeDir, Parent: e.parent, NameMAC: e.mac, Name: e.name}})
		}
	}
	update := func(id uint64) step {
		return func(u *unsentTree, seq uint64) { u.queued(seq, api.BatchOp{Op: api.OpUpdate, ID: id}) }
	}
	link := func(id uint64, e entryPlace) step {
		return func(u *unsentTree, seq uint64) {
			u.queued(seq, api.BatchOp{Op: api.OpLink, Link: &api.LinkRequest{ID: id, Parent: e.parent, NameMAC: e.mac, Name: e.name}})
		}
	}
	rename := func(id uint64, from, to entryPlace, replaced bool) step {
		return func(u *unsentTree, seq uint64) {
			r := &api.RenameRequest{Node: id, SrcParent: from.parent, SrcNameMAC: from.mac, DstParent: to.parent, DstNameMAC: to.mac, Name: to.name}
			u.queued(seq, api.BatchOp{Op: api.OpRename, Rename: r})
			u.renamed(seq, r, replaced)
		}
	}
	unlink := func(id uint64, e entryPlace, last bool) step { // last: the node's last link
		return func(u *unsentTree, seq uint64) {
			u.queued(seq, api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: e.parent, NameMAC: e.mac}})
			if last {
				u.removed(id, seq)
			} else {
				u.unlinked(id, seq, e.parent, e.mac)
			}
		}
	}
	sent := func(u *unsentTree, seq uint64) { // an update of another node; it and what came before are on their way
		u.queued(seq, api.BatchOp{Op: api.OpUpdate, ID: 999})
		u.planning(seq)
	}
	root, tmp, fin := uint64(1), at(1, "tmp"), at(1, "final")
	cases := []struct {
		name      string
		steps     []step
		cancelled []uint64
		moved     map[uint64]entryPlace // create seq -> entry sent
	}{
		{"file created, written and removed",
			[]step{create(10, tmp), update(10), update(10), unlink(10, tmp, true)}, []uint64{1, 2, 3, 4}, nil},
		{"create already on its way",
			[]step{create(10, tmp), sent, update(10), unlink(10, tmp, true)}, nil, nil},
		{"renamed to a free name: sent under it",
			[]step{create(10, tmp), update(10), rename(10, tmp, fin, false)}, []uint64{3}, map[uint64]entryPlace{1: fin}},
		{"renamed to a name freed after its create: sent as it is",
			[]step{create(10, tmp), unlink(11, fin, true), rename(10, tmp, fin, false)}, nil, nil},
		{"linked to a name freed after its create: sent as it is",
			[]step{create(10, tmp), unlink(11, fin, true), link(10, fin), unlink(10, tmp, false)}, nil, nil},
		{"a directory renamed: sent as it is (other directories may have moved into it meanwhile)",
			[]step{mkdir(20, at(root, "d")), rename(20, at(root, "d"), at(root, "e"), false)}, nil, nil},
		{"renamed and removed: nothing sent",
			[]step{create(10, tmp), rename(10, tmp, fin, false), unlink(10, fin, true)}, []uint64{1, 2, 3}, nil},
		{"renamed over another entry: sent as it is",
			[]step{create(10, tmp), rename(10, tmp, fin, true), unlink(10, fin, true)}, nil, nil},
		{"linked, then the first name unlinked: sent under the link's name",
			[]step{create(10, tmp), update(10), link(10, fin), unlink(10, tmp, false)}, []uint64{3, 4}, map[uint64]entryPlace{1: fin}},
		{"linked, then the link unlinked",
			[]step{create(10, tmp), link(10, fin), unlink(10, fin, false)}, []uint64{2, 3}, nil},
		{"linked twice: sent as it is",
			[]step{create(10, tmp), link(10, fin), link(10, at(1, "other")), unlink(10, tmp, false), unlink(10, fin, false), unlink(10, at(1, "other"), true)}, nil, nil},
		{"moved into a directory created after it: sent as it is",
			[]step{create(10, tmp), create(20, at(root, "dir")), rename(10, tmp, at(20, "f"), false)}, nil, nil},
		{"moved into a directory created before it",
			[]step{create(20, at(root, "dir")), create(10, tmp), rename(10, tmp, at(20, "f"), false)}, []uint64{3}, map[uint64]entryPlace{2: at(20, "f")}},
		{"directory emptied of unsent files",
			[]step{create(20, at(root, "d")), create(21, at(20, "a")), create(22, at(20, "b")), unlink(21, at(20, "a"), true), unlink(22, at(20, "b"), true), unlink(20, at(root, "d"), true)},
			[]uint64{1, 2, 3, 4, 5, 6}, nil},
		{"directory whose file moved out to a later directory: kept",
			[]step{create(20, at(root, "d")), create(21, at(20, "a")), create(30, at(root, "e")), rename(21, at(20, "a"), at(30, "a"), false), unlink(20, at(root, "d"), true)}, nil, nil},
		{"directory whose file moved out to an earlier one: removed",
			[]step{create(30, at(root, "e")), create(20, at(root, "d")), create(21, at(20, "a")), rename(21, at(20, "a"), at(30, "a"), false), unlink(20, at(root, "d"), true)},
			[]uint64{2, 4, 5}, map[uint64]entryPlace{3: at(30, "a")}},
		{"directory with a sent child's unlink",
			[]step{create(20, at(root, "d")), create(21, at(20, "a")), sent, unlink(21, at(20, "a"), true), unlink(20, at(root, "d"), true)}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnsentTree()
			seq := uint64(0)
			for _, s := range tc.steps {
				seq++
				s(&u, seq)
			}
			for q := uint64(1); q <= seq; q++ {
				want := slices.Contains(tc.cancelled, q)
				if _, got := u.cancelled[q]; got != want {
					t.Errorf("seq %d cancelled = %v, want %v", q, !want, want)
				}
				got, ok := u.moved[q]
				if want, wok := tc.moved[q]; ok != wok || ok && (got.parent != want.parent || got.mac != want.mac) {
					t.Errorf("seq %d sent as %+v (%v), want %+v (%v)", q, got, ok, want, wok)
				}
			}
		})
	}
}

// Files and a directory created and removed again before the pusher sent
// them never reach the cloud (no create, no delete in its change feed); a
// renamed file removed the same way, and a file kept, do; the drive's queue
// empties and a second device sees exactly the kept tree.
func TestCoreUnsentRemovedNeverSent(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	coreFile(t, d, api.RootID, "victim", "replaced")
	coreFlush(t, d)
	keep, release := holdPusher(t, d)
	tmp := coreMkdir(t, d, api.RootID, "tmp")
	var gone []uint64
	for i := range 30 {
		gone = append(gone, coreFile(t, d, tmp.id, fmt.Sprintf("f%02d", i), fmt.Sprintf("data %d", i)).id)
	}
	gone = append(gone, tmp.id)
	moved := coreFile(t, d, api.RootID, "draft", "draft")
	if e := d.rename(api.RootID, "draft", api.RootID, "victim", 0); e != 0 { // over an entry: sent as it is
		t.Fatal(e)
	}
	for i := range 30 {
		if e := d.unlink(tmp.id, fmt.Sprintf("f%02d", i), false); e != 0 {
			t.Fatal(e)
		}
	}
	if e := d.unlink(api.RootID, "tmp", true); e != 0 {
		t.Fatal(e)
	}
	if e := d.unlink(api.RootID, "victim", false); e != 0 {
		t.Fatal(e)
	}
	release()
	coreFlush(t, d)
	if q := d.Status().Queue; q.Ops != 0 {
		t.Fatalf("queue after the flush: %+v", q)
	}

	seen := map[uint64]bool{}
	for _, ch := range cloudFeed(t, c) {
		seen[ch.Node] = true
	}
	for _, id := range gone {
		if seen[id] {
			t.Errorf("node %d, created and removed before it was sent, reached the cloud", id)
		}
	}
	if !seen[moved.id] || !seen[keep.id] {
		t.Errorf("the renamed file (%v) or the kept one (%v) is missing from the cloud's feed", seen[moved.id], seen[keep.id])
	}
	other := coreDrive(t, c)
	if got := coreRead(t, other, api.RootID, "keep"); got != "kept" {
		t.Fatalf("second device reads keep = %q", got)
	}
	for _, name := range []string{"tmp", "victim", "draft"} {
		if _, e := other.lookupForTest(api.RootID, name); e != syscall.ENOENT {
			t.Errorf("second device finds %s: %v", name, e)
		}
	}
}

// holdPusher keeps changing a file of d's (returned) so the pusher holds
// its queue (pushHold) until release is called. The quiet time is
// lengthened meanwhile: on a loaded machine a store checkpoint or a
// collection could stall both the test and this loop past pushQuiet.
func holdPusher(t *testing.T, d *Drive) (keep *nodeState, release func()) {
	t.Helper()
	keep = coreFile(t, d, api.RootID, "keep", "kept")
	d.quietExtra.Store(int64(5 * time.Second))
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			d.setAttrs(keep, func(a *meta.Attrs) syscall.Errno {
				a.Mode = a.Mode&^0o777 | uint32(0o600|i%2*0o44)
				return 0
			})
		}
	}()
	return keep, func() { close(stop); <-stopped; d.quietExtra.Store(0) }
}

// cloudFeed is the whole change feed of c's account.
func cloudFeed(t *testing.T, c *cloud) []api.Change {
	t.Helper()
	var all []api.Change
	for after := uint64(0); ; {
		r, err := c.client(t).Changes(context.Background(), after, 0)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, r.Changes...)
		if len(r.Changes) == 0 || r.Seq == after {
			return all
		}
		after = r.Seq
	}
}

// Files written under a temporary name and renamed (as rsync and editors
// do), or linked under their final name and unlinked from the temporary
// one (as git does for each object), before the pusher sent them, reach
// the cloud under their final names only: no temporary name is ever in
// its change feed, and a second device reads every file.
func TestCoreUnsentTemporaryNames(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	objects := coreMkdir(t, d, api.RootID, "objects")
	coreFlush(t, d)
	_, release := holdPusher(t, d)
	var tmpNames [][2]any // parent, name
	for i := range 10 {
		tmp := fmt.Sprintf(".f%d.XXXXXX", i)
		coreFile(t, d, api.RootID, tmp, fmt.Sprintf("rsynced %d", i))
		if e := d.rename(api.RootID, tmp, api.RootID, fmt.Sprintf("f%d", i), 0); e != 0 {
			t.Fatal(e)
		}
		tmpNames = append(tmpNames, [2]any{api.RootID, tmp})

		obj := fmt.Sprintf("tmp_obj_%d", i)
		st := coreFile(t, d, objects.id, obj, fmt.Sprintf("object %d", i))
		if _, e := d.link(st.id, objects.id, fmt.Sprintf("o%d", i)); e != 0 {
			t.Fatal(e)
		}
		if e := d.unlink(objects.id, obj, false); e != 0 {
			t.Fatal(e)
		}
		tmpNames = append(tmpNames, [2]any{objects.id, obj})
	}
	release()
	coreFlush(t, d)

	sealer := meta.NewSealer(c.sess.Subkeys())
	macs := map[string]bool{}
	for _, ch := range cloudFeed(t, c) {
		macs[ch.NameMAC] = true
	}
	for _, tn := range tmpNames {
		if macs[sealer.NameMAC(tn[0].(uint64), []byte(tn[1].(string)))] {
			t.Errorf("temporary name %s reached the cloud", tn[1])
		}
	}
	other := coreDrive(t, c)
	otherObjects, e := other.lookupForTest(api.RootID, "objects")
	if e != 0 {
		t.Fatal(e)
	}
	for i := range 10 {
		if got := coreRead(t, other, api.RootID, fmt.Sprintf("f%d", i)); got != fmt.Sprintf("rsynced %d", i) {
			t.Errorf("second device reads f%d = %q", i, got)
		}
		if got := coreRead(t, other, otherObjects.id, fmt.Sprintf("o%d", i)); got != fmt.Sprintf("object %d", i) {
			t.Errorf("second device reads o%d = %q", i, got)
		}
		if _, e := other.lookupForTest(objects.id, fmt.Sprintf("tmp_obj_%d", i)); e != syscall.ENOENT {
			t.Errorf("second device finds tmp_obj_%d: %v", i, e)
		}
	}
}

// An rm -rf of a tree whose creates are still queued, near the pusher's
// backlog: the unlinks cancel the creates, so the queue of what the cloud
// must see shrinks, and the pusher keeps waiting for the rm to pause
// instead of sending the creates it is about to cancel (pushHold counted
// the cancelled ops and sent them once the journal passed pushBacklog).
func TestCoreUnsentRemovedPastBacklog(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	_, release := holdPusher(t, d)
	tmp := coreMkdir(t, d, api.RootID, "tmp")
	const n = pushBacklog - 200
	ids := map[uint64]bool{tmp.id: true}
	for i := range n {
		st, e := d.create(tmp.id, newNode{name: fmt.Sprintf("f%05d", i), mode: syscall.S_IFREG | 0o644})
		if e != 0 {
			t.Fatal(e)
		}
		ids[st.id] = true
	}
	for i := range n {
		if e := d.unlink(tmp.id, fmt.Sprintf("f%05d", i), false); e != 0 {
			t.Fatal(e)
		}
	}
	if e := d.unlink(api.RootID, "tmp", true); e != 0 {
		t.Fatal(e)
	}
	release()
	coreFlush(t, d)
	sent := 0
	for _, ch := range cloudFeed(t, c) {
		if ids[ch.Node] {
			sent++
		}
	}
	if sent > 0 {
		t.Fatalf("%d changes of the %d files created and removed before they were sent reached the cloud", sent, n)
	}
}
