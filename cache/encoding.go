package cache

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"kumo/remote/api"
)

// Record encodings in badger. Node and entry values are a version byte followed
// by uvarints and length-prefixed byte strings; all byte strings are already
// sealed by the client (attrs, names) or are what the server sees anyway (ids,
// types, chunk ids). Journal values are the JSON of api.BatchOp, the wire form.

const recV1 = 1

// Decoding limits: far above anything valid, low enough to refuse absurd lengths.
const (
	maxRecBytes  = 64 << 20
	maxRecChunks = 1 << 20
)

func putBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func encodeNode(n api.Node) []byte {
	size := 1 + 6*binary.MaxVarintLen64 + len(n.Type) + len(n.Attrs) + len(n.Chunks)*(api.HexIDLen+2)
	b := make([]byte, 0, size)
	b = append(b, recV1)
	b = binary.AppendUvarint(b, n.ID)
	b = putBytes(b, []byte(n.Type))
	b = binary.AppendUvarint(b, n.Version)
	b = binary.AppendUvarint(b, uint64(n.Nlink))
	b = binary.AppendUvarint(b, n.Parent)
	b = binary.AppendUvarint(b, n.Seq)
	b = putBytes(b, n.Attrs)
	b = binary.AppendUvarint(b, uint64(len(n.Chunks)))
	for _, c := range n.Chunks {
		b = putBytes(b, []byte(c))
	}
	return b
}

// reader parses a record; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("bad varint: %w", ErrCorrupt)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) || n > maxRecBytes {
		r.err = fmt.Errorf("length %d beyond record: %w", n, ErrCorrupt)
		return nil
	}
	if n == 0 {
		return nil
	}
	p := make([]byte, n)
	copy(p, r.b)
	r.b = r.b[n:]
	return p
}

func (r *reader) version() {
	if len(r.b) == 0 || r.b[0] != recV1 {
		r.err = fmt.Errorf("unknown record version: %w", ErrCorrupt)
		return
	}
	r.b = r.b[1:]
}

func (r *reader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes: %w", len(r.b), ErrCorrupt)
	}
	return r.err
}

// decodeNode parses encodeNode's output.
func decodeNode(b []byte) (api.Node, error) {
	r := reader{b: b}
	var n api.Node
	r.version()
	n.ID = r.uvarint()
	n.Type = string(r.bytes())
	n.Version = r.uvarint()
	nlink := r.uvarint()
	if nlink > 1<<32-1 && r.err == nil {
		r.err = fmt.Errorf("nlink %d: %w", nlink, ErrCorrupt)
	}
	n.Nlink = uint32(nlink)
	n.Parent = r.uvarint()
	n.Seq = r.uvarint()
	n.Attrs = r.bytes()
	count := r.uvarint()
	if r.err == nil && (count > maxRecChunks || count > uint64(len(r.b))) {
		r.err = fmt.Errorf("%d chunks: %w", count, ErrCorrupt)
	}
	if r.err == nil && count > 0 {
		n.Chunks = make([]string, 0, count)
		for i := uint64(0); i < count && r.err == nil; i++ {
			n.Chunks = append(n.Chunks, string(r.bytes()))
		}
	}
	if err := r.end(); err != nil {
		return api.Node{}, fmt.Errorf("decode node: %w", err)
	}
	return n, nil
}

func encodeEntry(child uint64, name []byte) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(name))
	b = append(b, recV1)
	b = binary.AppendUvarint(b, child)
	return putBytes(b, name)
}

func decodeEntry(b []byte) (child uint64, name []byte, err error) {
	r := reader{b: b}
	r.version()
	child = r.uvarint()
	name = r.bytes()
	if err := r.end(); err != nil {
		return 0, nil, fmt.Errorf("decode entry: %w", err)
	}
	return child, name, nil
}

func decodeJournal(b []byte) (api.BatchOp, error) {
	var op api.BatchOp
	if err := json.Unmarshal(b, &op); err != nil {
		return api.BatchOp{}, fmt.Errorf("decode journal op: %v: %w", err, ErrCorrupt)
	}
	return op, nil
}
