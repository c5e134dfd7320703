// Package meta defines a node's attributes and how attributes and entry names are
// sealed, bound to their node or parent, and MAC'd. See docs/FORMAT.md.
package meta

import (
	"errors"

	"kumo/internal/chunk"
	"kumo/internal/keys"
)

// ErrAuth is returned when sealed data fails authentication (tampered, swapped
// between nodes, or sealed with another key). The drive maps it to EIO.
var ErrAuth = errors.New("meta: authentication failed")

// ErrFormat is returned for structurally invalid plaintext (bad version, bad encoding).
var ErrFormat = errors.New("meta: malformed attributes")

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

// Encode returns the versioned plaintext encoding of a.
func (a *Attrs) Encode() []byte { panic("TODO") }

// DecodeAttrs parses Encode's output; ErrFormat on anything malformed.
func DecodeAttrs(b []byte) (*Attrs, error) { panic("TODO") }

// Sealer seals attributes and names with an account's subkeys. Safe for concurrent use.
type Sealer struct{}

// NewSealer returns a Sealer for the given subkeys.
func NewSealer(k keys.Subkeys) *Sealer { panic("TODO") }

// SealAttrs encodes and seals a for node id.
func (s *Sealer) SealAttrs(id uint64, a *Attrs) []byte { panic("TODO") }

// OpenAttrs authenticates and decodes sealed attributes of node id.
func (s *Sealer) OpenAttrs(id uint64, sealed []byte) (*Attrs, error) { panic("TODO") }

// NameMAC returns the hex keyed MAC of name under parent (64 lower-case hex chars).
func (s *Sealer) NameMAC(parent uint64, name []byte) string { panic("TODO") }

// SealName seals an entry name under parent.
func (s *Sealer) SealName(parent uint64, name []byte) []byte { panic("TODO") }

// OpenName opens a sealed entry name under parent and checks it against nameMAC.
func (s *Sealer) OpenName(parent uint64, nameMAC string, sealed []byte) ([]byte, error) {
	panic("TODO")
}
