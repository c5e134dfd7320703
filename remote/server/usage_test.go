package server

import (
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// TestMetadataCharged: sealed attributes, sealed names and name MACs count
// against the quota, exactly, through create, update, rename (plain, over a
// name, exchange), link, unlink and batches; growth the quota cannot hold is
// refused with quota_exceeded and changes nothing. (Before, 40 nodes of 2
// MiB attributes fitted in a 1 MiB quota and usage stayed 0.)
func TestMetadataCharged(t *testing.T) {
	const quota = 1 << 20
	e := newEnv(t, localBlobs, func(c *Config) { c.DefaultQuota = quota })
	u := e.signup("meta@example.com")
	used := func() int64 { t.Helper(); return u.account().QuotaUsed }
	mkdir := func(name []byte, attrs int) api.Entry {
		t.Helper()
		var en api.Entry
		u.must("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: name,
			ID: randID(), Type: api.TypeDir, Attrs: randBytes(attrs)}, &en)
		return en
	}
	mkdir(randBytes(10), 10) // first mutation: the root (40 bytes of attributes at signup) is counted
	base := used()
	if base != 40+10+10+32 {
		t.Fatalf("usage after signup and one directory: %d, want %d", base, 40+10+10+32)
	}

	// The abuse: nodes of 2 MiB attributes. The first does not fit, and nothing changes.
	before := checkConsistent(t, e.s, u.id)
	st, code := u.call("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(10),
		ID: randID(), Type: api.TypeFile, Attrs: randBytes(api.MaxAttrsSize)}, nil)
	expect(t, "create with 2 MiB attributes in a 1 MiB quota", st, code, 507, api.CodeQuota)
	var resp api.BatchResponse
	var ops []api.BatchOp
	for range 40 {
		ops = append(ops, api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(),
			Name: randBytes(10), ID: randID(), Type: api.TypeFile, Attrs: randBytes(60 << 10)}})
	}
	u.must("POST", "/v1/batch", api.BatchRequest{Ops: ops}, &resp)
	ok := 0
	for _, r := range resp.Results {
		if r.Error == nil {
			ok++
		} else if r.Error.Code != api.CodeQuota {
			t.Fatalf("batch op refused with %v, want %s", r.Error, api.CodeQuota)
		}
	}
	if fit := int((quota - base) / (60<<10 + 10 + 32)); ok != fit {
		t.Fatalf("%d creates of 60 KiB attributes fitted in a 1 MiB quota, want %d", ok, fit)
	}
	if u := used(); u > quota || u != base+int64(ok)*(60<<10+10+32) {
		t.Fatalf("usage %d after %d creates of 60 KiB attributes, want %d (quota %d)", u, ok, base+int64(ok)*(60<<10+10+32), quota)
	}
	checkConsistent(t, e.s, u.id)
	// Remove the batch's files: every byte comes back.
	for i, r := range resp.Results {
		if r.Error == nil {
			u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: ops[i].Create.NameMAC}, nil)
		}
	}
	if after := checkConsistent(t, e.s, u.id); after.used != before.used || after.nodes != before.nodes {
		t.Fatalf("after deleting the batch's files: %+v, want usage and nodes of %+v", after, before)
	}

	// Update: the difference of the attributes; growth over quota refused.
	f := u.create(api.RootID, api.TypeFile) // 50 bytes of attributes, a 20-byte name
	u0 := used()
	var n api.Node
	u.must("PUT", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), api.UpdateRequest{Version: 1, Attrs: randBytes(5000)}, &n)
	if got := used(); got != u0+5000-50 {
		t.Fatalf("update to 5000 bytes of attributes: usage %d, want %d", got, u0+5000-50)
	}
	before = checkConsistent(t, e.s, u.id)
	st, code = u.call("PUT", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), api.UpdateRequest{Version: n.Version, Attrs: randBytes(quota)}, nil)
	expect(t, "update over quota", st, code, 507, api.CodeQuota)
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("refused update changed state: %+v -> %+v", before, after)
	}
	u.must("PUT", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), api.UpdateRequest{Version: n.Version, Attrs: randBytes(7)}, &n)
	if got := used(); got != u0+7-50 {
		t.Fatalf("update to 7 bytes of attributes: usage %d, want %d", got, u0+7-50)
	}

	// Rename to a longer name, link, rename over a name, exchange.
	u0 = used()
	dstMAC := randMAC()
	u.must("POST", "/v1/rename", api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: f.NameMAC, DstParent: api.RootID,
		DstNameMAC: dstMAC, Name: randBytes(300)}, nil)
	if got := used(); got != u0+300-20 {
		t.Fatalf("rename to a 300-byte name: usage %d, want %d", got, u0+300-20)
	}
	linkMAC := randMAC()
	u.must("POST", "/v1/link", api.LinkRequest{ID: f.Node.ID, Parent: api.RootID, NameMAC: linkMAC, Name: randBytes(100)}, nil)
	if got := used(); got != u0+300-20+100+32 {
		t.Fatalf("link: usage %d, want %d", got, u0+300-20+100+32)
	}
	g := u.create(api.RootID, api.TypeFile)
	u.must("POST", "/v1/rename", api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: g.NameMAC, DstParent: api.RootID,
		DstNameMAC: dstMAC, Name: randBytes(9)}, nil) // over f's 300-byte name: f keeps its link
	d := mkdir(randBytes(12), 60)
	u.must("POST", "/v1/rename", api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: linkMAC, DstParent: api.RootID,
		DstNameMAC: d.NameMAC, Name: randBytes(200), SrcName: randBytes(11), Mode: api.RenameExchange}, nil)
	checkConsistent(t, e.s, u.id)
	// A rename whose longer name the quota cannot hold is refused whole.
	fill := quota - used() - 10
	u.must("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(10),
		ID: randID(), Type: api.TypeFile, Attrs: randBytes(int(fill) - 10 - 32)}, nil)
	before = checkConsistent(t, e.s, u.id)
	st, code = u.call("POST", "/v1/rename", api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: dstMAC, DstParent: api.RootID,
		DstNameMAC: randMAC(), Name: randBytes(400)}, nil)
	expect(t, "rename to a longer name over quota", st, code, 507, api.CodeQuota)
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("refused rename changed state: %+v -> %+v", before, after)
	}
}

// TestNodeCap: Config.MaxNodes caps an account's nodes (the root counts);
// the refusal is node_limit, through a single create and a batch, and
// changes nothing; deleting makes room again.
func TestNodeCap(t *testing.T) {
	e := newEnv(t, localBlobs, func(c *Config) { c.MaxNodes = 5 })
	u := e.signup("cap@example.com")
	var es []api.Entry
	for range 4 {
		es = append(es, u.create(api.RootID, api.TypeFile))
	}
	before := checkConsistent(t, e.s, u.id)
	if before.nodes != 5 {
		t.Fatalf("%d nodes, want 5", before.nodes)
	}
	st, code := u.call("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(10),
		ID: randID(), Type: api.TypeDir, Attrs: randBytes(10)}, nil)
	expect(t, "create over the node cap", st, code, 507, api.CodeNodeLimit)
	var resp api.BatchResponse
	u.must("POST", "/v1/batch", api.BatchRequest{Ops: []api.BatchOp{{Op: api.OpCreate, Create: &api.CreateRequest{
		Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(10), ID: randID(), Type: api.TypeFile, Attrs: randBytes(10)}}}}, &resp)
	if r := resp.Results[0]; r.Error == nil || r.Error.Code != api.CodeNodeLimit {
		t.Fatalf("batch create over the node cap: %+v", r)
	}
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Fatalf("refusals changed state: %+v -> %+v", before, after)
	}
	// Links are not nodes.
	u.must("POST", "/v1/link", api.LinkRequest{ID: es[0].Node.ID, Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(5)}, nil)
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: es[1].NameMAC}, nil)
	u.create(api.RootID, api.TypeDir)
	checkConsistent(t, e.s, u.id)
}

// TestUsageMigration: an account written by a server that charged chunks
// only (no node count, usage = chunk bytes) is recounted when the server
// opens its data directory, before any request.
func TestUsageMigration(t *testing.T) {
	e := newEnv(t, localBlobs, nil)
	u := e.signup("old@example.com")
	ch := u.putChunk(1000)
	u.create(api.RootID, api.TypeFile, ch)
	d := u.create(api.RootID, api.TypeDir)
	u.create(d.Node.ID, api.TypeFile)
	want := checkConsistent(t, e.s, u.id)
	// Make it look like the older server's record.
	err := e.s.db.Update(func(tx *badger.Txn) error {
		var a accountRec
		if err := getJSON(tx, kAcct(u.id), &a); err != nil {
			return err
		}
		a.Used, a.Nodes, a.UsageV = 1000, 0, 0
		return setJSON(tx, kAcct(u.id), &a)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.reopen()
	var a accountRec
	if err := e.s.db.View(func(tx *badger.Txn) error { return getJSON(tx, kAcct(u.id), &a) }); err != nil {
		t.Fatal(err)
	}
	if a.UsageV != usageVersion || a.Used != want.used || a.Nodes != 4 {
		t.Fatalf("after reopening: usage %d (v%d), %d nodes; want %d, 4 nodes", a.Used, a.UsageV, a.Nodes, want.used)
	}
	if got := u.account().QuotaUsed; got != want.used || got != 1000+u.metaUsed() {
		t.Fatalf("account shows usage %d, want %d", got, want.used)
	}
}
