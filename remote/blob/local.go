package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Local is a Store over a directory: each blob is a file at
// DIR/ACCOUNT/CC/CHUNKID where CC are the first two hex digits of the chunk id
// (so no directory grows past a few thousand entries per account).
// Writes go to a temp file that is fsynced and renamed into place, and the
// directory is fsynced, so an acknowledged Put survives kill -9 and power loss.
type Local struct {
	dir string
	fds openFiles
}

// NewLocal opens (creating if needed) a local store rooted at dir.
func NewLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob: create %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return &Local{dir: abs, fds: openFiles{m: map[string]*openFile{}}}, nil
}

// Close closes the blob files kept open between reads. The store stays
// usable (files are opened again as needed); Close is for shutting down.
func (l *Local) Close() error {
	l.fds.closeAll()
	return nil
}

// MaxAccountLen bounds the account part of a key.
const MaxAccountLen = 64

// ChunkIDLen is the length of the chunk part of a key (hex of 32 bytes).
const ChunkIDLen = 64

// ValidKey reports whether key is ACCOUNT/CHUNKID: 1..64 lower-case hex, one
// slash, 64 lower-case hex. Every store must refuse other keys so that no key
// can escape its account's namespace.
func ValidKey(key string) bool {
	acct, chunk, ok := strings.Cut(key, "/")
	return ok && len(acct) >= 1 && len(acct) <= MaxAccountLen && len(chunk) == ChunkIDLen &&
		isLowerHex(acct) && isLowerHex(chunk)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (l *Local) path(key string) (string, error) {
	if !ValidKey(key) {
		return "", fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	acct, chunk, _ := strings.Cut(key, "/")
	return filepath.Join(l.dir, acct, chunk[:2], chunk), nil
}

// Put stores data under key atomically and durably.
func (l *Local) Put(ctx context.Context, key string, data []byte) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := l.mkdirDurable(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("blob: put %s: %w", key, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("blob: put %s: write: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blob: put %s: fsync: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("blob: put %s: close: %w", key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("blob: put %s: rename: %w", key, err)
	}
	ok = true
	l.fds.forget(key) // a file kept open is the replaced one
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("blob: put %s: %w", key, err)
	}
	return nil
}

// mkdirDurable creates dir and its missing parents below l.dir, fsyncing each
// parent so the new directory entries survive a crash.
func (l *Local) mkdirDurable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	var missing []string
	for d := dir; d != l.dir && len(d) > len(l.dir); d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("blob: mkdir %s: %w", d, err)
		}
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// Get reads length bytes at off (length < 0: to the end). Reading past the end
// returns the bytes that exist; an offset beyond the size is an error.
func (l *Local) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	r, n, err := l.OpenRange(ctx, key, off, length)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("blob: get %s: %w", key, err)
	}
	return buf, nil
}

// OpenRange opens length bytes at off for streaming (see Ranger). Blob files
// stay open between reads (openFiles): a random reader's segment costs one
// pread, not an open (a path walk), an fstat, a pread and a close. The file
// is opened without an *os.File: a regular file gains nothing from the
// runtime poller, and registering it cost a failing epoll_ctl per open.
func (l *Local) OpenRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, int64, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, 0, err
	}
	if off < 0 {
		return nil, 0, fmt.Errorf("blob: get %s: negative offset", key)
	}
	f, err := l.fds.open(key, p)
	if errors.Is(err, syscall.ENOENT) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blob: get %s: %w", key, err)
	}
	size := f.size
	if off > size {
		l.fds.release(f)
		return nil, 0, fmt.Errorf("blob: get %s: offset %d beyond size %d", key, off, size)
	}
	if length < 0 || off+length > size {
		length = size - off
	}
	return &fileRange{fds: &l.fds, f: f, key: key, off: off, end: off + length}, length, nil
}

// maxOpenBlobs bounds the blob files kept open (a file descriptor each).
const maxOpenBlobs = 64

// openFiles keeps recently read blob files open. A blob file never changes
// in place: Put renames a new file over it and Delete removes it, and both
// forget the key here, so a kept descriptor always reads the current blob.
// An open that raced with them (began before, ends after) is not kept
// (gen), so it cannot bring the old file back.
type openFiles struct {
	mu     sync.Mutex
	m      map[string]*openFile
	gen    uint64      // bumped by every forget
	clock  uint64      // use stamps, for eviction
	pruned uint64      // clock at the last prune: files unused since are closed at the next
	prune  *time.Timer // runs while files are kept
}

// keepOpenFor is how long an unused blob file stays open (between one and
// two periods), so an idle server holds no descriptors.
const keepOpenFor = time.Minute

type openFile struct {
	fd   int
	size int64
	refs int    // readers holding it, plus one while it is kept
	used uint64 // last use (openFiles.clock)
}

func (o *openFiles) open(key, p string) (*openFile, error) {
	o.mu.Lock()
	if f := o.m[key]; f != nil {
		f.refs++
		f.used = tick(o)
		o.mu.Unlock()
		return f, nil
	}
	gen := o.gen
	o.mu.Unlock()

	fd, err := openRead(p)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := ignoringEINTR(func() error { return syscall.Fstat(fd, &st) }); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("fstat: %w", err)
	}
	f := &openFile{fd: fd, size: st.Size, refs: 1}

	o.mu.Lock()
	defer o.mu.Unlock()
	if gen != o.gen || o.m[key] != nil {
		return f, nil // not kept: closed when the reader is done
	}
	if len(o.m) >= maxOpenBlobs {
		o.evictLocked()
	}
	f.refs++
	f.used = tick(o)
	o.m[key] = f
	if o.prune == nil {
		o.prune = time.AfterFunc(keepOpenFor, o.pruneIdle)
	}
	return f, nil
}

// pruneIdle closes the files unused since the last prune.
func (o *openFiles) pruneIdle() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, f := range o.m {
		if f.used <= o.pruned {
			delete(o.m, k)
			o.releaseLocked(f)
		}
	}
	o.pruned = o.clock
	o.prune = nil
	if len(o.m) > 0 {
		o.prune = time.AfterFunc(keepOpenFor, o.pruneIdle)
	}
}

// tick returns a new use stamp. Caller holds o.mu.
func tick(o *openFiles) uint64 {
	o.clock++
	return o.clock
}

// evictLocked drops the least recently used kept file. Caller holds o.mu.
func (o *openFiles) evictLocked() {
	var oldest string
	var at uint64
	for k, f := range o.m {
		if oldest == "" || f.used < at {
			oldest, at = k, f.used
		}
	}
	if f := o.m[oldest]; f != nil {
		delete(o.m, oldest)
		o.releaseLocked(f)
	}
}

// closeAll stops keeping any file open (each closes once its readers are
// done) and stops the pruning timer.
func (o *openFiles) closeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.gen++
	for k, f := range o.m {
		delete(o.m, k)
		o.releaseLocked(f)
	}
	if o.prune != nil {
		o.prune.Stop()
		o.prune = nil
	}
}

// forget stops keeping key's file open (closed once its readers are done).
func (o *openFiles) forget(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.gen++
	if f := o.m[key]; f != nil {
		delete(o.m, key)
		o.releaseLocked(f)
	}
}

func (o *openFiles) release(f *openFile) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.releaseLocked(f)
}

func (o *openFiles) releaseLocked(f *openFile) {
	if f.refs--; f.refs == 0 {
		syscall.Close(f.fd)
		f.fd = -1
	}
}

func openRead(p string) (fd int, err error) {
	err = ignoringEINTR(func() (err error) {
		fd, err = syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		return err
	})
	return fd, err
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != syscall.EINTR {
			return err
		}
	}
}

// fileRange streams [off, end) of an open blob file with pread, into
// whatever buffer the writer offers (io.Copy to a writer with ReadFrom: the
// in-process answer's buffer, so one pread per chunk). A file shorter than at
// open is an error.
type fileRange struct {
	fds      *openFiles
	f        *openFile // nil once closed
	key      string
	off, end int64
}

func (r *fileRange) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	if r.f == nil {
		return 0, fmt.Errorf("blob: get %s: %w", r.key, os.ErrClosed)
	}
	p = p[:min(int64(len(p)), r.end-r.off)]
	var n int
	err := ignoringEINTR(func() (err error) {
		n, err = syscall.Pread(r.f.fd, p, r.off)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("blob: get %s: pread: %w", r.key, err)
	}
	if n == 0 && len(p) > 0 {
		return 0, fmt.Errorf("blob: get %s: %w", r.key, io.ErrUnexpectedEOF) // shorter than at open
	}
	r.off += int64(n)
	return n, nil
}

func (r *fileRange) Close() error {
	if r.f != nil {
		r.fds.release(r.f)
		r.f = nil
	}
	return nil
}

// Delete removes a blob. Deleting a missing blob is not an error (deletes are
// retried by the server's GC).
func (l *Local) Delete(ctx context.Context, key string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	l.fds.forget(key)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("blob: delete %s: %w", key, err)
	}
	l.fds.forget(key) // opened again meanwhile
	return nil
}

// Size returns the size of a stored blob, or ErrNotFound.
func (l *Local) Size(ctx context.Context, key string) (int64, error) {
	p, err := l.path(key)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("blob: size %s: %w", key, err)
	}
	return st.Size(), nil
}
