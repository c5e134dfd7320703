package fs

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/internal/meta"
	"kumo/remote/api"
)

// fnode is a kernel-visible inode; its state lives in Drive.states by id.
type fnode struct {
	gofs.Inode
	d  *Drive
	id uint64
}

// handle is an open file.
type handle struct {
	st      *nodeState
	mu      sync.Mutex
	nextOff int64 // where a sequential reader reads next
	seqRun  int
	write   bool
	wrote   atomic.Bool // data written through this handle since the last flush
}

var (
	_ gofs.NodeLookuper      = (*fnode)(nil)
	_ gofs.NodeGetattrer     = (*fnode)(nil)
	_ gofs.NodeSetattrer     = (*fnode)(nil)
	_ gofs.NodeCreater       = (*fnode)(nil)
	_ gofs.NodeMknoder       = (*fnode)(nil)
	_ gofs.NodeMkdirer       = (*fnode)(nil)
	_ gofs.NodeUnlinker      = (*fnode)(nil)
	_ gofs.NodeRmdirer       = (*fnode)(nil)
	_ gofs.NodeRenamer       = (*fnode)(nil)
	_ gofs.NodeLinker        = (*fnode)(nil)
	_ gofs.NodeSymlinker     = (*fnode)(nil)
	_ gofs.NodeReadlinker    = (*fnode)(nil)
	_ gofs.NodeOpener        = (*fnode)(nil)
	_ gofs.NodeReader        = (*fnode)(nil)
	_ gofs.NodeWriter        = (*fnode)(nil)
	_ gofs.NodeFlusher       = (*fnode)(nil)
	_ gofs.NodeFsyncer       = (*fnode)(nil)
	_ gofs.NodeReleaser      = (*fnode)(nil)
	_ gofs.NodeAllocater     = (*fnode)(nil)
	_ gofs.NodeStatfser      = (*fnode)(nil)
	_ gofs.NodeGetxattrer    = (*fnode)(nil)
	_ gofs.NodeSetxattrer    = (*fnode)(nil)
	_ gofs.NodeListxattrer   = (*fnode)(nil)
	_ gofs.NodeRemovexattrer = (*fnode)(nil)
	_ gofs.NodeOnForgetter   = (*fnode)(nil)
	_ gofs.FileLookuper      = (*dirHandle)(nil)
)

func (n *fnode) state() (*nodeState, syscall.Errno) {
	return n.d.stateFresh(n.id) // sharestale.go: a record a new roster refuses is fetched again
}

// fill writes st's attributes into out. Under d.mu.
func (d *Drive) fill(st *nodeState, out *fuse.Attr) {
	a := &st.attrs
	out.Ino = st.id
	out.Size = a.Size
	out.Mode = a.Mode
	if d.o.Umask != nil {
		out.Mode &^= *d.o.Umask & 0o777
	}
	out.Nlink = st.nlink
	out.Uid, out.Gid = a.UID, a.GID
	if d.o.UID != nil {
		out.Uid = *d.o.UID
	}
	if d.o.GID != nil {
		out.Gid = *d.o.GID
	}
	out.Rdev = a.Rdev
	setT := func(ns int64, s *uint64, n *uint32) {
		*s = uint64(ns / 1e9)
		*n = uint32(ns % 1e9)
	}
	setT(a.Atime, &out.Atime, &out.Atimensec)
	setT(a.Mtime, &out.Mtime, &out.Mtimensec)
	setT(a.Ctime, &out.Ctime, &out.Ctimensec)
	out.Blksize = segSize
	if st.isDir() {
		out.Size = 4096
	}
	out.Blocks = d.blocks(st)
}

// blocks estimates allocated 512-byte blocks: data chunks plus written data,
// plus what fallocate preallocated (up to its end or the size). Under d.mu.
func (d *Drive) blocks(st *nodeState) uint64 {
	if st.isDir() {
		return 8
	}
	var n uint64
	for i, r := range st.attrs.Chunks {
		if r.ID.IsZero() {
			continue
		}
		start := uint64(i) * uint64(1<<22)
		if start >= st.attrs.Size || start >= st.trunc {
			break
		}
		n += min(uint64(r.Len), st.attrs.Size-start)
	}
	n += uint64(st.queued)
	n = min(n, (st.attrs.Size+4095)&^4095)
	if p := st.prealloc; !p.empty() {
		n = min(n+p.bytes(), (max(st.attrs.Size, p.end)+4095)&^4095)
	}
	return (n + 511) / 512
}

func (d *Drive) newInode(ctx context.Context, parent *gofs.Inode, st *nodeState) *gofs.Inode {
	d.mu.Lock()
	if fn := d.inodes[st.id]; fn != nil {
		d.mu.Unlock()
		return &fn.Inode
	}
	d.mu.Unlock()
	fn := &fnode{d: d, id: st.id}
	// Gen: a share's drive started again (sharemember.go) gets new kernel
	// inodes, not those of its stopped predecessor, for the same node ids.
	ino := parent.NewInode(ctx, fn, gofs.StableAttr{Mode: st.attrs.Mode & syscall.S_IFMT, Ino: st.id, Gen: d.mem.gen})
	d.mu.Lock()
	if got, ok := ino.Operations().(*fnode); ok {
		d.inodes[st.id] = got
	}
	d.mu.Unlock()
	return ino
}

func (n *fnode) OnForget() {
	d := n.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inodes[n.id] == n {
		delete(d.inodes, n.id)
	}
	if st := d.states[n.id]; st != nil && st.opens == 0 && len(st.layers) == 0 && !st.deleted && n.id != api.RootID {
		delete(d.states, n.id)
	}
}

func (d *Drive) entryOut(st *nodeState, out *fuse.EntryOut) {
	d.mu.Lock()
	d.fill(st, &out.Attr)
	d.mu.Unlock()
}

func (n *fnode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.d.noteForeground()
	d := n.d
	if d.reserved(n.id, name) {
		if name == HistoryDirName { // a joined share's: MNT/Shared/NAME/.kumo-history
			return d.lookupHistory(ctx, n, out) // history.go
		}
		return d.lookupControl(ctx, n, name, out) // control.go
	}
	if d.sharedName(n.id, name) {
		return d.lookupSharedDir(ctx, n, out) // sharemember.go
	}
	st, e := d.lookupFresh(n.id, name) // sharestale.go
	if e != 0 {
		return nil, e
	}
	d.entryOut(st, out)
	return d.newInode(ctx, n.EmbeddedInode(), st), 0
}

// readdir lists the directory for the kernel, with each listed name's
// entry and what the listing depended on (Drive.list).
func (n *fnode) readdir() (_ []fuse.DirEntry, byName map[string]dirEnt, at listedAt, _ syscall.Errno) {
	n.d.noteForeground()
	d := n.d
	es, at, e := d.listFresh(n.id) // sharestale.go
	if e != 0 {
		return nil, nil, at, e
	}
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
	// "." and ".." as on any file system; they also keep a cached listing
	// from ever being empty, which the kernel could not invalidate (an empty
	// readdir cache has no page for NotifyContent to drop).
	parent := n.id // the root is its own parent
	if st, e := n.state(); e == 0 {
		d.mu.Lock()
		if st.parent != 0 {
			parent = st.parent
		}
		d.mu.Unlock()
	}
	list := make([]fuse.DirEntry, 0, len(es)+2)
	list = append(list, fuse.DirEntry{Name: ".", Ino: n.id, Mode: fuse.S_IFDIR}, fuse.DirEntry{Name: "..", Ino: parent, Mode: fuse.S_IFDIR})
	byName = make(map[string]dirEnt, len(es))
	for _, e := range es {
		list = append(list, fuse.DirEntry{Name: e.name, Ino: e.id, Mode: e.mode})
		if _, twice := byName[e.name]; twice {
			// A share's name under two generations: which one the name
			// means is the full lookup's choice (findEntryLocked).
			e.id = 0
		}
		byName[e.name] = e
	}
	if n.id == api.RootID {
		list = d.withSharedDir(list) // sharemember.go
	}
	return list, byName, at, 0
}

// OpendirHandle lets the kernel keep directory listings (FOPEN_CACHE_DIR):
// a repeated ls or find costs no round trip. The kernel drops a listing when
// it changes the directory itself; changes made elsewhere drop it through
// notifyEntry/notifyDelete.
func (n *fnode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n.d.noteForeground()
	if _, e := n.state(); e != 0 {
		return nil, 0, e
	}
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle is an open directory; the listing is taken at the first read.
type dirHandle struct {
	n      *fnode
	ds     gofs.DirStream
	listed map[string]dirEnt // each listed name's entry
	at     listedAt          // what the listing depended on
}

func (h *dirHandle) stream(ctx context.Context) syscall.Errno {
	if h.ds != nil {
		return 0
	}
	list, listed, at, e := h.n.readdir()
	if e != 0 {
		return e
	}
	h.ds, h.listed, h.at = gofs.NewListDirStream(list), listed, at
	return 0
}

// Lookup is readdirplus's lookup of each name it lists (go-fuse's
// FileLookuper). The listing opened and checked every entry, as a lookup
// does (checkEntry: the name sealed for this directory, this node and its
// kind, placed by the share set). While nothing that check depended on has
// changed (listedAt: the directory's entries, its key id, the share set;
// the node's key id and kind), the listed entry still names the node, and
// the name is not looked up and checked a second time: an rm -rf lists
// every directory it removes. The account's root (its Shared folder and
// control files) and anything else take the full lookup.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n, d := h.n, h.n.d
	if e, ok := h.listed[name]; ok && e.id != 0 && n.id != api.RootID {
		if ino := d.lookupListed(ctx, n, h.at, e, out); ino != nil {
			return ino, 0
		}
	}
	return n.Lookup(ctx, name, out)
}

// lookupListed is Lookup of e, listed in n at at: nil where listedStateLocked
// says the full lookup must answer.
func (d *Drive) lookupListed(ctx context.Context, n *fnode, at listedAt, e dirEnt, out *fuse.EntryOut) *gofs.Inode {
	d.noteForeground()
	d.mu.Lock()
	st := d.listedStateLocked(n.id, at, e)
	if st == nil {
		d.mu.Unlock()
		return nil
	}
	st.lastParent, st.lastName = n.id, e.name
	d.fill(st, &out.Attr)
	d.mu.Unlock()
	d.listedLookups.Add(1)
	return d.newInode(ctx, n.EmbeddedInode(), st)
}

// listedStateLocked is the state of the node entry e of directory dir names,
// listed at at; nil if anything the listing's check depended on changed
// since, or the node's state cannot be had or is refused. Under d.mu.
func (d *Drive) listedStateLocked(dir uint64, at listedAt, e dirEnt) *nodeState {
	p, err := d.stateLocked(dir)
	if err != nil || !at.same(listedAt{gen: d.store.EntriesGen(dir), pkid: p.kid, shares: d.sh.cur.Load()}) {
		return nil
	}
	st, err := d.stateLocked(e.id)
	if err != nil || d.staleStateLocked(st) || st.kid != e.kid || st.kind() != e.kind {
		return nil
	}
	return st
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if e := h.stream(ctx); e != 0 {
		return nil, e
	}
	if !h.ds.HasNext() {
		return nil, 0
	}
	de, e := h.ds.Next()
	return &de, e
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if e := h.stream(ctx); e != 0 {
		return e
	}
	if sd, ok := h.ds.(gofs.FileSeekdirer); ok {
		return sd.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (h *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if h.ds != nil {
		h.ds.Close()
	}
}

func (n *fnode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.d.noteForeground()
	var st *nodeState
	var e syscall.Errno
	if h, ok := f.(*handle); ok {
		st, e = h.st, n.d.heldFresh(h.st) // sharestale.go
	} else {
		st, e = n.state()
	}
	if e != 0 {
		return e
	}
	n.d.mu.Lock()
	n.d.fill(st, &out.Attr)
	n.d.mu.Unlock()
	return 0
}

func (n *fnode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	d := n.d
	if d.o.ReadOnly {
		return syscall.EROFS
	}
	d.noteChange(ctx)
	var st *nodeState
	var e syscall.Errno
	if h, ok := f.(*handle); ok {
		st = h.st
	} else {
		st, e = n.state()
	}
	if e != 0 {
		return e
	}
	if size, ok := in.GetSize(); ok {
		if st.isDir() {
			return syscall.EISDIR
		}
		if !isReg(st.attrs.Mode) {
			return syscall.EINVAL
		}
		d.mu.Lock()
		old := st.attrs.Size
		d.mu.Unlock()
		if e := d.truncate(ctx, st, size); e != 0 {
			return e
		}
		d.mu.Lock()
		if p := st.prealloc; size < old && !p.empty() {
			st.prealloc = p.cut(size) // as ext4: a cut frees what lies past the new end
			if err := d.persistLocked(st); err != nil {
				d.mu.Unlock()
				return syscall.EIO
			}
		}
		d.mu.Unlock()
	}
	mode, hasMode := in.GetMode()
	uid, hasUID := in.GetUID()
	gid, hasGID := in.GetGID()
	atime, hasA := in.GetATime()
	mtime, hasM := in.GetMTime()
	// Truncate or chown by a caller the kernel found unprivileged
	// (FUSE_HANDLE_KILLPRIV_V2, see killPrivOnWrite).
	kill := in.Valid&fuse.FATTR_KILL_SUIDGID != 0
	cuid, cgid := caller(ctx)
	if kill { // most files have neither bit: nothing to save then
		d.mu.Lock()
		kill = killSuidgid(st.attrs.Mode, st.attrs.GID, cuid, cgid) != st.attrs.Mode
		d.mu.Unlock()
	}
	if hasMode || hasUID || hasGID || hasA || hasM || kill {
		e := d.setAttrs(st, func(a *meta.Attrs) syscall.Errno {
			if kill { // before a chown's new group
				a.Mode = killSuidgid(a.Mode, a.GID, cuid, cgid)
			}
			if hasMode {
				a.Mode = a.Mode&syscall.S_IFMT | mode&0o7777
			}
			if hasUID {
				a.UID = uid
			}
			if hasGID {
				a.GID = gid
			}
			if hasA {
				a.Atime = atime.UnixNano()
			}
			if hasM {
				a.Mtime = mtime.UnixNano()
			}
			a.Ctime = nowNs()
			return 0
		})
		if e != 0 {
			return e
		}
	}
	// A size alone was saved by truncate; the upload pushes it.
	d.mu.Lock()
	d.fill(st, &out.Attr)
	d.mu.Unlock()
	return 0
}

func caller(ctx context.Context) (uint32, uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

func (n *fnode) mk(ctx context.Context, nn newNode, out *fuse.EntryOut) (*gofs.Inode, *nodeState, syscall.Errno) {
	d := n.d
	if d.o.ReadOnly {
		return nil, nil, syscall.EROFS
	}
	d.noteChange(ctx)
	if d.sharedName(n.id, nn.name) {
		return nil, nil, syscall.EEXIST
	}
	nn.uid, nn.gid = caller(ctx)
	st, e := d.create(n.id, nn)
	if e != 0 {
		return nil, nil, e
	}
	d.entryOut(st, out)
	return d.newInode(ctx, n.EmbeddedInode(), st), st, 0
}

func (n *fnode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ino, st, e := n.mk(ctx, newNode{name: name, mode: syscall.S_IFREG | mode&0o7777}, out)
	if e != 0 {
		return nil, nil, 0, e
	}
	h := n.d.open(st, flags)
	return ino, h, h.openFlags(), 0
}

func (n *fnode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFIFO, syscall.S_IFSOCK:
	case 0:
		mode |= syscall.S_IFREG
	case syscall.S_IFCHR, syscall.S_IFBLK:
		// Device nodes are stored like the rest; the kernel enforces who may make them.
	default:
		return nil, syscall.EINVAL
	}
	ino, _, e := n.mk(ctx, newNode{name: name, mode: mode, rdev: dev}, out)
	return ino, e
}

func (n *fnode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ino, _, e := n.mk(ctx, newNode{name: name, mode: syscall.S_IFDIR | mode&0o7777}, out)
	return ino, e
}

func (n *fnode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if len(target) > 4095 {
		return nil, syscall.ENAMETOOLONG
	}
	ino, _, e := n.mk(ctx, newNode{name: name, mode: syscall.S_IFLNK | 0o777, target: []byte(target)}, out)
	return ino, e
}

func (n *fnode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	st, e := n.state()
	if e != 0 {
		return nil, e
	}
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	if st.attrs.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return slices.Clone(st.attrs.Target), 0
}

func (n *fnode) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.d.o.ReadOnly {
		return syscall.EROFS
	}
	n.d.noteChange(ctx)
	if n.d.sharedName(n.id, name) {
		return syscall.EPERM
	}
	return n.d.unlink(n.id, name, false)
}

func (n *fnode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.d.o.ReadOnly {
		return syscall.EROFS
	}
	n.d.noteChange(ctx)
	if n.d.sharedName(n.id, name) {
		return syscall.EPERM
	}
	return n.d.unlink(n.id, name, true)
}

func (n *fnode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.d.o.ReadOnly {
		return syscall.EROFS
	}
	n.d.noteChange(ctx)
	np, ok := newParent.(*fnode)
	if !ok || np.d != n.d { // another tree: a shared folder joined (sharemember.go)
		return syscall.EXDEV
	}
	if n.d.sharedName(n.id, name) || n.d.sharedName(np.id, newName) {
		return syscall.EPERM
	}
	return n.d.rename(n.id, name, np.id, newName, flags)
}

func (n *fnode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d := n.d
	if d.o.ReadOnly {
		return nil, syscall.EROFS
	}
	d.noteChange(ctx)
	t, ok := target.(*fnode)
	if !ok || t.d != d {
		return nil, syscall.EXDEV
	}
	if d.sharedName(n.id, name) {
		return nil, syscall.EEXIST
	}
	st, e := d.link(t.id, n.id, name)
	if e != 0 {
		return nil, e
	}
	d.entryOut(st, out)
	return d.newInode(ctx, n.EmbeddedInode(), st), 0
}

// open makes a handle and counts the open.
func (d *Drive) open(st *nodeState, flags uint32) *handle {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if write {
		st.cacheMu.Lock() // waits for a page-cache store in flight (pagecache.go)
		defer st.cacheMu.Unlock()
	}
	d.mu.Lock()
	st.opens++
	if write {
		st.writers++
	}
	d.mu.Unlock()
	return &handle{st: st, write: write}
}

func (n *fnode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n.d.noteForeground()
	d := n.d
	st, e := n.state()
	if e != 0 {
		return nil, 0, e
	}
	if d.o.ReadOnly && (flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0) {
		return nil, 0, syscall.EROFS
	}
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY && isReg(st.attrs.Mode) {
		if e := d.truncate(ctx, st, 0); e != 0 {
			return nil, 0, e
		}
	}
	h := d.open(st, flags)
	if flags&syscall.O_TRUNC != 0 {
		h.wrote.Store(true)
	}
	return h, h.openFlags(), 0
}

// openFlags are the kernel's flags for a new handle. The kernel keeps the
// file's pages (FOPEN_KEEP_CACHE, above). A handle that cannot write has
// nothing for a close to save, so the kernel is told not to send FLUSH at
// its close (FOPEN_NOFLUSH): a round trip less for every file read (git
// add, grep, a build's reads), each one a close(2) waiting on the daemon.
// Locks do not need it either: the kernel keeps them (EnableLocks off).
func (h *handle) openFlags() uint32 {
	if h.write {
		return fuse.FOPEN_KEEP_CACHE
	}
	return fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
}

func (n *fnode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.d.noteForeground()
	h, ok := f.(*handle)
	if !ok {
		return nil, syscall.EBADF
	}
	h.mu.Lock()
	seq := off == h.nextOff && off > 0 || h.seqRun > 0 && off >= h.nextOff && off < h.nextOff+(1<<20)
	if seq {
		h.seqRun++
	} else {
		h.seqRun = 0
	}
	h.nextOff = off + int64(len(dest))
	h.mu.Unlock()
	// A handle opened before a roster raised its shared folder's lowest
	// generation: its data is read once the node's record is fetched and
	// checked under the new roster (sharestale.go).
	if e := n.d.heldFresh(h.st); e != 0 {
		return nil, e
	}
	ctx, cancel := context.WithTimeout(ctx, readTimeout+5*time.Second)
	defer cancel()
	var spare *spareSegment
	if !seq && off != 0 {
		spare = &spareSegment{}
	}
	got, err := n.d.readAt(ctx, h.st, dest, off, seq || off == 0, spare)
	if err != nil {
		return nil, errno(err)
	}
	n.d.noteData(got)
	if spare != nil && spare.data != nil {
		// After the answer: the kernel holds this read's pages until then.
		go n.d.storeSpare(n, h.st, spare, off, len(dest))
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *fnode) Write(ctx context.Context, f gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	h, ok := f.(*handle)
	if !ok {
		return 0, syscall.EBADF
	}
	if n.d.o.ReadOnly {
		return 0, syscall.EROFS
	}
	h.wrote.Store(true)
	if e := n.d.killPrivOnWrite(ctx, n, h.st); e != 0 {
		return 0, e
	}
	w, e := n.d.write(ctx, h.st, data, off)
	n.d.noteData(w)
	return uint32(w), e
}

// xattrCapability holds a file's capabilities (setcap).
const xattrCapability = "security.capability"

// killPrivOnWrite does what the kernel leaves to the daemon once
// FUSE_HANDLE_KILLPRIV_V2 is negotiated (fs/mount.go), as Linux does for
// local files: a write by a caller without CAP_FSETID drops setuid and
// setgid (see killSuidgid). The daemon cannot see capabilities; it takes
// root for CAP_FSETID. A write also drops the file's capabilities: the
// kernel still does that itself before the write comes here, so this only
// makes sure of it.
func (d *Drive) killPrivOnWrite(ctx context.Context, n *fnode, st *nodeState) syscall.Errno {
	uid, gid := caller(ctx)
	d.mu.Lock()
	kill := uid != 0 && killSuidgid(st.attrs.Mode, st.attrs.GID, uid, gid) != st.attrs.Mode
	_, hasCap := st.attrs.Xattrs[xattrCapability]
	d.mu.Unlock()
	if !kill && !hasCap {
		return 0
	}
	e := d.setAttrs(st, func(a *meta.Attrs) syscall.Errno {
		if kill {
			a.Mode = killSuidgid(a.Mode, a.GID, uid, gid)
		}
		delete(a.Xattrs, xattrCapability)
		a.Ctime = nowNs()
		return 0
	})
	if e == 0 && kill {
		// The kernel keeps the old mode (setuid!) for the attribute
		// timeout otherwise. Attributes only (offset -1): no page lock.
		go n.NotifyContent(-1, 0)
	}
	return e
}

// killSuidgid is mode after a write, truncate or chown by (uid, gid) that
// drops privileges, decided as Linux does for local files: setuid goes;
// setgid goes if group execute is set, or if the caller is neither root nor
// in the file's group (the daemon sees only the caller's primary group).
// Every non-directory, as in Linux's chown: fifos, sockets and device nodes
// too (only a chown reaches them here).
func killSuidgid(mode, fileGID, uid, gid uint32) uint32 {
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		return mode
	}
	mode &^= syscall.S_ISUID
	if mode&syscall.S_IXGRP != 0 || uid != 0 && gid != fileGID {
		mode &^= syscall.S_ISGID
	}
	return mode
}

func (n *fnode) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	h, ok := f.(*handle)
	if !ok || !h.write {
		return 0
	}
	n.d.noteChange(ctx)
	if !h.wrote.Swap(false) && !n.d.hasUnsavedAttrs(h.st) {
		return 0
	}
	// close is not a disk flush (unless --durable-close): the data and
	// attributes reach the store's files, and fsync makes them durable.
	return n.d.makeDurable(h.st, true, n.d.o.DurableClose)
}

// nothingToSave reports a node whose fsync has nothing of its own to write:
// no data layers (written data not uploaded) and no attributes kept in
// memory for a writer's close.
func (d *Drive) nothingToSave(st *nodeState) bool {
	st.dmu.RLock()
	layers := len(st.layers)
	st.dmu.RUnlock()
	return layers == 0 && !d.hasUnsavedAttrs(st)
}

func (d *Drive) hasUnsavedAttrs(st *nodeState) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return st.unsavedAttrs
}

func (n *fnode) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	d := n.d
	// Through a handle, the state it holds: n.state() would fetch a shared
	// node's stale record from the cloud first (sharestale.go), for nothing.
	var st *nodeState
	var e syscall.Errno
	if h, ok := f.(*handle); ok {
		st = h.st
	} else if st, e = n.state(); e != 0 {
		return e
	}
	if d.nothingToSave(st) {
		// A directory, or a file with no data or attributes of its own
		// waiting: what it needs durable are records the local store holds
		// already, so this is a sync of the tree (no device flush when
		// that is synced already; sqlite fsyncs the directory after
		// creating its journal, whose fsync synced the tree).
		if err := d.store.SyncTree(); err != nil {
			d.log.Error("syncing local store", "err", err)
			return syscall.EIO
		}
	} else if e := d.makeDurable(st, d.o.FsyncRemote, true); e != 0 {
		return e
	}
	if d.o.FsyncRemote {
		if err := d.Flush(ctx); err != nil {
			d.log.Warn("fsync=remote: could not push", "node", st.id, "err", err)
			return syscall.EIO
		}
	}
	return 0
}

func (n *fnode) Release(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	h, ok := f.(*handle)
	if !ok {
		return 0
	}
	e := n.d.release(h)
	if h.write {
		n.d.afterWriter(n, h.st)
	}
	return e
}

func (n *fnode) Allocate(ctx context.Context, f gofs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	h, ok := f.(*handle)
	if !ok {
		return syscall.EBADF
	}
	return n.d.fallocate(ctx, h.st, off, size, mode)
}

func (n *fnode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	d := n.d
	d.stat.Lock()
	a := d.stat.account
	d.stat.Unlock()
	const bsize = 4096
	limit := a.QuotaLimit
	if limit <= 0 {
		limit = 1 << 50
	}
	used := a.LiveUsed() + d.queuedBytes() // history gives way: its room is free
	limit, free := d.spaceLimit(limit, used)
	out.Bsize, out.Frsize = bsize, bsize
	out.Blocks = uint64(limit) / bsize
	out.Bfree = uint64(free) / bsize
	out.Bavail = out.Bfree
	out.Files = 1 << 40
	out.Ffree = 1 << 39
	out.NameLen = 255
	return 0
}

// --- xattrs ---

const xattrMax = 64 << 10

// xattrAllowed reports the names the drive stores: the user, trusted and
// security namespaces. Not stored, and refused with EOPNOTSUPP like a file
// system without them: system.* (POSIX ACLs: permissions are the mode bits;
// Setxattr sets an access ACL a mode can say as that mode, acl.go) and
// security.selinux (SELinux labels a FUSE mount as a whole, never per
// file). EOPNOTSUPP rather than ENODATA also tells ls, cp and rsync to stop
// asking for the rest of the mount, which saves `ls -l` two round trips per
// file.
func xattrAllowed(name string) bool {
	if name == "security.selinux" {
		return false
	}
	for _, p := range []string{"user.", "trusted.", "security."} {
		if strings.HasPrefix(name, p) && len(name) > len(p) {
			return true
		}
	}
	return false
}

func (n *fnode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	n.d.noteForeground()
	if !xattrAllowed(attr) {
		return 0, syscall.EOPNOTSUPP // whatever the node: no state lookup
	}
	st, e := n.state()
	if e != 0 {
		return 0, e
	}
	n.d.mu.Lock()
	v, ok := st.attrs.Xattrs[attr]
	n.d.mu.Unlock()
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *fnode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	d := n.d
	if d.o.ReadOnly {
		return syscall.EROFS
	}
	if attr == xattrACLAccess {
		return n.setACLAccess(ctx, data) // acl.go
	}
	if !xattrAllowed(attr) {
		return syscall.EOPNOTSUPP
	}
	if len(attr) > 255 {
		return syscall.ERANGE
	}
	if len(data) > xattrMax {
		return syscall.E2BIG
	}
	st, e := n.state()
	if e != 0 {
		return e
	}
	if e := d.checkXattrQuota(st, attr, data); e != 0 {
		return e
	}
	const xCreate, xReplace = 1, 2
	return d.setAttrs(st, func(a *meta.Attrs) syscall.Errno {
		_, ok := a.Xattrs[attr]
		if flags&xCreate != 0 && ok {
			return syscall.EEXIST
		}
		if flags&xReplace != 0 && !ok {
			return syscall.ENODATA
		}
		if a.Xattrs == nil {
			a.Xattrs = map[string][]byte{}
		}
		a.Xattrs[attr] = slices.Clone(data)
		a.Ctime = nowNs()
		return 0
	})
}

func (n *fnode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	d := n.d
	if d.o.ReadOnly {
		return syscall.EROFS
	}
	if attr == xattrACLAccess || attr == xattrACLDefault {
		return 0 // none is stored (acl.go): removing one leaves the mode, as on ext4
	}
	if !xattrAllowed(attr) {
		return syscall.EOPNOTSUPP
	}
	st, e := n.state()
	if e != 0 {
		return e
	}
	return d.setAttrs(st, func(a *meta.Attrs) syscall.Errno {
		if _, ok := a.Xattrs[attr]; !ok {
			return syscall.ENODATA
		}
		delete(a.Xattrs, attr)
		a.Ctime = nowNs()
		return 0
	})
}

func (n *fnode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	n.d.noteForeground()
	st, e := n.state()
	if e != 0 {
		return 0, e
	}
	n.d.mu.Lock()
	var names []string
	for k := range st.attrs.Xattrs {
		if xattrAllowed(k) {
			names = append(names, k)
		}
	}
	n.d.mu.Unlock()
	sort.Strings(names)
	var b []byte
	for _, k := range names {
		b = append(b, k...)
		b = append(b, 0)
	}
	if len(dest) == 0 {
		return uint32(len(b)), 0
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// --- kernel notifications ---

func (d *Drive) inode(id uint64) *fnode {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inodes[id]
}

// notifyEntry tells the kernel that parent's entry name changed behind its
// back, and drops parent's cached listing.
func (d *Drive) notifyEntry(parent uint64, name string) {
	if p := d.inode(parent); p != nil {
		p.NotifyEntry(name)
		p.NotifyContent(0, 0)
	}
}

func (d *Drive) notifyDelete(parent uint64, name string, st *nodeState) {
	p := d.inode(parent)
	if p == nil {
		return
	}
	p.NotifyContent(0, 0) // the cached listing
	if st != nil {
		if c := d.inode(st.id); c != nil {
			if p.NotifyDelete(name, &c.Inode) == 0 {
				return
			}
		}
	}
	p.NotifyEntry(name)
}

func (d *Drive) notifyContent(id uint64) {
	d.mu.Lock()
	st, n := d.states[id], d.inodes[id]
	d.mu.Unlock()
	if st != nil {
		st.cacheMu.Lock() // after a page-cache store in flight (pagecache.go)
		defer st.cacheMu.Unlock()
	}
	if n != nil {
		n.NotifyContent(0, 0)
	}
}
