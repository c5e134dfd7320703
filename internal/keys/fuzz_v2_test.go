package keys

import (
	"errors"
	"strings"
	"testing"
)

// FuzzOpenIdentity: no byte string but the sealed one opens, and none panics.
func FuzzOpenIdentity(f *testing.F) {
	var master Key
	master[3] = 1
	id, _ := identityFromSeeds(seq(32, 1), seq(32, 2))
	w := sealIdentityWithNonce(master, "a@b.c", id, [24]byte{4})
	f.Add(w)
	f.Add([]byte{})
	f.Add(w[:IdentitySealedSize-1])
	f.Add(append([]byte{IdentityVersion}, make([]byte, IdentitySealedSize-1)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenIdentity(master, "a@b.c", b)
		if err == nil && (string(b) != string(w) || !got.Public.Equal(id.Public)) {
			t.Fatalf("forged identity accepted: %x", b)
		}
		if err != nil && !errors.Is(err, ErrIdentity) {
			t.Fatalf("error %v is not ErrIdentity", err)
		}
	})
}

// FuzzParseRecoveryKey: parsing never panics, accepts only the text form of
// the key it returns (modulo case, spaces and dashes), and refuses with
// ErrRecoveryKeyText.
func FuzzParseRecoveryKey(f *testing.F) {
	var k RecoveryKey
	copy(k[:], seq(32, 9))
	f.Add(k.String())
	f.Add(strings.ToLower(k.String()))
	f.Add("")
	f.Add("0000-1111")
	f.Add(strings.Repeat("A", 56))
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseRecoveryKey(s)
		if err != nil {
			if !errors.Is(err, ErrRecoveryKeyText) {
				t.Fatalf("error %v is not ErrRecoveryKeyText", err)
			}
			return
		}
		norm := strings.NewReplacer("-", "", " ", "", "\t", "", "\n", "", "\r", "").Replace(strings.ToUpper(s))
		if norm != strings.ReplaceAll(got.String(), "-", "") {
			t.Fatalf("%q parsed to %s", s, got)
		}
	})
}

// FuzzUnwrapMasterRecovery: no byte string but the wrapped one opens.
func FuzzUnwrapMasterRecovery(f *testing.F) {
	var rk RecoveryKey
	var master Key
	rk[0], master[1] = 3, 4
	w := wrapRecoveryWithNonce(rk, "a@b.c", master, [24]byte{5})
	f.Add(w)
	f.Add([]byte{})
	f.Add(w[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := UnwrapMasterRecovery(rk, "a@b.c", b)
		if err == nil && (m != master || string(b) != string(w)) {
			t.Fatalf("forged recovery wrapping accepted: %x", b)
		}
	})
}
