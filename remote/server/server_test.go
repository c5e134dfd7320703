package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"kumo/remote/api"
	"kumo/remote/blob"
)

func TestServerLocal(t *testing.T) {
	runServerSuite(t, localBlobs)
}

// TestServerLocalBlobs runs the suite with every chunk in the blob store (the
// suite's chunks are mostly small, so TestServerLocal keeps them in the
// metadata store).
func TestServerLocalBlobs(t *testing.T) {
	runServerSuite(t, allInBlobs(localBlobs))
}

// runServerSuite runs every server test against blob stores made by newBlobs
// (the local directory store here, S3 in s3_test.go).
func runServerSuite(t *testing.T, newBlobs func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, nb func(t *testing.T) blob.Store)
	}{
		{"Basic", testBasic},
		{"Accounts", testAccounts},
		{"Isolation", testIsolation},
		{"QuotaDedupGC", testQuotaDedupGC},
		{"VersionConflict", testVersionConflict},
		{"Rename", testRename},
		{"UnlinkLink", testUnlinkLink},
		{"Range", testRange},
		{"Batch", testBatch},
		{"ChangeFeed", testChangeFeed},
		{"FeedTrim", testFeedTrim},
		{"BadInput", testBadInput},
		{"LoginLimit", testLoginLimit},
		{"ReadOnly", testReadOnly},
		{"Restart", testRestart},
		{"Concurrent", testConcurrent},
		{"GCRace", testGCRace},
		{"Admin", testAdmin},
		{"Vouchers", testVouchers},
		{"TopupDisabled", testTopupDisabled},
		{"UsageFeed", testUsageFeed},
		{"OrphanSweep", testOrphanSweep},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newBlobs) })
	}
}

func testBasic(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("a@example.com")
	ch := u.putChunk(1000)
	f := u.create(api.RootID, api.TypeFile, ch)
	d := u.create(api.RootID, api.TypeDir)
	if es := u.list(api.RootID); len(es) != 2 {
		t.Fatalf("list: %d entries", len(es))
	}
	var got api.Entry
	u.must("GET", fmt.Sprintf("/v1/nodes/1/entries/%s", f.NameMAC), nil, &got)
	if got.Node.ID != f.Node.ID || len(got.Node.Chunks) != 1 || !bytes.Equal(got.Name, f.Name) {
		t.Fatalf("lookup: %+v", got)
	}
	var n api.Node
	u.must("GET", fmt.Sprintf("/v1/nodes/%d", d.Node.ID), nil, &n)
	if n.Type != api.TypeDir || n.Parent != api.RootID {
		t.Fatalf("get dir: %+v", n)
	}
	var data []byte
	u.must("GET", "/v1/chunks/"+ch, nil, &data)
	if len(data) != 1000 {
		t.Fatalf("chunk: %d bytes", len(data))
	}
	if a := u.chunkAccount(); a.QuotaUsed != 1000 {
		t.Fatalf("usage %d", a.QuotaUsed)
	}
	st, code := u.call("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: f.NameMAC, Name: randBytes(5),
		ID: randID(), Type: api.TypeFile, Attrs: randBytes(5)}, nil)
	expect(t, "create over taken name", st, code, 409, api.CodeExists)
	st, code = u.call("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(5),
		ID: f.Node.ID, Type: api.TypeFile, Attrs: randBytes(5)}, nil)
	expect(t, "create with taken id", st, code, 409, api.CodeConflict)
	st, code = u.call("POST", "/v1/nodes", api.CreateRequest{Parent: f.Node.ID, NameMAC: randMAC(), Name: randBytes(5),
		ID: randID(), Type: api.TypeFile, Attrs: randBytes(5)}, nil)
	expect(t, "create under a file", st, code, 409, api.CodeNotDir)
	st, code = u.call("GET", fmt.Sprintf("/v1/nodes/%d/entries", f.Node.ID), nil, nil)
	expect(t, "list a file", st, code, 409, api.CodeNotDir)
	st, code = u.call("GET", "/v1/nodes/1/entries/"+randMAC(), nil, nil)
	expect(t, "lookup missing", st, code, 404, api.CodeNotFound)
	checkConsistent(t, e.s, u.id)
}

func testAccounts(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	var p1, p2, p3 api.PreloginResponse
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: "nobody@example.com"}, &p1)
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: " NoBody@Example.com "}, &p2)
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: "other@example.com"}, &p3)
	if len(p1.Salt) != 16 || !bytes.Equal(p1.Salt, p2.Salt) || p1.KDF != defaultKDF || bytes.Equal(p1.Salt, p3.Salt) {
		t.Fatalf("fake salts: %x %x %x %+v", p1.Salt, p2.Salt, p3.Salt, p1.KDF)
	}
	// The fake salt survives a restart (the secret is in the data dir).
	e.reopen()
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: "nobody@example.com"}, &p2)
	if !bytes.Equal(p1.Salt, p2.Salt) {
		t.Fatal("fake salt changed across restart")
	}

	u := e.signup(" User@Example.COM")
	var pre api.PreloginResponse
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: "user@example.com"}, &pre)
	if len(pre.Salt) != 16 || pre.KDF != defaultKDF {
		t.Fatalf("prelogin: %+v", pre)
	}
	again := signupReq("user@example.com")
	st, code := e.call("POST", "/v1/signup", "", again, nil)
	expect(t, "signup twice", st, code, 202, "") // as for a new e-mail (TestSignupKnownEmail)
	st, code = e.call("GET", "/v1/account", again.Token, nil, nil)
	expect(t, "session of a second signup", st, code, 401, api.CodeUnauthorized)

	var lr api.LoginResponse
	st, code = e.call("POST", "/v1/login", "", api.LoginRequest{Email: "USER@example.com", AuthKey: u.authKey}, &lr)
	expect(t, "login", st, code, 200, "")
	if lr.Account.ID != u.id || lr.Token == u.token || len(lr.WrappedMaster) != 73 || !lr.Expires.After(time.Now()) {
		t.Fatalf("login response: %+v", lr)
	}
	st, code = e.call("POST", "/v1/login", "", api.LoginRequest{Email: "user@example.com", AuthKey: randBytes(32)}, nil)
	expect(t, "login wrong key", st, code, 401, api.CodeUnauthorized)
	st, code = e.call("POST", "/v1/login", "", api.LoginRequest{Email: "ghost@example.com", AuthKey: randBytes(32)}, nil)
	expect(t, "login unknown", st, code, 401, api.CodeUnauthorized)

	// Password change ends the other sessions only.
	other := lr.Token
	newKey := randBytes(32)
	st, code = u.call("POST", "/v1/password", api.PasswordRequest{OldAuthKey: randBytes(32), NewSalt: randBytes(16),
		NewKDF: defaultKDF, NewAuthKey: newKey, NewWrappedMaster: randBytes(73)}, nil)
	expect(t, "password with wrong old key", st, code, 403, api.CodeForbidden)
	newSalt := randBytes(16)
	u.must("POST", "/v1/password", api.PasswordRequest{OldAuthKey: u.authKey, NewSalt: newSalt,
		NewKDF: api.KDFParams{Time: 2, MemoryKiB: 1024, Threads: 1}, NewAuthKey: newKey, NewWrappedMaster: randBytes(73)}, nil)
	st, code = e.call("GET", "/v1/account", other, nil, nil)
	expect(t, "other session after password change", st, code, 401, api.CodeUnauthorized)
	u.account() // the calling session still works
	st, code = e.call("POST", "/v1/login", "", api.LoginRequest{Email: "user@example.com", AuthKey: u.authKey}, nil)
	expect(t, "login with old key", st, code, 401, api.CodeUnauthorized)
	st, code = e.call("POST", "/v1/login", "", api.LoginRequest{Email: "user@example.com", AuthKey: newKey}, &lr)
	expect(t, "login with new key", st, code, 200, "")
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: "user@example.com"}, &pre)
	if !bytes.Equal(pre.Salt, newSalt) || pre.KDF.Time != 2 {
		t.Fatalf("prelogin after password change: %+v", pre)
	}

	// Logout ends the session; a replay answers 401.
	st, code = e.call("POST", "/v1/logout", lr.Token, nil, nil)
	expect(t, "logout", st, code, 200, "")
	st, code = e.call("POST", "/v1/logout", lr.Token, nil, nil)
	expect(t, "logout replay", st, code, 401, api.CodeUnauthorized)
	st, code = e.call("GET", "/v1/account", lr.Token, nil, nil)
	expect(t, "request after logout", st, code, 401, api.CodeUnauthorized)

	accts, err := e.s.Accounts()
	if err != nil || len(accts) != 1 || accts[0].Email != "user@example.com" {
		t.Fatalf("Accounts: %+v %v", accts, err)
	}
	if err := e.s.SetQuota("user@example.com", 12345); err != nil {
		t.Fatal(err)
	}
	if a := u.account(); a.QuotaLimit != 12345 {
		t.Fatalf("quota %d", a.QuotaLimit)
	}
	if err := e.s.SetQuota("ghost@example.com", 1); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("SetQuota unknown: %v", err)
	}
	if err := e.s.DisableAccount("user@example.com"); err != nil {
		t.Fatal(err)
	}
	st, code = u.call("GET", "/v1/account", nil, nil)
	expect(t, "request of disabled account", st, code, 403, api.CodeForbidden)
	st, code = e.call("POST", "/v1/login", "", api.LoginRequest{Email: "user@example.com", AuthKey: newKey}, nil)
	expect(t, "login of disabled account", st, code, 403, api.CodeForbidden)
}

func testIsolation(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	a := e.signup("a@example.com")
	b := e.signup("b@example.com")
	ch := a.putChunk(500)
	d := a.create(api.RootID, api.TypeDir)
	f := a.create(d.Node.ID, api.TypeFile, ch)
	before := checkConsistent(t, e.s, a.id)
	bBefore := checkConsistent(t, e.s, b.id)

	cases := []struct {
		name, method, path string
		body               any
	}{
		{"get node", "GET", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), nil},
		{"list dir", "GET", fmt.Sprintf("/v1/nodes/%d/entries", d.Node.ID), nil},
		{"lookup", "GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", d.Node.ID, f.NameMAC), nil},
		{"update", "PUT", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), api.UpdateRequest{Version: 1, Attrs: randBytes(9)}},
		{"unlink", "POST", "/v1/unlink", api.UnlinkRequest{Parent: d.Node.ID, NameMAC: f.NameMAC}},
		{"rename", "POST", "/v1/rename", api.RenameRequest{SrcParent: d.Node.ID, SrcNameMAC: f.NameMAC, DstParent: api.RootID, DstNameMAC: randMAC(), Name: randBytes(4)}},
		{"link", "POST", "/v1/link", api.LinkRequest{ID: f.Node.ID, Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(4)}},
		{"create in foreign dir", "POST", "/v1/nodes", api.CreateRequest{Parent: d.Node.ID, NameMAC: randMAC(), Name: randBytes(4), ID: randID(), Type: api.TypeFile, Attrs: randBytes(4)}},
		{"get chunk", "GET", "/v1/chunks/" + ch, nil},
		{"reference foreign chunk", "POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(4), ID: randID(), Type: api.TypeFile, Attrs: randBytes(4), Chunks: []string{ch}}},
	}
	for _, c := range cases {
		st, code := b.call(c.method, c.path, c.body, nil)
		if st < 400 || st >= 500 {
			t.Errorf("%s by another account: %d %s", c.name, st, code)
		}
	}
	var have api.HaveResponse
	b.must("POST", "/v1/chunks/have", api.HaveRequest{IDs: []string{ch}}, &have)
	if have.Have[0] {
		t.Error("have answers true for another account's chunk")
	}
	// Each root is the account's own.
	var ra, rb api.Node
	a.must("GET", "/v1/nodes/1", nil, &ra)
	b.must("GET", "/v1/nodes/1", nil, &rb)
	if bytes.Equal(ra.Attrs, rb.Attrs) {
		t.Error("two accounts share a root")
	}
	if len(b.list(api.RootID)) != 0 {
		t.Error("b sees entries it did not create")
	}
	// b uploading the same chunk id stores b's own copy and leaves a's alone.
	b.must("PUT", "/v1/chunks/"+ch, []byte("bbb"), nil)
	var data []byte
	a.must("GET", "/v1/chunks/"+ch, nil, &data)
	if len(data) != 500 {
		t.Errorf("a's chunk changed to %d bytes", len(data))
	}
	b.must("GET", "/v1/chunks/"+ch, nil, &data)
	if string(data) != "bbb" {
		t.Errorf("b reads %q", data)
	}
	after := checkConsistent(t, e.s, a.id)
	if after != before {
		t.Errorf("a's state changed: %+v -> %+v", before, after)
	}
	if s := checkConsistent(t, e.s, b.id); s.used != 3+40 || s.seq != bBefore.seq {
		t.Errorf("b's state: %+v", s)
	}
}

func testQuotaDedupGC(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, func(c *Config) { c.DefaultQuota = 10000 })
	u := e.signup("q@example.com")
	c1 := u.putChunk(6000)
	before := checkConsistent(t, e.s, u.id)
	c2 := randMAC()
	st, code := u.call("PUT", "/v1/chunks/"+c2, randBytes(6000), nil)
	expect(t, "over quota", st, code, 507, api.CodeQuota)
	var have api.HaveResponse
	u.must("POST", "/v1/chunks/have", api.HaveRequest{IDs: []string{c1, c2}}, &have)
	if !have.Have[0] || have.Have[1] {
		t.Fatalf("have: %v", have.Have)
	}
	if chunkStored(t, e.s, u.id, c2) {
		t.Fatal("refused chunk left its bytes stored")
	}
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("quota refusal changed state: %+v -> %+v", before, after)
	}
	// Dedup: the same chunk again, and referenced from two files, counts once.
	u.must("PUT", "/v1/chunks/"+c1, randBytes(6000), nil)
	f1 := u.create(api.RootID, api.TypeFile, c1, c1)
	f2 := u.create(api.RootID, api.TypeFile, c1)
	c3 := u.putChunk(3000)
	keep := u.create(api.RootID, api.TypeFile, c3)
	if a := u.chunkAccount(); a.QuotaUsed != 9000 {
		t.Fatalf("usage %d, want 9000", a.QuotaUsed)
	}
	checkConsistent(t, e.s, u.id)

	// GC keeps referenced chunks and young unreferenced ones.
	e.s.cfg.GCGrace = time.Hour
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: f1.NameMAC}, nil)
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: f2.NameMAC}, nil)
	if n, _, err := e.s.RunGC(context.Background()); err != nil || n != 0 {
		t.Fatalf("gc within grace: %d %v", n, err)
	}
	if a := u.chunkAccount(); a.QuotaUsed != 9000 {
		t.Fatalf("usage %d before GC, want 9000", a.QuotaUsed)
	}
	e.s.cfg.GCGrace = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	n, freed, err := e.s.RunGC(context.Background())
	if err != nil || n != 1 || freed != 6000 {
		t.Fatalf("gc: %d chunks %d bytes %v", n, freed, err)
	}
	if a := u.chunkAccount(); a.QuotaUsed != 3000 {
		t.Fatalf("usage after GC %d, want 3000", a.QuotaUsed)
	}
	st, code = u.call("GET", "/v1/chunks/"+c1, nil, nil)
	expect(t, "collected chunk", st, code, 404, api.CodeNotFound)
	if chunkStored(t, e.s, u.id, c1) {
		t.Fatal("collected chunk still stored")
	}
	// A reference to a collected chunk fails cleanly.
	st, code = u.call("PUT", fmt.Sprintf("/v1/nodes/%d", keep.Node.ID), api.UpdateRequest{Version: 1, Attrs: randBytes(9), Chunks: []string{c3, c1}}, nil)
	expect(t, "reference collected chunk", st, code, 400, api.CodeBadRequest)
	// Now 7000 fit again (less what the tree's metadata costs).
	u.putChunk(7000 - int(u.metaUsed()))
	if a := u.account(); a.QuotaUsed != 10000 {
		t.Fatalf("usage %d, want 10000", a.QuotaUsed)
	}
	checkConsistent(t, e.s, u.id)
}

func testVersionConflict(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("v@example.com")
	f := u.create(api.RootID, api.TypeFile)
	path := fmt.Sprintf("/v1/nodes/%d", f.Node.ID)
	ch := u.putChunk(10)
	attrs := randBytes(30)
	var n api.Node
	u.must("PUT", path, api.UpdateRequest{Version: 1, Attrs: attrs, Chunks: []string{ch}}, &n)
	if n.Version != 2 || !bytes.Equal(n.Attrs, attrs) || n.Seq == 0 {
		t.Fatalf("update: %+v", n)
	}
	before := checkConsistent(t, e.s, u.id)
	st, code := u.call("PUT", path, api.UpdateRequest{Version: 1, Attrs: randBytes(30)}, nil)
	expect(t, "stale update", st, code, 409, api.CodeConflict)
	st, code = u.call("PUT", path, api.UpdateRequest{Version: 2, Attrs: randBytes(30), Chunks: []string{randMAC()}}, nil)
	expect(t, "update with unstored chunk", st, code, 400, api.CodeBadRequest)
	st, code = u.call("PUT", "/v1/nodes/1", api.UpdateRequest{Version: 1, Attrs: randBytes(30), Chunks: []string{ch}}, nil)
	expect(t, "chunks on a dir", st, code, 400, api.CodeBadRequest)
	st, code = u.call("PUT", fmt.Sprintf("/v1/nodes/%d", randID()), api.UpdateRequest{Version: 1, Attrs: randBytes(30)}, nil)
	expect(t, "update missing node", st, code, 404, api.CodeNotFound)
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("refused updates changed state: %+v -> %+v", before, after)
	}
	u.must("GET", path, nil, &n)
	if n.Version != 2 || !bytes.Equal(n.Attrs, attrs) {
		t.Fatalf("node after refused updates: %+v", n)
	}
	// The root's attributes can be updated.
	u.must("PUT", "/v1/nodes/1", api.UpdateRequest{Version: 1, Attrs: randBytes(30)}, &n)
	if n.Version != 2 {
		t.Fatalf("root update: %+v", n)
	}
}

func (u *user) rename(r api.RenameRequest) (int, string) {
	u.e.t.Helper()
	if r.Name == nil {
		r.Name = randBytes(8)
	}
	return u.call("POST", "/v1/rename", r, nil)
}

func (u *user) node(id uint64) (api.Node, int) {
	var n api.Node
	st, _ := u.call("GET", fmt.Sprintf("/v1/nodes/%d", id), nil, &n)
	return n, st
}

func testRename(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("r@example.com")
	d1 := u.create(api.RootID, api.TypeDir)
	d2 := u.create(api.RootID, api.TypeDir)
	sub := u.create(d1.Node.ID, api.TypeDir)
	ch := u.putChunk(100)
	f1 := u.create(d1.Node.ID, api.TypeFile, ch)
	f2 := u.create(d2.Node.ID, api.TypeFile)
	R := func(sp uint64, sm string, dp uint64, dm, mode string) api.RenameRequest {
		return api.RenameRequest{SrcParent: sp, SrcNameMAC: sm, DstParent: dp, DstNameMAC: dm, Mode: mode}
	}

	// Move a file to a new name in another dir.
	newMAC := randMAC()
	st, code := u.rename(R(d1.Node.ID, f1.NameMAC, d2.Node.ID, newMAC, ""))
	expect(t, "move file", st, code, 200, "")
	if st, _ := u.call("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", d1.Node.ID, f1.NameMAC), nil, nil); st != 404 {
		t.Error("source entry still there")
	}
	var got api.Entry
	u.must("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", d2.Node.ID, newMAC), nil, &got)
	if got.Node.ID != f1.Node.ID {
		t.Error("target entry names the wrong node")
	}
	// Replace an existing file: the replaced node is deleted and its chunk unreferenced.
	st, code = u.rename(R(d2.Node.ID, newMAC, d2.Node.ID, f2.NameMAC, ""))
	expect(t, "replace file", st, code, 200, "")
	if _, st := u.node(f2.Node.ID); st != 404 {
		t.Error("replaced node still exists")
	}
	f1.NameMAC, f1.Parent = f2.NameMAC, d2.Node.ID
	// noreplace.
	f3 := u.create(d2.Node.ID, api.TypeFile)
	st, code = u.rename(R(d2.Node.ID, f3.NameMAC, d2.Node.ID, f1.NameMAC, api.RenameNoReplace))
	expect(t, "noreplace onto existing", st, code, 409, api.CodeExists)
	// Type mismatches and non-empty targets.
	st, code = u.rename(R(d2.Node.ID, f3.NameMAC, api.RootID, d1.NameMAC, ""))
	expect(t, "file over dir", st, code, 409, api.CodeIsDir)
	st, code = u.rename(R(d1.Node.ID, sub.NameMAC, d2.Node.ID, f3.NameMAC, ""))
	expect(t, "dir over file", st, code, 409, api.CodeNotDir)
	st, code = u.rename(R(api.RootID, d2.NameMAC, api.RootID, d1.NameMAC, ""))
	expect(t, "dir over non-empty dir", st, code, 409, api.CodeNotEmpty)
	empty := u.create(api.RootID, api.TypeDir)
	st, code = u.rename(R(d1.Node.ID, sub.NameMAC, api.RootID, empty.NameMAC, ""))
	expect(t, "dir over empty dir", st, code, 200, "")
	if _, st := u.node(empty.Node.ID); st != 404 {
		t.Error("replaced empty dir still exists")
	}
	if n, _ := u.node(sub.Node.ID); n.Parent != api.RootID {
		t.Errorf("moved dir Parent=%d, want root", n.Parent)
	}
	sub.NameMAC, sub.Parent = empty.NameMAC, api.RootID
	// A directory cannot move under itself.
	st, code = u.rename(R(api.RootID, d1.NameMAC, d1.Node.ID, randMAC(), ""))
	expect(t, "dir into itself", st, code, 400, api.CodeInvalidMove)
	inner := u.create(d1.Node.ID, api.TypeDir)
	deep := u.create(inner.Node.ID, api.TypeDir)
	st, code = u.rename(R(api.RootID, d1.NameMAC, deep.Node.ID, randMAC(), ""))
	expect(t, "dir under its grandchild", st, code, 400, api.CodeInvalidMove)
	// Exchange a file and a dir across parents: Parent fields follow.
	st, code = u.rename(R(d2.Node.ID, f3.NameMAC, d1.Node.ID, inner.NameMAC, api.RenameExchange))
	expect(t, "exchange without src_name", st, code, 400, api.CodeBadRequest)
	ex := R(d2.Node.ID, f3.NameMAC, d1.Node.ID, inner.NameMAC, api.RenameExchange)
	ex.SrcName = randBytes(8)
	st, code = u.rename(ex)
	expect(t, "exchange", st, code, 200, "")
	if n, _ := u.node(inner.Node.ID); n.Parent != d2.Node.ID {
		t.Errorf("exchanged dir Parent=%d, want %d", n.Parent, d2.Node.ID)
	}
	u.must("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", d2.Node.ID, f3.NameMAC), nil, &got)
	if got.Node.ID != inner.Node.ID || !bytes.Equal(got.Name, ex.SrcName) {
		t.Error("exchange: source name does not name the target node")
	}
	ex2 := R(d2.Node.ID, f3.NameMAC, d1.Node.ID, randMAC(), api.RenameExchange)
	ex2.SrcName = randBytes(8)
	st, code = u.rename(ex2)
	expect(t, "exchange with missing target", st, code, 404, api.CodeNotFound)
	// Exchanging a dir with an entry inside it would move it under itself.
	ex3 := R(api.RootID, d2.NameMAC, d2.Node.ID, f3.NameMAC, api.RenameExchange)
	ex3.SrcName = randBytes(8)
	st, code = u.rename(ex3)
	expect(t, "exchange dir with its child", st, code, 400, api.CodeInvalidMove)
	// Missing source.
	st, code = u.rename(R(api.RootID, randMAC(), api.RootID, randMAC(), ""))
	expect(t, "missing source", st, code, 404, api.CodeNotFound)
	// Rename of a hard link onto another link of the same file does nothing.
	l := api.LinkRequest{ID: f1.Node.ID, Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(5)}
	u.must("POST", "/v1/link", l, nil)
	st, code = u.rename(R(api.RootID, l.NameMAC, d2.Node.ID, f1.NameMAC, ""))
	expect(t, "rename onto own hard link", st, code, 200, "")
	if n, _ := u.node(f1.Node.ID); n.Nlink != 2 {
		t.Errorf("nlink %d after rename onto own link", n.Nlink)
	}
	// Rename onto itself.
	st, code = u.rename(R(api.RootID, l.NameMAC, api.RootID, l.NameMAC, ""))
	expect(t, "rename onto itself", st, code, 200, "")
	checkConsistent(t, e.s, u.id)
}

func testUnlinkLink(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("u@example.com")
	d := u.create(api.RootID, api.TypeDir)
	ch := u.putChunk(10)
	f := u.create(d.Node.ID, api.TypeFile, ch)
	st, code := u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: d.NameMAC, Dir: true}, nil)
	expect(t, "rmdir non-empty", st, code, 409, api.CodeNotEmpty)
	st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: d.NameMAC}, nil)
	expect(t, "unlink dir", st, code, 409, api.CodeIsDir)
	st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: d.Node.ID, NameMAC: f.NameMAC, Dir: true}, nil)
	expect(t, "rmdir file", st, code, 409, api.CodeNotDir)
	st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: f.Node.ID, NameMAC: randMAC()}, nil)
	expect(t, "unlink under a file", st, code, 409, api.CodeNotDir)
	st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: 1 << 40, NameMAC: randMAC()}, nil)
	expect(t, "unlink under a missing directory", st, code, 404, api.CodeNotFound)
	st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: d.Node.ID, NameMAC: randMAC()}, nil)
	expect(t, "unlink a missing name", st, code, 404, api.CodeNotFound)
	st, code = u.call("POST", "/v1/link", api.LinkRequest{ID: d.Node.ID, Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(4)}, nil)
	expect(t, "link dir", st, code, 409, api.CodeIsDir)
	st, code = u.call("POST", "/v1/link", api.LinkRequest{ID: f.Node.ID, Parent: api.RootID, NameMAC: d.NameMAC, Name: randBytes(4)}, nil)
	expect(t, "link over existing", st, code, 409, api.CodeExists)
	var le api.Entry
	l := api.LinkRequest{ID: f.Node.ID, Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(4)}
	u.must("POST", "/v1/link", l, &le)
	if le.Node.Nlink != 2 {
		t.Fatalf("nlink after link %d", le.Node.Nlink)
	}
	checkConsistent(t, e.s, u.id)
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: d.Node.ID, NameMAC: f.NameMAC}, nil)
	if n, st := u.node(f.Node.ID); st != 200 || n.Nlink != 1 {
		t.Fatalf("after unlinking one link: %d %+v", st, n)
	}
	st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: d.Node.ID, NameMAC: f.NameMAC}, nil)
	expect(t, "unlink twice", st, code, 404, api.CodeNotFound)
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: l.NameMAC}, nil)
	if _, st := u.node(f.Node.ID); st != 404 {
		t.Fatalf("node after last unlink: %d", st)
	}
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: d.NameMAC, Dir: true}, nil)
	if _, st := u.node(d.Node.ID); st != 404 {
		t.Fatalf("dir after rmdir: %d", st)
	}
	if s := checkConsistent(t, e.s, u.id); s.nodes != 1 || s.entries != 0 {
		t.Fatalf("state after removing all: %+v", s)
	}
}
