package server

import (
	"errors"
	"fmt"
	"testing"

	"kumo/remote/api"
)

// TestShareStaleGeneration: after a share rotates to generation 2, a record
// sealed for it under generation 1 is refused with stale_generation from the
// owner too (its own tree, and its share scope), in every op that writes one
// (create, update, rename, exchange, link, batch), and nothing changes; the
// current generation is accepted (the owner's re-seal), a member's rule is
// unchanged (403 for any other generation), and home records are untouched.
func TestShareStaleGeneration(t *testing.T) {
	fx := newShareFixture(t, nil)
	a, w := fx.a, fx.w
	fx.accept(w)
	sid := api.FormatShareID(fx.share)
	d, f := fx.d.Node.ID, fx.f
	g1 := fx.createReq(d, api.TypeFile, 1) // a second file, for the exchange
	// Before the rotation, generation 1 is the current one: accepted.
	a.must("POST", "/v1/nodes", g1, nil)
	a.must("POST", "/v1/shares/"+sid+"/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r2"),
		Remove: []string{fx.rd.email}, Wrapped: map[string][]api.ShareWrapped{w.email: {{Generation: 2, Blob: []byte("gen 2 for w")}}}}, nil)

	before := a.list(d)
	var fBefore api.Node
	a.must("GET", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), nil, &fBefore)
	var hd api.Node
	a.must("GET", fmt.Sprintf("/v1/nodes/%d", fx.h.Node.ID), nil, &hd)

	old := func(n int) []byte { return sealedFor(fx.share, 1, n) }
	cur := func(n int) []byte { return sealedFor(fx.share, 2, n) }
	staleAttrs := fx.createReq(d, api.TypeFile, 1)
	staleAttrs.Name = cur(20) // only the attributes are old
	staleName := fx.createReq(d, api.TypeFile, 2)
	staleName.Name = old(20)
	ops := []struct {
		what string
		op   api.BatchOp
	}{
		{"create, old attributes", api.BatchOp{Op: api.OpCreate, Create: &staleAttrs}},
		{"create, old name", api.BatchOp{Op: api.OpCreate, Create: &staleName}},
		{"update, old attributes", api.BatchOp{Op: api.OpUpdate, ID: f.Node.ID, Update: &api.UpdateRequest{Version: fBefore.Version, Attrs: old(70)}}},
		{"rename, old name", api.BatchOp{Op: api.OpRename, Rename: &api.RenameRequest{SrcParent: d, SrcNameMAC: f.NameMAC, DstParent: d,
			DstNameMAC: randMAC(), Name: old(20)}}},
		{"re-seal a name in place, old generation", api.BatchOp{Op: api.OpRename, Rename: &api.RenameRequest{SrcParent: d, SrcNameMAC: f.NameMAC,
			DstParent: d, DstNameMAC: f.NameMAC, Node: f.Node.ID, Name: old(21)}}},
		{"exchange, old source name", api.BatchOp{Op: api.OpRename, Rename: &api.RenameRequest{SrcParent: d, SrcNameMAC: f.NameMAC, DstParent: d,
			DstNameMAC: g1.NameMAC, Mode: api.RenameExchange, Name: cur(20), SrcName: old(20)}}},
		{"link, old name", api.BatchOp{Op: api.OpLink, Link: &api.LinkRequest{ID: f.Node.ID, Parent: d, NameMAC: randMAC(), Name: old(20)}}},
	}
	for _, o := range ops {
		var st int
		var code string
		switch o.op.Op {
		case api.OpCreate:
			st, code = a.call("POST", "/v1/nodes", o.op.Create, nil)
		case api.OpUpdate:
			st, code = a.call("PUT", fmt.Sprintf("/v1/nodes/%d", o.op.ID), o.op.Update, nil)
		case api.OpRename:
			st, code = a.call("POST", "/v1/rename", o.op.Rename, nil)
		case api.OpLink:
			st, code = a.call("POST", "/v1/link", o.op.Link, nil)
		}
		expect(t, "owner: "+o.what, st, code, 409, api.CodeStaleGeneration)
	}
	var br api.BatchResponse
	batch := make([]api.BatchOp, len(ops))
	for i, o := range ops {
		batch[i] = o.op
	}
	a.must("POST", "/v1/batch", api.BatchRequest{Ops: batch}, &br)
	for i, r := range br.Results {
		if r.Error == nil || r.Error.Code != api.CodeStaleGeneration {
			t.Errorf("batch op %d (%s): %+v, want %s", i, ops[i].what, r.Error, api.CodeStaleGeneration)
		}
	}
	a.scopedMustJSON(fx.scope, "POST", "/v1/batch", api.BatchRequest{Ops: batch}, &br)
	for i, r := range br.Results {
		if r.Error == nil || r.Error.Code != api.CodeStaleGeneration {
			t.Errorf("owner's scoped batch op %d (%s): %+v, want %s", i, ops[i].what, r.Error, api.CodeStaleGeneration)
		}
	}

	// Nothing changed.
	after := a.list(d)
	if len(after) != len(before) {
		t.Fatalf("the share root holds %d entries after refused writes, had %d", len(after), len(before))
	}
	for i := range after {
		if after[i].NameMAC != before[i].NameMAC || string(after[i].Name) != string(before[i].Name) || after[i].Node.Version != before[i].Node.Version {
			t.Fatalf("entry %d changed by a refused write: %+v, was %+v", i, after[i], before[i])
		}
	}

	// A member's older generation is stale too (its drive seals the write
	// again under the new secret); a generation the share never reached is 403.
	st, code := w.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(d, api.TypeFile, 1), nil)
	expect(t, "writer creates under the old generation", st, code, 409, api.CodeStaleGeneration)
	st, code = w.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(d, api.TypeFile, 3), nil)
	expect(t, "writer creates under a future generation", st, code, 403, api.CodeForbidden)
	w.scopedMustJSON(fx.scope, "POST", "/v1/nodes", fx.createReq(d, api.TypeFile, 2), nil)

	// The current generation is accepted from the owner (the re-seal: attributes
	// updated, a name moved to its new MAC, same node), and home records are
	// not the share's business.
	a.must("PUT", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), api.UpdateRequest{Version: fBefore.Version, Attrs: cur(70)}, nil)
	a.must("POST", "/v1/rename", api.RenameRequest{SrcParent: d, SrcNameMAC: f.NameMAC, DstParent: d, DstNameMAC: randMAC(),
		Node: f.Node.ID, Name: cur(20)}, nil)
	a.must("POST", "/v1/nodes", fx.createReq(d, api.TypeDir, 2), nil)
	a.must("PUT", fmt.Sprintf("/v1/nodes/%d", fx.h.Node.ID), api.UpdateRequest{Version: hd.Version, Attrs: randBytes(60)}, nil)

	// Once the share is stopped its records stay in the owner's tree, which
	// the owner writes as it likes.
	a.must("DELETE", "/v1/shares/"+sid, nil, nil)
	a.must("POST", "/v1/nodes", fx.createReq(d, api.TypeFile, 1), nil)
}

// TestShareStaleGenerationRace: a rotation that commits while an owner's
// write of the old generation runs is seen: the write read the share in its
// transaction, so it conflicts, runs again, and is refused then.
func TestShareStaleGenerationRace(t *testing.T) {
	fx := newShareFixture(t, nil)
	a := fx.a
	req := fx.createReq(fx.d.Node.ID, api.TypeFile, 1)
	runs := 0
	err := fx.e.s.mutate(a.id, true, func(m *mtx) error {
		runs++
		if runs == 1 {
			// Read first, as the write does, then the other device's rotation commits.
			if err := m.currentGen(req.Attrs); err != nil {
				return err
			}
			a.must("POST", "/v1/shares/"+api.FormatShareID(fx.share)+"/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r2"),
				Remove: []string{fx.rd.email}}, nil)
		}
		_, err := m.create(&req)
		return err
	})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeStaleGeneration || runs != 2 {
		t.Fatalf("write racing a rotation: %v after %d runs, want %s on the second", err, runs, api.CodeStaleGeneration)
	}
	if es := a.list(fx.d.Node.ID); len(es) != 1 {
		t.Fatalf("the share root holds %d entries, want F alone", len(es))
	}
}
