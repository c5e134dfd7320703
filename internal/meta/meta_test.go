package meta

import (
	"bytes"
	"reflect"
	"testing"

	"kumo/internal/chunk"
	"kumo/internal/keys"
)

func testSealer(t testing.TB) *Sealer {
	var m keys.Key
	for i := range m {
		m[i] = byte(i)
	}
	return NewSealer(keys.Derive(m))
}

func sampleAttrs() *Attrs {
	return &Attrs{
		Mode: 0o100644, UID: 1000, GID: 1000, Size: chunk.Size + 5,
		Atime: 1, Mtime: -2, Ctime: 1 << 62,
		Xattrs: map[string][]byte{"user.b": []byte("2"), "user.a": {}, "security.selinux": []byte("x\x00y")},
		Chunks: []ChunkRef{{ID: chunk.ID{1}, Len: chunk.Size}, {Len: 5}},
	}
}

func TestAttrsRoundTrip(t *testing.T) {
	s := testSealer(t)
	for _, a := range []*Attrs{{}, {Mode: 0o120777, Target: []byte("../x")}, sampleAttrs()} {
		enc := a.Encode()
		d, err := DecodeAttrs(enc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d.Encode(), enc) || !reflect.DeepEqual(d, a) {
			t.Fatalf("round trip: %+v vs %+v", d, a)
		}
		o, err := s.OpenAttrs(42, s.SealAttrs(42, a))
		if err != nil || !reflect.DeepEqual(o, a) {
			t.Fatalf("seal round trip: %v", err)
		}
	}
}

func TestNameRoundTrip(t *testing.T) {
	s := testSealer(t)
	name := []byte("héllo wörld.txt")
	mac := s.NameMAC(7, name)
	if len(mac) != 64 || mac != s.NameMAC(7, name) || mac == s.NameMAC(8, name) {
		t.Fatalf("bad mac %q", mac)
	}
	got, err := s.OpenName(7, mac, s.SealName(7, name))
	if err != nil || !bytes.Equal(got, name) {
		t.Fatalf("open: %v", err)
	}
}
