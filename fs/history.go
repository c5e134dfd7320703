package fs

// The history view: MNT/.kumo-history/TIME/ is the whole tree as it was at
// TIME, read-only, from the versions the cloud keeps (remote/server
// history.go). It is reachable by name and never listed in the root, like
// the control files, so find, rsync and backup tools never walk it. Listing
// .kumo-history shows one entry per hour that had changes in the last 7 days
// and one per day before, named by its start: the tree just before those
// changes. Any RFC 3339 time of the retention window works by name.
// A folder shared with the account has its own, MNT/Shared/NAME/.kumo-history
// (the member drive's root; a name there shadows an entry of that name in
// the folder), from the owner's history of that folder only; its listing
// has the hours in which a version of the folder's records ended (not
// those in which something was only created there).
//
// Snapshot nodes live apart from the drive's tree state: they never enter
// d.states, so a snapshot read of an old version is not mistaken for a
// rollback of the live tree. Every name and record is authenticated as in
// the live tree; chunks go through the same fetcher and chunk cache (a
// shared folder's whole, checked against their ids). One rule differs: a
// shared folder's kept version of a key generation below the roster's
// lowest accepted one (kept from before a writer's removal and the re-seal)
// opens if the owner or a current writer signed it (verifyPast).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/fs/rofs"
	"kumo/internal/control"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/internal/size"
	"kumo/remote/api"
	"kumo/remote/pathops"
)

// HistoryDirName is the root name of the history view.
const HistoryDirName = ".kumo-history"

// historyHourly is how far back the listing of HistoryDirName has one entry
// per changed hour; before that, one per changed day.
const historyHourly = 7 * 24 * time.Hour

// histIno is the inode number of node id in the snapshot at at: stable, so
// hard links in a snapshot share one (cp -a, rsync -H), with the top bit set
// so it never meets a live node id (63-bit).
func histIno(at int64, id uint64) uint64 {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(at))
	binary.LittleEndian.PutUint64(b[8:], id)
	h.Write(b[:])
	return h.Sum64() | ctlInoBase
}

// histRoot is MNT/.kumo-history.
type histRoot struct {
	gofs.Inode
	rofs.ReadOnly
	d *Drive
}

var (
	_ gofs.NodeLookuper  = (*histRoot)(nil)
	_ gofs.NodeReaddirer = (*histRoot)(nil)
	_ gofs.NodeGetattrer = (*histRoot)(nil)
)

func (d *Drive) lookupHistory(ctx context.Context, root *fnode, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d.histAttr(&out.Attr)
	out.SetEntryTimeout(time.Second)
	out.SetAttrTimeout(time.Second)
	return root.NewInode(ctx, &histRoot{d: d}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ctlInoBase - 1}), 0
}

func (d *Drive) histAttr(out *fuse.Attr) {
	uid, gid := d.owner()
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	out.Ino = ctlInoBase - 1
	out.Uid, out.Gid = uid, gid
}

func (h *histRoot) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	h.d.histAttr(&out.Attr)
	return 0
}

// parseMoment reads a snapshot name: an RFC 3339 time, UTC or with an offset.
func parseMoment(name string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, name)
	return t, err == nil
}

func (h *histRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, ok := parseMoment(name)
	if !ok || t.After(time.Now()) {
		return nil, syscall.ENOENT
	}
	at := t.UnixNano()
	// A joined share's drive: its root is the share's root, its client
	// scoped to the share, so the cloud answers from the share's history.
	n, err := h.d.c.NodeAt(ctx, h.d.rootID(), at)
	if err != nil {
		return nil, h.d.histErr("snapshot root", err)
	}
	// decodeBy authenticates the record as n.ID's, not n.ID as the node
	// asked for: a server could answer with another node's valid record.
	if n.ID != h.d.rootID() {
		h.d.authFailure("snapshot root is another node", "want", h.d.rootID(), "got", n.ID, "at", at)
		return nil, syscall.EIO
	}
	sn, e := h.d.snapNode(n, at)
	if e != 0 {
		return nil, e
	}
	sn.fill(&out.Attr)
	sn.timeouts(out)
	return h.NewInode(ctx, sn, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: histIno(at, api.RootID)}), 0
}

func (h *histRoot) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	r, err := h.d.c.HistoryTimes(ctx)
	if err != nil {
		return nil, h.d.histErr("history times", err)
	}
	now := time.Now()
	var names []string
	seen := map[string]bool{}
	for _, hour := range r.Hours {
		// The tree just before that hour's (or day's) changes; no earlier
		// than history goes back.
		start := time.Unix(0, hour).UTC()
		if now.Sub(start) > historyHourly {
			start = start.Truncate(24 * time.Hour)
		}
		if start.UnixNano() < r.From {
			start = time.Unix(0, r.From).UTC()
		}
		name := start.Format(time.RFC3339Nano)
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	sort.Strings(names)
	list := []fuse.DirEntry{{Name: ".", Mode: fuse.S_IFDIR}, {Name: "..", Mode: fuse.S_IFDIR}}
	for _, n := range names {
		list = append(list, fuse.DirEntry{Name: n, Mode: fuse.S_IFDIR})
	}
	return gofs.NewListDirStream(list), 0
}

// histErr maps a failed history read to an errno: a moment older than the
// window or a missing node is ENOENT, the rest as errno maps it (EINTR for
// an interrupted request, else EIO, logged).
func (d *Drive) histErr(what string, err error) syscall.Errno {
	if errors.Is(err, api.ErrHistoryGone) || errors.Is(err, api.ErrNotFound) {
		return syscall.ENOENT
	}
	e := errno(err) // an interrupted request's cancellation is EINTR
	if e == syscall.EIO {
		d.log.Warn("history: read failed", "what", what, "err", err)
	}
	return e
}

// snapNode is a node of a snapshot: a directory, file or symlink as it was at at.
type snapNode struct {
	gofs.Inode
	rofs.ReadOnly
	d  *Drive
	at int64
	st *nodeState // decoded attributes; never in d.states

	mu      sync.Mutex
	entries map[string]*snapNode // directories: the listing at at, by name, once read
	order   []string
	bad     map[string]bool // name MACs of entries that failed authentication: EIO by name
}

var (
	_ gofs.NodeLookuper    = (*snapNode)(nil)
	_ gofs.NodeReaddirer   = (*snapNode)(nil)
	_ gofs.NodeGetattrer   = (*snapNode)(nil)
	_ gofs.NodeOpener      = (*snapNode)(nil)
	_ gofs.NodeReader      = (*snapNode)(nil)
	_ gofs.NodeReadlinker  = (*snapNode)(nil)
	_ gofs.NodeGetxattrer  = (*snapNode)(nil)
	_ gofs.NodeListxattrer = (*snapNode)(nil)
	_ gofs.NodeRenamer     = (*snapNode)(nil) // every write: EROFS (rofs.ReadOnly)
	_ gofs.NodeMkdirer     = (*histRoot)(nil)
)

// snapNode decodes (authenticates) node n as it was at at.
func (d *Drive) snapNode(n api.Node, at int64) (*snapNode, syscall.Errno) {
	st, err := d.decodeBy(d.verifyPast, n)
	if err != nil {
		return nil, syscall.EIO // decode logged and counted the failure
	}
	return &snapNode{d: d, at: at, st: st}, 0
}

func (s *snapNode) fill(out *fuse.Attr) {
	a := &s.st.attrs
	out.Ino = histIno(s.at, s.st.id)
	out.Mode = a.Mode
	out.Size = a.Size
	out.Blocks = (a.Size + 511) / 512
	out.Nlink = max(s.st.nlink, 1)
	if s.st.typ == api.TypeDir {
		out.Nlink = 2
	}
	out.Uid, out.Gid, out.Rdev = a.UID, a.GID, a.Rdev
	out.SetTimes(ts(a.Atime), ts(a.Mtime), ts(a.Ctime))
	out.Blksize = segSize
}

func ts(ns int64) *time.Time {
	t := time.Unix(0, ns)
	return &t
}

// timeouts: a snapshot of the past does not change; one of a moment within
// the last minutes might still gain a change committed at that time.
func (s *snapNode) timeouts(out *fuse.EntryOut) {
	d := time.Second
	if time.Since(time.Unix(0, s.at)) > time.Minute {
		d = time.Hour
	}
	out.SetEntryTimeout(d)
	out.SetAttrTimeout(d)
}

func (s *snapNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s.fill(&out.Attr)
	return 0
}

// list reads the directory's entries at s.at once, authenticating each name.
func (s *snapNode) list(ctx context.Context) (map[string]*snapNode, []string, syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries != nil {
		return s.entries, s.order, 0
	}
	if s.st.typ != api.TypeDir {
		return nil, nil, syscall.ENOTDIR
	}
	es, err := s.d.c.ListAt(ctx, s.st.id, s.at)
	if err != nil {
		return nil, nil, s.d.histErr("snapshot listing", err)
	}
	m := make(map[string]*snapNode, len(es))
	order := make([]string, 0, len(es))
	bad := map[string]bool{}
	for _, e := range es {
		kind := meta.KindOf(e.Node.Type == api.TypeDir)
		name, err := s.d.openPastName(s.st.id, e.Node.ID, kind, e.NameMAC, e.Name) // signature checked in a shared folder
		if err == nil {
			ck, _ := meta.RecordKeyID(e.Node.Attrs)
			err = s.d.checkPlacement(s.st.kid, e.Name, e.Node.ID, ck)
		}
		if err != nil {
			s.d.authFailure("snapshot entry name fails authentication", "parent", s.st.id, "child", e.Node.ID, "at", s.at, "err", err)
			bad[e.NameMAC] = true
			continue
		}
		if s.d.reserved(s.st.id, string(name)) {
			continue
		}
		if _, dup := m[string(name)]; dup {
			s.d.authFailure("snapshot lists a name twice", "parent", s.st.id, "at", s.at)
			continue
		}
		child, errno := s.d.snapNode(e.Node, s.at)
		if errno != 0 {
			bad[e.NameMAC] = true // logged and counted by decode
			continue
		}
		m[string(name)] = child
		order = append(order, string(name))
	}
	sort.Strings(order)
	s.entries, s.order, s.bad = m, order, bad
	return m, order, 0
}

func (s *snapNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	m, _, e := s.list(ctx)
	if e != 0 {
		return nil, e
	}
	c, ok := m[name]
	if !ok {
		for _, mac := range s.d.nameMACs(s.st.kid, s.st.id, name) {
			if s.bad[mac] {
				return nil, syscall.EIO // the cloud's answer for this name failed authentication
			}
		}
		return nil, syscall.ENOENT
	}
	child := &snapNode{d: s.d, at: s.at, st: c.st} // a fresh inode each lookup; go-fuse keeps one per Ino
	child.fill(&out.Attr)
	child.timeouts(out)
	return s.NewInode(ctx, child, gofs.StableAttr{Mode: child.st.attrs.Mode & syscall.S_IFMT, Ino: histIno(s.at, child.st.id)}), 0
}

func (s *snapNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	m, order, e := s.list(ctx)
	if e != 0 {
		return nil, e
	}
	list := make([]fuse.DirEntry, 0, len(order)+2)
	list = append(list, fuse.DirEntry{Name: ".", Mode: fuse.S_IFDIR}, fuse.DirEntry{Name: "..", Mode: fuse.S_IFDIR})
	for _, name := range order {
		c := m[name]
		list = append(list, fuse.DirEntry{Name: name, Mode: c.st.attrs.Mode & syscall.S_IFMT, Ino: histIno(s.at, c.st.id)})
	}
	return gofs.NewListDirStream(list), 0
}

func (s *snapNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if s.st.typ == api.TypeDir {
		return nil, 0, syscall.EISDIR
	}
	return nil, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0 // read-only: nothing for a close to flush
}

func (s *snapNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := s.d.readAt(ctx, s.st, dest, off, true, nil)
	if err != nil {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (s *snapNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if s.st.attrs.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return s.st.attrs.Target, 0
}

func (s *snapNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := s.st.attrs.Xattrs[attr]
	if !ok || !xattrAllowed(attr) {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (s *snapNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	names := make([]string, 0, len(s.st.attrs.Xattrs))
	for k := range s.st.attrs.Xattrs {
		if xattrAllowed(k) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		b = append(append(b, k...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// verifyPast is verifyRecord for a kept version: a record of a share
// below the roster's lowest accepted generation is checked by the history
// rule (pathops.Share.VerifyHistory: signed by the owner or a current
// writer; a removed or demoted writer's is refused), not refused whoever
// signed it. Such a record never enters the live tree's state.
func (d *Drive) verifyPast(kind keys.RecordKind, id uint64, nameMAC string, b []byte) ([]byte, *shareSet, error) {
	s := d.shares()
	if kid, ok := meta.RecordKeyID(b); ok && kid.Share != 0 {
		if sh := s.byID[kid.Share]; sh != nil && kid.Gen < sh.Roster.MinGen {
			sealed, err := sh.VerifyHistory(kind, id, nameMAC, b)
			return sealed, s, err
		}
	}
	return d.verifyRecord(kind, id, nameMAC, b)
}

// openPastName is openName for a kept version (verifyPast).
func (d *Drive) openPastName(parent, child uint64, kind meta.Kind, nameMAC string, b []byte) ([]byte, error) {
	return d.openNameBy(d.verifyPast, parent, child, kind, nameMAC, b)
}

// pathFS is the path-level view of the drive's account (remote/pathops),
// for the control file's restore and link: they work on the cloud's tree,
// after the drive's own changes are uploaded.
func (d *Drive) pathFS() *pathops.FS { return pathops.New(d.c, d.o.Session.Subkeys()) }

// restoreFS is pathFS opening (and writing, signed with the account's
// identity) the folders the drive holds shared, so that a restore there
// reads their kept versions and writes under their current generation.
func (d *Drive) restoreFS() *pathops.FS {
	f := d.pathFS()
	list := d.heldShares()
	if len(list) == 0 || d.o.Identity == nil {
		return f
	}
	return f.WithShares(d.o.Identity, list...)
}

// heldShares returns copies of the shares the drive holds (not the
// provisional ones: the server does not list them yet), for a path FS's
// WithShares, which fills in their chunk keys: not on the drive's own.
func (d *Drive) heldShares() []*pathops.Share {
	s := d.shares()
	var list []*pathops.Share
	for id, sh := range s.byID {
		if !s.provisional[id] {
			c := *sh
			list = append(list, &c)
		}
	}
	return list
}

// restoreTarget returns the path FS a restore of drive path p runs on and
// the path in it: the account's tree, or, under MNT/<SharedDir>/NAME, the
// folder shared with the account shown there (its view: its history, and
// writes sealed and signed as that folder's member drive does), with its
// member drive, whose pull the caller kicks afterwards.
func (d *Drive) restoreTarget(ctx context.Context, p string) (*pathops.FS, string, *Drive, error) {
	rest, ok := strings.CutPrefix(p, "/"+d.o.SharedDir+"/")
	if !ok || !d.hasMembers() {
		return d.restoreFS(), p, nil, nil
	}
	name, in, _ := strings.Cut(rest, "/")
	m, e := d.memberByName(ctx, name)
	if e != 0 {
		return nil, "", nil, fmt.Errorf("%s: no folder of that name is shared with you (%v)", p, e)
	}
	list := m.heldShares()
	if len(list) != 1 || m.o.Identity == nil {
		return nil, "", nil, fmt.Errorf("%s: the shared folder's keys are not loaded yet: try again", p)
	}
	v, err := m.pathFS().WithShares(m.o.Identity, list[0]).View(list[0])
	if err != nil {
		return nil, "", nil, err
	}
	return v, "/" + in, m, nil
}

// drivePath turns a path given in a control command into a path in the
// drive: relative to the root, or absolute under the mount point.
func (d *Drive) drivePath(p string) string {
	if d.mnt != "" {
		if rest, ok := strings.CutPrefix(p, strings.TrimSuffix(d.mnt, "/")+"/"); ok {
			return "/" + rest
		}
		if p == d.mnt {
			return "/"
		}
	}
	return "/" + strings.TrimPrefix(p, "/")
}

// restore runs `restore PATH TIME [force]` from the control file: it waits
// for the drive's pending uploads (a restore works on the cloud's tree),
// restores, shows progress in .kumo as it goes, and pulls the result.
func (d *Drive) restore(ctx context.Context, cmd control.Command, shown string) {
	defer d.restoring.Store(false)
	p := d.drivePath(cmd.Path)
	d.ctl.running(shown, "waiting for pending uploads")
	if err := d.Flush(ctx); err != nil {
		d.commandFailed(shown, fmt.Errorf("restore: pending uploads: %w", err))
		return
	}
	d.log.Info("control file: restore started", "path", p, "at", cmd.At, "force", cmd.Force)
	f, in, mem, err := d.restoreTarget(ctx, p)
	if err != nil {
		d.commandFailed(shown, fmt.Errorf("restore: %w", err))
		return
	}
	if mem != nil {
		defer kick(mem.pullKick)
	}
	last := time.Now()
	st, err := f.Restore(ctx, in, cmd.At.UnixNano(), in, cmd.Force, func(s pathops.RestoreStats) {
		if time.Since(last) > 200*time.Millisecond {
			last = time.Now()
			d.ctl.running(shown, fmt.Sprintf("%d of %d entries, %s of %s", s.Done, s.Entries, size.Format(s.DoneBytes), size.Format(s.Bytes)))
		}
	})
	kick(d.pullKick)
	if err != nil {
		d.commandFailed(shown, fmt.Errorf("restore: %w (run it again to resume)", err))
		return
	}
	msg := fmt.Sprintf("restored %s as at %s: %d created, %d updated, %d already so, %d conflict copies, %d removed",
		p, cmd.At.UTC().Format(time.RFC3339), st.Created, st.Updated, st.Skipped, st.Conflicts, st.Removed)
	d.log.Info("control file: command done", "command", shown, "result", msg)
	d.ctl.record(shown, true, msg)
}
