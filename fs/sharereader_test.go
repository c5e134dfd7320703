package fs

import (
	"context"
	"testing"

	"kumo/cache"
	"kumo/internal/keys"
	"kumo/remote/api"
)

// TestShareReaderOwnLocalRecord: a reader's drive keeps its local records of
// the shared folder's nodes sealed and signed with its own key (a
// directory's link count after a refresh, a kept mark), and must open them
// again. The roster's rule alone refused them (the reader is no writer), so
// the next lookup or stat of such a node answered EIO and counted an
// authentication failure: TestShareMinGenLaggingFeedMount failed about one
// run in twenty on it (ls -l sub: EIO). A record signed with a key that is
// neither a writer's nor the drive's own stays refused.
func TestShareReaderOwnLocalRecord(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	carol := joinDocs(t, c, owner, "carol@example.com", keys.RoleReader)
	cd := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(carol)(o)
		o.Session, o.SharedDir = carol.sess, "Shared"
	})
	md, e := cd.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatalf("the reader's drive of the joined share: %v", e)
	}
	sub := lookupDir(t, md, md.rootID(), "sub")

	// The reader's drive saves sub's node again, as a refresh that changes
	// its link count does: sealed and signed by the reader.
	md.mu.Lock()
	sub.nlink++
	n := md.localNode(sub)
	md.mu.Unlock()
	must(t, md.store.Apply(cache.Mutation{PutNodes: []api.Node{n}}))
	if _, err := md.decode(n); err != nil {
		t.Fatalf("the reader's own local record of sub: %v", err)
	}
	if got := md.Integrity().AuthFailures; got != 0 {
		t.Fatalf("%d authentication failures counted for the drive's own records", got)
	}

	// Signed by another key that is no writer's: refused, as before.
	other, err := keys.NewIdentity()
	must(t, err)
	sealed, _, _, err := keys.SplitRecord(n.Attrs)
	must(t, err)
	forged, err := keys.SignRecord(other, keys.RecordAttrs, n.ID, nil, sealed)
	must(t, err)
	n.Attrs = forged
	if _, err := md.decode(n); err == nil {
		t.Fatal("a record signed by a key that is neither a writer's nor the drive's own was opened")
	}
}
