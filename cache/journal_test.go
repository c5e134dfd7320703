package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// source feeds fillOp. With full set every value is present and non-zero
// (no nil pointer or slice, no empty string); otherwise next decides.
type source struct {
	full  bool
	ascii bool // strings in printable ASCII, as JSON keeps them (it mangles invalid UTF-8)
	next  func() uint64
}

// fillOp sets every field of op, recursively, from src. It fails on a field
// kind it does not know, so a new kind of field in the api requests makes the
// round-trip tests below say what to extend rather than pass without it.
func fillOp(t testing.TB, src source) api.BatchOp {
	var op api.BatchOp
	fillValue(t, reflect.ValueOf(&op).Elem(), "BatchOp", src)
	return op
}

func fillValue(t testing.TB, v reflect.Value, path string, src source) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fillValue(t, v.Field(i), path+"."+v.Type().Field(i).Name, src)
		}
	case reflect.Pointer:
		if !src.full && src.next()%3 == 0 {
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fillValue(t, v.Elem(), path, src)
	case reflect.Uint64:
		n := src.next()
		if src.full && n == 0 {
			n = 1
		}
		v.SetUint(n)
	case reflect.Bool:
		v.SetBool(src.full || src.next()%2 == 1)
	case reflect.String:
		b := fillBytes(src)
		if src.ascii {
			for i := range b {
				b[i] = ' ' + b[i]%95
			}
		}
		v.SetString(string(b))
	case reflect.Slice:
		if !src.full {
			switch src.next() % 4 {
			case 0:
				return // nil
			case 1:
				v.Set(reflect.MakeSlice(v.Type(), 0, 0))
				return
			}
		}
		switch v.Type().Elem().Kind() {
		case reflect.Uint8:
			v.SetBytes(fillBytes(src))
		case reflect.String:
			n := 1 + int(src.next()%4)
			s := reflect.MakeSlice(v.Type(), n, n)
			for i := 0; i < n; i++ {
				fillValue(t, s.Index(i), path+"[]", src)
			}
			v.Set(s)
		default:
			t.Fatalf("%s: slice of %s: teach encodeJournal and fillValue this field", path, v.Type().Elem())
		}
	default:
		t.Fatalf("%s: kind %s: teach encodeJournal and fillValue this field", path, v.Kind())
	}
}

// fillBytes returns 0..70 bytes from src (at least 1 when full).
func fillBytes(src source) []byte {
	n := int(src.next() % 71)
	if src.full && n == 0 {
		n = 1
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(src.next())
	}
	return b
}

func randSource(seed uint64, full bool) source {
	r := rand.New(rand.NewPCG(seed, 1))
	return source{full: full, next: func() uint64 {
		// small and huge numbers both, to cover every varint length
		return r.Uint64() >> (r.Uint64() % 64)
	}}
}

func checkRoundTrip(t testing.TB, op api.BatchOp) {
	t.Helper()
	b := encodeJournal(op)
	if len(b) == 0 || b[0] != journalV1 {
		t.Fatalf("encodeJournal(%+v) = %x: not version %d", op, b, journalV1)
	}
	if n := journalSize(op); len(b) != n || cap(b) != n {
		t.Fatalf("encoding is %d bytes (cap %d), journalSize said %d", len(b), cap(b), n)
	}
	got, err := decodeJournal(b)
	if err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	if !reflect.DeepEqual(got, op) {
		t.Fatalf("round trip:\n got  %s\n want %s", dumpOp(got), dumpOp(op))
	}
}

func dumpOp(op api.BatchOp) string {
	b, _ := json.Marshal(op)
	return string(b)
}

// TestJournalEveryField fills every field of every request (found by
// reflection, so a field added to the api later is covered too) and checks
// that decode(encode(op)) is op exactly.
func TestJournalEveryField(t *testing.T) {
	full := fillOp(t, randSource(1, true))
	for _, p := range []any{full.Create, full.Update, full.Rename, full.Link, full.Unlink} {
		if reflect.ValueOf(p).IsNil() {
			t.Fatalf("fillOp left a request nil: %s", dumpOp(full))
		}
	}
	checkRoundTrip(t, full)

	// Each leaf field alone, the rest zero: an encoder that drops or swaps a
	// field fails here even where the full op's values would hide it.
	top := reflect.TypeFor[api.BatchOp]()
	for i := 0; i < top.NumField(); i++ {
		f := top.Field(i)
		if f.Type.Kind() != reflect.Pointer {
			var op api.BatchOp
			reflect.ValueOf(&op).Elem().Field(i).Set(reflect.ValueOf(full).Field(i))
			checkRoundTrip(t, op)
			continue
		}
		req := f.Type.Elem()
		for j := 0; j < req.NumField(); j++ {
			var op api.BatchOp
			p := reflect.New(req)
			p.Elem().Field(j).Set(reflect.ValueOf(full).Field(i).Elem().Field(j))
			reflect.ValueOf(&op).Elem().Field(i).Set(p)
			t.Run(f.Name+"."+req.Field(j).Name, func(t *testing.T) { checkRoundTrip(t, op) })
		}
	}

	// Random ops: nil and empty slices, absent requests, every varint length.
	for seed := uint64(2); seed < 2000; seed++ {
		checkRoundTrip(t, fillOp(t, randSource(seed, false)))
	}
}

// TestJournalNilAndEmpty: the wire form tells null from "" and [], so the
// journal keeps the difference too.
func TestJournalNilAndEmpty(t *testing.T) {
	for _, op := range []api.BatchOp{
		{},
		{Op: api.OpUpdate, ID: 5, Update: &api.UpdateRequest{Version: 1, Attrs: []byte{}, Chunks: []string{}}},
		{Op: api.OpUpdate, ID: 5, Update: &api.UpdateRequest{Version: 1}},
		{Op: api.OpCreate, Create: &api.CreateRequest{Name: []byte{}, Chunks: []string{""}}},
		{Op: "someday", Rename: &api.RenameRequest{SrcName: []byte{}}},
	} {
		checkRoundTrip(t, op)
		got, _ := decodeJournal(encodeJournal(op))
		j1, _ := json.Marshal(op)
		j2, _ := json.Marshal(got)
		if !bytes.Equal(j1, j2) {
			t.Fatalf("wire form changed: %s vs %s", j1, j2)
		}
	}
}

// TestJournalJSONRecords: records an older version wrote (JSON) still decode.
func TestJournalJSONRecords(t *testing.T) {
	ascii := randSource(7, true)
	ascii.ascii = true
	ops := []api.BatchOp{fillOp(t, ascii), benchUnlink(), benchCreate(), benchUpdate()}
	for _, op := range ops {
		b, err := json.Marshal(op)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeJournal(b)
		if err != nil || !reflect.DeepEqual(got, op) {
			t.Fatalf("JSON record %s: %s, %v", b, dumpOp(got), err)
		}
	}
	if _, err := decodeJournal([]byte(`{"op":"unlink","unlink":`)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated JSON: %v", err)
	}
}

// TestJournalUpgradeQueue: a store whose queue was written as JSON (an older
// version) pushes it in order, then the ops written since, which are binary.
func TestJournalUpgradeQueue(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	old := []api.BatchOp{benchCreate(), benchUpdate(), benchUnlink()}
	err := s.db.Update(func(txn *badger.Txn) error {
		for i, op := range old {
			b, err := json.Marshal(op)
			if err != nil {
				return err
			}
			if err := txn.Set(journalKey(uint64(i+1)), b); err != nil {
				return err
			}
		}
		return txn.Set(keySeq, be64(uint64(len(old))))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir, 0)
	defer s.Close()
	if n, _ := s.PendingCount(); n != len(old) {
		t.Fatalf("PendingCount after upgrade = %d, want %d", n, len(old))
	}
	added := []api.BatchOp{fillOp(t, randSource(3, true)), {Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: 9, NameMAC: mac(9), Dir: true}}}
	if err := s.Apply(Mutation{Journal: added}); err != nil {
		t.Fatal(err)
	}
	want := append(append([]api.BatchOp(nil), old...), added...)
	p, err := s.Pending(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != len(want) {
		t.Fatalf("Pending = %d ops, want %d", len(p), len(want))
	}
	for i, j := range p {
		if j.Seq != uint64(i+1) || !reflect.DeepEqual(j.Op, want[i]) {
			t.Fatalf("op %d: seq %d %s, want %s", i, j.Seq, dumpOp(j.Op), dumpOp(want[i]))
		}
	}
	// The new records are binary.
	if err := s.behind.drain(); err != nil {
		t.Fatal(err)
	}
	err = s.db.View(func(txn *badger.Txn) error {
		for seq := uint64(len(old) + 1); seq <= uint64(len(want)); seq++ {
			item, err := txn.Get(journalKey(seq))
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if v[0] != journalV1 {
				t.Errorf("record %d starts with %q, want version byte %d", seq, v[0], journalV1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestJournalBadRecords: damaged records are ErrCorrupt with a reason, never
// a panic and never a wrong op.
func TestJournalBadRecords(t *testing.T) {
	good := encodeJournal(fillOp(t, randSource(5, true)))
	for n := 0; n < len(good); n++ {
		if _, err := decodeJournal(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record cut to %d of %d bytes: %v", n, len(good), err)
		}
	}
	unlink := encodeJournal(api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: 1, NameMAC: "m", Node: 2}})
	// 0x01, str "unlink", id 0, present 16, parent 1, str "m", dir, node 2
	if want := []byte("\x01\x06unlink\x00\x10\x01\x01m\x00\x02"); !bytes.Equal(unlink, want) {
		t.Fatalf("unlink layout %x, want %x", unlink, want)
	}
	with := func(i int, c byte) []byte {
		b := bytes.Clone(unlink)
		b[i] = c
		return b
	}
	for name, b := range map[string][]byte{
		"trailing byte":   append(bytes.Clone(unlink), 0),
		"version 2":       with(0, 2),
		"not JSON":        []byte("[1]"),
		"unknown request": with(9, 0x20),
		"bool 2":          with(13, 2),
		"non-minimal":     []byte("\x01\x06unlink\x80\x00\x00"),
		"overlong varint": append([]byte{journalV1}, bytes.Repeat([]byte{0xff}, 11)...),
		"huge string":     binary.AppendUvarint([]byte{journalV1}, 1<<40),
		"huge list":       binary.AppendUvarint([]byte("\x01\x00\x00\x02\x00\x00"), 1<<40),
		"list past end":   []byte("\x01\x00\x00\x02\x00\x00\x05\x00"),
		"bytes past end":  []byte("\x01\x00\x00\x02\x00\x05ab"),
	} {
		op, err := decodeJournal(b)
		if !errors.Is(err, ErrCorrupt) || !reflect.DeepEqual(op, api.BatchOp{}) {
			t.Errorf("%s (%x): %s, %v; want ErrCorrupt", name, b, dumpOp(op), err)
		}
	}
}

// Typical ops of a small-file workload: sealed names of about 73 bytes
// (header, nonce, a 12-byte name, tag), sealed attrs of about 100, one chunk.
func benchUnlink() api.BatchOp {
	return api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: 4711, NameMAC: mac(0x5eed), Node: 123456}}
}

func benchCreate() api.BatchOp {
	return api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: 4711, NameMAC: mac(0x5eed), Name: bytes.Repeat([]byte{0xa5}, 73),
		ID: 123456, Type: api.TypeFile, Attrs: bytes.Repeat([]byte{0x5a}, 100), Chunks: []string{mac(0xc0ffee)}}}
}

func benchUpdate() api.BatchOp {
	return api.BatchOp{Op: api.OpUpdate, ID: 123456, Update: &api.UpdateRequest{Version: 3, Attrs: bytes.Repeat([]byte{0x5a}, 100), Chunks: []string{mac(0xc0ffee)}}}
}

var benchOps = []struct {
	name string
	op   func() api.BatchOp
}{{"unlink", benchUnlink}, {"create", benchCreate}, {"update", benchUpdate}}

func BenchmarkJournalEncode(b *testing.B) {
	for _, c := range benchOps {
		op := c.op()
		b.Run(c.name+"/json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v, err := json.Marshal(op)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(v)))
			}
		})
		b.Run(c.name+"/binary", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				b.SetBytes(int64(len(encodeJournal(op))))
			}
		})
	}
}

func BenchmarkJournalDecode(b *testing.B) {
	for _, c := range benchOps {
		op := c.op()
		j, err := json.Marshal(op)
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range []struct {
			name string
			rec  []byte
		}{{"json", j}, {"binary", encodeJournal(op)}} {
			b.Run(c.name+"/"+f.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(f.rec)))
				for b.Loop() {
					if _, err := decodeJournal(f.rec); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
