package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
	"kumo/remote/blob"
)

func testRange(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("g@example.com")
	data := randBytes(10000)
	id := randMAC()
	u.must("PUT", "/v1/chunks/"+id, data, nil)
	get := func(rng string) (int, []byte, string) {
		req, _ := http.NewRequest("GET", e.url+"/v1/chunks/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+u.token)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, resp.Header.Get("Content-Range")
	}
	cases := []struct {
		rng    string
		status int
		want   []byte
		cr     string
	}{
		{"", 200, data, ""},
		{"bytes=100-199", 206, data[100:200], "bytes 100-199/10000"},
		{"bytes=9990-", 206, data[9990:], "bytes 9990-9999/10000"},
		{"bytes=-5", 206, data[9995:], "bytes 9995-9999/10000"},
		{"bytes=0-99999", 206, data, "bytes 0-9999/10000"},
		{"bytes=9999-9999", 206, data[9999:], "bytes 9999-9999/10000"},
		{"bytes=10000-", 416, nil, "bytes */10000"},
		{"bytes=5-2", 416, nil, "bytes */10000"},
		{"bytes=0-1,3-4", 416, nil, "bytes */10000"},
		{"items=0-1", 416, nil, "bytes */10000"},
		{"bytes=-0", 416, nil, "bytes */10000"},
		{"bytes=+1-2", 416, nil, "bytes */10000"},
	}
	for _, c := range cases {
		st, b, cr := get(c.rng)
		if st != c.status || cr != c.cr || (c.want != nil && !bytes.Equal(b, c.want)) {
			t.Errorf("range %q: %d %q %d bytes", c.rng, st, cr, len(b))
		}
	}
}

func testBatch(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("b@example.com")
	d := api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(4), ID: randID(), Type: api.TypeDir, Attrs: randBytes(4)}
	f := api.CreateRequest{Parent: d.ID, NameMAC: randMAC(), Name: randBytes(4), ID: randID(), Type: api.TypeFile, Attrs: randBytes(4)}
	req := api.BatchRequest{Ops: []api.BatchOp{
		{Op: api.OpCreate, Create: &d},
		{Op: api.OpCreate, Create: &f},
		{Op: api.OpCreate, Create: &f}, // exists
		{Op: api.OpUpdate, ID: f.ID, Update: &api.UpdateRequest{Version: 1, Attrs: randBytes(7)}},
		{Op: api.OpUpdate, ID: f.ID, Update: &api.UpdateRequest{Version: 1, Attrs: randBytes(7)}}, // stale
		{Op: api.OpLink, Link: &api.LinkRequest{ID: f.ID, Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(4)}},
		{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: api.RootID, NameMAC: d.NameMAC, Dir: true}}, // not empty
		{Op: api.OpRename, Rename: &api.RenameRequest{SrcParent: d.ID, SrcNameMAC: f.NameMAC, DstParent: api.RootID, DstNameMAC: randMAC(), Name: randBytes(4)}},
		{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: api.RootID, NameMAC: d.NameMAC, Dir: true}},
		{Op: api.OpUnlink, Create: &f}, // mismatched op
		{Op: "bogus"},
	}}
	var resp api.BatchResponse
	u.must("POST", "/v1/batch", req, &resp)
	want := []string{"", "", api.CodeExists, "", api.CodeConflict, "", api.CodeNotEmpty, "", "", api.CodeBadRequest, api.CodeBadRequest}
	if len(resp.Results) != len(want) {
		t.Fatalf("%d results", len(resp.Results))
	}
	for i, w := range want {
		got := ""
		if resp.Results[i].Error != nil {
			got = resp.Results[i].Error.Code
		}
		if got != w {
			t.Errorf("op %d: %q, want %q", i, got, w)
		}
	}
	if n := resp.Results[3].Node; n == nil || n.Version != 2 {
		t.Errorf("update result %+v", n)
	}
	if n := resp.Results[5].Node; n == nil || n.Nlink != 2 {
		t.Errorf("link result %+v", n)
	}
	if s := checkConsistent(t, e.s, u.id); s.nodes != 2 || s.entries != 2 {
		t.Errorf("after batch: %+v", s)
	}
}

func (u *user) changes(after uint64, wait int) (api.ChangesResponse, int) {
	var r api.ChangesResponse
	st, _ := u.call("GET", fmt.Sprintf("/v1/changes?after=%d&wait=%d", after, wait), nil, &r)
	return r, st
}

func testChangeFeed(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("c@example.com")
	seq := u.account().Seq
	r, _ := u.changes(0, 0)
	if len(r.Changes) != 1 || r.Changes[0].Node != api.RootID || r.Seq != seq {
		t.Fatalf("initial feed: %+v", r)
	}
	start := time.Now()
	if r, _ = u.changes(seq, 0); len(r.Changes) != 0 || time.Since(start) > time.Second {
		t.Fatalf("wait=0 feed: %+v", r)
	}
	// A long-poll wakes on a mutation, not on its timeout.
	got := make(chan api.ChangesResponse, 1)
	go func() {
		r, _ := u.changes(seq, 30)
		got <- r
	}()
	time.Sleep(200 * time.Millisecond)
	start = time.Now()
	f := u.create(api.RootID, api.TypeFile)
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("long-poll did not wake")
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("long-poll woke after %v", time.Since(start))
	}
	var sawEntry, sawNode bool
	for _, c := range r.Changes {
		if c.Seq <= seq {
			t.Errorf("old change %+v", c)
		}
		sawEntry = sawEntry || (c.Kind == api.ChangeEntry && c.Parent == api.RootID && c.NameMAC == f.NameMAC && !c.Deleted)
		sawNode = sawNode || (c.Kind == api.ChangeNode && c.Node == f.Node.ID)
	}
	if !sawEntry || !sawNode || r.Seq != f.Node.Seq {
		t.Fatalf("changes %+v seq %d node seq %d", r.Changes, r.Seq, f.Node.Seq)
	}
	// A client from the future is told to reset.
	if r, _ = u.changes(r.Seq+100, 0); !r.Reset {
		t.Fatal("no reset for a sequence number past the newest")
	}
	// Another account's mutation does not wake this account's poll.
	other := e.signup("d@example.com")
	seq = u.account().Seq
	go func() {
		r, _ := u.changes(seq, 1)
		got <- r
	}()
	time.Sleep(100 * time.Millisecond)
	other.create(api.RootID, api.TypeFile)
	if r = <-got; len(r.Changes) != 0 {
		t.Fatalf("woke with foreign changes %+v", r.Changes)
	}
	// Paging: at most 1000 changes per answer.
	seq = u.account().Seq
	var ops []api.BatchOp
	for i := 0; i < 600; i++ {
		ops = append(ops, api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: api.RootID,
			NameMAC: randMAC(), Name: randBytes(4), ID: randID(), Type: api.TypeFile, Attrs: randBytes(4)}})
	}
	u.must("POST", "/v1/batch", api.BatchRequest{Ops: ops}, nil)
	r, _ = u.changes(seq, 0)
	if len(r.Changes) != 1000 || r.Seq != seq+1000 {
		t.Fatalf("first page: %d changes, seq %d (from %d)", len(r.Changes), r.Seq, seq)
	}
	r, _ = u.changes(r.Seq, 0)
	if len(r.Changes) != 200 || r.Seq != seq+1200 {
		t.Fatalf("second page: %d changes, seq %d", len(r.Changes), r.Seq)
	}
	// Shutdown ends a long-poll early.
	seq = r.Seq
	go func() {
		r, _ := u.changes(seq, 50)
		got <- r
	}()
	time.Sleep(200 * time.Millisecond)
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("long-poll kept running after Close")
	}
}

func testFeedTrim(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	e.s.feedKeep = 10
	u := e.signup("t@example.com")
	for i := 0; i < 10; i++ {
		u.create(api.RootID, api.TypeFile) // 2 changes each
	}
	a := u.account()
	if r, _ := u.changes(0, 0); !r.Reset || r.Seq != a.Seq {
		t.Fatalf("trimmed feed from 0: %+v", r)
	}
	r, _ := u.changes(a.Seq-10, 0)
	if r.Reset || len(r.Changes) != 10 {
		t.Fatalf("last 10: reset=%v %d changes", r.Reset, len(r.Changes))
	}
	if r, _ := u.changes(a.Seq-11, 0); !r.Reset {
		t.Fatal("no reset one past the kept window")
	}
	n := 0
	e.s.db.View(func(tx *badger.Txn) error {
		forEach(t, tx, []byte("feed/"+u.id+"/"), func(string, []byte) { n++ })
		return nil
	})
	if n != 10 {
		t.Fatalf("%d feed records kept, want 10", n)
	}
}

func testLoginLimit(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, func(c *Config) { c.LoginLimit = 3 })
	u := e.signup("l@example.com")
	h := e.s.Handler()
	login := func(email, ip string, key []byte) *httptest.ResponseRecorder {
		body := fmt.Sprintf(`{"email":%q,"auth_key":%q}`, email, b64(key))
		req := httptest.NewRequest("POST", "/v1/login", strings.NewReader(body))
		req.RemoteAddr = ip + ":5555"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	// Per address: 3 attempts a minute, whatever the e-mail.
	for i := 0; i < 3; i++ {
		if w := login(fmt.Sprintf("x%d@example.com", i), "10.0.0.1", randBytes(32)); w.Code != 401 {
			t.Fatalf("attempt %d: %d", i, w.Code)
		}
	}
	w := login("l@example.com", "10.0.0.1", u.authKey)
	if w.Code != 429 || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), api.CodeRateLimited) {
		t.Fatalf("4th attempt from one address: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	// Per account: 3 attempts a minute, whatever the address.
	for i := 0; i < 3; i++ {
		if w := login("l@example.com", fmt.Sprintf("10.1.0.%d", i), randBytes(32)); w.Code != 401 {
			t.Fatalf("attempt %d: %d", i, w.Code)
		}
	}
	if w := login("l@example.com", "10.2.0.1", u.authKey); w.Code != 429 {
		t.Fatalf("4th attempt on one account: %d", w.Code)
	}
	// Others are not affected.
	e.signup("m@example.com")
	if w := login("m@example.com", "10.3.0.1", randBytes(32)); w.Code != 401 {
		t.Fatalf("other account, other address: %d", w.Code)
	}
}

func testReadOnly(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, func(c *Config) { c.DefaultQuota = 5000; c.GCGrace = time.Millisecond })
	u := e.signup("ro@example.com")
	if err := e.s.AddQuota(u.id, 10000, time.Now().Add(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	a := u.account()
	if a.QuotaLimit != 15000 || a.Plan != "paid" || a.PlanExpires.IsZero() {
		t.Fatalf("account with grant: %+v", a)
	}
	ch := u.putChunk(8000)
	f := u.create(api.RootID, api.TypeFile, ch)
	time.Sleep(400 * time.Millisecond)
	a = u.account()
	if !a.ReadOnly || a.QuotaLimit != 5000 || a.Plan != "free" {
		t.Fatalf("account after expiry: %+v", a)
	}
	before := checkConsistent(t, e.s, u.id)
	st, code := u.call("PUT", "/v1/chunks/"+randMAC(), randBytes(10), nil)
	expect(t, "upload when read-only", st, code, 403, api.CodeReadOnly)
	st, code = u.call("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(4), ID: randID(), Type: api.TypeDir, Attrs: randBytes(4)}, nil)
	expect(t, "create when read-only", st, code, 403, api.CodeReadOnly)
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("read-only refusals changed state")
	}
	var data []byte
	u.must("GET", "/v1/chunks/"+ch, nil, &data) // reads still work
	u.list(api.RootID)
	// Deleting is allowed and, once collected, lifts read-only.
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: f.NameMAC}, nil)
	time.Sleep(5 * time.Millisecond)
	if _, _, err := e.s.RunGC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a = u.chunkAccount(); a.ReadOnly || a.QuotaUsed != 0 {
		t.Fatalf("after cleanup: %+v", a)
	}
	u.create(api.RootID, api.TypeDir)
}

func testRestart(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("s@example.com")
	data := randBytes(3000)
	ch := randMAC()
	u.must("PUT", "/v1/chunks/"+ch, data, nil)
	d := u.create(api.RootID, api.TypeDir)
	f := u.create(d.Node.ID, api.TypeFile, ch)
	before := checkConsistent(t, e.s, u.id)
	list := u.list(d.Node.ID)
	e.reopen()
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("state changed across restart: %+v -> %+v", before, after)
	}
	if got := u.list(d.Node.ID); len(got) != 1 || got[0].Node.ID != f.Node.ID || !bytes.Equal(got[0].Name, list[0].Name) {
		t.Fatalf("list after restart: %+v", got)
	}
	var b []byte
	u.must("GET", "/v1/chunks/"+ch, nil, &b) // the session survived too
	if !bytes.Equal(b, data) {
		t.Fatal("chunk changed across restart")
	}
}

// testConcurrent runs 16 clients doing 200 random tree operations each in one
// directory and checks the tree stays consistent, also after a restart.
func testConcurrent(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("conc@example.com")
	dir := u.create(api.RootID, api.TypeDir).Node.ID
	var chunks []string
	for i := 0; i < 8; i++ {
		chunks = append(chunks, u.putChunk(100+i))
	}
	var names []string
	for i := 0; i < 48; i++ {
		names = append(names, randMAC())
	}
	workers, ops := 16, 200
	if testing.Short() {
		ops = 50
	}
	allowed := map[string]bool{"": true, api.CodeExists: true, api.CodeNotFound: true, api.CodeIsDir: true,
		api.CodeNotDir: true, api.CodeNotEmpty: true, api.CodeConflict: true}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(rand.Uint64(), 1))
			name := func() string { return names[rnd.IntN(len(names))] }
			for i := 0; i < ops; i++ {
				var st int
				var code string
				switch k := rnd.IntN(10); {
				case k < 3:
					typ := api.TypeFile
					var cs []string
					if rnd.IntN(4) == 0 {
						typ = api.TypeDir
					} else {
						cs = []string{chunks[rnd.IntN(len(chunks))], chunks[rnd.IntN(len(chunks))]}
					}
					st, code = u.call("POST", "/v1/nodes", api.CreateRequest{Parent: dir, NameMAC: name(), Name: randBytes(6),
						ID: randID(), Type: typ, Attrs: randBytes(10), Chunks: cs}, nil)
				case k < 6:
					mode := api.RenamePlain
					var srcName []byte
					switch rnd.IntN(5) {
					case 0:
						mode = api.RenameNoReplace
					case 1:
						mode, srcName = api.RenameExchange, randBytes(6)
					}
					st, code = u.call("POST", "/v1/rename", api.RenameRequest{SrcParent: dir, SrcNameMAC: name(),
						DstParent: dir, DstNameMAC: name(), Name: randBytes(6), SrcName: srcName, Mode: mode}, nil)
				case k < 8:
					st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: dir, NameMAC: name(), Dir: rnd.IntN(3) == 0}, nil)
				case k < 9:
					var ent api.Entry
					if st, code = u.call("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", dir, name()), nil, &ent); code == "" {
						st, code = u.call("POST", "/v1/link", api.LinkRequest{ID: ent.Node.ID, Parent: dir, NameMAC: name(), Name: randBytes(6)}, nil)
					}
				default:
					var ent api.Entry
					if st, code = u.call("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", dir, name()), nil, &ent); code == "" {
						cs := []string{chunks[rnd.IntN(len(chunks))]}
						if ent.Node.Type == api.TypeDir {
							cs = nil
						}
						st, code = u.call("PUT", fmt.Sprintf("/v1/nodes/%d", ent.Node.ID),
							api.UpdateRequest{Version: ent.Node.Version, Attrs: randBytes(10), Chunks: cs}, nil)
					}
				}
				if !allowed[code] {
					t.Errorf("unexpected answer %d %s", st, code)
				}
			}
		}()
	}
	wg.Wait()
	s1 := checkConsistent(t, e.s, u.id)
	listed := u.list(dir)
	ids := map[uint64]bool{}
	for _, en := range listed {
		ids[en.Node.ID] = true
	}
	if s1.entries != len(listed)+1 || s1.nodes != len(ids)+2 {
		t.Errorf("listed %d entries of %d nodes; badger holds %d entries, %d nodes (incl. root and dir)",
			len(listed), len(ids), s1.entries, s1.nodes)
	}
	t.Logf("after %d ops: %+v", workers*ops, s1)
	e.reopen()
	if s2 := checkConsistent(t, e.s, u.id); s2 != s1 {
		t.Fatalf("state changed across restart: %+v -> %+v", s1, s2)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
