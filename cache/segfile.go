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
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
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
// Writes are write-behind: WriteSegment copies the plaintext into memory and
// returns; a writer goroutine (one per file, while there is work) seals and
// writes the segments in order, so the FUSE request that brought the data
// is answered while its segments are still being sealed, and sealing
// overlaps with the kernel preparing the next request. At most pendMax
// segments per file wait in memory (WriteSegment blocks beyond that). Reads
// see waiting segments; a rewrite of a waiting segment updates it in place.
// The writer holds back a partial segment while it is the only one waiting:
// small sequential writes (4 KiB write() calls, or 1 MiB ones not aligned to
// segments) complete it in memory, and it is sealed and written once, when
// it is full, when another segment is queued, or at Sync or Close.
// Sync writes what waits, then fdatasyncs: durability is unchanged, only the
// point where the bytes reach the page cache moves. While segments are
// written, the writer also starts the kernel's writeback every
// writebackEvery bytes (sync_file_range) and an fdatasync every syncEvery
// of those, in the background, so the device works during a long write
// instead of all at once at fsync/close. A failed background write
// keeps its segment in memory and makes writes synchronous until a write
// succeeds; Sync reports the failure unless its own retry succeeds, so
// nothing acknowledged by Sync is ever lost.
//
// Opening the same (node, gen) again while it is open returns the same
// SegmentFile (one presence bitmap per file); each OpenSegmentFile must be
// matched by exactly one Close or Remove.
type SegmentFile struct {
	store     *Store
	refs      int  // guarded by store.segMu
	removed   bool // guarded by store.segMu: the path was unlinked by Remove
	node, gen uint64
	path      string
	dir       string
	aead      cipher.AEAD
	slots     *sync.Pool

	mu       sync.RWMutex // exclusive for Drop and Close; shared for reads and writes
	f        *os.File
	closed   bool        // set under both mu and wmu
	dirSync  atomic.Bool // the file was created: the first Sync also syncs the directory
	unsynced atomic.Bool // written since its last fdatasync: in store.unsynced (SyncAll syncs it)

	sinceMu  sync.Mutex
	since    map[int64]bool // slots written (or a truncation, -1) since the last fdatasync: what CrashImage drops
	unlogged map[int64]bool // slots written since the last fdatasync or redo-log record of them (seglog.go)

	// logEpoch is the redo log epoch whose records hold data of this file
	// (0: none; seglog.go). gone: Remove logged the file's end (under mu).
	logEpoch atomic.Uint64
	gone     bool

	bitsMu sync.Mutex
	bits   []uint64 // presence bitmap

	// Write-behind, guarded by wmu (taken before bitsMu, never after mu).
	wmu      sync.Mutex
	wcond    sync.Cond             // on wmu: a segment was written, or the writer stopped
	pend     map[int64]*pendingSeg // newest plaintext per segment not yet in the file
	queue    []*pendingSeg         // waiting to be written, in order
	busy     *pendingSeg           // being sealed and written (its p is read-only meanwhile)
	dirty    int                   // segments queued or busy
	seq      uint64                // last enqueued
	running  bool                  // a writer drains the queue
	failed   bool                  // the writer stopped on an error (the failed segment heads the queue)
	flushing int                   // flush calls waiting: nothing is held back
	wbFrom   int64                 // file range written since the last writeback start
	wbTo     int64
	wbBytes  int64 // bytes written since the last writeback start
	wbCount  int   // writeback starts so far

	// Background fdatasync (startWriteback), serialized with Sync's.
	syncMu  sync.Mutex
	syncErr error       // a background fdatasync failed: every later Sync reports it
	bgSync  atomic.Bool // a background fdatasync runs
}

// pendingSeg is a segment's plaintext held in memory.
type pendingSeg struct {
	i   int64
	bp  *[]byte // pooled buffer (Store.slots) behind p
	p   []byte  // cap chunk.SegmentSize
	seq uint64  // enqueue order
}

const (
	// pendMax is how many segments (64 KiB each) a file holds waiting for
	// its writer: four 1 MiB FUSE writes, enough to keep the writer busy
	// while the kernel brings the next ones.
	pendMax = 64
	// writebackEvery is how many bytes the writer writes before it starts
	// the kernel's writeback of them.
	writebackEvery = 8 << 20
	// syncEvery is how many writeback starts come with a background
	// fdatasync (every 64 MiB).
	syncEvery = 8
)

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

// segKey is the segment files' purpose key, kept as HKDF's pseudorandom key
// (its extract step, done once): each file's key is then one expand, which
// halves a derivation's hashing (inline segments derive one per file read).
type segKey struct{ prk []byte }

func newSegKey(purpose []byte) segKey {
	prk, err := hkdf.Extract(sha256.New, purpose, nil)
	if err != nil {
		panic(err) // HKDF-SHA256's extract takes any key
	}
	return segKey{prk}
}

// segFileAEAD derives the per-file key: each (node, gen) gets its own AES-256
// key, so random 96-bit nonces stay far below the collision bound per key.
// It equals HKDF-SHA256(purpose, info) of FORMAT (TestSegKeyIsHKDF).
func segFileAEAD(purpose segKey, node, gen uint64) (cipher.AEAD, error) {
	info := make([]byte, 0, 32)
	info = append(info, "kumo segment file v1"...)
	info = binary.BigEndian.AppendUint64(info, node)
	info = binary.BigEndian.AppendUint64(info, gen)
	k, err := hkdf.Expand(sha256.New, purpose.prk, string(info), 32)
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
	sf := &SegmentFile{store: s, refs: 1, node: node, gen: gen, path: path, dir: dir, aead: aead, slots: &s.slots, f: f,
		pend: map[int64]*pendingSeg{}}
	sf.wcond.L = &sf.wmu
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
	f.wmu.Lock()
	if f.closed {
		f.wmu.Unlock()
		return dst, false, ErrClosed
	}
	if ps := f.pend[i]; ps != nil {
		if dst == nil {
			dst = make([]byte, 0, len(ps.p))
		}
		dst = append(dst, ps.p...)
		f.wmu.Unlock()
		return dst, true, nil
	}
	f.wmu.Unlock()
	return f.readSlot(dst, i)
}

// readSlot reads and opens segment i from the file.
func (f *SegmentFile) readSlot(dst []byte, i int64) ([]byte, bool, error) {
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
	p, ok, err := openSlot(dst, f.aead, f.node, f.gen, i, buf[:n])
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
// p is copied; the segment reaches the file in the background (Sync waits
// for it). An error of an earlier background write is returned here if
// writing again fails too.
func (f *SegmentFile) WriteSegment(i int64, p []byte) error {
	if err := checkIndex(i); err != nil {
		return err
	}
	if len(p) > chunk.SegmentSize {
		return fmt.Errorf("cache: write segment %d: %d bytes > segment size", i, len(p))
	}
	_, err := f.modify(i, false, func(seg []byte) []byte { return append(seg[:0], p...) })
	return err
}

// PatchSegment cuts or zero-extends segment i to n bytes and writes p at
// off in it (off+len(p) <= n <= chunk.SegmentSize). ok=false, and nothing
// written, if segment i is absent. A segment still in memory is patched
// there: no read and decryption of its slot.
func (f *SegmentFile) PatchSegment(i int64, off int, p []byte, n int) (ok bool, err error) {
	if err := checkIndex(i); err != nil {
		return false, err
	}
	if off < 0 || off+len(p) > n || n > chunk.SegmentSize {
		return false, fmt.Errorf("cache: patch segment %d: %d bytes at %d of %d", i, len(p), off, n)
	}
	return f.modify(i, true, func(seg []byte) []byte {
		old := len(seg)
		seg = seg[:n]
		if n > old {
			clear(seg[old:])
		}
		copy(seg[off:], p)
		return seg
	})
}

// modify sets segment i to edit(its current content) and queues it for the
// writer. With mustExist, an absent segment is left alone (ok=false);
// without, an absent segment is edited from empty. edit gets a slice with
// capacity chunk.SegmentSize and returns the new content in it.
func (f *SegmentFile) modify(i int64, mustExist bool, edit func([]byte) []byte) (ok bool, err error) {
	var fromFile *pendingSeg // segment i read from the file (mustExist, not in memory)
	var readAt uint64        // f.seq when fromFile was read: a later enqueue may have changed the slot
	var ps *pendingSeg
	f.wmu.Lock()
	for {
		if f.closed {
			f.wmu.Unlock()
			f.release(fromFile)
			return false, ErrClosed
		}
		if f.failed && !f.running && len(f.queue) > 0 {
			// The writer stopped on an error: write synchronously, and
			// report it if it persists.
			f.running = true
			f.wmu.Unlock()
			if err := f.drain(true); err != nil {
				f.release(fromFile)
				return false, err
			}
			f.wmu.Lock()
			continue
		}
		ps = f.pend[i]
		if ps != nil && ps != f.busy {
			ps.p = edit(ps.p)                                                  // still queued: the writer will take the new content
			start := len(ps.p) == chunk.SegmentSize && !f.running && !f.failed // a held segment is now full
			if start {
				f.running = true
			}
			f.wmu.Unlock()
			f.release(fromFile)
			if start {
				go f.drain(false)
			}
			return true, nil
		}
		if f.dirty >= pendMax {
			f.wcond.Wait()
			continue
		}
		if ps == nil && mustExist && (fromFile == nil || readAt != f.seq) {
			if !f.hasBit(i) {
				f.wmu.Unlock()
				f.release(fromFile)
				return false, nil
			}
			readAt = f.seq
			f.wmu.Unlock()
			if fromFile == nil {
				fromFile = f.newSeg(i)
			}
			p, _, err := f.readSlot(fromFile.p[:0], i)
			if err != nil {
				f.release(fromFile)
				return false, err
			}
			fromFile.p = p
			f.wmu.Lock()
			continue // the state may have changed meanwhile
		}
		break
	}
	switch {
	case ps != nil: // being written: start from its content
		n := f.newSeg(i)
		n.p = append(n.p, ps.p...)
		ps = n
	case fromFile != nil:
		ps, fromFile = fromFile, nil
	default:
		ps = f.newSeg(i)
	}
	ps.p = edit(ps.p)
	f.seq++
	ps.seq = f.seq
	f.pend[i] = ps
	f.queue = append(f.queue, ps)
	f.dirty++
	f.setBit(i)
	// A lone partial segment is held back (drain would leave it queued):
	// no writer for it, so a close's flush writes it at once instead of
	// waiting for a goroutine that has nothing to do to be scheduled.
	start := !f.running && !f.failed && !f.lonePartialLocked()
	if start {
		f.running = true
	}
	f.wmu.Unlock()
	f.release(fromFile)
	if start {
		go f.drain(false) // an error stops the writer; the next write or Sync retries and reports it
	}
	return true, nil
}

// lonePartialLocked says whether the queue holds only a partial segment,
// which the writer holds back until it fills, another segment comes, or a
// flush or sync waits. Under wmu.
func (f *SegmentFile) lonePartialLocked() bool {
	return len(f.queue) == 1 && len(f.queue[0].p) < chunk.SegmentSize
}

// newSeg is an empty in-memory segment i with a pooled buffer.
func (f *SegmentFile) newSeg(i int64) *pendingSeg {
	bp := f.slots.Get().(*[]byte)
	return &pendingSeg{i: i, bp: bp, p: (*bp)[:0:chunk.SegmentSize]}
}

// release returns ps's buffer to the pool (ps may be nil).
func (f *SegmentFile) release(ps *pendingSeg) {
	if ps == nil || ps.bp == nil {
		return
	}
	f.slots.Put(ps.bp)
	ps.bp, ps.p = nil, nil
}

// drain writes queued segments in order until the queue is empty, or only
// a partial segment is left (held back unless force or a flush waits), or a
// write fails (the segment stays queued, first). The caller has set
// f.running; drain clears it.
func (f *SegmentFile) drain(force bool) error {
	f.wmu.Lock()
	defer func() {
		f.running = false
		f.wcond.Broadcast()
		f.wmu.Unlock()
	}()
	for len(f.queue) > 0 {
		if !force && f.flushing == 0 && f.lonePartialLocked() {
			return nil // the writer is probably still filling it
		}
		ps := f.queue[0]
		f.queue[0] = nil
		f.queue = f.queue[1:]
		f.busy = ps
		f.wmu.Unlock()
		err := f.writeSlot(ps.i, ps.p)
		f.wmu.Lock()
		f.busy = nil
		current := f.pend[ps.i] == ps // not superseded by a newer write, nor dropped
		if err != nil {
			if current {
				f.queue = slices.Insert(f.queue, 0, ps)
			} else {
				f.dirty--
				f.release(ps)
			}
			f.failed = true
			return err
		}
		f.failed = false
		f.noteWritten(ps.i)
		f.dirty--
		if current {
			delete(f.pend, ps.i)
		}
		f.release(ps)
		f.wcond.Broadcast()
		if from, to, ok := f.noteWrittenLocked(ps.i); ok {
			f.wbCount++
			andSync := f.wbCount%syncEvery == 0
			f.wmu.Unlock()
			f.startWriteback(from, to, andSync)
			f.wmu.Lock()
		}
	}
	f.queue = nil
	return nil
}

// noteWrittenLocked records slot i as written and returns the file range to
// start writeback of once writebackEvery bytes have been written since the
// last start.
func (f *SegmentFile) noteWrittenLocked(i int64) (from, to int64, ok bool) {
	off := i * slotStride
	if f.wbBytes == 0 {
		f.wbFrom, f.wbTo = off, off+slotStride
	} else {
		f.wbFrom, f.wbTo = min(f.wbFrom, off), max(f.wbTo, off+slotStride)
	}
	f.wbBytes += slotStride
	if f.wbBytes < writebackEvery {
		return 0, 0, false
	}
	from, to = f.wbFrom, f.wbTo
	f.wbBytes = 0
	return from, to, true
}

// startWriteback asks the kernel to start writing the range to the device
// (without waiting for it), so the device works during a long write rather
// than all at Sync; andSync also starts a background fdatasync (unless one
// runs). Only a hint: Sync's fdatasync is what makes data durable, so an
// error of sync_file_range changes nothing (it does not consume the
// kernel's writeback error either: only waiting for writeback does).
func (f *SegmentFile) startWriteback(from, to int64, andSync bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return
	}
	_ = unix.SyncFileRange(int(f.f.Fd()), from, to-from, unix.SYNC_FILE_RANGE_WRITE)
	if andSync && f.bgSync.CompareAndSwap(false, true) {
		go f.backgroundSync()
	}
}

// backgroundSync makes what was written so far durable ahead of Sync. Where
// the device's flush does the real work (a loop device, whose flush writes
// the backing file; a disk with a large write cache), starting writeback is
// not enough, and the final Sync would wait for the whole file; with this it
// waits for the last 64 MiB at most. The kernel reports a writeback error to
// one fdatasync of the file only, so an error here is kept and reported by
// every later Sync.
func (f *SegmentFile) backgroundSync() {
	defer f.bgSync.Store(false)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return
	}
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	if err := f.store.fdatasync(f.f); err != nil && f.syncErr == nil {
		f.syncErr = fmt.Errorf("cache: background fdatasync %s: %w", f.path, err)
	}
}

// writeSlot seals plaintext p as segment i and writes its slot with one pwrite.
func (f *SegmentFile) writeSlot(i int64, p []byte) error {
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
	return nil
}

// flush waits until every segment queued before the call is in the file,
// writing it here if the writer is not running (it held a partial segment
// back, or stopped on an error: then the error is returned if it persists).
func (f *SegmentFile) flush() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	target := f.seq
	f.flushing++
	defer func() { f.flushing-- }()
	for {
		if f.closed {
			return ErrClosed
		}
		if f.oldestLocked() > target {
			return nil
		}
		if !f.running {
			f.running = true
			f.wmu.Unlock()
			err := f.drain(true)
			f.wmu.Lock()
			if err != nil {
				return err
			}
			continue
		}
		f.wcond.Wait()
	}
}

// oldestLocked is the sequence number of the oldest segment not yet in the
// file (queue order is write order), or MaxUint64.
func (f *SegmentFile) oldestLocked() uint64 {
	if f.busy != nil {
		return f.busy.seq
	}
	if len(f.queue) > 0 {
		return f.queue[0].seq
	}
	return math.MaxUint64
}

// Flush writes every segment queued before the call to the file, without
// syncing it: the data is then in the kernel (a kill -9 of the process loses
// none of it), and SyncAll or Sync make it durable. This is close's
// durability point (a power loss may still lose it, as on ext4). While the
// redo log holds data of the file, what Flush hands over goes there too
// (or the file is synced): the record the caller applies next describes
// it, and the log's replay must not put older data under that record.
func (f *SegmentFile) Flush() error {
	if err := f.flush(); err != nil {
		return err
	}
	if !f.logMode() {
		return nil
	}
	return f.sync(true)
}

// addSlots adds the slots of from to set (made if nil) and returns it.
func addSlots(set, from map[int64]bool) map[int64]bool {
	if set == nil && len(from) > 0 {
		set = make(map[int64]bool, len(from))
	}
	for i := range from {
		set[i] = true
	}
	return set
}

// noteWritten records slot i (or -1: a truncation) as written since the
// last fdatasync.
func (f *SegmentFile) noteWritten(i int64) {
	f.sinceMu.Lock()
	if f.since == nil {
		f.since = map[int64]bool{}
	}
	f.since[i] = true
	if i >= 0 {
		if f.unlogged == nil {
			f.unlogged = map[int64]bool{}
		}
		f.unlogged[i] = true
	}
	f.sinceMu.Unlock()
	f.noteUnsynced()
}

// noteUnsynced records that the file holds writes not yet fdatasync'd, so
// the store's SyncAll finds it. The flag only changes under unsyncMu, so it
// always says whether the file is in the set.
func (f *SegmentFile) noteUnsynced() {
	if f.unsynced.Load() {
		return
	}
	f.store.unsyncMu.Lock()
	if !f.unsynced.Load() {
		f.unsynced.Store(true)
		f.store.unsynced[f] = struct{}{}
	}
	f.store.unsyncMu.Unlock()
}

// clearUnsynced takes f out of the store's set of files to sync: called
// before an fdatasync (writes after it mark the file again) or when the
// file goes away.
func (f *SegmentFile) clearUnsynced() {
	f.store.unsyncMu.Lock()
	if f.unsynced.Load() {
		f.unsynced.Store(false)
		delete(f.store.unsynced, f)
	}
	f.store.unsyncMu.Unlock()
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
	f.wmu.Lock()
	for f.busy != nil && f.busy.i >= from {
		f.wcond.Wait()
	}
	f.queue = f.dropLocked(f.queue, from)
	f.wmu.Unlock()

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	// Logged data at or beyond from must not come back with the log's
	// replay: the drop goes into the log before the file is cut, so any
	// later record is after it.
	if err := f.logFinal(redoSegDrop, from); err != nil {
		return err
	}
	f.sinceMu.Lock()
	for i := range f.unlogged {
		if i >= from {
			delete(f.unlogged, i)
		}
	}
	f.sinceMu.Unlock()
	fi, err := f.f.Stat()
	if err != nil {
		return fmt.Errorf("cache: drop %s: %w", f.path, err)
	}
	if fi.Size() > from*slotStride {
		if err := f.f.Truncate(from * slotStride); err != nil {
			return fmt.Errorf("cache: drop %s: %w", f.path, err)
		}
		f.noteWritten(-1)
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

// dropLocked forgets the queued segments of list with index >= from and
// returns the rest.
func (f *SegmentFile) dropLocked(list []*pendingSeg, from int64) []*pendingSeg {
	keep := list[:0]
	for _, ps := range list {
		if ps.i < from {
			keep = append(keep, ps)
			continue
		}
		delete(f.pend, ps.i)
		f.dirty--
		f.release(ps)
	}
	clear(list[len(keep):])
	return keep
}

// Sync makes all written segments durable once the store's next SyncTree
// returns (an fsync calls both): it waits for the writer; then, when the
// file's unsynced data is small, it appends it to the redo log, which
// SyncTree flushes (one device flush for the fsync; seglog.go); otherwise it
// fdatasyncs the file (the first such Sync of a new file also syncs the
// directory so the file itself survives a power loss). Nothing written:
// no flush. It fails if a background fdatasync of the file ever failed.
func (f *SegmentFile) Sync() error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.sync(true)
}

// sync is Sync after the flush; mayLog lets small data go to the redo log.
func (f *SegmentFile) sync(mayLog bool) error {
	if mayLog {
		if done, err := f.syncToLog(); done || err != nil {
			return err
		}
	}
	return f.syncFile()
}

// syncInPlace is Sync without the redo log: the file itself is synced
// (SyncAll, and the data syncs that AfterData records wait for).
func (f *SegmentFile) syncInPlace() error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.syncFile()
}

// syncFile fdatasyncs the file (and its directory entry, the first time),
// whatever it holds, so that it holds every slot the redo log has of it;
// then it says so in the log (clean), which ends the file's logged data.
func (f *SegmentFile) syncFile() error { return f.syncFileIf(false) }

// syncFileIf is syncFile; onlyLogged skips a file whose data the redo log
// does not hold (decided under its locks, so not while a Sync logs it).
func (f *SegmentFile) syncFileIf(onlyLogged bool) error {
	f.mu.RLock() // writes may go on meanwhile; they are not part of this Sync
	defer f.mu.RUnlock()
	if f.closed {
		return ErrClosed
	}
	f.syncMu.Lock()
	if onlyLogged && !f.logMode() {
		f.syncMu.Unlock()
		f.store.dropLogged(f)
		return nil
	}
	// Writes from now on are not covered: they mark the file again.
	f.clearUnsynced()
	f.sinceMu.Lock()
	since, unlogged := f.since, f.unlogged
	f.since, f.unlogged = nil, nil
	f.sinceMu.Unlock()
	err := f.store.fdatasync(f.f)
	if err != nil {
		err = fmt.Errorf("cache: fdatasync %s: %w", f.path, err)
	} else {
		err = f.syncErr // a background fdatasync may have taken the error
	}
	if err == nil && f.dirSync.Load() {
		if err = f.store.syncDir(f.dir); err != nil {
			err = fmt.Errorf("cache: sync segment file: %w", err)
		} else {
			f.dirSync.Store(false)
		}
	}
	if err == nil {
		err = f.logFinal(redoSegClean, 0) // under syncMu: no slot is logged meanwhile
	}
	f.syncMu.Unlock()
	if err != nil {
		f.sinceMu.Lock()
		f.since, f.unlogged = addSlots(f.since, since), addSlots(f.unlogged, unlogged)
		f.sinceMu.Unlock()
		f.noteUnsynced()
		return err
	}
	return nil
}

// Close releases this reference; the file is closed with the last one,
// after the segments waiting in memory are written (not synced) — or
// dropped, if the file was removed.
func (f *SegmentFile) Close() error {
	st := f.store
	st.segMu.Lock()
	if f.refs <= 0 {
		st.segMu.Unlock()
		return nil
	}
	f.refs--
	last := f.refs == 0
	removed := f.removed
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
	var werr error
	if !removed {
		werr = f.flush()
		if werr == nil && f.unsynced.Load() {
			// Closed before anyone synced it: SyncAll could not reach it
			// any more (rare: layers close after upload or at shutdown);
			// nor could a checkpoint, so not into the redo log.
			werr = f.syncFile()
		}
	}
	f.clearUnsynced()
	f.store.dropLogged(f)
	f.wmu.Lock()
	if removed {
		f.queue = f.dropLocked(f.queue, 0) // nothing left to write
	}
	for f.running {
		f.wcond.Wait()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.queue = f.dropLocked(f.queue, 0)
	f.wmu.Unlock()
	if err := f.f.Close(); err != nil {
		return fmt.Errorf("cache: close %s: %w", f.path, err)
	}
	if werr != nil && !errors.Is(werr, ErrClosed) {
		return fmt.Errorf("cache: close %s: %w", f.path, werr)
	}
	return nil
}

// Remove deletes the file and releases this reference. Other references keep
// working on the unlinked file until closed, like POSIX; a later
// OpenSegmentFile of the same (node, gen) starts a new, empty file. The
// deletion is durable after Store.Sync.
//
// The records that make the file unneeded (an unlink, an upload's commit)
// were applied before Remove: they are synced first if they are not yet, or
// a power loss could keep the deletion of the data and lose the record (a
// file deleted after its fsync would come back with its data gone).
func (f *SegmentFile) Remove() error {
	return f.store.RemoveSegmentFiles([]*SegmentFile{f})
}

// RemoveSegmentFiles is Remove for several files, with one sync of the
// records for all of them: an rm -rf deletes thousands of files a second,
// and a sync each (grouped or not) woke every waiting remover at every sync.
// It removes what it can and reports every failure.
func (s *Store) RemoveSegmentFiles(files []*SegmentFile) error {
	var errs []error
	marked := make([]*SegmentFile, 0, len(files))
	for _, f := range files {
		f.mu.Lock()
		err := f.logFinal(redoSegGone, 0) // the log's replay must not bring it back
		f.gone = err == nil
		f.mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("cache: remove segment file: %w", err))
			continue
		}
		marked = append(marked, f)
	}
	if len(marked) > 0 && s.redo.offNow.Load() > s.redo.durable.Load() {
		if err := s.SyncTree(); err != nil {
			errs = append(errs, fmt.Errorf("cache: remove %d segment files: %w", len(marked), err))
			return errors.Join(errs...)
		}
	}
	for _, f := range marked {
		if err := f.unlinkAndClose(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unlinkAndClose deletes a file whose removal is durable in the log (if it
// is still the open one of its node and generation) and releases this
// reference.
func (f *SegmentFile) unlinkAndClose() error {
	st := f.store
	var err error
	st.segMu.Lock()
	k := [2]uint64{f.node, f.gen}
	if st.segOpen[k] == f {
		delete(st.segOpen, k)
		f.removed = true
		if err = os.Remove(f.path); errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		st.dirtyRemoved.Store(true) // the next data sync makes the removal durable
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
