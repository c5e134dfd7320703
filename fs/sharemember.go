package fs

// Shared folders this account joined (docs/FORMAT.md §3g) appear in the
// drive at MNT/<Options.SharedDir>/NAME, NAME being the folder's name as
// its owner named it (made unique when two collide). Each is a Drive of its
// own, a "member drive": its client sends the share's scope (the Kumo-Share
// header, so the server runs its requests on the owner's tree, limited to
// the share), its local tree and cache live in a directory of their own,
// its root is the share root's node in the owner's tree, and its share set
// holds that one share. Everything else is the drive's usual code: records
// are opened after checking their signatures against the owner-signed
// roster (share.go: a planted record is EIO), writes are sealed under the
// share's current generation and signed with this account's identity, and
// the puller follows the share's change feed, so the owner's changes show
// within seconds. A member drive has no control files, history view, quota
// or account head: those are the account's (the owner's quota counts what a
// writer member stores). A reader's drive is read-only (EROFS before any
// request).
//
// The kernel sees the member drive's nodes under their node ids, which are
// the owner's: random 63-bit numbers like this account's own, so an inode
// number shared by two nodes of the mount is as unlikely as a node id
// collision within one account.
//
// The shares are reloaded with the account (every 30 s, and when a record of
// an unknown generation arrives): a share joined since appears, a share this
// account was removed from (or left) disappears, its drive stopped (the
// server refuses it at once anyway, and what the owner writes afterwards is
// sealed under a generation it never gets). A role changed starts the
// share's drive again (changes a demoted writer had not pushed are dropped:
// the server would refuse them).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/internal/control"
	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/pathops"
)

// sharedDirIno is the inode number of the directory of joined shares (see
// ctlInoBase: never a node's).
const sharedDirIno = ctlInoBase + 0x100

// memberStartWait is how long a lookup of a joined share waits for its
// drive to start (its first listing of the share, say).
const memberStartWait = 20 * time.Second

// memberState is, in a member drive, which share it is of; in the
// account's drive, its member drives.
type memberState struct {
	root uint64 // a member drive's root: the share root in the owner's tree (0: the account's drive)
	gen  uint64 // a member drive's kernel inode generation: one per drive started (0: the account's drive)
	gens uint64 // the account's drive: member drives started

	mu     sync.Mutex
	drives map[uint64]*memberDrive // current joined shares by share id
	gone   []*memberDrive          // left or removed since the mount: closed at unmount
	dir    *sharedDir              // the kernel's inode of the directory, once looked up
	synced bool                    // the shares were loaded once (stale caches removed)
}

// memberDrive is one joined share of the account's drive.
type memberDrive struct {
	sh    *pathops.Share // newest loaded (under memberState.mu)
	role  keys.Role      // the role its drive was started with
	name  string         // its name under the shared directory
	ready chan struct{}  // closed once d or err is set
	d     *Drive
	err   error
}

// isMember reports whether d is the drive of a joined share.
func (d *Drive) isMember() bool { return d.mem.root != 0 }

// rootID is the node the drive's tree starts at.
func (d *Drive) rootID() uint64 {
	if d.mem.root != 0 {
		return d.mem.root
	}
	return api.RootID
}

// feedStart returns the change-feed position a fresh listing starts from
// (taken before listing): the account's, or (a member drive) the owner's
// feed as the share's scope shows it.
func (d *Drive) feedStart(ctx context.Context) (uint64, error) {
	if !d.isMember() {
		acct, err := d.c.Account(ctx)
		if err != nil {
			return 0, fmt.Errorf("account: %w", err)
		}
		d.setAccount(acct)
		return acct.Seq, nil
	}
	// A position past the end is answered at once with a reset and the
	// feed's current position.
	resp, err := d.c.Changes(ctx, math.MaxUint64, 0)
	if err != nil {
		return 0, fmt.Errorf("shared folder's change feed: %w", err)
	}
	return resp.Seq, nil
}

// hasMembers reports whether the account's drive shows joined shares.
func (d *Drive) hasMembers() bool {
	if d.o.SharedDir == "" || d.isMember() {
		return false
	}
	d.mem.mu.Lock()
	defer d.mem.mu.Unlock()
	return len(d.mem.drives) > 0
}

// sharedName reports whether name in directory parent is the directory of
// joined shares, which hides an entry of the same name in the account's
// tree and cannot be made, removed or renamed there.
func (d *Drive) sharedName(parent uint64, name string) bool {
	return parent == api.RootID && d.o.SharedDir != "" && name == d.o.SharedDir && d.hasMembers()
}

// withSharedDir adds the directory of joined shares to the root's listing.
func (d *Drive) withSharedDir(list []fuse.DirEntry) []fuse.DirEntry {
	if !d.hasMembers() {
		return list
	}
	out := list[:0]
	for _, e := range list {
		if e.Name != d.o.SharedDir {
			out = append(out, e)
		}
	}
	return append(out, fuse.DirEntry{Name: d.o.SharedDir, Ino: sharedDirIno, Mode: fuse.S_IFDIR})
}

// syncMembers brings the member drives in line with the shares just loaded:
// starts those of shares joined, stops those of shares no longer joined,
// and gives the others their newest roster and secrets.
func (d *Drive) syncMembers(list []*pathops.Share) {
	if d.o.SharedDir == "" || d.isMember() {
		return
	}
	want := map[uint64]*pathops.Share{}
	for _, sh := range list {
		if !sh.Owned && sh.Root != 0 && sh.Root != api.RootID {
			want[sh.ID] = sh
		}
	}
	d.mem.mu.Lock()
	first := !d.mem.synced
	d.mem.synced = true
	d.mem.mu.Unlock()
	if first {
		d.cleanMemberDirs(want)
	}
	var start, stop []*memberDrive
	var changed []string
	d.mem.mu.Lock()
	if d.mem.drives == nil {
		d.mem.drives = map[uint64]*memberDrive{}
	}
	before := len(d.mem.drives)
	for id, md := range d.mem.drives {
		sh := want[id]
		failed := false
		select {
		case <-md.ready:
			failed = md.d == nil
		default:
		}
		// A changed role starts the share's drive again: read-only or
		// not is fixed in a drive (and a demoted writer's queued changes
		// would only be refused).
		if sh != nil && !failed && sh.Role == md.role {
			md.sh = sh
			if md.d != nil {
				md.d.setMemberShare(sh)
			}
			continue
		}
		delete(d.mem.drives, id)
		if md.d != nil {
			stop = append(stop, md)
		}
		changed = append(changed, md.name)
	}
	taken := map[string]bool{}
	for _, md := range d.mem.drives {
		taken[md.name] = true
	}
	var fresh []*pathops.Share
	for id, sh := range want {
		if d.mem.drives[id] == nil {
			fresh = append(fresh, sh)
		}
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].ID < fresh[j].ID })
	for _, sh := range fresh {
		md := &memberDrive{sh: sh, role: sh.Role, name: sh.DirName(taken), ready: make(chan struct{})}
		taken[md.name] = true
		d.mem.drives[sh.ID] = md
		start = append(start, md)
		changed = append(changed, md.name)
	}
	d.mem.gone = append(d.mem.gone, stop...)
	after := len(d.mem.drives)
	dir := d.mem.dir
	d.mem.mu.Unlock()

	for _, md := range start {
		go d.startMember(md)
	}
	for _, md := range stop {
		d.log.Info("shared folder no longer joined (left, removed by its owner, or its role changed): its drive stopped", "share", md.sh.Name(), "path", d.o.SharedDir+"/"+md.name)
		md.d.cancel() // the workers stop; the store closes at unmount
	}
	// The kernel may keep (negative) entries: it drops them here. Not
	// under a lock, and not waited for: a lookup may hold the directory.
	rootChanged := (before == 0) != (after == 0)
	if len(changed) > 0 && dir != nil || rootChanged {
		go func() {
			if dir != nil {
				for _, name := range changed {
					dir.NotifyEntry(name)
				}
			}
			if rootChanged { // the directory itself appeared or went
				d.notifyEntry(api.RootID, d.o.SharedDir)
			}
		}()
	}
}

// startMember starts the drive of a joined share.
func (d *Drive) startMember(md *memberDrive) {
	d.mem.mu.Lock()
	sh := md.sh
	d.mem.mu.Unlock()
	m, err := d.newMember(sh)
	d.mem.mu.Lock()
	md.d, md.err = m, err
	close(md.ready)
	current := d.mem.drives[sh.ID] == md
	if m != nil && !current {
		d.mem.gone = append(d.mem.gone, md)
	}
	if m != nil && current && md.sh != sh {
		m.setMemberShare(md.sh)
	}
	dir := d.mem.dir
	d.mem.mu.Unlock()
	switch {
	case err != nil:
		d.log.Warn("shared folder not opened: retried with the next load of the shares (30 s)", "share", sh.Name(), "err", err)
	case !current:
		m.cancel()
	default:
		d.log.Info("shared folder joined from another account opened", "share", sh.Name(), "path", d.o.SharedDir+"/"+md.name, "role", sh.Role.String())
	}
	if dir != nil {
		dir.NotifyEntry(md.name)
	}
}

// memberBase is the directory of the member drives' caches ("" if none).
func (d *Drive) memberBase() string {
	if d.o.SharedCacheDir != "" {
		return d.o.SharedCacheDir
	}
	if d.o.CacheDir != "" {
		return filepath.Join(d.o.CacheDir, "shares")
	}
	return ""
}

// memberDirName is the name of share sh's cache directory in memberBase.
func memberDirName(sh *pathops.Share) string {
	return sanitizeID(sh.OwnerID) + "-" + api.FormatShareID(sh.ID)
}

// memberCacheDir is where the drive of share sh keeps its tree and cache:
// memberBase/OWNER-SHARE, or, while a stopped drive of the same share
// still holds that one (left and joined again since the mount), a fresh
// one beside it.
func (d *Drive) memberCacheDir(sh *pathops.Share) (string, error) {
	base := d.memberBase()
	if base == "" {
		return "", errors.New("no cache directory for shared folders (Options.SharedCacheDir)")
	}
	dir := filepath.Join(base, memberDirName(sh))
	d.mem.mu.Lock()
	inUse := map[string]bool{}
	for _, md := range d.mem.gone {
		inUse[md.d.o.CacheDir] = true
	}
	d.mem.mu.Unlock()
	for n := 2; inUse[dir]; n++ {
		dir = filepath.Join(base, fmt.Sprintf("%s.%d", memberDirName(sh), n))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return dir, nil
}

// cleanMemberDirs removes the caches of shares no longer joined (left or
// removed while not mounted), once per mount, after the first load.
func (d *Drive) cleanMemberDirs(want map[uint64]*pathops.Share) {
	base := d.memberBase()
	if base == "" {
		return
	}
	keep := map[string]bool{}
	for _, sh := range want {
		keep[memberDirName(sh)] = true
	}
	ents, err := os.ReadDir(base)
	if err != nil {
		return // none yet
	}
	for _, e := range ents {
		if !keep[e.Name()] && e.IsDir() { // also OWNER-SHARE.N: left over, no drive runs yet
			d.log.Info("removing the cache of a shared folder no longer joined", "dir", filepath.Join(base, e.Name()))
			if err := os.RemoveAll(filepath.Join(base, e.Name())); err != nil {
				d.log.Warn("removing the cache of a shared folder no longer joined", "err", err)
			}
		}
	}
}

// sanitizeID keeps an account id usable as part of a file name.
func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// newMember makes and starts the drive of joined share sh.
func (d *Drive) newMember(sh *pathops.Share) (*Drive, error) {
	dir, err := d.memberCacheDir(sh)
	if err != nil {
		return nil, fmt.Errorf("shared folder %s: %w", sh.Name(), err)
	}
	o := d.o
	o.Client = d.c.ForShare(sh.OwnerID, sh.ID)
	o.Cache, o.CacheDir, o.CacheSize = nil, dir, d.o.SharedCacheSize
	o.ReadOnly = d.o.ReadOnly || sh.Role != keys.RoleWriter
	// The owner's user ids mean nothing here: the folder shows as the
	// mount's owner's (as the control files do), unless uid=/gid= say.
	uid, gid := d.owner()
	if o.UID == nil {
		o.UID = &uid
	}
	if o.GID == nil {
		o.GID = &gid
	}
	o.SharedDir, o.SharedCacheDir = "", ""
	o.Logger = d.log.With("share", sh.Name())
	id := sh.ID
	// The member drive asks the account's drive, which loads every share.
	o.Shares = func(ctx context.Context) ([]*pathops.Share, error) {
		if err := d.loadShares(ctx, time.Second); err != nil {
			return nil, err
		}
		if s := d.shares().byID[id]; s != nil && !s.Owned {
			return []*pathops.Share{s}, nil
		}
		return nil, nil
	}
	m, err := newDrive(o)
	if err != nil {
		return nil, fmt.Errorf("shared folder %s: %w", sh.Name(), err)
	}
	m.mem.root = sh.Root
	m.load = d.load // one request mix for the mount (Load)
	d.mem.mu.Lock()
	d.mem.gens++
	m.mem.gen = d.mem.gens
	d.mem.mu.Unlock()
	m.setMemberShare(sh)
	m.sh.lastLoad = time.Now()
	if err := m.start(); err != nil {
		m.abandon()
		return nil, fmt.Errorf("shared folder %s: %w", sh.Name(), err)
	}
	return m, nil
}

// setMemberShare gives a member drive the newest roster and secrets of its share.
func (d *Drive) setMemberShare(sh *pathops.Share) {
	d.sh.swap.Lock()
	defer d.sh.swap.Unlock()
	old := d.shares()
	cur := (&shareSet{sealer: d.sealer}).with(sh, false)
	d.sh.cur.Store(cur)
	d.minGenRaised(old, cur) // sharestale.go
}

// flushMembers flushes every member drive (Flush of the account's drive).
func (d *Drive) flushMembers(ctx context.Context) error {
	for _, m := range d.memberDrives() {
		// A drive stopped meanwhile (the share left or revoked) will
		// push nothing more: not waited for.
		fctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(m.ctx, cancel)
		err := m.Flush(fctx)
		stop()
		cancel()
		if err != nil && m.ctx.Err() == nil {
			return fmt.Errorf("shared folder: %w", err)
		}
	}
	return nil
}

// memberDrives returns the running member drives.
func (d *Drive) memberDrives() []*Drive {
	d.mem.mu.Lock()
	defer d.mem.mu.Unlock()
	var out []*Drive
	for _, md := range d.mem.drives {
		select {
		case <-md.ready:
			if md.d != nil {
				out = append(out, md.d)
			}
		default:
		}
	}
	return out
}

// stopMembers shuts the member drives down (the account's drive's shutdown).
// A starting one is waited for.
func (d *Drive) stopMembers() {
	d.mem.mu.Lock()
	var starting []chan struct{}
	for _, md := range d.mem.drives {
		starting = append(starting, md.ready)
	}
	d.mem.mu.Unlock()
	for _, ch := range starting {
		<-ch
	}
	for _, m := range d.memberDrives() {
		m.shutdown()
	}
	// The caches of shares left or removed since the mount go: nothing
	// in them will be pushed or shown again.
	d.mem.mu.Lock()
	gone := d.mem.gone
	d.mem.mu.Unlock()
	for _, md := range gone {
		md.d.shutdown()
		if err := os.RemoveAll(md.d.o.CacheDir); err != nil {
			d.log.Warn("removing the cache of a shared folder no longer joined", "err", err)
		}
	}
}

// memberByName returns the started drive of the joined share named name,
// waiting for it to start.
func (d *Drive) memberByName(ctx context.Context, name string) (*Drive, syscall.Errno) {
	d.mem.mu.Lock()
	var md *memberDrive
	for _, x := range d.mem.drives {
		if x.name == name {
			md = x
		}
	}
	d.mem.mu.Unlock()
	if md == nil {
		return nil, syscall.ENOENT
	}
	t := time.NewTimer(memberStartWait)
	defer t.Stop()
	select {
	case <-md.ready:
	case <-ctx.Done():
		return nil, syscall.EINTR
	case <-t.C:
		return nil, syscall.EAGAIN
	}
	if md.d == nil {
		return nil, syscall.EIO // why is in the log
	}
	return md.d, 0
}

// --- kernel side: the directory of joined shares ---

// sharedDir is MNT/<SharedDir>: one entry per joined share, each the root
// of that share's member drive.
type sharedDir struct {
	gofs.Inode
	d *Drive
}

var (
	_ gofs.NodeLookuper  = (*sharedDir)(nil)
	_ gofs.NodeReaddirer = (*sharedDir)(nil)
	_ gofs.NodeGetattrer = (*sharedDir)(nil)
)

// lookupSharedDir resolves the shared directory's name at the root (fnode.Lookup).
func (d *Drive) lookupSharedDir(ctx context.Context, root *fnode, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	sd := &sharedDir{d: d}
	sd.fill(&out.Attr)
	ino := root.NewInode(ctx, sd, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: sharedDirIno})
	if got, ok := ino.Operations().(*sharedDir); ok {
		d.mem.mu.Lock()
		d.mem.dir = got
		d.mem.mu.Unlock()
	}
	return ino, 0
}

func (s *sharedDir) fill(out *fuse.Attr) {
	out.Ino = sharedDirIno
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	out.Uid, out.Gid = s.d.owner()
	out.Size = 4096
	out.Blksize = 4096
}

func (s *sharedDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s.fill(&out.Attr)
	return 0
}

func (s *sharedDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	m, e := s.d.memberByName(ctx, name)
	if e != 0 {
		return nil, e
	}
	st, e := m.stateFresh(m.rootID()) // sharestale.go
	if e != 0 {
		return nil, e
	}
	m.entryOut(st, out)
	return m.newInode(ctx, &s.Inode, st), 0
}

func (s *sharedDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	d := s.d
	d.mem.mu.Lock()
	list := []fuse.DirEntry{{Name: ".", Ino: sharedDirIno, Mode: fuse.S_IFDIR}, {Name: "..", Ino: api.RootID, Mode: fuse.S_IFDIR}}
	for _, md := range d.mem.drives {
		list = append(list, fuse.DirEntry{Name: md.name, Ino: md.sh.Root, Mode: fuse.S_IFDIR})
	}
	d.mem.mu.Unlock()
	sort.Slice(list[2:], func(i, j int) bool { return list[2+i].Name < list[2+j].Name })
	return gofs.NewListDirStream(list), 0
}

// controlShares is what the control file says of the shares joined and the
// invitations (nil when the drive does not load shares). fetch loads the
// shares again if the last load is older than a few seconds.
func (d *Drive) controlShares(ctx context.Context, fetch bool) *control.Shares {
	if d.o.Shares == nil || d.isMember() {
		return nil
	}
	if fetch {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := d.loadShares(ctx, 5*time.Second); err != nil {
			d.log.Warn("loading shared folders failed", "err", err)
		}
		cancel()
	}
	out := &control.Shares{Dir: d.o.SharedDir, Joined: []control.JoinedShare{}, Invitations: []control.ShareInvitation{}}
	type joined struct {
		j control.JoinedShare
		m *Drive
	}
	var list []joined
	d.mem.mu.Lock()
	for _, md := range d.mem.drives {
		j := control.JoinedShare{Name: md.sh.Name(), Path: "/" + d.o.SharedDir + "/" + md.name,
			Role: md.sh.Role.String(), Share: api.FormatShareID(md.sh.ID)}
		select {
		case <-md.ready:
			if md.err != nil {
				j.Error = md.err.Error() + " (tried again within 30 s)"
			}
		default:
			j.Error = "opening"
		}
		list = append(list, joined{j, md.d})
	}
	d.mem.mu.Unlock()
	for _, x := range list {
		if x.m != nil { // outside d.mem.mu: Status takes the member drive's locks
			st := x.m.Status()
			x.j.Queued, x.j.QuotaFull = st.Queue.Files+st.Queue.Ops, st.QuotaBlocked
			g := x.m.Integrity()
			x.j.Refused = g.AuthFailures + g.Rollbacks
		}
		out.Joined = append(out.Joined, x.j)
	}
	sort.Slice(out.Joined, func(i, j int) bool { return out.Joined[i].Path < out.Joined[j].Path })
	if d.o.Invitations != nil {
		for _, it := range d.o.Invitations() {
			ci := control.ShareInvitation{Name: it.Share.Name(), Share: api.FormatShareID(it.Share.ID), Role: it.Share.Role.String(), Fingerprint: it.Fingerprint}
			if it.Changed != nil {
				ci.KeyChanged = it.Changed.Error()
			}
			out.Invitations = append(out.Invitations, ci)
		}
	}
	return out
}

// acceptShare accepts an invitation (share accept NAME in .kumo) and shows
// the share at once.
func (d *Drive) acceptShare(ctx context.Context, which string) (string, error) {
	if d.o.AcceptShare == nil || d.isMember() {
		return "", errors.New("this drive does not load shared folders (no identity keys: see its log); use kumo share accept")
	}
	sh, err := d.o.AcceptShare(ctx, which)
	if err != nil {
		return "", err
	}
	if err := d.loadShares(ctx, 0); err != nil {
		return "", fmt.Errorf("accepted %s, but loading the shared folders failed (the drive tries again within 30 s): %w", sh.Name(), err)
	}
	msg := "accepted " + sh.Name()
	d.mem.mu.Lock()
	if md := d.mem.drives[sh.ID]; md != nil {
		msg += ": in /" + d.o.SharedDir + "/" + md.name
	}
	d.mem.mu.Unlock()
	return msg, nil
}
