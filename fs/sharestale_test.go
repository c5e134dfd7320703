package fs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
)

// heldFeed is a hostile proxy in front of c that holds every request for
// the change feed while hold is set (a feed lagging behind), and a client
// of it with token.
func heldFeed(t *testing.T, c *cloud) (*hostile.Proxy, *atomic.Bool) {
	t.Helper()
	p := hostile.Start(t, c.url)
	hold := &atomic.Bool{}
	wait := func(req *hostile.Request) bool {
		for hold.Load() {
			if req.Context().Err() != nil {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
		return true
	}
	// Held before and after the server answers: a poll in flight when the
	// hold begins does not bring what changed meanwhile either.
	p.On("GET", "/v1/changes", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if !wait(req) {
			return nil
		}
		resp := next(req)
		if !wait(req) {
			return nil
		}
		return resp
	})
	t.Cleanup(func() { hold.Store(false) })
	return p, hold
}

func proxyClient(t *testing.T, url, token string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Options{BaseURL: url, Token: token, Logger: testLogger(t)})
	must(t, err)
	return cl
}

// serveAttrs makes p answer node id with attributes attrs wherever a read
// of the live tree returns it (the node, a lookup, a listing): a hostile
// server showing a record it planted, where an honest one refuses to store
// it (a share's older generation). Records of other nodes pass unchanged.
func serveAttrs(p *hostile.Proxy, id uint64, attrs []byte) {
	set := func(n *api.Node) {
		if n.ID == id {
			n.Attrs = attrs
		}
	}
	p.On("GET", "/v1/nodes/*", hostile.EditJSON(set))
	p.On("GET", "/v1/nodes/*/entries/*", hostile.EditJSON(func(e *api.Entry) { set(&e.Node) }))
	p.On("GET", "/v1/nodes/*/entries", hostile.EditJSON(func(es *[]api.Entry) {
		for i := range *es {
			set(&(*es)[i].Node)
		}
	}))
}

// serveAttrsAt is serveAttrs for the history reads (a node at a moment, a
// directory at a moment, a node's versions): the planted record shown as a
// kept version.
func serveAttrsAt(p *hostile.Proxy, id uint64, attrs []byte) {
	set := func(n *api.Node) {
		if n.ID == id {
			n.Attrs = attrs
		}
	}
	p.On("GET", "/v1/history/nodes/*", hostile.EditJSON(set))
	p.On("GET", "/v1/history/entries", hostile.EditJSON(func(r *api.HistoryListResponse) {
		for i := range r.Entries {
			set(&r.Entries[i].Node)
		}
	}))
	p.On("GET", "/v1/history/versions/*", hostile.EditJSON(func(r *api.VersionsResponse) {
		for i := range r.Versions {
			set(&r.Versions[i].Node)
		}
	}))
}

// readAll reads a file's first 4 KiB.
func readAll(t *testing.T, d *Drive, st *nodeState) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := d.readAt(context.Background(), st, buf, 0, false, nil)
	if err != nil {
		t.Fatalf("read node %d: %v", st.id, err)
	}
	return string(buf[:n])
}

// TestShareMinGenLaggingFeed: the owner removes a writer, so the folder is
// re-sealed under generation 2 and the roster then refuses generation 1.
// Drives that load that roster while their change feed is held back still
// hold generation-1 records. A remaining reader's drive (the joined share)
// refuses them (the plain local lookup is EIO, as before) but its lookups,
// listings and reads fetch the re-sealed records from the cloud and answer
// with them: the files read, under generation 2. A record the cloud still
// serves in generation 1 (the removed writer's, planted by the server) stays
// EIO. The owner's drive, adopting the roster, sweeps the folder's local
// records and fetches the re-sealed ones without any lookup (and leaves
// the planted one out). With the old drive every one of these was EIO until
// the feed caught up.
func TestShareMinGenLaggingFeed(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	carol := joinDocs(t, c, owner, "carol@example.com", keys.RoleReader)
	_, bs := bob.load(t)
	bobGen1 := bs.Joined[0].Secrets[1]

	p, hold := heldFeed(t, c)
	// Both drives reach the cloud through the proxy; their shares (the
	// rosters) load directly.
	cd := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(carol)(o)
		o.Session, o.Client, o.SharedDir = carol.sess, proxyClient(t, p.URL, carol.sess.Token), "Shared"
	})
	md, e := cd.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatalf("carol's drive of the joined share: %v", e)
	}
	od := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(owner)(o)
		o.Client = proxyClient(t, p.URL, owner.sess.Token)
	})
	docs := lookupDir(t, od, api.RootID, "Docs")
	odA := lookupDir(t, od, docs.id, "a.txt").id
	odSub := lookupDir(t, od, docs.id, "sub").id
	lookupDir(t, od, odSub, "b.txt") // decoded (generation 1) before the re-seal

	hold.Store(true)
	sh := removeBob(t, owner)
	if sh.Roster.MinGen != 2 {
		t.Fatalf("lowest accepted generation after removing a writer: %d, want 2", sh.Roster.MinGen)
	}
	// The server serves the removed writer's generation-1 record of sub/b.txt.
	n, sealed := sealShareAttrsAt(t, owner, "/Docs/sub/b.txt", 100, 1, bobGen1, func(a *meta.Attrs) { a.Mode = a.Mode&^0o777 | 0o600 })
	rec, err := keys.SignRecord(bob.acct.Identity, keys.RecordAttrs, n.ID(), nil, sealed)
	must(t, err)
	serveAttrs(p, n.ID(), rec)
	// The reader's drive brings sub's re-sealed entries in with a refresh
	// of sub that runs beside the test's lookups (started when the lookup
	// of a.txt brings the root's entries in, sub's among them). The old
	// refresh removed b.txt's generation-1 entry, then fetched its new one
	// and stored it: held here between the two, b.txt had no entry at all
	// and its lookup answered ENOENT, not EIO.
	es, err := owner.c.List(ctx, odSub)
	must(t, err)
	if len(es) != 1 {
		t.Fatalf("sub holds %d entries in the cloud, want b.txt alone", len(es))
	}
	bMAC := es[0].NameMAC
	window := make(chan struct{})
	var held atomic.Int32
	p.On("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", odSub, bMAC), func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		held.Add(1)
		select {
		case <-window:
		case <-req.Context().Done():
			return nil
		}
		return next(req)
	})
	release := sync.OnceFunc(func() { close(window) })
	t.Cleanup(release)

	// The reader's drive: its lookups must fetch (no sweep here).
	md.sh.stale.sweep.Store(true)
	must(t, cd.loadShares(ctx, 0))
	if got := md.shares().byID[sh.ID].Roster.MinGen; got != 2 {
		t.Fatalf("the member drive's roster accepts from generation %d, want 2", got)
	}
	root := md.rootID()
	if _, e := md.lookupForTest(root, "a.txt"); e != syscall.EIO {
		t.Fatalf("the local generation-1 records under the new roster, without fetching: %v, want EIO (the feed is held)", e)
	}
	a, e := md.lookupFresh(root, "a.txt")
	if e != 0 {
		t.Fatalf("lookup a.txt in the joined share after the re-seal, feed held: %v", e)
	}
	if a.kid.Gen != 2 {
		t.Fatalf("a.txt opened under generation %d, want 2", a.kid.Gen)
	}
	// The refresh of sub is held between its two steps (old code) or has
	// replaced b.txt's entry (in one step: nothing held).
	waitFor(t, 10*time.Second, func() bool {
		if held.Load() > 0 {
			return true
		}
		es, err := md.store.List(odSub)
		return err == nil && len(es) == 1 && es[0].NameMAC == bMAC
	})
	if got := readAll(t, md, a); got != "shared a\n" {
		t.Fatalf("read a.txt: %q", got)
	}
	ls, _, e := md.listFresh(root)
	if e != 0 {
		t.Fatal(e)
	}
	var names []string
	for _, x := range ls {
		names = append(names, x.name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"a.txt", "sub"}) {
		t.Fatalf("ls of the joined share after the re-seal: %q, want a.txt and sub", names)
	}
	sub, e := md.lookupFresh(root, "sub")
	if e != 0 || sub.kid.Gen != 2 {
		t.Fatalf("lookup sub: %v (generation %d)", e, sub.kid.Gen)
	}
	if sub.id != odSub {
		t.Fatalf("sub is node %d in the reader's drive, %d in the owner's", sub.id, odSub)
	}
	if _, e := md.lookupFresh(sub.id, "b.txt"); e != syscall.EIO {
		t.Fatalf("sub/b.txt, whose record the cloud serves in generation 1 signed by the removed writer: %v, want EIO", e)
	}
	release()
	if md.Integrity().AuthFailures == 0 {
		t.Fatal("the refusals are not counted")
	}

	// The owner's drive sweeps the folder when it adopts the roster.
	must(t, od.loadShares(ctx, 0))
	waitFor(t, 20*time.Second, func() bool {
		n, err := od.store.GetNode(odA)
		k, _ := meta.RecordKeyID(n.Attrs)
		return err == nil && k.Gen == 2 && !od.sh.stale.sweep.Load()
	})
	if !hold.Load() || p.Count("GET", "/v1/changes") == 0 {
		t.Fatal("the change feed was not held")
	}
	if st, e := od.lookupForTest(docs.id, "a.txt"); e != 0 || st.kid.Gen != 2 {
		t.Fatalf("owner's drive, a.txt after the sweep (no fetch in the lookup): %v", e)
	}
	if got := readAll(t, od, lookupDir(t, od, docs.id, "a.txt")); got != "shared a\n" {
		t.Fatalf("owner's drive reads a.txt: %q", got)
	}
	// sub/b.txt was decoded before, in generation 1, and the cloud serves
	// only the planted generation-1 record: the sweep does not take it, and
	// the lookup refuses what the drive holds.
	if st, e := od.lookupForTest(odSub, "b.txt"); e != syscall.EIO {
		t.Fatalf("owner's drive, sub/b.txt decoded in generation 1 before the roster raised it: %v (generation %d), want EIO", e, st.kid.Gen)
	}
}

// TestShareStaleNegativeLookupNoFetch: while a refused record of a shared
// folder waits to be fetched again (noted by a lookup that met it), a
// lookup of a name that does not exist in the owner's own tree answers
// ENOENT without a request to the cloud, and leaves the noted record for
// the operations in the folder, which still fetch it. The old retry
// fetched every noted record on any failed lookup anywhere in the drive.
func TestShareStaleNegativeLookupNoFetch(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	od, p, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs")
	lookupDir(t, od, docs.id, "a.txt") // decoded (generation 1) before the re-seal

	hold.Store(true)
	removeBob(t, owner)
	od.sh.stale.sweep.Store(true) // no sweep: the record stays noted
	must(t, od.loadShares(ctx, 0))
	if _, e := od.lookupForTest(docs.id, "a.txt"); e != syscall.EIO {
		t.Fatalf("a.txt's local generation-1 record under the new roster: %v, want EIO", e)
	}
	if !od.sh.stale.pending() {
		t.Fatal("the refused record is not noted")
	}
	requests := func() int { return p.Count("", "*") - p.Count("GET", "/v1/changes") }
	before := requests()
	for i := range 100 {
		if _, e := od.lookupFresh(api.RootID, fmt.Sprintf("nope-%d", i)); e != syscall.ENOENT {
			t.Fatalf("lookup of a name not in the home tree: %v, want ENOENT", e)
		}
	}
	if _, _, e := od.listFresh(api.RootID); e != 0 {
		t.Fatalf("ls of the home tree: %v", e)
	}
	if n := requests() - before; n != 0 {
		t.Fatalf("100 negative lookups in the home tree made %d requests to the cloud, want 0", n)
	}
	if !od.sh.stale.pending() {
		t.Fatal("the noted record was taken by lookups outside its folder")
	}
	a, e := od.lookupFresh(docs.id, "a.txt")
	if e != 0 || a.kid.Gen != 2 {
		t.Fatalf("lookup a.txt in the re-sealed folder: %v", e)
	}
	if requests() == before {
		t.Fatal("a.txt was not fetched from the cloud: the request count tests nothing")
	}
}

// BenchmarkNegativeLookupHome is a lookup of a name that does not exist
// in the account's own tree (a shell's PATH search, a build's probes),
// through the stale-record retry, with no shared folder.
func BenchmarkNegativeLookupHome(b *testing.B) {
	c := startCloud(b, b.TempDir(), 0)
	d := coreDriveAt(b, c, b.TempDir(), nil, nil)
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("nope-%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, e := d.lookupFresh(api.RootID, names[i%len(names)]); e != syscall.ENOENT {
			b.Fatalf("lookup: %v", e)
		}
	}
}

// TestShareMinGenRaisedDuringSweep: the owner's drive adopts a roster
// raising the folder's lowest generation to 2 and sweeps the folder; while
// the sweep is held at the listing of sub (Docs and a.txt already fetched
// under generation 2), a second writer is removed (generation 3) and the
// drive adopts that roster too. Once released, every local record of the
// folder ends under generation 3, with the feed held. The old sweep let the
// running walk go on alone, which never went back to Docs and a.txt: they
// stayed in generation 2, refused.
func TestShareMinGenRaisedDuringSweep(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	joinDocs(t, c, owner, "carol@example.com", keys.RoleWriter)
	od, p, hold := heldOwnerDrive(t, c, owner)
	docs := lookupDir(t, od, api.RootID, "Docs").id
	a := lookupDir(t, od, docs, "a.txt").id
	sub := lookupDir(t, od, docs, "sub").id
	b := lookupDir(t, od, sub, "b.txt").id
	var block atomic.Bool
	var blocked atomic.Int32
	p.On("GET", fmt.Sprintf("/v1/nodes/%d/entries", sub), func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		for block.Load() {
			blocked.Add(1)
			if req.Context().Err() != nil {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return next(req)
	})
	gen := func(id uint64) uint32 {
		n, err := od.store.GetNode(id)
		if err != nil {
			return 0
		}
		k, _ := meta.RecordKeyID(n.Attrs)
		return k.Gen
	}

	hold.Store(true)
	block.Store(true)
	removeBob(t, owner)
	must(t, od.loadShares(ctx, 0))
	// A refresh of sub started by Docs' relisting (moveEntry) may be held
	// there before the sweep reaches a.txt: wait for the sweep itself.
	waitFor(t, 20*time.Second, func() bool { return blocked.Load() > 0 && gen(a) == 2 && gen(docs) == 2 })
	if !od.sh.stale.sweep.Load() || gen(a) != 2 || gen(docs) != 2 {
		t.Fatalf("the first sweep is not held at sub's listing after a.txt (generation %d) and Docs (%d)", gen(a), gen(docs))
	}
	f, _ := owner.load(t)
	sh, err := f.RemoveMember(ctx, owner.acct, "/Docs", "carol@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if sh.Roster.MinGen != 3 {
		t.Fatalf("lowest accepted generation after the second removal: %d, want 3", sh.Roster.MinGen)
	}
	must(t, od.loadShares(ctx, 0))
	block.Store(false)
	end := time.Now().Add(20 * time.Second)
	for od.sh.stale.sweep.Load() || gen(docs) != 3 || gen(a) != 3 || gen(sub) != 3 || gen(b) != 3 {
		if time.Now().After(end) {
			t.Fatalf("after the sweeps (running %v): generations Docs %d, a.txt %d, sub %d, b.txt %d; want 3",
				od.sh.stale.sweep.Load(), gen(docs), gen(a), gen(sub), gen(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := readAll(t, od, lookupDir(t, od, docs, "a.txt")); got != "shared a\n" {
		t.Fatalf("a.txt after the sweeps: %q", got)
	}
	if !hold.Load() || p.Count("GET", "/v1/changes") == 0 {
		t.Fatal("the change feed was not held")
	}
}

// heldOwnerDrive is the owner's drive reaching the cloud through a proxy
// whose change feed the returned flag holds back (a lagging device); the
// proxy is returned for tests that also play the server.
func heldOwnerDrive(t *testing.T, c *cloud, owner *shareAcct) (*Drive, *hostile.Proxy, *atomic.Bool) {
	t.Helper()
	p, hold := heldFeed(t, c)
	d := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(owner)(o)
		o.Client = proxyClient(t, p.URL, owner.sess.Token)
	})
	return d, p, hold
}
