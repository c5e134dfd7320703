package server

import (
	"bytes"
	"github.com/dgraph-io/badger/v4"

	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"kumo/remote/api"
)

func historyEnv(t *testing.T, mod func(*Config)) (*env, *user) {
	e := newEnv(t, nil, func(c *Config) {
		c.HistoryDefault = 24 * time.Hour
		c.GCGrace = time.Nanosecond // only history keeps unreferenced chunks
		if mod != nil {
			mod(c)
		}
	})
	return e, e.signup("h@example.com")
}

func (u *user) entriesAt(dir uint64, at int64) ([]api.Entry, int, string) {
	u.e.t.Helper()
	var out api.HistoryListResponse
	st, code := u.call("GET", fmt.Sprintf("/v1/history/entries?parent=%d&at=%d", dir, at), nil, &out)
	return out.Entries, st, code
}

func (u *user) update(n api.Node, chunks ...string) api.Node {
	u.e.t.Helper()
	var out api.Node
	u.must("PUT", fmt.Sprintf("/v1/nodes/%d", n.ID), api.UpdateRequest{Version: n.Version, Attrs: randBytes(50), Chunks: chunks}, &out)
	return out
}

func gc(t *testing.T, s *Server) {
	t.Helper()
	if _, _, err := s.RunGC(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestHistorySnapshotsVersionsTrash(t *testing.T) {
	e, u := historyEnv(t, nil)
	c1, c2 := u.putChunk(5000), u.putChunk(6000)
	f := u.create(api.RootID, api.TypeFile, c1)
	t1 := time.Now().UnixNano()
	n2 := u.update(f.Node, c2)
	t2 := time.Now().UnixNano()
	if st, code := u.call("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: f.NameMAC}, nil); code != "" {
		t.Fatalf("unlink: %d %s", st, code)
	}
	gc(t, e.s)

	// The tree at t1 and t2 shows the versions of then; now, nothing.
	for _, c := range []struct {
		at    int64
		chunk string
	}{{t1, c1}, {t2, c2}} {
		es, st, code := u.entriesAt(api.RootID, c.at)
		if code != "" || len(es) != 1 || es[0].NameMAC != f.NameMAC || !slices.Equal(es[0].Node.Chunks, []string{c.chunk}) {
			t.Fatalf("entries at %d: %d %s %+v", c.at, st, code, es)
		}
	}
	if es, _, code := u.entriesAt(api.RootID, time.Now().UnixNano()); code != "" || len(es) != 0 {
		t.Fatalf("entries now: %s %+v", code, es)
	}
	// Both chunks survive the GC (history needs them) and count as history.
	for _, c := range []string{c1, c2} {
		if !chunkStored(t, e.s, u.id, c) {
			t.Fatalf("chunk %s collected while history needs it", c)
		}
	}
	a := u.account()
	if a.HistoryUsed < 11000 || a.HistoryRetention != api.Duration(24*3600) {
		t.Fatalf("account history: %+v", a)
	}
	var vs api.VersionsResponse
	u.must("GET", fmt.Sprintf("/v1/history/versions/%d", f.Node.ID), nil, &vs)
	if len(vs.Versions) != 2 || vs.Versions[0].Node.Version != n2.Version || vs.Versions[1].Node.Version != 1 {
		t.Fatalf("versions: %+v", vs)
	}
	var tr api.TrashResponse
	u.must("GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 1 || tr.Items[0].Node.ID != f.Node.ID || tr.Items[0].NameMAC != f.NameMAC || tr.Items[0].Parent != api.RootID {
		t.Fatalf("trash: %+v", tr)
	}
	checkConsistent(t, e.s, u.id)
	var hours api.HistoryTimesResponse
	u.must("GET", "/v1/history/times", nil, &hours)
	if len(hours.Hours) == 0 {
		t.Fatalf("no change hours: %+v", hours)
	}

	// Purge frees it all: versions, trash, chunks and their quota.
	var pr api.PurgeResponse
	u.must("POST", "/v1/history/purge", api.PurgeRequest{}, &pr)
	if pr.Versions == 0 {
		t.Fatalf("purge dropped nothing: %+v", pr)
	}
	gc(t, e.s)
	for _, c := range []string{c1, c2} {
		if chunkStored(t, e.s, u.id, c) {
			t.Fatalf("chunk %s kept after purge", c)
		}
	}
	if a := u.account(); a.HistoryUsed != 0 || a.QuotaUsed != u.metaUsed() {
		t.Fatalf("after purge: %+v (meta %d)", a, u.metaUsed())
	}
	if _, st, code := u.entriesAt(api.RootID, t1); st != 410 || code != api.CodeHistoryGone {
		t.Fatalf("snapshot before the purge: %d %s, want 410 %s", st, code, api.CodeHistoryGone)
	}
	u.must("GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 0 {
		t.Fatalf("trash after purge: %+v", tr)
	}
	checkConsistent(t, e.s, u.id)
}

// A snapshot is consistent across a rename: at any moment a moved file is
// in exactly one place.
func TestHistoryRename(t *testing.T) {
	_, u := historyEnv(t, nil)
	d := u.create(api.RootID, api.TypeDir)
	f := u.create(api.RootID, api.TypeFile)
	t1 := time.Now().UnixNano()
	dst := randMAC()
	u.must("POST", "/v1/rename", api.RenameRequest{SrcParent: api.RootID, SrcNameMAC: f.NameMAC, DstParent: d.Node.ID, DstNameMAC: dst, Name: randBytes(20)}, nil)
	t2 := time.Now().UnixNano()
	count := func(at int64) (root, dir int) {
		r, _, code := u.entriesAt(api.RootID, at)
		if code != "" {
			t.Fatal(code)
		}
		s, _, code := u.entriesAt(d.Node.ID, at)
		if code != "" {
			t.Fatal(code)
		}
		return len(r), len(s)
	}
	if r, s := count(t1); r != 2 || s != 0 {
		t.Fatalf("at t1: root %d, dir %d", r, s)
	}
	if r, s := count(t2); r != 1 || s != 1 {
		t.Fatalf("at t2: root %d, dir %d", r, s)
	}
}

// When the quota is full, the oldest history gives way to a new write.
func TestHistoryGivesWayOnFullQuota(t *testing.T) {
	e, u := historyEnv(t, func(c *Config) { c.DefaultQuota = 100_000; c.SmallChunkMax = -1 })
	old := u.putChunk(40_000)
	f := u.create(api.RootID, api.TypeFile, old)
	newer := u.putChunk(40_000)
	u.update(f.Node, newer) // old is now history only
	gc(t, e.s)
	if !chunkStored(t, e.s, u.id, old) {
		t.Fatal("history chunk collected early")
	}
	// 40k live + 40k history + 30k new > 100k: history must give way.
	third := u.putChunk(30_000)
	a := u.account()
	if a.HistoryFreed.IsZero() || chunkStored(t, e.s, u.id, old) || !chunkStored(t, e.s, u.id, third) {
		t.Fatalf("history did not give way: %+v", a)
	}
	if a.QuotaUsed > a.QuotaLimit {
		t.Fatalf("over quota after freeing: %+v", a)
	}
	checkConsistent(t, e.s, u.id)
	// Live data alone is still limited.
	if st, code := u.call("PUT", "/v1/chunks/"+randMAC(), randBytes(40_000), nil); code != api.CodeQuota {
		t.Fatalf("over live quota: %d %s", st, code)
	}
}

// History expires after the window: chunks, versions and trash go.
func TestHistoryExpires(t *testing.T) {
	e, u := historyEnv(t, nil)
	c := u.putChunk(5000)
	f := u.create(api.RootID, api.TypeFile, c)
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: f.NameMAC}, nil)
	var a api.Account
	u.must("PUT", "/v1/account/retention", api.RetentionRequest{Retention: 1}, &a)
	if a.HistoryRetention != 1 {
		t.Fatalf("retention not set: %+v", a)
	}
	gc(t, e.s)
	if !chunkStored(t, e.s, u.id, c) {
		t.Fatal("collected within the window")
	}
	time.Sleep(1100 * time.Millisecond)
	gc(t, e.s)
	if chunkStored(t, e.s, u.id, c) {
		t.Fatal("kept after the window")
	}
	var tr api.TrashResponse
	u.must("GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 0 {
		t.Fatalf("trash after the window: %+v", tr)
	}
	if a := u.account(); a.HistoryUsed != 0 {
		t.Fatalf("history used after the window: %+v", a)
	}
	checkConsistent(t, e.s, u.id)
	if st, code := u.call("PUT", "/v1/account/retention", api.RetentionRequest{Retention: -1}, nil); st != 400 {
		t.Fatalf("negative retention: %d %s", st, code)
	}
}

// A recount (usage migration) finds the same usage and history usage as
// the running accounting.
func TestHistoryRecount(t *testing.T) {
	e, u := historyEnv(t, nil)
	c1, c2 := u.putChunk(5000), u.putChunk(6000)
	f := u.create(api.RootID, api.TypeFile, c1)
	u.update(f.Node, c2)
	before := u.account()
	var u2 usageCount
	if err := e.s.db.View(func(tx *badger.Txn) (err error) { u2, err = countUsage(tx, u.id); return err }); err != nil {
		t.Fatal(err)
	}
	if u2.used() != before.QuotaUsed || u2.hist != before.HistoryUsed {
		t.Fatalf("recount %+v, running %+v", u2, before)
	}
}

// Purging one path frees its versions and the chunks only they named, and
// keeps the history of everything else.
func TestHistoryPurgePath(t *testing.T) {
	e, u := historyEnv(t, nil)
	d := u.create(api.RootID, api.TypeDir)
	c1, c2, other := u.putChunk(5000), u.putChunk(6000), u.putChunk(7000)
	f := u.create(d.Node.ID, api.TypeFile, c1)
	u.update(f.Node, c2)
	g := u.create(api.RootID, api.TypeFile, other)
	u.update(g.Node)
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: d.Node.ID, NameMAC: f.NameMAC}, nil)
	var pr api.PurgeResponse
	u.must("POST", "/v1/history/purge", api.PurgeRequest{Node: d.Node.ID}, &pr)
	if pr.Versions == 0 {
		t.Fatalf("path purge dropped nothing: %+v", pr)
	}
	gc(t, e.s)
	if chunkStored(t, e.s, u.id, c1) || chunkStored(t, e.s, u.id, c2) {
		t.Fatal("chunks of the purged path kept")
	}
	if !chunkStored(t, e.s, u.id, other) {
		t.Fatal("a chunk of another path was freed")
	}
	var vs api.VersionsResponse
	u.must("GET", fmt.Sprintf("/v1/history/versions/%d", g.Node.ID), nil, &vs)
	if len(vs.Versions) != 2 {
		t.Fatalf("another path's versions: %+v", vs)
	}
	checkConsistent(t, e.s, u.id)
}

// The trash pages through the expiry index: every deleted node once, in
// deletion order, with the sealed name it had last (stored once, in the
// entry's kept version), across pages and across changes that delete many.
func TestTrashPagesWithNames(t *testing.T) {
	_, u := historyEnv(t, nil)
	const n = api.MaxTrashPage + 7
	names := map[uint64][]byte{}
	var creates, unlinks []api.BatchOp
	for range n {
		c := &api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(20), ID: randID(), Type: api.TypeFile, Attrs: randBytes(30)}
		names[c.ID] = c.Name
		creates = append(creates, api.BatchOp{Op: api.OpCreate, Create: c})
		unlinks = append(unlinks, api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: api.RootID, NameMAC: c.NameMAC}})
	}
	for i := 0; i < n; i += 1000 {
		u.must("POST", "/v1/batch", api.BatchRequest{Ops: creates[i:min(i+1000, n)]}, nil)
	}
	// Deleted in changes of 700, 700, ...: page ends fall inside a change.
	for i := 0; i < n; i += 700 {
		u.must("POST", "/v1/batch", api.BatchRequest{Ops: unlinks[i:min(i+700, n)]}, nil)
	}
	seen := map[uint64]bool{}
	var last int64
	cursor, pages := "", 0
	for {
		var tr api.TrashResponse
		u.must("GET", "/v1/history/trash?cursor="+cursor, nil, &tr)
		pages++
		for _, it := range tr.Items {
			if seen[it.Node.ID] {
				t.Fatalf("node %d listed twice", it.Node.ID)
			}
			seen[it.Node.ID] = true
			if !bytes.Equal(it.Name, names[it.Node.ID]) {
				t.Fatalf("node %d: name %x, want %x", it.Node.ID, it.Name, names[it.Node.ID])
			}
			if it.Deleted < last {
				t.Fatalf("trash out of order")
			}
			last = it.Deleted
		}
		if tr.Cursor == "" {
			break
		}
		cursor = tr.Cursor
	}
	if len(seen) != n || pages != 2 {
		t.Fatalf("trash listed %d of %d in %d pages", len(seen), n, pages)
	}
}
