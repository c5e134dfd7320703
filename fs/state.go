package fs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"syscall"
	"time"

	"kumo/cache"
	"kumo/internal/chunk"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// Internal attribute keys: kept in the local (sealed) copy of a node's
// attributes only, never pushed and never listed: "kumo:" is no namespace the
// kernel accepts, so no user xattr can collide.
const keyTrunc = "kumo:trunc" // base bytes at or beyond this offset read as zeros

// keySeen keeps nodeState.seen in the local record when it differs from the
// record's own revision (local only, never pushed).
const keySeen = "kumo:seen"

// keyPrealloc keeps nodeState.prealloc (fallocate) in the local record:
// start and end, little-endian. Preallocation is this device's, as a
// local disk's is.
const keyPrealloc = "kumo:prealloc"

const noTrunc = ^uint64(0)

// nodeState is the decrypted in-memory view of one node.
type nodeState struct {
	id  uint64
	typ string

	// Under d.mu.
	version uint64 // server version the next update is based on
	rev     uint64 // highest attribute revision sealed here or seen (format v2; 0 for v1 records)
	// seen is the highest revision the cloud has confirmed (a record pulled
	// from it, or ours it accepted): an older one from the cloud is a
	// rollback. It can be below rev: ours not pushed yet, or refused in a
	// conflict whose other side (sealed concurrently, maybe lower) is adopted.
	seen uint64
	// formatMark: the root's attributes say the account is all v2
	// (meta.FormatMark); kept out of the xattrs and sealed back in.
	formatMark bool
	seq        uint64 // change-feed seq of the cloud state we reflect
	nlink      uint32
	parent     uint64 // directories
	attrs      meta.Attrs
	trunc      uint64
	deleted    bool // last link gone; kept while open
	opens      int
	writers    int // open handles that may write
	// attrs changed while a writer had the file open, not yet in the local
	// store or the journal: the writer's next flush (close) or fsync saves
	// them with its data, in the same commit (see setAttrs).
	unsavedAttrs bool
	// syncOnClose: a truncate cut data the disk held (and synced the new
	// size first), so the next close is a durability point, as ext4's
	// auto_da_alloc makes it for a file rewritten with O_TRUNC: a power loss
	// then keeps the new content, not an empty file.
	syncOnClose bool
	urgent      bool // upload without waiting for quiet time
	lastWrite   time.Time
	queued      int64    // bytes written since the last upload
	serverCh    []string // chunk ids the server holds for it, if known
	lastParent  uint64   // where it was last seen, for conflict copies
	lastName    string
	prealloc    extent // preallocated by fallocate: counts in st_blocks

	// kid is the key id of the node's attributes (home, or a shared
	// folder's generation: share.go); its chunks use that key id's keys.
	kid meta.KeyID

	// cacheMu orders page-cache stores against opens for writing, truncates
	// and invalidations (pagecache.go); lock order: cacheMu, dmu, d.mu.
	cacheMu sync.Mutex

	// dmu guards the data layers; lock order: dmu before d.mu.
	dmu    sync.RWMutex
	layers []*layer // oldest first; writes go to the last
	// partial: pages writes covered only in part since the last store of
	// them (pagecache.go), at most maxPartialPages; partialOver: more.
	partial     []uint64
	partialOver bool
	storeQueued bool // in d.written's queue (under d.written.mu)
	nextGen     uint64
	uploading   bool
	frozenUpTo  uint64 // newest layer gen the running upload covers
	uploadDone  chan struct{}
}

// layer is one segment file of written data: a newer layer's segment wins.
type layer struct {
	gen uint64
	f   layerFile
}

func (st *nodeState) isDir() bool { return st.attrs.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// addFormatMark puts the root's all-v2 mark back into attributes about to be sealed.
func (st *nodeState) addFormatMark(a *meta.Attrs) {
	if !st.formatMark {
		return
	}
	a.Xattrs = maps.Clone(a.Xattrs)
	if a.Xattrs == nil {
		a.Xattrs = map[string][]byte{}
	}
	st.putFormatMark(a.Xattrs)
}

// putFormatMark puts the mark into x, a map of the caller's, if st carries it.
func (st *nodeState) putFormatMark(x map[string][]byte) {
	if st.formatMark {
		x[meta.FormatMark] = []byte(meta.FormatMarkV2)
	}
}

// kind is what an entry naming this node binds into its sealed name: the
// server's node type, which the server cannot change unseen.
func (st *nodeState) kind() meta.Kind { return meta.KindOf(st.typ == api.TypeDir) }

// baseSize is the plaintext size the base chunk list describes.
func baseSize(refs []meta.ChunkRef) uint64 {
	var n uint64
	for _, r := range refs {
		n += uint64(r.Len)
	}
	return n
}

func chunkHex(refs []meta.ChunkRef) []string {
	var out []string
	for _, r := range refs {
		if !r.ID.IsZero() {
			out = append(out, r.ID.String())
		}
	}
	return out
}

// newID returns a random node id: never 0, 1, or the FUSE reserved ^0; 63 bits
// so tools that treat st_ino as signed are happy.
func newID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic("fs: random: " + err.Error())
		}
		id := binary.LittleEndian.Uint64(b[:]) >> 1
		if id > 1 {
			return id
		}
	}
}

// loadState decodes a node of the local tree. Under d.mu.
func (d *Drive) stateLocked(id uint64) (*nodeState, error) {
	if st := d.states[id]; st != nil {
		return st, nil
	}
	n, err := d.store.GetNode(id)
	if err != nil {
		return nil, err
	}
	st, err := d.decode(n)
	if err != nil {
		return nil, err
	}
	d.states[id] = st
	return st, nil
}

// decode turns a node of the local tree into a state. A record of a
// shared folder below the lowest generation its roster accepts now (sealed
// before a re-seal the drive has not fetched yet) is refused as
// errStaleRecord without counting it as an authentication failure: it is
// expected to be out of date, and the operation that met it fetches it
// again (sharestale.go).
func (d *Drive) decode(n api.Node) (*nodeState, error) {
	st, err := d.openState(d.verifyRecord, n)
	if err != nil {
		open := func(verify recordVerifier) error { _, _, err := d.openAttrsBy(verify, n.ID, n.Attrs); return err }
		if d.staleLocal(n.Attrs, err, open, "node attributes", "node", n.ID) {
			return nil, fmt.Errorf("node %d: %w: %w", n.ID, errStaleRecord, err)
		}
		d.authFailure("node attributes fail authentication", "node", n.ID, "err", err)
		return nil, fmt.Errorf("node %d: %w", n.ID, err)
	}
	return st, nil
}

// decodeCloud is decode for a node the cloud sent: every refusal counts,
// one below the roster's lowest generation too (the cloud holds only
// re-sealed records once the roster is raised).
func (d *Drive) decodeCloud(n api.Node) (*nodeState, error) { return d.decodeBy(d.verifyRecord, n) }

// decodeBy is decodeCloud with the attributes checked by verify (the
// history view checks kept versions by its own rule: history.go).
func (d *Drive) decodeBy(verify recordVerifier, n api.Node) (*nodeState, error) {
	st, err := d.openState(verify, n)
	if err != nil {
		d.authFailure("node attributes fail authentication", "node", n.ID, "err", err)
		return nil, fmt.Errorf("node %d: %w", n.ID, err)
	}
	return st, nil
}

// openState opens node n's attributes, checked by verify, into a state;
// the caller reports a failure.
func (d *Drive) openState(verify recordVerifier, n api.Node) (*nodeState, error) {
	a, kid, err := d.openAttrsBy(verify, n.ID, n.Attrs)
	if err != nil {
		return nil, err
	}
	rev := meta.Rev(n.Attrs)
	st := &nodeState{id: n.ID, kid: kid, typ: n.Type, version: n.Version, rev: rev, seen: rev, nlink: n.Nlink, parent: n.Parent, attrs: *a, trunc: noTrunc, nextGen: 1}
	if v, ok := a.Xattrs[keySeen]; ok {
		if len(v) == 8 {
			st.seen = min(binary.LittleEndian.Uint64(v), rev)
		}
		st.attrs.Xattrs = maps.Clone(st.attrs.Xattrs)
		delete(st.attrs.Xattrs, keySeen)
	}
	if v, ok := a.Xattrs[keyTrunc]; ok {
		if len(v) == 8 {
			st.trunc = binary.LittleEndian.Uint64(v)
		}
		st.attrs.Xattrs = maps.Clone(a.Xattrs)
		delete(st.attrs.Xattrs, keyTrunc)
	}
	if v, ok := a.Xattrs[keyPrealloc]; ok {
		if len(v) == 16 {
			st.prealloc = extent{binary.LittleEndian.Uint64(v), binary.LittleEndian.Uint64(v[8:])}
		}
		st.attrs.Xattrs = maps.Clone(st.attrs.Xattrs)
		delete(st.attrs.Xattrs, keyPrealloc)
	}
	if n.ID == api.RootID && meta.HasFormatMarkV2(a) {
		// From here on a v1 record anywhere in this account is a replay.
		d.sealer.RequireV2()
		st.formatMark = true
		st.attrs.Xattrs = maps.Clone(st.attrs.Xattrs)
		delete(st.attrs.Xattrs, meta.FormatMark)
	}
	if st.typ == api.TypeDir && st.nlink < 2 {
		st.nlink = 2
	}
	if st.typ != api.TypeDir && st.nlink == 0 {
		st.nlink = 1
	}
	return st, nil
}

// localNode is the node as the local tree keeps it (logical size, truncation
// watermark). Under d.mu.
func (d *Drive) localNode(st *nodeState) api.Node {
	a := st.attrs
	if st.trunc != noTrunc || st.seen != st.rev || !st.prealloc.empty() || st.formatMark {
		// The local-only attributes go into a pooled map: the store saves
		// a node on nearly every change, and a clone of the attributes' map
		// per save was 6 % of what git add allocated. Only the encoding
		// (sealAttrs) reads it.
		x := d.xattrMaps.Get().(map[string][]byte)
		defer func() { clear(x); d.xattrMaps.Put(x) }()
		maps.Copy(x, a.Xattrs)
		if st.trunc != noTrunc {
			x[keyTrunc] = binary.LittleEndian.AppendUint64(nil, st.trunc)
		}
		if st.seen != st.rev {
			x[keySeen] = binary.LittleEndian.AppendUint64(nil, st.seen)
		}
		if !st.prealloc.empty() {
			x[keyPrealloc] = binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, st.prealloc.start), st.prealloc.end)
		}
		st.putFormatMark(x)
		a.Xattrs = x
	}
	return api.Node{ID: st.id, Type: st.typ, Version: st.version, Nlink: st.nlink, Parent: st.parent,
		Attrs: d.sealAttrs(st.kid, st.id, st.rev, &a), Chunks: chunkHex(st.attrs.Chunks)}
}

// pushAttrs are the attributes the cloud gets: consistent with the chunk list
// (size = bytes the chunks hold; data not yet uploaded comes with a later update).
// Each is a new revision: callers that also save the local node call this first,
// so the local record carries the revision the cloud gets (a replay of any
// earlier one is then seen as a rollback, even after a restart).
func (d *Drive) pushAttrs(st *nodeState) ([]byte, []string) {
	a := st.attrs
	if st.typ == api.TypeFile && a.Mode&syscall.S_IFMT == syscall.S_IFREG {
		a.Size = baseSize(a.Chunks)
	}
	st.addFormatMark(&a)
	st.rev = meta.NextRev(st.rev)
	return d.sealAttrs(st.kid, st.id, st.rev, &a), chunkHex(a.Chunks)
}

func (d *Drive) updateOp(st *nodeState) api.BatchOp {
	attrs, ch := d.pushAttrs(st)
	if ch == nil {
		ch = []string{}
	}
	return api.BatchOp{Op: api.OpUpdate, ID: st.id, Update: &api.UpdateRequest{Attrs: attrs, Chunks: ch}}
}

// apply applies m locally and counts its journal ops as pending. Under d.mu.
func (d *Drive) apply(m cache.Mutation) error {
	_, err := d.applySeq(m)
	return err
}

// applySeq is apply, and returns the journal seq of m's last op.
func (d *Drive) applySeq(m cache.Mutation) (uint64, error) {
	last, err := d.store.ApplySeq(m)
	if err != nil {
		d.log.Error("local tree update failed", "err", err)
		return 0, err
	}
	first := last + 1 - uint64(len(m.Journal))
	for i, op := range m.Journal {
		for _, k := range opKeys(op) {
			d.pending[k]++
		}
		d.unsent.queued(first+uint64(i), op)
	}
	if len(m.Journal) > 0 {
		d.lastChange.Store(time.Now().UnixNano())
		kick(d.pushKick)
	}
	return last, nil
}

// opKey names a node or an entry (parent, name MAC) a queued op touches.
// A struct, not a formatted string: two are built for every op queued and
// acked (an rm -rf of a tree queues tens of thousands).
type opKey struct {
	id    uint64 // the node, or the entry's parent
	mac   string // the entry's name MAC
	entry bool
}

func nodeKey(id uint64) opKey                  { return opKey{id: id} }
func entryKey(parent uint64, mac string) opKey { return opKey{id: parent, mac: mac, entry: true} }

// opKeys names what a journal op touches, for the change-feed puller to leave
// alone while it waits.
func opKeys(op api.BatchOp) []opKey {
	switch op.Op {
	case api.OpCreate:
		if c := op.Create; c != nil {
			return []opKey{nodeKey(c.ID), entryKey(c.Parent, c.NameMAC)}
		}
	case api.OpUpdate:
		return []opKey{nodeKey(op.ID)}
	case api.OpLink:
		if l := op.Link; l != nil {
			return []opKey{nodeKey(l.ID), entryKey(l.Parent, l.NameMAC)}
		}
	case api.OpUnlink:
		if u := op.Unlink; u != nil {
			return []opKey{entryKey(u.Parent, u.NameMAC)}
		}
	case api.OpRename:
		if r := op.Rename; r != nil {
			return []opKey{entryKey(r.SrcParent, r.SrcNameMAC), entryKey(r.DstParent, r.DstNameMAC)}
		}
	}
	return nil
}

func (d *Drive) donePending(op api.BatchOp) {
	for _, k := range opKeys(op) {
		if d.pending[k] <= 1 {
			delete(d.pending, k)
		} else {
			d.pending[k]--
		}
	}
}

// loadPending counts the journal left by an earlier run.
func (d *Drive) loadPending() error {
	ops, err := d.store.Pending(1 << 30)
	if err != nil {
		return fmt.Errorf("fs: read journal: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, op := range ops {
		for _, k := range opKeys(op.Op) {
			d.pending[k]++
		}
	}
	if len(ops) > 0 {
		d.log.Info("resuming queued tree operations", "ops", len(ops))
	}
	return nil
}

// --- names ---

func validName(name string) syscall.Errno {
	if len(name) == 0 {
		return syscall.ENOENT
	}
	if len(name) > 255 {
		return syscall.ENAMETOOLONG
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return syscall.EINVAL
		}
	}
	return 0
}

// reserved reports whether name in parent is one of the drive's own files,
// which no call may create, remove, rename or list as an entry: the control
// files and history view at the account's root, and the history view at a
// joined share's root (MNT/Shared/NAME/.kumo-history).
func (d *Drive) reserved(parent uint64, name string) bool {
	if d.isMember() {
		return parent == d.mem.root && name == HistoryDirName
	}
	return parent == api.RootID && slices.Contains(ReservedNames, name)
}

// lookupLocked resolves a name in a directory. Under d.mu.
func (d *Drive) lookupLocked(parent uint64, name string) (cache.Entry, *nodeState, syscall.Errno) {
	if e := validName(name); e != 0 {
		return cache.Entry{}, nil, e
	}
	p, err := d.stateLocked(parent)
	if err != nil {
		return cache.Entry{}, nil, errno(err)
	}
	e, err := d.findEntryLocked(p, name)
	if errors.Is(err, cache.ErrNotFound) {
		return cache.Entry{}, nil, syscall.ENOENT
	}
	if err != nil {
		return cache.Entry{}, nil, syscall.EIO
	}
	st, err := d.stateLocked(e.Child)
	if err != nil {
		if errors.Is(err, cache.ErrNotFound) {
			d.log.Warn("entry names a missing node", "parent", parent, "node", e.Child)
			return cache.Entry{}, nil, syscall.ENOENT
		}
		return cache.Entry{}, nil, syscall.EIO
	}
	if d.staleStateLocked(st) { // decoded before a new roster refused its record (sharestale.go)
		return cache.Entry{}, nil, syscall.EIO
	}
	// The entry must be the one sealed for this name and this node: a server
	// that pointed the name at another node (or kind) is refused here.
	if err := d.checkEntry(d.verifyRecord, p, e, st, name); err != nil {
		check := func(verify recordVerifier) error { return d.checkEntry(verify, p, e, st, name) }
		if !d.staleLocal(e.Name, err, check, "entry", "parent", parent, "child", e.Child) {
			d.authFailure("entry fails authentication", "parent", parent, "child", e.Child, "err", err)
		}
		return cache.Entry{}, nil, syscall.EIO
	}
	st.lastParent, st.lastName = parent, name
	return e, st, 0
}

// checkEntry checks entry e of directory p, found by the MAC of name, as
// naming st there, with its records checked by verify.
func (d *Drive) checkEntry(verify recordVerifier, p *nodeState, e cache.Entry, st *nodeState, name string) error {
	err := d.checkNameBy(verify, p.id, e.Child, st.kind(), e.NameMAC, name, e.Name)
	if err == nil {
		err = d.checkPlacement(p.kid, e.Name, st.id, st.kid)
	}
	return err
}

// openEntry opens the name of entry e of directory dir, naming st there,
// with its records checked by verify.
func (d *Drive) openEntry(verify recordVerifier, dir *nodeState, e cache.Entry, st *nodeState) ([]byte, error) {
	name, err := d.openNameBy(verify, dir.id, e.Child, st.kind(), e.NameMAC, e.Name)
	if err == nil {
		err = d.checkPlacement(dir.kid, e.Name, st.id, st.kid)
	}
	return name, err
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, cache.ErrNotFound) {
		return syscall.ENOENT
	}
	if errors.Is(err, context.Canceled) {
		// go-fuse cancels a request's context when the kernel interrupts
		// it (a signal to the caller: a Go program gets them all the time).
		// EINTR hands the interruption to the call, which is retried.
		return syscall.EINTR
	}
	return syscall.EIO
}

// touch sets mtime and ctime of a directory after an entry change. Under d.mu.
func touch(st *nodeState, now int64) {
	st.attrs.Mtime, st.attrs.Ctime = now, now
}

func nowNs() int64 { return time.Now().UnixNano() }

// --- tree operations (all local; the journal carries them to the cloud) ---

type newNode struct {
	name   string
	mode   uint32
	rdev   uint32
	uid    uint32
	gid    uint32
	target []byte
}

// create adds a node named n.name in parent.
func (d *Drive) create(parent uint64, n newNode) (*nodeState, syscall.Errno) {
	if e := validName(n.name); e != 0 {
		return nil, e
	}
	if d.reserved(parent, n.name) {
		return nil, syscall.EPERM
	}
	if e := d.checkDisk(nodeDiskCost); e != 0 {
		return nil, e // the embedded cloud's disk is full (disk.go)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.stateLocked(parent)
	if err != nil {
		return nil, errno(err)
	}
	if !p.isDir() || p.deleted {
		return nil, syscall.ENOENT
	}
	if _, err := d.findEntryLocked(p, n.name); err == nil {
		return nil, syscall.EEXIST
	} else if !errors.Is(err, cache.ErrNotFound) {
		return nil, syscall.EIO
	}
	now := nowNs()
	gid := n.gid
	mode := n.mode
	if p.attrs.Mode&syscall.S_ISGID != 0 {
		gid = p.attrs.GID
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			mode |= syscall.S_ISGID
		}
	}
	st := &nodeState{id: newID(), kid: d.writeKID(p.kid), typ: api.TypeFile, nlink: 1, trunc: noTrunc, nextGen: 1,
		attrs:      meta.Attrs{Mode: mode, UID: n.uid, GID: gid, Rdev: n.rdev, Atime: now, Mtime: now, Ctime: now, Target: n.target},
		lastParent: parent, lastName: n.name}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		st.typ, st.nlink, st.parent = api.TypeDir, 2, parent
		p.nlink++
	}
	if mode&syscall.S_IFMT == syscall.S_IFLNK {
		st.attrs.Size = uint64(len(n.target))
	}
	touch(p, now)
	mac, sealedName := d.sealName(st.kid, parent, st.id, st.kind(), n.name)
	attrs, ch := d.pushAttrs(st)
	op := api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: parent, NameMAC: mac, Name: sealedName,
		ID: st.id, Type: st.typ, Attrs: attrs, Chunks: ch}}
	m := cache.Mutation{
		PutNodes:   []api.Node{d.localNode(st), d.localNode(p)},
		PutEntries: []cache.Entry{{Parent: parent, NameMAC: mac, Name: sealedName, Child: st.id}},
		Journal:    []api.BatchOp{op},
	}
	if st.isDir() {
		m.NewDirs = []uint64{st.id}
	}
	if err := d.apply(m); err != nil {
		return nil, syscall.EIO
	}
	d.states[st.id] = st
	return st, 0
}

// unlink removes an entry (rmdir with dir).
func (d *Drive) unlink(parent uint64, name string, dir bool) syscall.Errno {
	if d.reserved(parent, name) {
		return syscall.EPERM
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e, st, errn := d.lookupLocked(parent, name)
	if errn != 0 {
		return errn
	}
	p, err := d.stateLocked(parent)
	if err != nil {
		return errno(err)
	}
	if dir != st.isDir() {
		if dir {
			return syscall.ENOTDIR
		}
		return syscall.EISDIR
	}
	if dir {
		empty, err := d.store.DirEmpty(st.id)
		if err != nil {
			return syscall.EIO
		}
		if !empty {
			return syscall.ENOTEMPTY
		}
	}
	now := nowNs()
	touch(p, now)
	m := cache.Mutation{
		DeleteEntries: []cache.Entry{e},
		Journal:       []api.BatchOp{{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: parent, NameMAC: e.NameMAC, Dir: dir, Node: e.Child}}},
	}
	if dir {
		p.nlink--
	}
	d.dropLinkLocked(st, &m, now)
	m.PutNodes = append(m.PutNodes, d.localNode(p))
	var inline []*inlineLayer
	if st.deleted && st.opens == 0 {
		inline = inlineToDropLocked(st, &m)
	}
	seq, err := d.applySeq(m)
	if err != nil {
		return syscall.EIO
	}
	for _, l := range inline {
		l.gone()
	}
	if st.deleted {
		d.unsent.removed(st.id, seq)
	} else {
		d.unsent.unlinked(st.id, seq, parent, e.NameMAC)
	}
	d.afterDropLocked(st)
	return 0
}

// dropLinkLocked counts one link of st gone, adding to m. Under d.mu.
func (d *Drive) dropLinkLocked(st *nodeState, m *cache.Mutation, now int64) {
	st.attrs.Ctime = now
	if st.isDir() {
		st.nlink = 0
	} else if st.nlink > 0 {
		st.nlink--
	}
	if st.nlink == 0 {
		st.deleted = true
		m.DeleteNodes = append(m.DeleteNodes, st.id)
	} else {
		m.PutNodes = append(m.PutNodes, d.localNode(st))
	}
}

// inlineToDropLocked adds to m the deletion of a removed file's stored
// inline data, so an rm -rf of small files is one local mutation per file,
// not two (the remover's Remove applied its own). It gives up, leaving it
// to the remover (discard.go), when the data layers are busy (the lock order is dmu
// before d.mu) or an upload runs. Under d.mu.
func inlineToDropLocked(st *nodeState, m *cache.Mutation) []*inlineLayer {
	if !st.dmu.TryLock() {
		return nil
	}
	defer st.dmu.Unlock()
	if st.uploading {
		return nil
	}
	var out []*inlineLayer
	for _, l := range st.layers {
		// Deleted whether or not it says stored: makeDurable marks it
		// saved after releasing its locks, and a delete of a missing key
		// costs nothing.
		if il, ok := l.f.(*inlineLayer); ok {
			m.DeleteInline = append(m.DeleteInline, [2]uint64{il.node, il.gen})
			out = append(out, il)
		}
	}
	return out
}

// afterDropLocked forgets a deleted node's data once nobody has it open. Under d.mu.
func (d *Drive) afterDropLocked(st *nodeState) {
	if !st.deleted || st.opens > 0 {
		return
	}
	delete(d.dirty, st.id)
	delete(d.states, st.id)
	d.discard(st)
}

// Rename flags of renameat2(2).
const (
	renameNoReplace = 1
	renameExchange  = 2
	renameWhiteout  = 4
)

// rename moves (p1, n1) to (p2, n2).
func (d *Drive) rename(p1 uint64, n1 string, p2 uint64, n2 string, flags uint32) syscall.Errno {
	if flags&renameWhiteout != 0 || flags&renameNoReplace != 0 && flags&renameExchange != 0 {
		return syscall.EINVAL
	}
	if e := validName(n2); e != 0 {
		return e
	}
	if d.reserved(p2, n2) || d.reserved(p1, n1) {
		return syscall.EPERM
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	se, src, errn := d.lookupLocked(p1, n1)
	if errn != 0 {
		return errn
	}
	sp, err := d.stateLocked(p1)
	if err != nil {
		return errno(err)
	}
	dp, err := d.stateLocked(p2)
	if err != nil {
		return errno(err)
	}
	if !dp.isDir() || dp.deleted {
		return syscall.ENOENT
	}
	if e := crossShare(sp.kid, dp.kid); e != 0 {
		return e
	}
	de, derr := d.findEntryLocked(dp, n2)
	exists := derr == nil
	// The new name is sealed under the key id of the entry it replaces (so
	// its MAC is that entry's), else under the directory's write key id.
	kid2 := d.writeKID(dp.kid)
	if exists {
		kid2, _ = meta.RecordKeyID(de.Name)
	}
	mac2, name2 := d.sealName(kid2, p2, src.id, src.kind(), n2)
	if derr != nil && !errors.Is(derr, cache.ErrNotFound) {
		return syscall.EIO
	}
	if exists && de.Child == src.id && p1 == p2 && se.NameMAC == mac2 {
		return 0 // same entry
	}
	// A directory cannot move below itself.
	if src.isDir() {
		for a := p2; a != 0 && a != api.RootID; {
			if a == src.id {
				return syscall.EINVAL
			}
			ast, err := d.stateLocked(a)
			if err != nil {
				break
			}
			a = ast.parent
		}
		if p2 == src.id {
			return syscall.EINVAL
		}
	}
	now := nowNs()
	req := &api.RenameRequest{SrcParent: p1, SrcNameMAC: se.NameMAC, DstParent: p2, DstNameMAC: mac2, Name: name2, Node: src.id}
	var m cache.Mutation
	var dropInline []*inlineLayer // a replaced small file's inline data, deleted in m
	switch {
	case flags&renameExchange != 0:
		if !exists {
			return syscall.ENOENT
		}
		dst, err := d.stateLocked(de.Child)
		if err != nil {
			return errno(err)
		}
		if dst.isDir() {
			if p1 == dst.id {
				return syscall.EINVAL
			}
			if below, err := dst.ancestorLocked(d, p1); err != nil {
				return errno(err)
			} else if below {
				return syscall.EINVAL
			}
		}
		kid1, _ := meta.RecordKeyID(se.Name)
		_, name1 := d.sealName(kid1, p1, dst.id, dst.kind(), n1)
		req.Mode, req.SrcName, req.DstNode = api.RenameExchange, name1, dst.id
		m.DeleteEntries = []cache.Entry{se, de}
		m.PutEntries = []cache.Entry{
			{Parent: p2, NameMAC: mac2, Name: name2, Child: src.id},
			{Parent: p1, NameMAC: se.NameMAC, Name: name1, Child: dst.id},
		}
		if p1 != p2 {
			if src.isDir() {
				src.parent = p2
				sp.nlink--
				dp.nlink++
			}
			if dst.isDir() {
				dst.parent = p1
				dp.nlink--
				sp.nlink++
			}
		}
		dst.attrs.Ctime = now
		dst.lastParent, dst.lastName = p1, n1
		m.PutNodes = append(m.PutNodes, d.localNode(dst))
	default:
		if exists {
			if flags&renameNoReplace != 0 {
				return syscall.EEXIST
			}
			dst, err := d.stateLocked(de.Child)
			if err != nil {
				return errno(err)
			}
			if dst.id == src.id {
				return 0 // two links of one file: rename does nothing
			}
			if src.isDir() && !dst.isDir() {
				return syscall.ENOTDIR
			}
			if !src.isDir() && dst.isDir() {
				return syscall.EISDIR
			}
			if dst.isDir() {
				empty, err := d.store.DirEmpty(dst.id)
				if err != nil {
					return syscall.EIO
				}
				if !empty {
					return syscall.ENOTEMPTY
				}
				dp.nlink--
			}
			d.dropLinkLocked(dst, &m, now)
			defer d.afterDropLocked(dst)
			if dst.deleted && dst.opens == 0 {
				dropInline = inlineToDropLocked(dst, &m)
			}
		}
		m.DeleteEntries = []cache.Entry{se}
		m.PutEntries = []cache.Entry{{Parent: p2, NameMAC: mac2, Name: name2, Child: src.id}}
		if flags&renameNoReplace != 0 {
			req.Mode = api.RenameNoReplace
		}
		if src.isDir() && p1 != p2 {
			src.parent = p2
			sp.nlink--
			dp.nlink++
		}
	}
	src.attrs.Ctime = now
	src.lastParent, src.lastName = p2, n2
	touch(sp, now)
	touch(dp, now)
	m.PutNodes = append(m.PutNodes, d.localNode(src), d.localNode(sp))
	if p1 != p2 {
		m.PutNodes = append(m.PutNodes, d.localNode(dp))
	}
	m.Journal = []api.BatchOp{{Op: api.OpRename, Rename: req}}
	seq, err := d.applySeq(m)
	if err != nil {
		return syscall.EIO
	}
	for _, l := range dropInline {
		l.gone()
	}
	d.unsent.renamed(seq, req, exists)
	return 0
}

// maxTreeDepth bounds the walk up a directory's parents: a chain longer
// than any path can be (PATH_MAX is 4096 bytes) is a loop.
const maxTreeDepth = 4096

// ancestorLocked reports whether st is an ancestor of dir id. A parent
// whose state cannot be read is an error, and a loop (parent pointers set
// from the cloud) counts as an ancestor: either way a move that could hang a
// directory below itself is refused, and no later walk spins under d.mu.
// Under d.mu.
func (st *nodeState) ancestorLocked(d *Drive, id uint64) (bool, error) {
	a := id
	for range maxTreeDepth {
		if a == 0 || a == api.RootID {
			return false, nil
		}
		if a == st.id {
			return true, nil
		}
		ast, err := d.stateLocked(a)
		if err != nil {
			return false, err
		}
		a = ast.parent
	}
	return true, nil
}

// mayBeAncestorLocked is ancestorLocked for the puller, which falls back to
// its safe path when the answer is not a clear no. Under d.mu.
func (st *nodeState) mayBeAncestorLocked(d *Drive, id uint64) bool {
	yes, err := st.ancestorLocked(d, id)
	return yes || err != nil
}

// link adds a hard link to a file.
func (d *Drive) link(id, parent uint64, name string) (*nodeState, syscall.Errno) {
	if e := validName(name); e != 0 {
		return nil, e
	}
	if d.reserved(parent, name) {
		return nil, syscall.EPERM
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.stateLocked(id)
	if err != nil {
		return nil, errno(err)
	}
	if st.isDir() {
		return nil, syscall.EPERM
	}
	if st.deleted {
		return nil, syscall.ENOENT
	}
	p, err := d.stateLocked(parent)
	if err != nil {
		return nil, errno(err)
	}
	if e := crossShare(st.kid, p.kid); e != 0 {
		return nil, e
	}
	if _, err := d.findEntryLocked(p, name); err == nil {
		return nil, syscall.EEXIST
	}
	now := nowNs()
	st.nlink++
	st.attrs.Ctime = now
	touch(p, now)
	mac, sealed := d.sealName(d.writeKID(p.kid), parent, st.id, st.kind(), name)
	m := cache.Mutation{
		PutNodes:   []api.Node{d.localNode(st), d.localNode(p)},
		PutEntries: []cache.Entry{{Parent: parent, NameMAC: mac, Name: sealed, Child: id}},
		Journal:    []api.BatchOp{{Op: api.OpLink, Link: &api.LinkRequest{ID: id, Parent: parent, NameMAC: mac, Name: sealed}}},
	}
	if err := d.apply(m); err != nil {
		return nil, syscall.EIO
	}
	return st, 0
}

// setAttrs changes attributes (not size) with fn and journals the update.
func (d *Drive) setAttrs(st *nodeState, fn func(a *meta.Attrs) syscall.Errno) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st.deleted {
		// Still open after its last unlink: change the in-memory view only.
		return fn(&st.attrs)
	}
	old := st.attrs
	old.Xattrs = maps.Clone(st.attrs.Xattrs)
	if e := fn(&st.attrs); e != 0 {
		st.attrs = old
		return e
	}
	if st.writers > 0 && !st.isDir() {
		// A writer has it open (cp -a sets times and mode before close):
		// the close saves these attrs with the data in one commit, so
		// they are as durable as the data they describe.
		st.unsavedAttrs = true
		return 0
	}
	if err := d.saveAttrsLocked(st); err != nil {
		st.attrs = old
		return syscall.EIO
	}
	return 0
}

// saveAttrsLocked saves st's local record and journals its update. Under d.mu.
func (d *Drive) saveAttrsLocked(st *nodeState) error {
	op := d.updateOp(st)
	err := d.apply(cache.Mutation{PutNodes: []api.Node{d.localNode(st)}, Journal: []api.BatchOp{op}})
	if err == nil {
		st.unsavedAttrs = false
	}
	return err
}

// release counts a handle's close and saves attrs its writers left unsaved
// (every close flushes first, so this is only a safety net).
func (d *Drive) release(h *handle) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := h.st
	st.opens--
	if h.write {
		st.writers--
	}
	if st.opens == 0 && st.deleted {
		d.afterDropLocked(st)
	}
	if st.writers == 0 && st.unsavedAttrs && !st.deleted {
		if err := d.saveAttrsLocked(st); err != nil {
			return syscall.EIO
		}
	}
	return 0
}

// persistLocked saves the local view of st without journaling. Under d.mu.
func (d *Drive) persistLocked(st *nodeState) error {
	if st.deleted {
		return nil
	}
	return d.apply(cache.Mutation{PutNodes: []api.Node{d.localNode(st)}})
}

// dirEnt is a decrypted entry of a directory, with what its check depended
// on besides the entry itself: the child's key id and kind.
type dirEnt struct {
	name string
	id   uint64
	mode uint32
	kid  meta.KeyID
	kind meta.Kind
}

// listedAt is what a directory's listing depended on besides its entries'
// own records: while all of it is the same, each listed entry still names
// the node it named (dirHandle.Lookup).
type listedAt struct {
	gen    uint64     // the directory's cache.Store.EntriesGen, read before the listing
	pkid   meta.KeyID // the directory's key id the entries were checked under
	shares *shareSet  // the share set they were placed by (nil: none loaded)
}

// same says whether a listing at l holds at now.
func (l listedAt) same(now listedAt) bool {
	return l.gen%2 == 0 && l == now
}

// list returns the decrypted entries of directory dir (those that open and
// pass their checks) and what the listing depended on (listedAt).
func (d *Drive) list(dir uint64) (_ []dirEnt, at listedAt, _ syscall.Errno) {
	at.shares = d.sh.cur.Load()
	at.gen = d.store.EntriesGen(dir)
	es, err := d.store.List(dir)
	if err != nil {
		return nil, at, syscall.EIO
	}
	out := make([]dirEnt, 0, len(es))
	d.mu.Lock()
	defer d.mu.Unlock()
	dst, err := d.stateLocked(dir)
	if err != nil {
		return nil, at, errno(err)
	}
	at.pkid = dst.kid
	for _, e := range es {
		st, err := d.stateLocked(e.Child)
		if err != nil {
			continue
		}
		name, err := d.openEntry(d.verifyRecord, dst, e, st)
		if err != nil {
			open := func(verify recordVerifier) error { _, err := d.openEntry(verify, dst, e, st); return err }
			if !d.staleLocal(e.Name, err, open, "entry name", "parent", dir, "child", e.Child) {
				d.authFailure("entry name fails authentication", "parent", dir, "child", e.Child, "name_mac", e.NameMAC, "err", err)
			}
			continue
		}
		if d.reserved(dir, string(name)) {
			continue
		}
		out = append(out, dirEnt{name: string(name), id: e.Child, mode: st.attrs.Mode, kid: st.kid, kind: st.kind()})
	}
	return out, at, 0
}

// chunkOf returns the chunk index of file offset off.
func chunkOf(off uint64) int { return int(off / chunk.Size) }
