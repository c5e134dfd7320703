package fs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
)

// kernelOp runs f (system calls on the mount at mnt) and fails the test if
// it does not return within d. A drive that waits for the kernel inside a
// handler never answers: the connection is then aborted so that the stuck
// calls return and the test ends, instead of hanging until go test's timeout.
func kernelOp(t *testing.T, mnt string, d time.Duration, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		// The drive's goroutines that wait on the kernel, for the log.
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "Notify") {
				t.Logf("waiting on the kernel:\n%s", g)
			}
		}
		abortFUSE(t, mnt)
		t.Fatalf("%s: no answer within %s (the drive hangs; the connection was aborted)", what, d)
	}
}

// abortFUSE aborts the FUSE connection of the mount at mnt (fusectl).
func abortFUSE(t *testing.T, mnt string) {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Logf("abort: stat %s: %v", mnt, err)
		return
	}
	p := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte("1"), 0o200); err != nil {
		t.Logf("abort %s: %v", p, err)
	}
}

// TestShareMinGenLaggingFeedMount: TestShareMinGenLaggingFeed on a real
// mount. A reader has the shared folder mounted and has listed and read
// it (its drive holds generation-1 records, its kernel caches them); its
// change feed is held while the owner removes a writer (re-seal under
// generation 2, then a roster with min_generation 2), and its drive loads
// that roster. The kernel then looks the names up again (their cached
// entries dropped, as memory pressure or an expiry would), lists with
// ls -l, stats and reads: every answer comes from the re-sealed records
// fetched inside those handlers, with the right bytes, no EIO and no hang.
// Before the handlers' notifications went out from another goroutine
// (notifyIn), the lookup's directory refresh told the kernel of the
// renamed entries from inside the lookup, waiting for the directory lock
// the kernel holds until the lookup is answered: the first stat hung.
func TestShareMinGenLaggingFeedMount(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, p, hold, m := carolReaderMount(t, c)
	docs := m.p("Shared/Docs")
	const opWait = 20 * time.Second
	waitUntil(t, opWait, "the share in the reader's mount", fileIs(filepath.Join(docs, "a.txt"), []byte("shared a\n")))
	kernelOp(t, m.mnt, opWait, "read sub/b.txt before the re-seal", fileIs(filepath.Join(docs, "sub", "b.txt"), []byte("shared b\n")))
	lsl := func() error {
		es, err := os.ReadDir(docs)
		if err != nil {
			return err
		}
		var names []string
		for _, e := range es {
			if _, err := e.Info(); err != nil {
				return fmt.Errorf("ls -l %s: %w", e.Name(), err)
			}
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{"a.txt", "sub"}) {
			return fmt.Errorf("ls -l: %q, want a.txt and sub", names)
		}
		return nil
	}
	kernelOp(t, m.mnt, opWait, "ls -l before the re-seal", lsl)
	md, e := m.d.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatalf("the reader's drive of the joined share: %v", e)
	}
	root := md.rootID()
	sub := lookupDir(t, md, root, "sub").id

	hold.Store(true)
	sh := removeBob(t, owner)
	if sh.Roster.MinGen != 2 {
		t.Fatalf("lowest accepted generation after removing a writer: %d, want 2", sh.Roster.MinGen)
	}
	// The handlers must fetch: no sweep ahead of them.
	md.sh.stale.sweep.Store(true)
	must(t, m.d.loadShares(ctx, 0))
	if got := md.shares().byID[sh.ID].Roster.MinGen; got != 2 {
		t.Fatalf("the reader's drive accepts from generation %d, want 2", got)
	}
	if n, err := md.store.GetNode(sub); err != nil || !md.belowMinGen(n.Attrs) {
		t.Fatalf("sub's local record is not below the new lowest generation (err %v): the test tests nothing", err)
	}
	// The kernel forgets the names (and what is under sub) and the cached
	// listing, so the next calls reach the drive's handlers.
	md.notifyEntry(root, "a.txt")
	md.notifyEntry(root, "sub")

	kernelOp(t, m.mnt, opWait, "stat a.txt after the new roster, feed held", func() error {
		fi, err := os.Stat(filepath.Join(docs, "a.txt"))
		if err == nil && fi.Size() != int64(len("shared a\n")) {
			err = fmt.Errorf("a.txt: %d bytes", fi.Size())
		}
		return err
	})
	kernelOp(t, m.mnt, opWait, "ls -l after the new roster, feed held", lsl)
	kernelOp(t, m.mnt, opWait, "cat a.txt", fileIs(filepath.Join(docs, "a.txt"), []byte("shared a\n")))
	kernelOp(t, m.mnt, opWait, "cat sub/b.txt", fileIs(filepath.Join(docs, "sub", "b.txt"), []byte("shared b\n")))
	kernelOp(t, m.mnt, opWait, "stat sub", func() error {
		fi, err := os.Stat(filepath.Join(docs, "sub"))
		if err == nil && !fi.IsDir() {
			err = fmt.Errorf("sub: mode %v", fi.Mode())
		}
		return err
	})
	if !hold.Load() || p.Count("GET", "/v1/changes") == 0 {
		t.Fatal("the change feed was not held")
	}
	for _, id := range []uint64{root, sub} {
		n, err := md.store.GetNode(id)
		must(t, err)
		if k, _ := meta.RecordKeyID(n.Attrs); k.Gen != 2 {
			t.Fatalf("node %d's local record after the kernel's calls: generation %d, want 2", id, k.Gen)
		}
	}
}

// carolReaderMount shares owner's Docs folder with carol as a reader and
// mounts carol's drive with the folder under Shared/ and her change feed
// behind p, which the test holds through hold (heldFeed).
func carolReaderMount(t *testing.T, c *cloud) (owner *shareAcct, p *hostile.Proxy, hold *atomic.Bool, m *mounted) {
	t.Helper()
	owner, _ = sharedDocs(t, c)
	carol := joinDocs(t, c, owner, "carol@example.com", keys.RoleReader)
	p, hold = heldFeed(t, c)
	m = c.mount(t, t.TempDir(), func(o *Options) {
		driveShareOptions(carol)(o)
		o.Session, o.Client, o.SharedDir = carol.sess, proxyClient(t, p.URL, carol.sess.Token), "Shared"
	})
	return owner, p, hold, m
}
