package fs

import (
	"context"
	"fmt"
	"log"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/cache"
	"kumo/remote/api"
)

// kernelCacheTTL is how long the kernel keeps entries, negative entries and
// attributes without asking (control files set their own, zero).
const kernelCacheTTL = time.Hour

// Mount mounts the drive at mountpoint and returns once the kernel serves it.
func Mount(ctx context.Context, mountpoint string, o Options) (*Drive, error) {
	d, err := newDrive(o)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Drive, error) {
		d.abandon()
		return nil, err
	}
	if err := d.start(); err != nil {
		return fail(err)
	}
	d.mu.Lock()
	_, err = d.stateLocked(api.RootID)
	d.mu.Unlock()
	if err != nil {
		return fail(fmt.Errorf("fs: root: %w", err))
	}
	d.root = &fnode{d: d, id: api.RootID}
	d.inodes[api.RootID] = d.root

	// The local tree is authoritative and every change from elsewhere is
	// pushed into the kernel by the puller (NotifyEntry/NotifyDelete/
	// NotifyContent), so the kernel may keep names and attributes for long:
	// stat, ls -l and find then cost no round trip to the daemon.
	entryTTL, attrTTL, negTTL := kernelCacheTTL, kernelCacheTTL, kernelCacheTTL
	name := o.FsName
	if name == "" {
		name = "kumo"
	}
	mo := fuse.MountOptions{
		AllowOther:   o.AllowOther,
		MaxWrite:     1 << 20,
		MaxReadAhead: 1 << 20,
		FsName:       name,
		Name:         "kumo",
		Debug:        o.Debug,
		// Kernel file locks (flock, fcntl) are kept by the kernel for this
		// mount, which is what a single-machine drive needs.
		EnableLocks:          false,
		EnableSymlinkCaching: true,
		DisableXAttrs:        false,
		MaxBackground:        64,
		// The kernel keeps file pages until we say otherwise (the puller's
		// NotifyContent): no invalidation because an attribute check saw a
		// new mtime, which for our own writes would only throw pages away.
		ExplicitDataCacheControl: true,
		// The daemon clears setuid/setgid on write and truncate itself
		// (killPrivOnWrite). In return the kernel marks inodes it found
		// without capabilities (SB_NOSEC) and stops asking for
		// security.capability before every write() — a second round trip
		// per write: 4 KiB appends 32-33 -> 56-61 MB/s. A file's first
		// write after open or a setxattr still asks once.
		ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2,
	}
	// allow_other without default_permissions would let every local user
	// read, write and chmod every file (the handlers check no modes): other
	// users get in only through the kernel's permission checks.
	if o.DefaultPermissions || o.AllowOther {
		mo.Options = append(mo.Options, "default_permissions")
	}
	if o.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	opts := &gofs.Options{
		MountOptions:    mo,
		EntryTimeout:    &entryTTL,
		AttrTimeout:     &attrTTL,
		NegativeTimeout: &negTTL,
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: api.RootID, Mode: fuse.S_IFDIR},
		Logger:          log.New(slogWriter{d}, "", 0),
	}
	// go-fuse's own lines (--debug's request log, a failed read of
	// /dev/fuse) go to the drive's log too, not to the standard logger.
	opts.MountOptions.Logger = opts.Logger
	d.mnt = mountpoint
	srv, err := gofs.Mount(mountpoint, d.root, opts)
	if err != nil {
		return fail(fmt.Errorf("fs: mount %s: %w", mountpoint, err))
	}
	d.server = srv
	go func() {
		srv.Wait()
		d.shutdown()
	}()
	d.log.Info("mounted", "mountpoint", mountpoint, "server", d.c.BaseURL())
	return d, nil
}

type slogWriter struct{ d *Drive }

func (w slogWriter) Write(p []byte) (int, error) {
	w.d.log.Debug("fuse", "msg", string(p))
	return len(p), nil
}

// Status is what the drive reports about itself (for the control file and
// `kumo unmount`).
type Status struct {
	Server  string
	Account api.Account
	// QuotaUsed includes data written but not uploaded yet.
	QuotaUsed, QuotaLimit int64
	QuotaBlocked          bool // the cloud refused uploads for quota: top up to continue
	Cache                 cache.CacheStats
	Queue                 QueueStatus
	Online                bool
	OfflineSince          time.Time
	LastError             string
	LastErrorAt           time.Time
	// Shared is the queues of the drives of folders shared with the
	// account (member drives), summed: Flush, and so `kumo unmount`,
	// waits for them too, and the /metrics queue gauges count them
	// (Pending). Not in Queue: each share's own is in .kumo.
	Shared QueueStatus
}

// QueueStatus describes work waiting for the cloud.
type QueueStatus struct {
	Files     int       // files with data not uploaded yet
	Bytes     int64     // bytes written and not uploaded yet
	Ops       int       // tree operations not pushed yet
	Oldest    time.Time // oldest pending write
	Uploading int       // uploads running now
	LastError string
}

// Pending is all the work a Flush of the drive waits for: its own queue
// and its member drives' (Shared).
func (s Status) Pending() QueueStatus {
	q := s.Queue
	q.add(s.Shared)
	return q
}

// add counts o's work in q too.
func (q *QueueStatus) add(o QueueStatus) {
	q.Files += o.Files
	q.Bytes += o.Bytes
	q.Ops += o.Ops
	q.Uploading += o.Uploading
	if !o.Oldest.IsZero() && (q.Oldest.IsZero() || o.Oldest.Before(q.Oldest)) {
		q.Oldest = o.Oldest
	}
}

// queueStatus is the drive's own queue.
func (d *Drive) queueStatus() QueueStatus {
	var q QueueStatus
	d.mu.Lock()
	q.Files = len(d.dirty)
	for _, st := range d.dirty {
		q.Bytes += st.queued
		if q.Oldest.IsZero() || st.lastWrite.Before(q.Oldest) {
			q.Oldest = st.lastWrite
		}
	}
	d.mu.Unlock()
	q.Uploading = int(d.uploadsRunning.Load())
	if n, err := d.store.PendingCount(); err == nil {
		q.Ops = n
	}
	return q
}

// Status reports the drive's state.
func (d *Drive) Status() Status {
	var s Status
	s.Server = d.c.BaseURL()
	s.Queue = d.queueStatus()
	for _, m := range d.memberDrives() {
		s.Shared.add(m.queueStatus())
	}
	s.Cache = d.store.Stats()
	// Counted where reads are served, not in the chunk cache alone.
	s.Cache.Hits, s.Cache.Misses = d.reads.hits.Load(), d.reads.misses.Load()
	d.stat.Lock()
	s.Account = d.stat.account
	s.QuotaLimit = d.stat.account.QuotaLimit
	s.QuotaUsed = d.stat.account.QuotaUsed + s.Queue.Bytes
	s.QuotaBlocked = d.stat.quotaBlocked
	s.Online = d.stat.online
	s.OfflineSince = d.stat.offlineSince
	s.LastError = d.stat.lastErr
	s.LastErrorAt = d.stat.lastErrAt
	d.stat.Unlock()
	s.Queue.LastError = s.LastError
	return s
}
