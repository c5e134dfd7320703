package cache

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// inBadger says whether badger itself (not the overlay) holds key.
func inBadger(t *testing.T, s *Store, key []byte) bool {
	t.Helper()
	err := s.db.View(func(txn *badger.Txn) error { _, err := txn.Get(key); return err })
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestWriteBehind: mutations not yet applied to badger are visible to every
// read (point reads through the overlay, scans after draining), and a crash
// while they are still queued loses none of them: the redo log has them.
func TestWriteBehind(t *testing.T) {
	live := t.TempDir()
	s := openTest(t, live, 0)
	must(s.Apply(Mutation{
		PutNodes:   []api.Node{smallNode(100, 1)},
		PutEntries: []Entry{{Parent: api.RootID, NameMAC: mac(100), Name: []byte("old"), Child: 100}},
	}))
	must(s.behind.drain())

	s.behind.applying.Lock() // keep what follows queued
	for i := uint64(0); i < 20; i++ {
		m := smallFileMutation(i)
		m.Cursor = u64p(i + 1)
		must(s.Apply(m))
	}
	must(s.Apply(Mutation{DeleteNodes: []uint64{100}, DeleteEntries: []Entry{{Parent: api.RootID, NameMAC: mac(100)}}}))
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(205, 99)}})) // a later write of the same key wins
	if inBadger(t, s, nodeKey(200)) || !inBadger(t, s, nodeKey(100)) {
		t.Fatal("the test's premise fails: badger already has the queued writes")
	}

	check := func(r *Store, when string) {
		t.Helper()
		if _, err := r.GetNode(100); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: deleted node: %v", when, err)
		}
		if _, err := r.Lookup(api.RootID, mac(100)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: deleted entry: %v", when, err)
		}
		for i := uint64(0); i < 20; i++ {
			n, err := r.GetNode(200 + i)
			want := byte(i)
			if i == 5 {
				want = 99
			}
			if err != nil || n.Attrs[0] != want {
				t.Fatalf("%s: node %d: %v %v", when, 200+i, n.Attrs, err)
			}
			if e, err := r.Lookup(api.RootID, mac(int(i))); err != nil || e.Child != 200+i {
				t.Fatalf("%s: entry %d: %+v %v", when, i, e, err)
			}
			p, ok, err := r.GetInline(200+i, 1)
			if err != nil || !ok || !bytes.Equal(p, bytes.Repeat([]byte{byte(i)}, 4096)) {
				t.Fatalf("%s: inline data %d: ok=%v %v", when, i, ok, err)
			}
		}
		if c, err := r.Cursor(); err != nil || c != 20 {
			t.Fatalf("%s: cursor %d %v", when, c, err)
		}
	}
	check(s, "queued")

	// kill -9 now: badger's files and the log as they are, nothing applied.
	snap := t.TempDir()
	copyTree(t, live, snap)
	r := openTest(t, snap, 0)
	check(r, "after a crash with writes queued")
	if l, err := r.List(api.RootID); err != nil || len(l) != 20 {
		t.Fatalf("after a crash: list has %d entries, %v", len(l), err)
	}
	must(r.Close())

	// Scans wait for the queue: release it, and List sees everything.
	s.behind.applying.Unlock()
	if l, err := s.List(api.RootID); err != nil || len(l) != 20 {
		t.Fatalf("list has %d entries, %v", len(l), err)
	}
	if ops, err := s.Pending(100); err != nil || len(ops) != 20 {
		t.Fatalf("journal has %d ops, %v", len(ops), err)
	}
	if !inBadger(t, s, nodeKey(219)) || inBadger(t, s, nodeKey(100)) {
		t.Fatal("drained writes are not in badger")
	}
	check(s, "applied")
	must(s.Close())
}

// TestWriteBehindConcurrent: writers see their own writes at once, from
// the overlay or from badger, while the applier moves them across and a
// scanner lists the directory under them.
func TestWriteBehindConcurrent(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	const writers, each = 4, 300
	errs := make(chan error, writers+1)
	done := make(chan struct{})
	go func() { // a scanner
		for {
			select {
			case <-done:
				errs <- nil
				return
			default:
			}
			if _, err := s.List(api.RootID); err != nil {
				errs <- err
				return
			}
		}
	}()
	for w := 0; w < writers; w++ {
		go func(w int) {
			for i := 0; i < each; i++ {
				id := uint64(1000 + w*each + i)
				err := s.Apply(Mutation{
					PutNodes:   []api.Node{smallNode(id, byte(i))},
					PutEntries: []Entry{{Parent: api.RootID, NameMAC: mac(int(id)), Name: []byte{byte(w)}, Child: id}},
				})
				if err == nil && i > 0 { // and drop the previous one again
					err = s.Apply(Mutation{DeleteNodes: []uint64{id - 1}})
				}
				if err != nil {
					errs <- err
					return
				}
				if n, err := s.GetNode(id); err != nil || n.Attrs[0] != byte(i) {
					errs <- fmt.Errorf("writer %d: node %d right after Apply: %v", w, id, err)
					return
				}
				if i > 0 {
					if _, err := s.GetNode(id - 1); !errors.Is(err, ErrNotFound) {
						errs <- fmt.Errorf("writer %d: node %d right after its delete: %v", w, id-1, err)
						return
					}
				}
			}
			errs <- nil
		}(w)
	}
	for w := 0; w < writers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	l, err := s.List(api.RootID)
	if err != nil || len(l) != writers*each {
		t.Fatalf("list: %d entries, %v", len(l), err)
	}
	must(s.behind.drain())
	for w := 0; w < writers; w++ {
		last := uint64(1000 + w*each + each - 1)
		if _, err := s.GetNode(last); err != nil || !inBadger(t, s, nodeKey(last)) || inBadger(t, s, nodeKey(last-1)) {
			t.Fatalf("writer %d: after draining, badger is not the overlay's state: %v", w, err)
		}
	}
}

// TestDirEmpty: DirEmpty answers as List would after draining, while the
// entries' puts and deletes are queued, applied, or some of each, without
// waiting for the applier (it is held for part of the run).
func TestDirEmpty(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	const dirs = 3
	live := map[uint64]map[string]bool{}
	for d := uint64(1); d <= dirs; d++ {
		live[d] = map[string]bool{}
	}
	check := func(step int) {
		t.Helper()
		for d := uint64(1); d <= dirs; d++ {
			empty, err := s.DirEmpty(d)
			if err != nil {
				t.Fatal(err)
			}
			if want := len(live[d]) == 0; empty != want {
				t.Fatalf("step %d: DirEmpty(%d) = %v, want %v (%d entries)", step, d, empty, want, len(live[d]))
			}
		}
	}
	check(0)
	held := false
	for step := 1; step <= 400; step++ {
		// A fixed pattern that walks every case: puts and deletes queued
		// behind a held applier, applied ones deleted while held, a put and
		// its delete in one queue.
		if step%37 == 0 {
			held = toggleApplier(s, held)
		}
		d := uint64(step%dirs + 1)
		name := mac(step*7%5 + 1)
		var m Mutation
		if live[d][name] {
			m.DeleteEntries = []Entry{{Parent: d, NameMAC: name}}
			delete(live[d], name)
		} else {
			m.PutEntries = []Entry{{Parent: d, NameMAC: name, Name: []byte("x"), Child: uint64(1000 + step)}}
			live[d][name] = true
		}
		must(s.Apply(m))
		check(step)
	}
	if held {
		s.behind.applying.Unlock()
	}
	for d := uint64(1); d <= dirs; d++ {
		es, err := s.List(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != len(live[d]) {
			t.Fatalf("dir %d: List %d entries, want %d", d, len(es), len(live[d]))
		}
	}
	check(-1)

	// Entries badger holds, deleted while the applier is held: empty.
	const d = 9
	must(s.Apply(Mutation{PutEntries: []Entry{{Parent: d, NameMAC: mac(1), Name: []byte("a"), Child: 2001}, {Parent: d, NameMAC: mac(2), Name: []byte("b"), Child: 2002}}}))
	must(s.behind.drain())
	s.behind.applying.Lock()
	defer s.behind.applying.Unlock()
	for i, c := range []struct {
		m     Mutation
		empty bool
	}{
		{Mutation{DeleteEntries: []Entry{{Parent: d, NameMAC: mac(1)}}}, false},
		{Mutation{DeleteEntries: []Entry{{Parent: d, NameMAC: mac(2)}}}, true},
		{Mutation{PutEntries: []Entry{{Parent: d, NameMAC: mac(3), Name: []byte("c"), Child: 2003}}}, false},
		{Mutation{DeleteEntries: []Entry{{Parent: d, NameMAC: mac(3)}}}, true},
	} {
		must(s.Apply(c.m))
		if empty, err := s.DirEmpty(d); err != nil || empty != c.empty {
			t.Fatalf("held applier, change %d: DirEmpty = %v, %v; want %v", i, empty, err, c.empty)
		}
	}
}

// toggleApplier holds the applier if held is false, lets it go if true, and
// returns the new state.
func toggleApplier(s *Store, held bool) bool {
	if held {
		s.behind.applying.Unlock()
	} else {
		s.behind.applying.Lock()
	}
	return !held
}

// TestListQueued: List answers with the entries' queued puts and deletes
// merged over badger's, in nameMAC order, without waiting for the applier
// (held for part of the run: a List that drained would never return).
func TestListQueued(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	held := false
	defer func() { // a failure while held: let the store close
		if held {
			s.behind.applying.Unlock()
		}
	}()
	const dirs = 3
	live := map[uint64]map[string]Entry{}
	for d := uint64(1); d <= dirs; d++ {
		live[d] = map[string]Entry{}
	}
	check := func(step int) {
		t.Helper()
		for d := uint64(1); d <= dirs; d++ {
			got := make(chan []Entry, 1)
			go func() {
				es, err := s.List(d)
				if err != nil {
					t.Error(err)
				}
				got <- es
			}()
			var es []Entry
			select {
			case es = <-got:
			case <-time.After(5 * time.Second):
				if held { // let the store close
					s.behind.applying.Unlock()
					held = false
				}
				t.Fatalf("step %d: List(%d) waits for the held applier", step, d)
			}
			want := slices.SortedFunc(maps.Values(live[d]), byNameMAC)
			if !slices.EqualFunc(es, want, func(a, b Entry) bool {
				return a.Parent == b.Parent && a.NameMAC == b.NameMAC && a.Child == b.Child && string(a.Name) == string(b.Name)
			}) {
				t.Fatalf("step %d: List(%d) = %v, want %v", step, d, es, want)
			}
		}
	}
	for step := 1; step <= 300; step++ {
		// Puts, deletes and re-puts with a new child, some applied, some
		// queued behind the held applier, some of each in one directory.
		if step%23 == 0 {
			held = toggleApplier(s, held)
		}
		d := uint64(step%dirs + 1)
		name := mac(step*7%11 + 1)
		var m Mutation
		if _, ok := live[d][name]; ok && step%3 != 0 {
			m.DeleteEntries = []Entry{{Parent: d, NameMAC: name}}
			delete(live[d], name)
		} else {
			e := Entry{Parent: d, NameMAC: name, Name: []byte(fmt.Sprint("n", step)), Child: uint64(1000 + step)}
			m.PutEntries = []Entry{e}
			live[d][name] = e
		}
		must(s.Apply(m))
		check(step)
	}
	if held {
		s.behind.applying.Unlock()
		held = false
	}
	must(s.behind.drain())
	check(-1)
}

// TestSnapshotAfterDirectWrite: point reads that miss the overlay read a
// shared snapshot of badger; a mutation too big for the queue is committed
// to badger directly, and the very next read must see it (the snapshot is
// renewed before Apply returns), as must reads after the queue's own
// commits.
func TestSnapshotAfterDirectWrite(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	must(s.Apply(Mutation{PutNodes: []api.Node{{ID: 1, Type: api.TypeDir, Version: 1, Nlink: 2, Attrs: []byte("r")}}}))
	must(s.behind.drain()) // the snapshot now holds node 1
	var big Mutation
	for i := range behindMaxEntries + 10 {
		big.PutEntries = append(big.PutEntries, Entry{Parent: 1, NameMAC: mac(i), Name: []byte{byte(i)}, Child: uint64(1000 + i)})
	}
	big.DeleteNodes = []uint64{1}
	must(s.Apply(big))
	if _, err := s.GetNode(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node deleted by a direct write still read: %v", err)
	}
	for i := range behindMaxEntries + 10 {
		if e, err := s.Lookup(1, mac(i)); err != nil || e.Child != uint64(1000+i) {
			t.Fatalf("entry %d of a direct write: %+v, %v", i, e, err)
		}
	}
	// Small mutations again, through the queue and its commits.
	for i := range 100 {
		must(s.Apply(Mutation{DeleteEntries: []Entry{{Parent: 1, NameMAC: mac(i)}}}))
	}
	must(s.behind.drain())
	for i := range 100 {
		if _, err := s.Lookup(1, mac(i)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("entry %d deleted through the queue: %v", i, err)
		}
	}
}

// TestSnapshotConcurrent: readers share one badger snapshot while the
// applier renews it; a reader that starts after Apply returned always sees
// that write or a later one (never an older value), through queued
// batches, direct big writes and drains. Run it with -race.
func TestSnapshotConcurrent(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	const keysN = 64
	var published [keysN]atomic.Uint64 // highest version Apply returned for node i+1
	stop := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := i % keysN
				want := published[k].Load()
				if want == 0 {
					continue
				}
				n, err := s.GetNode(uint64(k + 1))
				if err != nil {
					errs <- fmt.Errorf("node %d: %w", k+1, err)
					return
				}
				if n.Version < want {
					errs <- fmt.Errorf("node %d: read version %d after version %d was applied", k+1, n.Version, want)
					return
				}
			}
		}()
	}
	for v := uint64(1); v <= 60; v++ {
		var m Mutation
		if v%10 == 0 { // big: committed directly
			for i := range keysN {
				m.PutNodes = append(m.PutNodes, api.Node{ID: uint64(i + 1), Type: api.TypeFile, Version: v, Nlink: 1, Attrs: []byte("a")})
			}
			for i := range behindMaxEntries {
				m.PutEntries = append(m.PutEntries, Entry{Parent: 9999, NameMAC: mac(int(v)*10000 + i), Name: []byte("n"), Child: 1})
			}
			must(s.Apply(m))
			for i := range keysN {
				published[i].Store(v)
			}
			continue
		}
		for i := range keysN {
			must(s.Apply(Mutation{PutNodes: []api.Node{{ID: uint64(i + 1), Type: api.TypeFile, Version: v, Nlink: 1, Attrs: []byte("a")}}}))
			published[i].Store(v)
		}
		if v%7 == 0 {
			must(s.behind.drain())
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	must(s.Close())
	if _, err := s.GetNode(1); err == nil {
		t.Fatal("GetNode after Close succeeded")
	}
	if _, err := s.DirEmpty(9999); err == nil {
		t.Fatal("DirEmpty after Close succeeded")
	}
}

// TestEntriesGen: a directory's EntriesGen moves with every change to its
// entries (and is even once the change is applied), not with changes to
// nodes only or to a directory in another slot, and Reset moves them all:
// readdir trusts a listing only while it stays put (fs.dirHandle.Lookup).
func TestEntriesGen(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	const dir, other = 5, 6
	g0, o0 := s.EntriesGen(dir), s.EntriesGen(other)
	if g0%2 != 0 {
		t.Fatalf("gen %d odd with nothing applying", g0)
	}
	must(s.Apply(Mutation{PutNodes: []api.Node{smallNode(100, 1)}}))
	if g := s.EntriesGen(dir); g != g0 {
		t.Fatalf("a node's change moved the entries' gen: %d -> %d", g0, g)
	}
	must(s.Apply(Mutation{PutEntries: []Entry{{Parent: dir, NameMAC: mac(1), Name: []byte("a"), Child: 100}}}))
	g1 := s.EntriesGen(dir)
	if g1 == g0 || g1%2 != 0 {
		t.Fatalf("after a put: gen %d -> %d, want another even one", g0, g1)
	}
	if o := s.EntriesGen(other); o != o0 {
		t.Fatalf("a put in %d moved %d's gen", dir, other)
	}
	// Two directories in one slot: still even after, and moved.
	must(s.Apply(Mutation{DeleteEntries: []Entry{{Parent: dir, NameMAC: mac(1)}},
		PutEntries: []Entry{{Parent: dir + 1024, NameMAC: mac(2), Name: []byte("b"), Child: 100}}}))
	g2 := s.EntriesGen(dir)
	if g2 == g1 || g2%2 != 0 {
		t.Fatalf("after a change to two directories of one slot: gen %d -> %d", g1, g2)
	}
	must(s.Reset())
	if g, o := s.EntriesGen(dir), s.EntriesGen(other); g == g2 || o == o0 || g%2 != 0 {
		t.Fatalf("Reset: gens %d -> %d, %d -> %d", g2, g, o0, o)
	}
}
