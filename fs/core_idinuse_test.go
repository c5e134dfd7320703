package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kumo/cache"
	"kumo/internal/hostile"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
)

// idInUseSetup starts a cloud, a drive b on it and a drive a through a
// hostile proxy (its client does not retry, so a lost answer reaches the
// pusher). a creates "same" while the proxy answers 503 to everything, b
// creates "same" too and pushes it; then the proxy forwards again (with the
// rules the test adds) and a's create is refused: the name is b's.
func idInUseSetup(t *testing.T) (c *cloud, p *hostile.Proxy, a, b *Drive, aFile uint64) {
	t.Helper()
	c = startCloud(t, t.TempDir(), 0)
	b = coreDrive(t, c)
	p, a, down := proxiedDrive(t, c)
	down.Store(true)
	aFile = coreFile(t, a, api.RootID, "same", "from a").id
	coreFile(t, b, api.RootID, "same", "from b")
	coreFlush(t, b)
	down.Store(false)
	return c, p, a, b, aFile
}

// flushWithin flushes d, failing the test (not hanging it) when the queue
// does not drain within limit.
func flushWithin(t *testing.T, d *Drive, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatalf("queue not drained within %v (%d ops left): %v; .kumo:\n%s",
			limit, d.Status().Queue.Ops, err, coreControlText(t, d))
	}
}

// cloudRootNames lists the cloud's root as the account's keys open it.
func cloudRootNames(t *testing.T, c *cloud) map[string]uint64 {
	t.Helper()
	es, err := c.client(t).List(context.Background(), api.RootID)
	must(t, err)
	sealer := meta.NewSealer(c.sess.Subkeys())
	out := map[string]uint64{}
	for _, e := range es {
		name, err := sealer.OpenName(api.RootID, e.Node.ID, meta.KindOf(e.Node.Type == api.TypeDir), e.NameMAC, e.Name)
		must(t, err)
		out[string(name)] = e.Node.ID
	}
	return out
}

// The CI failure: a's create is refused (the name is b's), so the pusher
// creates a's file under a conflict name; that create reaches the cloud but
// its answer is lost. Every later try was refused as "node id in use" (the
// node exists, under the conflict name of the first try), which the pusher
// took for a failure to retry: it retried every 30 s for ever and the queue
// never drained. Now it sees that the cloud holds its own node (the record
// opens under its keys, bound to the id), takes the create as done and
// moves on: one conflict copy, no loop.
func TestCoreConflictCopyAnswerLost(t *testing.T) {
	c, p, a, _, aFile := idInUseSetup(t)
	var lost atomic.Bool
	p.On(http.MethodPost, "/v1/nodes", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		resp := next(req)
		if !lost.Swap(true) {
			return nil // done in the cloud, the answer cut
		}
		return resp
	})
	kick(a.pushKick)
	flushWithin(t, a, 20*time.Second)
	if !lost.Load() {
		t.Fatal("the pusher made no conflict copy")
	}
	names := cloudRootNames(t, c)
	var copyName string
	for n, id := range names {
		if strings.HasPrefix(n, "same (conflict ") {
			if copyName != "" || id != aFile {
				t.Fatalf("cloud root %v: want one conflict copy, a's node %d", names, aFile)
			}
			copyName = n
		}
	}
	if len(names) != 2 || copyName == "" {
		t.Fatalf("cloud root %v: want same and one conflict copy", names)
	}
	waitFor(t, 10*time.Second, func() bool { return slices.Equal(coreNames(t, a, api.RootID), []string{"same", copyName}) })
	if got := coreRead(t, a, api.RootID, copyName); got != "from a" {
		t.Fatalf("a's conflict copy reads %q", got)
	}
	if got := coreRead(t, a, api.RootID, "same"); got != "from b" {
		t.Fatalf("a reads same as %q, want b's", got)
	}
	if n := a.ctl.refusedN; n != 0 {
		t.Fatalf("%d changes reported refused; the create went through", n)
	}
}

// idInUse is the cloud's answer to a create whose node id exists.
func idInUse() *hostile.Response {
	b, _ := json.Marshal(api.ErrorResponse{Error: api.Error{Code: api.CodeConflict, Message: "node id in use"}})
	return &hostile.Response{Status: http.StatusConflict, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}
}

// nodePathOf is the API path of node id.
func nodePathOf(id uint64) string { return fmt.Sprintf("/v1/nodes/%d", id) }

// A server that answers every create of a's conflict copy with "node id in
// use" and shows, for a's id, another node (b's: its record does not open
// as a's) must not make the pusher take the copy as done, nor keep it
// retrying for ever: the change is reported refused (in .kumo, with what
// became of it), the queue drains, and a keeps its file.
func TestCoreConflictCopyIDTakenByAnother(t *testing.T) {
	c, p, a, _, aFile := idInUseSetup(t)
	theirs := cloudRootNames(t, c)["same"]
	p.On(http.MethodPost, "/v1/nodes", refuseCreateOf(aFile))
	showAsOurs(p, aFile, theirs)
	kick(a.pushKick)
	flushWithin(t, a, 20*time.Second)
	if n := p.Count(http.MethodPost, "/v1/nodes"); n > 3 {
		t.Fatalf("%d creates of the copy sent: the pusher keeps retrying a refusal", n)
	}
	text := coreControlText(t, a)
	if !strings.Contains(text, "refused") || !strings.Contains(text, "in use") {
		t.Fatalf(".kumo does not report the refused create:\n%s", text)
	}
	a.mu.Lock()
	st := a.states[aFile]
	a.mu.Unlock()
	if st == nil {
		t.Fatal("a lost its file")
	}
	if got, err := coreReadFile(a, st); err != nil || string(got) != "from a" {
		t.Fatalf("a's file reads %q, %v", got, err)
	}
	if a.Integrity().AuthFailures == 0 {
		t.Fatal("the node shown for a's id failed authentication, and that is not counted")
	}
	// The name is b's: a shows b's file under it, and its own aside.
	if got := cloudRootNames(t, c)["same"]; got != theirs {
		t.Fatalf("the cloud's same is node %d, want b's %d", got, theirs)
	}
	if got := coreRead(t, a, api.RootID, "same"); got != "from b" {
		t.Fatalf("a reads same as %q, want b's", got)
	}
	a.mu.Lock()
	ours := st.lastName
	a.mu.Unlock()
	if !strings.HasPrefix(ours, "same (conflict ") {
		t.Fatalf("a's own file is named %q here, want a conflict name", ours)
	}
}

// refuseCreateOf answers a create (POST /v1/nodes) of node id "node id in
// use"; other creates go to the cloud.
func refuseCreateOf(id uint64) hostile.Rule {
	return func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		var cr api.CreateRequest
		if json.Unmarshal(req.Body, &cr) == nil && cr.ID == id {
			return idInUse()
		}
		return next(req)
	}
}

// A file changed here and in the cloud keeps ours as a conflict copy, a
// new node. A server that refuses the copy's create as "node id in use"
// and shows another's record for that id does not stop it: the copy is
// new, it takes another id and is created under it; nothing loops and
// nothing is reported refused.
func TestCoreConflictCopyRenumbered(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	b := coreDrive(t, c)
	coreFile(t, b, api.RootID, "edited", "base")
	coreFlush(t, b)
	edited := coreFileState(t, b, "edited").id
	p := hostile.Start(t, c.url)
	var down atomic.Bool
	var first atomic.Uint64 // the copy's first id
	p.On("", "*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if down.Load() {
			return &hostile.Response{Status: http.StatusServiceUnavailable, Header: http.Header{}, Body: []byte("offline")}
		}
		return next(req)
	})
	p.On(http.MethodPost, "/v1/nodes", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		var cr api.CreateRequest
		if json.Unmarshal(req.Body, &cr) == nil && (first.CompareAndSwap(0, cr.ID) || first.Load() == cr.ID) {
			return idInUse()
		}
		return next(req)
	})
	p.On(http.MethodGet, "/v1/nodes/*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if id := first.Load(); id != 0 && req.Path == nodePathOf(id) {
			routed := func(r *hostile.Request) *hostile.Response { return hostile.Route(nodePathOf(edited))(r, next) }
			return hostile.EditJSON(func(n *api.Node) { n.ID = id })(req, routed)
		}
		return next(req)
	})
	a := coreDriveVia(t, c, p.URL)
	if got := coreRead(t, a, api.RootID, "edited"); got != "base" {
		t.Fatalf("a reads %q", got)
	}
	editBothWhileDown(t, a, b, &down)
	flushWithin(t, a, 20*time.Second)
	if first.Load() == 0 {
		t.Fatal("no conflict copy was made")
	}
	names := cloudRootNames(t, c)
	var copyID uint64
	for n, id := range names {
		if strings.HasPrefix(n, "edited (conflict ") {
			copyID = id
		}
	}
	if len(names) != 2 || copyID == 0 || copyID == first.Load() {
		t.Fatalf("cloud root %v: want edited and a copy under an id other than %d", names, first.Load())
	}
	if n := a.ctl.refusedN; n != 0 {
		t.Fatalf("%d changes reported refused", n)
	}
	if _, err := a.store.GetNode(first.Load()); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("a local record is left under the copy's refused id: %v", err)
	}
	other := coreDrive(t, c)
	for name, want := range map[string]string{"edited": "b's edit"} {
		if got := coreRead(t, other, api.RootID, name); got != want {
			t.Fatalf("%s reads %q, want %q", name, got, want)
		}
	}
	for n := range names {
		if n != "edited" {
			if got := coreRead(t, other, api.RootID, n); got != "a's edit" {
				t.Fatalf("the copy %s reads %q", n, got)
			}
		}
	}
}

// showAsOurs makes the proxy answer a read of node id with node other,
// relabelled id: only its sealed attributes (bound to other) tell.
func showAsOurs(p *hostile.Proxy, id, other uint64) {
	p.On(http.MethodGet, nodePathOf(id), hostile.EditJSON(func(n *api.Node) { n.ID = id }))
	p.On(http.MethodGet, nodePathOf(id), hostile.Route(nodePathOf(other)))
}

// answerCreate makes the proxy answer the batched create of node id with
// what answer returns for it, in place of the cloud (nil: the cloud
// answers); the batch's other ops go to the cloud.
func answerCreate(p *hostile.Proxy, id uint64, answer func(api.BatchOp) *api.BatchResult) {
	p.On(http.MethodPost, "/v1/batch", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		var br api.BatchRequest
		if json.Unmarshal(req.Body, &br) != nil {
			return next(req)
		}
		at := slices.IndexFunc(br.Ops, func(o api.BatchOp) bool { return o.Create != nil && o.Create.ID == id })
		if at < 0 {
			return next(req)
		}
		res := answer(br.Ops[at])
		if res == nil {
			return next(req)
		}
		var resp api.BatchResponse
		if rest := slices.Delete(slices.Clone(br.Ops), at, at+1); len(rest) > 0 {
			r := *req
			r.Body, _ = json.Marshal(api.BatchRequest{Ops: rest})
			up := next(&r)
			if up == nil || up.Status != http.StatusOK || json.Unmarshal(up.Body, &resp) != nil {
				return up
			}
		}
		resp.Results = slices.Insert(resp.Results, at, *res)
		b, _ := json.Marshal(resp)
		return &hostile.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}
	})
}

// idInUseResult is a batch's answer to a create whose node id exists.
func idInUseResult() *api.BatchResult {
	return &api.BatchResult{Error: &api.Error{Code: api.CodeConflict, Message: "node id in use"}}
}

// proxiedDrive starts a drive on cloud c through a hostile proxy that
// answers 503 while down is set (and forwards, to the test's rules, when not).
func proxiedDrive(t *testing.T, c *cloud) (*hostile.Proxy, *Drive, *atomic.Bool) {
	t.Helper()
	p := hostile.Start(t, c.url)
	down := &atomic.Bool{}
	p.On("", "*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if down.Load() {
			return &hostile.Response{Status: http.StatusServiceUnavailable, Header: http.Header{}, Body: []byte("offline")}
		}
		return next(req)
	})
	a := coreDriveVia(t, c, p.URL)
	return p, a, down
}

// coreDriveVia starts a drive on cloud c that reaches it at url (a proxy's).
func coreDriveVia(t *testing.T, c *cloud, url string) *Drive {
	t.Helper()
	return coreDriveAt(t, c, t.TempDir(), func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: url, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
	}, nil)
}

// createHeld starts a cloud and a drive a through a hostile proxy, and
// creates file x on a while the proxy answers 503: its create is queued,
// and the test adds its rules before the proxy forwards again (release).
func createHeld(t *testing.T) (c *cloud, p *hostile.Proxy, a *Drive, x uint64, release func()) {
	t.Helper()
	c = startCloud(t, t.TempDir(), 0)
	p, a, down := proxiedDrive(t, c)
	down.Store(true)
	x = coreFile(t, a, api.RootID, "x", "data of x").id
	return c, p, a, x, func() { down.Store(false); kick(a.pushKick) }
}

// A create refused once as "node id in use" by a cloud that then says
// there is no such node (another device deleted it meanwhile, or the cloud
// is wrong) is sent again: before, the pusher took it as done on the
// cloud's word and the file never reached the cloud, with nothing said.
func TestCoreCreateIDInUseThenNotFound(t *testing.T) {
	c, p, a, x, release := createHeld(t)
	var once atomic.Bool
	answerCreate(p, x, func(api.BatchOp) *api.BatchResult {
		if once.Swap(true) {
			return nil
		}
		return idInUseResult()
	})
	release()
	flushWithin(t, a, 20*time.Second)
	if !once.Load() {
		t.Fatal("the create was not refused")
	}
	if got := cloudRootNames(t, c); got["x"] != x {
		t.Fatalf("cloud root %v: want x as node %d", got, x)
	}
}

// The cloud says a create's id is in use because an earlier try went
// through under another name (its answer lost; a create queued before a
// restart is sent under the name its file was renamed to since): the node
// authenticates as ours, so the pusher renames it to the name it has here.
// Before, it took the create as done: the cloud kept the other name while
// this drive showed x.
func TestCoreCreateIDInUseUnderOtherName(t *testing.T) {
	c, p, a, x, release := createHeld(t)
	sealer := meta.NewSealer(c.sess.Subkeys())
	var once atomic.Bool
	answerCreate(p, x, func(op api.BatchOp) *api.BatchResult {
		if once.Swap(true) {
			return nil
		}
		// The earlier try: the same create under the name "tmp".
		cr := *op.Create
		cr.NameMAC, cr.Name = sealer.NameMAC(cr.Parent, []byte("tmp")), sealer.SealName(cr.Parent, cr.ID, meta.KindFile, []byte("tmp"))
		if _, err := c.client(t).Create(context.Background(), cr); err != nil {
			return &api.BatchResult{Error: &api.Error{Code: api.CodeInternal, Message: err.Error()}}
		}
		return idInUseResult()
	})
	release()
	flushWithin(t, a, 20*time.Second)
	if got := cloudRootNames(t, c); len(got) != 1 || got["x"] != x {
		t.Fatalf("cloud root %v: want only x, node %d", got, x)
	}
	if n := a.ctl.refusedN; n != 0 {
		t.Fatalf("%d changes reported refused", n)
	}
	other := coreDrive(t, c)
	if got := coreRead(t, other, api.RootID, "x"); got != "data of x" {
		t.Fatalf("another device reads x as %q", got)
	}
}

// A server that refuses a create as "node id in use" and shows for the id
// a node that is not ours (another's record, relabelled) gets the create
// reported refused, with what to do, not taken as done in silence (before,
// the file never reached the cloud and nothing said so).
func TestCoreCreateIDInUseNotOurs(t *testing.T) {
	c, p, a, x, release := createHeld(t)
	w := coreDrive(t, c)
	other := coreFile(t, w, api.RootID, "other", "other's").id
	coreFlush(t, w)
	answerCreate(p, x, func(api.BatchOp) *api.BatchResult { return idInUseResult() })
	showAsOurs(p, x, other)
	release()
	flushWithin(t, a, 20*time.Second)
	text := coreControlText(t, a)
	if !strings.Contains(text, "refused") || !strings.Contains(text, "not ours") || !strings.Contains(text, "/x") {
		t.Fatalf(".kumo does not report the refused create of /x:\n%s", text)
	}
	if a.Integrity().AuthFailures == 0 {
		t.Fatal("the node shown for x's id failed authentication, and that is not counted")
	}
	if got := coreRead(t, a, api.RootID, "x"); got != "data of x" {
		t.Fatalf("a reads x as %q", got)
	}
}

// An op the cloud keeps refusing (a retry that can never go through) is
// reported stuck after a number of tries in a row, in the error the pusher
// records (.kumo's "last error" while something is queued) and once in the
// log; waiting offline or for the quota is not being stuck,
// and the count starts again with the next op at the head.
func TestCorePushStuckReported(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	s := pushStuck{limit: 3}
	head := cache.JournalOp{Seq: 7, Op: api.BatchOp{Op: api.OpCreate}}
	refused := fmt.Errorf("create refused: %w", &api.Error{Code: api.CodeExists, Message: "name exists"})
	offline := fmt.Errorf("batch: %w", api.ErrUnavailable)
	isStuck := func(err error) bool { return strings.Contains(err.Error(), "queue stuck") }
	for range 2 {
		if err := s.failed(d, head, refused); isStuck(err) {
			t.Fatalf("stuck after fewer tries than the limit: %v", err)
		}
	}
	if err := s.failed(d, head, offline); isStuck(err) {
		t.Fatalf("offline reported as stuck: %v", err)
	}
	for range 2 {
		if err := s.failed(d, head, refused); isStuck(err) {
			t.Fatalf("stuck counted across a wait offline: %v", err)
		}
	}
	err := s.failed(d, head, refused)
	if !isStuck(err) || !errors.Is(err, api.ErrExists) {
		t.Fatalf("after %d refusals in a row: %v; want it reported stuck, wrapping the refusal", s.limit, err)
	}
	if err := s.failed(d, cache.JournalOp{Seq: 8, Op: head.Op}, refused); isStuck(err) {
		t.Fatalf("the next op inherits the count: %v", err)
	}
}
