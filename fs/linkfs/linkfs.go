// Package linkfs is a read-only FUSE view of a read-only link's manifest
// (internal/link): `kumo mount URL MNT` with no account.
//
// The tree is the manifest's, fixed for the life of the mount (a link is a
// snapshot). Reads fetch whole chunks and check each against the link
// before any of its bytes is used: its sealed length and SHA-256 (the
// manifest's sum), then its segments under the chunk's content key
// (link.Chunk.Open). A chunk that fails is EIO and logged, never wrong
// bytes, never cached. (A single segment cannot be checked against the
// sum: every holder of the link knows the content key and could seal other
// segments under it.) Opened chunks stay in a cache bounded in bytes, and
// sequential reads fetch the next chunks ahead, so a sequential read of a
// file fetches each chunk once. Every write is EROFS.
package linkfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/fs/rofs"
	"kumo/internal/chunk"
	"kumo/internal/link"
	"kumo/remote/api"
	"kumo/remote/client"
)

// Defaults of Options.
const (
	DefaultCacheBytes = 32 << 20 // opened chunks kept in memory (8 full chunks)
	DefaultReadAhead  = 2        // chunks fetched ahead of a sequential read (8 MiB)
)

// ttl is how long the kernel may keep names and attributes: the tree of a
// link never changes while it is mounted.
const ttl = time.Hour

// Options configure Mount.
type Options struct {
	Client   *client.Client // needs no session
	LinkID   string
	Manifest *link.Manifest // opened and validated (pathops.OpenLink)
	Logger   *slog.Logger

	CacheBytes int // bytes of opened chunks kept; 0: DefaultCacheBytes
	ReadAhead  int // chunks fetched ahead of a sequential read; 0: DefaultReadAhead, < 0: none

	UID, GID           uint32 // owner shown for every entry
	AllowOther         bool   // let other users in (with default_permissions)
	DefaultPermissions bool
	FsName             string // source shown in /proc/mounts; "" : "kumo-link"
	Debug              bool
}

// FS is a mounted link.
type FS struct {
	o       Options
	m       *link.Manifest
	log     *slog.Logger
	kids    map[int][]int // directory entry index (root: -1) -> children, sorted by name
	names   []string      // last path element of each entry
	total   int64         // bytes of all files
	srv     *fuse.Server
	cache   *chunkCache
	gone    atomic.Bool // the server said the link is revoked or expired (logged once)
	failed  atomic.Int64
	fetched atomic.Int64 // sealed bytes downloaded
}

// rootIdx is the root directory's index in the tree; entry i has inode i+2.
const rootIdx = -1

func ino(idx int) uint64 { return uint64(idx + 2) }

// New builds the view of o.Manifest without mounting it (Mount does both).
func New(o Options) (*FS, error) {
	if o.Client == nil || o.Manifest == nil {
		return nil, errors.New("linkfs: no client or manifest")
	}
	if err := o.Manifest.Validate(); err != nil {
		return nil, fmt.Errorf("linkfs: %w", err)
	}
	if _, err := link.ParseID(o.LinkID); err != nil {
		return nil, fmt.Errorf("linkfs: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = DefaultReadAhead
	}
	o.ReadAhead = max(o.ReadAhead, 0)
	f := &FS{o: o, m: o.Manifest, log: o.Logger, kids: map[int][]int{rootIdx: nil},
		cache: newChunkCache(o.CacheBytes)}
	f.names = make([]string, len(f.m.Entries))
	if f.m.Kind == link.KindFile {
		// A file link shows its one file, under the link's name, in the root.
		f.names[0] = f.m.Name
		f.kids[rootIdx] = []int{0}
		f.total = f.m.Entries[0].Size
		return f, nil
	}
	dirs := map[string]int{"": rootIdx}
	for i, e := range f.m.Entries {
		dir, name := path.Split(e.Path)
		dir = path.Clean("/" + dir)[1:]
		parent, ok := dirs[dir]
		if !ok {
			// Validate refuses this; checked so a bug cannot index out of range.
			return nil, fmt.Errorf("linkfs: %q comes before its directory", e.Path)
		}
		f.names[i] = name
		f.kids[parent] = append(f.kids[parent], i)
		if e.Type == link.TypeDir {
			dirs[e.Path] = i
			f.kids[i] = nil
		}
		f.total += e.Size
	}
	for _, k := range f.kids {
		sort.Slice(k, func(a, b int) bool { return f.names[k[a]] < f.names[k[b]] })
	}
	return f, nil
}

// Mount mounts the link's view at mountpoint, read-only.
func Mount(mountpoint string, o Options) (*FS, error) {
	f, err := New(o)
	if err != nil {
		return nil, err
	}
	name := f.o.FsName
	if name == "" {
		name = "kumo-link"
	}
	timeout := ttl
	mo := fuse.MountOptions{
		AllowOther:   f.o.AllowOther,
		MaxReadAhead: 1 << 20,
		FsName:       name,
		// The type the kernel shows is fuse.kumo, so `kumo unmount` knows it.
		Name:                 "kumo",
		Debug:                f.o.Debug,
		EnableSymlinkCaching: true,
		// The kernel keeps file pages: a link's files never change.
		ExplicitDataCacheControl: true,
		Options:                  []string{"ro"},
	}
	if f.o.DefaultPermissions || f.o.AllowOther {
		mo.Options = append(mo.Options, "default_permissions")
	}
	root := &node{f: f, idx: rootIdx}
	srv, err := gofs.Mount(mountpoint, root, &gofs.Options{
		MountOptions:    mo,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: ino(rootIdx), Mode: fuse.S_IFDIR},
		Logger:          log.New(debugWriter{f.log}, "", 0),
	})
	if err != nil {
		return nil, fmt.Errorf("linkfs: mount %s: %w", mountpoint, err)
	}
	f.srv = srv
	f.log.Info("link mounted", "mountpoint", mountpoint, "name", f.m.Name, "kind", f.m.Kind,
		"entries", len(f.m.Entries), "bytes", f.total)
	return f, nil
}

// Wait returns when the file system is unmounted.
func (f *FS) Wait() { f.srv.Wait() }

// Unmount unmounts the file system (EBUSY while in use).
func (f *FS) Unmount() error { return f.srv.Unmount() }

// Failures counts reads that failed (EIO): revoked or expired link, network,
// a chunk that did not match the link.
func (f *FS) Failures() int64 { return f.failed.Load() }

type debugWriter struct{ log *slog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug("fuse", "msg", string(p))
	return len(p), nil
}

// node is the root or one manifest entry.
type node struct {
	gofs.Inode
	rofs.ReadOnly // every write is EROFS
	f             *FS
	idx           int

	// next is where the last read of this file ended: a read starting there
	// is sequential and fetches ahead.
	next atomic.Int64
}

var (
	_ gofs.NodeLookuper   = (*node)(nil)
	_ gofs.NodeReaddirer  = (*node)(nil)
	_ gofs.NodeGetattrer  = (*node)(nil)
	_ gofs.NodeOpener     = (*node)(nil)
	_ gofs.NodeReader     = (*node)(nil)
	_ gofs.NodeReadlinker = (*node)(nil)
	_ gofs.NodeStatfser   = (*node)(nil)
	_ gofs.NodeRenamer    = (*node)(nil) // and the other writes, from rofs
)

// entry is the node's manifest entry; nil for the root.
func (n *node) entry() *link.Entry {
	if n.idx == rootIdx {
		return nil
	}
	return &n.f.m.Entries[n.idx]
}

func (f *FS) fill(idx int, out *fuse.Attr) {
	out.Ino = ino(idx)
	out.Uid, out.Gid = f.o.UID, f.o.GID
	out.Blksize = chunk.SegmentSize
	if idx == rootIdx {
		out.Mode = syscall.S_IFDIR | 0o755
		out.Nlink = 2
		out.SetTimes(&f.m.Created, &f.m.Created, &f.m.Created)
		return
	}
	e := &f.m.Entries[idx]
	out.Mode = typeBits(e.Type) | e.Mode
	out.Nlink = 1
	switch e.Type {
	case link.TypeDir:
		out.Nlink = 2
	case link.TypeSymlink:
		out.Size = uint64(len(e.Target))
	case link.TypeFile:
		out.Size = uint64(e.Size)
		for _, c := range e.Chunks {
			if !c.IsHole() {
				out.Blocks += uint64(c.N+511) / 512
			}
		}
	}
	out.SetTimes(&e.Mtime, &e.Mtime, &e.Mtime)
}

func typeBits(t string) uint32 {
	switch t {
	case link.TypeDir:
		return syscall.S_IFDIR
	case link.TypeSymlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.f.fill(n.idx, &out.Attr)
	out.SetTimeout(ttl)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	kids, ok := n.f.kids[n.idx]
	if !ok {
		return nil, syscall.ENOTDIR
	}
	i := sort.Search(len(kids), func(i int) bool { return n.f.names[kids[i]] >= name })
	if i == len(kids) || n.f.names[kids[i]] != name {
		return nil, syscall.ENOENT
	}
	idx := kids[i]
	n.f.fill(idx, &out.Attr)
	out.SetEntryTimeout(ttl)
	out.SetAttrTimeout(ttl)
	child := &node{f: n.f, idx: idx}
	return n.NewInode(ctx, child, gofs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: ino(idx)}), 0
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	kids, ok := n.f.kids[n.idx]
	if !ok {
		return nil, syscall.ENOTDIR
	}
	list := make([]fuse.DirEntry, 0, len(kids)+2)
	list = append(list, fuse.DirEntry{Name: ".", Mode: fuse.S_IFDIR, Ino: ino(n.idx)},
		fuse.DirEntry{Name: "..", Mode: fuse.S_IFDIR})
	for _, k := range kids {
		list = append(list, fuse.DirEntry{Name: n.f.names[k], Mode: typeBits(n.f.m.Entries[k].Type), Ino: ino(k)})
	}
	return gofs.NewListDirStream(list), 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if e := n.entry(); e == nil || e.Type == link.TypeDir {
		return nil, 0, syscall.EISDIR
	}
	return nil, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0 // read-only: nothing for a close to flush
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	e := n.entry()
	if e == nil || e.Type != link.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.Target), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = chunk.SegmentSize
	out.Frsize = chunk.SegmentSize
	out.Blocks = uint64(n.f.total+chunk.SegmentSize-1) / chunk.SegmentSize
	out.Files = uint64(len(n.f.m.Entries) + 1)
	out.NameLen = 255
	return 0
}

func (n *node) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	e := n.entry()
	if e == nil || e.Type != link.TypeFile {
		return nil, syscall.EISDIR
	}
	if off >= e.Size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(e.Size, off+int64(len(dest)))
	sequential := off == n.next.Load() && off > 0
	got, err := n.f.readAt(ctx, e, dest[:end-off], off)
	n.next.Store(off + int64(got))
	if err != nil {
		n.f.failed.Add(1)
		if got > 0 {
			return fuse.ReadResultData(dest[:got]), 0 // a short read; the next one reports the error
		}
		if errors.Is(err, context.Canceled) {
			return nil, syscall.EINTR
		}
		return nil, syscall.EIO
	}
	// Three quarters into a chunk read in order, fetch the next ones, so
	// that they are checked and open when the reads get there. (Not
	// sooner: the kernel's own read-ahead after a random read looks
	// sequential too, and a chunk is 4 MiB.)
	if at := off + int64(got); sequential && n.f.o.ReadAhead > 0 && at%chunk.Size >= chunk.Size*3/4 {
		ci := int(at / chunk.Size)
		for k := ci + 1; k <= ci+n.f.o.ReadAhead && k < len(e.Chunks); k++ {
			n.f.prefetch(e, k)
		}
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// readAt fills dest with the file's bytes at off (dest does not pass the
// end of the file).
func (f *FS) readAt(ctx context.Context, e *link.Entry, dest []byte, off int64) (int, error) {
	done := 0
	for done < len(dest) {
		pos := off + int64(done)
		ci := int(pos / chunk.Size)
		in := int(pos % chunk.Size)
		c := e.Chunks[ci]
		n := min(len(dest)-done, c.N-in)
		if c.IsHole() {
			clear(dest[done : done+n])
			done += n
			continue
		}
		b, err := f.chunk(ctx, e, ci)
		if err != nil {
			return done, err
		}
		done += copy(dest[done:done+n], b[in:])
	}
	return done, nil
}

// chunkKey names an opened chunk by all the link says of it.
type chunkKey struct{ id, key, sum string }

func keyOf(c link.Chunk) chunkKey { return chunkKey{c.ID, c.Key, c.Sum} }

// chunk returns chunk ci of e, opened and checked: from the cache, or
// fetched (once, however many reads want it).
func (f *FS) chunk(ctx context.Context, e *link.Entry, ci int) ([]byte, error) {
	k := keyOf(e.Chunks[ci])
	for {
		b, wait, claimed := f.cache.getOrClaim(k)
		if b != nil {
			return b, nil
		}
		if !claimed {
			select {
			case <-wait: // fetched by another read (or it failed: then try here)
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		b, err := f.fetch(ctx, e, ci)
		f.cache.finish(k, b)
		return b, err
	}
}

// prefetchTimeout bounds a fetch ahead of the reads, which no read waits
// for yet.
const prefetchTimeout = 2 * time.Minute

// prefetch fetches chunk ci of e into the cache in the background, unless
// it is a hole, cached or on its way.
func (f *FS) prefetch(e *link.Entry, ci int) {
	c := e.Chunks[ci]
	if c.IsHole() || !f.cache.claim(keyOf(c)) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), prefetchTimeout)
		defer cancel()
		b, _ := f.fetch(ctx, e, ci) // a failure is logged; the read that wants it tries again
		f.cache.finish(keyOf(c), b)
	}()
}

// fetch downloads chunk ci of e whole and checks it against the link
// (length, hash, then each segment under its content key) before opening
// it: nothing of a chunk that fails is returned.
func (f *FS) fetch(ctx context.Context, e *link.Entry, ci int) ([]byte, error) {
	c := e.Chunks[ci]
	sealed, err := f.o.Client.LinkChunk(ctx, f.o.LinkID, c.ID, make([]byte, 0, chunk.SealedSize(c.N)))
	if err != nil {
		return nil, f.readErr(e, ci, err)
	}
	if f.gone.CompareAndSwap(true, false) {
		f.log.Info("link: the server serves the link again")
	}
	f.fetched.Add(int64(len(sealed)))
	plain, err := c.Open(make([]byte, 0, c.N), sealed)
	if err != nil {
		return nil, f.readErr(e, ci, err)
	}
	return plain, nil
}

// readErr logs why a read failed and returns err. A revoked or expired link
// is said once (with what to do), not on every read.
func (f *FS) readErr(e *link.Entry, ci int, err error) error {
	name := e.Path
	if name == "" {
		name = f.m.Name
	}
	switch {
	case errors.Is(err, api.ErrLinkNotFound), errors.Is(err, api.ErrLinkExpired), errors.Is(err, api.ErrForbidden):
		if !f.gone.Swap(true) {
			f.log.Error("link: the server no longer serves this link (revoked, expired or its owner disabled): reads of data not already read fail with EIO; ask its owner for a new link, then unmount this one",
				"err", err)
		}
		f.log.Debug("link: read failed", "path", name, "chunk", ci, "err", err)
	case errors.Is(err, link.ErrChunk), errors.Is(err, chunk.ErrAuth):
		f.log.Error("link: a chunk failed its check against the link (its hash or its authentication: changed on the server or on the way): the read fails with EIO",
			"path", name, "chunk", ci, "err", err)
	case errors.Is(err, context.Canceled):
		f.log.Debug("link: read interrupted", "path", name, "err", err)
	default:
		f.log.Warn("link: read failed", "path", name, "chunk", ci, "err", err)
	}
	return err
}

// Owner is the owner a mount shows by default: the user who mounts it.
func Owner() (uid, gid uint32) { return uint32(os.Getuid()), uint32(os.Getgid()) }
