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
	sealed := s.sealAttrsWithNonce(5, 77, sampleAttrs(), nonce)
	v1 := s.sealAttrsV1WithNonce(5, sampleAttrs(), nonce)
	f.Add(sealed, uint64(5))
	f.Add(sealed, uint64(6))
	f.Add(v1, uint64(5))
	f.Add([]byte{1}, uint64(0))
	f.Add([]byte{2}, uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, id uint64) {
		a, err := s.OpenAttrs(id, b)
		if err == nil && (id != 5 || !(bytes.Equal(b, sealed) || bytes.Equal(b, v1)) || !bytes.Equal(a.Encode(), sampleAttrs().Encode())) {
			t.Fatalf("forged attrs accepted for node %d", id)
		}
	})
}

func FuzzOpenName(f *testing.F) {
	s := testSealer(f)
	var nonce [24]byte
	name := []byte("notes.txt")
	sealed := s.sealNameWithNonce(3, 8, KindFile, name, nonce)
	v1 := s.sealNameV1WithNonce(3, name, nonce)
	mac := s.NameMAC(3, name)
	f.Add(sealed, uint64(3), uint64(8), uint8(KindFile), mac)
	f.Add(sealed, uint64(4), uint64(8), uint8(KindFile), mac)
	f.Add(sealed, uint64(3), uint64(9), uint8(KindFile), mac)
	f.Add(v1, uint64(3), uint64(9), uint8(KindDir), mac)
	f.Add([]byte{}, uint64(3), uint64(0), uint8(0), "")
	f.Fuzz(func(t *testing.T, b []byte, parent, child uint64, kind uint8, m string) {
		n, err := s.OpenName(parent, child, Kind(kind), m, b)
		okV2 := bytes.Equal(b, sealed) && child == 8 && Kind(kind) == KindFile
		if err == nil && (parent != 3 || m != mac || !(okV2 || bytes.Equal(b, v1)) || !bytes.Equal(n, name)) {
			t.Fatalf("forged name accepted under %d", parent)
		}
	})
}
