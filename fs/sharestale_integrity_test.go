package fs

import (
	"context"
	"syscall"
	"testing"

	"kumo/cache"
	"kumo/remote/api"
)

// TestShareStaleLocalNotCounted: after the owner removes a writer, the
// folder is re-sealed under generation 2 and the roster refuses generation
// 1. A drive still holding a.txt's generation-1 record (its feed held)
// refuses it, but that record is expected to be out of date: the lookup
// fetches the new one and reads the content written since, and the
// integrity counter .kumo shows stays 0. Before, every operation that met
// the old record logged "node attributes fail authentication" and counted
// it. A record that really fails authentication (a local record of the
// current generation altered) is still EIO and counted.
func TestShareStaleLocalNotCounted(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	od, _, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	aID := lookupDir(t, od, docs.id, "a.txt").id // decoded (generation 1) before the re-seal

	hold.Store(true)
	removeBob(t, owner)
	owner.put(t, owner.view(t), "/a.txt", []byte("new a\n"))
	od.sh.stale.sweep.Store(true) // no sweep: the lookup meets the old record
	must(t, od.loadShares(ctx, 0))
	if _, e := od.lookupForTest(docs.id, "a.txt"); e != syscall.EIO {
		t.Fatalf("a.txt's local generation-1 record under the new roster: %v, want EIO", e)
	}
	a, e := od.lookupFresh(docs.id, "a.txt")
	if e != 0 || a.kid.Gen != 2 {
		t.Fatalf("lookup a.txt in the re-sealed folder: %v", e)
	}
	if a.id != aID {
		t.Fatalf("a.txt is node %d now, was %d: the test meets no old record", a.id, aID)
	}
	if got := readAll(t, od, a); got != "new a\n" {
		t.Fatalf("a.txt reads %q after the re-seal, want the new content", got)
	}
	if g := od.Integrity(); g.AuthFailures != 0 {
		t.Fatalf("a record of a generation below the roster's lowest counted as %d authentication failure(s): %s", g.AuthFailures, g.Last)
	}

	// A real failure: the local record of the current generation altered.
	n, err := od.store.GetNode(aID)
	must(t, err)
	n.Attrs = append([]byte(nil), n.Attrs...)
	n.Attrs[len(n.Attrs)/2] ^= 1
	must(t, od.store.Apply(cache.Mutation{PutNodes: []api.Node{n}}))
	od.mu.Lock()
	delete(od.states, aID)
	od.mu.Unlock()
	if _, e := od.lookupForTest(docs.id, "a.txt"); e != syscall.EIO {
		t.Fatalf("an altered record: %v, want EIO", e)
	}
	if g := od.Integrity(); g.AuthFailures == 0 {
		t.Fatal("an altered record of the current generation is not counted")
	}
}
