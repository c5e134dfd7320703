package fs

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kumo/cache"
	"kumo/internal/chunk"
	"kumo/internal/control"
	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// TestShareStaleGenOwnerDevice: the owner removes a writer (bob) with the
// CLI: the folder is re-sealed under generation 2 and the roster refuses
// generation 1. The owner's other device (a drive whose change feed is held,
// so it has not learnt of the rotation) then writes a new file in the folder
// and changes the mode of an old one: it seals both under generation 1, the
// cloud refuses them (stale_generation), and the drive loads the shares,
// seals them again under generation 2 (their chunks re-encrypted) and sends
// them: both land, the remaining reader (carol, whose view refuses
// generation 1) reads them, and bob's generation-1 keys open nothing of
// what an honest server stores for them (the records and chunks it lists).
// A hostile server could have kept the refused generation-1 records and the
// chunks uploaded with them (docs/API.md): this test does not claim
// otherwise. With the old server both landed under generation 1 (readable
// by bob, refused by every client); with the old drive the refused writes
// were lost.
func TestShareStaleGenOwnerDevice(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	carol := joinDocs(t, c, owner, "carol@example.com", keys.RoleReader)
	_, bs := bob.load(t)
	bobGen1 := bs.Joined[0].Secrets[1]

	od, _, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	a := lookupDir(t, od, docs.id, "a.txt")
	if a.kid.Gen != 1 {
		t.Fatalf("a.txt before the revoke: generation %d", a.kid.Gen)
	}
	hold.Store(true)

	sh := removeBob(t, owner)
	if sh.Roster.MinGen != 2 || sh.Gen() != 2 {
		t.Fatalf("after removing a writer: generation %d, lowest accepted %d; want 2 and 2", sh.Gen(), sh.Roster.MinGen)
	}
	if g := od.shares().byID[sh.ID].Gen(); g != 1 {
		t.Fatalf("the second device learnt of the rotation before writing (generation %d): the test needs it not to", g)
	}

	const late = "written on the second device after the revoke\n"
	coreFile(t, od, docs.id, "late.txt", late)
	if e := od.setAttrs(a, func(m *meta.Attrs) syscall.Errno { m.Mode = m.Mode&^0o777 | 0o600; return 0 }); e != 0 {
		t.Fatalf("chmod a.txt: %v", e)
	}
	flushDrive(t, od)
	od.ctl.mu.Lock()
	refused := append([]control.RefusedOp(nil), od.ctl.refused...)
	od.ctl.mu.Unlock()
	if len(refused) != 0 {
		t.Fatalf("the cloud refused the second device's writes for good: %+v", refused)
	}
	if g := od.shares().byID[sh.ID].Gen(); g != 2 {
		t.Fatalf("the second device's shares after the refusal: generation %d, want 2", g)
	}

	// The cloud holds both under generation 2, chunks too.
	f, _ := owner.load(t)
	cur := meta.KeyID{Share: sh.ID, Gen: 2}
	bobSealer := meta.NewSealer(bob.sess.Subkeys()).WithShare(meta.KeyID{Share: sh.ID, Gen: 1}, keys.ShareSubkeys(bobGen1, sh.ID, 1))
	bobKeys := keys.ShareSubkeys(bobGen1, sh.ID, 1)
	bobCipher := chunk.NewCipher(bobKeys.ChunkID, bobKeys.Chunks)
	for _, name := range []string{"late.txt", "a.txt"} {
		n, err := f.Resolve(ctx, "/Docs/"+name)
		if err != nil {
			t.Fatalf("resolve /Docs/%s: %v", name, err)
		}
		if k, _ := meta.RecordKeyID(n.Node.Attrs); k != cur {
			t.Fatalf("%s: attributes in the cloud sealed under %+v, want %+v", name, k, cur)
		}
		if name == "a.txt" && n.Attrs.Mode&0o777 != 0o600 {
			t.Fatalf("a.txt: the second device's chmod is lost (mode %o)", n.Attrs.Mode)
		}
		// What a hostile server hands the removed member: the records and
		// chunks it stores. Bob's generation-1 keys open none of it.
		sealed, _, _, err := keys.SplitRecord(n.Node.Attrs)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bobSealer.OpenAttrs(n.ID(), sealed); err == nil {
			t.Fatalf("%s: bob's generation-1 keys open the attributes", name)
		}
		if len(n.Node.Chunks) == 0 {
			t.Fatalf("%s has no chunks", name)
		}
		for _, id := range n.Node.Chunks {
			b, err := owner.c.GetChunk(ctx, id, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			cid, err := chunk.ParseID(id)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bobCipher.Open(nil, cid, b); err == nil {
				t.Fatalf("%s: bob's generation-1 keys open chunk %s", name, id)
			}
		}
	}
	es, err := owner.c.List(ctx, docs.id)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if k, _ := meta.RecordKeyID(e.Name); k != cur {
			t.Fatalf("an entry of /Docs sealed under %+v, want %+v", k, cur)
		}
	}

	// The remaining reader reads them (its view refuses generation 1).
	v := carol.view(t)
	if got, err := shareGet(t, v, "/late.txt"); err != nil || string(got) != late {
		t.Fatalf("carol reads late.txt: %q, %v", got, err)
	}
	if got, err := shareGet(t, v, "/a.txt"); err != nil || string(got) != "shared a\n" {
		t.Fatalf("carol reads a.txt: %q, %v", got, err)
	}

	// The second device itself reads on, under generation 2.
	if st := lookupDir(t, od, docs.id, "late.txt"); st.kid != cur {
		t.Fatalf("the second device's late.txt: %+v, want %+v", st.kid, cur)
	}
	if got := coreRead(t, od, docs.id, "late.txt"); got != late {
		t.Fatalf("the second device reads late.txt: %q", got)
	}
	hold.Store(false)
}

// TestShareStaleGenLaggingUnlinkRename: the re-seal after a writer's removal
// moves every entry of the folder to the new generation's name MAC. The
// owner's other device, which has not seen it, deletes a file and renames
// another by the old MACs: the cloud answers not found, and the drive finds
// the same names under their new MACs and sends both again (the rename's new
// name sealed under generation 2). With the old drive both were taken as
// "already gone there" and lost: a.txt stayed, c.txt never appeared.
func TestShareStaleGenLaggingUnlinkRename(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	od, _, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	lookupDir(t, od, docs.id, "a.txt")
	sub := lookupDir(t, od, docs.id, "sub")
	lookupDir(t, od, sub.id, "b.txt")
	hold.Store(true)
	sh := removeBob(t, owner)
	if e := od.unlink(docs.id, "a.txt", false); e != 0 {
		t.Fatalf("rm a.txt: %v", e)
	}
	if e := od.rename(sub.id, "b.txt", sub.id, "c.txt", 0); e != 0 {
		t.Fatalf("mv b.txt c.txt: %v", e)
	}
	flushDrive(t, od)
	hold.Store(false)

	f, _ := owner.load(t)
	if _, err := f.Resolve(ctx, "/Docs/a.txt"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a.txt after the second device deleted it: %v, want not found", err)
	}
	if _, err := f.Resolve(ctx, "/Docs/sub/b.txt"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("sub/b.txt after the second device renamed it: %v, want not found", err)
	}
	if _, err := f.Resolve(ctx, "/Docs/sub/c.txt"); err != nil {
		t.Fatalf("sub/c.txt, renamed on the second device: %v", err)
	}
	es, err := owner.c.List(ctx, sub.id)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Fatalf("/Docs/sub holds %d entries, want c.txt alone", len(es))
	}
	if k, _ := meta.RecordKeyID(es[0].Name); k != (meta.KeyID{Share: sh.ID, Gen: 2}) {
		t.Fatalf("c.txt's name sealed under %+v, want generation 2", k)
	}
}

// TestShareStaleGenLaggingUnlinkOtherNode: a device that has not seen the
// re-seal unlinks a.txt by its old MAC while another device has replaced
// a.txt with a new node (as editors save: a new file takes the name). The
// cloud finds nothing under the old MAC; the drive must not take the new
// a.txt under the new MAC for the one it removed. The old drive deleted it.
func TestShareStaleGenLaggingUnlinkOtherNode(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	od, _, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	a := lookupDir(t, od, docs.id, "a.txt")
	hold.Store(true)
	removeBob(t, owner)
	// Another device replaces a.txt: the old node goes, a new one takes the name.
	es, err := owner.c.List(ctx, docs.id)
	if err != nil {
		t.Fatal(err)
	}
	gone := false
	for _, e := range es {
		if e.Node.ID == a.id {
			if err := owner.c.Unlink(ctx, api.UnlinkRequest{Parent: docs.id, NameMAC: e.NameMAC}); err != nil {
				t.Fatal(err)
			}
			gone = true
		}
	}
	if !gone {
		t.Fatal("a.txt's node not listed after the re-seal")
	}
	owner.put(t, owner.view(t), "/a.txt", []byte("new a\n"))
	f, _ := owner.load(t)
	na, err := f.Resolve(ctx, "/Docs/a.txt")
	if err != nil || na.ID() == a.id {
		t.Fatalf("the new a.txt: %v (node %d, old %d)", err, na.ID(), a.id)
	}

	if e := od.unlink(docs.id, "a.txt", false); e != 0 {
		t.Fatalf("rm a.txt: %v", e)
	}
	flushDrive(t, od)
	hold.Store(false)

	f, _ = owner.load(t)
	got, err := f.Resolve(ctx, "/Docs/a.txt")
	if err != nil {
		t.Fatalf("the new a.txt after the lagging device removed the old one: %v (deleted: another node than the one it removed)", err)
	}
	if got.ID() != na.ID() {
		t.Fatalf("a.txt is node %d, want the new node %d", got.ID(), na.ID())
	}
}

// TestShareStaleGenTwoRotations: a device whose change feed is held writes
// in the folder under generation 1 after a first rotation; the cloud
// refuses it, the drive re-seals it under generation 2 and, while that is
// on its way, a second rotation makes generation 3 current: refused again,
// the write is sealed again (from the queued record) under generation 3 and
// lands. The old drive kept the generation-2 form as done and sent it again
// for ever: the queue jammed.
func TestShareStaleGenTwoRotations(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	joinDocs(t, c, owner, "carol@example.com", keys.RoleReader)
	p, hold := heldFeed(t, c)
	var batches atomic.Int32
	p.On("POST", "/v1/batch", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if batches.Add(1) == 2 { // the generation-2 form: a second rotation beats it
			f, _ := owner.load(t)
			if _, err := f.RemoveMember(req.Context(), owner.acct, "/Docs", "carol@example.com"); err != nil {
				t.Errorf("removing carol: %v", err)
			}
		}
		return next(req)
	})
	od := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(owner)(o)
		o.Client = proxyClient(t, p.URL, owner.sess.Token)
	})
	docs := lookupDir(t, od, api.RootID, "Docs")
	hold.Store(true)
	sh := removeBob(t, owner)

	const late = "written while two rotations went by\n"
	coreFile(t, od, docs.id, "late.txt", late)
	flushDrive(t, od)
	if n := batches.Load(); n < 3 {
		t.Fatalf("%d batches: the test needs the write refused twice", n)
	}
	od.ctl.mu.Lock()
	refused := append([]control.RefusedOp(nil), od.ctl.refused...)
	od.ctl.mu.Unlock()
	if len(refused) != 0 {
		t.Fatalf("the cloud refused the write for good: %+v", refused)
	}
	cur := meta.KeyID{Share: sh.ID, Gen: 3}
	f, _ := owner.load(t)
	n, err := f.Resolve(ctx, "/Docs/late.txt")
	if err != nil {
		t.Fatalf("late.txt: %v", err)
	}
	if k, _ := meta.RecordKeyID(n.Node.Attrs); k != cur {
		t.Fatalf("late.txt's attributes sealed under %+v, want %+v", k, cur)
	}
	e, err := owner.c.Lookup(ctx, docs.id, n.NameMAC)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := meta.RecordKeyID(e.Name); k != cur {
		t.Fatalf("late.txt's name sealed under %+v, want %+v", k, cur)
	}
	if got, err := shareGet(t, owner.view(t), "/late.txt"); err != nil || string(got) != late {
		t.Fatalf("late.txt reads %q, %v", got, err)
	}
	if st := lookupDir(t, od, docs.id, "late.txt"); st.kid != cur {
		t.Fatalf("the device's late.txt: %+v, want %+v", st.kid, cur)
	}
	if got := coreRead(t, od, docs.id, "late.txt"); got != late {
		t.Fatalf("the device reads late.txt: %q", got)
	}
}

// TestShareStaleGenUnfixableRefused: a device that has not seen a rotation
// holds a queued change whose record it cannot seal again (signed by
// another identity than this account's: the drive vouches for its own
// writes only), then a write of its own. The cloud refuses both as stale;
// the first is refused for good (shown in .kumo), the second is sealed
// again and lands. The old drive kept the first queued for ever, and the
// write behind it never went.
func TestShareStaleGenUnfixableRefused(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	od, _, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	a := lookupDir(t, od, docs.id, "a.txt")
	hold.Store(true)
	sh := removeBob(t, owner)

	other, err := keys.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	od.mu.Lock()
	attrs := a.attrs
	attrs.Mode = attrs.Mode&^0o777 | 0o600
	sealed, err := od.shares().sealer.SealAttrsAs(a.kid, a.id, a.rev+1, &attrs)
	if err == nil {
		sealed, err = keys.SignRecord(other, keys.RecordAttrs, a.id, nil, sealed)
	}
	if err == nil {
		err = od.apply(cache.Mutation{Journal: []api.BatchOp{{Op: api.OpUpdate, ID: a.id,
			Update: &api.UpdateRequest{Version: a.version, Attrs: sealed, Chunks: chunkHex(a.attrs.Chunks)}}}})
	}
	od.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	const late = "written behind a change that cannot be sealed again\n"
	coreFile(t, od, docs.id, "late.txt", late)
	flushDrive(t, od)

	od.ctl.mu.Lock()
	refused := append([]control.RefusedOp(nil), od.ctl.refused...)
	od.ctl.mu.Unlock()
	if len(refused) != 1 {
		t.Fatalf("refused for good: %+v, want the other identity's update alone", refused)
	}
	f, _ := owner.load(t)
	n, err := f.Resolve(ctx, "/Docs/late.txt")
	if err != nil {
		t.Fatalf("late.txt, queued behind the refused change: %v", err)
	}
	if k, _ := meta.RecordKeyID(n.Node.Attrs); k != (meta.KeyID{Share: sh.ID, Gen: 2}) {
		t.Fatalf("late.txt sealed under %+v, want generation 2", k)
	}
	if n, err := f.Resolve(ctx, "/Docs/a.txt"); err != nil || n.Attrs.Mode&0o777 == 0o600 {
		t.Fatalf("a.txt: %v, mode %o: the other identity's change must not land", err, n.Attrs.Mode)
	}
}

// TestShareStaleGenPrunedOnAck: after a re-sealed write lands and nothing
// else is queued, the entry at its new name MAC follows the cloud again: a
// delete by another device is seen; and the name rewrite is dropped. The old drive kept the entry marked
// pending (pruned only at the start of a next push, which never came), so
// the puller skipped the change and the file stayed.
func TestShareStaleGenPrunedOnAck(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	od, _, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	hold.Store(true)
	removeBob(t, owner)
	coreFile(t, od, docs.id, "late.txt", "re-sealed, then deleted elsewhere\n")
	flushDrive(t, od)
	hold.Store(false)
	// With the journal empty, the re-seal's name rewrite is dropped too (the
	// old drive kept every one for the life of the drive).
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		od.mu.Lock()
		n := len(od.rewrite)
		od.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d name rewrites kept after the journal drained", n)
		}
	}

	f, _ := owner.load(t)
	n, err := f.Resolve(ctx, "/Docs/late.txt")
	if err != nil {
		t.Fatalf("late.txt: %v", err)
	}
	if k, _ := meta.RecordKeyID(n.Node.Attrs); k.Gen != 2 {
		t.Fatalf("late.txt sealed under %+v, want generation 2", k)
	}
	if err := owner.c.Unlink(ctx, api.UnlinkRequest{Parent: docs.id, NameMAC: n.NameMAC}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, e := od.lookupForTest(docs.id, "late.txt")
		if e == syscall.ENOENT {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the drive still lists late.txt 15 s after another device deleted it (lookup: %v)", e)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestShareStaleGenMemberLagging: a writer member's drive whose change feed
// is held writes in the folder after the owner removed another member (a
// rotation to generation 2 it has not seen): the cloud refuses the
// generation-1 write as stale (it answered 403 before, and the drive
// refused the write for good and undid it), the drive loads the new secret,
// seals the write again and it lands under generation 2.
func TestShareStaleGenMemberLagging(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	joinDocs(t, c, owner, "carol@example.com", keys.RoleReader)
	p, hold := heldFeed(t, c)
	bd := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(bob)(o)
		o.Session, o.Client, o.SharedDir = bob.sess, proxyClient(t, p.URL, bob.sess.Token), "Shared"
	})
	md, e := bd.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatalf("bob's drive of the joined share: %v", e)
	}
	root := md.rootID()
	lookupDir(t, md, root, "a.txt")
	hold.Store(true)
	f, _ := owner.load(t)
	sh, err := f.RemoveMember(ctx, owner.acct, "/Docs", "carol@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if g := md.shares().byID[sh.ID].Gen(); g != 1 {
		t.Fatalf("bob's drive learnt of the rotation before writing (generation %d): the test needs it not to", g)
	}

	const late = "written by a member that has not seen the rotation\n"
	coreFile(t, md, root, "late.txt", late)
	flushDrive(t, md)
	md.ctl.mu.Lock()
	refused := append([]control.RefusedOp(nil), md.ctl.refused...)
	md.ctl.mu.Unlock()
	if len(refused) != 0 {
		t.Fatalf("the cloud refused the member's write for good: %+v", refused)
	}
	f, _ = owner.load(t)
	n, err := f.Resolve(ctx, "/Docs/late.txt")
	if err != nil {
		t.Fatalf("late.txt: %v", err)
	}
	if k, _ := meta.RecordKeyID(n.Node.Attrs); k != (meta.KeyID{Share: sh.ID, Gen: 2}) {
		t.Fatalf("late.txt sealed under %+v, want generation 2", k)
	}
	if got, err := shareGet(t, owner.view(t), "/late.txt"); err != nil || string(got) != late {
		t.Fatalf("the owner reads late.txt: %q, %v", got, err)
	}
	if got := coreRead(t, md, root, "late.txt"); got != late {
		t.Fatalf("bob's drive reads late.txt: %q", got)
	}
}

// TestShareStaleGenSupersededNotResealed: a device that has not seen a
// rotation changes a file's mode three times (three queued updates, each
// naming the file's chunk): the push sends only the last, so only the last
// is sealed again, its chunk re-encrypted and uploaded once. The old drive
// re-encrypted and uploaded it for every update.
func TestShareStaleGenSupersededNotResealed(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	p, hold := heldFeed(t, c)
	// The pusher's first batch is held at a gate (below).
	gate := hostile.NewGate()
	var batches atomic.Int32
	p.On("POST", "/v1/batch", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if batches.Add(1) == 1 {
			return gate.Rule()(req, next)
		}
		return next(req)
	})
	od := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(owner)(o)
		o.Client = proxyClient(t, p.URL, owner.sess.Token)
	})
	docs := lookupDir(t, od, api.RootID, "Docs")
	a := lookupDir(t, od, docs.id, "a.txt")
	out := lookupDir(t, od, api.RootID, "out.txt")
	hold.Store(true)
	sh := removeBob(t, owner)
	// The three updates must all be in the journal when the pusher reads
	// it. A pusher that read it with one or two of them (a stall of more
	// than its quiet time between two chmods on a loaded machine, or a
	// flush starting between its read and its wait) sent those alone,
	// refused and sealed again (one upload), and the last one was sealed
	// again at the next push (a second): no timing is assumed here. The
	// pusher is kept inside the push of a change of the own tree (its
	// request held at the gate) while they are queued; it reads the
	// journal again only after that push.
	chmod := func(st *nodeState, mode uint32) {
		t.Helper()
		if e := od.setAttrs(st, func(m *meta.Attrs) syscall.Errno { m.Mode = m.Mode&^0o777 | mode; return 0 }); e != 0 {
			t.Fatalf("chmod: %v", e)
		}
	}
	chmod(out, 0o600)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	must(t, gate.Wait(wctx, 1))
	for _, mode := range []uint32{0o600, 0o640, 0o604} {
		chmod(a, mode)
	}
	if n := batches.Load(); n != 1 {
		t.Fatalf("%d pushes while the updates were queued, want the held one: the test tests nothing", n)
	}
	if g := od.shares().byID[sh.ID].Gen(); g != 1 {
		t.Fatalf("the drive learnt of the rotation before the updates were queued (generation %d): the test needs it not to", g)
	}
	before := p.Count("PUT", "/v1/chunks/*")
	gate.Release(0)
	flushDrive(t, od)
	if n := p.Count("PUT", "/v1/chunks/*") - before; n != 1 {
		t.Fatalf("%d chunk uploads for a.txt's three queued updates, want 1 (the last one's re-encrypted chunk)", n)
	}
	f, _ := owner.load(t)
	n, err := f.Resolve(ctx, "/Docs/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := meta.RecordKeyID(n.Node.Attrs); k.Gen != 2 || n.Attrs.Mode&0o777 != 0o604 {
		t.Fatalf("a.txt: %+v, mode %o; want generation 2, mode 604", k, n.Attrs.Mode&0o777)
	}
}

// TestShareMovedByResealListings: an unlink refused as not found in a
// shared folder that never rotated is gone indeed (no re-seal moved it):
// the drive does not list the directory to look for it. After a rotation,
// the ops of one push round refused so share one listing per directory.
// The old drive listed the directory for every such op.
func TestShareMovedByResealListings(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	// The feed is held and the sweep off (below), so neither the puller
	// nor the sweep lists the re-sealed folder while listings are counted.
	od, p, hold := heldOwnerDrive(t, c, owner)
	hold.Store(true)
	docs := lookupDir(t, od, api.RootID, "Docs")
	a := lookupDir(t, od, docs.id, "a.txt")
	gone := func(mac string) api.BatchOp {
		return api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: docs.id, NameMAC: mac, Node: a.id}}
	}
	lists := func() int { return p.Count("GET", "/v1/nodes/*/entries") }

	before := lists()
	if od.movedByReseal(ctx, gone("00")) || od.movedByReseal(ctx, gone("01")) {
		t.Fatal("an entry never there reported moved")
	}
	if n := lists() - before; n != 0 {
		t.Fatalf("%d listings for unlinks refused in a folder that never rotated, want 0", n)
	}

	removeBob(t, owner)
	od.sh.stale.sweep.Store(true) // no sweep of the re-sealed folder: it lists too
	od.resealStale(nil)           // a push round begins
	before = lists()
	if od.movedByReseal(ctx, gone("02")) || od.movedByReseal(ctx, gone("03")) {
		t.Fatal("an entry never there reported moved")
	}
	if n := lists() - before; n != 1 {
		t.Fatalf("%d listings for two unlinks refused in one round, want 1", n)
	}
}

// TestShareStaleGenLaggingRenameForgotten: as TestShareStaleGenLaggingUnlinkRename,
// but the kernel has forgotten the renamed file's node before the push (its
// state is gone from memory) and the sweep that fetches the re-sealed
// records again has not reached it (off here: it runs in the background,
// and a big folder takes it a while). The rename's new name, sealed under
// generation 1, must be sealed again, for which the drive needs the kind of
// node it names: it used to open the node's attributes from the local tree
// for that, which the roster (lowest generation 2) refuses, and the rename
// was refused for good (c.txt never appeared). The name record itself binds
// the kind (opening it under the wrong one fails), so it tells.
func TestShareStaleGenLaggingRenameForgotten(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	od, _, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	sub := lookupDir(t, od, docs.id, "sub")
	b := lookupDir(t, od, sub.id, "b.txt")
	hold.Store(true)
	sh := removeBob(t, owner)
	od.sh.stale.sweep.Store(true) // the sweep has not reached b.txt
	if e := od.rename(sub.id, "b.txt", sub.id, "c.txt", 0); e != 0 {
		t.Fatalf("mv b.txt c.txt: %v", e)
	}
	od.mu.Lock()
	delete(od.states, b.id) // the kernel forgot it (OnForget)
	od.mu.Unlock()
	flushDrive(t, od)
	hold.Store(false)

	od.ctl.mu.Lock()
	refused := append([]control.RefusedOp(nil), od.ctl.refused...)
	od.ctl.mu.Unlock()
	if len(refused) != 0 {
		t.Fatalf("the cloud refused the lagging device's rename for good: %+v", refused)
	}
	if g := od.Integrity(); g.AuthFailures != 0 {
		t.Fatalf("the re-seal counted %d authentication failures (%s): it opened the node's refused attributes", g.AuthFailures, g.Last)
	}
	f, _ := owner.load(t)
	if _, err := f.Resolve(ctx, "/Docs/sub/b.txt"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("sub/b.txt after the second device renamed it: %v, want not found", err)
	}
	n, err := f.Resolve(ctx, "/Docs/sub/c.txt")
	if err != nil {
		t.Fatalf("sub/c.txt, renamed on the second device: %v", err)
	}
	if n.ID() != b.id {
		t.Fatalf("sub/c.txt is node %d, want b.txt's %d", n.ID(), b.id)
	}
	es, err := owner.c.List(ctx, sub.id)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Fatalf("/Docs/sub holds %d entries, want c.txt alone", len(es))
	}
	if k, _ := meta.RecordKeyID(es[0].Name); k != (meta.KeyID{Share: sh.ID, Gen: 2}) {
		t.Fatalf("c.txt's name sealed under %+v, want generation 2", k)
	}
}
