package fs

import (
	"context"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// TestShareMinGenHeldState: node states decoded in generation 1 stay in the
// owner's drive memory (an inode the kernel holds, a file handle opened
// before) while the owner removes a writer, re-seals the folder under
// generation 2 and raises the lowest accepted generation to 2; the change
// feed is held and the sweep does not run. A getattr, an open and a read
// through the old handle each check the state as a lookup does: a.txt,
// whose re-sealed record the cloud holds, is fetched and answers under
// generation 2, bytes exact; sub/b.txt, for which the cloud serves only a
// generation-1 record signed by the removed writer, is EIO on each path,
// not its old attributes or bytes; c.txt, removed while a handle keeps it
// open, still reads through it. The old drive answered a.txt and b.txt
// from the generation-1 states.
func TestShareMinGenHeldState(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	_, bs := bob.load(t)
	bobGen1 := bs.Joined[0].Secrets[1]
	od, p, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	sub := lookupDir(t, od, docs.id, "sub")
	an := &fnode{d: od, id: lookupDir(t, od, docs.id, "a.txt").id}
	bn := &fnode{d: od, id: lookupDir(t, od, sub.id, "b.txt").id}
	open := func(n *fnode) gofs.FileHandle {
		t.Helper()
		fh, _, e := n.Open(ctx, syscall.O_RDONLY)
		if e != 0 {
			t.Fatalf("open node %d: %v", n.id, e)
		}
		t.Cleanup(func() { n.Release(ctx, fh) })
		return fh
	}
	ah, bh := open(an), open(bn) // opened in generation 1
	// c.txt: written in generation 1, opened, then removed while open.
	cn := &fnode{d: od, id: coreFile(t, od, docs.id, "c.txt", "shared c\n").id}
	flushDrive(t, od)
	ch := open(cn)
	if e := od.unlink(docs.id, "c.txt", false); e != 0 {
		t.Fatalf("rm c.txt: %v", e)
	}
	flushDrive(t, od)
	gen := func(id uint64) uint32 {
		od.mu.Lock()
		defer od.mu.Unlock()
		return od.states[id].kid.Gen
	}
	read := func(n *fnode, fh gofs.FileHandle) (string, syscall.Errno) {
		buf := make([]byte, 4096)
		r, e := n.Read(ctx, fh, buf, 0)
		if e != 0 {
			return "", e
		}
		got, st := r.Bytes(buf)
		if !st.Ok() {
			t.Fatalf("read result of node %d: %v", n.id, st)
		}
		return string(got), 0
	}
	if got, e := read(an, ah); e != 0 || got != "shared a\n" || gen(an.id) != 1 || gen(bn.id) != 1 || gen(cn.id) != 1 {
		t.Fatalf("before the re-seal: read a.txt %q (%v), generations %d, %d and %d, want 1", got, e, gen(an.id), gen(bn.id), gen(cn.id))
	}

	hold.Store(true)
	if sh := removeBob(t, owner); sh.Roster.MinGen != 2 {
		t.Fatalf("lowest accepted generation after removing a writer: %d, want 2", sh.Roster.MinGen)
	}
	n, sealed := sealShareAttrsAt(t, owner, "/Docs/sub/b.txt", 100, 1, bobGen1, func(a *meta.Attrs) { a.Mode = a.Mode&^0o777 | 0o600 })
	rec, err := keys.SignRecord(bob.acct.Identity, keys.RecordAttrs, n.ID(), nil, sealed)
	must(t, err)
	serveAttrs(p, n.ID(), rec)
	od.sh.stale.sweep.Store(true) // no sweep: the operations must fetch
	before := od.Integrity().AuthFailures
	must(t, od.loadShares(ctx, 0))

	// a.txt: getattr (no handle) fetches the re-sealed record.
	var out fuse.AttrOut
	if e := an.Getattr(ctx, nil, &out); e != 0 {
		t.Fatalf("getattr a.txt after the re-seal, feed held: %v", e)
	}
	if g := gen(an.id); g != 2 {
		t.Fatalf("getattr a.txt answered from a state of generation %d, want 2 (fetched)", g)
	}
	if out.Size != uint64(len("shared a\n")) {
		t.Fatalf("getattr a.txt: size %d", out.Size)
	}
	if got, e := read(an, ah); e != 0 || got != "shared a\n" {
		t.Fatalf("read a.txt through the handle opened before the re-seal: %q, %v", got, e)
	}

	// b.txt: the cloud's record is refused, so every path is EIO.
	if e := bn.Getattr(ctx, nil, &out); e != syscall.EIO {
		t.Fatalf("getattr sub/b.txt, the cloud's record the removed writer's in generation 1: %v (mode %o), want EIO", e, out.Mode)
	}
	if e := bn.Getattr(ctx, bh, &out); e != syscall.EIO {
		t.Fatalf("getattr sub/b.txt through the handle opened before: %v, want EIO", e)
	}
	if got, e := read(bn, bh); e != syscall.EIO {
		t.Fatalf("read sub/b.txt through the handle opened before: %q, %v, want EIO", got, e)
	}
	if fh, _, e := bn.Open(ctx, syscall.O_RDONLY); e != syscall.EIO {
		if e == 0 {
			bn.Release(ctx, fh)
		}
		t.Fatalf("open sub/b.txt: %v, want EIO", e)
	}
	if g := gen(bn.id); g != 1 {
		t.Fatalf("sub/b.txt's state is of generation %d: the planted record was taken", g)
	}
	// c.txt, removed while open: no record to fetch, it reads as it opened.
	if got, e := read(cn, ch); e != 0 || got != "shared c\n" {
		t.Fatalf("read c.txt, removed while open before the re-seal: %q, %v", got, e)
	}
	if e := cn.Getattr(ctx, ch, &out); e != 0 {
		t.Fatalf("getattr c.txt through its handle: %v", e)
	}
	if od.Integrity().AuthFailures == before {
		t.Fatal("the refusal of the cloud's generation-1 record is not counted")
	}
	if !hold.Load() || p.Count("GET", "/v1/changes") == 0 {
		t.Fatal("the change feed was not held")
	}
}
