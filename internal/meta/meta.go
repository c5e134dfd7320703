// Package meta defines a node's attributes and how attributes and entry names are
// sealed, bound to their node or parent, and MAC'd. See docs/FORMAT.md.
package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/crypto/chacha20poly1305"

	"kumo/internal/chunk"
)

// ErrAuth is returned when sealed data fails authentication (tampered, swapped
// between nodes, or sealed with another key). The drive maps it to EIO.
var ErrAuth = errors.New("meta: authentication failed")

// ErrFormat is returned for structurally invalid plaintext (bad version, bad encoding).
var ErrFormat = errors.New("meta: malformed attributes")

// ErrBadName is returned by ValidName for an empty name, ".", "..", or a name
// containing '/' or NUL (EINVAL).
var ErrBadName = errors.New("meta: invalid entry name")

// ErrNameTooLong is returned by ValidName for names over MaxNameLen bytes (ENAMETOOLONG).
var ErrNameTooLong = errors.New("meta: entry name too long")

// Limits of the attribute encoding: Linux's own limits (PATH_MAX for symlink
// targets, XATTR_NAME_MAX, XATTR_SIZE_MAX, NAME_MAX), which the kernel enforces
// before a request reaches FUSE.
const (
	MaxTargetLen     = 4095
	MaxXattrNameLen  = 255
	MaxXattrValueLen = 65536
	MaxNameLen       = 255
)

// Format versions (first byte of each encoding; see docs/FORMAT.md).
const (
	AttrsVersion = 0x01 // plaintext attribute encoding (unchanged in v2)
	SealedV1     = 0x01 // sealed attributes and names bound to their node or parent only
	SealedV2     = 0x02 // sealed attributes with a revision, names bound to their child; key id in the header
)

const (
	nonceSize     = chacha20poly1305.NonceSizeX
	sealOverhead  = 1 + nonceSize + chacha20poly1305.Overhead
	fixedLen      = 1 + 4*4 + 8*4 // version, mode..rdev, size, times
	adAttrs       = "kumo/v1/attrs"
	adAttrsV2     = "kumo/v2/attrs"
	adNameV2      = "kumo/v2/name"
	macPrefix     = "kumo/v1/name-mac"
	infoNameSeal  = "kumo/v1/name-seal"
	xattrMinLen   = 1 + 1 + 4 // name length, 1-byte name, value length
	chunkRefLen   = 32 + 4
	minAttrsBytes = fixedLen + 2 + 4 + 4
)

// ChunkRef names one chunk of a file: chunk i holds file bytes
// [i*chunk.Size, i*chunk.Size+Len). A zero ID is a hole (all zeros, nothing stored).
type ChunkRef struct {
	ID  chunk.ID
	Len uint32
}

// Attrs are everything the client knows about a node and the server must not.
type Attrs struct {
	Mode   uint32 // st_mode, type bits included
	UID    uint32
	GID    uint32
	Rdev   uint32
	Size   uint64
	Atime  int64 // unix nanoseconds
	Mtime  int64
	Ctime  int64
	Target []byte            // symlink target
	Xattrs map[string][]byte // extended attributes, full names ("user.foo")
	Chunks []ChunkRef
}

// Validate reports whether a fits the encoding's limits. Encode panics on
// attributes that do not, so callers holding user input check first.
func (a *Attrs) Validate() error {
	if len(a.Target) > MaxTargetLen {
		return fmt.Errorf("%w: symlink target of %d bytes", ErrFormat, len(a.Target))
	}
	for name, v := range a.Xattrs {
		if err := validXattrName(name); err != nil {
			return err
		}
		if len(v) > MaxXattrValueLen {
			return fmt.Errorf("%w: xattr %q value of %d bytes", ErrFormat, name, len(v))
		}
	}
	if uint64(len(a.Chunks)) > 1<<32-1 {
		return fmt.Errorf("%w: %d chunks", ErrFormat, len(a.Chunks))
	}
	for i, c := range a.Chunks {
		if err := validChunkRef(c); err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
	}
	return nil
}

func validXattrName(name string) error {
	if len(name) == 0 || len(name) > MaxXattrNameLen || bytes.IndexByte([]byte(name), 0) >= 0 {
		return fmt.Errorf("%w: bad xattr name %q", ErrFormat, name)
	}
	return nil
}

func validChunkRef(c ChunkRef) error {
	if c.Len > chunk.Size || (c.Len == 0 && !c.ID.IsZero()) {
		return fmt.Errorf("%w: chunk length %d", ErrFormat, c.Len)
	}
	return nil
}

// Encode returns the versioned plaintext encoding of a: canonical (xattrs sorted
// by name), so equal attributes encode to equal bytes. It panics if a.Validate fails.
func (a *Attrs) Encode() []byte {
	if err := a.Validate(); err != nil {
		panic("meta: Encode: " + err.Error())
	}
	n := minAttrsBytes + len(a.Target) + len(a.Chunks)*chunkRefLen
	names := make([]string, 0, len(a.Xattrs))
	for name, v := range a.Xattrs {
		names = append(names, name)
		n += 1 + len(name) + 4 + len(v)
	}
	sort.Strings(names)

	b := make([]byte, 0, n)
	b = append(b, AttrsVersion)
	b = binary.BigEndian.AppendUint32(b, a.Mode)
	b = binary.BigEndian.AppendUint32(b, a.UID)
	b = binary.BigEndian.AppendUint32(b, a.GID)
	b = binary.BigEndian.AppendUint32(b, a.Rdev)
	b = binary.BigEndian.AppendUint64(b, a.Size)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Atime))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Mtime))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Ctime))
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.Target)))
	b = append(b, a.Target...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(names)))
	for _, name := range names {
		v := a.Xattrs[name]
		b = append(b, byte(len(name)))
		b = append(b, name...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(a.Chunks)))
	for _, c := range a.Chunks {
		b = append(b, c.ID[:]...)
		b = binary.BigEndian.AppendUint32(b, c.Len)
	}
	return b
}

// reader consumes b front to back; the first short read sets err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%w: length %d past end (%d left)", ErrFormat, n, len(r.b))
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() uint8 {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// count reads a u32 element count and rejects counts that cannot fit in the
// remaining bytes, so a length field never drives an allocation by itself.
func (r *reader) count(minElem int) int {
	n := r.u32()
	if r.err == nil && uint64(n)*uint64(minElem) > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: count %d too large for %d bytes left", ErrFormat, n, len(r.b))
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

// DecodeAttrs parses Encode's output; ErrFormat on anything malformed. It accepts
// only the canonical encoding, so DecodeAttrs(b).Encode() equals b.
func DecodeAttrs(b []byte) (*Attrs, error) {
	if len(b) < 1 || b[0] != AttrsVersion {
		return nil, fmt.Errorf("%w: unknown version", ErrFormat)
	}
	r := &reader{b: b[1:]}
	a := &Attrs{
		Mode: r.u32(), UID: r.u32(), GID: r.u32(), Rdev: r.u32(),
		Size:  r.u64(),
		Atime: int64(r.u64()), Mtime: int64(r.u64()), Ctime: int64(r.u64()),
	}
	if n := int(r.u16()); n > MaxTargetLen {
		return nil, fmt.Errorf("%w: symlink target of %d bytes", ErrFormat, n)
	} else if t := r.bytes(n); n > 0 && t != nil {
		a.Target = bytes.Clone(t)
	}

	nx := r.count(xattrMinLen)
	if nx > 0 {
		a.Xattrs = make(map[string][]byte, nx)
	}
	prev := ""
	for i := 0; i < nx && r.err == nil; i++ {
		name := string(r.bytes(int(r.u8())))
		vlen := r.u32()
		if r.err != nil {
			break
		}
		if err := validXattrName(name); err != nil {
			return nil, err
		}
		if i > 0 && name <= prev {
			return nil, fmt.Errorf("%w: xattr names not strictly sorted", ErrFormat)
		}
		if vlen > MaxXattrValueLen {
			return nil, fmt.Errorf("%w: xattr value of %d bytes", ErrFormat, vlen)
		}
		if v := r.bytes(int(vlen)); r.err == nil {
			a.Xattrs[name] = append([]byte{}, v...)
		}
		prev = name
	}

	nc := r.count(chunkRefLen)
	if nc > 0 {
		a.Chunks = make([]ChunkRef, nc)
	}
	for i := 0; i < nc && r.err == nil; i++ {
		copy(a.Chunks[i].ID[:], r.bytes(32))
		a.Chunks[i].Len = r.u32()
		if r.err == nil {
			if err := validChunkRef(a.Chunks[i]); err != nil {
				return nil, fmt.Errorf("chunk %d: %w", i, err)
			}
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrFormat, len(r.b))
	}
	return a, nil
}

// ValidName checks an entry name: 1..255 bytes, no '/' or NUL, not "." or "..".
func ValidName(name []byte) error {
	switch {
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes", ErrNameTooLong, len(name))
	case len(name) == 0, string(name) == ".", string(name) == "..":
		return fmt.Errorf("%w: %q", ErrBadName, name)
	case bytes.IndexByte(name, '/') >= 0, bytes.IndexByte(name, 0) >= 0:
		return fmt.Errorf("%w: %q contains '/' or NUL", ErrBadName, name)
	}
	return nil
}
