// Package link is the format of read-only links: the link id and secret, the
// https://SERVER/s/ID#SECRET address, the keys derived from them (and from a
// password), and the sealed manifest blob the server keeps. A link is a
// snapshot: its manifest names the chunks and their content keys as they were
// when it was made. See docs/FORMAT.md, section "Links".
package link

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/hkdf"

	"kumo/internal/keys"
)

const (
	IDSize     = 16 // random bytes of a link id
	SecretSize = 32 // random bytes of a link secret
	SaltSize   = 16 // bytes of a password salt
	KeySize    = 32

	// IDLen and SecretLen are the lengths of their base64url forms (no padding).
	IDLen     = 22
	SecretLen = 43

	// BlobVersion is the first byte of a sealed manifest: 0x02, the blob
	// that carries the opening of the secret's commitment. Version 0x01
	// (links made before the commitment) is refused: ErrOldLink.
	BlobVersion    = 0x02
	oldBlobVersion = 0x01
	// CommitRandSize is the bytes of r, the random part of the commitment
	// the secret is (Commit).
	CommitRandSize = 32
	nonceSize      = 12
	tagSize        = 16
	// MaxBlob bounds a sealed manifest (the server refuses bigger ones).
	MaxBlob = 16 << 20
	// MaxChunks bounds the distinct chunks a link names (the server refuses more).
	MaxChunks = 100000

	infoPrefix = "kumo/v2/link/"
)

// Errors a reader can tell apart.
var (
	ErrBadURL    = errors.New("link: not a kumo link (want https://SERVER/s/ID#SECRET)")
	ErrBadID     = errors.New("link: bad link id")
	ErrBadSecret = errors.New("link: bad link secret")
	// ErrOpen: the blob does not open under the key: a wrong secret or
	// password, or a blob that is not this link's.
	ErrOpen     = errors.New("link: the link does not open with this secret (or password)")
	ErrManifest = errors.New("link: invalid manifest")
	// ErrOldLink: a blob of version 0x01, made before links committed to
	// their manifest; it is no longer opened.
	ErrOldLink = errors.New("link: this link was made by an earlier kumo and can no longer be opened safely: ask its owner to make it again (kumo link PATH)")
)

var b64 = base64.RawURLEncoding

// ID is a link id: 16 random bytes chosen by the client.
type ID [IDSize]byte

// String is the base64url form without padding (22 characters), used in URLs,
// in the API and in the key derivation strings.
func (id ID) String() string { return b64.EncodeToString(id[:]) }

// ParseID parses the canonical 22-character form.
func ParseID(s string) (ID, error) {
	var id ID
	if err := decodeExact(id[:], s, IDLen); err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrBadID, err)
	}
	return id, nil
}

// Secret is a link secret; it lives only in the URL's fragment. It is the
// commitment to the link's manifest (Commit), made by Seal.
type Secret [SecretSize]byte

// String is the base64url form without padding (43 characters).
func (s Secret) String() string { return b64.EncodeToString(s[:]) }

// ParseSecret parses the canonical 43-character form.
func ParseSecret(s string) (Secret, error) {
	var sec Secret
	if err := decodeExact(sec[:], s, SecretLen); err != nil {
		return Secret{}, fmt.Errorf("%w: %v", ErrBadSecret, err)
	}
	return sec, nil
}

// decodeExact decodes s into dst, accepting only the canonical encoding (so
// that one id has one spelling: the server keys records by it).
func decodeExact(dst []byte, s string, n int) error {
	if len(s) != n {
		return fmt.Errorf("%d characters, want %d", len(s), n)
	}
	m, err := b64.Strict().Decode(dst, []byte(s))
	if err != nil {
		return err
	}
	if m != len(dst) {
		return fmt.Errorf("%d bytes, want %d", m, len(dst))
	}
	return nil
}

// NewID returns a fresh random link id. It never starts with '-' (the first
// six bits 62), so that `kumo link rm ID` is not taken for a flag; that costs
// 0.02 of the id's 128 bits.
func NewID() (ID, error) {
	for {
		var id ID
		if _, err := rand.Read(id[:]); err != nil {
			return ID{}, fmt.Errorf("link: random id: %w", err)
		}
		if id[0]>>2 != 62 {
			return id, nil
		}
	}
}

// FormatURL is the link's address: BASE/s/ID#SECRET, BASE the server's URL
// (scheme, host and any path prefix, no trailing slash).
func FormatURL(base string, id ID, s Secret) string {
	return strings.TrimRight(base, "/") + "/s/" + id.String() + "#" + s.String()
}

// ParseURL splits a link address into the server's base URL, the id and the
// secret. http is accepted besides https (a server on loopback or a test);
// a query, user info or a path not ending in /s/ID is refused.
func ParseURL(raw string) (base string, id ID, s Secret, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", ID{}, Secret{}, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.User != nil || u.Opaque != "" ||
		u.RawQuery != "" || u.ForceQuery || u.RawPath != "" {
		return "", ID{}, Secret{}, ErrBadURL
	}
	prefix, idStr, ok := cutLast(u.Path, "/s/")
	if !ok || strings.Contains(idStr, "/") {
		return "", ID{}, Secret{}, ErrBadURL
	}
	if id, err = ParseID(idStr); err != nil {
		return "", ID{}, Secret{}, err
	}
	if u.Fragment == "" {
		return "", ID{}, Secret{}, fmt.Errorf("%w: the URL has no #SECRET part (copy the whole link)", ErrBadSecret)
	}
	if u.RawFragment != "" && u.RawFragment != u.Fragment {
		return "", ID{}, Secret{}, fmt.Errorf("%w: escaped characters", ErrBadSecret)
	}
	if s, err = ParseSecret(u.Fragment); err != nil {
		return "", ID{}, Secret{}, err
	}
	return u.Scheme + "://" + u.Host + prefix, id, s, nil
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// Key is the key a manifest is sealed with, derived from the secret (and a
// password).
type Key [KeySize]byte

func hkdf32(ikm []byte, info string) [32]byte {
	var k [32]byte
	if _, err := io.ReadFull(hkdf.New(sha256.New, ikm, nil, []byte(info)), k[:]); err != nil {
		panic("link: hkdf: " + err.Error()) // cannot happen for 32 bytes
	}
	return k
}

// KeyNoPassword is K = HKDF-SHA256(S, info "kumo/v2/link/ID/key").
func KeyNoPassword(id ID, s Secret) Key {
	return hkdf32(s[:], infoPrefix+id.String()+"/key")
}

// Password is what the server keeps of a link password, besides the hash of
// the auth key: the Argon2id salt and parameters.
type Password struct {
	Salt []byte
	KDF  keys.KDFParams
}

// NewPassword returns fresh password parameters: a random salt and the
// client floor's Argon2id cost.
func NewPassword() (Password, error) {
	salt := make([]byte, SaltSize)
	if _, err := rand.Read(salt); err != nil {
		return Password{}, fmt.Errorf("link: random salt: %w", err)
	}
	return Password{Salt: salt, KDF: keys.DefaultKDF()}, nil
}

// Check refuses parameters a reader must not use: out of the accepted
// ranges, or weaker than the floor (a server that lowered them would get an
// auth key it could brute-force the password from).
func (p Password) Check() error {
	if len(p.Salt) != SaltSize {
		return fmt.Errorf("link: password salt of %d bytes, want %d", len(p.Salt), SaltSize)
	}
	if err := p.KDF.Validate(); err != nil {
		return fmt.Errorf("link: password parameters: %w", err)
	}
	if p.KDF.Weaker(keys.FloorKDF()) {
		return fmt.Errorf("link: password parameters %s are weaker than the floor %s; refusing to send a guessable auth key",
			p.KDF, keys.FloorKDF())
	}
	return nil
}

// KeysWithPassword derives, for a password-protected link, the manifest key
// K = HKDF(S||P, ".../key") and the auth key HKDF(P, ".../auth") the server
// checks, P = Argon2id(password, salt, params). The parameters are checked
// first (Check).
func KeysWithPassword(id ID, s Secret, password []byte, p Password) (Key, [32]byte, error) {
	if err := p.Check(); err != nil {
		return Key{}, [32]byte{}, err
	}
	pk := argon2.IDKey(password, p.Salt, p.KDF.Time, p.KDF.MemoryKiB, p.KDF.Threads, 32)
	defer clear(pk)
	ikm := append(append(make([]byte, 0, SecretSize+len(pk)), s[:]...), pk...)
	defer clear(ikm)
	return hkdf32(ikm, infoPrefix+id.String()+"/key"), hkdf32(pk, infoPrefix+id.String()+"/auth"), nil
}

// AuthHash is what the server stores of an auth key: SHA-256(authKey).
func AuthHash(authKey []byte) [32]byte { return sha256.Sum256(authKey) }

func aead(k Key) cipher.AEAD {
	block, err := aes.NewCipher(k[:])
	if err != nil {
		panic("link: " + err.Error())
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic("link: " + err.Error())
	}
	return g
}

func blobAD(id ID) []byte { return []byte(infoPrefix + id.String()) }

// commitPrefix starts the hashed input of Commit.
const commitPrefix = "kumo/v2/link/commit"

// Commit is the secret of a link whose blob holds r and the manifest bytes
// plain: S = SHA-256("kumo/v2/link/commit" || ID || r || plain), ID in its
// 22-character form. S commits to the manifest: whoever knows S (every
// holder of the link) cannot find another (r, manifest) with the same hash,
// so cannot seal another manifest that opens. r (random, never shown)
// keeps S unguessable from a guessed manifest.
func Commit(id ID, r *[CommitRandSize]byte, plain []byte) Secret {
	h := sha256.New()
	h.Write([]byte(commitPrefix))
	h.Write([]byte(id.String()))
	h.Write(r[:])
	h.Write(plain)
	var s Secret
	h.Sum(s[:0])
	return s
}

// KeyFunc derives the key a manifest is sealed with from the link's secret
// (KeyNoPassword, or KeysWithPassword's first result).
type KeyFunc func(Secret) (Key, error)

// Seal encodes and validates m, draws r and makes the link's secret S =
// Commit(id, r, manifest), derives K = key(S) and seals r and the manifest
// for link id under K:
// 0x02 || nonce || AES-256-GCM(K, nonce, r || manifest JSON, ad "kumo/v2/link/ID").
// It returns S (for the URL) and the blob (for the server).
func Seal(id ID, m *Manifest, key KeyFunc) (Secret, []byte, error) {
	var r [CommitRandSize]byte
	var nonce [nonceSize]byte
	if _, err := rand.Read(r[:]); err != nil {
		return Secret{}, nil, fmt.Errorf("link: random commitment: %w", err)
	}
	if _, err := rand.Read(nonce[:]); err != nil {
		return Secret{}, nil, fmt.Errorf("link: random nonce: %w", err)
	}
	return sealWith(id, m, &r, nonce, key)
}

func sealWith(id ID, m *Manifest, r *[CommitRandSize]byte, nonce [nonceSize]byte, key KeyFunc) (Secret, []byte, error) {
	mj, err := EncodeManifest(m)
	if err != nil {
		return Secret{}, nil, err
	}
	s := Commit(id, r, mj)
	k, err := key(s)
	if err != nil {
		return Secret{}, nil, err
	}
	plain := append(r[:len(r):len(r)], mj...)
	blob := make([]byte, 0, 1+nonceSize+len(plain)+tagSize)
	blob = append(blob, BlobVersion)
	blob = append(blob, nonce[:]...)
	blob = aead(k).Seal(blob, nonce[:], plain, blobAD(id))
	if len(blob) > MaxBlob {
		return Secret{}, nil, fmt.Errorf("link: the manifest seals to %d bytes, more than the %d a link holds: link fewer files", len(blob), MaxBlob)
	}
	return s, blob, nil
}

// Open authenticates and decrypts a blob of link id under k (derived from
// s), checks that s is the commitment to what it holds (in constant time),
// and decodes its manifest strictly (DecodeManifest). A blob that does not
// open, or opens to a manifest s does not commit to (another holder of the
// link sealed it), is ErrOpen; a blob of version 0x01, ErrOldLink.
func Open(k Key, id ID, s Secret, blob []byte) (*Manifest, error) {
	if len(blob) > 0 && blob[0] == oldBlobVersion {
		return nil, ErrOldLink
	}
	if len(blob) < 1+nonceSize+CommitRandSize+tagSize || len(blob) > MaxBlob {
		return nil, fmt.Errorf("%w: blob of %d bytes", ErrOpen, len(blob))
	}
	if blob[0] != BlobVersion {
		return nil, fmt.Errorf("link: blob version %d; this kumo reads version %d (upgrade kumo)", blob[0], BlobVersion)
	}
	plain, err := aead(k).Open(nil, blob[1:1+nonceSize], blob[1+nonceSize:], blobAD(id))
	if err != nil || len(plain) < CommitRandSize {
		return nil, ErrOpen
	}
	r := (*[CommitRandSize]byte)(plain[:CommitRandSize])
	want := Commit(id, r, plain[CommitRandSize:])
	if subtle.ConstantTimeCompare(want[:], s[:]) != 1 {
		return nil, fmt.Errorf("%w: its manifest is not the one the secret commits to", ErrOpen)
	}
	return DecodeManifest(plain[CommitRandSize:])
}
