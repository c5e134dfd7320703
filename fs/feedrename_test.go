package fs

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// TestFeedRenameNeverMissing: another device renames a.txt to b.txt in
// the same directory; this drive's puller brings the change feed's
// deletion of a.txt's entry and creation of b.txt's in. The cloud's
// answer to the puller's lookup of b.txt's new entry is held, and the file
// is looked up meanwhile: it must answer under one of its names. The old
// puller removed a.txt's entry (dropping the file's last link) before
// that lookup, so both names answered ENOENT for a file that is there.
func TestFeedRenameNeverMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := startCloud(t, t.TempDir(), 0)
	w := coreDrive(t, c)
	coreFile(t, w, api.RootID, "a.txt", "renamed elsewhere\n")
	must(t, w.Flush(ctx))

	r, p := coreDriveBehind(t, c)
	a, e := r.lookupForTest(api.RootID, "a.txt")
	if e != 0 {
		t.Fatalf("lookup a.txt before the rename: %v", e)
	}

	bMAC := meta.NewSealer(c.sess.Subkeys()).NameMAC(api.RootID, []byte("b.txt"))
	gate := hostile.NewGate()
	p.On("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", api.RootID, bMAC), gate.Rule())
	var arrived atomic.Bool
	release := sync.OnceFunc(func() {
		if arrived.Load() {
			gate.Release(0)
		}
	})
	t.Cleanup(release) // a failure below must not leave the puller held

	if e := w.rename(api.RootID, "a.txt", api.RootID, "b.txt", 0); e != 0 {
		t.Fatalf("rename on the other device: %v", e)
	}
	must(t, w.Flush(ctx))

	// The puller is at its lookup of b.txt's new entry.
	must(t, gate.Wait(ctx, 1))
	arrived.Store(true)
	sa, ea := r.lookupForTest(api.RootID, "a.txt")
	sb, eb := r.lookupForTest(api.RootID, "b.txt")
	switch {
	case ea == 0 && sa.id == a.id, eb == 0 && sb.id == a.id:
	default:
		t.Fatalf("while the puller applies the rename, the file has no name: a.txt %v, b.txt %v", ea, eb)
	}
	release()

	waitFor(t, 10*time.Second, func() bool {
		_, ea := r.lookupForTest(api.RootID, "a.txt")
		_, eb := r.lookupForTest(api.RootID, "b.txt")
		return ea == syscall.ENOENT && eb == 0
	})
	if got := coreRead(t, r, api.RootID, "b.txt"); got != "renamed elsewhere\n" {
		t.Fatalf("b.txt after the rename reads %q", got)
	}
	if b, _ := r.lookupForTest(api.RootID, "b.txt"); b.id != a.id || b.nlink != 1 {
		t.Fatalf("b.txt is node %d with %d links, want node %d with 1", b.id, b.nlink, a.id)
	}
}

// coreDriveBehind is a second drive of c's account reaching the cloud
// through p, a hostile proxy the test sets rules on.
func coreDriveBehind(t *testing.T, c *cloud) (*Drive, *hostile.Proxy) {
	t.Helper()
	p := hostile.Start(t, c.url)
	r := coreDriveAt(t, c, t.TempDir(), func(o *Options) {
		o.Client = proxyClient(t, p.URL, c.sess.Token)
	}, nil)
	return r, p
}
