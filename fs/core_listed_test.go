package fs

import (
	"syscall"
	"testing"

	"kumo/remote/api"
)

// TestCoreListedState: readdirplus answers a listed name from the listing
// (listedStateLocked) only while everything the listing's check of its
// entry depended on is unchanged: the directory's entries, its key id and
// the share set, and the node's key id and kind. A server that moved a node
// into another share or changed its kind between two reads of a directory
// must meet the full lookup's checks, not the listing.
func TestCoreListedState(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	dir, e := d.create(api.RootID, newNode{name: "d", mode: syscall.S_IFDIR | 0o755})
	if e != 0 {
		t.Fatalf("mkdir: %v", e)
	}
	coreFile(t, d, dir.id, "a", "aaa")
	coreFile(t, d, dir.id, "b", "bbbb")
	listing := func() (map[string]dirEnt, listedAt) {
		t.Helper()
		es, at, e := d.listFresh(dir.id)
		if e != 0 {
			t.Fatalf("list: %v", e)
		}
		m := map[string]dirEnt{}
		for _, e := range es {
			m[e.name] = e
		}
		return m, at
	}
	state := func(at listedAt, e dirEnt) *nodeState {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.listedStateLocked(dir.id, at, e)
	}

	es, at := listing()
	if st := state(at, es["a"]); st == nil || st.id != es["a"].id || st.attrs.Size != 3 {
		t.Fatalf("nothing changed: listed state %+v", st)
	}
	// An entry of the directory changes: every listed name takes the full lookup.
	coreFile(t, d, dir.id, "c", "")
	if st := state(at, es["a"]); st != nil {
		t.Fatal("the directory's entries changed: the listing still answered")
	}
	es, at = listing()

	// The node's key id changes (a pulled record of another share), or
	// its kind: each refuses the listing until undone.
	refused := func(what string, change func(st *nodeState)) {
		t.Helper()
		d.mu.Lock()
		st, _ := d.stateLocked(es["b"].id)
		kid, typ := st.kid, st.typ
		change(st)
		d.mu.Unlock()
		if got := state(at, es["b"]); got != nil {
			t.Fatalf("%s: the listing still answered", what)
		}
		d.mu.Lock()
		st.kid, st.typ = kid, typ
		d.mu.Unlock()
	}
	refused("the node's key id changed", func(st *nodeState) { st.kid.Share = 0x5eed })
	refused("the node's kind changed", func(st *nodeState) { st.typ = dir.typ })

	// The share set is replaced.
	old := d.sh.cur.Load()
	d.sh.cur.Store(&shareSet{sealer: d.sealer})
	if got := state(at, es["b"]); got != nil {
		t.Fatal("the share set changed: the listing still answered")
	}
	d.sh.cur.Store(old)
	if got := state(at, es["b"]); got == nil || got.id != es["b"].id {
		t.Fatal("all back as listed: the listing should answer again")
	}
}
