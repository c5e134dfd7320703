package server

// The binary encoding of kept versions. History writes one of these for
// every replaced or deleted record, in the change's own transaction, so its
// size is what history costs a write: raw attributes and chunk ids instead
// of JSON's base64 and hex take about half the bytes.
//
//	histNode:  0x01 | u64 id | type (0 file, 1 dir) | uv version | uv nlink | uv parent |
//	           uv len | attrs | uv n | n × 32-byte chunk id | uv seq | v since | v until |
//	           0x00, or 0x01 | uv parent | 32-byte name MAC | uv len | sealed name  (trash)
//	histEntry: 0x01 | uv id | uv len | sealed name | v since | v until
//
// (u64: 8 bytes little-endian; uv/v: unsigned/signed varint.)

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

const histCodecV1 = 0x01

var errHistRecord = errors.New("malformed kept version")

func appendBytes(b, p []byte) []byte { return append(binary.AppendUvarint(b, uint64(len(p))), p...) }

func (h histNode) encode() []byte {
	n := &h.Node
	b := make([]byte, 0, 64+len(n.Attrs)+32*len(n.Chunks))
	b = append(b, histCodecV1)
	b = binary.LittleEndian.AppendUint64(b, n.ID)
	typ := byte(0)
	if n.Type == api.TypeDir {
		typ = 1
	}
	b = append(b, typ)
	b = binary.AppendUvarint(b, n.Version)
	b = binary.AppendUvarint(b, uint64(n.Nlink))
	b = binary.AppendUvarint(b, n.Parent)
	b = appendBytes(b, n.Attrs)
	b = binary.AppendUvarint(b, uint64(len(n.Chunks)))
	for _, c := range n.Chunks {
		raw, err := hex.DecodeString(c)
		if err != nil || len(raw) != 32 {
			raw = make([]byte, 32) // never: chunk ids are validated on the way in
		}
		b = append(b, raw...)
	}
	b = binary.AppendUvarint(b, n.Seq)
	b = binary.AppendVarint(b, n.Since)
	b = binary.AppendVarint(b, h.Until)
	if h.Trash == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, h.Trash.Parent)
	mac, _ := hex.DecodeString(h.Trash.NameMAC)
	if len(mac) != 32 {
		mac = make([]byte, 32)
	}
	b = append(b, mac...)
	return appendBytes(b, h.Trash.Name)
}

// reader reads the fields of an encoded record; the first failure sticks.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) take(n uint64) []byte {
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) bytes() []byte { return append([]byte(nil), r.take(r.uvarint())...) }

func (h *histNode) decode(b []byte) error {
	r := &reader{b: b}
	if v := r.take(1); r.bad || v[0] != histCodecV1 {
		return fmt.Errorf("%w: version", errHistRecord)
	}
	*h = histNode{}
	n := &h.Node
	if id := r.take(8); !r.bad {
		n.ID = binary.LittleEndian.Uint64(id)
	}
	if t := r.take(1); !r.bad {
		n.Type = api.TypeFile
		if t[0] == 1 {
			n.Type = api.TypeDir
		}
	}
	n.Version = r.uvarint()
	n.Nlink = uint32(r.uvarint())
	n.Parent = r.uvarint()
	n.Attrs = r.bytes()
	count := r.uvarint()
	if count > uint64(len(r.b))/32 {
		return fmt.Errorf("%w: %d chunks", errHistRecord, count)
	}
	for range count {
		n.Chunks = append(n.Chunks, hex.EncodeToString(r.take(32)))
	}
	n.Seq = r.uvarint()
	n.Since = r.varint()
	h.Until = r.varint()
	if t := r.take(1); !r.bad && t[0] == 1 {
		h.Trash = &trashRec{Parent: r.uvarint()}
		h.Trash.NameMAC = hex.EncodeToString(r.take(32))
		h.Trash.Name = r.bytes()
	}
	if r.bad || len(r.b) != 0 {
		return errHistRecord
	}
	return nil
}

func (h histEntry) encode() []byte {
	b := make([]byte, 0, 32+len(h.Entry.Name))
	b = append(b, histCodecV1)
	b = binary.AppendUvarint(b, h.Entry.ID)
	b = appendBytes(b, h.Entry.Name)
	b = binary.AppendVarint(b, h.Entry.Since)
	return binary.AppendVarint(b, h.Until)
}

func (h *histEntry) decode(b []byte) error {
	r := &reader{b: b}
	if v := r.take(1); r.bad || v[0] != histCodecV1 {
		return fmt.Errorf("%w: version", errHistRecord)
	}
	*h = histEntry{}
	h.Entry.ID = r.uvarint()
	h.Entry.Name = r.bytes()
	h.Entry.Since = r.varint()
	h.Until = r.varint()
	if r.bad || len(r.b) != 0 {
		return errHistRecord
	}
	return nil
}

// getRec reads the kept version at key into r.
func getRec(tx *badger.Txn, key []byte, r interface{ decode([]byte) error }) error {
	it, err := tx.Get(key)
	if err != nil {
		return err
	}
	return it.Value(r.decode)
}
