// Package chunk cuts file contents into fixed-size chunks, names each by a keyed
// hash of its plaintext, and seals it in independently verifiable segments with a
// STREAM-style AEAD, so a random read decrypts one segment. See docs/FORMAT.md.
package chunk

import "errors"

const (
	Size        = 4 << 20  // plaintext bytes of a full chunk
	SegmentSize = 64 << 10 // plaintext bytes of a full segment
	Overhead    = 16       // AEAD tag bytes per segment
)

// ID is a chunk id: keyed hash of the plaintext. The zero ID means "hole".
type ID [32]byte

// String returns the lower-case hex form used on the wire.
func (id ID) String() string { panic("TODO") }

// IsZero reports whether id is the hole id.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the hex form.
func ParseID(s string) (ID, error) { panic("TODO") }

// ErrAuth is returned when a sealed chunk or segment fails authentication
// (flipped, truncated, reordered, from another chunk, or wrong key).
var ErrAuth = errors.New("chunk: authentication failed")

// SealedSize returns the sealed size of a chunk with plainLen plaintext bytes.
func SealedSize(plainLen int) int { panic("TODO") }

// Segments returns the number of segments of a chunk with plainLen plaintext bytes.
func Segments(plainLen int) int { panic("TODO") }

// SegmentRange returns the byte range [off, off+n) of segment i inside the sealed
// chunk of plainLen plaintext bytes, for an HTTP Range request.
func SegmentRange(plainLen, i int) (off, n int) { panic("TODO") }

// Cipher names and seals chunks with an account's chunk keys. Safe for concurrent use.
type Cipher struct{}

// NewCipher returns a Cipher from the ChunkID and Chunks subkeys.
func NewCipher(idKey, contentKey [32]byte) *Cipher { panic("TODO") }

// ID returns the chunk id of plaintext p.
func (c *Cipher) ID(p []byte) ID { panic("TODO") }

// Seal seals plaintext p (1..Size bytes) whose id is id, appending to dst.
func (c *Cipher) Seal(dst []byte, id ID, p []byte) []byte { panic("TODO") }

// Open authenticates and decrypts a whole sealed chunk, appending to dst. It also
// checks that the plaintext hashes to id.
func (c *Cipher) Open(dst []byte, id ID, sealed []byte) ([]byte, error) { panic("TODO") }

// OpenSegment authenticates and decrypts segment i of the chunk id whose
// plaintext length is plainLen, given exactly that segment's sealed bytes.
func (c *Cipher) OpenSegment(dst []byte, id ID, plainLen, i int, seg []byte) ([]byte, error) {
	panic("TODO")
}
