package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/cache"
	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/session"
)

// Options configure a Drive.
type Options struct {
	Client  *client.Client
	Session *session.Session
	// Cache is an open store; if nil, one is opened under CacheDir with CacheSize.
	Cache     *cache.Store
	CacheDir  string
	CacheSize int64
	// FsyncRemote makes fsync wait until the file's data and all queued tree
	// operations are pushed to the cloud.
	FsyncRemote bool
	// DurableClose makes close (flush) also a durability point on local
	// disk, as fsync is (the behaviour before 2026-12-05). Off: close writes
	// the data to the store's files (the kernel has it: a kill -9 of the
	// daemon loses nothing), and fsync, the periodic commit or unmount make
	// it durable, as on ext4.
	DurableClose bool
	Logger       *slog.Logger

	// Mount options.
	AllowOther         bool
	DefaultPermissions bool
	ReadOnly           bool
	UID, GID           *uint32 // report every node as owned by these
	Umask              *uint32 // mask reported permission bits
	FsName             string
	Debug              bool
	// ServerName is the server the control file reports (default: the
	// client's URL; "embedded" for the in-process cloud).
	ServerName string
	// DiskRoom, for the embedded cloud, is the room left on the disk
	// holding its data (see DiskRoom): df and writes follow it. Nil for a
	// remote cloud.
	DiskRoom DiskRoomFunc
	// EmbeddedDir is the embedded cloud's data directory, for messages
	// ("" for a remote cloud).
	EmbeddedDir string

	// Shared folders (share.go). Shares loads the shares the account owns
	// and has joined, their rosters checked (pathops.LoadShares): the drive
	// opens their records, checking every signature, and seals and signs
	// its writes in them with Identity. Nil: records of a share are EIO.
	Shares   func(ctx context.Context) ([]*pathops.Share, error)
	Identity *keys.Identity
	// SharedDir names the directory at the root where the shares this
	// account joined appear, one folder each (sharemember.go); "": not
	// shown. Their trees and caches live in SharedCacheDir (default
	// CacheDir/shares), SharedCacheSize each (0: the cache's default).
	SharedDir       string
	SharedCacheDir  string
	SharedCacheSize int64
	// Invitations returns the invitations found by the last load of
	// Shares, for the control file (nil: none shown).
	Invitations func() []*pathops.Invitation
	// AcceptShare accepts an invitation (share accept in .kumo; nil: refused).
	AcceptShare func(ctx context.Context, which string) (*pathops.Share, error)

	// Tuning (zero: defaults). Tests shorten them.
	QuietTime time.Duration // upload a file this long after its last write (default 1s)
	PollWait  time.Duration // change-feed long-poll wait (default 25s)
	// CommandOffline: a background link or restore asked through the
	// control file fails once the cloud has been unreachable this long
	// while it runs (default 2m).
	CommandOffline time.Duration
}

// ReservedNames are the virtual control files and the history view at the
// root of the mount.
var ReservedNames = []string{".kumo", ".kumo.json", ".kumo-topup.png", HistoryDirName}

// Drive is a mounted kumo drive.
type Drive struct {
	o      Options
	log    *slog.Logger
	integ  integrity  // records from the cloud refused (forged, swapped, rolled back)
	head   *headState // the account head this device checks and advances
	c      *client.Client
	chunks chunkCloud // what the fetcher and the uploader use of c (tests wrap it)
	store  *cache.Store
	owns   bool // store opened by us
	sealer *meta.Sealer
	cipher *chunk.Cipher

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	server *fuse.Server
	root   *fnode

	// mu guards the tree: states, the maps below and every nodeState field
	// documented as "under d.mu".
	mu      sync.Mutex
	states  map[uint64]*nodeState
	inodes  map[uint64]*fnode     // live kernel inodes by node id
	dirty   map[uint64]*nodeState // files with data not yet uploaded
	pending map[opKey]int         // pending journal ops per node and per entry (opKeys)
	rewrite map[opKey]nameRewrite
	unsent  unsentTree      // queued ops of files removed before they were sent (unsent.go)
	refresh map[uint64]bool // directories to relist from the cloud

	pushKick   chan struct{}
	uploadKick chan struct{}
	pullKick   chan struct{}

	discards discards // deleted nodes' layers to remove (discard.go)

	fetch fetcher
	ahead dirAheads // directories whose small files were fetched ahead (dirahead.go)
	// plainBufs holds 4 MiB buffers for the plaintext of big chunks being
	// uploaded (*[]byte): a fresh one per chunk made the collector run
	// often while a big file uploads. Small chunks get their own size.
	plainBufs sync.Pool
	// segBufs holds one-segment buffers (*[]byte) for the pages a close
	// puts into the kernel's page cache (storeWrittenLocked): one per
	// closed file was 58 MB of the 800 git add of the Go tree allocated.
	segBufs sync.Pool
	// xattrMaps holds empty attribute maps (map[string][]byte) for
	// localNode's local-only attributes.
	xattrMaps sync.Pool

	stat struct {
		sync.Mutex
		account      api.Account
		online       bool
		offlineSince time.Time
		lastErr      string
		lastErrAt    time.Time
		quotaBlocked bool
		uploadedB    int64
	}
	up         uploadState
	lastChange atomic.Int64 // unix ns of the last local change queued for the cloud
	// quietExtra lengthens pushQuiet (ns): tests that hold the pusher with
	// a stream of changes set it, so a scheduling pause on a loaded machine
	// does not let a push through.
	quietExtra     atomic.Int64
	fgAt           atomic.Int64 // unix ns of the last request from the kernel (noteForeground)
	listedLookups  atomic.Int64 // readdirplus lookups answered from the listing (dirHandle.Lookup), for /metrics
	load           *loadCounts  // what the kernel asked for (Load); a shared folder's drive shares its account drive's
	uploadsRunning atomic.Int32
	closed         atomic.Bool
	done           chan struct{}

	ctl   *controlState // the control files (control.go)
	quota quotaState    // uploads paused for quota (quota.go)
	disk  diskState     // room on the embedded cloud's disk (disk.go)
	mnt   string        // the mount point, for messages
	// restoring and linking are set while a restore or a link asked through
	// the control file runs (history.go, link.go).
	restoring atomic.Bool
	linking   atomic.Bool
	reads     readCounts   // reads served here or by the cloud (readstats.go)
	written   writtenQueue // files whose written pages wait for a store (pagecache.go)
	sh        driveShares  // shared folders' keys and rosters (share.go)
	mem       memberState  // shares joined from other accounts (sharemember.go)
}

type nameRewrite struct {
	parent uint64
	mac    string
	name   []byte
	id     uint64
}

const (
	defaultQuiet    = time.Second
	defaultPollWait = 25 * time.Second
	readTimeout     = 10 * time.Second // uncached reads give up after this while offline
)

func (d *Drive) quiet() time.Duration {
	if d.o.QuietTime > 0 {
		return d.o.QuietTime
	}
	return defaultQuiet
}

// newDrive sets up everything but the FUSE server.
func newDrive(o Options) (*Drive, error) {
	if o.Client == nil || o.Session == nil {
		return nil, errors.New("fs: Options need Client and Session")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sk := o.Session.Subkeys()
	d := &Drive{
		o:          o,
		log:        log,
		c:          o.Client,
		chunks:     o.Client,
		store:      o.Cache,
		sealer:     meta.NewSealer(sk),
		head:       newHeadState(o.Session.Master, o.CacheDir),
		cipher:     chunk.NewCipher(sk.ChunkID, sk.Chunks),
		states:     map[uint64]*nodeState{},
		inodes:     map[uint64]*fnode{},
		dirty:      map[uint64]*nodeState{},
		pending:    map[opKey]int{},
		rewrite:    map[opKey]nameRewrite{},
		unsent:     newUnsentTree(),
		load:       &loadCounts{},
		pushKick:   make(chan struct{}, 1),
		uploadKick: make(chan struct{}, 1),
		pullKick:   make(chan struct{}, 1),
		discards:   discards{kick: make(chan struct{}, 1)},
		done:       make(chan struct{}),
		ctl:        &controlState{},
	}
	d.quota.resume = make(chan struct{}, 1)
	d.fetch.d = d
	d.fetch.inflight = map[string]*fetchCall{}
	d.plainBufs.New = func() any { b := make([]byte, chunk.Size); return &b }
	d.segBufs.New = func() any { b := make([]byte, segSize); return &b }
	d.xattrMaps.New = func() any { return map[string][]byte{} }
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if d.store == nil {
		if o.CacheDir == "" {
			return nil, errors.New("fs: Options need Cache or CacheDir")
		}
		s, err := cache.Open(cache.Options{Dir: o.CacheDir, Key: sk.Cache, Budget: o.CacheSize, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("fs: open cache: %w", err)
		}
		d.store = s
		d.owns = true
	}
	d.stat.online = true
	return d, nil
}

// start loads the local tree (relisting from the cloud if the cache is new),
// resumes interrupted uploads and starts the background workers. A member
// drive (a joined share, sharemember.go) was given its share and has no
// account, quota or head of its own: it runs the pusher, uploader and
// puller only.
func (d *Drive) start() error {
	if !d.isMember() {
		if err := d.loadShares(d.ctx, 0); err != nil {
			// Offline, say: the shared folders' records read as EIO until a
			// record of one makes the drive ask again.
			d.log.Warn("shared folders not loaded: their contents read as EIO for now", "err", err)
		}
	}
	if _, err := d.store.GetNode(d.rootID()); errors.Is(err, cache.ErrNotFound) {
		d.log.Info("local tree is empty: listing the cloud")
		if err := d.relist(d.ctx); err != nil {
			return fmt.Errorf("fs: initial listing: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("fs: read local tree: %w", err)
	}
	if err := d.loadPending(); err != nil {
		return err
	}
	if err := d.resumeUploads(); err != nil {
		return err
	}
	d.wg.Add(4)
	go d.pushLoop()
	go d.uploadLoop()
	go d.pullLoop()
	go d.discardLoop()
	if d.isMember() {
		return nil
	}
	if a, err := d.c.Account(d.ctx); err == nil {
		d.setAccount(a)
	} else {
		d.noteErr(err)
	}
	d.wg.Add(2)
	go d.accountLoop()
	go d.headLoop()
	return nil
}

// abandon stops a drive whose start or mount failed: its joined shares'
// drives, its workers, and the store it opened.
func (d *Drive) abandon() {
	d.stopMembers()
	d.cancel()
	d.wg.Wait()
	if d.owns {
		_ = d.store.Close()
	}
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Wait blocks until the file system is unmounted and the drive shut down.
func (d *Drive) Wait() {
	<-d.done
}

// Flush waits until every dirty file is uploaded and every queued tree
// operation is pushed, or ctx ends.
func (d *Drive) Flush(ctx context.Context) error {
	if err := d.flushMembers(ctx); err != nil {
		return err
	}
	d.up.flushing.Add(1)
	defer d.up.flushing.Add(-1)
	d.mu.Lock()
	for _, st := range d.dirty {
		st.urgent = true
	}
	d.mu.Unlock()
	kick(d.uploadKick)
	kick(d.pushKick)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		d.mu.Lock()
		nd := len(d.dirty)
		for _, st := range d.dirty {
			st.urgent = true
		}
		d.mu.Unlock()
		n, err := d.store.PendingCount()
		if err != nil {
			return fmt.Errorf("fs: flush: %w", err)
		}
		if nd == 0 && n == 0 && d.uploadsRunning.Load() == 0 {
			if d.isMember() {
				return nil // the account head is the owner's to advance
			}
			// The head covers what was pushed (a refused head is in the
			// control file; the data itself is in the cloud).
			if err := d.advanceHead(ctx); err != nil {
				d.log.Warn("account head not advanced", "err", err)
			}
			return nil
		}
		if nd > 0 {
			kick(d.uploadKick)
		}
		if n > 0 {
			kick(d.pushKick)
		}
		select {
		case <-ctx.Done():
			s := d.Status()
			return fmt.Errorf("fs: flush: %d files, %d ops still pending (last error: %s): %w",
				s.Queue.Files, s.Queue.Ops, s.Queue.LastError, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// Unmount unmounts the file system and shuts the drive down (without flushing:
// call Flush first to push pending work; it is resumed at the next mount anyway).
func (d *Drive) Unmount() error {
	var err error
	if d.server != nil {
		for i := 0; i < 20; i++ {
			if err = d.server.Unmount(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("fs: unmount: %w", err)
		}
	}
	<-d.done
	return nil
}

// shutdown stops the workers and closes the store; runs once the server ends.
func (d *Drive) shutdown() {
	if d.closed.Swap(true) {
		return
	}
	d.stopMembers()
	d.cancel()
	d.wg.Wait()
	// A link or restore still running after the wait (control.go) keeps
	// the layers and the store open: closing them under it could fail or
	// corrupt its writes, and the process exits anyway.
	stopped := d.waitBackground()
	if !stopped {
		d.log.Error("a background link or restore did not stop in time at the drive's shutdown: leaving the cache open under it (synced, not closed)")
	}
	d.mu.Lock()
	for _, st := range d.states {
		for _, l := range st.layers {
			_ = l.f.Sync()
			if stopped {
				_ = l.f.Close()
			}
		}
		if stopped {
			st.layers = nil
		}
	}
	d.mu.Unlock()
	_ = d.store.Sync()
	if d.owns && stopped {
		if err := d.store.Close(); err != nil {
			d.log.Error("closing cache", "err", err)
		}
	}
	close(d.done)
}

// noteErr records a failure to talk to the cloud for Status.
func (d *Drive) noteErr(err error) {
	if err == nil {
		return
	}
	d.stat.Lock()
	defer d.stat.Unlock()
	d.stat.lastErr = err.Error()
	d.stat.lastErrAt = time.Now()
	if errors.Is(err, api.ErrUnavailable) {
		if d.stat.online {
			d.stat.online = false
			d.stat.offlineSince = time.Now()
			d.log.Warn("cloud unreachable: working offline", "err", err)
		}
	}
}

func (d *Drive) noteOnline() {
	d.stat.Lock()
	defer d.stat.Unlock()
	if !d.stat.online {
		d.log.Info("cloud reachable again", "offline_for", time.Since(d.stat.offlineSince).Round(time.Second))
		d.stat.online = true
		// Resolved: the offline period's error no longer describes anything.
		d.stat.lastErr, d.stat.lastErrAt = "", time.Time{}
		// The puller may be in a backoff of up to 30 s from the offline
		// period: what changed elsewhere meanwhile should show now.
		kick(d.pullKick)
	}
}

func (d *Drive) setAccount(a api.Account) {
	d.stat.Lock()
	old := d.stat.account
	d.stat.account = a
	d.stat.Unlock()
	d.accountChanged(old, a) // quota.go: resume a queue blocked for quota
}

func (d *Drive) accountLoop() {
	defer d.wg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(d.ctx, 20*time.Second)
		a, err := d.c.Account(ctx)
		if err == nil {
			// A share rotated (a member removed) or joined elsewhere: new
			// writes in it must use its new generation (share.go).
			if serr := d.loadShares(ctx, 10*time.Second); serr != nil {
				d.log.Warn("reloading shared folders failed", "err", serr)
			}
		}
		cancel()
		if err != nil {
			d.noteErr(err)
			continue
		}
		d.noteOnline()
		d.setAccount(a)
	}
}

// sleepCtx waits d or until ctx ends; false if ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
