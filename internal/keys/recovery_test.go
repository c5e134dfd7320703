package keys

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestRecoveryKeyText(t *testing.T) {
	k, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	s := k.String()
	if !regexp.MustCompile(`^[A-Z2-7]{4}(-[A-Z2-7]{4}){13}$`).MatchString(s) {
		t.Fatalf("text form %q", s)
	}
	for _, in := range []string{s, strings.ToLower(s), strings.ReplaceAll(s, "-", " "), strings.ReplaceAll(s, "-", ""), "  " + s + "\n"} {
		got, err := ParseRecoveryKey(in)
		if err != nil || got != k {
			t.Fatalf("parse %q: %v", in, err)
		}
	}
	k2, _ := NewRecoveryKey()
	if k2 == k || k2.String() == s {
		t.Fatal("two recovery keys equal")
	}
}

// TestRecoveryKeyTypos: every single-character substitution, a swap of two
// groups, a dropped or an extra character is refused with a clear error.
func TestRecoveryKeyTypos(t *testing.T) {
	var k RecoveryKey
	copy(k[:], seq(32, 7))
	s := strings.ReplaceAll(k.String(), "-", "")
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	for i := range s {
		for _, c := range alphabet {
			if byte(c) == s[i] {
				continue
			}
			typo := s[:i] + string(c) + s[i+1:]
			_, err := ParseRecoveryKey(typo)
			if !errors.Is(err, ErrRecoveryKeyText) {
				t.Fatalf("typo at %d (%c) accepted: %v", i, c, err)
			}
		}
	}
	_, err := ParseRecoveryKey(s[:1] + "X" + s[2:])
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("typo error does not say checksum: %v", err)
	}
	swapped := s[4:8] + s[0:4] + s[8:]
	if swapped != s {
		if _, err := ParseRecoveryKey(swapped); !errors.Is(err, ErrRecoveryKeyText) {
			t.Fatalf("swapped groups accepted: %v", err)
		}
	}
	for _, bad := range []string{"", s[:55], s + "A", s[:10] + "0" + s[11:], s[:3] + "!" + s[4:]} {
		if _, err := ParseRecoveryKey(bad); !errors.Is(err, ErrRecoveryKeyText) {
			t.Fatalf("%q accepted: %v", bad, err)
		}
	}
	if _, err := ParseRecoveryKey(s[:10] + "0" + s[11:]); err == nil || !strings.Contains(err.Error(), "letter O") {
		t.Fatalf("zero gets no hint: %v", err)
	}
	if _, err := ParseRecoveryKey(s[:55]); err == nil || !strings.Contains(err.Error(), "55 characters") {
		t.Fatalf("short key error: %v", err)
	}
}

func TestRecoveryWrap(t *testing.T) {
	rk, _ := NewRecoveryKey()
	master, _ := NewMasterKey()
	w, err := WrapMasterRecovery(rk, "alice@example.com", master)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != RecoveryWrappedSize || RecoveryWrappedSize != 73 {
		t.Fatalf("size %d, const %d", len(w), RecoveryWrappedSize)
	}
	if m, err := UnwrapMasterRecovery(rk, "alice@example.com", w); err != nil || m != master {
		t.Fatalf("unwrap: %v", err)
	}
	other, _ := NewRecoveryKey()
	if _, err := UnwrapMasterRecovery(other, "alice@example.com", w); !errors.Is(err, ErrRecoveryUnwrap) {
		t.Fatalf("other recovery key: %v", err)
	}
	if _, err := UnwrapMasterRecovery(rk, "bob@example.com", w); !errors.Is(err, ErrRecoveryUnwrap) {
		t.Fatalf("other e-mail: %v", err)
	}
	// The password wrapping (v1) does not open as a recovery wrapping, nor the
	// other way round, even under the same key bytes.
	pw, _ := WrapMaster(rk.WrapKey(), master)
	if _, err := UnwrapMasterRecovery(rk, "alice@example.com", pw); !errors.Is(err, ErrRecoveryUnwrap) {
		t.Fatalf("password wrapping opened as recovery wrapping: %v", err)
	}
	if _, err := UnwrapMaster(rk.WrapKey(), w); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("recovery wrapping opened as password wrapping: %v", err)
	}
	keys := []Key{rk.WrapKey(), rk.AuthKey(), Key(rk)}
	if keys[0] == keys[1] || keys[0] == keys[2] || keys[1] == keys[2] {
		t.Fatal("recovery subkeys collide")
	}
	for i := range w {
		b := bytes.Clone(w)
		b[i] ^= 0x10
		if _, err := UnwrapMasterRecovery(rk, "alice@example.com", b); !errors.Is(err, ErrRecoveryUnwrap) {
			t.Fatalf("flip byte %d: %v", i, err)
		}
	}
}

// recoveryVector is one committed test vector of the recovery key
// (testdata/recovery_vectors.json, docs/FORMAT.md "Recovery key").
type recoveryVector struct {
	RecoveryKey string `json:"recovery_key"`
	Text        string `json:"text"`
	WrapKey     string `json:"wrap_key"`
	AuthKey     string `json:"auth_key"`
	Email       string `json:"email"`
	Master      string `json:"master"`
	Nonce       string `json:"nonce"`
	Wrapped     string `json:"wrapped"`
}

func computeRecoveryVector(rk RecoveryKey, email string, master Key, nonce [24]byte) recoveryVector {
	h := hex.EncodeToString
	wk, ak := rk.WrapKey(), rk.AuthKey()
	return recoveryVector{
		RecoveryKey: h(rk[:]), Text: rk.String(), WrapKey: h(wk[:]), AuthKey: h(ak[:]),
		Email: email, Master: h(master[:]), Nonce: h(nonce[:]),
		Wrapped: h(wrapRecoveryWithNonce(rk, email, master, nonce)),
	}
}

func recoveryVectorInputs() []recoveryVector {
	var r1, r2 RecoveryKey
	copy(r1[:], seq(32, 0x00))
	copy(r2[:], seq(32, 0xc0))
	var m1, m2 Key
	copy(m1[:], seq(32, 0x40))
	copy(m2[:], seq(32, 0xa0))
	var n1, n2 [24]byte
	copy(n1[:], seq(24, 0x10))
	copy(n2[:], seq(24, 0xe0))
	return []recoveryVector{
		computeRecoveryVector(r1, "alice@example.com", m1, n1),
		computeRecoveryVector(r2, "bob@example.org", m2, n2),
	}
}

func TestRecoveryVectors(t *testing.T) {
	checkVectorFile(t, "recovery_vectors.json", recoveryVectorInputs())
	b, _ := os.ReadFile(filepath.Join("testdata", "recovery_vectors.json"))
	var want []recoveryVector
	json.Unmarshal(b, &want)
	for i, v := range want {
		rk, err := ParseRecoveryKey(v.Text)
		if err != nil || hex.EncodeToString(rk[:]) != v.RecoveryKey {
			t.Errorf("vector %d: parse text: %v", i, err)
		}
		w, _ := hex.DecodeString(v.Wrapped)
		m, err := UnwrapMasterRecovery(rk, v.Email, w)
		if err != nil || hex.EncodeToString(m[:]) != v.Master {
			t.Errorf("vector %d: unwrap: %v", i, err)
		}
	}
}
