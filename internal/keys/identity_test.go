package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestIdentitySealOpen(t *testing.T) {
	master, _ := NewMasterKey()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := SealIdentity(master, "alice@example.com", id)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != IdentitySealedSize || IdentitySealedSize != 169 {
		t.Fatalf("sealed size %d, const %d", len(sealed), IdentitySealedSize)
	}
	got, err := OpenIdentity(master, "alice@example.com", sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Public.Equal(id.Public) || !bytes.Equal(got.BoxKey().Bytes(), id.BoxKey().Bytes()) || !got.SignKey().Equal(id.SignKey()) {
		t.Fatal("opened identity differs")
	}
	// The keys work: a signature verifies with the public half, ECDH agrees.
	sig := ed25519.Sign(got.SignKey(), []byte("m"))
	if !ed25519.Verify(id.Public.Sign[:], []byte("m"), sig) {
		t.Fatal("signature does not verify")
	}
	other, _ := NewIdentity()
	s1, _ := got.BoxKey().ECDH(other.BoxKey().PublicKey())
	s2, _ := other.BoxKey().ECDH(id.BoxKey().PublicKey())
	if !bytes.Equal(s1, s2) {
		t.Fatal("ECDH disagrees")
	}
	// Bound to the master key and to the account.
	otherMaster, _ := NewMasterKey()
	if _, err := OpenIdentity(otherMaster, "alice@example.com", sealed); !errors.Is(err, ErrIdentity) {
		t.Fatalf("other master: %v", err)
	}
	if _, err := OpenIdentity(master, "mallory@example.com", sealed); !errors.Is(err, ErrIdentity) {
		t.Fatalf("other e-mail: %v", err)
	}
	s2b, _ := SealIdentity(master, "alice@example.com", id)
	if bytes.Equal(sealed, s2b) {
		t.Fatal("two seals share a nonce")
	}
	if id.Public.Equal(other.Public) {
		t.Fatal("two identities equal")
	}
}

func TestIdentityTamper(t *testing.T) {
	var master Key
	master[0] = 5
	id, _ := identityFromSeeds(seq(32, 1), seq(32, 2))
	w := sealIdentityWithNonce(master, "a@b.c", id, [24]byte{3})
	for i := range w {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(w)
			b[i] ^= bit
			if _, err := OpenIdentity(master, "a@b.c", b); !errors.Is(err, ErrIdentity) {
				t.Fatalf("flip byte %d bit %#x: got %v", i, bit, err)
			}
		}
	}
	for n := 0; n < len(w); n++ {
		if _, err := OpenIdentity(master, "a@b.c", w[:n]); !errors.Is(err, ErrIdentity) {
			t.Fatalf("truncated to %d: got %v", n, err)
		}
	}
	if _, err := OpenIdentity(master, "a@b.c", append(bytes.Clone(w), 0)); !errors.Is(err, ErrIdentity) {
		t.Fatal("extended blob opened")
	}
}

// TestIdentityPublicMustMatchPrivate: a blob sealed with the right key whose
// public halves are not those of its private halves is refused, so the public
// keys a client reads from its own blob are always its real ones.
func TestIdentityPublicMustMatchPrivate(t *testing.T) {
	var master Key
	master[0] = 6
	id, _ := identityFromSeeds(seq(32, 1), seq(32, 2))
	evil, _ := identityFromSeeds(seq(32, 9), seq(32, 10))
	id.Public.Sign = evil.Public.Sign
	w := sealIdentityWithNonce(master, "a@b.c", id, [24]byte{})
	if _, err := OpenIdentity(master, "a@b.c", w); !errors.Is(err, ErrIdentity) {
		t.Fatalf("mismatched public half accepted: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	id, _ := identityFromSeeds(seq(32, 1), seq(32, 2))
	fp := id.Public.Fingerprint()
	if !regexp.MustCompile(`^[0-9a-f]{4}( [0-9a-f]{4}){7}$`).MatchString(fp) {
		t.Fatalf("fingerprint %q", fp)
	}
	p := id.Public
	p.Box[31] ^= 1
	q := id.Public
	q.Sign[0] ^= 1
	if p.Fingerprint() == fp || q.Fingerprint() == fp {
		t.Fatal("fingerprint ignores a key")
	}
	// Swapping the two keys gives another fingerprint (order is part of it).
	r := PublicIdentity{Box: id.Public.Sign, Sign: id.Public.Box}
	if r.Fingerprint() == fp {
		t.Fatal("fingerprint ignores key order")
	}
	if _, err := PublicFromBytes(make([]byte, 31), make([]byte, 32)); err == nil {
		t.Fatal("short public key accepted")
	}
}

// identityVector is one committed test vector of the sealed identity
// (testdata/identity_vectors.json, docs/FORMAT.md "Identity keys").
type identityVector struct {
	Master      string `json:"master"`
	Email       string `json:"email"`
	BoxPrivate  string `json:"x25519_private"`
	SignSeed    string `json:"ed25519_seed"`
	BoxPublic   string `json:"x25519_public"`
	SignPublic  string `json:"ed25519_public"`
	IdentityKey string `json:"identity_key"`
	Nonce       string `json:"nonce"`
	Sealed      string `json:"sealed"`
	Fingerprint string `json:"fingerprint"`
}

func computeIdentityVector(master Key, email string, boxPriv, signSeed []byte, nonce [24]byte) identityVector {
	id, err := identityFromSeeds(boxPriv, signSeed)
	if err != nil {
		panic(err)
	}
	h := hex.EncodeToString
	k := HKDF(master, infoIdentity)
	return identityVector{
		Master: h(master[:]), Email: email, BoxPrivate: h(boxPriv), SignSeed: h(signSeed),
		BoxPublic: h(id.Public.Box[:]), SignPublic: h(id.Public.Sign[:]),
		IdentityKey: h(k[:]), Nonce: h(nonce[:]),
		Sealed:      h(sealIdentityWithNonce(master, email, id, nonce)),
		Fingerprint: id.Public.Fingerprint(),
	}
}

func identityVectorInputs() []identityVector {
	var m1, m2 Key
	copy(m1[:], seq(32, 0x40))
	copy(m2[:], seq(32, 0xa0))
	var n1, n2 [24]byte
	copy(n1[:], seq(24, 0x10))
	copy(n2[:], seq(24, 0xe0))
	return []identityVector{
		computeIdentityVector(m1, "alice@example.com", seq(32, 0x00), seq(32, 0x20), n1),
		computeIdentityVector(m2, "bob@example.org", seq(32, 0x60), seq(32, 0x80), n2),
	}
}

func TestIdentityVectors(t *testing.T) {
	checkVectorFile(t, "identity_vectors.json", identityVectorInputs())
	b, _ := os.ReadFile(filepath.Join("testdata", "identity_vectors.json"))
	var want []identityVector
	json.Unmarshal(b, &want)
	// And the other direction: each committed blob opens to its keys.
	for i, v := range want {
		var master Key
		hex.Decode(master[:], []byte(v.Master))
		sealed, _ := hex.DecodeString(v.Sealed)
		id, err := OpenIdentity(master, v.Email, sealed)
		if err != nil || hex.EncodeToString(id.Public.Box[:]) != v.BoxPublic || hex.EncodeToString(id.SignKey().Seed()) != v.SignSeed {
			t.Errorf("vector %d: open: %v", i, err)
		}
	}
}

// checkVectorFile compares got with testdata/name (rewritten with -update)
// and returns the committed vectors.
func checkVectorFile[V comparable](t *testing.T, name string, got []V) []V {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []V
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("%d vectors, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("vector %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	return want
}
