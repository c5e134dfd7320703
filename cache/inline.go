package cache

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// Inline segments: a small file's written-but-not-uploaded data (segment 0
// of one layer) kept in badger, sealed like a segment file slot, so that
// close of a small file costs one badger sync instead of creating, syncing
// and later deleting a segment file plus its directory entry.
//
//	'i' node(be64) gen(be64) -> sealed slot (header, ciphertext, tag)
const kindInline = 'i'

// InlineMax is the largest plaintext an inline segment holds. The sealed
// record goes to badger's value log (it is above the 1 KiB value threshold):
// written once there, where the LSM would copy it into the memtable, its
// write-ahead log, a level-0 table and every compaction after. The redo log
// makes it durable with the attributes in one flush either way.
const InlineMax = 32<<10 - segHeader - segTag - 64

// aeadCache keeps the keys of recently used inline segments: a small file
// is sealed at its close and opened at its next read and its upload, and
// deriving its key (HKDF, AES key schedule, GCM tables) cost more than
// sealing a few KiB, and a tenth of the allocations of a git commit of a
// source tree. Direct-mapped: a slot holds the last (node, gen) that hashed
// to it. A cipher.AEAD from cipher.NewGCM keeps no state between calls, so
// one serves every goroutine.
type aeadCache struct {
	slots [256]atomic.Pointer[aeadSlot]
}

type aeadSlot struct {
	node, gen uint64
	aead      cipher.AEAD
}

func (c *aeadCache) get(purpose segKey, node, gen uint64) (cipher.AEAD, error) {
	slot := &c.slots[((node^gen*0x9e3779b97f4a7c15)*0x9e3779b97f4a7c15)>>56]
	if e := slot.Load(); e != nil && e.node == node && e.gen == gen {
		return e.aead, nil
	}
	aead, err := segFileAEAD(purpose, node, gen)
	if err != nil {
		return nil, err
	}
	slot.Store(&aeadSlot{node: node, gen: gen, aead: aead})
	return aead, nil
}

// InlineSegment is segment 0 of layer Gen of node Node.
type InlineSegment struct {
	Node, Gen uint64
	Data      []byte // plaintext, at most InlineMax bytes
}

func inlineKey(node, gen uint64) []byte {
	k := make([]byte, 17)
	k[0] = kindInline
	binary.BigEndian.PutUint64(k[1:], node)
	binary.BigEndian.PutUint64(k[9:], gen)
	return k
}

// sealInline seals p as segment 0 of (node, gen) with the segment files' key
// and format.
func (s *Store) sealInline(node, gen uint64, p []byte) ([]byte, error) {
	if len(p) > InlineMax {
		return nil, fmt.Errorf("cache: inline segment of node %d: %d bytes > %d", node, len(p), InlineMax)
	}
	aead, err := s.inline.get(s.segKey, node, gen)
	if err != nil {
		return nil, fmt.Errorf("cache: inline segment: %w", err)
	}
	buf := make([]byte, segHeader, segHeader+len(p)+segTag)
	binary.BigEndian.PutUint32(buf, uint32(len(p)+1))
	rand.Read(buf[4:segHeader]) // never fails (crypto/rand, Go >= 1.24)
	ad := segAD(node, gen, 0, len(p))
	return aead.Seal(buf, buf[4:segHeader], p, ad[:]), nil
}

// GetInline returns the plaintext of the inline segment of (node, gen),
// ok=false if there is none.
func (s *Store) GetInline(node, gen uint64) (p []byte, ok bool, err error) {
	p, ok, err = s.AppendInline(nil, node, gen)
	if ok && p == nil {
		p = []byte{}
	}
	return p, ok, err
}

// AppendInline is GetInline appending the plaintext to dst, so a reader can
// reuse its buffer. The stored value is opened where it lies, not copied.
func (s *Store) AppendInline(dst []byte, node, gen uint64) (p []byte, ok bool, err error) {
	aead, err := s.inline.get(s.segKey, node, gen)
	if err != nil {
		return dst, false, fmt.Errorf("cache: inline segment: %w", err)
	}
	p = dst
	err = s.value(inlineKey(node, gen), func(v []byte) error {
		var e error
		p, _, e = openSlot(dst, aead, node, gen, 0, v)
		return e
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return dst, false, nil
	}
	if err != nil {
		return dst, false, fmt.Errorf("cache: inline %d/%d: %w", node, gen, err)
	}
	return p, true, nil
}

// InlineSegments lists the (node, gen) pairs holding inline segments, for
// resuming uploads after a restart.
func (s *Store) InlineSegments() ([][2]uint64, error) {
	if err := s.behind.drain(); err != nil {
		return nil, fmt.Errorf("cache: list inline segments: %w", err)
	}
	var out [][2]uint64
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte{kindInline}
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 17 {
				return fmt.Errorf("inline key %x: %w", k, ErrCorrupt)
			}
			out = append(out, [2]uint64{binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint64(k[9:])})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache: list inline segments: %w", err)
	}
	return out, nil
}

// SyncTree makes everything applied so far durable on local disk (the
// badger tree, journal and inline segments; not segment files' directory —
// SegmentFile.Sync covers new files, Sync covers removals): one fdatasync of
// the redo log. Concurrent calls share syncs, so N concurrent closes cost
// about two syncs, not N.
func (s *Store) SyncTree() error {
	if err := s.redo.sync.run(); err != nil {
		return fmt.Errorf("cache: sync redo log: %w", err)
	}
	// Durable in the log, but the store cannot go on: say so.
	return s.behind.failed()
}
