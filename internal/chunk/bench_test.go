package chunk

import (
	"crypto/rand"
	"testing"
)

func benchChunk(b *testing.B) (*Cipher, ID, []byte, []byte) {
	c := testCipher()
	p := make([]byte, Size)
	rand.Read(p)
	id := c.ID(p)
	return c, id, p, c.Seal(nil, id, p)
}

// BenchmarkSeal4MiB seals a full chunk whose id is already known.
func BenchmarkSeal4MiB(b *testing.B) {
	c, id, p, s := benchChunk(b)
	b.SetBytes(Size)
	b.ResetTimer()
	for b.Loop() {
		s = c.Seal(s[:0], id, p)
	}
}

// BenchmarkIDSeal4MiB is what an uploader pays per chunk: keyed hash, then seal.
func BenchmarkIDSeal4MiB(b *testing.B) {
	c, _, p, s := benchChunk(b)
	b.SetBytes(Size)
	b.ResetTimer()
	for b.Loop() {
		s = c.Seal(s[:0], c.ID(p), p)
	}
}

// BenchmarkID4MiB is the keyed hash alone (HMAC-SHA256).
func BenchmarkID4MiB(b *testing.B) {
	c, _, p, _ := benchChunk(b)
	b.SetBytes(Size)
	b.ResetTimer()
	for b.Loop() {
		c.ID(p)
	}
}

// BenchmarkOpen4MiB opens a full chunk, including the plaintext-vs-id check.
func BenchmarkOpen4MiB(b *testing.B) {
	c, id, _, s := benchChunk(b)
	out := make([]byte, 0, Size)
	b.SetBytes(Size)
	b.ResetTimer()
	for b.Loop() {
		var err error
		if out, err = c.Open(out[:0], id, s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenSegment opens one full 64 KiB segment (a random read's cost).
func BenchmarkOpenSegment(b *testing.B) {
	c, id, _, s := benchChunk(b)
	off, n := SegmentRange(Size, 5)
	seg := s[off : off+n]
	out := make([]byte, 0, SegmentSize)
	b.SetBytes(SegmentSize)
	b.ResetTimer()
	for b.Loop() {
		var err error
		if out, err = c.OpenSegment(out[:0], id, Size, 5, seg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkSetup is the per-chunk key derivation and AES-GCM setup.
func BenchmarkChunkSetup(b *testing.B) {
	c := testCipher()
	var id ID
	for b.Loop() {
		c.aead(id)
	}
}
