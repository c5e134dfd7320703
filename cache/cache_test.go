package cache

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/remote/api"
)

func testKey() keys.Key {
	var k keys.Key
	for i := range k {
		k[i] = byte(i + 1)
	}
	return k
}

func openTest(t testing.TB, dir string, budget int64) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, Key: testKey(), Budget: budget, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mac(i int) string { return fmt.Sprintf("%064x", i) }

func u64p(v uint64) *uint64 { return &v }

func TestTreeRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	root := api.Node{ID: api.RootID, Type: api.TypeDir, Version: 3, Nlink: 2, Attrs: []byte("sealed-root"), Seq: 9}
	file := api.Node{ID: 77, Type: api.TypeFile, Version: 1, Nlink: 1, Attrs: []byte{1, 2, 3}, Chunks: []string{mac(1), mac(2)}, Seq: 10}
	sub := api.Node{ID: 1 << 63, Type: api.TypeDir, Version: 1, Nlink: 2, Parent: 1, Attrs: []byte{9}, Seq: 11}
	var ents []Entry
	for _, i := range []int{5, 3, 9, 1} {
		ents = append(ents, Entry{Parent: api.RootID, NameMAC: mac(i), Name: []byte{byte(i), 0xff}, Child: uint64(100 + i)})
	}
	if err := s.Apply(Mutation{PutNodes: []api.Node{root, file, sub}, PutEntries: ents, Cursor: u64p(42)}); err != nil {
		t.Fatal(err)
	}
	// an entry under another parent must not show up in root's listing
	if err := s.Apply(Mutation{PutEntries: []Entry{{Parent: 2, NameMAC: mac(0), Name: []byte("x"), Child: 5}}}); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		for _, n := range []api.Node{root, file, sub} {
			got, err := s.GetNode(n.ID)
			if err != nil || !reflect.DeepEqual(got, n) {
				t.Fatalf("GetNode(%d) = %+v, %v; want %+v", n.ID, got, err, n)
			}
		}
		if _, err := s.GetNode(12345); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing node: %v", err)
		}
		l, err := s.List(api.RootID)
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != 4 {
			t.Fatalf("List: %d entries", len(l))
		}
		for i, want := range []int{1, 3, 5, 9} {
			if l[i].NameMAC != mac(want) || l[i].Child != uint64(100+want) || !bytes.Equal(l[i].Name, []byte{byte(want), 0xff}) || l[i].Parent != api.RootID {
				t.Fatalf("List[%d] = %+v", i, l[i])
			}
		}
		e, err := s.Lookup(api.RootID, mac(9))
		if err != nil || e.Child != 109 {
			t.Fatalf("Lookup = %+v, %v", e, err)
		}
		if _, err := s.Lookup(api.RootID, mac(2)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing entry: %v", err)
		}
		if c, err := s.Cursor(); err != nil || c != 42 {
			t.Fatalf("Cursor = %d, %v", c, err)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, 0)
	check(s)

	// delete and re-put in one mutation: deletes first
	err := s.Apply(Mutation{
		DeleteNodes:   []uint64{77},
		DeleteEntries: []Entry{{Parent: api.RootID, NameMAC: mac(3)}, {Parent: api.RootID, NameMAC: mac(5)}},
		PutEntries:    []Entry{{Parent: api.RootID, NameMAC: mac(5), Name: []byte("new"), Child: 7}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetNode(77); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted node: %v", err)
	}
	l, _ := s.List(api.RootID)
	if len(l) != 3 || l[1].NameMAC != mac(5) || l[1].Child != 7 {
		t.Fatalf("after delete: %+v", l)
	}

	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetNode(api.RootID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after reset: %v", err)
	}
	if l, _ := s.List(api.RootID); len(l) != 0 {
		t.Fatalf("after reset: %d entries", len(l))
	}
	if c, _ := s.Cursor(); c != 0 {
		t.Fatalf("cursor after reset: %d", c)
	}
	s.Close()
}

func op(i int) api.BatchOp {
	return api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: 1, NameMAC: mac(i), Name: []byte{byte(i)}, ID: uint64(1000 + i), Type: api.TypeFile, Attrs: []byte("a")}}
}

func TestJournal(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	for i := 0; i < 10; i++ {
		if err := s.Apply(Mutation{Journal: []api.BatchOp{op(2 * i), op(2*i + 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.PendingCount(); n != 20 {
		t.Fatalf("PendingCount = %d", n)
	}
	p, err := s.Pending(7)
	if err != nil || len(p) != 7 {
		t.Fatalf("Pending = %d, %v", len(p), err)
	}
	for i, j := range p {
		if j.Seq != uint64(i+1) || !reflect.DeepEqual(j.Op, op(i)) {
			t.Fatalf("Pending[%d] = %+v", i, j)
		}
	}
	if err := s.Ack(p[4].Seq); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTest(t, dir, 0)
	if n, _ := s.PendingCount(); n != 15 {
		t.Fatalf("PendingCount after reopen = %d", n)
	}
	p, _ = s.Pending(100)
	if len(p) != 15 || p[0].Seq != 6 || !reflect.DeepEqual(p[0].Op, op(5)) || p[14].Seq != 20 {
		t.Fatalf("Pending after reopen: %d ops, first %+v", len(p), p[0])
	}
	if err := s.Ack(100); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.PendingCount(); n != 0 {
		t.Fatalf("PendingCount after full ack = %d", n)
	}
	s.Close()
	// seqs are never reused, even after the journal emptied
	s = openTest(t, dir, 0)
	defer s.Close()
	if err := s.Apply(Mutation{Journal: []api.BatchOp{op(99)}}); err != nil {
		t.Fatal(err)
	}
	p, _ = s.Pending(10)
	if len(p) != 1 || p[0].Seq != 21 {
		t.Fatalf("after reopen: %+v", p)
	}
}

func TestApplyAtomic(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	// A mutation that fails half way (empty name MAC) applies nothing.
	err := s.Apply(Mutation{
		PutNodes:   []api.Node{{ID: 5, Type: api.TypeFile}},
		Journal:    []api.BatchOp{op(1)},
		PutEntries: []Entry{{Parent: 1, NameMAC: mac(1), Child: 5}, {Parent: 1, NameMAC: ""}},
		Cursor:     u64p(7),
	})
	if err == nil {
		t.Fatal("bad mutation applied")
	}
	if _, err := s.GetNode(5); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node of failed mutation: %v", err)
	}
	if n, _ := s.PendingCount(); n != 0 {
		t.Fatalf("journal of failed mutation: %d", n)
	}
	if c, _ := s.Cursor(); c != 0 {
		t.Fatalf("cursor of failed mutation: %d", c)
	}
	// A mutation too big for one transaction fails clearly and applies nothing.
	var big Mutation
	for i := 0; i < 200000; i++ {
		big.PutEntries = append(big.PutEntries, Entry{Parent: 9, NameMAC: mac(i), Name: make([]byte, 40), Child: uint64(i)})
	}
	big.Cursor = u64p(8)
	if err := s.Apply(big); !errors.Is(err, ErrTooBig) {
		t.Fatalf("huge mutation: %v", err)
	}
	if l, _ := s.List(9); len(l) != 0 {
		t.Fatalf("huge mutation partly applied: %d entries", len(l))
	}
	if c, _ := s.Cursor(); c != 0 {
		t.Fatalf("cursor of huge mutation: %d", c)
	}
	// Big sealed attrs (api.MaxAttrsSize) fit, node and journal op together.
	n := api.Node{ID: 6, Type: api.TypeFile, Attrs: make([]byte, api.MaxAttrsSize)}
	rand.Read(n.Attrs)
	o := api.BatchOp{Op: api.OpUpdate, ID: 6, Update: &api.UpdateRequest{Attrs: n.Attrs}}
	if err := s.Apply(Mutation{PutNodes: []api.Node{n}, Journal: []api.BatchOp{o}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetNode(6)
	if err != nil || !bytes.Equal(got.Attrs, n.Attrs) {
		t.Fatalf("big node: %v", err)
	}
}

func TestSegmentFile(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	f, err := s.OpenSegmentFile(7, 2)
	if err != nil {
		t.Fatal(err)
	}
	data := map[int64][]byte{}
	for _, i := range []int64{0, 3, 4, 100, 1000} {
		p := make([]byte, chunk.SegmentSize)
		if i == 4 {
			p = p[:1234]
		}
		rand.Read(p)
		data[i] = p
		if err := f.WriteSegment(i, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.WriteSegment(5, nil); err != nil { // empty segment is present
		t.Fatal(err)
	}
	data[5] = []byte{}
	if err := f.WriteSegment(1, make([]byte, chunk.SegmentSize+1)); err == nil {
		t.Fatal("oversized segment accepted")
	}
	check := func(f *SegmentFile) {
		t.Helper()
		pres, err := f.Present()
		if err != nil || !reflect.DeepEqual(pres, []int64{0, 3, 4, 5, 100, 1000}) {
			t.Fatalf("Present = %v, %v", pres, err)
		}
		for i := int64(0); i < 1002; i++ {
			p, ok, err := f.ReadSegment(i)
			if err != nil {
				t.Fatalf("ReadSegment(%d): %v", i, err)
			}
			want, wok := data[i]
			if ok != wok || !bytes.Equal(p, want) {
				t.Fatalf("ReadSegment(%d) = %d bytes, %v; want %d bytes, %v", i, len(p), ok, len(want), wok)
			}
		}
	}
	check(f)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.ReadSegment(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	list, err := s.SegmentFiles()
	if err != nil || !reflect.DeepEqual(list, [][2]uint64{{7, 2}}) {
		t.Fatalf("SegmentFiles = %v, %v", list, err)
	}
	s.Close()

	s = openTest(t, dir, 0)
	defer s.Close()
	f, err = s.OpenSegmentFile(7, 2)
	if err != nil {
		t.Fatal(err)
	}
	check(f)
	// overwrite in place
	data[3] = []byte("shorter now")
	if err := f.WriteSegment(3, data[3]); err != nil {
		t.Fatal(err)
	}
	check(f)
	if err := f.Drop(5); err != nil {
		t.Fatal(err)
	}
	delete(data, 5)
	delete(data, 100)
	delete(data, 1000)
	pres, _ := f.Present()
	if !reflect.DeepEqual(pres, []int64{0, 3, 4}) {
		t.Fatalf("after Drop: %v", pres)
	}
	for i := int64(0); i < 1002; i++ {
		p, ok, err := f.ReadSegment(i)
		want, wok := data[i]
		if err != nil || ok != wok || !bytes.Equal(p, want) {
			t.Fatalf("after Drop ReadSegment(%d): ok=%v err=%v", i, ok, err)
		}
	}
	fi, _ := os.Stat(filepath.Join(dir, dirtyDir, segFileName(7, 2)))
	if fi.Size() > 5*slotStride {
		t.Fatalf("Drop left %d bytes", fi.Size())
	}
	// same node, another gen: different file, different key
	g, err := s.OpenSegmentFile(7, 3)
	if err != nil {
		t.Fatal(err)
	}
	if pres, _ := g.Present(); len(pres) != 0 {
		t.Fatalf("new gen has %v", pres)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.SegmentFiles(); len(list) != 0 {
		t.Fatalf("after Remove: %v", list)
	}
}

func TestSegmentFileTamper(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, b := bytes.Repeat([]byte("A"), 5000), bytes.Repeat([]byte("B"), 5000)
	f.WriteSegment(0, a)
	f.WriteSegment(1, b)
	f.WriteSegment(2, a)
	f.Close()
	path := filepath.Join(dir, dirtyDir, segFileName(1, 1))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	slot := func(i int) []byte { return raw[i*slotStride : i*slotStride+segHeader+5000+segTag] }

	// flip one byte of slot 0's ciphertext
	raw[segHeader+100] ^= 1
	// swap slots 1 and 2 (same length, both valid on their own)
	s1 := append([]byte(nil), slot(1)...)
	copy(slot(1), slot(2))
	copy(slot(2), s1)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err = s.OpenSegmentFile(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 3; i++ {
		if _, _, err := f.ReadSegment(i); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("tampered slot %d: %v", i, err)
		}
	}
	f.Close()

	// a slot copied into another (node, gen)'s file does not open either
	g, _ := s.OpenSegmentFile(1, 2)
	g.WriteSegment(0, a)
	g.Close()
	raw2, _ := os.ReadFile(filepath.Join(dir, dirtyDir, segFileName(1, 2)))
	if err := os.WriteFile(path, raw2, 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ = s.OpenSegmentFile(1, 1)
	if _, _, err := f.ReadSegment(0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("slot from another file: %v", err)
	}
	f.Close()
}

// testSealer seals like the client does (an AEAD with a key the store never sees).
func testSealer(t testing.TB) func([]byte) []byte {
	var k [32]byte
	rand.Read(k[:])
	a, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		t.Fatal(err)
	}
	return func(p []byte) []byte {
		n := make([]byte, a.NonceSize())
		rand.Read(n)
		return a.Seal(n, n, p, nil)
	}
}

func TestSegmentFileShared(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	defer s.Close()
	a, err := s.OpenSegmentFile(9, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.OpenSegmentFile(9, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WriteSegment(2, []byte("via a")); err != nil {
		t.Fatal(err)
	}
	if pres, _ := b.Present(); !reflect.DeepEqual(pres, []int64{2}) {
		t.Fatalf("second handle sees %v", pres)
	}
	a.Close()
	if p, ok, err := b.ReadSegment(2); err != nil || !ok || string(p) != "via a" {
		t.Fatalf("after closing one reference: %q %v %v", p, ok, err)
	}
	// Remove unlinks; the other reference still works; a new open starts empty.
	c, _ := s.OpenSegmentFile(9, 1)
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
	if p, ok, err := b.ReadSegment(2); err != nil || !ok || string(p) != "via a" {
		t.Fatalf("after Remove by another reference: %q %v %v", p, ok, err)
	}
	d, _ := s.OpenSegmentFile(9, 1)
	if pres, _ := d.Present(); len(pres) != 0 {
		t.Fatalf("reopen after Remove: %v", pres)
	}
	d.WriteSegment(0, []byte("new"))
	b.Close()
	if _, _, err := b.ReadSegment(2); !errors.Is(err, ErrClosed) {
		t.Fatalf("after last close: %v", err)
	}
	if p, ok, _ := d.ReadSegment(0); !ok || string(p) != "new" {
		t.Fatal("new file lost")
	}
	d.Close()
	if l, _ := s.SegmentFiles(); !reflect.DeepEqual(l, [][2]uint64{{9, 1}}) {
		t.Fatalf("SegmentFiles = %v", l)
	}
}

func TestSegmentFileConcurrent(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	f, _ := s.OpenSegmentFile(1, 1)
	defer f.Close()
	done := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func(w int) {
			for i := int64(0); i < 100; i++ {
				idx := i*4 + int64(w)
				if err := f.WriteSegment(idx, []byte(fmt.Sprint(idx))); err != nil {
					done <- err
					return
				}
				if p, ok, err := f.ReadSegment(idx); err != nil || !ok || string(p) != fmt.Sprint(idx) {
					done <- fmt.Errorf("read back %d: %q %v %v", idx, p, ok, err)
					return
				}
				if i == 50 && w == 0 {
					f.Sync()
				}
			}
			done <- nil
		}(w)
	}
	for w := 0; w < 4; w++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if pres, _ := f.Present(); len(pres) != 400 {
		t.Fatalf("%d present", len(pres))
	}
}
