package link

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"kumo/internal/chunk"
)

// Manifest kinds and entry types.
const (
	KindFile = "file"
	KindDir  = "dir"

	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"

	// ChunkSize is the plaintext size of a full chunk (chunk.Size).
	ChunkSize = 4 << 20

	// ManifestVersion is the manifest's "v": 2, chunks with the hash of
	// their sealed bytes.
	ManifestVersion = 2

	maxPath    = 4096 // bytes of an entry path
	maxName    = 255  // bytes of one path element
	maxTarget  = 4096 // bytes of a symlink target
	maxEntries = 1 << 20
)

// Manifest is what a link shows, version 2: a file, or a folder's tree.
type Manifest struct {
	V       int       `json:"v"`
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Entries []Entry   `json:"entries"`
}

// Entry is one file, directory or symlink. Path is slash-separated and
// relative to the link root ("" for a file link's single entry).
type Entry struct {
	Path   string    `json:"path"`
	Type   string    `json:"type"`
	Mode   uint32    `json:"mode"` // permission bits (07777 at most)
	Mtime  time.Time `json:"mtime"`
	Size   int64     `json:"size"`
	Target string    `json:"target,omitempty"`
	Chunks []Chunk   `json:"chunks,omitempty"`
}

// Chunk is one chunk of a file: its id ("" for a hole), its content key
// (64 hex; "" for a hole), the SHA-256 of its sealed bytes as the server
// stores them (64 hex, ChunkSum; "" for a hole) and its plaintext length.
//
// The sum is what lets a reader, who has the content key but not the
// account's ChunkID key, check a whole chunk: every holder of the link knows
// the content key and could seal other bytes under it, but not bytes with
// this hash. Sealing is deterministic (docs/FORMAT.md, section 4), so a
// chunk id has one sealed form and the sum never changes for it.
type Chunk struct {
	ID  string `json:"id"`
	Key string `json:"key"`
	Sum string `json:"sum"`
	N   int    `json:"n"`
}

// ErrChunk: a chunk's sealed bytes do not match the link (its hash, its
// length, or its AEAD under the content key).
var ErrChunk = errors.New("link: a chunk does not match the link (altered on the server or on the way)")

// ChunkSum is the hash a manifest gives of a chunk's sealed bytes: 64
// lower-case hex digits of their SHA-256.
func ChunkSum(sealed []byte) string {
	h := sha256.Sum256(sealed)
	return hex.EncodeToString(h[:])
}

// Open checks a whole sealed chunk against c (its length, then its hash)
// and only then opens it under c's content key into dst (which may be
// sealed[:0]); the plaintext has c.N bytes. Any mismatch is ErrChunk, and
// none of the bytes is returned.
func (c Chunk) Open(dst, sealed []byte) ([]byte, error) {
	if c.IsHole() {
		return nil, fmt.Errorf("link: a hole has no sealed bytes")
	}
	if want := chunk.SealedSize(c.N); len(sealed) != want {
		return nil, fmt.Errorf("%w: chunk %.16s… has %d sealed bytes, the link says %d", ErrChunk, c.ID, len(sealed), want)
	}
	var want, key [32]byte
	if _, err := hex.Decode(want[:], []byte(c.Sum)); err != nil {
		return nil, fmt.Errorf("%w: chunk %.16s…: bad hash in the link: %v", ErrManifest, c.ID, err)
	}
	if _, err := hex.Decode(key[:], []byte(c.Key)); err != nil {
		return nil, fmt.Errorf("%w: chunk %.16s…: bad key in the link: %v", ErrManifest, c.ID, err)
	}
	if got := sha256.Sum256(sealed); got != want {
		return nil, fmt.Errorf("%w: chunk %.16s…: its hash is not the link's", ErrChunk, c.ID)
	}
	plain, err := chunk.OpenWithKey(dst, key, sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk %.16s…: %v", ErrChunk, c.ID, err)
	}
	if len(plain) != c.N {
		return nil, fmt.Errorf("%w: chunk %.16s… opened to %d bytes, the link says %d", ErrChunk, c.ID, len(plain), c.N)
	}
	return plain, nil
}

// IsHole reports whether c stands for N bytes of zeros.
func (c Chunk) IsHole() bool { return c.ID == "" }

// EncodeManifest validates m and encodes it as JSON.
func EncodeManifest(m *Manifest) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("link: encode manifest: %w", err)
	}
	return b, nil
}

// DecodeManifest decodes a manifest strictly (unknown fields, trailing data
// and wrong types are refused) and validates it.
func DecodeManifest(b []byte) (*Manifest, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrManifest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data", ErrManifest)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrManifest, fmt.Sprintf(format, a...))
}

// Validate checks every rule of the format: version, kind, a clean name;
// clean, unique paths with directories before their children; types, modes
// and targets; chunks that tile the file exactly (every chunk full but the
// last, holes with no key, sizes adding up).
func (m *Manifest) Validate() error {
	if m.V != ManifestVersion {
		return fmt.Errorf("%w: version %d (this kumo reads version %d; upgrade kumo)", ErrManifest, m.V, ManifestVersion)
	}
	if err := validName(m.Name); err != nil {
		return bad("name %q: %v", m.Name, err)
	}
	if m.Created.IsZero() {
		return bad("no creation time")
	}
	if len(m.Entries) > maxEntries {
		return bad("%d entries, at most %d", len(m.Entries), maxEntries)
	}
	switch m.Kind {
	case KindFile:
		if len(m.Entries) != 1 {
			return bad("a file link has %d entries, want 1", len(m.Entries))
		}
		e := &m.Entries[0]
		if e.Path != "" || e.Type != TypeFile {
			return bad("a file link's entry must have path \"\" and type file")
		}
		if err := e.validate(); err != nil {
			return err
		}
		return sameChunks(m.Entries)
	case KindDir:
	default:
		return bad("kind %q", m.Kind)
	}
	dirs := make(map[string]bool)
	seen := make(map[string]bool, len(m.Entries))
	for i := range m.Entries {
		e := &m.Entries[i]
		if err := validPath(e.Path); err != nil {
			return bad("entry %d path %q: %v", i, e.Path, err)
		}
		if seen[e.Path] {
			return bad("path %q twice", e.Path)
		}
		seen[e.Path] = true
		if dir, _, ok := cutLast(e.Path, "/"); ok && !dirs[dir] {
			return bad("%q comes before its directory %q (or the directory is missing)", e.Path, dir)
		}
		if err := e.validate(); err != nil {
			return err
		}
		if e.Type == TypeDir {
			dirs[e.Path] = true
		}
	}
	return sameChunks(m.Entries)
}

// sameChunks checks that a chunk id named more than once has the same key,
// sum and length each time (all three follow from the id), so that a reader
// fetches and checks it once for all its places.
func sameChunks(es []Entry) error {
	first := map[string]Chunk{}
	for _, e := range es {
		for _, c := range e.Chunks {
			if c.IsHole() {
				continue
			}
			if f, ok := first[c.ID]; !ok {
				first[c.ID] = c
			} else if f != c {
				return bad("%q: chunk %s named twice with another key, sum or length", e.Path, c.ID)
			}
		}
	}
	return nil
}

func (e *Entry) validate() error {
	if e.Mode&^0o7777 != 0 {
		return bad("%q: mode %o has more than permission bits", e.Path, e.Mode)
	}
	if e.Size < 0 {
		return bad("%q: negative size", e.Path)
	}
	switch e.Type {
	case TypeFile:
		if e.Target != "" {
			return bad("%q: a file with a target", e.Path)
		}
	case TypeDir, TypeSymlink:
		if len(e.Chunks) != 0 || e.Size != 0 {
			return bad("%q: a %s with chunks or a size", e.Path, e.Type)
		}
		if e.Type == TypeDir && e.Target != "" {
			return bad("%q: a directory with a target", e.Path)
		}
		if e.Type == TypeSymlink && (e.Target == "" || len(e.Target) > maxTarget || strings.ContainsRune(e.Target, 0)) {
			return bad("%q: symlink target empty, longer than %d bytes or with NUL", e.Path, maxTarget)
		}
		return nil
	default:
		return bad("%q: type %q", e.Path, e.Type)
	}
	if want := (e.Size + ChunkSize - 1) / ChunkSize; int64(len(e.Chunks)) != want {
		return bad("%q: %d chunks for %d bytes, want %d", e.Path, len(e.Chunks), e.Size, want)
	}
	var sum int64
	for i, c := range e.Chunks {
		if c.N < 1 || c.N > ChunkSize {
			return bad("%q chunk %d: length %d not in 1..%d", e.Path, i, c.N, ChunkSize)
		}
		if i != len(e.Chunks)-1 && c.N != ChunkSize {
			return bad("%q chunk %d: %d bytes, but only the last chunk may be short", e.Path, i, c.N)
		}
		if c.ID == "" {
			if c.Key != "" || c.Sum != "" {
				return bad("%q chunk %d: a hole with a key or a sum", e.Path, i)
			}
		} else if !isHex64(c.ID) || !isHex64(c.Key) || !isHex64(c.Sum) {
			return bad("%q chunk %d: id, key and sum must be 64 lower-case hex digits", e.Path, i)
		}
		sum += int64(c.N)
	}
	if sum != e.Size {
		return bad("%q: chunks hold %d bytes, size is %d", e.Path, sum, e.Size)
	}
	return nil
}

// validName is one path element: not empty, ".", "..", no "/" or NUL.
func validName(n string) error {
	switch {
	case n == "" || n == "." || n == "..":
		return errors.New(`empty, "." or ".."`)
	case len(n) > maxName:
		return fmt.Errorf("longer than %d bytes", maxName)
	case strings.ContainsAny(n, "/\x00"):
		return errors.New("contains / or NUL")
	}
	return nil
}

// validPath is a clean relative path of valid names.
func validPath(p string) error {
	if len(p) > maxPath {
		return fmt.Errorf("longer than %d bytes", maxPath)
	}
	for _, n := range strings.Split(p, "/") {
		if err := validName(n); err != nil {
			return err
		}
	}
	return nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ChunkIDs returns the distinct chunk ids m names (holes left out), in
// order of first appearance: what the server pins for the link.
func (m *Manifest) ChunkIDs() []string {
	seen := map[string]bool{}
	var ids []string
	for _, e := range m.Entries {
		for _, c := range e.Chunks {
			if c.ID != "" && !seen[c.ID] {
				seen[c.ID] = true
				ids = append(ids, c.ID)
			}
		}
	}
	return ids
}
