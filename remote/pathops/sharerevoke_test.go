package pathops_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
)

// revokeFixture: alice shares /Docs (a.txt, sub/b.txt) with bob (writer)
// and carol (reader); bob writes /bob.txt and /sub/bob2.txt into it.
type revokeFixture struct {
	alice, bob, carol *sharer
	want              map[string][]byte // path in the share -> content
	bobShare          *pathops.Share    // bob's share before any removal (his generation-1 secret)
}

func newRevokeFixture(t *testing.T, aliceURL, url string) *revokeFixture {
	t.Helper()
	fx := &revokeFixture{alice: newSharerAt(t, aliceURL, "alice@example.com"), bob: newSharerAt(t, url, "bob@example.com"),
		carol: newSharerAt(t, url, "carol@example.com"), want: map[string][]byte{
			"/a.txt": []byte("alice's a\n"), "/sub/b.txt": randBytes(t, 5<<20+77)}}
	for p, b := range fx.want {
		if err := putBytes(t, fx.alice.home, "/Docs"+p, b); err != nil {
			t.Fatal(err)
		}
	}
	for email, role := range map[string]keys.Role{"bob@example.com": keys.RoleWriter, "carol@example.com": keys.RoleReader} {
		af, _ := fx.alice.load(t)
		if _, err := af.ShareFolder(tctx(t), fx.alice.acct, "/Docs", email, role); err != nil {
			t.Fatal(err)
		}
	}
	fx.bob.accept(t, "alice@example.com/Docs")
	fx.carol.accept(t, "alice@example.com/Docs")
	bv := fx.bob.view(t)
	fx.bobShare = bv.Scope()
	for p, b := range map[string][]byte{"/bob.txt": []byte("bob wrote this\n"), "/sub/bob2.txt": []byte("and this\n")} {
		if err := putBytes(t, bv, p, b); err != nil {
			t.Fatal(err)
		}
		fx.want[p] = b
	}
	return fx
}

// readsAll checks that v reads every honest file of the share byte for byte.
func (fx *revokeFixture) readsAll(t *testing.T, who string, v *pathops.FS) {
	t.Helper()
	for p, want := range fx.want {
		if got, err := getBytes(t, v, p); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s reads %s: %d bytes, %v", who, p, len(got), err)
		}
	}
}

// gens counts the records (attributes and names) under the share root by
// key generation, as the server stores them.
func gens(t *testing.T, c *client.Client, root uint64) map[uint32]int {
	t.Helper()
	out := map[uint32]int{}
	n, err := c.GetNode(tctx(t), root)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := meta.RecordKeyID(n.Attrs)
	out[k.Gen]++
	var walk func(id uint64)
	walk = func(id uint64) {
		es, err := c.List(tctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			kn, _ := meta.RecordKeyID(e.Name)
			ka, _ := meta.RecordKeyID(e.Node.Attrs)
			out[kn.Gen]++
			out[ka.Gen]++
			if e.Node.Type == api.TypeDir {
				walk(e.Node.ID)
			}
		}
	}
	walk(root)
	return out
}

// bobEntry makes a new file entry name in the share root whose name and
// attributes are sealed under generation 1 (bob kept its secret) and signed
// by bob, who wrote in generation 1.
func (fx *revokeFixture) bobEntry(t *testing.T, name string) api.Entry {
	t.Helper()
	sh := fx.bobShare
	kid := meta.KeyID{Share: sh.ID, Gen: 1}
	sealer := meta.NewSealer(keys.Derive(keys.Key{9})).WithShare(kid, keys.ShareSubkeys(sh.Secrets[1], sh.ID, 1))
	id, _ := pathops.NewNodeID()
	attrs, err := sealer.SealAttrsAs(kid, id, meta.NextRev(0), &meta.Attrs{Mode: 0o100644, Mtime: 1})
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := sealer.NameMACAs(kid, sh.Root, []byte(name))
	sname, _ := sealer.SealNameAs(kid, sh.Root, id, meta.KindFile, []byte(name))
	raw, _ := hexDecode(mac)
	bobID := fx.bob.acct.Identity
	sa, err := keys.SignRecord(bobID, keys.RecordAttrs, id, nil, attrs)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := keys.SignRecord(bobID, keys.RecordName, sh.Root, raw, sname)
	if err != nil {
		t.Fatal(err)
	}
	return api.Entry{Parent: sh.Root, NameMAC: mac, Name: sn, Node: api.Node{ID: id, Type: api.TypeFile, Version: 1, Nlink: 1, Attrs: sa}}
}

// plantByBob stores bobEntry(name) through the owner's own unscoped
// access: the server takes it while generation 1 is the share's current
// one (before bob's removal).
func (fx *revokeFixture) plantByBob(t *testing.T, name string) {
	t.Helper()
	e := fx.bobEntry(t, name)
	if _, err := fx.alice.c.Create(tctx(t), api.CreateRequest{Parent: e.Parent, NameMAC: e.NameMAC, Name: e.Name, ID: e.Node.ID, Type: api.TypeFile,
		Attrs: e.Node.Attrs, Chunks: []string{}}); err != nil {
		t.Fatalf("plant %s: %v", name, err)
	}
}

// servePlant makes p show e in the live tree as a hostile server colluding
// with bob could after his removal (an honest server refuses a record of
// generation 1 then): a lookup of its name answers it, a listing of its
// directory includes it, and its node reads.
func servePlant(p *hostile.Proxy, e api.Entry) {
	reply := func(v any) hostile.Rule {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return hostile.Reply(&hostile.Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: b})
	}
	p.On("GET", fmt.Sprintf("/v1/nodes/%d/entries/%s", e.Parent, e.NameMAC), reply(e))
	p.On("GET", fmt.Sprintf("/v1/nodes/%d", e.Node.ID), reply(e.Node))
	p.On("GET", fmt.Sprintf("/v1/nodes/%d/entries", e.Parent), hostile.EditJSON(func(es *[]api.Entry) { *es = append(*es, e) }))
}

// TestShareRevokeWriterReseals: removing a writer re-seals the whole folder
// under the new generation (every record, chunks re-encrypted, signed by
// the owner), then raises the roster's lowest accepted generation; every
// honest file still reads for the owner and the remaining reader, and a
// record the removed writer makes in the old generation (valid before: it
// wrote until then) and a hostile server plants is refused by both.
func TestShareRevokeWriterReseals(t *testing.T) {
	e := startServer(t)
	p := hostile.Start(t, e.url)
	fx := newRevokeFixture(t, p.URL, p.URL)
	// Before its removal, bob's generation-1 records are his to make: the
	// same plant is accepted (and the re-seal keeps it, signed by the owner).
	fx.plantByBob(t, "before.txt")
	if _, err := fx.carol.view(t).Resolve(tctx(t), "/before.txt"); err != nil {
		t.Fatalf("a writer's generation-1 record before its removal: %v", err)
	}
	fx.want["/before.txt"] = []byte{}

	af, _ := fx.alice.load(t)
	sh, err := af.RemoveMember(tctx(t), fx.alice.acct, "/Docs", "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if sh.Gen() != 2 || sh.Roster.MinGen != 2 || sh.Roster.NeedsReseal() {
		t.Fatalf("after removing a writer: generation %d, lowest accepted %d", sh.Gen(), sh.Roster.MinGen)
	}
	if g := gens(t, fx.alice.c, sh.Root); len(g) != 1 || g[2] == 0 {
		t.Fatalf("records by generation after the re-seal: %v, want all 2", g)
	}
	servePlant(p, fx.bobEntry(t, "planted.txt"))
	av, cv := fx.alice.view(t), fx.carol.view(t)
	if av.Scope().Roster.MinGen != 2 || cv.Scope().Roster.MinGen != 2 {
		t.Fatal("the roster the owner and the reader load has no lowest accepted generation")
	}
	for who, v := range map[string]*pathops.FS{"owner": av, "reader": cv} {
		if _, err := v.Resolve(tctx(t), "/planted.txt"); !errors.Is(err, pathops.ErrShare) {
			t.Fatalf("%s resolves a removed writer's generation-1 record: %v, want ErrShare", who, err)
		}
	}
	// Once the planted record is gone, everything honest reads.
	p.Honest()
	fx.readsAll(t, "owner", fx.alice.view(t))
	fx.readsAll(t, "reader", fx.carol.view(t))
	af, _ = fx.alice.load(t)
	if got, err := getBytes(t, af, "/Docs/sub/bob2.txt"); err != nil || string(got) != "and this\n" {
		t.Fatalf("owner's home tree reads bob's file: %q %v", got, err)
	}
}

// TestShareRevokeInterrupted: a re-seal cut off midway (the cloud refuses
// the owner's third attribute update) leaves a folder of mixed generations
// that every member still reads in full, with no lowest generation raised;
// running share rm again finishes it.
func TestShareRevokeInterrupted(t *testing.T) {
	e := startServer(t)
	p := hostile.Start(t, e.url)
	fx := newRevokeFixture(t, p.URL, e.url)
	var updates atomic.Int32
	p.On("PUT", "/v1/nodes/*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if updates.Add(1) >= 3 {
			return &hostile.Response{Status: 400, Body: []byte(`{"code":"bad_request","error":"cut off by the test"}`)}
		}
		return next(req)
	})
	af, _ := fx.alice.load(t)
	if _, err := af.RemoveMember(tctx(t), fx.alice.acct, "/Docs", "bob@example.com"); err == nil {
		t.Fatal("share rm went through though the cloud refused its updates")
	}
	_, owned := fx.alice.load(t)
	sh := owned.Owned[0]
	if sh.Gen() != 2 || sh.Roster.MinGen > 1 || !sh.Roster.NeedsReseal() {
		t.Fatalf("interrupted: generation %d, lowest accepted %d", sh.Gen(), sh.Roster.MinGen)
	}
	if g := gens(t, fx.alice.c, sh.Root); g[1] == 0 || g[2] == 0 {
		t.Fatalf("records by generation mid re-seal: %v, want both 1 and 2", g)
	}
	fx.readsAll(t, "owner mid re-seal", fx.alice.view(t))
	fx.readsAll(t, "reader mid re-seal", fx.carol.view(t))

	p.Honest()
	af, _ = fx.alice.load(t)
	sh, err := af.RemoveMember(tctx(t), fx.alice.acct, "/Docs", "bob@example.com")
	if err != nil {
		t.Fatalf("share rm again: %v", err)
	}
	if sh.Gen() != 2 || sh.Roster.MinGen != 2 {
		t.Fatalf("resumed: generation %d, lowest accepted %d", sh.Gen(), sh.Roster.MinGen)
	}
	if g := gens(t, fx.alice.c, sh.Root); len(g) != 1 || g[2] == 0 {
		t.Fatalf("records by generation after the resumed re-seal: %v, want all 2", g)
	}
	fx.readsAll(t, "owner", fx.alice.view(t))
	fx.readsAll(t, "reader", fx.carol.view(t))
	af, _ = fx.alice.load(t)
	if _, err := af.RemoveMember(tctx(t), fx.alice.acct, "/Docs", "bob@example.com"); err == nil {
		t.Fatal("share rm of a member removed and re-sealed: no error")
	}
}

// TestShareDemoteWriter: demoting a writer to reader rotates the share to a
// new generation (the demoted member gets its secret, as a reader), re-seals
// the folder and raises the lowest accepted generation: a record the
// former writer signs in the generation it wrote in is refused, and it can
// no longer write; it still reads everything.
func TestShareDemoteWriter(t *testing.T) {
	e := startServer(t)
	p := hostile.Start(t, e.url)
	fx := newRevokeFixture(t, p.URL, p.URL)
	af, _ := fx.alice.load(t)
	sh, err := af.ShareFolder(tctx(t), fx.alice.acct, "/Docs", "bob@example.com", keys.RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := sh.Roster.Member("bob@example.com")
	if sh.Gen() != 2 || sh.Roster.MinGen != 2 || m.Role != keys.RoleReader || m.WroteUntil != 1 {
		t.Fatalf("after demoting bob: generation %d, lowest accepted %d, bob %+v", sh.Gen(), sh.Roster.MinGen, m)
	}
	if g := gens(t, fx.alice.c, sh.Root); len(g) != 1 || g[2] == 0 {
		t.Fatalf("records by generation after the demotion: %v, want all 2", g)
	}
	servePlant(p, fx.bobEntry(t, "planted.txt"))
	bv := fx.bob.view(t)
	if bv.Scope().Role != keys.RoleReader || bv.Scope().Gen() != 2 {
		t.Fatalf("bob after the demotion: %s in generation %d", bv.Scope().Role, bv.Scope().Gen())
	}
	for who, v := range map[string]*pathops.FS{"owner": fx.alice.view(t), "reader": fx.carol.view(t), "bob": bv} {
		if _, err := v.Resolve(tctx(t), "/planted.txt"); !errors.Is(err, pathops.ErrShare) {
			t.Fatalf("%s resolves the demoted writer's generation-1 record: %v, want ErrShare", who, err)
		}
	}
	p.Honest()
	for who, v := range map[string]*pathops.FS{"owner": fx.alice.view(t), "reader": fx.carol.view(t), "bob": bv} {
		fx.readsAll(t, fmt.Sprintf("%s after the demotion", who), v)
	}
	if err := putBytes(t, bv, "/late.txt", []byte("no\n")); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("demoted writer writes: %v, want forbidden", err)
	}
}
