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

// TestFeedMoveNeverMissing: another device moves a.txt (a file, or a
// directory) to another directory, or renames it over an existing b.txt,
// or both; this drive's
// puller brings the change feed's deletion of a.txt's entry and creation
// (or replacement) of b.txt's in. The cloud's answer to the puller's
// lookup of b.txt's entry is held, and both names are looked up meanwhile:
// the file must answer under one of them, and a replaced b.txt must never
// answer ENOENT. The old puller applied such a move as two steps (a.txt's
// entry removed, dropping the file's last link, before that lookup), so
// the file had no name in between.
func TestFeedMoveNeverMissing(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		crossDir, replace, isDir bool
	}{
		{"AcrossDirectories", true, false, false},
		{"OverExistingName", false, true, false},
		{"AcrossDirectoriesOverExistingName", true, true, false},
		{"DirectoryAcrossDirectories", true, false, true},
		{"DirectoryAcrossDirectoriesOverEmptyDirectory", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testFeedMove(t, tc.crossDir, tc.replace, tc.isDir) })
	}
}

// testFeedMove moves a.txt (a directory holding f if isDir) to b.txt in
// directory d (crossDir) or the root, over an existing b.txt (replace; an
// empty directory if isDir).
func testFeedMove(t *testing.T, crossDir, replace, isDir bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := startCloud(t, t.TempDir(), 0)
	w := coreDrive(t, c)
	dir := uint64(api.RootID)
	if crossDir {
		dir = coreMkdir(t, w, api.RootID, "d").id
	}
	if isDir {
		coreFile(t, w, coreMkdir(t, w, api.RootID, "a.txt").id, "f", "moved elsewhere\n")
	} else {
		coreFile(t, w, api.RootID, "a.txt", "moved elsewhere\n")
	}
	switch {
	case replace && isDir:
		coreMkdir(t, w, dir, "b.txt")
	case replace:
		coreFile(t, w, dir, "b.txt", "replaced\n")
	}
	must(t, w.Flush(ctx))

	r, p := coreDriveBehind(t, c)
	a, e := r.lookupForTest(api.RootID, "a.txt")
	if e != 0 {
		t.Fatalf("lookup a.txt before the move: %v", e)
	}
	var old *nodeState // the b.txt the move replaces
	if replace {
		if old, e = r.lookupForTest(dir, "b.txt"); e != 0 {
			t.Fatalf("lookup b.txt before the move: %v", e)
		}
	}

	// Only the first lookup of b.txt's entry is held: any later one (a
	// refresh) goes through.
	h := holdFirstLookup(t, p, c, dir, "b.txt")

	if e := w.rename(api.RootID, "a.txt", dir, "b.txt", 0); e != 0 {
		t.Fatalf("move on the other device: %v", e)
	}
	must(t, w.Flush(ctx))

	// The puller is at its lookup of b.txt's entry.
	h.wait(t, ctx)
	sa, ea := r.lookupForTest(api.RootID, "a.txt")
	sb, eb := r.lookupForTest(dir, "b.txt")
	switch {
	case replace && (eb != 0 || sb.id != a.id && sb.id != old.id):
		t.Fatalf("while the puller applies the move, the replaced b.txt answers %v (node %v)", eb, sb)
	case ea == 0 && sa.id == a.id, eb == 0 && sb.id == a.id:
	default:
		t.Fatalf("while the puller applies the move, the file has no name: a.txt %v, b.txt %v", ea, eb)
	}
	h.release()

	waitFor(t, 10*time.Second, func() bool {
		_, ea := r.lookupForTest(api.RootID, "a.txt")
		b, eb := r.lookupForTest(dir, "b.txt")
		return ea == syscall.ENOENT && eb == 0 && b.id == a.id
	})
	if isDir {
		if b, _ := r.lookupForTest(dir, "b.txt"); b.parent != dir {
			t.Fatalf("the moved directory's parent is %d, want %d", b.parent, dir)
		}
		if got := coreRead(t, r, a.id, "f"); got != "moved elsewhere\n" {
			t.Fatalf("b.txt/f after the move reads %q", got)
		}
	} else {
		if got := coreRead(t, r, dir, "b.txt"); got != "moved elsewhere\n" {
			t.Fatalf("b.txt after the move reads %q", got)
		}
		if b, _ := r.lookupForTest(dir, "b.txt"); b.nlink != 1 {
			t.Fatalf("b.txt has %d links, want 1", b.nlink)
		}
	}
	if replace {
		if _, err := r.store.GetNode(old.id); err == nil {
			t.Fatalf("the replaced b.txt (node %d) is still in the local tree", old.id)
		}
	}
}

// TestRefreshRenameOverNeverMissing: another device renames a.txt over
// b.txt in the same directory, and this drive learns it from a relisting
// of the directory (refreshDir), its change feed held. A lookup of b.txt's
// entry in the cloud is held, and both names are looked up meanwhile, or
// once the relisting is done: the file must answer under one of them, and
// b.txt must never answer ENOENT. The old relisting removed a.txt's entry
// (dropping the file's last link), then looked b.txt up in the cloud to
// replace it, so the file had no name in between.
func TestRefreshRenameOverNeverMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := startCloud(t, t.TempDir(), 0)
	w := coreDrive(t, c)
	coreFile(t, w, api.RootID, "a.txt", "renamed over\n")
	coreFile(t, w, api.RootID, "b.txt", "replaced\n")
	must(t, w.Flush(ctx))

	r, p := coreDriveBehind(t, c)
	a, ea := r.lookupForTest(api.RootID, "a.txt")
	old, eb := r.lookupForTest(api.RootID, "b.txt")
	if ea != 0 || eb != 0 {
		t.Fatalf("lookups before the rename: a.txt %v, b.txt %v", ea, eb)
	}

	// The change feed is held, so only the relisting below brings the rename in.
	feed := make(chan struct{})
	var polls atomic.Int32
	p.On("GET", "/v1/changes", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		polls.Add(1)
		<-feed
		return next(req)
	})
	t.Cleanup(func() { close(feed) }) // before the drive's shutdown
	waitFor(t, 5*time.Second, func() bool { return polls.Load() > 0 })

	h := holdFirstLookup(t, p, c, api.RootID, "b.txt")

	if e := w.rename(api.RootID, "a.txt", api.RootID, "b.txt", 0); e != 0 {
		t.Fatalf("rename on the other device: %v", e)
	}
	must(t, w.Flush(ctx))

	done := make(chan struct{})
	go func() {
		defer close(done)
		r.refreshDir(api.RootID)
	}()
	atGate := make(chan error, 1)
	go func() { atGate <- h.gate.Wait(ctx, 1) }()
	select {
	case err := <-atGate:
		must(t, err)
		h.arrived.Store(true)
	case <-done:
	}
	sa, ea := r.lookupForTest(api.RootID, "a.txt")
	sb, eb := r.lookupForTest(api.RootID, "b.txt")
	switch {
	case eb != 0 || sb.id != a.id && sb.id != old.id:
		t.Fatalf("while the drive relists the directory, b.txt answers %v (node %v)", eb, sb)
	case ea == 0 && sa.id == a.id, sb.id == a.id:
	default:
		t.Fatalf("while the drive relists the directory, the file has no name: a.txt %v, b.txt is node %d", ea, sb.id)
	}
	h.release()
	<-done

	if _, ea := r.lookupForTest(api.RootID, "a.txt"); ea != syscall.ENOENT {
		t.Fatalf("a.txt after the relisting: %v, want ENOENT", ea)
	}
	if b, eb := r.lookupForTest(api.RootID, "b.txt"); eb != 0 || b.id != a.id || b.nlink != 1 {
		t.Fatalf("b.txt after the relisting: %v, node %v, want node %d with 1 link", eb, b, a.id)
	}
	if got := coreRead(t, r, api.RootID, "b.txt"); got != "renamed over\n" {
		t.Fatalf("b.txt after the relisting reads %q", got)
	}
	if _, err := r.store.GetNode(old.id); err == nil {
		t.Fatalf("the replaced b.txt (node %d) is still in the local tree", old.id)
	}
}

// TestFeedExchangeNeverMissing: another device exchanges a.txt and b.txt
// (rename with RENAME_EXCHANGE), in one directory or across two; this
// drive's puller brings the change feed's pointing of each entry at the
// other's node in. The cloud's answer to the puller's lookup of b.txt's
// entry is held, and both names are looked up meanwhile: each file must
// answer under one of them. The old puller pointed a.txt at b.txt's file
// first (dropping a.txt's file's last link) before that lookup, so a.txt's
// file had no name in between.
func TestFeedExchangeNeverMissing(t *testing.T) {
	for _, tc := range []struct {
		name            string
		crossDir, isDir bool // isDir: a.txt and b.txt are directories holding f
	}{{"InOneDirectory", false, false}, {"AcrossDirectories", true, false}, {"DirectoriesAcrossDirectories", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := startCloud(t, t.TempDir(), 0)
			w := coreDrive(t, c)
			dir := uint64(api.RootID)
			if tc.crossDir {
				dir = coreMkdir(t, w, api.RootID, "d").id
			}
			if tc.isDir {
				coreFile(t, w, coreMkdir(t, w, api.RootID, "a.txt").id, "f", "was a\n")
				coreFile(t, w, coreMkdir(t, w, dir, "b.txt").id, "f", "was b\n")
			} else {
				coreFile(t, w, api.RootID, "a.txt", "was a\n")
				coreFile(t, w, dir, "b.txt", "was b\n")
			}
			must(t, w.Flush(ctx))

			r, p := coreDriveBehind(t, c)
			a, ea := r.lookupForTest(api.RootID, "a.txt")
			b, eb := r.lookupForTest(dir, "b.txt")
			if ea != 0 || eb != 0 {
				t.Fatalf("lookups before the exchange: a.txt %v, b.txt %v", ea, eb)
			}

			h := holdFirstLookup(t, p, c, dir, "b.txt")

			if e := w.rename(api.RootID, "a.txt", dir, "b.txt", renameExchange); e != 0 {
				t.Fatalf("exchange on the other device: %v", e)
			}
			must(t, w.Flush(ctx))

			h.wait(t, ctx)
			sa, ea := r.lookupForTest(api.RootID, "a.txt")
			sb, eb := r.lookupForTest(dir, "b.txt")
			if ea != 0 || eb != 0 {
				t.Fatalf("while the puller applies the exchange: a.txt %v, b.txt %v", ea, eb)
			}
			for _, want := range []*nodeState{a, b} {
				if sa.id != want.id && sb.id != want.id {
					t.Fatalf("while the puller applies the exchange, node %d has no name: a.txt is node %d, b.txt node %d", want.id, sa.id, sb.id)
				}
			}
			h.release()

			waitFor(t, 10*time.Second, func() bool {
				sa, ea := r.lookupForTest(api.RootID, "a.txt")
				sb, eb := r.lookupForTest(dir, "b.txt")
				return ea == 0 && eb == 0 && sa.id == b.id && sb.id == a.id
			})
			if tc.isDir {
				if ga, gb := coreRead(t, r, b.id, "f"), coreRead(t, r, a.id, "f"); ga != "was b\n" || gb != "was a\n" {
					t.Fatalf("after the exchange: a.txt/f reads %q, b.txt/f %q", ga, gb)
				}
				sa, _ := r.lookupForTest(api.RootID, "a.txt")
				sb, _ := r.lookupForTest(dir, "b.txt")
				if sa.parent != api.RootID || sb.parent != dir {
					t.Fatalf("after the exchange: a.txt's parent is %d, b.txt's %d, want %d and %d", sa.parent, sb.parent, api.RootID, dir)
				}
				return
			}
			if ga, gb := coreRead(t, r, api.RootID, "a.txt"), coreRead(t, r, dir, "b.txt"); ga != "was b\n" || gb != "was a\n" {
				t.Fatalf("after the exchange: a.txt reads %q, b.txt %q", ga, gb)
			}
			for _, name := range []string{"a.txt", "b.txt"} {
				parent := uint64(api.RootID)
				if name == "b.txt" {
					parent = dir
				}
				if st, _ := r.lookupForTest(parent, name); st.nlink != 1 {
					t.Fatalf("%s has %d links, want 1", name, st.nlink)
				}
			}
		})
	}
}

// TestFeedMoveThenRecreateNeverMissing: another device moves a.txt to
// b.txt (in the same directory or another) and creates a new a.txt, as an
// editor saves keeping a backup; this drive's puller gets both in one
// batch of the change feed, where the deletion of a.txt's old entry is
// folded into its new one. The cloud's answer to the puller's lookup of
// b.txt's entry is held, and both names are looked up meanwhile: the moved
// file must answer under one of them, and a.txt must never answer ENOENT.
// The old puller pointed a.txt at the new file first, dropping the moved
// file's last link, so it had no name till b.txt's entry came in.
func TestFeedMoveThenRecreateNeverMissing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		crossDir bool
	}{{"InOneDirectory", false}, {"AcrossDirectories", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := startCloud(t, t.TempDir(), 0)
			w := coreDrive(t, c)
			dir := uint64(api.RootID)
			if tc.crossDir {
				dir = coreMkdir(t, w, api.RootID, "d").id
			}
			coreFile(t, w, api.RootID, "a.txt", "backup\n")
			must(t, w.Flush(ctx))

			r, p := coreDriveBehind(t, c)
			a, e := r.lookupForTest(api.RootID, "a.txt")
			if e != 0 {
				t.Fatalf("lookup a.txt before the move: %v", e)
			}

			// The feed is held till the other device has done both, so
			// they come in one batch.
			feed := make(chan struct{})
			var polls atomic.Int32
			p.On("GET", "/v1/changes", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
				polls.Add(1)
				select {
				case <-feed:
				case <-req.Context().Done():
					return nil
				}
				return next(req)
			})
			openFeed := sync.OnceFunc(func() { close(feed) })
			t.Cleanup(openFeed)
			waitFor(t, 5*time.Second, func() bool { return polls.Load() > 0 })

			h := holdFirstLookup(t, p, c, dir, "b.txt")

			if e := w.rename(api.RootID, "a.txt", dir, "b.txt", 0); e != 0 {
				t.Fatalf("move on the other device: %v", e)
			}
			coreFile(t, w, api.RootID, "a.txt", "new\n")
			must(t, w.Flush(ctx))
			openFeed()

			h.wait(t, ctx)
			sa, ea := r.lookupForTest(api.RootID, "a.txt")
			sb, eb := r.lookupForTest(dir, "b.txt")
			switch {
			case ea != 0:
				t.Fatalf("while the puller applies the move, a.txt answers %v", ea)
			case sa.id == a.id, eb == 0 && sb.id == a.id:
			default:
				t.Fatalf("while the puller applies the move, the moved file has no name: a.txt is node %d, b.txt %v", sa.id, eb)
			}
			h.release()

			waitFor(t, 10*time.Second, func() bool {
				sa, ea := r.lookupForTest(api.RootID, "a.txt")
				sb, eb := r.lookupForTest(dir, "b.txt")
				return ea == 0 && eb == 0 && sa.id != a.id && sb.id == a.id
			})
			if ga, gb := coreRead(t, r, api.RootID, "a.txt"), coreRead(t, r, dir, "b.txt"); ga != "new\n" || gb != "backup\n" {
				t.Fatalf("after the move: a.txt reads %q, b.txt %q", ga, gb)
			}
			if sb, _ := r.lookupForTest(dir, "b.txt"); sb.nlink != 1 {
				t.Fatalf("b.txt has %d links, want 1", sb.nlink)
			}
		})
	}
}

// heldLookup holds the puller's first lookup of one entry at a hostile gate;
// any later one (a refresh) goes through.
type heldLookup struct {
	gate    *hostile.Gate
	arrived atomic.Bool // the lookup reached the gate (release lets it go)
	release func()
}

// holdFirstLookup holds the first GET of (dir, name)'s entry on p until
// release (also at cleanup, so a failure does not leave the puller held).
func holdFirstLookup(t *testing.T, p *hostile.Proxy, c *cloud, dir uint64, name string) *heldLookup {
	t.Helper()
	mac := meta.NewSealer(c.sess.Subkeys()).NameMAC(dir, []byte(name))
	h := &heldLookup{gate: hostile.NewGate()}
	held := h.gate.Rule()
	var n atomic.Int32
	p.On("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", dir, mac), func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if n.Add(1) == 1 {
			return held(req, next)
		}
		return next(req)
	})
	h.release = sync.OnceFunc(func() {
		if h.arrived.Load() {
			h.gate.Release(0)
		}
	})
	t.Cleanup(h.release)
	return h
}

// wait returns once the puller is at the held lookup.
func (h *heldLookup) wait(t *testing.T, ctx context.Context) {
	t.Helper()
	must(t, h.gate.Wait(ctx, 1))
	h.arrived.Store(true)
}
