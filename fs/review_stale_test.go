package fs

import (
	"context"
	"syscall"
	"testing"

	"kumo/cache"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// TestShareStaleForgedLocalCounted: a local record whose clear-text header
// claims a generation below the roster's lowest accepted one is exempt from
// the integrity count only if it is genuine under its own generation. After
// the re-seal, a.txt's local generation-1 record altered past its header is
// refused (EIO) and counted; before, the header alone exempted it (0
// failures).
func TestShareStaleForgedLocalCounted(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	od, _, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	aID := lookupDir(t, od, docs.id, "a.txt").id

	hold.Store(true)
	removeBob(t, owner)
	od.sh.stale.sweep.Store(true) // no sweep: the lookup meets the local record
	must(t, od.loadShares(ctx, 0))

	n, err := od.store.GetNode(aID)
	must(t, err)
	if kid, _ := meta.RecordKeyID(n.Attrs); kid.Gen != 1 {
		t.Fatalf("a.txt's local record is of generation %d, want 1", kid.Gen)
	}
	n.Attrs = append([]byte(nil), n.Attrs...)
	for i := len(n.Attrs) / 2; i < len(n.Attrs); i++ {
		n.Attrs[i] ^= 0x5a
	}
	must(t, od.store.Apply(cache.Mutation{PutNodes: []api.Node{n}}))
	od.mu.Lock()
	delete(od.states, aID)
	od.mu.Unlock()
	if kid, _ := meta.RecordKeyID(n.Attrs); kid.Gen != 1 {
		t.Fatalf("the altered record's header claims generation %d, want 1", kid.Gen)
	}
	if _, e := od.lookupForTest(docs.id, "a.txt"); e != syscall.EIO {
		t.Fatalf("a forged generation-1 record under the new roster: %v, want EIO", e)
	}
	if g := od.Integrity(); g.AuthFailures == 0 {
		t.Fatal("a forged record claiming an old generation is not counted as an authentication failure")
	}
}
