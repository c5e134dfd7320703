package cache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// listedModelCheck compares every name's Lookup with the model.
func listedModelCheck(t *testing.T, s *Store, dir uint64, names int, model map[string]uint64) {
	t.Helper()
	for i := range names {
		m := mac(i)
		e, err := s.Lookup(dir, m)
		child, ok := model[m]
		switch {
		case ok && err != nil:
			t.Fatalf("lookup %s: %v, want child %d", m[60:], err, child)
		case ok && e.Child != child:
			t.Fatalf("lookup %s: child %d, want %d", m[60:], e.Child, child)
		case !ok && !errors.Is(err, ErrNotFound):
			t.Fatalf("lookup %s: %v (child %d), want not found", m[60:], err, e.Child)
		}
	}
}

// TestListedLookups: lookups answered from a remembered listing agree with
// the store through random creates, renames' puts and deletes in the listed
// directory and in another sharing its counter, with listings taken at
// random points; and a directory emptied name by name after its listing is
// still answered from memory (the apply carried it forward).
func TestListedLookups(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	const dir, other = 5, 5 + 1024 // one counter slot
	const names = 60
	model := map[string]uint64{}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 2000 {
		i := rng.IntN(names)
		m := mac(i)
		switch r := rng.IntN(10); {
		case r < 4:
			child := uint64(1000 + step)
			must(s.Apply(Mutation{PutEntries: []Entry{{Parent: dir, NameMAC: m, Name: []byte{byte(i)}, Child: child}}}))
			model[m] = child
		case r < 7:
			must(s.Apply(Mutation{DeleteEntries: []Entry{{Parent: dir, NameMAC: m}}}))
			delete(model, m)
		case r < 8:
			// A delete and a put of the same name in one mutation (deletes first).
			child := uint64(1000 + step)
			must(s.Apply(Mutation{DeleteEntries: []Entry{{Parent: dir, NameMAC: m}},
				PutEntries: []Entry{{Parent: dir, NameMAC: m, Name: []byte{1}, Child: child}}}))
			model[m] = child
		case r < 9:
			must(s.Apply(Mutation{PutEntries: []Entry{{Parent: other, NameMAC: m, Name: []byte{2}, Child: 7}}}))
		default:
			es, err := s.List(dir)
			must(err)
			if len(es) != len(model) {
				t.Fatalf("step %d: listing has %d entries, want %d", step, len(es), len(model))
			}
		}
		listedModelCheck(t, s, dir, names, model)
	}

	// Emptied name by name after one listing: still remembered.
	_, err := s.List(dir)
	must(err)
	for m := range model {
		must(s.Apply(Mutation{DeleteEntries: []Entry{{Parent: dir, NameMAC: m}}}))
		delete(model, m)
		if _, _, hit := s.listed.lookup(dir, mac(0), s.entryGens.slot(dir)); !hit {
			t.Fatal("a delete in a listed directory made the store forget the listing")
		}
	}
	listedModelCheck(t, s, dir, names, model)

	// Reset drops every entry: a listing from before it is never carried
	// into the next change.
	must(s.Apply(Mutation{PutEntries: []Entry{{Parent: dir, NameMAC: mac(1), Name: []byte{1}, Child: 11}}}))
	_, err = s.List(dir)
	must(err)
	must(s.Reset())
	listedModelCheck(t, s, dir, names, map[string]uint64{})
	must(s.Apply(Mutation{PutEntries: []Entry{{Parent: dir, NameMAC: mac(2), Name: []byte{2}, Child: 12}}}))
	listedModelCheck(t, s, dir, names, map[string]uint64{mac(2): 12})

	// A mutation that fails changes nothing, the listing's answers neither.
	_, err = s.List(dir)
	must(err)
	if err := s.Apply(Mutation{DeleteEntries: []Entry{{Parent: dir, NameMAC: mac(2)}},
		PutEntries: []Entry{{Parent: dir, NameMAC: ""}}}); err == nil {
		t.Fatal("test premise: a put without a name MAC should fail")
	}
	listedModelCheck(t, s, dir, names, map[string]uint64{mac(2): 12})

	// A big mutation (badger first, not behind) is carried like a small one.
	_, err = s.List(dir)
	must(err)
	var big []Entry
	for i := range 600 {
		big = append(big, Entry{Parent: dir, NameMAC: mac(1000 + i), Name: []byte{3}, Child: uint64(5000 + i)})
	}
	must(s.Apply(Mutation{PutEntries: big, DeleteEntries: []Entry{{Parent: dir, NameMAC: mac(2)}}}))
	want := map[string]uint64{}
	for _, e := range big {
		want[e.NameMAC] = e.Child
	}
	listedModelCheck(t, s, dir, 1600, want)

	// Closed: lookups go to the store, which says so.
	must(s.Close())
	if _, err := s.Lookup(dir, mac(1000)); err == nil {
		t.Fatal("a lookup after Close answered from a remembered listing")
	}
}

// TestListedLookupsConcurrent: names deleted one after another while other
// goroutines list the directory and look names up: a name whose delete had
// returned is never found, one whose delete had not begun always is.
func TestListedLookupsConcurrent(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	const dir, names = 9, 3000
	var es []Entry
	for i := range names {
		es = append(es, Entry{Parent: dir, NameMAC: mac(i), Name: []byte(fmt.Sprint(i)), Child: uint64(100 + i)})
	}
	must(s.Apply(Mutation{PutEntries: es}))
	var deleted, started atomic.Int64 // deletes returned, deletes begun
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if rng.IntN(50) == 0 {
					if _, err := s.List(dir); err != nil {
						errs <- err
						return
					}
				}
				done, i := deleted.Load(), rng.IntN(names)
				e, err := s.Lookup(dir, mac(i))
				begun := started.Load()
				switch {
				case int64(i) < done && err == nil:
					errs <- fmt.Errorf("name %d found (child %d) after its delete returned", i, e.Child)
					return
				case int64(i) >= begun && (err != nil || e.Child != uint64(100+i)):
					errs <- fmt.Errorf("name %d not deleted yet: got %v, child %d", i, err, e.Child)
					return
				}
			}
		}()
	}
	for i := range names {
		started.Store(int64(i + 1))
		must(s.Apply(Mutation{DeleteEntries: []Entry{{Parent: dir, NameMAC: mac(i)}}}))
		deleted.Store(int64(i + 1))
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestListedAfterMisses: a directory whose listing the store never made (the
// kernel listed it from its own cache) is listed at the second Lookup in a
// row that finds its name in it, so the names after that are answered from memory,
// as an rm -rf unlinks them; a directory too big to remember is listed once,
// not at every second Lookup.
func TestListedAfterMisses(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	const dir, other, big = 7, 8, 9
	put := func(parent uint64, n int) {
		var es []Entry
		for i := range n {
			es = append(es, Entry{Parent: parent, NameMAC: mac(i), Name: []byte{1}, Child: uint64(100 + i)})
		}
		must(s.Apply(Mutation{PutEntries: es}))
	}
	put(dir, 50)
	put(other, 5)
	remembered := func(d uint64) bool {
		_, _, hit := s.listed.lookup(d, mac(0), s.entryGens.slot(d))
		return hit
	}

	// Misses in two directories by turns list neither.
	for i := range 4 {
		_, err := s.Lookup(dir, mac(i))
		must(err)
		_, err = s.Lookup(other, mac(i))
		must(err)
	}
	if remembered(dir) || remembered(other) {
		t.Fatal("lookups alternating between directories listed one of them")
	}

	// Names that are not there never list it.
	for i := range 4 {
		if _, err := s.Lookup(dir, mac(1000+i)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("lookup of a missing name: %v", err)
		}
	}
	if remembered(dir) {
		t.Fatal("lookups of missing names listed the directory")
	}

	// Two found in a row in one directory: listed, and the rest answered
	// from it.
	for i := 10; i < 12; i++ {
		e, err := s.Lookup(dir, mac(i))
		must(err)
		if e.Child != uint64(100+i) {
			t.Fatalf("lookup %d: child %d, want %d", i, e.Child, 100+i)
		}
	}
	if !remembered(dir) {
		t.Fatal("the second lookup in a row in a directory did not list it")
	}
	for i := 12; i < 50; i++ {
		must(s.Apply(Mutation{DeleteEntries: []Entry{{Parent: dir, NameMAC: mac(i)}}}))
	}
	if !remembered(dir) {
		t.Fatal("deletes after the listing made the store forget it")
	}
	listedModelCheck(t, s, dir, 60, func() map[string]uint64 {
		m := map[string]uint64{}
		for i := range 12 {
			m[mac(i)] = uint64(100 + i)
		}
		return m
	}())

	// Too big to remember: listed at the second miss, then not again.
	put(big, listedMaxEntries+1)
	for i := range 2 {
		_, err := s.Lookup(big, mac(i))
		must(err)
	}
	if remembered(big) || !slices.Contains(s.listed.big[:], big) {
		t.Fatal("a directory too big to remember was remembered, or not noted as too big")
	}
	for i := range 10 {
		if s.listed.listAfterMiss(big) {
			t.Fatalf("miss %d in a directory too big to remember would list it again", i)
		}
	}
}
