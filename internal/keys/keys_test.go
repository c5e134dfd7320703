package keys

import (
	"bytes"
	"errors"
	"testing"
)

func TestFromPasswordAndWrap(t *testing.T) {
	salt, err := NewSalt()
	if err != nil {
		t.Fatal(err)
	}
	auth, kek, err := FromPassword([]byte("correct horse"), salt, TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	if auth == kek || auth == (Key{}) || kek == (Key{}) {
		t.Fatalf("auth and kek must differ and be non-zero")
	}
	auth2, kek2, err := FromPassword([]byte("correct horse"), salt, TestKDF())
	if err != nil || auth2 != auth || kek2 != kek {
		t.Fatalf("FromPassword not deterministic")
	}
	master, err := NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	w, err := WrapMaster(kek, master)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != WrappedSize || WrappedSize != 73 {
		t.Fatalf("wrapped size %d, const %d", len(w), WrappedSize)
	}
	got, err := UnwrapMaster(kek, w)
	if err != nil || got != master {
		t.Fatalf("unwrap: %v", err)
	}
	_, wrongKEK, _ := FromPassword([]byte("wrong"), salt, TestKDF())
	if _, err := UnwrapMaster(wrongKEK, w); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("wrong password: got %v", err)
	}
	w2, _ := WrapMaster(kek, master)
	if bytes.Equal(w, w2) {
		t.Fatal("two wraps share a nonce")
	}
}

func TestDerive(t *testing.T) {
	m, _ := NewMasterKey()
	s := Derive(m)
	all := []Key{s.Attrs, s.Names, s.ChunkID, s.Chunks, s.Cache, m}
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if all[i] == all[j] {
				t.Fatalf("subkeys %d and %d equal", i, j)
			}
		}
	}
	if Derive(m) != s {
		t.Fatal("Derive not deterministic")
	}
}
