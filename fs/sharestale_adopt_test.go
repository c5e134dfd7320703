package fs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"kumo/internal/hostile"
)

// TestShareMinGenAdoptDropsKernelCacheMemberMount: a reader's mount holds
// Shared/Docs/sub/b.txt open, its pages in the kernel's cache (files open
// with FOPEN_KEEP_CACHE). Its change feed held, the owner removes a writer
// (re-seal under generation 2, lowest accepted generation 2); then the
// cloud is cut off and the reader's drive adopts the new roster (through
// its own client: the roster reaches it, the re-sealed records cannot).
// Nothing opens or stats b.txt, and the sweep is off: the adoption by the
// share's drive (setMemberShare) drops the kernel's pages and attributes
// of b.txt, whose state was decoded under generation 1, so the held
// handle's read and fstat reach the drive, which cannot fetch the
// re-sealed record offline: EIO, never the bytes decoded under the older
// generation. The drive before dropBelowFloor left the pages: the handle
// read "shared b\n" for as long as the drive stayed offline.
func TestShareMinGenAdoptDropsKernelCacheMemberMount(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, p, hold, m := carolReaderMount(t, c)
	const opWait = 20 * time.Second
	const old = "shared b\n"
	b := filepath.Join(m.p("Shared/Docs"), "sub", "b.txt")
	waitUntil(t, opWait, "the share in the reader's mount", fileIs(b, []byte(old)))
	f, pread := openCachedB(t, m, b, old)
	md, e := m.d.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatalf("the reader's drive of the joined share: %v", e)
	}
	bid := lookupDir(t, md, lookupDir(t, md, md.rootID(), "sub").id, "b.txt").id

	hold.Store(true)
	sh := removeBob(t, owner)
	if sh.Roster.MinGen != 2 {
		t.Fatalf("lowest accepted generation after removing a writer: %d, want 2", sh.Roster.MinGen)
	}
	md.sh.stale.sweep.Store(true) // no sweep (it would not run offline either)
	// The cloud cut off, the held feed released into the cut.
	p.On("", "*", hostile.Drop())
	hold.Store(false)
	waitUntil(t, 10*time.Second, "the reader's drives offline", func() error {
		if m.d.online() || md.online() {
			return errors.New("online")
		}
		return nil
	})
	kernelOp(t, m.mnt, opWait, "read sub/b.txt through the open handle offline, old roster", func() error {
		if got, err := pread(); err != nil || got != old {
			return fmt.Errorf("%q, %v", got, err)
		}
		return nil
	})

	must(t, m.d.loadShares(ctx, 0)) // carol's own client, not the proxy
	if got := md.shares().byID[sh.ID].Roster.MinGen; got != 2 {
		t.Fatalf("the reader's share drive accepts from generation %d, want 2", got)
	}
	if !md.staleNode(bid) {
		t.Fatal("b.txt's local record is not below the new lowest generation: the test tests nothing")
	}
	// No open, no stat by path: only the adoption can drop the pages.
	heldRefusedAfterAdoption(t, m, f, pread)
	if md.online() {
		t.Fatal("the share's drive was online: the test tests the offline adoption")
	}
}
