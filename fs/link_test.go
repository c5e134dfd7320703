package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kumo/internal/control"
	"kumo/internal/hostile"
	"kumo/internal/link"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
)

// linkTree makes dir/{big,small} on d (big: two chunks) and uploads them;
// it returns their contents by name.
func linkTree(t *testing.T, d *Drive) map[string][]byte {
	t.Helper()
	dir, e := d.create(api.RootID, newNode{name: "dir", mode: syscall.S_IFDIR | 0o755})
	if e != 0 {
		t.Fatalf("mkdir: %v", e)
	}
	files := map[string][]byte{"big": make([]byte, 4<<20+100<<10), "small": make([]byte, 3000)}
	for name, b := range files {
		rand.Read(b)
		coreFile(t, d, dir.id, name, string(b))
	}
	flushWithin(t, d, 30*time.Second)
	return files
}

// lastCommand is what .kumo shows as the last command.
func lastCommand(d *Drive) control.CommandResult {
	d.ctl.mu.Lock()
	defer d.ctl.mu.Unlock()
	if d.ctl.last == nil {
		return control.CommandResult{}
	}
	return *d.ctl.last
}

// waitLink waits for the outcome of command line (a link) in .kumo and
// returns its URL.
func waitLink(t *testing.T, d *Drive, line string, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		l := lastCommand(d)
		if l.Command == line && !l.Running {
			if !l.OK {
				t.Fatalf("link failed: %s", l.Message)
			}
			i := strings.Index(l.Message, "http")
			if i < 0 {
				t.Fatalf("no URL in %q", l.Message)
			}
			return strings.Fields(l.Message[i:])[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("link not made within %v: %+v", limit, l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getLinkTree downloads a folder link with no account and checks it holds
// exactly want.
func getLinkTree(t *testing.T, u string, want map[string][]byte) {
	t.Helper()
	base, _, _, err := link.ParseURL(u)
	must(t, err)
	cl, err := client.New(client.Options{BaseURL: base})
	must(t, err)
	dest := t.TempDir()
	must(t, pathops.GetLink(context.Background(), cl, u, dest, pathops.GetLinkOptions{}))
	ents, err := os.ReadDir(filepath.Join(dest, "dir"))
	must(t, err)
	if len(ents) != len(want) {
		t.Fatalf("the link holds %d files, want %d", len(ents), len(want))
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(dest, "dir", name))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s through the link: %d bytes, want %d (%v)", name, len(got), len(b), err)
		}
	}
}

// `link PATH` written to .kumo returns at once and makes the link in the
// background, .kumo saying how far it is, then the URL. Before, the write
// blocked while every chunk was read from the cloud and hashed (up to the
// command timeout, then failed).
func TestCoreLinkInBackground(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	want := linkTree(t, coreDrive(t, c)) // another device wrote the files
	p := hostile.Start(t, c.url)
	var hold atomic.Bool
	var held atomic.Int32
	gate := make(chan struct{})
	var opened atomic.Bool
	release := func() {
		if !opened.Swap(true) {
			close(gate)
		}
	}
	t.Cleanup(release)
	p.On("GET", "/v1/chunks/*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if hold.Load() {
			held.Add(1)
			select {
			case <-gate:
			case <-req.Context().Done():
				return nil
			}
		}
		return next(req)
	})
	d := coreDriveVia(t, c, p.URL) // this drive never read them: nothing cached
	hold.Store(true)

	done := make(chan syscall.Errno, 1)
	start := time.Now()
	go func() { done <- d.runCommand("link /dir\n") }()
	select {
	case e := <-done:
		if e != 0 {
			t.Fatalf("link: %v: %+v", e, lastCommand(d))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the write of 'link /dir' did not return within 10 s while the link's chunk reads were held")
	}
	t.Logf("the write returned in %v", time.Since(start).Round(time.Millisecond))
	for deadline := time.Now().Add(20 * time.Second); held.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no chunk read reached the cloud: %+v", lastCommand(d))
		}
	}
	if l := lastCommand(d); !l.Running || !strings.Contains(l.Message, "making the link") {
		t.Fatalf(".kumo while the link is made: %+v", l)
	}
	// One at a time: a second link is refused with EBUSY, and .kumo keeps
	// showing the first one's progress (the refusal used to take its place
	// as the last command).
	before := lastCommand(d)
	if e := d.runCommand("link /dir/small"); e != syscall.EBUSY {
		t.Fatalf("a second link while one is made: %v, want EBUSY", e)
	}
	if l := lastCommand(d); l.Command != "link /dir" || !l.Running || !strings.Contains(l.Message, "making the link") {
		t.Fatalf("last command after the refused second link: %+v, want the running link's %+v", l, before)
	}
	if st := d.ControlStatus(context.Background(), false); len(st.Links) != 1 || !st.Links[0].Running || st.Links[0].Path != "/dir" {
		t.Fatalf("links after the refused second link: %+v, want only the running /dir", st.Links)
	}
	release()
	u := waitLink(t, d, "link /dir", 30*time.Second)
	getLinkTree(t, u, want)

	// The drive is free for the next link once this one is done.
	if e := d.runCommand("link /dir/small"); e != 0 {
		t.Fatalf("a link after the first was done: %v: %+v", e, lastCommand(d))
	}
	waitLink(t, d, "link /dir/small", 30*time.Second)
}

// A link of files the drive wrote (so holds in its chunk cache, sealed as
// the cloud stores them) reads no chunk from the cloud; a cached copy that
// does not open under its key is not used: that chunk is read from the
// cloud, and the link is still exact. Before, every chunk was downloaded.
func TestCoreLinkFromCache(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	p := hostile.Start(t, c.url)
	cacheDir := t.TempDir()
	d := coreDriveAt(t, c, cacheDir, func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: p.URL, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
	}, nil)
	want := linkTree(t, d)

	before := p.Count("GET", "/v1/chunks/*")
	must(t, errnoErr(d.runCommand("link /dir")))
	u := waitLink(t, d, "link /dir", 30*time.Second)
	if n := p.Count("GET", "/v1/chunks/*") - before; n != 0 {
		t.Fatalf("a link of cached chunks read %d chunks from the cloud, want 0", n)
	}
	getLinkTree(t, u, want)

	// Spoil one cached chunk (well-formed cache slots, wrong bytes): the
	// link must not trust it.
	ents, err := os.ReadDir(filepath.Join(cacheDir, "chunks"))
	must(t, err)
	var ids []string
	for _, e := range ents {
		if api.ValidHexID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	slices.Sort(ids)
	if len(ids) != 3 {
		t.Fatalf("%d chunks cached, want 3: %v", len(ids), ids)
	}
	var bad [][]byte
	for k := 0; ; k++ {
		s, ok := d.store.GetSegment(ids[0], k)
		if !ok {
			break
		}
		rand.Read(s)
		bad = append(bad, s)
	}
	must(t, d.store.PutSegments(ids[0], 0, bad))
	before = p.Count("GET", "/v1/chunks/*")
	must(t, errnoErr(d.runCommand("link /dir")))
	u = waitLink(t, d, "link /dir", 30*time.Second)
	if got := p.Exchanges("GET", "/v1/chunks/*")[before:]; len(got) != 1 || !strings.HasSuffix(got[0].Request.Path, ids[0]) {
		t.Fatalf("with chunk %s spoiled in the cache the link read %d chunks from the cloud, want that one", ids[0], len(got))
	}
	getLinkTree(t, u, want)
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Through a real mount: `echo 'link /dir' > MNT/.kumo` returns at once,
// .kumo.json shows the link running, then its URL; the files the drive just
// wrote are linked from its chunk cache (no chunk download) and the link is
// byte exact.
func TestMountLinkCommand(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	p := hostile.Start(t, c.url)
	gate := make(chan struct{})
	var opened atomic.Bool
	release := func() {
		if !opened.Swap(true) {
			close(gate)
		}
	}
	t.Cleanup(release)
	// Hold the link's first request for the tree (its walk starts at the
	// root) once the files are written, so the test sees the command running.
	var hold atomic.Bool
	p.On("GET", "/v1/nodes/1", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if hold.Load() {
			select {
			case <-gate:
			case <-req.Context().Done():
				return nil
			}
		}
		return next(req)
	})
	m := c.mount(t, t.TempDir(), func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: p.URL, Token: c.sess.Token})
		must(t, err)
		o.Client = cl
	})
	must(t, os.Mkdir(m.p("dir"), 0o755))
	want := map[string][]byte{"big": make([]byte, 5<<20), "small": []byte("a small file\n")}
	rand.Read(want["big"])
	for name, b := range want {
		must(t, os.WriteFile(m.p("dir/"+name), b, 0o644))
	}
	m.flush()
	before := p.Count("GET", "/v1/chunks/*")
	hold.Store(true)
	start := time.Now()
	wrote := make(chan error, 1)
	go func() { wrote <- m.command("link /dir") }()
	select {
	case err := <-wrote:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("echo 'link /dir' > .kumo did not return within 10 s while the link's reads were held")
	}
	t.Logf("the write returned in %v", time.Since(start).Round(time.Millisecond))
	if l := m.report().LastCommand; l == nil || l.Command != "link /dir" || !l.Running || !strings.Contains(l.Message, "making the link") {
		t.Fatalf(".kumo.json while the link is made: %+v", l)
	}
	release()
	u := waitLink(t, m.d, "link /dir", 30*time.Second)
	if b, err := os.ReadFile(m.p(control.FileText)); err != nil || !strings.Contains(string(b), u) {
		t.Fatalf(".kumo does not show the URL: %v\n%s", err, b)
	}
	if n := p.Count("GET", "/v1/chunks/*") - before; n != 0 {
		t.Fatalf("linking files the drive wrote downloaded %d chunks, want 0", n)
	}
	getLinkTree(t, u, want)
}

// syncBuffer is a log destination tests read while the drive writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The links made since the mount stay in .kumo and .kumo.json, newest
// first, after later commands (sync, a failed link); the URL never reaches
// the log. Before, only the last command's line showed the URL, and the
// next command replaced it: the URL was lost.
func TestCoreLinkKeptInReport(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	var logs syncBuffer
	d := coreDriveAt(t, c, t.TempDir(), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}, nil)
	linkTree(t, d)
	must(t, errnoErr(d.runCommand("link /dir")))
	u1 := waitLink(t, d, "link /dir", 30*time.Second)
	must(t, errnoErr(d.runCommand("link /dir/small")))
	u2 := waitLink(t, d, "link /dir/small", 30*time.Second)
	if d.runCommand("link /nothing-here") == 0 {
		waitFailed := time.Now().Add(30 * time.Second)
		for l := lastCommand(d); l.Running || l.Command != "link /nothing-here"; l = lastCommand(d) {
			if time.Now().After(waitFailed) {
				t.Fatalf("the link of a missing path did not end: %+v", l)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	must(t, errnoErr(d.runCommand("sync")))
	if l := lastCommand(d); l.Command != "sync" {
		t.Fatalf("last command after sync: %+v", l)
	}

	text := string(control.Text(d.ControlStatus(context.Background(), false)))
	i1, i2 := strings.Index(text, u1), strings.Index(text, u2)
	if i1 < 0 || i2 < 0 {
		t.Fatalf(".kumo after a later sync does not show both URLs (%s, %s):\n%s", u1, u2, text)
	}
	if i2 > i1 {
		t.Fatalf(".kumo lists the older link first:\n%s", text)
	}
	if !strings.Contains(text, "/nothing-here  FAILED") {
		t.Fatalf(".kumo does not show the failed link:\n%s", text)
	}
	var js struct {
		Links []struct {
			Path, URL, Error string
			Running          bool
		}
	}
	must(t, json.Unmarshal(control.JSON(d.ControlStatus(context.Background(), false)), &js))
	if len(js.Links) != 3 || js.Links[0].Path != "/nothing-here" || js.Links[0].Error == "" ||
		js.Links[1].Path != "/dir/small" || js.Links[1].URL != u2 || js.Links[2].Path != "/dir" || js.Links[2].URL != u1 {
		t.Fatalf(".kumo.json links: %+v", js.Links)
	}
	for _, u := range []string{u1, u2} {
		_, secret, _ := strings.Cut(u, "#")
		if secret == "" || strings.Contains(logs.String(), secret) {
			t.Fatalf("the URL's secret %q is empty or in the log", secret)
		}
	}
}

// The report keeps the last maxLinks links, newest first, and shows the
// one being made with its progress before them.
func TestLinkListBounded(t *testing.T) {
	var c controlState
	for i := range maxLinks + 3 {
		c.linkRunning(fmt.Sprintf("link /f%d", i), fmt.Sprintf("/f%d", i), "making the link: 1 entries listed")
		c.linkDone(fmt.Sprintf("/f%d", i), fmt.Sprintf("https://x/s/%d#k", i), "", nil)
	}
	c.linkRunning("link /now", "/now", "making the link: 3 of 9 chunks read")
	if len(c.links) != maxLinks || c.links[0].Path != fmt.Sprintf("/f%d", maxLinks+2) || c.links[maxLinks-1].Path != "/f3" {
		t.Fatalf("links kept: %+v", c.links)
	}
	if c.linkNow == nil || !c.linkNow.Running || c.linkNow.Path != "/now" || !strings.Contains(c.linkNow.Message, "3 of 9") {
		t.Fatalf("link being made: %+v", c.linkNow)
	}
}

// A link or a restore asked through .kumo while the cloud is unreachable
// (here with an upload pending, which both wait for) fails once the cloud
// has been unreachable for the command offline limit, .kumo saying so and
// what to do. Before, both waited for the cloud for ever.
func TestCoreBackgroundCommandsOffline(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	px := newOfflineProxy(t, c.url)
	d := coreDriveAt(t, c, t.TempDir(), func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: px.url, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
		o.QuietTime = time.Hour // the file written offline stays pending
		o.CommandOffline = time.Second
	}, nil)
	linkTree(t, d)
	px.down.Store(true)
	dir, e := d.lookupForTest(api.RootID, "dir")
	if e != 0 {
		t.Fatal(e)
	}
	coreFile(t, d, dir.id, "later", "written offline")

	failsOffline := func(line string) {
		t.Helper()
		start := time.Now()
		if e := d.runCommand(line); e != 0 {
			t.Fatalf("%s: %v: %+v", line, e, lastCommand(d))
		}
		for {
			l := lastCommand(d)
			if l.Command == line && !l.Running {
				if l.OK || !strings.HasPrefix(l.Message, "cloud unreachable: ") || !strings.HasSuffix(l.Message, "try again when online") {
					t.Fatalf("%s offline: %+v, want a failure saying the cloud is unreachable", line, l)
				}
				t.Logf("%s failed in %v: %s", line, time.Since(start).Round(time.Millisecond), l.Message)
				return
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%s still not done 20 s into an offline cloud (limit 1 s): %+v", line, l)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	failsOffline("link /dir")
	if st := d.ControlStatus(context.Background(), false); len(st.Links) != 1 || st.Links[0].Running || !strings.HasPrefix(st.Links[0].Error, "cloud unreachable: ") {
		t.Fatalf("links after the offline link: %+v", st.Links)
	}
	failsOffline("restore /dir " + time.Now().UTC().Format(time.RFC3339))
	// Both are free again for the next try. Each records its result before
	// its deferred flag reset runs: wait for the commands to have returned.
	d.ctl.bg.Wait()
	if d.linking.Load() || d.restoring.Load() {
		t.Fatalf("linking %v, restoring %v after both failed", d.linking.Load(), d.restoring.Load())
	}
}

// slowFailLog delays the log record of a failed command, so that a link
// ending at shutdown is still at work for a while after its context ended.
type slowFailLog struct{ slog.Handler }

func (h slowFailLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "control file: command failed" {
		time.Sleep(2 * time.Second)
	}
	return h.Handler.Handle(ctx, r)
}

func (h slowFailLog) WithAttrs(as []slog.Attr) slog.Handler {
	return slowFailLog{h.Handler.WithAttrs(as)}
}
func (h slowFailLog) WithGroup(g string) slog.Handler { return slowFailLog{h.Handler.WithGroup(g)} }

// Shutting the drive down while a link is made (its chunk reads held by
// the cloud) ends the link at once and waits for it to finish (it must
// not outlive the store it reads), and returns promptly. Before, shutdown
// did not wait: the link was still at work after it returned.
func TestCoreShutdownDuringLink(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	linkTree(t, coreDrive(t, c)) // another device wrote the files
	p := hostile.Start(t, c.url)
	var held atomic.Int32
	p.On("GET", "/v1/chunks/*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		held.Add(1)
		<-req.Context().Done() // held until the drive gives up
		return nil
	})
	d := coreDriveAt(t, c, t.TempDir(), func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: p.URL, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
		o.Logger = slog.New(slowFailLog{testLogger(t).Handler()})
	}, nil)
	must(t, errnoErr(d.runCommand("link /dir")))
	for deadline := time.Now().Add(20 * time.Second); held.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no chunk read reached the cloud: %+v", lastCommand(d))
		}
	}
	start := time.Now()
	d.shutdown()
	took := time.Since(start)
	if took > backgroundStopWait-2*time.Second {
		t.Fatalf("shutdown during a link took %v", took)
	}
	if d.linking.Load() {
		t.Fatalf("the link was still at work when shutdown returned (after %v)", took)
	}
	d.ctl.mu.Lock()
	now, links := d.ctl.linkNow, d.ctl.links
	d.ctl.mu.Unlock()
	if now != nil || len(links) != 1 || links[0].Error == "" {
		t.Fatalf("after shutdown: link being made %+v, links %+v: want the link ended with an error", now, links)
	}
	t.Logf("shutdown during a link took %v", took.Round(time.Millisecond))
}

// A background command that does not stop within shutdown's wait keeps
// the store open: it may still read and write it. Before, shutdown closed
// the store under it.
func TestCoreShutdownLeavesStoreToStuckCommand(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	if !d.owns {
		t.Fatal("the test drive does not own its store: shutdown would not close it")
	}
	d.ctl.stopWait = 200 * time.Millisecond
	release := make(chan struct{})
	got := make(chan error, 1)
	d.background(func(ctx context.Context) {
		<-ctx.Done()
		<-release // still at work after shutdown gave up waiting
		_, err := d.store.GetNode(api.RootID)
		if err == nil {
			err = d.store.Sync()
		}
		got <- err
	})
	d.shutdown()
	close(release)
	if err := <-got; err != nil {
		t.Fatalf("the command still running after shutdown found the store unusable: %v", err)
	}
	d.ctl.bg.Wait()
	must(t, d.store.Close()) // what shutdown left open
}

// A command offline limit below 4 ns (Options.CommandOffline) still gives
// the watcher of a background command a ticker period. Before, the period
// was limit/4, zero, and time.NewTicker panicked.
func TestCoreTinyCommandOffline(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDriveAt(t, c, t.TempDir(), func(o *Options) { o.CommandOffline = time.Nanosecond }, nil)
	d.background(func(ctx context.Context) {
		time.Sleep(50 * time.Millisecond) // the watcher starts its ticker meanwhile
	})
	d.ctl.bg.Wait()
}
