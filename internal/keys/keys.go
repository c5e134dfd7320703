// Package keys turns a password into the keys of an account: Argon2id to an auth
// key and a key-encryption key, the wrapped master key, and HKDF subkeys per purpose.
// The byte-level construction is specified in docs/FORMAT.md.
package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// Key is a 256-bit symmetric key.
type Key [32]byte

// KDFParams are the Argon2id cost parameters (see api.KDFParams, same fields).
type KDFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// Accepted KDF parameter ranges. The upper bounds stop a hostile server from
// making a client burn minutes of CPU or gigabytes of RAM at login.
const (
	MinTime      = 1
	MaxTime      = 20
	MinMemoryKiB = 64
	MaxMemoryKiB = 4 << 20 // 4 GiB
	MinThreads   = 1
	MaxThreads   = 16

	// SaltSize is the size of an account salt.
	SaltSize = 16

	// WrappedSize is the size of a wrapped master key: version, nonce, key, tag.
	WrappedSize = 1 + chacha20poly1305.NonceSizeX + 32 + chacha20poly1305.Overhead

	// WrapVersion is the first byte of a wrapped master key.
	WrapVersion = 0x01
)

// Domain-separation strings; see docs/FORMAT.md.
const (
	infoAuth    = "kumo/v1/auth"
	infoKEK     = "kumo/v1/kek"
	adMaster    = "kumo/v1/master"
	infoAttrs   = "kumo/v1/attrs"
	infoNames   = "kumo/v1/names"
	infoChunkID = "kumo/v1/chunk-id"
	infoChunks  = "kumo/v1/chunks"
	infoCache   = "kumo/v1/cache"
)

// DefaultKDF returns the parameters new accounts use (RFC 9106's second
// recommended option, with 2 lanes): about 0.1-0.3 s on a current core.
func DefaultKDF() KDFParams { return KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 2} }

// TestKDF returns cheap parameters for tests only. They are below FloorKDF: a
// client derives with them only when a test lowers its floor explicitly
// (session.Options.Floor).
func TestKDF() KDFParams { return KDFParams{Time: 1, MemoryKiB: 64, Threads: 1} }

// FloorKDF returns the weakest parameters a client derives a password's keys
// with, whatever a server answers: today's DefaultKDF. A server that answers
// less is trying a downgrade (cheap offline guessing of the password).
func FloorKDF() KDFParams { return DefaultKDF() }

// Weaker reports whether p costs less than q in any of time, memory or threads.
func (p KDFParams) Weaker(q KDFParams) bool {
	return p.Time < q.Time || p.MemoryKiB < q.MemoryKiB || p.Threads < q.Threads
}

// MaxKDF returns, field by field, the larger of p and q: parameters weaker
// than neither.
func MaxKDF(p, q KDFParams) KDFParams {
	return KDFParams{Time: max(p.Time, q.Time), MemoryKiB: max(p.MemoryKiB, q.MemoryKiB), Threads: max(p.Threads, q.Threads)}
}

// String is the parameters as "t=3 m=65536KiB p=2".
func (p KDFParams) String() string {
	return fmt.Sprintf("t=%d m=%dKiB p=%d", p.Time, p.MemoryKiB, p.Threads)
}

// ErrBadKDF is returned for parameters outside the accepted range (too weak or absurdly costly).
var ErrBadKDF = errors.New("keys: KDF parameters out of range")

// ErrBadSalt is returned for a salt that is not SaltSize bytes.
var ErrBadSalt = errors.New("keys: salt must be 16 bytes")

// ErrUnwrap is returned when the master key cannot be unwrapped (wrong password or tampered data).
var ErrUnwrap = errors.New("keys: wrong password or corrupted wrapped master key")

// Validate reports whether p is within the accepted ranges. Memory must also be
// at least 8 KiB per lane, as RFC 9106 requires.
func (p KDFParams) Validate() error {
	switch {
	case p.Time < MinTime || p.Time > MaxTime:
		return fmt.Errorf("%w: time %d not in %d..%d", ErrBadKDF, p.Time, MinTime, MaxTime)
	case p.MemoryKiB < MinMemoryKiB || p.MemoryKiB > MaxMemoryKiB:
		return fmt.Errorf("%w: memory %d KiB not in %d..%d", ErrBadKDF, p.MemoryKiB, MinMemoryKiB, MaxMemoryKiB)
	case p.Threads < MinThreads || p.Threads > MaxThreads:
		return fmt.Errorf("%w: threads %d not in %d..%d", ErrBadKDF, p.Threads, MinThreads, MaxThreads)
	case p.MemoryKiB < 8*uint32(p.Threads):
		return fmt.Errorf("%w: memory %d KiB below 8 KiB per thread", ErrBadKDF, p.MemoryKiB)
	}
	return nil
}

// NewSalt returns a fresh random 16-byte salt.
func NewSalt() ([]byte, error) {
	s := make([]byte, SaltSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("keys: salt: %w", err)
	}
	return s, nil
}

// FromPassword derives the auth key (sent to the server) and the key-encryption
// key (never leaves the client) from a password and the account's salt.
func FromPassword(password, salt []byte, p KDFParams) (authKey, kek Key, err error) {
	if err := p.Validate(); err != nil {
		return Key{}, Key{}, err
	}
	if len(salt) != SaltSize {
		return Key{}, Key{}, fmt.Errorf("%w: got %d", ErrBadSalt, len(salt))
	}
	root := argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, 32)
	defer clear(root)
	return expand(root, infoAuth), expand(root, infoKEK), nil
}

// expand is HKDF-SHA256 (extract with an empty salt, then expand) to 32 bytes.
func expand(secret []byte, info string) Key {
	var k Key
	if _, err := io.ReadFull(hkdf.New(sha256.New, secret, nil, []byte(info)), k[:]); err != nil {
		panic("keys: hkdf: " + err.Error()) // cannot happen for 32 bytes
	}
	return k
}

// NewMasterKey returns a fresh random master key.
func NewMasterKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("keys: master key: %w", err)
	}
	return k, nil
}

// WrapMaster seals the master key with the key-encryption key.
func WrapMaster(kek, master Key) ([]byte, error) {
	var nonce [chacha20poly1305.NonceSizeX]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("keys: wrap nonce: %w", err)
	}
	return wrapWithNonce(kek, master, nonce), nil
}

// wrapWithNonce is WrapMaster with a chosen nonce (test vectors only).
func wrapWithNonce(kek, master Key, nonce [chacha20poly1305.NonceSizeX]byte) []byte {
	aead, err := chacha20poly1305.NewX(kek[:])
	if err != nil {
		panic("keys: " + err.Error()) // key size is fixed
	}
	out := make([]byte, 0, WrappedSize)
	out = append(out, WrapVersion)
	out = append(out, nonce[:]...)
	return aead.Seal(out, nonce[:], master[:], []byte(adMaster))
}

// UnwrapMaster opens a wrapped master key; ErrUnwrap on any failure.
func UnwrapMaster(kek Key, wrapped []byte) (Key, error) {
	if len(wrapped) != WrappedSize || wrapped[0] != WrapVersion {
		return Key{}, ErrUnwrap
	}
	aead, err := chacha20poly1305.NewX(kek[:])
	if err != nil {
		panic("keys: " + err.Error())
	}
	nonce := wrapped[1 : 1+chacha20poly1305.NonceSizeX]
	var k Key
	pt, err := aead.Open(k[:0], nonce, wrapped[1+len(nonce):], []byte(adMaster))
	if err != nil || len(pt) != len(k) {
		return Key{}, ErrUnwrap
	}
	return k, nil
}

// Subkeys are the per-purpose keys derived from the master key with HKDF-SHA256.
type Subkeys struct {
	Attrs   Key // seals node attributes
	Names   Key // MACs and seals entry names
	ChunkID Key // keyed hash of chunk plaintext
	Chunks  Key // derives per-chunk content keys
	Cache   Key // seals the drive's local cache and write-back data
}

// Derive returns the subkeys of a master key.
func Derive(master Key) Subkeys {
	return Subkeys{
		Attrs:   expand(master[:], infoAttrs),
		Names:   expand(master[:], infoNames),
		ChunkID: expand(master[:], infoChunkID),
		Chunks:  expand(master[:], infoChunks),
		Cache:   expand(master[:], infoCache),
	}
}

// HKDF returns HKDF-SHA256(secret, empty salt, info) truncated to 32 bytes: the
// derivation every kumo subkey uses, exported so other packages derive their
// own purpose keys (e.g. from Subkeys.Cache) the same documented way.
func HKDF(secret Key, info string) Key { return expand(secret[:], info) }
