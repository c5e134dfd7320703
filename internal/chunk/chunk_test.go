package chunk

import (
	"bytes"
	"crypto/rand"
	"testing"
)

func testCipher() *Cipher {
	var a, b [32]byte
	for i := range a {
		a[i], b[i] = byte(i), byte(100+i)
	}
	return NewCipher(a, b)
}

func TestRoundTrip(t *testing.T) {
	c := testCipher()
	for _, n := range []int{1, 2, SegmentSize - 1, SegmentSize, SegmentSize + 1, 3*SegmentSize + 7, Size - 1, Size} {
		p := make([]byte, n)
		rand.Read(p)
		id := c.ID(p)
		s := c.Seal(nil, id, p)
		if len(s) != SealedSize(n) {
			t.Fatalf("n=%d: sealed %d want %d", n, len(s), SealedSize(n))
		}
		got, err := c.Open([]byte("pre"), id, s)
		if err != nil || !bytes.Equal(got[3:], p) || string(got[:3]) != "pre" {
			t.Fatalf("n=%d: open: %v", n, err)
		}
		var all []byte
		for i := 0; i < Segments(n); i++ {
			off, l := SegmentRange(n, i)
			all, err = c.OpenSegment(all, id, n, i, s[off:off+l])
			if err != nil {
				t.Fatalf("n=%d seg %d: %v", n, i, err)
			}
		}
		if !bytes.Equal(all, p) {
			t.Fatalf("n=%d: segments differ", n)
		}
		if id2, err := ParseID(id.String()); err != nil || id2 != id {
			t.Fatalf("ParseID: %v", err)
		}
	}
}
