package keys

// Identity keys (format v2): per account an X25519 key pair, to receive share
// secrets, and an Ed25519 key pair, to sign writes. Both are made on the
// client; the private halves leave it only sealed under a key derived from the
// master key. The sealed blob also holds the public halves, so that the owner
// can check that what the server publishes for the account is its own keys.
// Byte layout: docs/FORMAT.md, "Identity keys".

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	// IdentityVersion is the first byte of a sealed identity and part of its AD.
	IdentityVersion = 0x02

	// PublicKeySize is the size of an X25519 or Ed25519 public key.
	PublicKeySize = 32

	// identityPlainSize: X25519 private, Ed25519 seed, X25519 public, Ed25519 public.
	identityPlainSize = 4 * 32

	// IdentitySealedSize is the size of a sealed identity: version, nonce, sealed keys, tag.
	IdentitySealedSize = 1 + chacha20poly1305.NonceSizeX + identityPlainSize + chacha20poly1305.Overhead

	infoIdentity     = "kumo/v2/identity"
	labelFingerprint = "kumo/v2/identity-fingerprint"
)

// ErrIdentity is returned for a sealed identity that does not open: wrong
// master key, another account's blob, tampered or malformed bytes. One error
// for every cause.
var ErrIdentity = errors.New("keys: sealed identity keys do not open")

// PublicIdentity is what the server publishes for an account.
type PublicIdentity struct {
	Box  [PublicKeySize]byte // X25519: share secrets are sealed to it
	Sign [PublicKeySize]byte // Ed25519: verifies the account's signatures
}

// Identity is an account's identity key pairs.
type Identity struct {
	Public PublicIdentity
	box    *ecdh.PrivateKey
	sign   ed25519.PrivateKey
}

// NewIdentity makes fresh identity key pairs.
func NewIdentity() (*Identity, error) {
	var seeds [64]byte
	if _, err := rand.Read(seeds[:]); err != nil {
		return nil, fmt.Errorf("keys: identity: %w", err)
	}
	defer clear(seeds[:])
	return identityFromSeeds(seeds[:32], seeds[32:])
}

// identityFromSeeds builds the key pairs from a 32-byte X25519 private key and
// a 32-byte Ed25519 seed (test vectors use fixed seeds).
func identityFromSeeds(boxPriv, signSeed []byte) (*Identity, error) {
	bk, err := ecdh.X25519().NewPrivateKey(boxPriv)
	if err != nil {
		return nil, fmt.Errorf("keys: identity: %w", err)
	}
	id := &Identity{box: bk, sign: ed25519.NewKeyFromSeed(signSeed)}
	copy(id.Public.Box[:], bk.PublicKey().Bytes())
	copy(id.Public.Sign[:], id.sign.Public().(ed25519.PublicKey))
	return id, nil
}

// BoxKey is the X25519 private key.
func (id *Identity) BoxKey() *ecdh.PrivateKey { return id.box }

// SignKey is the Ed25519 private key.
func (id *Identity) SignKey() ed25519.PrivateKey { return id.sign }

// Fingerprint is a short form of the public keys for people to compare:
// SHA-256 over a domain label, the X25519 and the Ed25519 public key,
// first 16 bytes, as 8 groups of 4 hex digits.
func (p PublicIdentity) Fingerprint() string {
	h := sha256.New()
	h.Write([]byte(labelFingerprint + "\x00"))
	h.Write(p.Box[:])
	h.Write(p.Sign[:])
	x := hex.EncodeToString(h.Sum(nil)[:16])
	groups := make([]string, 0, len(x)/4)
	for i := 0; i < len(x); i += 4 {
		groups = append(groups, x[i:i+4])
	}
	return strings.Join(groups, " ")
}

// Equal compares two public identities in constant time.
func (p PublicIdentity) Equal(q PublicIdentity) bool {
	return subtle.ConstantTimeCompare(p.Box[:], q.Box[:])&subtle.ConstantTimeCompare(p.Sign[:], q.Sign[:]) == 1
}

// PublicFromBytes checks the sizes of public keys received from the server.
func PublicFromBytes(box, sign []byte) (PublicIdentity, error) {
	var p PublicIdentity
	if len(box) != PublicKeySize || len(sign) != PublicKeySize {
		return p, fmt.Errorf("keys: public keys must be %d bytes each, got %d and %d", PublicKeySize, len(box), len(sign))
	}
	copy(p.Box[:], box)
	copy(p.Sign[:], sign)
	return p, nil
}

// identityAD binds a sealed identity to its purpose, format version and
// account: another account's blob, or one of another version, does not open.
func identityAD(email string) []byte {
	ad := make([]byte, 0, len(infoIdentity)+2+len(email))
	ad = append(ad, infoIdentity...)
	ad = append(ad, 0, IdentityVersion)
	return append(ad, email...)
}

// SealIdentity seals the identity under the master key for the account email
// (as the server stores it: trimmed, lower-case).
func SealIdentity(master Key, email string, id *Identity) ([]byte, error) {
	var nonce [chacha20poly1305.NonceSizeX]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("keys: identity nonce: %w", err)
	}
	return sealIdentityWithNonce(master, email, id, nonce), nil
}

func sealIdentityWithNonce(master Key, email string, id *Identity, nonce [chacha20poly1305.NonceSizeX]byte) []byte {
	k := HKDF(master, infoIdentity)
	defer clear(k[:])
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		panic("keys: " + err.Error()) // key size is fixed
	}
	pt := make([]byte, 0, identityPlainSize)
	pt = append(pt, id.box.Bytes()...)
	pt = append(pt, id.sign.Seed()...)
	pt = append(pt, id.Public.Box[:]...)
	pt = append(pt, id.Public.Sign[:]...)
	defer clear(pt)
	out := make([]byte, 0, IdentitySealedSize)
	out = append(out, IdentityVersion)
	out = append(out, nonce[:]...)
	return aead.Seal(out, nonce[:], pt, identityAD(email))
}

// OpenIdentity opens a sealed identity of the account email. It also checks
// that the public keys inside are those of the private keys, so a caller can
// trust Public and compare it with what the server publishes. ErrIdentity on
// any failure.
func OpenIdentity(master Key, email string, sealed []byte) (*Identity, error) {
	if len(sealed) != IdentitySealedSize || sealed[0] != IdentityVersion {
		return nil, ErrIdentity
	}
	k := HKDF(master, infoIdentity)
	defer clear(k[:])
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		panic("keys: " + err.Error())
	}
	nonce := sealed[1 : 1+chacha20poly1305.NonceSizeX]
	pt, err := aead.Open(nil, nonce, sealed[1+len(nonce):], identityAD(email))
	if err != nil || len(pt) != identityPlainSize {
		return nil, ErrIdentity
	}
	defer clear(pt)
	id, err := identityFromSeeds(pt[0:32], pt[32:64])
	if err != nil {
		return nil, ErrIdentity
	}
	if !bytes.Equal(id.Public.Box[:], pt[64:96]) || !bytes.Equal(id.Public.Sign[:], pt[96:128]) {
		return nil, ErrIdentity
	}
	return id, nil
}
