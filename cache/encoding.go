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
// types, chunk ids). Journal values: see encodeJournal.

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

// Journal records (api.BatchOp) are binary since 2026-12: JSON cost a
// quarter of the pusher's CPU while it drained a big queue. Layout:
//
//	0x01 str(op) uvarint(id) uvarint(present: 1 create, 2 update, 4 rename, 8 link, 16 unlink)
//	then each present request in that order, its fields in declaration order:
//	uint64 as uvarint, string as str, bool as one byte 0/1, []byte as opt,
//	[]string as uvarint(0) for nil or uvarint(n+1) then n × str.
//
// str(s) = uvarint(len) || s; opt(b) = uvarint(0) for nil, else uvarint(len+1) || b,
// so nil and empty survive (JSON sends them as null and "", and a
// reflection test holds decode(encode(op)) to be op exactly). Records written
// before that are JSON, which always begins with '{'; they still decode, so a
// queue from an older version is pushed after an upgrade.
const journalV1 = 1

// Presence bits of the request pointers in a binary journal record.
const (
	jCreate = 1 << iota
	jUpdate
	jRename
	jLink
	jUnlink
	jAll = jCreate | jUpdate | jRename | jLink | jUnlink
)

func encodeJournal(op api.BatchOp) []byte {
	b := make([]byte, 0, journalSize(op))
	b = append(b, journalV1)
	b = putStr(b, op.Op)
	b = binary.AppendUvarint(b, op.ID)
	var present uint64
	if op.Create != nil {
		present |= jCreate
	}
	if op.Update != nil {
		present |= jUpdate
	}
	if op.Rename != nil {
		present |= jRename
	}
	if op.Link != nil {
		present |= jLink
	}
	if op.Unlink != nil {
		present |= jUnlink
	}
	b = binary.AppendUvarint(b, present)
	if c := op.Create; c != nil {
		b = binary.AppendUvarint(b, c.Parent)
		b = putStr(b, c.NameMAC)
		b = putOpt(b, c.Name)
		b = binary.AppendUvarint(b, c.ID)
		b = putStr(b, c.Type)
		b = putOpt(b, c.Attrs)
		b = putStrs(b, c.Chunks)
	}
	if u := op.Update; u != nil {
		b = binary.AppendUvarint(b, u.Version)
		b = putOpt(b, u.Attrs)
		b = putStrs(b, u.Chunks)
	}
	if r := op.Rename; r != nil {
		b = binary.AppendUvarint(b, r.SrcParent)
		b = putStr(b, r.SrcNameMAC)
		b = binary.AppendUvarint(b, r.DstParent)
		b = putStr(b, r.DstNameMAC)
		b = putOpt(b, r.Name)
		b = putOpt(b, r.SrcName)
		b = putStr(b, r.Mode)
		b = binary.AppendUvarint(b, r.Node)
		b = binary.AppendUvarint(b, r.DstNode)
	}
	if l := op.Link; l != nil {
		b = binary.AppendUvarint(b, l.ID)
		b = binary.AppendUvarint(b, l.Parent)
		b = putStr(b, l.NameMAC)
		b = putOpt(b, l.Name)
	}
	if u := op.Unlink; u != nil {
		b = binary.AppendUvarint(b, u.Parent)
		b = putStr(b, u.NameMAC)
		b = putBool(b, u.Dir)
		b = binary.AppendUvarint(b, u.Node)
	}
	return b
}

// journalSize is encodeJournal's length, so it allocates once and exactly
// (uvarintLen is redo.go's).
func journalSize(op api.BatchOp) int {
	n := 1 + strLen(op.Op) + uvarintLen(op.ID) + 1 // present < 128
	if c := op.Create; c != nil {
		n += uvarintLen(c.Parent) + strLen(c.NameMAC) + optLen(c.Name) + uvarintLen(c.ID) +
			strLen(c.Type) + optLen(c.Attrs) + strsLen(c.Chunks)
	}
	if u := op.Update; u != nil {
		n += uvarintLen(u.Version) + optLen(u.Attrs) + strsLen(u.Chunks)
	}
	if r := op.Rename; r != nil {
		n += uvarintLen(r.SrcParent) + strLen(r.SrcNameMAC) + uvarintLen(r.DstParent) + strLen(r.DstNameMAC) +
			optLen(r.Name) + optLen(r.SrcName) + strLen(r.Mode) + uvarintLen(r.Node) + uvarintLen(r.DstNode)
	}
	if l := op.Link; l != nil {
		n += uvarintLen(l.ID) + uvarintLen(l.Parent) + strLen(l.NameMAC) + optLen(l.Name)
	}
	if u := op.Unlink; u != nil {
		n += uvarintLen(u.Parent) + strLen(u.NameMAC) + 1 + uvarintLen(u.Node)
	}
	return n
}

func strLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

func optLen(p []byte) int {
	if p == nil {
		return 1
	}
	return uvarintLen(uint64(len(p))+1) + len(p)
}

func strsLen(ss []string) int {
	if ss == nil {
		return 1
	}
	n := uvarintLen(uint64(len(ss)) + 1)
	for _, s := range ss {
		n += strLen(s)
	}
	return n
}

func putStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func putOpt(b, p []byte) []byte {
	if p == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(p))+1)
	return append(b, p...)
}

func putStrs(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(ss))+1)
	for _, s := range ss {
		b = putStr(b, s)
	}
	return b
}

func putBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// decodeJournal parses a journal record: encodeJournal's output, or the JSON
// an older version wrote. Anything else is ErrCorrupt.
func decodeJournal(b []byte) (api.BatchOp, error) {
	if len(b) > 0 && b[0] == '{' {
		var op api.BatchOp
		if err := json.Unmarshal(b, &op); err != nil {
			return api.BatchOp{}, fmt.Errorf("decode journal op (JSON): %v: %w", err, ErrCorrupt)
		}
		return op, nil
	}
	op, err := decodeJournalV1(b)
	if err != nil {
		return api.BatchOp{}, fmt.Errorf("decode journal op: %w", err)
	}
	return op, nil
}

func decodeJournalV1(b []byte) (api.BatchOp, error) {
	if len(b) == 0 || b[0] != journalV1 {
		if len(b) == 0 {
			return api.BatchOp{}, fmt.Errorf("empty record: %w", ErrCorrupt)
		}
		return api.BatchOp{}, fmt.Errorf("unknown record version %#x: %w", b[0], ErrCorrupt)
	}
	r := jreader{reader{b: b[1:]}}
	var op api.BatchOp
	op.Op = r.known()
	op.ID = r.uint()
	present := r.uint()
	// Go evaluates the calls in a composite literal left to right, so each
	// request's fields are read in declaration order, as encodeJournal wrote them.
	if r.err == nil && present&^jAll != 0 {
		r.err = fmt.Errorf("unknown request bits %#x: %w", present, ErrCorrupt)
	}
	if present&jCreate != 0 {
		op.Create = &api.CreateRequest{Parent: r.uint(), NameMAC: r.str(), Name: r.opt(), ID: r.uint(), Type: r.known(), Attrs: r.opt(), Chunks: r.strs()}
	}
	if present&jUpdate != 0 {
		op.Update = &api.UpdateRequest{Version: r.uint(), Attrs: r.opt(), Chunks: r.strs()}
	}
	if present&jRename != 0 {
		op.Rename = &api.RenameRequest{SrcParent: r.uint(), SrcNameMAC: r.str(), DstParent: r.uint(), DstNameMAC: r.str(),
			Name: r.opt(), SrcName: r.opt(), Mode: r.str(), Node: r.uint(), DstNode: r.uint()}
	}
	if present&jLink != 0 {
		op.Link = &api.LinkRequest{ID: r.uint(), Parent: r.uint(), NameMAC: r.str(), Name: r.opt()}
	}
	if present&jUnlink != 0 {
		op.Unlink = &api.UnlinkRequest{Parent: r.uint(), NameMAC: r.str(), Dir: r.bool(), Node: r.uint()}
	}
	if err := r.end(); err != nil {
		return api.BatchOp{}, err
	}
	return op, nil
}

// jreader reads a binary journal record strictly: a value has one encoding
// only (minimal varints, bools 0 or 1), so what decodes re-encodes to the
// same bytes.
type jreader struct{ reader }

// uint is reader.uvarint refusing a padded (non-minimal) encoding.
func (r *jreader) uint() uint64 {
	at := r.b
	v := r.uvarint()
	if n := len(at) - len(r.b); r.err == nil && n > 1 && at[n-1] == 0 {
		r.err = fmt.Errorf("non-minimal varint: %w", ErrCorrupt)
		return 0
	}
	return v
}

// take returns the next n bytes (not copied), checking n against the record.
func (r *jreader) take(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) || n > maxRecBytes {
		r.err = fmt.Errorf("length %d beyond record: %w", n, ErrCorrupt)
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *jreader) str() string { return string(r.take(r.uint())) }

// known is str without an allocation for the op and node type names, which
// are in almost every record.
func (r *jreader) known() string {
	p := r.take(r.uint())
	switch string(p) {
	case api.OpCreate:
		return api.OpCreate
	case api.OpUpdate:
		return api.OpUpdate
	case api.OpRename:
		return api.OpRename
	case api.OpLink:
		return api.OpLink
	case api.OpUnlink:
		return api.OpUnlink
	case api.TypeFile:
		return api.TypeFile
	case api.TypeDir:
		return api.TypeDir
	}
	return string(p)
}

func (r *jreader) opt() []byte {
	n := r.uint()
	if r.err != nil || n == 0 {
		return nil
	}
	p := r.take(n - 1)
	if r.err != nil {
		return nil
	}
	return append(make([]byte, 0, len(p)), p...)
}

func (r *jreader) strs() []string {
	n := r.uint()
	if r.err != nil || n == 0 {
		return nil
	}
	n--
	// each string takes at least its length byte
	if n > maxRecChunks || n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%d strings: %w", n, ErrCorrupt)
		return nil
	}
	ss := make([]string, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		ss = append(ss, r.str())
	}
	return ss
}

func (r *jreader) bool() bool {
	if r.err != nil {
		return false
	}
	if len(r.b) == 0 {
		r.err = fmt.Errorf("truncated bool: %w", ErrCorrupt)
		return false
	}
	c := r.b[0]
	if c > 1 {
		r.err = fmt.Errorf("bool byte %#x: %w", c, ErrCorrupt)
		return false
	}
	r.b = r.b[1:]
	return c == 1
}
