package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func frames(chunks ...[]byte) []byte {
	var b []byte
	for _, c := range chunks {
		b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
		b = append(b, c...)
	}
	return b
}

func TestSplitLinkFrames(t *testing.T) {
	a, c := bytes.Repeat([]byte{1}, 40), bytes.Repeat([]byte{2}, 17)
	got, err := splitLinkFrames(frames(a, c), []int{40, 17})
	if err != nil || !bytes.Equal(got[0], a) || !bytes.Equal(got[1], c) {
		t.Fatalf("%v %v", got, err)
	}
	good := frames(a, c)
	for name, tc := range map[string]struct {
		b     []byte
		sizes []int
	}{
		"short":           {good[:len(good)-1], []int{40, 17}},
		"a byte too many": {append(bytes.Clone(good), 0), []int{40, 17}},
		"other length":    {good, []int{40, 16}},
		"cut at a frame":  {frames(a), []int{40, 17}},
		"empty":           {nil, []int{1}},
		"negative":        {good, []int{-1, 17}},
	} {
		if _, err := splitLinkFrames(tc.b, tc.sizes); !errors.Is(err, ErrBadAnswer) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzSplitLinkFrames: any answer splits into frames of exactly the sizes
// asked for, which put back together are the answer, or is refused.
func FuzzSplitLinkFrames(f *testing.F) {
	f.Add(frames([]byte("abc"), []byte("de")), 3, 2)
	f.Add([]byte{0, 0, 0, 1, 9}, 1, 0)
	f.Fuzz(func(t *testing.T, b []byte, n1, n2 int) {
		sizes := []int{n1 % 100000, n2 % 100000}
		out, err := splitLinkFrames(b, sizes)
		if err != nil {
			return
		}
		for i, o := range out {
			if len(o) != sizes[i] || cap(o) != len(o) {
				t.Fatalf("frame %d: %d bytes (cap %d), want %d", i, len(o), cap(o), sizes[i])
			}
		}
		if !bytes.Equal(frames(out...), b) {
			t.Fatal("the frames are not the answer")
		}
	})
}
