// Package chunk cuts file contents into fixed-size chunks, names each by a keyed
// hash of its plaintext, and seals it in independently verifiable segments with a
// STREAM-style AEAD, so a random read decrypts one segment. See docs/FORMAT.md.
package chunk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"

	"golang.org/x/crypto/hkdf"
)

const (
	Size        = 4 << 20  // plaintext bytes of a full chunk
	SegmentSize = 64 << 10 // plaintext bytes of a full segment
	Overhead    = 16       // AEAD tag bytes per segment

	// SealedSegmentSize is the sealed size of a full segment.
	SealedSegmentSize = SegmentSize + Overhead
	// MaxSealedSize is the sealed size of a full chunk.
	MaxSealedSize = Size / SegmentSize * SealedSegmentSize

	nonceSize    = 12
	infoChunkKey = "kumo/v1/chunk-key"
)

// ID is a chunk id: keyed hash of the plaintext. The zero ID means "hole".
type ID [32]byte

// String returns the lower-case hex form used on the wire.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the hole id.
func (id ID) IsZero() bool { return id == ID{} }

// ErrBadID is returned by ParseID for anything but 64 lower-case hex characters.
var ErrBadID = errors.New("chunk: bad chunk id")

// ParseID parses the hex form. Only the canonical form (64 lower-case hex digits)
// is accepted, so ParseID(s).String() == s and ids can be compared as strings.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, fmt.Errorf("%w: length %d", ErrBadID, len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ID{}, fmt.Errorf("%w: not lower-case hex", ErrBadID)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrBadID, err)
	}
	return id, nil
}

// ErrAuth is returned when a sealed chunk or segment fails authentication
// (flipped, truncated, reordered, from another chunk, or wrong key).
var ErrAuth = errors.New("chunk: authentication failed")

// ErrRange is returned by OpenSegment for a plaintext length outside 1..Size or
// a segment index outside the chunk: a caller bug, not tampering.
var ErrRange = errors.New("chunk: length or segment index out of range")

// SealedSize returns the sealed size of a chunk with plainLen plaintext bytes.
func SealedSize(plainLen int) int { return plainLen + Segments(plainLen)*Overhead }

// Segments returns the number of segments of a chunk with plainLen plaintext bytes.
func Segments(plainLen int) int {
	if plainLen <= 0 {
		return 0
	}
	return (plainLen + SegmentSize - 1) / SegmentSize
}

// SegmentRange returns the byte range [off, off+n) of segment i inside the sealed
// chunk of plainLen plaintext bytes, for an HTTP Range request.
func SegmentRange(plainLen, i int) (off, n int) {
	off = i * SealedSegmentSize
	return off, segmentPlainLen(plainLen, i) + Overhead
}

// segmentPlainLen is the plaintext length of segment i of a chunk of plainLen bytes.
func segmentPlainLen(plainLen, i int) int {
	return min(SegmentSize, plainLen-i*SegmentSize)
}

// Cipher names and seals chunks with an account's chunk keys. Safe for concurrent use.
type Cipher struct {
	idKey [32]byte
	prk   []byte // HKDF-Extract(salt=nil, contentKey); read-only after NewCipher
}

// NewCipher returns a Cipher from the ChunkID and Chunks subkeys.
func NewCipher(idKey, contentKey [32]byte) *Cipher {
	return &Cipher{idKey: idKey, prk: hkdf.Extract(sha256.New, contentKey[:], nil)}
}

func (c *Cipher) mac() hash.Hash { return hmac.New(sha256.New, c.idKey[:]) }

// ID returns the chunk id of plaintext p.
func (c *Cipher) ID(p []byte) ID {
	var id ID
	h := c.mac()
	h.Write(p)
	h.Sum(id[:0])
	return id
}

// aead returns the AES-256-GCM instance of chunk id: its key is
// HKDF-SHA256(Chunks key, salt nil, "kumo/v1/chunk-key" || id), unique per plaintext.
func (c *Cipher) aead(id ID) cipher.AEAD { return keyAEAD(c.chunkKey(id)) }

// keyAEAD is the AES-256-GCM instance of a chunk's content key.
func keyAEAD(key [32]byte) cipher.AEAD {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic("chunk: " + err.Error())
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic("chunk: " + err.Error())
	}
	return g
}

// ContentKey is the content key of chunk id: what a read-only link hands
// out per chunk, so its holder opens exactly the chunks the link names
// (OpenWithKey, NewKeyOpener) and learns nothing of the account's keys.
func (c *Cipher) ContentKey(id ID) [32]byte { return c.chunkKey(id) }

// chunkKey is the content key of chunk id.
func (c *Cipher) chunkKey(id ID) [32]byte {
	var info [len(infoChunkKey) + len(id)]byte
	copy(info[:], infoChunkKey)
	copy(info[len(infoChunkKey):], id[:])
	var key [32]byte
	if _, err := hkdf.Expand(sha256.New, c.prk, info[:]).Read(key[:]); err != nil {
		panic("chunk: hkdf: " + err.Error()) // cannot happen for 32 bytes
	}
	return key
}

// segmentNonce is the STREAM nonce of segment i: 11-byte big-endian i || last flag.
func segmentNonce(i int, last bool) [nonceSize]byte {
	var n [nonceSize]byte
	binary.BigEndian.PutUint64(n[3:11], uint64(i))
	if last {
		n[11] = 1
	}
	return n
}

// Seal seals plaintext p (1..Size bytes) whose id is id, appending to dst.
// It panics if len(p) is out of range: chunking is the caller's job.
func (c *Cipher) Seal(dst []byte, id ID, p []byte) []byte {
	if len(p) < 1 || len(p) > Size {
		panic(fmt.Sprintf("chunk: Seal of %d bytes (want 1..%d)", len(p), Size))
	}
	g := c.aead(id)
	segs := Segments(len(p))
	dst = slices.Grow(dst, SealedSize(len(p)))
	for i := 0; i < segs; i++ {
		n := segmentNonce(i, i == segs-1)
		end := min(len(p), (i+1)*SegmentSize)
		dst = g.Seal(dst, n[:], p[i*SegmentSize:end], nil)
	}
	return dst
}

// Open authenticates and decrypts a whole sealed chunk, appending to dst. It also
// checks that the plaintext hashes to id.
func (c *Cipher) Open(dst []byte, id ID, sealed []byte) ([]byte, error) {
	h := c.mac() // hashed segment by segment, while the plaintext is in cache
	start := len(dst)
	dst, err := openChunk(dst, c.aead(id), id.String(), sealed, h)
	if err != nil {
		return nil, err
	}
	var got ID
	h.Sum(got[:0])
	if subtle.ConstantTimeCompare(got[:], id[:]) != 1 {
		clear(dst[start:])
		return nil, fmt.Errorf("%w: chunk %s: plaintext does not match id", ErrAuth, id)
	}
	return dst, nil
}

// OpenWithKey authenticates and decrypts a whole sealed chunk given only its
// content key (a link holder's view), appending to dst. Without the ChunkID
// key the id cannot be checked; the AEAD under the per-chunk key
// authenticates the bytes.
func OpenWithKey(dst []byte, key [32]byte, sealed []byte) ([]byte, error) {
	return openChunk(dst, keyAEAD(key), "(by key)", sealed, nil)
}

// openChunk opens every segment of a sealed chunk with g, appending the
// plaintext to dst and, with h, hashing it on the way. name names the chunk
// in errors.
func openChunk(dst []byte, g cipher.AEAD, name string, sealed []byte, h hash.Hash) ([]byte, error) {
	if len(sealed) <= Overhead || len(sealed) > MaxSealedSize {
		return nil, fmt.Errorf("%w: sealed length %d", ErrAuth, len(sealed))
	}
	segs := (len(sealed) + SealedSegmentSize - 1) / SealedSegmentSize
	if len(sealed)-(segs-1)*SealedSegmentSize <= Overhead {
		// A final segment with no plaintext is never produced.
		return nil, fmt.Errorf("%w: sealed length %d", ErrAuth, len(sealed))
	}
	start := len(dst)
	dst = slices.Grow(dst, len(sealed)-segs*Overhead)
	for i := 0; i < segs; i++ {
		n := segmentNonce(i, i == segs-1)
		end := min(len(sealed), (i+1)*SealedSegmentSize)
		out, err := g.Open(dst, n[:], sealed[i*SealedSegmentSize:end], nil)
		if err != nil {
			clear(dst[start:]) // plaintext of earlier segments
			return nil, fmt.Errorf("%w: chunk %s segment %d", ErrAuth, name, i)
		}
		if h != nil {
			h.Write(out[len(dst):])
		}
		dst = out
	}
	return dst, nil
}

// OpenSegment authenticates and decrypts segment i of the chunk id whose
// plaintext length is plainLen, given exactly that segment's sealed bytes.
func (c *Cipher) OpenSegment(dst []byte, id ID, plainLen, i int, seg []byte) ([]byte, error) {
	o, err := c.Opener(id, plainLen)
	if err != nil {
		return nil, err
	}
	return o.OpenSegment(dst, i, seg)
}

// Opener opens the segments of one chunk. It derives the chunk's key once, so
// a reader going through many segments of a chunk pays for HKDF and the AES
// key schedule once, not per segment. Safe for concurrent use.
type Opener struct {
	id       ID
	plainLen int
	g        cipher.AEAD
}

// Opener returns the segment opener of chunk id whose plaintext length is plainLen.
func (c *Cipher) Opener(id ID, plainLen int) (*Opener, error) {
	if plainLen < 1 || plainLen > Size {
		return nil, fmt.Errorf("%w: chunk of %d bytes", ErrRange, plainLen)
	}
	return &Opener{id: id, plainLen: plainLen, g: c.aead(id)}, nil
}

// NewKeyOpener returns the segment opener of a chunk of plainLen plaintext
// bytes given only its content key (a link holder's view).
func NewKeyOpener(key [32]byte, plainLen int) (*Opener, error) {
	if plainLen < 1 || plainLen > Size {
		return nil, fmt.Errorf("%w: chunk of %d bytes", ErrRange, plainLen)
	}
	return &Opener{plainLen: plainLen, g: keyAEAD(key)}, nil
}

// OpenSegment authenticates and decrypts segment i, given exactly that
// segment's sealed bytes, appending the plaintext to dst. With enough spare
// capacity in dst (not overlapping seg) the plaintext is not allocated.
func (o *Opener) OpenSegment(dst []byte, i int, seg []byte) ([]byte, error) {
	if i < 0 || i >= Segments(o.plainLen) {
		return nil, fmt.Errorf("%w: segment %d of %d bytes", ErrRange, i, o.plainLen)
	}
	if want := segmentPlainLen(o.plainLen, i) + Overhead; len(seg) != want {
		return nil, fmt.Errorf("%w: chunk %s segment %d: %d bytes, want %d", ErrAuth, o.id, i, len(seg), want)
	}
	n := segmentNonce(i, i == Segments(o.plainLen)-1)
	out, err := o.g.Open(dst, n[:], seg, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk %s segment %d", ErrAuth, o.id, i)
	}
	return out, nil
}
