package cache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestNewDirsLookups checks that lookups in a directory made in this session
// (answered from memory when the name is absent) agree with a model of its
// entries through random puts, deletes, deletes-and-puts of one name in one
// mutation, and the directory's own deletion; and that a directory past the
// bounds falls back to badger with the same answers.
func TestNewDirsLookups(t *testing.T) {
	s := openTest(t, t.TempDir(), 1<<30)
	const dir, other = 7, 8
	if err := s.Apply(Mutation{NewDirs: []uint64{dir}}); err != nil {
		t.Fatal(err)
	}
	model := map[string]uint64{}
	rng := rand.New(rand.NewPCG(1, 2))
	name := func() string { return fmt.Sprintf("mac%d", rng.IntN(40)) }
	check := func(step int) {
		t.Helper()
		for i := range 40 {
			mac := fmt.Sprintf("mac%d", i)
			e, err := s.Lookup(dir, mac)
			want, ok := model[mac]
			switch {
			case ok && (err != nil || e.Child != want):
				t.Fatalf("step %d: %s: got %v %v, want child %d", step, mac, e.Child, err, want)
			case !ok && !errors.Is(err, ErrNotFound):
				t.Fatalf("step %d: %s: got %v %v, want not found", step, mac, e.Child, err)
			}
		}
	}
	for step := range 400 {
		var m Mutation
		switch rng.IntN(4) {
		case 0, 1:
			n := name()
			m.PutEntries = []Entry{{Parent: dir, NameMAC: n, Name: []byte("x"), Child: uint64(step + 100)}}
			model[n] = uint64(step + 100)
		case 2:
			n := name()
			m.DeleteEntries = []Entry{{Parent: dir, NameMAC: n}}
			delete(model, n)
		case 3: // a rename over an existing name: delete and put in one mutation
			n := name()
			m.DeleteEntries = []Entry{{Parent: dir, NameMAC: n}}
			m.PutEntries = []Entry{{Parent: dir, NameMAC: n, Name: []byte("y"), Child: uint64(step + 100)}}
			model[n] = uint64(step + 100)
		}
		if err := s.Apply(m); err != nil {
			t.Fatal(err)
		}
		check(step)
	}
	if !s.newDirs.absent(dir, "never-put") {
		t.Fatal("the directory is not indexed: the test checks nothing")
	}
	// An entry put in a directory not made here is found (not indexed).
	if err := s.Apply(Mutation{PutEntries: []Entry{{Parent: other, NameMAC: "a", Name: []byte("x"), Child: 3}}}); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Lookup(other, "a"); err != nil || e.Child != 3 {
		t.Fatalf("other dir: %v %v", e, err)
	}
	// Past the bounds: dropped, and the same answers from badger.
	s.newDirs.mu.Lock()
	s.newDirs.n = newDirsMaxNames
	s.newDirs.mu.Unlock()
	if err := s.Apply(Mutation{PutEntries: []Entry{{Parent: dir, NameMAC: "late", Name: []byte("x"), Child: 9}}}); err != nil {
		t.Fatal(err)
	}
	model["late"] = 9
	if s.newDirs.absent(dir, "never-put") {
		t.Fatal("a directory past the bound stays indexed")
	}
	check(-1)
	if e, err := s.Lookup(dir, "late"); err != nil || e.Child != 9 {
		t.Fatalf("late: %v %v", e, err)
	}
	// Deleting the directory forgets it.
	if err := s.Apply(Mutation{NewDirs: []uint64{other + 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(Mutation{DeleteNodes: []uint64{other + 1}}); err != nil {
		t.Fatal(err)
	}
	if s.newDirs.absent(other+1, "x") {
		t.Fatal("a deleted directory stays indexed")
	}
}
