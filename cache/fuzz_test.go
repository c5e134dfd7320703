package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"kumo/internal/chunk"
	"kumo/remote/api"
)

func FuzzDecodeNode(f *testing.F) {
	f.Add(encodeNode(api.Node{ID: 1, Type: api.TypeDir, Version: 2, Nlink: 3, Parent: 4, Attrs: []byte("x"), Chunks: []string{mac(1)}, Seq: 5}))
	f.Add(encodeNode(api.Node{}))
	f.Add([]byte{recV1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeNode(b)
		if err != nil {
			return
		}
		// what decodes re-encodes to the same node
		n2, err := decodeNode(encodeNode(n))
		if err != nil || !reflect.DeepEqual(n, n2) {
			t.Fatalf("re-encode: %+v vs %+v, %v", n, n2, err)
		}
	})
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(7, []byte("sealed")))
	f.Add(encodeEntry(0, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, name, err := decodeEntry(b)
		if err != nil {
			return
		}
		c2, name2, err := decodeEntry(encodeEntry(c, name))
		if err != nil || c != c2 || !bytes.Equal(name, name2) {
			t.Fatalf("re-encode: %d %x vs %d %x, %v", c, name, c2, name2, err)
		}
	})
}

func FuzzDecodeJournal(f *testing.F) {
	b, _ := json.Marshal(op(1))
	f.Add(b)
	f.Add([]byte(`{"op":"rename","rename":{"src_parent":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeJournal(b)
		if err != nil {
			return
		}
		b2, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeJournal(b2); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzJournalOp: any accepted record decodes to an op that re-encodes to a
// stable binary record (and, when the record was binary, to the same bytes:
// the decoder takes one encoding per op); and an op built from the fuzz
// bytes, every field of every request included, comes back exactly.
func FuzzJournalOp(f *testing.F) {
	for _, op := range []api.BatchOp{benchUnlink(), benchCreate(), benchUpdate(), {}} {
		f.Add(encodeJournal(op))
		j, _ := json.Marshal(op)
		f.Add(j)
	}
	f.Add(encodeJournal(fillOp(f, randSource(1, true))))
	f.Fuzz(func(t *testing.T, b []byte) {
		if o, err := decodeJournal(b); err == nil {
			e := encodeJournal(o)
			if b[0] == journalV1 && !bytes.Equal(e, b) {
				t.Fatalf("re-encode of %x is %x", b, e)
			}
			o2, err := decodeJournal(e)
			if err != nil || !reflect.DeepEqual(o, o2) {
				t.Fatalf("re-decode: %+v vs %+v, %v", o, o2, err)
			}
			if e2 := encodeJournal(o2); !bytes.Equal(e, e2) {
				t.Fatalf("re-encode not stable: %x vs %x", e, e2)
			}
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v is not ErrCorrupt", err)
		}

		src := b
		next := func() uint64 {
			if len(src) == 0 {
				return 0
			}
			v, n := binary.Uvarint(src)
			if n <= 0 {
				v, n = uint64(src[0]), 1
			}
			src = src[n:]
			return v
		}
		checkRoundTrip(t, fillOp(t, source{next: next}))
	})
}

// FuzzOpenSlot feeds arbitrary slot bytes to the segment file parser: it must
// never panic, and must never accept bytes it did not seal itself.
func FuzzOpenSlot(f *testing.F) {
	aead, err := segFileAEAD(newSegKey(append([]byte{1}, make([]byte, 31)...)), 3, 4)
	if err != nil {
		f.Fatal(err)
	}
	hdr := make([]byte, segHeader)
	binary.BigEndian.PutUint32(hdr, 6)
	valid := aead.Seal(append([]byte(nil), hdr...), hdr[4:], []byte("hello"), func() []byte { a := segAD(3, 4, 0, 5); return a[:] }())
	f.Add(valid, int64(0))
	f.Add(make([]byte, 40), int64(1))
	f.Add([]byte{0, 0, 0, 0, 1}, int64(0))
	f.Fuzz(func(t *testing.T, slot []byte, i int64) {
		p, ok, err := openSlot(nil, aead, 3, 4, i, slot)
		if err != nil && ok {
			t.Fatal("ok with error")
		}
		if ok && !(i == 0 && bytes.Equal(p, []byte("hello")) && bytes.Equal(slot[:len(valid)], valid)) {
			t.Fatalf("accepted forged slot: %x", slot)
		}
		if ok && len(p) > chunk.SegmentSize {
			t.Fatal("oversized plaintext")
		}
	})
}

func FuzzParseCacheSlot(f *testing.F) {
	good := make([]byte, cacheHeader+3)
	binary.BigEndian.PutUint32(good, 3)
	copy(good[cacheHeader:], "abc")
	binary.BigEndian.PutUint32(good[4:], 0x364b3fb7) // crc32c("abc")
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, slot []byte) {
		data, ok := parseCacheSlot(slot)
		if ok && (len(data) == 0 || len(data) > maxCachedSeg || len(data)+cacheHeader > len(slot)) {
			t.Fatalf("bad accept: %d bytes of %d", len(data), len(slot))
		}
	})
}

func FuzzParseSegFileName(f *testing.F) {
	f.Add(segFileName(1, 2))
	f.Add("0000000000000001-000000000000000X.seg")
	f.Fuzz(func(t *testing.T, name string) {
		n, g, ok := parseSegFileName(name)
		if ok && segFileName(n, g) != name {
			t.Fatalf("%q parsed as %d,%d", name, n, g)
		}
	})
}

func TestParseCacheSlotCRC(t *testing.T) {
	good := make([]byte, cacheHeader+3)
	binary.BigEndian.PutUint32(good, 3)
	copy(good[cacheHeader:], "abc")
	binary.BigEndian.PutUint32(good[4:], 0x364b3fb7)
	if d, ok := parseCacheSlot(good); !ok || string(d) != "abc" {
		t.Fatal("good slot refused")
	}
	good[cacheHeader] ^= 1
	if _, ok := parseCacheSlot(good); ok {
		t.Fatal("torn slot accepted")
	}
}

func BenchmarkWriteSegment(b *testing.B) {
	s := openTest(b, b.TempDir(), 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(1, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Remove()
	p := make([]byte, chunk.SegmentSize)
	b.SetBytes(chunk.SegmentSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// cycle over 1 GiB of file so the benchmark does not fill the disk
		if err := f.WriteSegment(int64(i%16384), p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadSegment(b *testing.B) {
	s := openTest(b, b.TempDir(), 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(1, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Remove()
	p := make([]byte, chunk.SegmentSize)
	for i := int64(0); i < 256; i++ {
		f.WriteSegment(i, p)
	}
	b.SetBytes(chunk.SegmentSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var ok bool
		if p, ok, err = f.AppendSegment(p[:0], int64(i%256)); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkGetSegment(b *testing.B) {
	s := openTest(b, b.TempDir(), 0)
	defer s.Close()
	id := chunkID(1)
	var segs [][]byte
	for i := 0; i < 64; i++ {
		segs = append(segs, sealedSeg(id, i, chunk.SegmentSize+chunk.Overhead))
	}
	if err := s.PutSegments(id, 0, segs); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(chunk.SegmentSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := s.GetSegment(id, i%64); !ok {
			b.Fatal("miss")
		}
	}
}
