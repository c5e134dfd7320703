// Package cache is the drive's local state in badger: the local copy of the tree
// (as sealed by the client, so nothing on disk is plaintext), the journal of tree
// operations not yet pushed to the cloud, the chunk cache with a size budget, and
// encrypted segment files that hold written data until it is uploaded.
package cache

import (
	"errors"
	"log/slog"

	"kumo/internal/keys"
	"kumo/remote/api"
)

// ErrNotFound is returned when a node or entry is not in the local tree.
var ErrNotFound = errors.New("cache: not found")

// Options configure a Store.
type Options struct {
	Dir    string   // everything lives under Dir
	Key    keys.Key // keys.Subkeys.Cache: seals segment files and anything else at rest
	Budget int64    // bytes the chunk cache may use on disk (0: 4 GiB); dirty data is not counted against eviction
	Logger *slog.Logger
}

// Store is one drive's local state. Safe for concurrent use.
type Store struct{}

// Open opens or creates the store under o.Dir.
func Open(o Options) (*Store, error) { panic("TODO") }

// Close flushes and closes.
func (s *Store) Close() error { panic("TODO") }

// Sync makes everything applied so far durable on local disk (badger and segment files' directory).
func (s *Store) Sync() error { panic("TODO") }

// --- the local tree ---

// Entry is a directory entry of the local tree.
type Entry struct {
	Parent  uint64
	NameMAC string
	Name    []byte // sealed
	Child   uint64
}

// GetNode returns a node of the local tree, or ErrNotFound.
func (s *Store) GetNode(id uint64) (api.Node, error) { panic("TODO") }

// Lookup returns the entry (parent, nameMAC), or ErrNotFound.
func (s *Store) Lookup(parent uint64, nameMAC string) (Entry, error) { panic("TODO") }

// List returns the entries of a directory in nameMAC order.
func (s *Store) List(parent uint64) ([]Entry, error) { panic("TODO") }

// JournalOp is a tree operation waiting to be pushed to the cloud, in order.
type JournalOp struct {
	Seq uint64 // local journal position, increasing
	Op  api.BatchOp
}

// Mutation is applied atomically (one badger transaction) by Apply.
type Mutation struct {
	PutNodes      []api.Node
	DeleteNodes   []uint64
	PutEntries    []Entry
	DeleteEntries []Entry       // only Parent and NameMAC are used
	Journal       []api.BatchOp // appended to the push journal
	Cursor        *uint64       // new change-feed cursor, if set
}

// Apply applies m in one transaction.
func (s *Store) Apply(m Mutation) error { panic("TODO") }

// Cursor returns the change-feed sequence number the local tree reflects.
func (s *Store) Cursor() (uint64, error) { panic("TODO") }

// Pending returns up to max journal ops in order.
func (s *Store) Pending(max int) ([]JournalOp, error) { panic("TODO") }

// PendingCount returns how many journal ops wait.
func (s *Store) PendingCount() (int, error) { panic("TODO") }

// Ack removes journal ops with Seq <= upto.
func (s *Store) Ack(upto uint64) error { panic("TODO") }

// Reset drops the whole local tree (not the journal or segment files), for a relist.
func (s *Store) Reset() error { panic("TODO") }

// --- the chunk cache ---

// GetSegment returns the cached sealed bytes of segment seg of chunk id.
func (s *Store) GetSegment(id string, seg int) ([]byte, bool) { panic("TODO") }

// PutSegments caches consecutive sealed segments of chunk id starting at first.
// Least recently used segments are evicted to keep the cache within budget.
func (s *Store) PutSegments(id string, first int, sealed [][]byte) error { panic("TODO") }

// CacheStats reports the chunk cache's use.
type CacheStats struct {
	Bytes, Budget int64
	Hits, Misses  uint64
}

func (s *Store) Stats() CacheStats { panic("TODO") }

// --- segment files: written data waiting for upload ---

// SegmentFile is an encrypted, sparse file of fixed 64 KiB plaintext segments
// (chunk.SegmentSize), for a node's written-but-not-uploaded data. Each write
// seals the segment with a fresh nonce; a segment never written reads as absent.
type SegmentFile struct{}

// OpenSegmentFile opens or creates the segment file for (node, gen).
func (s *Store) OpenSegmentFile(node, gen uint64) (*SegmentFile, error) { panic("TODO") }

// SegmentFiles lists existing (node, gen) pairs, for resuming after a crash.
func (s *Store) SegmentFiles() ([][2]uint64, error) { panic("TODO") }

// ReadSegment returns the plaintext of segment i, ok=false if never written.
func (f *SegmentFile) ReadSegment(i int64) (p []byte, ok bool, err error) { panic("TODO") }

// WriteSegment stores plaintext p (len <= chunk.SegmentSize) as segment i.
func (f *SegmentFile) WriteSegment(i int64, p []byte) error { panic("TODO") }

// Present lists the indexes of written segments in order.
func (f *SegmentFile) Present() ([]int64, error) { panic("TODO") }

// Drop forgets segments with index >= from (truncate).
func (f *SegmentFile) Drop(from int64) error { panic("TODO") }

// Sync makes all written segments durable (fdatasync).
func (f *SegmentFile) Sync() error { panic("TODO") }

// Close closes the file; Remove closes and deletes it.
func (f *SegmentFile) Close() error  { panic("TODO") }
func (f *SegmentFile) Remove() error { panic("TODO") }
