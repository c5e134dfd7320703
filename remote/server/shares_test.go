package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// sealedFor is a stand-in record sealed under key id (share, gen): the clear
// v2 header the server reads, then bytes it cannot read anyway.
func sealedFor(share uint64, gen uint32, n int) []byte {
	b := []byte{0x02}
	b = binary.BigEndian.AppendUint64(b, share)
	b = binary.BigEndian.AppendUint32(b, gen)
	return append(b, randBytes(n)...)
}

// scoped sends a request with the Kumo-Share header scope (none if "").
func (u *user) scoped(scope, method, path string, body, out any) (int, string) {
	u.e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			u.e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, u.e.url+path, rd)
	if err != nil {
		u.e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	if scope != "" {
		req.Header.Set(api.ShareHeader, scope)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		u.e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var er api.ErrorResponse
		if err := json.Unmarshal(data, &er); err != nil || er.Error.Code == "" {
			return resp.StatusCode, fmt.Sprintf("(non-json %q)", data)
		}
		return resp.StatusCode, er.Error.Code
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			u.e.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, ""
}

// shareFixture: owner A with a home file H and a file H2 in its root, and a
// shared directory D (share S, generation 1) holding file F; W is an
// accepted writer, R an accepted reader, X an outsider.
type shareFixture struct {
	e           *env
	a, w, rd, x *user
	share       uint64
	scope       string
	d, f, h, h2 api.Entry
}

func newShareFixture(t *testing.T, mod func(*Config)) *shareFixture {
	e := newEnv(t, nil, mod)
	fx := &shareFixture{e: e, a: e.signup("owner@example.com"), w: e.signup("writer@example.com"),
		rd: e.signup("reader@example.com"), x: e.signup("outsider@example.com"), share: randID()}
	a := fx.a
	fx.scope = api.FormatShareScope(a.id, fx.share)
	fx.h = a.create(api.RootID, api.TypeFile)
	fx.h2 = a.create(api.RootID, api.TypeFile)
	// The share root: its entry in the owner's root is a home record, its
	// attributes are the share's.
	a.must("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(20),
		ID: randID(), Type: api.TypeDir, Attrs: sealedFor(fx.share, 1, 50)}, &fx.d)
	a.must("POST", "/v1/nodes", api.CreateRequest{Parent: fx.d.Node.ID, NameMAC: randMAC(), Name: sealedFor(fx.share, 1, 20),
		ID: randID(), Type: api.TypeFile, Attrs: sealedFor(fx.share, 1, 50)}, &fx.f)
	a.must("POST", "/v1/shares", api.CreateShareRequest{Share: fx.share, Root: fx.d.Node.ID, Generation: 1, Roster: []byte("roster v1")}, nil)
	for _, m := range []struct {
		u    *user
		role string
	}{{fx.w, api.RoleWriter}, {fx.rd, api.RoleReader}} {
		a.must("POST", "/v1/shares/"+api.FormatShareID(fx.share)+"/members", api.ShareMemberRequest{Email: m.u.email, Role: m.role,
			Wrapped: []api.ShareWrapped{{Generation: 1, Blob: []byte("secret for " + m.u.email)}}, Roster: []byte("roster v1")}, nil)
	}
	return fx
}

func (fx *shareFixture) accept(u *user) {
	u.must("POST", "/v1/shares/accept", api.ShareAcceptRequest{OwnerID: fx.a.id, Share: fx.share}, nil)
}

func (fx *shareFixture) createReq(parent uint64, typ string, gen uint32) api.CreateRequest {
	return api.CreateRequest{Parent: parent, NameMAC: randMAC(), Name: sealedFor(fx.share, gen, 20),
		ID: randID(), Type: typ, Attrs: sealedFor(fx.share, gen, 50)}
}

// TestShareRoles: an accepted writer reads and writes in the share, a reader
// only reads, and nobody reaches a node outside the share, by id or by name.
func TestShareRoles(t *testing.T) {
	fx := newShareFixture(t, nil)
	a, w, rd, x := fx.a, fx.w, fx.rd, fx.x

	// Invited, not yet accepted: refused. An outsider: refused.
	st, code := w.scoped(fx.scope, "GET", fmt.Sprintf("/v1/nodes/%d", fx.d.Node.ID), nil, nil)
	expect(t, "writer before accepting", st, code, 403, api.CodeForbidden)
	st, code = x.scoped(fx.scope, "GET", fmt.Sprintf("/v1/nodes/%d", fx.d.Node.ID), nil, nil)
	expect(t, "outsider", st, code, 403, api.CodeForbidden)
	var sr api.SharesResponse
	w.must("GET", "/v1/shares", nil, &sr)
	if len(sr.Invitations) != 1 || sr.Invitations[0].OwnerEmail != a.email || sr.Invitations[0].Role != api.RoleWriter ||
		len(sr.Joined) != 0 || string(sr.Invitations[0].Wrapped[0].Blob) != "secret for "+w.email {
		t.Fatalf("writer's invitations: %+v", sr)
	}
	fx.accept(w)
	fx.accept(rd)
	w.must("GET", "/v1/shares", nil, &sr)
	if len(sr.Joined) != 1 || sr.Joined[0].Root != fx.d.Node.ID || sr.Joined[0].Generation != 1 || len(sr.Invitations) != 0 {
		t.Fatalf("writer's shares: %+v", sr)
	}
	a.must("GET", "/v1/shares", nil, &sr)
	if len(sr.Owned) != 1 || len(sr.Owned[0].Members) != 2 || sr.Owned[0].Members[0].State != api.MemberAccepted {
		t.Fatalf("owner's shares: %+v", sr)
	}

	// Reads, by both members: the root, its listing, a lookup, a file.
	for _, u := range []*user{w, rd} {
		var es []api.Entry
		if st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/nodes/%d/entries", fx.d.Node.ID), nil, &es); code != "" ||
			len(es) != 1 || es[0].Node.ID != fx.f.Node.ID {
			t.Fatalf("%s lists the share root: %d %s %+v", u.email, st, code, es)
		}
		var n api.Node
		if st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID), nil, &n); code != "" || !bytes.Equal(n.Attrs, fx.f.Node.Attrs) {
			t.Fatalf("%s reads F: %d %s", u.email, st, code)
		}
		var en api.Entry
		if st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", fx.d.Node.ID, fx.f.NameMAC), nil, &en); code != "" || en.Node.ID != fx.f.Node.ID {
			t.Fatalf("%s looks F up: %d %s", u.email, st, code)
		}
		// Outside the share, by id: the owner's home file and root.
		for _, id := range []uint64{fx.h.Node.ID, api.RootID} {
			st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/nodes/%d", id), nil, nil)
			expect(t, fmt.Sprintf("%s reads node %d outside the share", u.email, id), st, code, 404, api.CodeNotFound)
			st, code = u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/nodes/%d/entries", api.RootID), nil, nil)
			expect(t, u.email+" lists the owner's root", st, code, 404, api.CodeNotFound)
		}
		// The header is not for other endpoints.
		st, code := u.scoped(fx.scope, "GET", "/v1/account", nil, nil)
		expect(t, u.email+" account with the header", st, code, 400, api.CodeBadRequest)
	}

	// The reader: every change refused, nothing changed.
	seq := a.account().Seq
	used := a.account().QuotaUsed
	st, code = rd.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(fx.d.Node.ID, api.TypeFile, 1), nil)
	expect(t, "reader creates", st, code, 403, api.CodeForbidden)
	st, code = rd.scoped(fx.scope, "PUT", fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID),
		api.UpdateRequest{Version: fx.f.Node.Version, Attrs: sealedFor(fx.share, 1, 60)}, nil)
	expect(t, "reader updates", st, code, 403, api.CodeForbidden)
	st, code = rd.scoped(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: fx.d.Node.ID, NameMAC: fx.f.NameMAC}, nil)
	expect(t, "reader unlinks", st, code, 403, api.CodeForbidden)
	st, code = rd.scoped(fx.scope, "POST", "/v1/rename", api.RenameRequest{SrcParent: fx.d.Node.ID, SrcNameMAC: fx.f.NameMAC,
		DstParent: fx.d.Node.ID, DstNameMAC: randMAC(), Name: sealedFor(fx.share, 1, 20)}, nil)
	expect(t, "reader renames", st, code, 403, api.CodeForbidden)
	st, code = rd.scoped(fx.scope, "PUT", "/v1/chunks/"+randMAC(), randBytes(1000), nil)
	expect(t, "reader uploads a chunk", st, code, 403, api.CodeForbidden)
	var br api.BatchResponse
	rd.must("POST", "/v1/batch", api.BatchRequest{Ops: []api.BatchOp{{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: api.RootID, NameMAC: randMAC()}}}}, &br) // its own tree: fine
	if st, code := rd.scoped(fx.scope, "POST", "/v1/batch", api.BatchRequest{Ops: []api.BatchOp{{Op: api.OpUnlink,
		Unlink: &api.UnlinkRequest{Parent: fx.d.Node.ID, NameMAC: fx.f.NameMAC}}}}, &br); code != "" || br.Results[0].Error == nil || br.Results[0].Error.Code != api.CodeForbidden {
		t.Fatalf("reader's batch unlink: %d %s %+v", st, code, br.Results)
	}
	if got := a.account(); got.Seq != seq || got.QuotaUsed != used {
		t.Fatalf("the reader's refused requests changed the owner's account: seq %d -> %d, used %d -> %d", seq, got.Seq, used, got.QuotaUsed)
	}

	// The writer: changes in the share work...
	var g api.Entry
	if st, code := w.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(fx.d.Node.ID, api.TypeDir, 1), &g); code != "" {
		t.Fatalf("writer creates a directory: %d %s", st, code)
	}
	var n api.Node
	if st, code := w.scoped(fx.scope, "PUT", fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID),
		api.UpdateRequest{Version: fx.f.Node.Version, Attrs: sealedFor(fx.share, 1, 60)}, &n); code != "" || n.Version != fx.f.Node.Version+1 {
		t.Fatalf("writer updates F: %d %s", st, code)
	}
	newMAC := randMAC()
	if st, code := w.scoped(fx.scope, "POST", "/v1/rename", api.RenameRequest{SrcParent: fx.d.Node.ID, SrcNameMAC: fx.f.NameMAC,
		DstParent: g.Node.ID, DstNameMAC: newMAC, Name: sealedFor(fx.share, 1, 20)}, nil); code != "" {
		t.Fatalf("writer moves F into G: %d %s", st, code)
	}
	fx.f.Parent, fx.f.NameMAC = g.Node.ID, newMAC
	// The owner sees it all in its own tree, without the header.
	if es := a.list(g.Node.ID); len(es) != 1 || es[0].Node.ID != fx.f.Node.ID {
		t.Fatalf("owner lists G: %+v", es)
	}

	// ...and nothing outside it, by id or by name.
	st, code = w.scoped(fx.scope, "PUT", fmt.Sprintf("/v1/nodes/%d", fx.h.Node.ID),
		api.UpdateRequest{Version: fx.h.Node.Version, Attrs: sealedFor(fx.share, 1, 60)}, nil)
	expect(t, "writer updates the owner's home file by id", st, code, 404, api.CodeNotFound)
	st, code = w.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(api.RootID, api.TypeFile, 1), nil)
	expect(t, "writer creates in the owner's root", st, code, 404, api.CodeNotFound)
	st, code = w.scoped(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: fx.h.NameMAC}, nil)
	expect(t, "writer unlinks the owner's home file", st, code, 404, api.CodeNotFound)
	st, code = w.scoped(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: fx.d.NameMAC, Dir: true}, nil)
	expect(t, "writer removes the share root's entry", st, code, 404, api.CodeNotFound)
	st, code = w.scoped(fx.scope, "POST", "/v1/link", api.LinkRequest{ID: fx.h.Node.ID, Parent: fx.d.Node.ID,
		NameMAC: randMAC(), Name: sealedFor(fx.share, 1, 20)}, nil)
	expect(t, "writer links the owner's home file into the share", st, code, 404, api.CodeNotFound)
	st, code = w.scoped(fx.scope, "POST", "/v1/rename", api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: fx.h.NameMAC,
		DstParent: fx.d.Node.ID, DstNameMAC: randMAC(), Name: sealedFor(fx.share, 1, 20)}, nil)
	expect(t, "writer moves the owner's home file into the share", st, code, 404, api.CodeNotFound)
	// Leaving the share: cross_share.
	st, code = w.scoped(fx.scope, "POST", "/v1/rename", api.RenameRequest{SrcParent: g.Node.ID, SrcNameMAC: fx.f.NameMAC,
		DstParent: api.RootID, DstNameMAC: randMAC(), Name: sealedFor(fx.share, 1, 20)}, nil)
	expect(t, "writer moves F out of the share", st, code, 409, api.CodeCrossShare)
	st, code = w.scoped(fx.scope, "POST", "/v1/rename", api.RenameRequest{SrcParent: g.Node.ID, SrcNameMAC: fx.f.NameMAC,
		DstParent: api.RootID, DstNameMAC: fx.h.NameMAC, Name: sealedFor(fx.share, 1, 20)}, nil)
	expect(t, "writer moves F over the owner's home file", st, code, 409, api.CodeCrossShare)
	st, code = w.scoped(fx.scope, "POST", "/v1/link", api.LinkRequest{ID: fx.f.Node.ID, Parent: api.RootID,
		NameMAC: randMAC(), Name: sealedFor(fx.share, 1, 20)}, nil)
	expect(t, "writer links F into the owner's root", st, code, 409, api.CodeCrossShare)
	// Records not sealed for the share: refused.
	bad := fx.createReq(fx.d.Node.ID, api.TypeFile, 1)
	bad.Attrs = sealedFor(0, 0, 50)
	st, code = w.scoped(fx.scope, "POST", "/v1/nodes", bad, nil)
	expect(t, "writer creates with home attributes", st, code, 403, api.CodeForbidden)
	bad = fx.createReq(fx.d.Node.ID, api.TypeFile, 1)
	bad.Name = append([]byte{0x01}, randBytes(40)...) // v1: the home tree
	st, code = w.scoped(fx.scope, "POST", "/v1/nodes", bad, nil)
	expect(t, "writer creates with a v1 name", st, code, 403, api.CodeForbidden)
	st, code = w.scoped(fx.scope, "PUT", fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID),
		api.UpdateRequest{Version: n.Version, Attrs: sealedFor(fx.share+1, 1, 60)}, nil)
	expect(t, "writer updates F with another share's attributes", st, code, 403, api.CodeForbidden)

	// The owner's home file is as it was.
	var hn api.Node
	a.must("GET", fmt.Sprintf("/v1/nodes/%d", fx.h.Node.ID), nil, &hn)
	if hn.Version != fx.h.Node.Version || !bytes.Equal(hn.Attrs, fx.h.Node.Attrs) || hn.Nlink != 1 {
		t.Fatalf("owner's home file changed: %+v", hn)
	}
	// Without the header, members see their own trees only.
	if es := w.list(api.RootID); len(es) != 0 {
		t.Fatalf("writer's own root: %+v", es)
	}
	st, code = w.call("GET", fmt.Sprintf("/v1/nodes/%d", fx.d.Node.ID), nil, nil)
	expect(t, "writer reads the share root without the header", st, code, 404, api.CodeNotFound)
}

// TestShareRotate: after a rotation that removes a member, its next request
// is refused; the remaining writer's records must be under the new
// generation; deleting the share ends every member's access.
func TestShareRotate(t *testing.T) {
	fx := newShareFixture(t, nil)
	a, w, rd := fx.a, fx.w, fx.rd
	fx.accept(w)
	fx.accept(rd)
	path := fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID)
	rd.scopedMust(fx.scope, "GET", path)

	sid := api.FormatShareID(fx.share)
	st, code := a.call("POST", "/v1/shares/"+sid+"/rotate", api.ShareRotateRequest{Generation: 3, Roster: []byte("r2"),
		Remove: []string{rd.email}}, nil)
	expect(t, "rotate skipping a generation", st, code, 409, api.CodeConflict)
	st, code = w.call("POST", "/v1/shares/"+sid+"/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r2"),
		Remove: []string{rd.email}}, nil)
	expect(t, "a member rotates", st, code, 404, api.CodeNotFound)
	rd.scopedMust(fx.scope, "GET", path) // nothing changed

	a.must("POST", "/v1/shares/"+sid+"/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r2"),
		Remove: []string{rd.email}, Wrapped: map[string][]api.ShareWrapped{w.email: {{Generation: 2, Blob: []byte("gen 2 for w")}}}}, nil)
	st, code = rd.scoped(fx.scope, "GET", path, nil, nil)
	expect(t, "removed reader reads right after the rotation", st, code, 403, api.CodeForbidden)
	var sr api.SharesResponse
	rd.must("GET", "/v1/shares", nil, &sr)
	if len(sr.Joined)+len(sr.Invitations) != 0 {
		t.Fatalf("removed reader still lists the share: %+v", sr)
	}
	w.must("GET", "/v1/shares", nil, &sr)
	if len(sr.Joined) != 1 || sr.Joined[0].Generation != 2 || len(sr.Joined[0].Wrapped) != 2 {
		t.Fatalf("writer's share after rotation: %+v", sr)
	}

	// The current generation with nobody removed replaces the roster only
	// (the owner's re-seal raising the lowest accepted generation); with a
	// removal it is a rotation that skips no generation: 409.
	st, code = a.call("POST", "/v1/shares/"+sid+"/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r2b"),
		Remove: []string{w.email}}, nil)
	expect(t, "rotate to the current generation removing a member", st, code, 409, api.CodeConflict)
	a.must("POST", "/v1/shares/"+sid+"/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r2b")}, nil)
	w.must("GET", "/v1/shares", nil, &sr)
	if len(sr.Joined) != 1 || sr.Joined[0].Generation != 2 || string(sr.Joined[0].Roster) != "r2b" || len(sr.Joined[0].Wrapped) != 2 {
		t.Fatalf("writer's share after the roster update: %+v", sr)
	}

	st, code = w.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(fx.d.Node.ID, api.TypeFile, 1), nil)
	expect(t, "writer creates under the old generation", st, code, 409, api.CodeStaleGeneration)
	if st, code := w.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(fx.d.Node.ID, api.TypeFile, 2), nil); code != "" {
		t.Fatalf("writer creates under the new generation: %d %s", st, code)
	}

	// Demoted to reader: its next write is refused, reads go on.
	a.must("POST", "/v1/shares/"+sid+"/members", api.ShareMemberRequest{Email: w.email, Role: api.RoleReader, Roster: []byte("r3")}, nil)
	st, code = w.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(fx.d.Node.ID, api.TypeFile, 2), nil)
	expect(t, "demoted writer creates", st, code, 403, api.CodeForbidden)
	w.scopedMust(fx.scope, "GET", path)

	// The operator disables the owner: its members are refused too.
	if err := fx.e.s.SetDisabled(a.email, true); err != nil {
		t.Fatal(err)
	}
	st, code = w.scoped(fx.scope, "GET", path, nil, nil)
	expect(t, "writer of a disabled owner", st, code, 403, api.CodeForbidden)
	if err := fx.e.s.SetDisabled(a.email, false); err != nil {
		t.Fatal(err)
	}
	w.scopedMust(fx.scope, "GET", path)

	a.must("DELETE", "/v1/shares/"+sid, nil, nil)
	st, code = w.scoped(fx.scope, "GET", path, nil, nil)
	expect(t, "writer after the share was deleted", st, code, 403, api.CodeForbidden)
	a.must("GET", path, nil, nil) // the records stay
}

func (u *user) scopedMust(scope, method, path string) {
	u.e.t.Helper()
	if st, code := u.scoped(scope, method, path, nil, nil); code != "" {
		u.e.t.Fatalf("%s %s on the share: %d %s", method, path, st, code)
	}
}

// TestShareQuota: a writer's chunks and records are stored in and counted
// against the owner's account, and refused at the owner's limit with the
// quota error, though the writer's own account is empty.
func TestShareQuota(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.DefaultQuota = 1 << 20; c.SmallChunkMax = -1 })
	a, w := fx.a, fx.w
	fx.accept(w)
	before, wBefore := a.account().QuotaUsed, w.account().QuotaUsed

	id := randMAC()
	if st, code := w.scoped(fx.scope, "PUT", "/v1/chunks/"+id, randBytes(600<<10), nil); code != "" {
		t.Fatalf("writer uploads 600 KiB: %d %s", st, code)
	}
	if got := a.account().QuotaUsed; got < before+600<<10 {
		t.Fatalf("owner's usage %d after the writer's upload, was %d", got, before)
	}
	if got := w.account().QuotaUsed; got != wBefore {
		t.Fatalf("writer's own usage moved: %d -> %d", wBefore, got)
	}
	if !chunkStored(t, fx.e.s, a.id, id) || chunkStored(t, fx.e.s, w.id, id) {
		t.Fatal("the writer's chunk is not in the owner's chunk space (only)")
	}
	// A file of the share referencing it: the owner's chunk.
	req := fx.createReq(fx.d.Node.ID, api.TypeFile, 1)
	req.Chunks = []string{id}
	aUsed := a.account().QuotaUsed
	if st, code := w.scoped(fx.scope, "POST", "/v1/nodes", req, nil); code != "" {
		t.Fatalf("writer creates a file of the chunk: %d %s", st, code)
	}
	if got := a.account().QuotaUsed; got <= aUsed { // the sealed attributes and name
		t.Fatalf("owner's usage %d after the writer's create, was %d", got, aUsed)
	}
	if got := w.account().QuotaUsed; got != wBefore {
		t.Fatalf("writer's own usage moved with its create in the share: %d -> %d", wBefore, got)
	}
	var got []byte
	if st, code := w.scopedRaw(fx.scope, "/v1/chunks/"+id, &got); code != "" || len(got) != 600<<10 {
		t.Fatalf("writer reads the chunk back: %d %s %d bytes", st, code, len(got))
	}
	st, code := w.scoped(fx.scope, "PUT", "/v1/chunks/"+randMAC(), randBytes(600<<10), nil)
	expect(t, "writer uploads beyond the owner's quota", st, code, 507, api.CodeQuota)
	// The writer's own account has room: the same upload at home works.
	if st, code := w.call("PUT", "/v1/chunks/"+randMAC(), randBytes(600<<10), nil); code != "" {
		t.Fatalf("writer uploads to its own account: %d %s", st, code)
	}
}

func (u *user) scopedRaw(scope, path string, out *[]byte) (int, string) {
	u.e.t.Helper()
	req, _ := http.NewRequest("GET", u.e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+u.token)
	req.Header.Set(api.ShareHeader, scope)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		u.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	*out, _ = io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Sprintf("%q", *out)
	}
	return resp.StatusCode, ""
}

// TestShareFeed: the feed with the header is the owner's, holding only the
// changes of the share's nodes and directories; a long poll is woken by a
// change in the share, not by one elsewhere in the owner's tree.
func TestShareFeed(t *testing.T) {
	fx := newShareFixture(t, nil)
	a, w, rd := fx.a, fx.w, fx.rd
	fx.accept(w)
	fx.accept(rd)
	var all, mine api.ChangesResponse
	a.must("GET", "/v1/changes?after=0", nil, &all)
	if st, code := rd.scoped(fx.scope, "GET", "/v1/changes?after=0", nil, &mine); code != "" {
		t.Fatalf("reader's feed: %d %s", st, code)
	}
	if mine.Seq != all.Seq || len(mine.Changes) == 0 || len(mine.Changes) >= len(all.Changes) {
		t.Fatalf("share feed %+v of owner's %+v", mine, all)
	}
	for _, c := range mine.Changes {
		if c.Kind == api.ChangeAccount || c.Node == fx.h.Node.ID || c.Node == fx.h2.Node.ID || c.Node == api.RootID || c.Parent == api.RootID {
			t.Errorf("change outside the share on its feed: %+v", c)
		}
	}

	// Long poll from now: a change of the owner's home file does not end it,
	// the writer's change in the share does.
	type answer struct {
		resp     api.ChangesResponse
		st       int
		code     string
		returned time.Time
	}
	done := make(chan answer, 1)
	go func() {
		var r api.ChangesResponse
		st, code := rd.scoped(fx.scope, "GET", fmt.Sprintf("/v1/changes?after=%d&wait=20", mine.Seq), nil, &r)
		done <- answer{r, st, code, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	a.must("PUT", fmt.Sprintf("/v1/nodes/%d", fx.h.Node.ID), api.UpdateRequest{Version: fx.h.Node.Version, Attrs: randBytes(50)}, nil)
	time.Sleep(500 * time.Millisecond)
	select {
	case ans := <-done:
		t.Fatalf("the share's long poll ended on a change outside it: %+v", ans)
	default:
	}
	var n api.Node
	w.scopedMustJSON(fx.scope, "PUT", fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID),
		api.UpdateRequest{Version: fx.f.Node.Version, Attrs: sealedFor(fx.share, 1, 60)}, &n)
	select {
	case ans := <-done:
		if ans.code != "" || len(ans.resp.Changes) != 1 || ans.resp.Changes[0].Node != fx.f.Node.ID || ans.resp.Changes[0].Seq != n.Seq {
			t.Fatalf("long poll answer: %+v (F now at seq %d)", ans, n.Seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the share's long poll did not see the writer's change")
	}
	// The owner's own feed (no header) has both.
	a.must("GET", fmt.Sprintf("/v1/changes?after=%d", mine.Seq), nil, &all)
	if len(all.Changes) != 2 {
		t.Fatalf("owner's feed after the two changes: %+v", all)
	}
}

func (u *user) scopedMustJSON(scope, method, path string, body, out any) {
	u.e.t.Helper()
	if st, code := u.scoped(scope, method, path, body, out); code != "" {
		u.e.t.Fatalf("%s %s on the share: %d %s", method, path, st, code)
	}
}

// TestShareBadRequests: malformed share requests are refused and change nothing.
func TestShareBadRequests(t *testing.T) {
	fx := newShareFixture(t, nil)
	a, w := fx.a, fx.w
	fx.accept(w)
	path := fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID)
	for _, h := range []string{"x", a.id, a.id + "/0000000000000000", a.id + "/" + api.FormatShareID(fx.share) + "/", "../" + api.FormatShareID(fx.share)} {
		st, code := w.scoped(h, "GET", path, nil, nil)
		expect(t, "header "+h, st, code, 400, api.CodeBadRequest)
	}
	// Another share id of the same owner: refused like a non-member.
	st, code := w.scoped(api.FormatShareScope(a.id, fx.share+1), "GET", path, nil, nil)
	expect(t, "unknown share", st, code, 403, api.CodeForbidden)
	// The header on the shares endpoints themselves, links, the head: 400
	// (history reads take it: history_share_test.go).
	for _, p := range []string{"/v1/shares", "/v1/links", "/v1/head"} {
		st, code := w.scoped(fx.scope, "GET", p, nil, nil)
		expect(t, p+" with the header", st, code, 400, api.CodeBadRequest)
	}
	sid := api.FormatShareID(fx.share)
	for _, c := range []struct {
		what, method, path string
		body               any
		st                 int
		code               string
	}{
		{"share id taken", "POST", "/v1/shares", api.CreateShareRequest{Share: fx.share, Root: fx.f.Node.ID, Generation: 1, Roster: []byte("r")}, 409, api.CodeExists},
		{"root already shared", "POST", "/v1/shares", api.CreateShareRequest{Share: fx.share + 1, Root: fx.d.Node.ID, Generation: 1, Roster: []byte("r")}, 409, api.CodeExists},
		{"root is a file", "POST", "/v1/shares", api.CreateShareRequest{Share: fx.share + 1, Root: fx.f.Node.ID, Generation: 1, Roster: []byte("r")}, 409, api.CodeNotDir},
		{"account root", "POST", "/v1/shares", api.CreateShareRequest{Share: fx.share + 1, Root: api.RootID, Generation: 1, Roster: []byte("r")}, 400, api.CodeBadRequest},
		{"generation 0", "POST", "/v1/shares", api.CreateShareRequest{Share: fx.share + 1, Root: fx.h.Node.ID, Generation: 0, Roster: []byte("r")}, 400, api.CodeBadRequest},
		{"no roster", "POST", "/v1/shares", api.CreateShareRequest{Share: fx.share + 1, Root: fx.h.Node.ID, Generation: 1}, 400, api.CodeBadRequest},
		{"unknown e-mail", "POST", "/v1/shares/" + sid + "/members", api.ShareMemberRequest{Email: "nobody@example.com", Role: api.RoleReader,
			Wrapped: []api.ShareWrapped{{Generation: 1, Blob: []byte("b")}}, Roster: []byte("r")}, 404, api.CodeNotFound},
		{"bad role", "POST", "/v1/shares/" + sid + "/members", api.ShareMemberRequest{Email: fx.x.email, Role: "admin",
			Wrapped: []api.ShareWrapped{{Generation: 1, Blob: []byte("b")}}, Roster: []byte("r")}, 400, api.CodeBadRequest},
		{"no secret", "POST", "/v1/shares/" + sid + "/members", api.ShareMemberRequest{Email: fx.x.email, Role: api.RoleReader, Roster: []byte("r")}, 400, api.CodeBadRequest},
		{"future generation", "POST", "/v1/shares/" + sid + "/members", api.ShareMemberRequest{Email: fx.x.email, Role: api.RoleReader,
			Wrapped: []api.ShareWrapped{{Generation: 2, Blob: []byte("b")}}, Roster: []byte("r")}, 400, api.CodeBadRequest},
		{"self", "POST", "/v1/shares/" + sid + "/members", api.ShareMemberRequest{Email: a.email, Role: api.RoleReader,
			Wrapped: []api.ShareWrapped{{Generation: 1, Blob: []byte("b")}}, Roster: []byte("r")}, 400, api.CodeBadRequest},
		{"bad share id", "POST", "/v1/shares/12/members", api.ShareMemberRequest{}, 400, api.CodeBadRequest},
		{"remove a non-member", "POST", "/v1/shares/" + sid + "/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r"), Remove: []string{fx.x.email}}, 400, api.CodeBadRequest},
		{"unknown field", "POST", "/v1/shares", `{"share":5,"root":9,"generation":1,"roster":"cg==","extra":1}`, 400, api.CodeBadRequest},
	} {
		st, code := a.call(c.method, c.path, c.body, nil)
		expect(t, c.what, st, code, c.st, c.code)
	}
	st, code = fx.x.call("POST", "/v1/shares/accept", api.ShareAcceptRequest{OwnerID: a.id, Share: fx.share}, nil)
	expect(t, "accept without an invitation", st, code, 404, api.CodeNotFound)
	st, code = fx.x.call("POST", "/v1/shares/accept", api.ShareAcceptRequest{OwnerID: "../x", Share: fx.share}, nil)
	expect(t, "accept with a bad owner id", st, code, 400, api.CodeBadRequest)
	var sr api.SharesResponse
	a.must("GET", "/v1/shares", nil, &sr)
	if len(sr.Owned) != 1 || sr.Owned[0].Generation != 1 || len(sr.Owned[0].Members) != 2 || string(sr.Owned[0].Roster) != "roster v1" {
		t.Fatalf("the refused requests changed the share: %+v", sr)
	}
	// Leave: the member's access ends.
	w.must("POST", "/v1/shares/leave", api.ShareAcceptRequest{OwnerID: a.id, Share: fx.share}, nil)
	st, code = w.scoped(fx.scope, "GET", path, nil, nil)
	expect(t, "after leaving", st, code, 403, api.CodeForbidden)
}

// TestShareRemovedInFlight: a write that passed the header check before a
// rotation removed its member, and reaches its transaction after it, is
// refused: the transaction reads the membership again.
func TestShareRemovedInFlight(t *testing.T) {
	fx := newShareFixture(t, nil)
	a, w := fx.a, fx.w
	fx.accept(w)
	var sc *shareScope
	if err := fx.e.s.db.View(func(tx *badger.Txn) (err error) { sc, err = loadScope(tx, w.id, a.id, fx.share); return err }); err != nil {
		t.Fatal(err)
	}
	req := fx.createReq(fx.d.Node.ID, api.TypeFile, 1)
	a.must("POST", "/v1/shares/"+api.FormatShareID(fx.share)+"/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r2"),
		Remove: []string{w.email}}, nil)
	_, err := fx.e.s.shareOp(sc, api.BatchOp{Op: api.OpCreate, Create: &req})
	if !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("in-flight create of a removed writer: %v, want forbidden", err)
	}
	if es := a.list(fx.d.Node.ID); len(es) != 1 {
		t.Fatalf("the share root holds %d entries, want F only", len(es))
	}
}

// TestShareFeedSkips: a long poll on the share is answered with the share's
// change even when more than one answer's worth of the owner's other
// changes came first.
func TestShareFeedSkips(t *testing.T) {
	fx := newShareFixture(t, nil)
	a, w := fx.a, fx.w
	fx.accept(w)
	var from api.ChangesResponse
	w.scopedMustJSON(fx.scope, "GET", "/v1/changes?after=0", nil, &from)
	ops := make([]api.BatchOp, api.MaxBatchOps)
	for i := range ops {
		ops[i] = api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(),
			Name: randBytes(20), ID: randID(), Type: api.TypeFile, Attrs: randBytes(30)}}
	}
	a.must("POST", "/v1/batch", api.BatchRequest{Ops: ops}, nil) // 2,000 changes outside the share
	var g api.Entry
	w.scopedMustJSON(fx.scope, "POST", "/v1/nodes", fx.createReq(fx.d.Node.ID, api.TypeFile, 1), &g)
	start := time.Now()
	var got api.ChangesResponse
	w.scopedMustJSON(fx.scope, "GET", fmt.Sprintf("/v1/changes?after=%d&wait=10", from.Seq), nil, &got)
	if len(got.Changes) != 2 || got.Changes[1].Node != g.Node.ID || time.Since(start) > 5*time.Second {
		t.Fatalf("long poll after 2,000 other changes: %+v in %v", got, time.Since(start))
	}
}

// FuzzShareRequests feeds arbitrary bytes to the strict decoder and the
// validation of every shared-folder request: no panics, errors are API
// errors, and a request that passes passes again after a round trip.
func FuzzShareRequests(f *testing.F) {
	types := []struct {
		name     string
		new      func() any
		validate func(v any) error
	}{
		{"create", func() any { return &api.CreateShareRequest{} }, func(v any) error { return validateShareCreate(v.(*api.CreateShareRequest)) }},
		{"member", func() any { return &api.ShareMemberRequest{} }, func(v any) error {
			_, err := validateShareMember(v.(*api.ShareMemberRequest))
			return err
		}},
		{"rotate", func() any { return &api.ShareRotateRequest{} }, func(v any) error {
			_, _, err := validateShareRotate(v.(*api.ShareRotateRequest))
			return err
		}},
		{"join", func() any { return &api.ShareAcceptRequest{} }, func(v any) error { return validateShareJoin(v.(*api.ShareAcceptRequest)) }},
	}
	for _, s := range []any{
		api.CreateShareRequest{Share: 5, Root: 9, Generation: 1, Roster: []byte("r")},
		api.ShareMemberRequest{Email: "a@b.c", Role: api.RoleWriter, Wrapped: []api.ShareWrapped{{Generation: 1, Blob: []byte("b")}}, Roster: []byte("r")},
		api.ShareRotateRequest{Generation: 2, Roster: []byte("r"), Remove: []string{"a@b.c"}, Wrapped: map[string][]api.ShareWrapped{"d@e.f": {{Generation: 2, Blob: []byte("b")}}}},
		api.ShareAcceptRequest{OwnerID: "0123456789abcdef0123456789abcdef", Share: 7},
	} {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	f.Add([]byte(`{"wrapped":{"A@B.C":[],"a@b.c":[]},"generation":2,"roster":"cg=="}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, rt := range types {
			v := rt.new()
			if err := decodeJSON(bytes.NewReader(data), v); err != nil {
				if _, ok := err.(*api.Error); !ok {
					t.Fatalf("%s: decode error is not an API error: %v", rt.name, err)
				}
				continue
			}
			if err := rt.validate(v); err != nil {
				if _, ok := err.(*api.Error); !ok {
					t.Fatalf("%s: validation error is not an API error: %v", rt.name, err)
				}
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("%s: re-encode: %v", rt.name, err)
			}
			w := rt.new()
			if err := decodeJSON(bytes.NewReader(b), w); err != nil {
				t.Fatalf("%s: re-decode of %s: %v", rt.name, b, err)
			}
			if err := rt.validate(w); err != nil {
				t.Fatalf("%s: valid request invalid after round trip: %v", rt.name, err)
			}
		}
	})
}

// TestShareBatch: a writer's batch on the share reports each op as alone:
// the ops in the share are done, those outside it refused with their own
// errors, and the ops after a refused one still run.
func TestShareBatch(t *testing.T) {
	fx := newShareFixture(t, nil)
	a, w := fx.a, fx.w
	fx.accept(w)
	c1, c2, out := fx.createReq(fx.d.Node.ID, api.TypeFile, 1), fx.createReq(fx.d.Node.ID, api.TypeDir, 1), fx.createReq(api.RootID, api.TypeFile, 1)
	ops := []api.BatchOp{
		{Op: api.OpCreate, Create: &c1},
		{Op: api.OpCreate, Create: &out},
		{Op: api.OpUpdate, ID: fx.f.Node.ID, Update: &api.UpdateRequest{Version: fx.f.Node.Version, Attrs: sealedFor(fx.share, 1, 70)}},
		{Op: api.OpRename, Rename: &api.RenameRequest{SrcParent: fx.d.Node.ID, SrcNameMAC: fx.f.NameMAC, DstParent: api.RootID,
			DstNameMAC: randMAC(), Name: sealedFor(fx.share, 1, 20)}},
		{Op: api.OpUpdate, ID: fx.h.Node.ID, Update: &api.UpdateRequest{Version: fx.h.Node.Version, Attrs: sealedFor(fx.share, 1, 70)}},
		{Op: api.OpCreate, Create: &c2},
	}
	var br api.BatchResponse
	w.scopedMustJSON(fx.scope, "POST", "/v1/batch", api.BatchRequest{Ops: ops}, &br)
	want := []string{"", api.CodeNotFound, "", api.CodeCrossShare, api.CodeNotFound, ""}
	for i, r := range br.Results {
		got := ""
		if r.Error != nil {
			got = r.Error.Code
		}
		if got != want[i] {
			t.Errorf("op %d (%s): %q, want %q", i, ops[i].Op, got, want[i])
		}
	}
	if es := a.list(fx.d.Node.ID); len(es) != 3 {
		t.Fatalf("the share root holds %d entries, want F and the two created", len(es))
	}
	if es := a.list(api.RootID); len(es) != 3 {
		t.Fatalf("the owner's root holds %d entries, want H, H2 and the share root", len(es))
	}
	var hn api.Node
	a.must("GET", fmt.Sprintf("/v1/nodes/%d", fx.h.Node.ID), nil, &hn)
	if hn.Version != fx.h.Node.Version {
		t.Fatalf("owner's home file updated by the writer's batch")
	}
}

// TestShareInviteLimited: inviting unknown e-mails draws on the bucket of
// GET /v1/keys (--login-limit a minute), so it is no cheaper way to probe
// for accounts; once it is empty every invitation waits, known or not.
func TestShareInviteLimited(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.LoginLimit = 3 })
	a := fx.a
	path := "/v1/shares/" + api.FormatShareID(fx.share) + "/members"
	invite := func(email string) (int, string) {
		return a.call("POST", path, api.ShareMemberRequest{Email: email, Role: api.RoleReader,
			Wrapped: []api.ShareWrapped{{Generation: 1, Blob: []byte("b")}}, Roster: []byte("r")}, nil)
	}
	// Known e-mails are not charged (each makes an invitation its owner sees).
	for range 5 {
		st, code := invite(fx.x.email)
		expect(t, "invite a known e-mail", st, code, 200, "")
	}
	for i := range 3 {
		st, code := invite(fmt.Sprintf("nobody%d@example.com", i))
		expect(t, "invite an unknown e-mail", st, code, 404, api.CodeNotFound)
	}
	st, code := invite("nobody9@example.com")
	expect(t, "unknown e-mail past the limit", st, code, 429, api.CodeRateLimited)
	st, code = invite(fx.x.email)
	expect(t, "known e-mail past the limit", st, code, 429, api.CodeRateLimited)
}
