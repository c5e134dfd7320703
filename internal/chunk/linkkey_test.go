package chunk

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"

	"golang.org/x/crypto/hkdf"
)

// TestContentKey: the exported content key is HKDF-SHA256(Chunks key, salt
// nil, "kumo/v1/chunk-key" || id) as FORMAT.md section 4 says, and it alone
// opens the chunk, whole or by segment.
func TestContentKey(t *testing.T) {
	c := testCipher()
	id, p, sealed := sealedFixture(c)
	var chunks [32]byte
	for i := range chunks {
		chunks[i] = byte(100 + i)
	}
	var want [32]byte
	io.ReadFull(hkdf.New(sha256.New, chunks[:], nil, append([]byte("kumo/v1/chunk-key"), id[:]...)), want[:])
	key := c.ContentKey(id)
	if key != want {
		t.Fatalf("ContentKey = %x, want %x", key, want)
	}
	got, err := OpenWithKey([]byte("x"), key, sealed)
	if err != nil || !bytes.Equal(got[1:], p) || got[0] != 'x' {
		t.Fatalf("OpenWithKey: %v", err)
	}
	o, err := NewKeyOpener(key, len(p))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < Segments(len(p)); i++ {
		off, n := SegmentRange(len(p), i)
		seg, err := o.OpenSegment(nil, i, sealed[off:off+n])
		if err != nil || !bytes.Equal(seg, p[i*SegmentSize:min(len(p), (i+1)*SegmentSize)]) {
			t.Fatalf("segment %d: %v", i, err)
		}
	}

	// Another chunk's key, a flipped byte, a truncation, a dropped segment:
	// refused, and nothing of the plaintext is returned.
	other := randBytes(100)
	mustFail(t, "other chunk's key", func() error { _, err := OpenWithKey(nil, c.ContentKey(c.ID(other)), sealed); return err }())
	for _, i := range []int{0, SealedSegmentSize, len(sealed) - 1} {
		bad := bytes.Clone(sealed)
		bad[i] ^= 1
		mustFail(t, "flip", func() error { _, err := OpenWithKey(nil, key, bad); return err }())
	}
	mustFail(t, "truncated", func() error { _, err := OpenWithKey(nil, key, sealed[:len(sealed)-1]); return err }())
	mustFail(t, "last segment dropped", func() error { _, err := OpenWithKey(nil, key, sealed[:2*SealedSegmentSize]); return err }())
	off, n := SegmentRange(len(p), 0)
	if _, err := o.OpenSegment(nil, 1, sealed[off:off+n]); err == nil {
		t.Fatal("segment 0 opened as segment 1")
	}
	if _, err := NewKeyOpener(key, 0); err == nil {
		t.Fatal("opener of 0 bytes")
	}
}

// FuzzOpenWithKey: with only the content key, nothing but the true chunk opens.
func FuzzOpenWithKey(f *testing.F) {
	c, id, p, s := fuzzChunk()
	key := c.ContentKey(id)
	f.Add(s)
	f.Add(s[:SealedSegmentSize])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := OpenWithKey(nil, key, b)
		if err == nil && !bytes.Equal(out, p) {
			t.Fatalf("forged chunk accepted")
		}
	})
}
