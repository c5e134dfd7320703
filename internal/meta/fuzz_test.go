package meta

import (
	"bytes"
	"testing"
)

func FuzzDecodeAttrs(f *testing.F) {
	f.Add((&Attrs{}).Encode())
	f.Add(sampleAttrs().Encode())
	f.Add((&Attrs{Mode: 0o120777, Target: []byte("x")}).Encode())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAttrs(b)
		if err != nil {
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("decoded attrs invalid: %v", err)
		}
		if enc := a.Encode(); !bytes.Equal(enc, b) {
			t.Fatalf("re-encode differs:\n in %x\nout %x", b, enc)
		}
	})
}

func FuzzOpenAttrs(f *testing.F) {
	s := testSealer(f)
	var nonce [24]byte
	sealed := s.sealAttrsWithNonce(5, sampleAttrs(), nonce)
	f.Add(sealed, uint64(5))
	f.Add(sealed, uint64(6))
	f.Add([]byte{1}, uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, id uint64) {
		a, err := s.OpenAttrs(id, b)
		if err == nil && (id != 5 || !bytes.Equal(b, sealed) || !bytes.Equal(a.Encode(), sampleAttrs().Encode())) {
			t.Fatalf("forged attrs accepted for node %d", id)
		}
	})
}

func FuzzOpenName(f *testing.F) {
	s := testSealer(f)
	var nonce [24]byte
	name := []byte("notes.txt")
	sealed := s.sealNameWithNonce(3, name, nonce)
	mac := s.NameMAC(3, name)
	f.Add(sealed, uint64(3), mac)
	f.Add(sealed, uint64(4), mac)
	f.Add([]byte{}, uint64(3), "")
	f.Fuzz(func(t *testing.T, b []byte, parent uint64, m string) {
		n, err := s.OpenName(parent, m, b)
		if err == nil && (parent != 3 || m != mac || !bytes.Equal(b, sealed) || !bytes.Equal(n, name)) {
			t.Fatalf("forged name accepted under %d", parent)
		}
	})
}
