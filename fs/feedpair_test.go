package fs

import (
	"fmt"
	"testing"
	"time"

	"kumo/cache"
	"kumo/internal/keys"
	"kumo/remote/api"
)

// countingTree counts the reads pairFeedEntries makes of a real store.
type countingTree struct {
	s                 *cache.Store
	lookups, getNodes int
}

func (c *countingTree) GetNode(id uint64) (api.Node, error) {
	c.getNodes++
	return c.s.GetNode(id)
}

func (c *countingTree) Lookup(parent uint64, mac string) (cache.Entry, error) {
	c.lookups++
	return c.s.Lookup(parent, mac)
}

// pairTestStore opens a local store holding the root, a directory 2, and
// the files 10 (root/x), 11 (root/y), 12 (root/doc) and 13 (2/mv).
func pairTestStore(t testing.TB) *cache.Store {
	t.Helper()
	s, err := cache.Open(cache.Options{Dir: t.TempDir(), Key: keys.Key{1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	m := cache.Mutation{
		PutNodes: []api.Node{
			{ID: api.RootID, Type: api.TypeDir, Nlink: 3},
			{ID: 2, Type: api.TypeDir, Nlink: 2, Parent: api.RootID},
			{ID: 10, Type: api.TypeFile, Nlink: 1}, {ID: 11, Type: api.TypeFile, Nlink: 1},
			{ID: 12, Type: api.TypeFile, Nlink: 1}, {ID: 13, Type: api.TypeFile, Nlink: 1},
		},
		PutEntries: []cache.Entry{
			{Parent: api.RootID, NameMAC: "d", Child: 2},
			{Parent: api.RootID, NameMAC: "x", Child: 10}, {Parent: api.RootID, NameMAC: "y", Child: 11},
			{Parent: api.RootID, NameMAC: "doc", Child: 12}, {Parent: 2, NameMAC: "mv", Child: 13},
		},
	}
	if err := s.Apply(m); err != nil {
		t.Fatal(err)
	}
	return s
}

// feedBatch is a feed batch's entry changes as applyChanges keys them.
type feedBatch struct {
	entries map[feedKey]api.Change
	order   []feedKey
}

func (b *feedBatch) add(parent uint64, mac string, node uint64, deleted bool) {
	k := feedKey{parent, mac}
	if b.entries == nil {
		b.entries = map[feedKey]api.Change{}
	}
	if _, ok := b.entries[k]; !ok {
		b.order = append(b.order, k)
	}
	b.entries[k] = api.Change{Kind: api.ChangeEntry, Parent: parent, NameMAC: mac, Node: node, Deleted: deleted}
}

// creations adds files new creations of new nodes in the root, and dirs
// new directories in the root holding files new files each (an untar
// made elsewhere).
func (b *feedBatch) creations(files, dirs, perDir int) {
	for i := range files {
		b.add(api.RootID, fmt.Sprintf("new%d", i), 1_000_000+uint64(i), false)
	}
	for i := range dirs {
		dir := 2_000_000 + uint64(i)
		b.add(api.RootID, fmt.Sprintf("dir%d", i), dir, false)
		for j := range perDir {
			b.add(dir, fmt.Sprintf("f%d", j), 3_000_000+uint64(i*perDir+j), false)
		}
	}
}

// TestFeedPairReadsEachCreationOnce: a feed batch holding an exchange
// (x <-> y), an editor's save (doc moved to doc~, a new doc), a move (2/mv
// to mv2) and many lone creations, in the root and in directories the
// batch creates. pairFeedEntries must find the three pairs and nothing
// else, reading each lone creation's local entry at most once and none in
// a directory this drive does not have. The loops before read each one
// twice, in every directory: 415 lookups here, not 108.
func TestFeedPairReadsEachCreationOnce(t *testing.T) {
	s := pairTestStore(t)
	var b feedBatch
	b.add(api.RootID, "x", 11, false) // exchanged
	b.add(api.RootID, "doc", 20, false)
	b.add(api.RootID, "doc~", 12, false)
	b.add(2, "mv", 13, true)
	b.add(api.RootID, "mv2", 13, false)
	b.creations(100, 4, 25)
	b.add(api.RootID, "y", 10, false)
	want := map[feedKey]feedPair{
		{api.RootID, "x"}:    {del: feedKey{api.RootID, "x"}, add: feedKey{api.RootID, "y"}, exchange: true},
		{api.RootID, "doc"}:  {del: feedKey{api.RootID, "doc"}, add: feedKey{api.RootID, "doc~"}, repoint: true},
		{2, "mv"}:            {del: feedKey{2, "mv"}, add: feedKey{api.RootID, "mv2"}},
		{api.RootID, "mv2"}:  {del: feedKey{2, "mv"}, add: feedKey{api.RootID, "mv2"}},
		{api.RootID, "doc~"}: {del: feedKey{api.RootID, "doc"}, add: feedKey{api.RootID, "doc~"}, repoint: true},
	}
	rootCreations := 4 + 100 + 4 // x, y, doc, doc~, new*, dir*
	for run := range 20 {        // map order varies between runs
		tree := &countingTree{s: s}
		got := pairFeedEntries(b.entries, b.order, tree)
		if y := got[feedKey{api.RootID, "y"}]; y == nil || *y != want[feedKey{api.RootID, "x"}] &&
			*y != (feedPair{del: feedKey{api.RootID, "y"}, add: feedKey{api.RootID, "x"}, exchange: true}) {
			t.Fatalf("run %d: y paired %+v, want the exchange with x", run, y)
		}
		if *got[feedKey{api.RootID, "x"}] != *got[feedKey{api.RootID, "y"}] {
			t.Fatalf("run %d: x and y in different pairs", run)
		}
		for k, p := range got {
			if k.mac == "x" || k.mac == "y" {
				continue
			}
			if w, ok := want[k]; !ok || *p != w {
				t.Fatalf("run %d: %v paired %+v, want %+v (%v)", run, k, *p, w, ok)
			}
		}
		if len(got) != len(want)+1 {
			t.Fatalf("run %d: %d changes paired, want %d", run, len(got), len(want)+1)
		}
		if tree.lookups > rootCreations || tree.getNodes > 5 {
			t.Fatalf("run %d: %d entry lookups and %d node reads for %d lone creations in the root and 100 in 4 directories it creates; want at most %d and 5",
				run, tree.lookups, tree.getNodes, rootCreations, rootCreations)
		}
	}
}

// TestFeedPairNoLookupForOneCreation: with one lone creation the batch
// cannot hold an exchange or a repointing: nothing is read.
func TestFeedPairNoLookupForOneCreation(t *testing.T) {
	s := pairTestStore(t)
	var b feedBatch
	b.add(api.RootID, "new", 99, false)
	b.add(2, "mv", 13, true)
	b.add(api.RootID, "mv2", 13, false)
	tree := &countingTree{s: s}
	got := pairFeedEntries(b.entries, b.order, tree)
	if len(got) != 2 || got[feedKey{api.RootID, "new"}] != nil {
		t.Fatalf("paired %v, want the move only", got)
	}
	if tree.lookups+tree.getNodes != 0 {
		t.Fatalf("%d store reads, want none", tree.lookups+tree.getNodes)
	}
}

// BenchmarkFeedPairCreations is applyChanges' pairing of a feed batch of
// 14,000 lone creations (an untar made on another device) against a real
// store: in the root, a directory this drive has, or in 140 directories
// the batch creates. ns/entry and store reads/entry.
func BenchmarkFeedPairCreations(b *testing.B) {
	benchFeedPair(b, pairFeedEntries)
}

func benchFeedPair(b *testing.B, pair func(map[feedKey]api.Change, []feedKey, localTree) map[feedKey]*feedPair) {
	for _, tc := range []struct {
		name                string
		files, dirs, perDir int
	}{
		{"ExistingDirectory", 14_000, 0, 0},
		{"NewDirectories", 0, 140, 100},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := pairTestStore(b)
			var batch feedBatch
			batch.creations(tc.files, tc.dirs, tc.perDir)
			tree := &countingTree{s: s}
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if got := pair(batch.entries, batch.order, tree); len(got) != 0 {
					b.Fatalf("paired %d", len(got))
				}
			}
			n := float64(b.N * len(batch.order))
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/n, "ns/entry")
			b.ReportMetric(float64(tree.lookups+tree.getNodes)/n, "reads/entry")
		})
	}
}
