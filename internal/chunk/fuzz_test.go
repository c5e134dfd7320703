package chunk

import (
	"bytes"
	"testing"
)

func FuzzParseID(f *testing.F) {
	f.Add("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	f.Add("0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err == nil && id.String() != s {
			t.Fatalf("ParseID(%q).String() = %q", s, id.String())
		}
	})
}

// fuzzChunk is a small 2-segment chunk the fuzzers mutate.
func fuzzChunk() (*Cipher, ID, []byte, []byte) {
	c := testCipher()
	p := pattern(SegmentSize + 40)
	id := c.ID(p)
	return c, id, p, c.Seal(nil, id, p)
}

func FuzzOpen(f *testing.F) {
	c, id, p, s := fuzzChunk()
	small := []byte("tiny")
	sid := c.ID(small)
	ss := c.Seal(nil, sid, small)
	f.Add(ss, false)
	f.Add(s, true)
	f.Add(s[:SealedSegmentSize], true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, big bool) {
		want, wid := small, sid
		if big {
			want, wid = p, id
		}
		out, err := c.Open(nil, wid, b)
		if err == nil && !bytes.Equal(out, want) {
			t.Fatalf("forged chunk accepted")
		}
	})
}

func FuzzOpenSegment(f *testing.F) {
	c, id, p, s := fuzzChunk()
	f.Add(s[:SealedSegmentSize], len(p), 0)
	f.Add(s[SealedSegmentSize:], len(p), 1)
	f.Add(s[SealedSegmentSize:], 0, -1)
	f.Add([]byte{}, Size+1, 1<<40)
	f.Fuzz(func(t *testing.T, seg []byte, plainLen, i int) {
		out, err := c.OpenSegment(nil, id, plainLen, i, seg)
		if err != nil {
			return
		}
		// Only the true segment i may open; plainLen may differ from len(p) when it
		// implies the same segment count and the segment is not the last one.
		if i >= Segments(len(p)) || !bytes.Equal(out, p[i*SegmentSize:min(len(p), (i+1)*SegmentSize)]) {
			t.Fatalf("forged segment accepted: plainLen %d i %d", plainLen, i)
		}
	})
}
