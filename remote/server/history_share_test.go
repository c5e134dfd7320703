package server

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// TestShareHistory: a member reads the share's history (versions, the tree
// at a moment, the trash) and nothing of the owner's history outside it;
// an outsider and a removed member are refused; a reader reads history but
// cannot restore (a restore is a write); the writer restores what it deleted.
func TestShareHistory(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.HistoryDefault = 24 * time.Hour })
	a, w, rd, x := fx.a, fx.w, fx.rd, fx.x
	fx.accept(w)
	fx.accept(rd)
	d := fx.d.Node.ID
	// The owner's account changed this hour; the share has no version ended yet.
	var ht0 api.HistoryTimesResponse
	if w.scopedMustJSON(fx.scope, "GET", "/v1/history/times", nil, &ht0); len(ht0.Hours) != 0 || ht0.From == 0 {
		t.Fatalf("share's hours before any change: %+v", ht0)
	}

	// A second share of the owner's, inside nothing: its node must not show.
	other := randID()
	var od api.Entry
	a.must("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(20),
		ID: randID(), Type: api.TypeDir, Attrs: sealedFor(other, 1, 50)}, &od)
	a.must("POST", "/v1/shares", api.CreateShareRequest{Share: other, Root: od.Node.ID, Generation: 1, Roster: []byte("other")}, nil)
	var of api.Entry
	a.must("POST", "/v1/nodes", api.CreateRequest{Parent: od.Node.ID, NameMAC: randMAC(), Name: sealedFor(other, 1, 20),
		ID: randID(), Type: api.TypeFile, Attrs: sealedFor(other, 1, 50)}, &of)

	// History to find: the writer overwrites F, the owner changes and then
	// deletes its home file H, the writer deletes F and a new file G.
	var f2 api.Node
	w.scopedMustJSON(fx.scope, "PUT", fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID),
		api.UpdateRequest{Version: fx.f.Node.Version, Attrs: sealedFor(fx.share, 1, 60)}, &f2)
	a.update(fx.h.Node)
	a.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: fx.h.NameMAC}, nil)
	a.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: od.Node.ID, NameMAC: of.NameMAC}, nil)
	var g api.Entry
	w.scopedMustJSON(fx.scope, "POST", "/v1/nodes", fx.createReq(d, api.TypeFile, 1), &g)
	before := time.Now().UnixNano()
	time.Sleep(time.Millisecond)
	w.scopedMustJSON(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: d, NameMAC: fx.f.NameMAC}, nil)
	w.scopedMustJSON(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: d, NameMAC: g.NameMAC}, nil)

	for _, u := range []*user{w, rd} {
		// Versions of F: both, newest first.
		var vr api.VersionsResponse
		if st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/versions/%d", fx.f.Node.ID), nil, &vr); code != "" ||
			len(vr.Versions) != 2 || vr.Versions[0].Node.Version != f2.Version {
			t.Fatalf("%s: versions of F: %d %s %+v", u.email, st, code, vr)
		}
		// The owner's home file and the other share's file: not found, as
		// a node that never existed.
		for _, id := range []uint64{fx.h.Node.ID, of.Node.ID, api.RootID} {
			st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/versions/%d", id), nil, nil)
			expect(t, fmt.Sprintf("%s: versions of node %d outside the share", u.email, id), st, code, 404, api.CodeNotFound)
			st, code = u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/nodes/%d?at=%d", id, before), nil, nil)
			expect(t, fmt.Sprintf("%s: node %d outside the share at a moment", u.email, id), st, code, 404, api.CodeNotFound)
		}
		st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/entries?parent=%d&at=%d", api.RootID, before), nil, nil)
		expect(t, u.email+": the owner's root at a moment", st, code, 404, api.CodeNotFound)

		// The share root before the deletions: F and G.
		var hl api.HistoryListResponse
		if st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/entries?parent=%d&at=%d", d, before), nil, &hl); code != "" ||
			len(hl.Entries) != 2 {
			t.Fatalf("%s: share root at a moment: %d %s %+v", u.email, st, code, hl)
		}
		var n api.Node
		if st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/nodes/%d?at=%d", fx.f.Node.ID, before), nil, &n); code != "" ||
			n.Version != f2.Version {
			t.Fatalf("%s: F at a moment: %d %s %+v", u.email, st, code, n)
		}

		// The trash: F and G, not H nor the other share's file.
		var tr api.TrashResponse
		if st, code := u.scoped(fx.scope, "GET", "/v1/history/trash", nil, &tr); code != "" || len(tr.Items) != 2 {
			t.Fatalf("%s: share trash: %d %s %+v", u.email, st, code, tr)
		}
		got := map[uint64]bool{}
		for _, it := range tr.Items {
			got[it.Node.ID] = true
			if it.Parent != d || len(it.Name) == 0 {
				t.Fatalf("%s: trash item %+v", u.email, it)
			}
		}
		if !got[fx.f.Node.ID] || !got[g.Node.ID] {
			t.Fatalf("%s: share trash holds %v", u.email, got)
		}
		// Times: the window, and the hour of the share's changes.
		var ht api.HistoryTimesResponse
		if st, code := u.scoped(fx.scope, "GET", "/v1/history/times", nil, &ht); code != "" || ht.From == 0 || len(ht.Hours) == 0 || ht.Hours[len(ht.Hours)-1] > before {
			t.Fatalf("%s: history times: %d %s %+v", u.email, st, code, ht)
		}
		// Purge and retention stay the owner's.
		st, code = u.scoped(fx.scope, "POST", "/v1/history/purge", api.PurgeRequest{Node: fx.f.Node.ID}, nil)
		expect(t, u.email+" purges", st, code, 400, api.CodeBadRequest)
	}
	// The owner's own trash still has everything.
	var otr api.TrashResponse
	a.must("GET", "/v1/history/trash", nil, &otr)
	if len(otr.Items) != 4 {
		t.Fatalf("owner's trash: %+v", otr)
	}

	// A trash page boundary: one item a page resumes after the cursor.
	var p1, p2 api.TrashResponse
	w.scopedMustJSON(fx.scope, "GET", fmt.Sprintf("/v1/history/trash?after=%d", before), nil, &p1)
	if len(p1.Items) != 2 {
		t.Fatalf("trash after: %+v", p1)
	}
	cur := hexTime(p1.Items[0].Deleted) + "/" + fmt.Sprintf("%016x", p1.Items[0].Node.ID)
	w.scopedMustJSON(fx.scope, "GET", "/v1/history/trash?cursor="+cur, nil, &p2)
	if len(p2.Items) != 1 || p2.Items[0].Node.ID != p1.Items[1].Node.ID {
		t.Fatalf("trash after cursor: %+v", p2)
	}

	// Restoring is writing: the reader is refused, the writer restores F
	// as a new node naming F's kept attributes' share (sealed again).
	st, code := rd.scoped(fx.scope, "POST", "/v1/nodes", fx.createReq(d, api.TypeFile, 1), nil)
	expect(t, "reader restores", st, code, 403, api.CodeForbidden)
	w.scopedMustJSON(fx.scope, "POST", "/v1/nodes", fx.createReq(d, api.TypeFile, 1), nil)

	// Outsider and removed member: refused.
	st, code = x.scoped(fx.scope, "GET", "/v1/history/trash", nil, nil)
	expect(t, "outsider's trash", st, code, 403, api.CodeForbidden)
	st, code = x.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/versions/%d", fx.f.Node.ID), nil, nil)
	expect(t, "outsider's versions", st, code, 403, api.CodeForbidden)
	a.must("POST", "/v1/shares/"+api.FormatShareID(fx.share)+"/rotate", api.ShareRotateRequest{Generation: 2, Roster: []byte("r2"),
		Remove: []string{rd.email}, Wrapped: map[string][]api.ShareWrapped{w.email: {{Generation: 2, Blob: []byte("gen 2 for w")}}}}, nil)
	for _, p := range []string{"/v1/history/trash", fmt.Sprintf("/v1/history/versions/%d", fx.f.Node.ID),
		fmt.Sprintf("/v1/history/entries?parent=%d&at=%d", d, before), "/v1/history/times"} {
		st, code = rd.scoped(fx.scope, "GET", p, nil, nil)
		expect(t, "removed reader: "+p, st, code, 403, api.CodeForbidden)
	}
	w.scopedMustJSON(fx.scope, "GET", "/v1/history/trash", nil, &api.TrashResponse{})

	// Purging the history frees the share's trash index with it.
	a.must("POST", "/v1/history/purge", api.PurgeRequest{}, nil)
	var tr api.TrashResponse
	w.scopedMustJSON(fx.scope, "GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 0 {
		t.Fatalf("share trash after the owner's purge: %+v", tr)
	}
	n := 0
	if err := fx.e.s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("hs/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d share trash keys left after the purge", n)
	}
	checkConsistent(t, fx.e.s, a.id)
}

// TestShareTrashIndexBackfill: deletions kept from before the share trash
// index existed (a data directory of an older server: no hs/ keys, no
// mark) are indexed at the next start, so members list them too.
func TestShareTrashIndexBackfill(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.HistoryDefault = 24 * time.Hour })
	w := fx.w
	fx.accept(w)
	w.scopedMustJSON(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: fx.d.Node.ID, NameMAC: fx.f.NameMAC}, nil)
	fx.a.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: fx.h.NameMAC}, nil)
	// Back to an older server's state.
	err := fx.e.s.db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("hs/")})
		var ks [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			ks = append(ks, it.Item().KeyCopy(nil))
		}
		it.Close()
		if len(ks) != 1 {
			t.Errorf("%d share trash keys, want 1: %q", len(ks), ks)
		}
		for _, k := range append(ks, kShareTrashIndexed()) {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var tr api.TrashResponse
	w.scopedMustJSON(fx.scope, "GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 0 {
		t.Fatalf("trash without the index: %+v", tr)
	}
	fx.e.reopen()
	w.scopedMustJSON(fx.scope, "GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 1 || tr.Items[0].Node.ID != fx.f.Node.ID {
		t.Fatalf("trash after the backfill: %+v", tr)
	}
	checkConsistent(t, fx.e.s, fx.a.id)
}

// TestShareHistoryFloor: a member reads the share's history from when it
// accepted, not earlier: what was overwritten or deleted before it joined
// (versions, trash, the tree at an earlier moment, the times) stays hidden
// from it and shown to a member that joined before. Sharing the folder
// again under the same id after DELETE /v1/shares shows nothing of the
// earlier sharing; a member record from before acceptance times were kept
// is stamped at the next start.
func TestShareHistoryFloor(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.HistoryDefault = 24 * time.Hour })
	a, w, rd, x := fx.a, fx.w, fx.rd, fx.x
	d := fx.d.Node.ID
	fx.accept(w)
	// Before the reader joins: the owner overwrites F and deletes a new file E.
	var f2 api.Node
	a.scopedMustJSON(fx.scope, "PUT", fmt.Sprintf("/v1/nodes/%d", fx.f.Node.ID),
		api.UpdateRequest{Version: fx.f.Node.Version, Attrs: sealedFor(fx.share, 1, 60)}, &f2)
	var e api.Entry
	a.scopedMustJSON(fx.scope, "POST", "/v1/nodes", fx.createReq(d, api.TypeFile, 1), &e)
	before := time.Now().UnixNano()
	time.Sleep(time.Millisecond)
	a.scopedMustJSON(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: d, NameMAC: e.NameMAC}, nil)
	time.Sleep(time.Millisecond)
	fx.accept(rd)

	see := func(u *user, versions, trash int, atOK bool) {
		t.Helper()
		var vr api.VersionsResponse
		if st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/versions/%d", fx.f.Node.ID), nil, &vr); code != "" || len(vr.Versions) != versions {
			t.Fatalf("%s: versions of F: %d %s %+v, want %d", u.email, st, code, vr, versions)
		}
		var tr api.TrashResponse
		if st, code := u.scoped(fx.scope, "GET", "/v1/history/trash", nil, &tr); code != "" || len(tr.Items) != trash {
			t.Fatalf("%s: trash: %d %s %+v, want %d", u.email, st, code, tr, trash)
		}
		var hl api.HistoryListResponse
		st, code := u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/entries?parent=%d&at=%d", d, before), nil, &hl)
		if atOK && (code != "" || len(hl.Entries) != 2) {
			t.Fatalf("%s: share root before E's deletion: %d %s %+v", u.email, st, code, hl)
		}
		if !atOK {
			expect(t, u.email+": share root before it joined", st, code, 410, api.CodeHistoryGone)
			st, code = u.scoped(fx.scope, "GET", fmt.Sprintf("/v1/history/nodes/%d?at=%d", e.Node.ID, before), nil, nil)
			expect(t, u.email+": E before it joined", st, code, 410, api.CodeHistoryGone)
		}
		var ht api.HistoryTimesResponse
		if u.scopedMustJSON(fx.scope, "GET", "/v1/history/times", nil, &ht); (ht.From <= before) != atOK {
			t.Fatalf("%s: history from %d, the deletion's moment %d", u.email, ht.From, before)
		}
	}
	see(a, 2, 1, true)
	see(w, 2, 1, true)
	see(rd, 1, 0, false)
	// The cursor of a page cannot reach back either.
	var tr api.TrashResponse
	rd.scopedMustJSON(fx.scope, "GET", "/v1/history/trash?cursor="+hexTime(0)+"/"+fmt.Sprintf("%016x", 0), nil, &tr)
	if len(tr.Items) != 0 {
		t.Fatalf("reader's trash from a cursor before it joined: %+v", tr)
	}

	// Shared again under the same id: a member of the new sharing sees
	// nothing of the earlier one.
	sid := api.FormatShareID(fx.share)
	a.must("DELETE", "/v1/shares/"+sid, nil, nil)
	a.must("POST", "/v1/shares", api.CreateShareRequest{Share: fx.share, Root: d, Generation: 1, Roster: []byte("again")}, nil)
	a.must("POST", "/v1/shares/"+sid+"/members", api.ShareMemberRequest{Email: x.email, Role: api.RoleReader,
		Wrapped: []api.ShareWrapped{{Generation: 1, Blob: []byte("secret for x")}}, Roster: []byte("again")}, nil)
	x.must("POST", "/v1/shares/accept", api.ShareAcceptRequest{OwnerID: a.id, Share: fx.share}, nil)
	see(x, 1, 0, false)

	// A member accepted before acceptance times were kept: stamped at the
	// next start (the safe side), so it too sees nothing earlier.
	err := fx.e.s.db.Update(func(txn *badger.Txn) error {
		m, err := readMember(txn, a.id, fx.share, x.id)
		if err != nil || m == nil || m.Accepted == 0 {
			return fmt.Errorf("x's member record %+v: %v", m, err)
		}
		m.Accepted = 0
		if err := setJSON(txn, kShareMember(a.id, fx.share, x.id), m); err != nil {
			return err
		}
		return txn.Delete(kMemberAcceptedStamped())
	})
	if err != nil {
		t.Fatal(err)
	}
	fx.e.reopen()
	see(x, 1, 0, false)
	if err := fx.e.s.db.View(func(txn *badger.Txn) error {
		m, err := readMember(txn, a.id, fx.share, x.id)
		if err == nil && (m == nil || m.Accepted == 0) {
			err = fmt.Errorf("x's member record not stamped: %+v", m)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, fx.e.s, a.id)
}

// TestShareHistoryRootOwnerDetails: the shared folder's root is named in
// the owner's tree; moving it there, or deleting it, is the owner's change,
// not the share's. A member gets no hour, no second version of the root
// (nor its home parent) for the move, and no trash item (the owner's home
// parent, name MAC and sealed name) for the deletion. Fails on the old code
// (an hour and a version with the old home parent; the root in the share's
// trash).
func TestShareHistoryRootOwnerDetails(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.HistoryDefault = 24 * time.Hour })
	a, w := fx.a, fx.w
	d := fx.d.Node.ID
	fx.accept(w)
	home := a.create(api.RootID, api.TypeDir)
	mac := randMAC()
	a.must("POST", "/v1/rename", api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: fx.d.NameMAC, DstParent: home.Node.ID,
		DstNameMAC: mac, Name: randBytes(20), Node: d}, nil)
	var ht api.HistoryTimesResponse
	if w.scopedMustJSON(fx.scope, "GET", "/v1/history/times", nil, &ht); len(ht.Hours) != 0 {
		t.Fatalf("share's hours after the owner moved its root: %+v", ht)
	}
	var vr api.VersionsResponse
	w.scopedMustJSON(fx.scope, "GET", fmt.Sprintf("/v1/history/versions/%d", d), nil, &vr)
	if len(vr.Versions) != 1 || vr.Versions[0].Node.Parent != 0 {
		t.Fatalf("versions of the share's root after the owner moved it: %+v", vr)
	}
	var n api.Node
	w.scopedMustJSON(fx.scope, "GET", fmt.Sprintf("/v1/history/nodes/%d", d), nil, &n)
	if n.Parent != 0 {
		t.Fatalf("the share's root at a moment: parent %d", n.Parent)
	}
	var ov api.VersionsResponse
	if a.must("GET", fmt.Sprintf("/v1/history/versions/%d", d), nil, &ov); len(ov.Versions) != 2 {
		t.Fatalf("the owner's versions of the folder: %+v", ov)
	}

	// The owner deletes the folder (F first, through the share: the share's).
	a.scopedMustJSON(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: d, NameMAC: fx.f.NameMAC}, nil)
	a.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: home.Node.ID, NameMAC: mac, Dir: true}, nil)
	var tr api.TrashResponse
	w.scopedMustJSON(fx.scope, "GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 1 || tr.Items[0].Node.ID != fx.f.Node.ID {
		t.Fatalf("share's trash after the owner deleted its root: %+v", tr)
	}
	if ks := keysWithPrefix(t, fx.e.s.db, pHShareTrash(a.id, fx.share)); len(ks) != 1 {
		t.Fatalf("share trash keys: %q, want F's only", ks)
	}
	checkConsistent(t, fx.e.s, a.id)
}

func keysWithPrefix(t *testing.T, db *badger.DB, p []byte) []string {
	t.Helper()
	var ks []string
	if err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ks = append(ks, string(it.Item().Key()))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestShareHourWrittenOnce: the share's hour key is written by the first
// change of the hour only, not again by each later one (a new version of
// the key every change). Fails on the old code (the key's version moved).
func TestShareHourWrittenOnce(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.HistoryDefault = 24 * time.Hour })
	w := fx.w
	fx.accept(w)
	keyVersion := func() uint64 {
		t.Helper()
		var v uint64
		if err := fx.e.s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: pShareHour(fx.a.id, fx.share)})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				v = max(v, it.Item().Version())
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	node := fx.f.Node
	change := func() {
		w.scopedMustJSON(fx.scope, "PUT", fmt.Sprintf("/v1/nodes/%d", node.ID),
			api.UpdateRequest{Version: node.Version, Attrs: sealedFor(fx.share, 1, 60)}, &node)
	}
	change()
	v1 := keyVersion()
	if v1 == 0 {
		t.Fatal("no share hour after a change")
	}
	change()
	change()
	// (One key: the changes fell in one hour; two if the hour turned.)
	if v2 := keyVersion(); v2 != v1 && len(keysWithPrefix(t, fx.e.s.db, pShareHour(fx.a.id, fx.share))) == 1 {
		t.Fatalf("share hour key rewritten in the same hour: version %d -> %d", v1, v2)
	}
}

// TestHistoryHourKeysPurged: the hour keys of the account (hh/) and of each
// of its shares (hsh/) for the hours a purge leaves no history in go with
// that history; the hour the purge's time is in stays, and the times still
// list it for the owner and a member. (The old server never deleted them.)
func TestHistoryHourKeysPurged(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.HistoryDefault = 24 * time.Hour })
	w := fx.w
	fx.accept(w)
	w.scopedMustJSON(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: fx.d.Node.ID, NameMAC: fx.f.NameMAC}, nil)
	fx.a.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: fx.h.NameMAC}, nil)
	changed := hourOf(time.Now().UnixNano())
	// Hours noted earlier, as by a server that has run for a while (a test
	// cannot wait hours), for this share and another one of the account.
	old, other := changed-3*int64(time.Hour), fx.share+1
	planted := [][]byte{kHour(fx.a.id, old), kShareHour(fx.a.id, fx.share, old), kShareHour(fx.a.id, other, old)}
	otherNow := kShareHour(fx.a.id, other, changed)
	err := fx.e.s.db.Update(func(txn *badger.Txn) error {
		for _, k := range append(planted, otherNow) {
			if err := txn.Set(k, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixNano()
	fx.a.must("POST", "/v1/history/purge", api.PurgeRequest{Before: before}, nil)
	keys := append(keysWithPrefix(t, fx.e.s.db, pHour(fx.a.id)), keysWithPrefix(t, fx.e.s.db, pShareHours(fx.a.id))...)
	for _, k := range planted {
		if slices.Contains(keys, string(k)) {
			t.Errorf("hour key %q of an hour before the purge is kept", k)
		}
	}
	if hourOf(before) != changed {
		return // the hour turned during the test: the changes' hours went too
	}
	for _, k := range [][]byte{kHour(fx.a.id, changed), kShareHour(fx.a.id, fx.share, changed), otherNow} {
		if !slices.Contains(keys, string(k)) {
			t.Errorf("hour key %q of the purge's own hour is gone", k)
		}
	}
	var own, member api.HistoryTimesResponse
	fx.a.must("GET", "/v1/history/times", nil, &own)
	w.scopedMustJSON(fx.scope, "GET", "/v1/history/times", nil, &member)
	if !slices.Equal(own.Hours, []int64{changed}) || !slices.Equal(member.Hours, []int64{changed}) {
		t.Errorf("times after the purge: the owner's %v, the member's %v, want [%d]", own.Hours, member.Hours, changed)
	}
	checkConsistent(t, fx.e.s, fx.a.id)
}
