package server

// The binary encoding of kept versions. History writes one of these for
// every replaced or deleted record, in the change's own transaction, so its
// size is what history costs a write: raw attributes and chunk ids instead
// of JSON's base64 and hex take about half the bytes.
//
//	histNode:  0x01 | u64 id | type (0 file, 1 dir) | uv version | uv nlink | uv parent |
//	           uv len | attrs | uv n | n × 32-byte chunk id | uv seq | v since | v until |
//	           0x00, or 0x01 | uv parent | 32-byte name MAC | uv len | sealed name  (trash),
//	           or 0x02 | uv parent | 32-byte name MAC  (trash whose name is the entry
//	           version (parent, MAC) kept at the same until: not stored twice)
//	histEntry: 0x01 | uv id | uv len | sealed name | v since | v until
//	expiry index (hx/): the versions one change ended, back to back:
//	           'n' | u64be node id  (a node version),  't' | u64be node id  (a deleted
//	           node's last version: the trash),  'e' | u64be parent | 32-byte name MAC
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
	flag := byte(1)
	if h.Trash.NameInEntry {
		flag = 2
	}
	b = append(b, flag)
	b = binary.AppendUvarint(b, h.Trash.Parent)
	b = append(b, rawMAC(h.Trash.NameMAC)...)
	if h.Trash.NameInEntry {
		return b
	}
	return appendBytes(b, h.Trash.Name)
}

// rawMAC is a name MAC's 32 bytes (hex on the API, validated on the way in).
func rawMAC(mac string) []byte {
	raw, err := hex.DecodeString(mac)
	if err != nil || len(raw) != 32 {
		return make([]byte, 32) // never: name MACs are validated on the way in
	}
	return raw
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
	if t := r.take(1); !r.bad && t[0] != 0 {
		if t[0] > 2 {
			return fmt.Errorf("%w: trash flag %d", errHistRecord, t[0])
		}
		h.Trash = &trashRec{Parent: r.uvarint()}
		h.Trash.NameMAC = hex.EncodeToString(r.take(32))
		if t[0] == 1 {
			h.Trash.Name = r.bytes()
		} else {
			h.Trash.NameInEntry = true
		}
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

// histRef names one version in the expiry index.
type histRef struct {
	kind byte   // refNode, refTrash or refEntry
	id   uint64 // the node, or the entry's parent
	mac  string // the entry's name MAC (hex)
}

const (
	refNode  = 'n'
	refTrash = 't'
	refEntry = 'e'
)

func appendRef(b []byte, r histRef) []byte {
	b = append(b, r.kind)
	b = binary.BigEndian.AppendUint64(b, r.id)
	if r.kind == refEntry {
		b = append(b, rawMAC(r.mac)...)
	}
	return b
}

// parseRefs decodes an expiry index value.
func parseRefs(b []byte) ([]histRef, error) {
	var out []histRef
	for len(b) > 0 {
		n := 9
		if b[0] == refEntry {
			n += 32
		} else if b[0] != refNode && b[0] != refTrash {
			return nil, fmt.Errorf("%w: index ref kind %q", errHistRecord, b[0])
		}
		if len(b) < n {
			return nil, fmt.Errorf("%w: short index ref", errHistRecord)
		}
		r := histRef{kind: b[0], id: binary.BigEndian.Uint64(b[1:9])}
		if r.kind == refEntry {
			r.mac = hex.EncodeToString(b[9:41])
		}
		out = append(out, r)
		b = b[n:]
	}
	return out, nil
}
