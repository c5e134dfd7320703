package cache

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"kumo/internal/chunk"
)

// Slots. Both segment files and chunk cache files hold segment i at offset
// i*slotStride; the stride is page-aligned so a slot write never shares a page
// with its neighbours (no read-modify-write of a neighbour's page, and a
// never-written slot is a hole).
const (
	slotStride = 17 * 4096 // 69632 >= segHeader + chunk.SegmentSize + tag

	segNonce  = 12 // AES-GCM nonce
	segTag    = 16
	segHeader = 4 + segNonce // be32(plainLen+1), nonce

	// maxSegIndex keeps i*slotStride far from int64 overflow (64 PiB of offsets).
	maxSegIndex = 1 << 40
)

// SegmentFile is an encrypted, sparse file of fixed 64 KiB plaintext segments
// (chunk.SegmentSize), for a node's written-but-not-uploaded data. Each write
// seals the segment with a fresh nonce; a segment never written reads as absent.
//
// Opening the same (node, gen) again while it is open returns the same
// SegmentFile (one presence bitmap per file); each OpenSegmentFile must be
// matched by exactly one Close or Remove.
type SegmentFile struct {
	store     *Store
	refs      int // guarded by store.segMu
	node, gen uint64
	path      string
	dir       string
	aead      cipher.AEAD
	slots     *sync.Pool

	mu      sync.RWMutex // exclusive for Drop and Close; shared for reads and writes
	f       *os.File
	closed  bool
	dirSync atomic.Bool // the file was created: the first Sync also syncs the directory

	bitsMu sync.Mutex
	bits   []uint64 // presence bitmap
}

func segFileName(node, gen uint64) string { return fmt.Sprintf("%016x-%016x.seg", node, gen) }

func parseSegFileName(name string) (node, gen uint64, ok bool) {
	if len(name) != 16+1+16+4 || name[16] != '-' || name[33:] != ".seg" {
		return 0, 0, false
	}
	var n, g uint64
	if _, err := fmt.Sscanf(name[:16]+" "+name[17:33], "%x %x", &n, &g); err != nil {
		return 0, 0, false
	}
	return n, g, segFileName(n, g) == name
}

// segFileAEAD derives the per-file key: each (node, gen) gets its own AES-256
// key, so random 96-bit nonces stay far below the collision bound per key.
func segFileAEAD(purpose [32]byte, node, gen uint64) (cipher.AEAD, error) {
	info := make([]byte, 0, 32)
	info = append(info, "kumo segment file v1"...)
	info = binary.BigEndian.AppendUint64(info, node)
	info = binary.BigEndian.AppendUint64(info, gen)
	k, err := hkdf.Key(sha256.New, purpose[:], nil, string(info), 32)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// segAD binds a sealed segment to its file and position and length.
func segAD(node, gen uint64, i int64, plainLen int) [28]byte {
	var ad [28]byte
	binary.BigEndian.PutUint64(ad[0:], node)
	binary.BigEndian.PutUint64(ad[8:], gen)
	binary.BigEndian.PutUint64(ad[16:], uint64(i))
	binary.BigEndian.PutUint32(ad[24:], uint32(plainLen))
	return ad
}

// OpenSegmentFile opens or creates the segment file for (node, gen).
func (s *Store) OpenSegmentFile(node, gen uint64) (*SegmentFile, error) {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	if f := s.segOpen[[2]uint64{node, gen}]; f != nil {
		f.refs++
		return f, nil
	}
	dir := filepath.Join(s.dir, dirtyDir)
	path := filepath.Join(dir, segFileName(node, gen))
	aead, err := segFileAEAD(s.segKey, node, gen)
	if err != nil {
		return nil, fmt.Errorf("cache: segment file %s: %w", path, err)
	}
	created := true
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		created = false
		f, err = os.OpenFile(path, os.O_RDWR, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("cache: open segment file: %w", err)
	}
	sf := &SegmentFile{store: s, refs: 1, node: node, gen: gen, path: path, dir: dir, aead: aead, slots: &s.slots, f: f}
	sf.dirSync.Store(created)
	if !created {
		if err := sf.scan(); err != nil {
			f.Close()
			return nil, err
		}
	}
	s.segOpen[[2]uint64{node, gen}] = sf
	return sf, nil
}

// scan builds the presence bitmap from slot headers, skipping holes with SEEK_DATA.
func (f *SegmentFile) scan() error {
	fi, err := f.f.Stat()
	if err != nil {
		return fmt.Errorf("cache: scan %s: %w", f.path, err)
	}
	size := fi.Size()
	fd := int(f.f.Fd())
	var hdr [segHeader]byte
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			d = off // no SEEK_DATA here: read every header
		}
		slot := d / slotStride
		n, err := f.f.ReadAt(hdr[:], slot*slotStride)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("cache: scan %s: %w", f.path, err)
		}
		if n > 0 && !allZero(hdr[:n]) {
			f.setBit(slot)
		}
		off = (slot + 1) * slotStride
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (f *SegmentFile) setBit(i int64) {
	f.bitsMu.Lock()
	w := int(i / 64)
	if w >= len(f.bits) {
		f.bits = append(f.bits, make([]uint64, w+1-len(f.bits))...)
	}
	f.bits[w] |= 1 << (i % 64)
	f.bitsMu.Unlock()
}

func (f *SegmentFile) hasBit(i int64) bool {
	f.bitsMu.Lock()
	defer f.bitsMu.Unlock()
	w := int(i / 64)
	return w < len(f.bits) && f.bits[w]&(1<<(i%64)) != 0
}

func checkIndex(i int64) error {
	if i < 0 || i >= maxSegIndex {
		return fmt.Errorf("cache: segment index %d out of range", i)
	}
	return nil
}

// ReadSegment returns the plaintext of segment i, ok=false if never written.
// A slot that fails authentication gives an error wrapping ErrCorrupt.
func (f *SegmentFile) ReadSegment(i int64) (p []byte, ok bool, err error) {
	return f.AppendSegment(nil, i)
}

// AppendSegment is ReadSegment appending the plaintext to dst, so a caller can
// reuse its buffer (a 64 KiB allocation per read otherwise).
func (f *SegmentFile) AppendSegment(dst []byte, i int64) (p []byte, ok bool, err error) {
	if err := checkIndex(i); err != nil {
		return dst, false, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return dst, false, ErrClosed
	}
	if !f.hasBit(i) {
		return dst, false, nil
	}
	bp := f.slots.Get().(*[]byte)
	defer f.slots.Put(bp)
	buf := (*bp)[:segHeader+chunk.SegmentSize+segTag]
	n, err := f.f.ReadAt(buf, i*slotStride)
	if err != nil && !errors.Is(err, io.EOF) {
		return dst, false, fmt.Errorf("cache: read %s segment %d: %w", f.path, i, err)
	}
	p, ok, err = openSlot(dst, f.aead, f.node, f.gen, i, buf[:n])
	if err != nil {
		return dst, false, fmt.Errorf("cache: read %s segment %d: %w", f.path, i, err)
	}
	return p, ok, nil
}

// openSlot parses and opens the bytes of slot i (possibly short at end of file).
// All-zero header: never written. Anything else must authenticate.
func openSlot(dst []byte, aead cipher.AEAD, node, gen uint64, i int64, slot []byte) ([]byte, bool, error) {
	if len(slot) < segHeader {
		if allZero(slot) {
			return dst, false, nil
		}
		return dst, false, fmt.Errorf("short slot header: %w", ErrCorrupt)
	}
	hdr := slot[:segHeader]
	if allZero(hdr) {
		return dst, false, nil
	}
	lf := binary.BigEndian.Uint32(hdr)
	if lf == 0 || lf-1 > chunk.SegmentSize {
		return dst, false, fmt.Errorf("bad slot length field %d: %w", lf, ErrCorrupt)
	}
	plainLen := int(lf - 1)
	end := segHeader + plainLen + segTag
	if len(slot) < end {
		return dst, false, fmt.Errorf("slot truncated: %w", ErrCorrupt)
	}
	if dst == nil {
		dst = make([]byte, 0, plainLen)
	}
	ad := segAD(node, gen, i, plainLen)
	p, err := aead.Open(dst, hdr[4:], slot[segHeader:end], ad[:])
	if err != nil {
		return dst, false, fmt.Errorf("slot authentication failed: %w", ErrCorrupt)
	}
	return p, true, nil
}

// WriteSegment stores plaintext p (len <= chunk.SegmentSize) as segment i.
// The slot is written with one pwrite.
func (f *SegmentFile) WriteSegment(i int64, p []byte) error {
	if err := checkIndex(i); err != nil {
		return err
	}
	if len(p) > chunk.SegmentSize {
		return fmt.Errorf("cache: write segment %d: %d bytes > segment size", i, len(p))
	}
	bp := f.slots.Get().(*[]byte)
	defer f.slots.Put(bp)
	buf := (*bp)[:segHeader]
	binary.BigEndian.PutUint32(buf, uint32(len(p)+1))
	rand.Read(buf[4:segHeader]) // never fails (crypto/rand, Go >= 1.24)
	ad := segAD(f.node, f.gen, i, len(p))
	buf = f.aead.Seal(buf, buf[4:segHeader], p, ad[:])

	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return ErrClosed
	}
	if _, err := f.f.WriteAt(buf, i*slotStride); err != nil {
		return fmt.Errorf("cache: write %s segment %d: %w", f.path, i, err)
	}
	f.setBit(i)
	return nil
}

// Present lists the indexes of written segments in order.
func (f *SegmentFile) Present() ([]int64, error) {
	f.bitsMu.Lock()
	defer f.bitsMu.Unlock()
	var out []int64
	for w, word := range f.bits {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			out = append(out, int64(w)*64+int64(b))
			word &= word - 1
		}
	}
	return out, nil
}

// Drop forgets segments with index >= from (truncate).
func (f *SegmentFile) Drop(from int64) error {
	if from < 0 {
		from = 0
	}
	if from > maxSegIndex {
		from = maxSegIndex
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	fi, err := f.f.Stat()
	if err != nil {
		return fmt.Errorf("cache: drop %s: %w", f.path, err)
	}
	if fi.Size() > from*slotStride {
		if err := f.f.Truncate(from * slotStride); err != nil {
			return fmt.Errorf("cache: drop %s: %w", f.path, err)
		}
	}
	f.bitsMu.Lock()
	w := int(from / 64)
	if w < len(f.bits) {
		f.bits[w] &= 1<<(from%64) - 1
		clear(f.bits[w+1:])
	}
	f.bitsMu.Unlock()
	return nil
}

// Sync makes all written segments durable (fdatasync; the first Sync of a new
// file also syncs the directory so the file itself survives a power loss).
func (f *SegmentFile) Sync() error {
	f.mu.RLock() // writes may go on meanwhile; they are not part of this Sync
	defer f.mu.RUnlock()
	if f.closed {
		return ErrClosed
	}
	if err := unix.Fdatasync(int(f.f.Fd())); err != nil {
		return fmt.Errorf("cache: fdatasync %s: %w", f.path, err)
	}
	if f.dirSync.Load() {
		if err := syncDir(f.dir); err != nil {
			return fmt.Errorf("cache: sync segment file: %w", err)
		}
		f.dirSync.Store(false)
	}
	return nil
}

// Close releases this reference; the file is closed with the last one.
func (f *SegmentFile) Close() error {
	st := f.store
	st.segMu.Lock()
	if f.refs <= 0 {
		st.segMu.Unlock()
		return nil
	}
	f.refs--
	last := f.refs == 0
	if last {
		k := [2]uint64{f.node, f.gen}
		if st.segOpen[k] == f {
			delete(st.segOpen, k)
		}
	}
	st.segMu.Unlock()
	if !last {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if err := f.f.Close(); err != nil {
		return fmt.Errorf("cache: close %s: %w", f.path, err)
	}
	return nil
}

// Remove deletes the file and releases this reference. Other references keep
// working on the unlinked file until closed, like POSIX; a later
// OpenSegmentFile of the same (node, gen) starts a new, empty file. The
// deletion is durable after Store.Sync.
func (f *SegmentFile) Remove() error {
	st := f.store
	st.segMu.Lock()
	k := [2]uint64{f.node, f.gen}
	var err error
	if st.segOpen[k] == f {
		delete(st.segOpen, k)
		if err = os.Remove(f.path); errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	st.segMu.Unlock()
	if err != nil {
		return fmt.Errorf("cache: remove segment file: %w", err)
	}
	return f.Close()
}

// SegmentFiles lists existing (node, gen) pairs, for resuming after a crash.
func (s *Store) SegmentFiles() ([][2]uint64, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, dirtyDir))
	if err != nil {
		return nil, fmt.Errorf("cache: list segment files: %w", err)
	}
	var out [][2]uint64
	for _, e := range ents {
		if n, g, ok := parseSegFileName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, [2]uint64{n, g})
		}
	}
	return out, nil
}
