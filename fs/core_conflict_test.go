package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/remote/api"
	"kumo/remote/client"
)

// coreRewrite replaces name's content (open with O_TRUNC, write, close).
func coreRewrite(t *testing.T, d *Drive, name, content string) {
	t.Helper()
	st := coreFileState(t, d, name)
	if e := d.truncate(context.Background(), st, 0); e != 0 {
		t.Fatal(e)
	}
	coreWriteAt(t, d, st, []byte(content), 0)
	if e := d.makeDurable(st, true, false); e != 0 {
		t.Fatal(e)
	}
}

// editBothWhileDown has a and b edit "edited" while down cuts a off from
// the cloud; b's edit reaches the cloud first, then a is back online.
func editBothWhileDown(t *testing.T, a, b *Drive, down *atomic.Bool) {
	t.Helper()
	down.Store(true)
	coreRewrite(t, a, "edited", "a's edit")
	coreRewrite(t, b, "edited", "b's edit")
	coreFlush(t, b)
	down.Store(false)
}

// A device offline (the cloud unreachable: every request fails) reads what
// it has, and its writes queue, also across a restart while still offline.
// Meanwhile another device creates the same name and edits the same file.
// Back online, nothing is lost: theirs keeps the names, ours are conflict
// copies, on both devices.
func TestCoreConflictAndOffline(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	px := newOfflineProxy(t, c.url)
	b := coreDrive(t, c)
	coreFile(t, b, api.RootID, "edited", "base")
	cachedData, uncachedData := randBytes(300<<10), randBytes(300<<10)
	coreWriteFile(t, b, "cached", cachedData)
	coreWriteFile(t, b, "uncached", uncachedData)
	coreFlush(t, b)
	viaProxy := func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: px.url, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
	}
	cacheA := t.TempDir()
	a := coreDriveAt(t, c, cacheA, viaProxy, nil)
	if got := coreRead(t, a, api.RootID, "edited"); got != "base" {
		t.Fatalf("a reads %q", got)
	}
	coreCheckFile(t, a, coreFileState(t, a, "cached"), cachedData) // now in a's chunk cache
	px.down.Store(true)
	// Offline: what a read is served from its chunk cache; what it never
	// read is EIO at once (the cloud answers 503), not wrong bytes or a hang.
	coreCheckFile(t, a, coreFileState(t, a, "cached"), cachedData)
	if _, err := coreReadFile(a, coreFileState(t, a, "uncached")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("offline read of data never fetched: %v, want EIO", err)
	}
	coreFile(t, a, api.RootID, "same", "from a")
	coreRewrite(t, a, "edited", "a's edit")
	if got := coreRead(t, a, api.RootID, "edited"); got != "a's edit" {
		t.Fatalf("a reads its offline edit as %q", got)
	}
	waitFor(t, 5*time.Second, func() bool { return !a.Status().Online })

	// A restart while offline: the queue is resumed from the local store.
	a.shutdown()
	a = coreDriveAt(t, c, cacheA, viaProxy, nil)
	if got := coreRead(t, a, api.RootID, "edited"); got != "a's edit" {
		t.Fatalf("after a restart offline a reads %q", got)
	}
	coreCheckFile(t, a, coreFileState(t, a, "cached"), cachedData) // from the chunk cache on disk
	if s := a.Status(); s.Queue.Files+s.Queue.Ops == 0 {
		t.Fatalf("nothing queued after a restart offline: %+v", s.Queue)
	}

	coreFile(t, b, api.RootID, "same", "from b")
	coreRewrite(t, b, "edited", "b's edit")
	coreFlush(t, b)
	px.down.Store(false)
	coreFlush(t, a)
	var names []string
	waitFor(t, 10*time.Second, func() bool {
		names = coreNames(t, a, api.RootID)
		return len(names) == 6
	})
	var sameCopy, editCopy string
	for _, n := range names {
		if strings.HasPrefix(n, "same (conflict ") {
			sameCopy = n
		}
		if strings.HasPrefix(n, "edited (conflict ") {
			editCopy = n
		}
	}
	if sameCopy == "" || editCopy == "" {
		t.Fatalf("conflict copies missing: %q", names)
	}
	want := map[string]string{"same": "from b", "edited": "b's edit", sameCopy: "from a", editCopy: "a's edit"}
	waitFor(t, 10*time.Second, func() bool { return coreRead(t, a, api.RootID, "edited") == "b's edit" })
	for _, d := range []*Drive{a, b} {
		waitFor(t, 10*time.Second, func() bool { return len(coreNames(t, d, api.RootID)) == 6 })
		for name, content := range want {
			if got := coreRead(t, d, api.RootID, name); got != content {
				t.Fatalf("%s reads %q, want %q", name, got, content)
			}
		}
	}
}

// A conflict copy is made only once its local record is saved: when that
// fails (here the local store is gone just as the pusher resolves the
// conflict), the copy is not created in the cloud, where it would exist
// without this device knowing it (before, the failed save was ignored and
// the copy created anyway). Our update stays queued for a later try.
func TestCoreConflictCopyNeedsLocalRecord(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	b := coreDrive(t, c)
	coreFile(t, b, api.RootID, "edited", "base")
	coreFlush(t, b)
	id := coreFileState(t, b, "edited").id

	target, err := url.Parse(c.url)
	must(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	var down, fired atomic.Bool
	var a atomic.Pointer[Drive]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "offline", http.StatusServiceUnavailable)
			return
		}
		// The pusher asks for the cloud's version of the node it conflicts on.
		if r.Method == http.MethodGet && r.URL.Path == fmt.Sprintf("/v1/nodes/%d", id) && !fired.Swap(true) {
			a.Load().store.Close()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	d := coreDriveVia(t, c, srv.URL)
	a.Store(d)
	if got := coreRead(t, d, api.RootID, "edited"); got != "base" {
		t.Fatalf("a reads %q", got)
	}
	down.Store(true)
	coreRewrite(t, d, "edited", "a's edit")
	coreRewrite(t, b, "edited", "b's edit")
	coreFlush(t, b)
	down.Store(false)
	kick(d.uploadKick)
	kick(d.pushKick)
	waitFor(t, 20*time.Second, fired.Load)
	time.Sleep(time.Second) // the pusher's resolution runs on
	es, err := c.client(t).List(context.Background(), api.RootID)
	must(t, err)
	if len(es) != 1 {
		t.Fatalf("the cloud's root has %d entries, want 1: a conflict copy was created without its local record", len(es))
	}
}

// A conflict copy (a's edit of a file b changed too) whose create reaches
// the cloud but whose answer is lost, and so is the answer to each of its
// in-place tries, is made again at the pusher's next round: that must be
// the same node, found as ours and taken as done, not a second copy.
// Before, each round gave the copy a new node id: two copies of a's edit.
func TestCoreConflictCopyStableID(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	b := coreDrive(t, c)
	coreFile(t, b, api.RootID, "edited", "base")
	coreFlush(t, b)
	p, a, down := proxiedDrive(t, c)
	if got := coreRead(t, a, api.RootID, "edited"); got != "base" {
		t.Fatalf("a reads %q", got)
	}
	const lostAnswers = 3 // the first try and recreateAsCopy's two more
	var creates atomic.Int32
	ids := map[uint64]bool{}
	var idsMu sync.Mutex
	p.On(http.MethodPost, "/v1/nodes", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		var cr api.CreateRequest
		if json.Unmarshal(req.Body, &cr) == nil {
			idsMu.Lock()
			ids[cr.ID] = true
			idsMu.Unlock()
		}
		resp := next(req)
		if creates.Add(1) <= lostAnswers {
			return nil // done (or refused) in the cloud, the answer cut
		}
		return resp
	})
	editBothWhileDown(t, a, b, down)
	flushWithin(t, a, 30*time.Second)
	if n := creates.Load(); n <= lostAnswers {
		t.Fatalf("%d creates of the copy, want more than %d: the pusher's next round did not try again", n, lostAnswers)
	}
	names := cloudRootNames(t, c)
	var copies []string
	for n := range names {
		if strings.HasPrefix(n, "edited (conflict ") {
			copies = append(copies, n)
		}
	}
	idsMu.Lock()
	nIDs := len(ids)
	idsMu.Unlock()
	if len(copies) != 1 || len(names) != 2 || nIDs != 1 {
		t.Fatalf("cloud root %v, the copy's creates named %d node ids: want edited and one conflict copy, one id", names, nIDs)
	}
	if got := coreRead(t, coreDrive(t, c), api.RootID, copies[0]); got != "a's edit" {
		t.Fatalf("the copy %s reads %q", copies[0], got)
	}
	if n := a.ctl.refusedN; n != 0 {
		t.Fatalf("%d changes reported refused", n)
	}
}
