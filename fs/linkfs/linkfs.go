// Package linkfs is a read-only FUSE view of a read-only link's manifest
// (internal/link): `kumo mount URL MNT` with no account.
//
// The tree is the manifest's, fixed for the life of the mount (a link is a
// snapshot). Reads fetch only the 64 KiB segments they need, with HTTP Range
// on the link's chunk route, and open each under the chunk's content key:
// a segment that fails authentication is EIO and logged, never wrong bytes.
// Opened segments stay in a small bounded cache, and sequential reads fetch
// a little ahead, so a sequential read of a file fetches each segment once.
// Every write is EROFS.
package linkfs

import (
	"context"
	"encoding/hex"
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
	DefaultCacheBytes = 8 << 20 // opened segments kept in memory
	DefaultReadAhead  = 16      // most segments fetched ahead of a sequential read (1 MiB)
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

	CacheBytes int // bytes of opened segments kept; 0: DefaultCacheBytes
	ReadAhead  int // most segments fetched ahead of a sequential read; 0: DefaultReadAhead, < 0: none

	UID, GID           uint32 // owner shown for every entry
	AllowOther         bool   // let other users in (with default_permissions)
	DefaultPermissions bool
	FsName             string // source shown in /proc/mounts; "" : "kumo-link"
	Debug              bool
}

// FS is a mounted link.
type FS struct {
	o      Options
	m      *link.Manifest
	log    *slog.Logger
	kids   map[int][]int // directory entry index (root: -1) -> children, sorted by name
	names  []string      // last path element of each entry
	total  int64         // bytes of all files
	srv    *fuse.Server
	cache  *segCache
	gone   atomic.Bool // the server said the link is revoked or expired (logged once)
	failed atomic.Int64
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
		cache: newSegCache(o.CacheBytes / chunk.SegmentSize)}
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
// a segment that did not authenticate.
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
	// ahead is the current read-ahead, in segments: it doubles on each
	// sequential read up to Options.ReadAhead and falls back on a seek.
	ahead atomic.Int32
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
	return nil, fuse.FOPEN_KEEP_CACHE, 0
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
	ahead := 0
	if n.f.o.ReadAhead > 0 {
		if off == n.next.Load() && off > 0 {
			a := min(max(2*n.ahead.Load(), 2), int32(n.f.o.ReadAhead))
			n.ahead.Store(a)
			ahead = int(a)
		} else {
			n.ahead.Store(0)
		}
	}
	got, err := n.f.readAt(ctx, e, dest[:end-off], off, ahead)
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
	return fuse.ReadResultData(dest[:got]), 0
}

// readAt fills dest with the file's bytes at off (dest does not pass the
// end of the file), fetching ahead more segments after each chunk's part.
func (f *FS) readAt(ctx context.Context, e *link.Entry, dest []byte, off int64, ahead int) (int, error) {
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
		si := in / chunk.SegmentSize
		seg, err := f.segment(ctx, e, ci, si, ahead)
		if err != nil {
			return done, err
		}
		n = copy(dest[done:], seg[in-si*chunk.SegmentSize:])
		done += n
	}
	return done, nil
}

// segKey names an opened segment: the chunk (id and the key it was
// authenticated under) and the segment's index.
type segKey struct {
	id, key string
	seg     int
}

// segment returns segment si of chunk ci of e, opened: from the cache, or
// fetched with up to ahead segments after it (same chunk) in one request.
func (f *FS) segment(ctx context.Context, e *link.Entry, ci, si, ahead int) ([]byte, error) {
	c := e.Chunks[ci]
	k := segKey{c.ID, c.Key, si}
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
		// Claim the segments after si that are neither cached nor on their way.
		last := si
		for last < min(si+ahead, chunk.Segments(c.N)-1) && f.cache.claim(segKey{c.ID, c.Key, last + 1}) {
			last++
		}
		segs, err := f.fetch(ctx, e, ci, si, last)
		for j := si; j <= last; j++ {
			var b []byte
			if err == nil {
				b = segs[j-si]
			}
			f.cache.finish(segKey{c.ID, c.Key, j}, b)
		}
		if err != nil {
			return nil, err
		}
		return segs[0], nil
	}
}

// fetch downloads segments first..last of chunk ci of e with one Range
// request and opens each under the chunk's content key.
func (f *FS) fetch(ctx context.Context, e *link.Entry, ci, first, last int) ([][]byte, error) {
	c := e.Chunks[ci]
	var key [32]byte
	if _, err := hex.Decode(key[:], []byte(c.Key)); err != nil {
		return nil, f.readErr(e, ci, first, fmt.Errorf("chunk key: %w", err))
	}
	o, err := chunk.NewKeyOpener(key, c.N)
	if err != nil {
		return nil, f.readErr(e, ci, first, err)
	}
	start, _ := chunk.SegmentRange(c.N, first)
	lo, ln := chunk.SegmentRange(c.N, last)
	sealed, err := f.o.Client.LinkChunkRange(ctx, f.o.LinkID, c.ID, int64(start), int64(lo+ln-start), nil)
	if err != nil {
		return nil, f.readErr(e, ci, first, err)
	}
	if f.gone.CompareAndSwap(true, false) {
		f.log.Info("link: the server serves the link again")
	}
	out := make([][]byte, 0, last-first+1)
	for i := first; i <= last; i++ {
		so, sn := chunk.SegmentRange(c.N, i)
		so -= start
		if so+sn > len(sealed) {
			return nil, f.readErr(e, ci, i, fmt.Errorf("%w: the server sent %d bytes, short of segment %d", chunk.ErrAuth, len(sealed), i))
		}
		plain, err := o.OpenSegment(make([]byte, 0, sn-chunk.Overhead), i, sealed[so:so+sn])
		if err != nil {
			return nil, f.readErr(e, ci, i, err)
		}
		out = append(out, plain)
	}
	return out, nil
}

// readErr logs why a read failed and returns err. A revoked or expired link
// is said once (with what to do), not on every read.
func (f *FS) readErr(e *link.Entry, ci, si int, err error) error {
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
		f.log.Debug("link: read failed", "path", name, "chunk", ci, "segment", si, "err", err)
	case errors.Is(err, chunk.ErrAuth):
		f.log.Error("link: a segment failed authentication (changed on the server or on the way): the read fails with EIO",
			"path", name, "chunk", ci, "segment", si, "err", err)
	case errors.Is(err, context.Canceled):
		f.log.Debug("link: read interrupted", "path", name, "err", err)
	default:
		f.log.Warn("link: read failed", "path", name, "chunk", ci, "segment", si, "err", err)
	}
	return err
}

// Owner is the owner a mount shows by default: the user who mounts it.
func Owner() (uid, gid uint32) { return uint32(os.Getuid()), uint32(os.Getgid()) }
