package cache

import (
	"bytes"
	"sync"
	"testing"
)

func TestInlineSegments(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	p := bytes.Repeat([]byte("inline "), 1000)
	if err := s.Apply(Mutation{PutInline: []InlineSegment{{Node: 7, Gen: 1, Data: p}, {Node: 7, Gen: 2, Data: []byte{}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(Mutation{PutInline: []InlineSegment{{Node: 8, Gen: 1, Data: make([]byte, InlineMax+1)}}}); err == nil {
		t.Fatal("oversized inline segment accepted")
	}
	// Concurrent syncs all return, sharing badger syncs.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.SyncTree(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, 0)
	got, ok, err := s.GetInline(7, 1)
	if err != nil || !ok || !bytes.Equal(got, p) {
		t.Fatalf("GetInline after reopen: %d bytes, %v, %v", len(got), ok, err)
	}
	if got, ok, err := s.GetInline(7, 2); err != nil || !ok || len(got) != 0 {
		t.Fatalf("empty inline segment: %q %v %v", got, ok, err)
	}
	list, err := s.InlineSegments()
	if err != nil || len(list) != 2 || list[0] != [2]uint64{7, 1} || list[1] != [2]uint64{7, 2} {
		t.Fatalf("InlineSegments: %v %v", list, err)
	}
	// Deleting removes it.
	if err := s.Apply(Mutation{DeleteInline: [][2]uint64{{7, 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.GetInline(7, 1); ok || err != nil {
		t.Fatalf("deleted inline segment: %v %v", ok, err)
	}
}
