package server

import (
	"bytes"
	"fmt"
	"testing"

	"kumo/remote/api"
)

// A rename that names the node the client believes the entry names is refused
// when the entry names another node now (its v2 name would not open there),
// changing nothing; a rename of an entry onto itself with a new name replaces
// the sealed name (format migration) and announces it.
func TestRenameChecksNode(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("rn@example.com")
	a := u.create(api.RootID, api.TypeFile)
	b := u.create(api.RootID, api.TypeFile)
	entry := func(mac string) api.Entry {
		t.Helper()
		var got api.Entry
		u.must("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", api.RootID, mac), nil, &got)
		return got
	}
	req := api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: a.NameMAC, DstParent: api.RootID, DstNameMAC: randMAC(),
		Name: randBytes(20), Node: b.Node.ID}
	st, code := u.rename(req)
	expect(t, "rename naming another node", st, code, 409, api.CodeConflict)
	if got := entry(a.NameMAC); got.Node.ID != a.Node.ID || !bytes.Equal(got.Name, a.Name) {
		t.Fatal("a refused rename changed the entry")
	}
	ex := api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: a.NameMAC, DstParent: api.RootID, DstNameMAC: b.NameMAC,
		Name: randBytes(20), SrcName: randBytes(20), Mode: api.RenameExchange, Node: a.Node.ID, DstNode: a.Node.ID}
	st, code = u.rename(ex)
	expect(t, "exchange naming another target node", st, code, 409, api.CodeConflict)

	seq := u.account().Seq
	name := randBytes(33)
	st, code = u.rename(api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: a.NameMAC, DstParent: api.RootID, DstNameMAC: a.NameMAC,
		Name: name, Node: a.Node.ID})
	expect(t, "re-seal in place", st, code, 200, "")
	if got := entry(a.NameMAC); got.Node.ID != a.Node.ID || !bytes.Equal(got.Name, name) {
		t.Fatal("the sealed name was not replaced in place")
	}
	if u.account().Seq == seq {
		t.Fatal("the re-sealed name was not announced on the change feed")
	}
	// Without a node (older clients), a rename onto itself still does nothing.
	st, code = u.rename(api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: a.NameMAC, DstParent: api.RootID, DstNameMAC: a.NameMAC, Name: randBytes(9)})
	expect(t, "rename onto itself", st, code, 200, "")
	if got := entry(a.NameMAC); !bytes.Equal(got.Name, name) {
		t.Fatal("a rename onto itself without a node changed the name")
	}
}

// An unlink that names the node the client saw at the name is refused when
// the entry names another node now (another client replaced the file),
// changing nothing; naming the entry's node, or none (older clients), it
// goes through.
func TestUnlinkChecksNode(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("ul@example.com")
	a := u.create(api.RootID, api.TypeFile)
	b := u.create(api.RootID, api.TypeFile)
	seq := u.account().Seq
	st, code := u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: a.NameMAC, Node: b.Node.ID}, nil)
	expect(t, "unlink naming another node", st, code, 409, api.CodeConflict)
	var got api.Entry
	u.must("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", api.RootID, a.NameMAC), nil, &got)
	if got.Node.ID != a.Node.ID || got.Node.Nlink != 1 || u.account().Seq != seq {
		t.Fatalf("a refused unlink changed something: entry names %d (nlink %d), seq %d -> %d", got.Node.ID, got.Node.Nlink, seq, u.account().Seq)
	}
	// The same in a batch.
	var br api.BatchResponse
	u.must("POST", "/v1/batch", api.BatchRequest{Ops: []api.BatchOp{{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: api.RootID, NameMAC: b.NameMAC, Node: a.Node.ID}}}}, &br)
	if len(br.Results) != 1 || br.Results[0].Error == nil || br.Results[0].Error.Code != api.CodeConflict {
		t.Fatalf("batched unlink naming another node: %+v, want conflict", br.Results)
	}
	st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: a.NameMAC, Node: a.Node.ID}, nil)
	expect(t, "unlink naming the entry's node", st, code, 200, "")
	st, code = u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: b.NameMAC}, nil)
	expect(t, "unlink without a node", st, code, 200, "")
}
