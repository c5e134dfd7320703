package meta

import (
	"errors"
	"testing"

	"kumo/internal/keys"
	"kumo/remote/api"
)

// TestSealAs: records sealed under a share key id carry it in their header,
// open with that generation's keys only, and the home keys do not open them.
func TestSealAs(t *testing.T) {
	kid := KeyID{Share: 7, Gen: 2}
	var secret keys.Key
	secret[0] = 1
	s := testSealer(t).WithShare(kid, keys.ShareSubkeys(secret, 7, 2))
	a := &Attrs{Mode: 0o100644, Mtime: 5}
	sealed, err := s.SealAttrsAs(kid, 42, 9, a)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := RecordKeyID(sealed); !ok || got != kid || Rev(sealed) != 9 {
		t.Fatalf("header: %v %v rev %d", got, ok, Rev(sealed))
	}
	if got, err := s.OpenAttrs(42, sealed); err != nil || got.Mtime != 5 {
		t.Fatalf("open: %v", err)
	}
	if _, err := testSealer(t).OpenAttrs(42, sealed); !errors.Is(err, ErrAuth) {
		t.Fatalf("home keys opened a share record: %v", err)
	}
	name, err := s.SealNameAs(kid, 1, 42, KindFile, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := s.NameMACAs(kid, 1, []byte("x"))
	if mac == s.NameMAC(1, []byte("x")) {
		t.Fatal("share name MAC equals the home one")
	}
	if got, err := s.OpenName(1, 42, KindFile, mac, name); err != nil || string(got) != "x" {
		t.Fatalf("open name: %v", err)
	}
	if _, err := testSealer(t).SealAttrsAs(kid, 42, 9, a); !errors.Is(err, ErrAuth) {
		t.Fatalf("sealed with a key id the sealer does not hold: %v", err)
	}
}

// FuzzRecordKeyID: the client and the server read the same key id from any
// record header (meta.RecordKeyID and api.RecordShare), and neither panics.
func FuzzRecordKeyID(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{SealedV2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2})
	f.Add([]byte{SealedV1, 1})
	f.Add([]byte{SealedV2, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		kid, ok := RecordKeyID(b)
		share, gen, ok2 := api.RecordShare(b)
		if ok != ok2 || ok && (kid.Share != share || kid.Gen != gen) {
			t.Fatalf("%x: client %v %v, server %d/%d %v", b, kid, ok, share, gen, ok2)
		}
	})
}
