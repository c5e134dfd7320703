package pathops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kumo/internal/chunk"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// ErrChanged is returned when a local file changes while it is being uploaded.
var ErrChanged = errors.New("local file changed during upload")

// progress serializes calls to a Progress callback.
type progress struct {
	mu    sync.Mutex
	fn    Progress
	done  int64
	total int64
}

func (p *progress) add(n int64) {
	if p == nil || p.fn == nil {
		return
	}
	p.mu.Lock()
	p.done += n
	p.fn(p.done, p.total)
	p.mu.Unlock()
}

var zeroChunk = make([]byte, chunk.Size)

// PutFile uploads the local regular file (symlinks followed) to remote path p.
// If p is an existing directory, the file goes into it under its local name.
// Missing parent directories are created. Chunks the server already has are not
// sent again; all-zero chunks are stored as holes. The mode and mtime of the
// local file are kept.
func (f *FS) PutFile(ctx context.Context, local, p string, prog Progress) (*Node, error) {
	file, err := os.Open(local)
	if err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("put %s: not a regular file (use -r for directories)", local)
	}
	if dst, err := f.Resolve(ctx, p); err == nil && dst.IsDir() {
		p = path.Join(dst.Path, filepath.Base(local))
	}

	size := st.Size()
	refs, err := f.hashChunks(ctx, file, size)
	if err != nil {
		return nil, fmt.Errorf("put %s: %w", local, err)
	}
	pr := &progress{fn: prog, total: size}
	if err := f.uploadChunks(ctx, file, size, refs, pr); err != nil {
		return nil, fmt.Errorf("put %s: %w", local, err)
	}
	st2, err := file.Stat()
	if err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	if st2.Size() != size || !st2.ModTime().Equal(st.ModTime()) {
		return nil, fmt.Errorf("put %s: %w", local, ErrChanged)
	}
	a := f.localAttrs(local, st, false)
	a.Size = uint64(size)
	a.Chunks = refs
	return f.WriteNode(ctx, p, a)
}

// localAttrs builds attributes from a local file's stat and user xattrs.
func (f *FS) localAttrs(local string, st fs.FileInfo, nofollow bool) *meta.Attrs {
	now := time.Now().UnixNano()
	a := &meta.Attrs{
		Mode:  uint32(st.Mode().Perm()),
		UID:   uint32(syscall.Getuid()),
		GID:   uint32(syscall.Getgid()),
		Atime: now,
		Mtime: st.ModTime().UnixNano(),
		Ctime: now,
	}
	switch {
	case st.IsDir():
		a.Mode |= syscall.S_IFDIR
	case st.Mode()&fs.ModeSymlink != 0:
		a.Mode |= syscall.S_IFLNK
	default:
		a.Mode |= syscall.S_IFREG
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		a.Mode = sys.Mode & (syscall.S_IFMT | 0o7777)
		a.Atime = sys.Atim.Nano()
	}
	a.Xattrs = readXattrs(local, nofollow)
	return a
}

// readXattrs returns the user.* extended attributes of a local file, best effort.
func readXattrs(p string, nofollow bool) map[string][]byte {
	list, get := unix.Listxattr, unix.Getxattr
	if nofollow {
		list, get = unix.Llistxattr, unix.Lgetxattr
	}
	buf := make([]byte, 64<<10)
	n, err := list(p, buf)
	if err != nil || n <= 0 {
		return nil
	}
	out := map[string][]byte{}
	for _, name := range bytes.Split(buf[:n], []byte{0}) {
		if !bytes.HasPrefix(name, []byte("user.")) {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := get(p, string(name), v)
		if err != nil {
			continue
		}
		out[string(name)] = v[:m]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// hashChunks reads the file once and names its chunks.
func (f *FS) hashChunks(ctx context.Context, file *os.File, size int64) ([]meta.ChunkRef, error) {
	n := int((size + chunk.Size - 1) / chunk.Size)
	refs := make([]meta.ChunkRef, n)
	buf := make([]byte, chunk.Size)
	for i := range refs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p, err := readChunk(file, buf, i, size)
		if err != nil {
			return nil, err
		}
		refs[i].Len = uint32(len(p))
		if !bytes.Equal(p, zeroChunk[:len(p)]) {
			refs[i].ID = f.cipher.ID(p)
		}
	}
	return refs, nil
}

// readChunk reads chunk i of a file of the given size into buf.
func readChunk(file *os.File, buf []byte, i int, size int64) ([]byte, error) {
	off := int64(i) * chunk.Size
	n := int(min(chunk.Size, size-off))
	p := buf[:n]
	if _, err := file.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrChanged
		}
		return nil, fmt.Errorf("read chunk %d: %w", i, err)
	}
	return p, nil
}

// uploadChunks sends the chunks of refs the server lacks, Parallel at a time.
func (f *FS) uploadChunks(ctx context.Context, file *os.File, size int64, refs []meta.ChunkRef, pr *progress) error {
	// One upload per distinct id; holes are never sent.
	first := map[chunk.ID]int{}
	var ids []string
	var idx []int
	for i, r := range refs {
		if r.ID.IsZero() {
			pr.add(int64(r.Len))
			continue
		}
		if _, ok := first[r.ID]; ok {
			pr.add(int64(r.Len))
			continue
		}
		first[r.ID] = i
		ids = append(ids, r.ID.String())
		idx = append(idx, i)
	}
	if len(ids) == 0 {
		return nil
	}
	have, err := f.c.HaveChunks(ctx, ids)
	if err != nil {
		return fmt.Errorf("ask server for known chunks: %w", err)
	}
	var todo []int
	for k, i := range idx {
		if have[k] {
			pr.add(int64(refs[i].Len))
		} else {
			todo = append(todo, i)
		}
	}
	return f.forEach(ctx, todo, func(ctx context.Context, i int, buf []byte) error {
		p, err := readChunk(file, buf[:chunk.Size], i, size)
		if err != nil {
			return err
		}
		if f.cipher.ID(p) != refs[i].ID {
			return ErrChanged
		}
		sealed := f.cipher.Seal(buf[chunk.Size:chunk.Size], refs[i].ID, p)
		if err := f.c.PutChunk(ctx, refs[i].ID.String(), sealed); err != nil {
			if errors.Is(err, api.ErrQuota) {
				return fmt.Errorf("storage quota exceeded (nothing stored was touched): %w", err)
			}
			return fmt.Errorf("upload chunk %d: %w", i, err)
		}
		pr.add(int64(len(p)))
		return nil
	})
}

// forEach runs fn on every index with Parallel workers, each with its own
// buffer of a plaintext and a sealed chunk; the first error stops the rest.
func (f *FS) forEach(ctx context.Context, items []int, fn func(ctx context.Context, i int, buf []byte) error) error {
	return f.forEachBuf(ctx, items, chunk.Size+chunk.SealedSize(chunk.Size), fn)
}

// forEachBuf is forEach with worker buffers of bufSize bytes.
func (f *FS) forEachBuf(ctx context.Context, items []int, bufSize int, fn func(ctx context.Context, i int, buf []byte) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int)
	var wg sync.WaitGroup
	workers := min(f.parallel(), len(items))
	for range workers {
		wg.Go(func() {
			buf := make([]byte, bufSize)
			for i := range work {
				if ctx.Err() != nil {
					continue
				}
				if err := fn(ctx, i, buf); err != nil {
					cancel(err)
				}
			}
		})
	}
	for _, i := range items {
		select {
		case work <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// PutTree uploads a local directory tree to remote path p (created if
// missing, like cp -r into a new name; an existing directory receives the
// tree under the local directory's name). Symlinks are stored as symlinks;
// other special files are skipped and reported through skip.
func (f *FS) PutTree(ctx context.Context, local, p string, prog Progress, skip func(path string)) error {
	st, err := os.Lstat(local)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if !st.IsDir() {
		_, err := f.PutFile(ctx, local, p, prog)
		return err
	}
	if dst, err := f.Resolve(ctx, p); err == nil && dst.IsDir() {
		p = path.Join(dst.Path, filepath.Base(filepath.Clean(local)))
	}
	return filepath.WalkDir(local, func(lp string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("put: %w", err)
		}
		rel, err := filepath.Rel(local, lp)
		if err != nil {
			return err
		}
		rp := path.Join(p, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("put: %w", err)
		}
		switch {
		case d.IsDir():
			_, err = f.putDir(ctx, rp, f.localAttrs(lp, info, true))
		case d.Type()&fs.ModeSymlink != 0:
			target, rerr := os.Readlink(lp)
			if rerr != nil {
				return fmt.Errorf("put: %w", rerr)
			}
			a := f.localAttrs(lp, info, true)
			a.Target = []byte(target)
			a.Size = uint64(len(target))
			_, err = f.WriteNode(ctx, rp, a)
		case d.Type().IsRegular():
			_, err = f.PutFile(ctx, lp, rp, prog)
		default:
			if skip != nil {
				skip(lp)
			}
		}
		return err
	})
}

// putDir makes p a directory with attributes a: created (with missing parents)
// if absent, its attributes replaced if present.
func (f *FS) putDir(ctx context.Context, p string, a *meta.Attrs) (*Node, error) {
	n, err := f.Resolve(ctx, p)
	switch {
	case err == nil:
		if !n.IsDir() {
			return nil, fmt.Errorf("%s: %w", n.Path, api.ErrNotDir)
		}
		return f.update(ctx, n, a)
	case !errors.Is(err, api.ErrNotFound):
		return nil, err
	}
	parent, err := f.MkdirAll(ctx, path.Dir(path.Clean("/"+p)))
	if err != nil {
		return nil, err
	}
	n, err = f.Create(ctx, parent, path.Base(path.Clean("/"+p)), a)
	if errors.Is(err, api.ErrExists) {
		return f.putDir(ctx, p, a)
	}
	return n, err
}

// GetFile downloads the remote file p to local (into it, if local is an
// existing directory), verifying every chunk, and renames it into place only
// when complete. Symlinks are recreated as symlinks.
func (f *FS) GetFile(ctx context.Context, p, local string, prog Progress) error {
	n, err := f.Resolve(ctx, p)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return f.getNode(ctx, n, local, prog)
}

func (f *FS) getNode(ctx context.Context, n *Node, local string, prog Progress) error {
	if n.IsDir() {
		return fmt.Errorf("get %s: %w (use -r for directories)", n.Path, api.ErrIsDir)
	}
	if st, err := os.Stat(local); err == nil && st.IsDir() && n.Name != "" {
		local = filepath.Join(local, n.Name)
	}
	switch n.Attrs.Mode & syscall.S_IFMT {
	case syscall.S_IFLNK:
		return replaceSymlink(string(n.Attrs.Target), local)
	case syscall.S_IFREG:
	default:
		return fmt.Errorf("get %s: not a regular file or symlink (mode %v)", n.Path, n.Mode())
	}
	var sum uint64
	for i, r := range n.Attrs.Chunks {
		if r.Len != chunk.Size && i != len(n.Attrs.Chunks)-1 {
			return fmt.Errorf("get %s: chunk %d has %d bytes: %w", n.Path, i, r.Len, ErrMismatch)
		}
		sum += uint64(r.Len)
	}
	if sum != n.Attrs.Size {
		return fmt.Errorf("get %s: chunks hold %d bytes, size is %d: %w", n.Path, sum, n.Attrs.Size, ErrMismatch)
	}

	dir := filepath.Dir(local)
	tmp, err := os.CreateTemp(dir, ".kumo-get-*")
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	defer tmp.Close()

	pr := &progress{fn: prog, total: int64(n.Attrs.Size)}
	var todo []int
	for i, r := range n.Attrs.Chunks {
		if r.ID.IsZero() {
			pr.add(int64(r.Len))
		} else {
			todo = append(todo, i)
		}
	}
	err = f.forEach(ctx, todo, func(ctx context.Context, i int, buf []byte) error {
		r := n.Attrs.Chunks[i]
		sealed, err := f.c.GetChunk(ctx, r.ID.String(), 0, -1)
		if err != nil {
			return fmt.Errorf("download chunk %d: %w", i, err)
		}
		plain, err := f.chunkCipher(n).Open(buf[:0], r.ID, sealed)
		if err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		if len(plain) != int(r.Len) {
			return fmt.Errorf("chunk %d has %d bytes, want %d: %w", i, len(plain), r.Len, ErrMismatch)
		}
		if _, err := tmp.WriteAt(plain, int64(i)*chunk.Size); err != nil {
			return fmt.Errorf("write %s: %w", local, err)
		}
		pr.add(int64(len(plain)))
		return nil
	})
	if err != nil {
		return fmt.Errorf("get %s: %w", n.Path, err)
	}
	// Holes at the end need the size set explicitly.
	if err := tmp.Truncate(int64(n.Attrs.Size)); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := tmp.Chmod(fs.FileMode(n.Attrs.Mode & 0o777)); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	for name, v := range n.Attrs.Xattrs {
		_ = unix.Setxattr(tmp.Name(), name, v, 0) // best effort, like cp -a on a filesystem without xattrs
	}
	mt := time.Unix(0, n.Attrs.Mtime)
	if err := os.Chtimes(tmp.Name(), time.Unix(0, n.Attrs.Atime), mt); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := os.Rename(tmp.Name(), local); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return nil
}

// replaceSymlink atomically puts a symlink to target at local.
func replaceSymlink(target, local string) error {
	tmp := filepath.Join(filepath.Dir(local), fmt.Sprintf(".kumo-link-%d", time.Now().UnixNano()))
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := os.Rename(tmp, local); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("get: %w", err)
	}
	return nil
}

// GetTree downloads the remote path p to local: a file like GetFile, a
// directory recursively (created if missing; an existing local directory
// receives the tree under the remote directory's name).
func (f *FS) GetTree(ctx context.Context, p, local string, prog Progress) error {
	n, err := f.Resolve(ctx, p)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if !n.IsDir() {
		return f.getNode(ctx, n, local, prog)
	}
	if st, err := os.Stat(local); err == nil && st.IsDir() && n.Name != "" {
		local = filepath.Join(local, n.Name)
	}
	return f.getDir(ctx, n, local, prog)
}

func (f *FS) getDir(ctx context.Context, dir *Node, local string, prog Progress) error {
	if err := os.MkdirAll(local, 0o700); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	kids, err := f.ListNode(ctx, dir)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	for _, k := range kids {
		lp := filepath.Join(local, k.Name)
		if k.IsDir() {
			err = f.getDir(ctx, k, lp, prog)
		} else {
			err = f.getNode(ctx, k, lp, prog)
		}
		if err != nil {
			return err
		}
	}
	if err := os.Chmod(local, fs.FileMode(dir.Attrs.Mode&0o777)); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return os.Chtimes(local, time.Unix(0, dir.Attrs.Atime), time.Unix(0, dir.Attrs.Mtime))
}
