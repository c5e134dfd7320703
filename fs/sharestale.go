package fs

// Records below a share's lowest accepted generation (docs/FORMAT.md §3g).
// When the owner removes or demotes a writer, it re-seals the folder under
// a new generation and then signs a roster whose min_generation refuses
// every older record, whoever signed it. A drive that adopts that roster
// before its change feed has brought every re-sealed record still holds
// older ones in its local tree. Those stay refused; but the operation that
// hits one (a lookup, a listing, a getattr or open) brings the refused
// records' current versions from the cloud (the node's attributes, the
// directory's entries) through the puller's own code, which checks them
// under the new roster like any record, and then tries again: only if the
// cloud's record is refused too is the answer EIO. Adopting such a roster
// also starts a sweep of the share's local tree that does the same for
// every record below the new lowest generation, without waiting for the
// feed or for a reader.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
)

const (
	// staleRetry is how soon a refused record is fetched again: a server
	// that keeps answering an old record costs a request per this, not
	// one per lookup.
	staleRetry = 2 * time.Second
	// staleFetchTimeout bounds the fetches of one operation.
	staleFetchTimeout = 10 * time.Second
	// staleTries is how many times an operation runs: each run may find
	// the next refused record of its path (the directory, its entry, the
	// node).
	staleTries = 4
)

// staleRecords are local records refused because they are of a generation
// below their share's lowest accepted one, to be fetched again.
type staleRecords struct {
	count atomic.Uint64 // refusals noted: an operation compares before and after
	// waiting is how many noted records are not taken yet: while it is 0
	// (always, in a drive without a raised roster) a failed operation
	// costs one atomic load here, no lock.
	waiting atomic.Int64
	sweep   atomic.Bool // a sweep runs
	mu      sync.Mutex
	nodes   map[uint64]bool // attributes refused
	dirs    map[uint64]bool // a name under this directory refused
	tried   map[staleKey]time.Time
	// sweepRoots are the roots a sweep is asked for and has not walked
	// yet: a roster raised again while a sweep runs makes it walk again.
	sweepRoots []uint64

	// keepCache turns off the drop at a roster's adoption
	// (dropBelowFloor), for tests of the handlers' refusal (dropRefused).
	keepCache atomic.Bool
}

type staleKey struct {
	dir bool
	id  uint64
}

// note records a refused record: attributes of node id, or a name under directory id.
func (s *staleRecords) note(kind keys.RecordKind, id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kind == keys.RecordName {
		if s.dirs == nil {
			s.dirs = map[uint64]bool{}
		}
		if !s.dirs[id] {
			s.dirs[id] = true
			s.waiting.Add(1)
		}
	} else {
		if s.nodes == nil {
			s.nodes = map[uint64]bool{}
		}
		if !s.nodes[id] {
			s.nodes[id] = true
			s.waiting.Add(1)
		}
	}
	s.count.Add(1)
}

// take returns the noted records not fetched within staleRetry, and marks
// them fetched now.
func (s *staleRecords) take(now time.Time) (nodes, dirs []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tried == nil {
		s.tried = map[staleKey]time.Time{}
	}
	for k, at := range s.tried {
		if now.Sub(at) >= staleRetry {
			delete(s.tried, k)
		}
	}
	for id := range s.nodes {
		if _, ok := s.tried[staleKey{false, id}]; !ok {
			nodes = append(nodes, id)
			s.tried[staleKey{false, id}] = now
		}
		delete(s.nodes, id)
	}
	for id := range s.dirs {
		if _, ok := s.tried[staleKey{true, id}]; !ok {
			dirs = append(dirs, id)
			s.tried[staleKey{true, id}] = now
		}
		delete(s.dirs, id)
	}
	s.waiting.Store(0)
	return nodes, dirs
}

// pending reports whether records are noted.
func (s *staleRecords) pending() bool { return s.waiting.Load() > 0 }

// pendingFor reports whether a record of node id (its attributes, or a
// name under it) is noted.
func (s *staleRecords) pendingFor(id uint64) bool {
	if !s.pending() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[id] || s.dirs[id]
}

// staleNode reports whether node id's local record is below its share's
// lowest accepted generation.
func (d *Drive) staleNode(id uint64) bool {
	n, err := d.store.GetNode(id)
	return err == nil && d.belowMinGen(n.Attrs)
}

// staleStateLocked reports whether st, a node's state decoded before a
// roster raised its share's lowest accepted generation, is below it, as
// the local record it was decoded from is: decode refuses that record
// now, and a state kept in memory must not stand in for it (a lookup
// answered with it where the cloud's record is refused). It notes the
// node to be fetched again, as the refusal of the record does. Not for a
// state holding this drive's own changes (data or attributes not
// uploaded, a queued operation: the pusher seals them again under the
// current generation). A node removed from the tree that a handle keeps
// open has no local record left (staleNode): it reads as it opened. Under
// d.mu.
//
// Every lookup, getattr, open and read comes here: the own tree costs one
// compare, a shared folder's state at or above its lowest generation a
// map lookup and a compare; only a state below it reads the local record.
func (d *Drive) staleStateLocked(st *nodeState) bool {
	if !d.belowFloorLocked(st) || !d.staleNode(st.id) {
		return false
	}
	d.sh.stale.note(keys.RecordAttrs, st.id)
	d.log.Debug("node state below the shared folder's lowest accepted generation: fetching it again", "node", st.id, "generation", st.kid.Gen)
	return true
}

// belowFloorLocked is staleStateLocked's test before the local record is
// read: st is of a shared folder, of a generation below the lowest its
// roster accepts, and holds none of this drive's own changes. Under d.mu.
func (d *Drive) belowFloorLocked(st *nodeState) bool {
	if st.kid.Share == 0 { // the own tree
		return false
	}
	if sh := d.shares().byID[st.kid.Share]; sh == nil || st.kid.Gen >= sh.Roster.MinGen {
		return false
	}
	return !d.localNewerLocked(st) && d.pending[nodeKey(st.id)] == 0
}

// errStaleRecord is a local record of a shared folder below the lowest
// generation its roster accepts: sealed before a re-seal whose records the
// drive has not fetched yet. Refused, but not an authentication failure.
var errStaleRecord = errors.New("record of a shared folder older than the lowest generation its roster accepts (re-sealed since): fetched again from the cloud")

// staleLocal reports whether the local record b, refused with err, is below
// its share's lowest accepted generation and genuine under the rules of its
// own generation (open: the refused check run again with verify, which is
// verifyOwnGen), and if so logs it at debug level: such a record is
// expected after a re-seal and is fetched again (the refusal noted it:
// verifyRecord), so it is not counted as an authentication failure. The
// generation in the header is clear text and the local store holds what
// the cloud sent (pullEntry), so a record that only claims an old
// generation is counted as before. what and args say which record it is.
func (d *Drive) staleLocal(b []byte, err error, open func(verify recordVerifier) error, what string, args ...any) bool {
	if !d.belowMinGen(b) {
		return false
	}
	if oerr := open(d.verifyOwnGen); oerr != nil {
		d.log.Debug(what+" below the shared folder's lowest accepted generation fails authentication under its own generation too", append(args, "err", oerr)...)
		return false
	}
	d.log.Debug(what+" below the shared folder's lowest accepted generation: fetching it again", append(args, "err", err)...)
	return true
}

// verifyOwnGen checks b, a record of a share below the roster's lowest
// accepted generation, as it was checked when that generation was current:
// signed by the owner or a writer of that generation (keys.Roster.Signer
// without the floor: a member removed or demoted since signs up to its
// WroteUntil). A writer removed since could still make such a record with
// the server, but the drive refuses it anyway (errStaleRecord) and fetches
// the re-sealed one; the count is for what nobody in the roster signed. Any
// other record is refused.
func (d *Drive) verifyOwnGen(kind keys.RecordKind, id uint64, nameMAC string, b []byte) ([]byte, *shareSet, error) {
	s := d.shares()
	kid, ok := meta.RecordKeyID(b)
	sh := s.byID[kid.Share]
	if !ok || kid.Share == 0 || sh == nil || kid.Gen >= sh.Roster.MinGen {
		return nil, nil, fmt.Errorf("%w: not a record of a shared folder below its lowest accepted generation", errShareRecord)
	}
	past, r := *sh, *sh.Roster
	r.MinGen = 0
	past.Roster = &r
	sealed, err := past.Verify(kind, id, nameMAC, b)
	return sealed, s, err
}

// belowMinGen reports whether record b is of a share this drive holds and
// of a generation below the lowest its roster accepts.
func (d *Drive) belowMinGen(b []byte) bool {
	kid, ok := meta.RecordKeyID(b)
	if !ok || kid.Share == 0 {
		return false
	}
	sh := d.shares().byID[kid.Share]
	return sh != nil && kid.Gen < sh.Roster.MinGen
}

// online reports whether the cloud answered the drive's last request.
func (d *Drive) online() bool {
	d.stat.Lock()
	defer d.stat.Unlock()
	return d.stat.online
}

// retryStale runs op (an operation on the local tree under node id, not
// under d.mu) and, while a run refused a record below its share's lowest
// accepted generation, fetches the refused records from the cloud and
// runs op again. A failed run also fetches what was noted before it about
// id itself (by the puller, say: a directory whose refused record kept its
// new entries out); a name that is simply not there, elsewhere, costs no
// lock and no request.
func (d *Drive) retryStale(id uint64, op func() syscall.Errno) syscall.Errno {
	for try := 1; ; try++ {
		before := d.sh.stale.count.Load()
		e := op()
		if try == staleTries || d.sh.stale.count.Load() == before && (e == 0 || !d.sh.stale.pendingFor(id)) || !d.freshenStale() {
			return e
		}
	}
}

// freshenStale fetches from the cloud the current versions of the records
// noted as refused (refreshDir, pullNode: checked under the current
// roster before they replace the local ones); false if there was nothing
// to fetch (or the drive is offline).
func (d *Drive) freshenStale() bool {
	nodes, dirs := d.sh.stale.take(time.Now())
	if len(nodes)+len(dirs) == 0 || !d.online() {
		return false
	}
	// Called from FUSE handlers (retryStale): the kernel is told what
	// changed after they answer (notifyIn).
	ctx, cancel := context.WithTimeout(context.WithValue(d.ctx, inHandlerKey{}, true), staleFetchTimeout)
	defer cancel()
	more := map[uint64]bool{}
	for _, id := range nodes {
		d.freshenNode(ctx, id)
		// The re-seal renamed the node's entry and, for a directory, its
		// children's entries to the new generation's name MACs.
		n, err := d.store.GetNode(id)
		if err != nil {
			continue
		}
		if n.Type == api.TypeDir {
			more[id] = true
		}
		if n.Parent != 0 && d.staleNames(n.Parent) {
			more[n.Parent] = true
		}
	}
	for _, id := range dirs {
		more[id] = true
	}
	for id := range more {
		if ctx.Err() != nil {
			break
		}
		if d.staleNames(id) {
			d.refreshDirIn(ctx, id)
		}
	}
	return true
}

// freshenNode fetches node id's record if the local one is below its
// share's lowest accepted generation.
func (d *Drive) freshenNode(ctx context.Context, id uint64) {
	if !d.staleNode(id) {
		return
	}
	// Seq: past any the drive noted, so the puller's "already have it" does not skip it.
	if err := d.pullNode(ctx, id, api.Change{Kind: api.ChangeNode, Node: id, Seq: math.MaxUint64}); err != nil {
		d.noteErr(err)
		d.log.Warn("fetching a record refused under the shared folder's new roster", "node", id, "err", err)
	}
}

// staleNames reports whether a name of directory dir's local entries is
// below its share's lowest accepted generation.
func (d *Drive) staleNames(dir uint64) bool {
	es, err := d.store.List(dir)
	if err != nil {
		return false
	}
	for _, e := range es {
		if d.belowMinGen(e.Name) {
			return true
		}
	}
	return false
}

// minGenRaised starts a sweep of the local tree when a roster raises a
// share's lowest accepted generation (old and cur are the snapshots before
// and after the roster's adoption): a member drive's whole tree, the
// share's folder in the owner's. It also drops at once what the kernel
// caches of the share's live inodes whose state the roster refuses
// (dropBelowFloor), online or not.
func (d *Drive) minGenRaised(old, cur *shareSet) {
	var roots []uint64
	var raised map[uint64]bool
	for id, sh := range cur.byID {
		if o := old.byID[id]; o == nil || sh.Roster.MinGen <= o.Roster.MinGen {
			continue
		}
		if raised == nil {
			raised = map[uint64]bool{}
		}
		raised[id] = true
		switch {
		case d.isMember():
			roots = append(roots, d.rootID())
		case sh.Owned && sh.Root != 0:
			roots = append(roots, sh.Root)
		}
	}
	if len(roots) > 0 {
		go d.sweepStale(roots)
	}
	if len(raised) > 0 && !d.sh.stale.keepCache.Load() {
		// From another goroutine: a roster may be adopted inside a FUSE
		// handler of one of these inodes (the stale-record retry fetching
		// a record of a generation new here: ensureShareKeys).
		go d.dropBelowFloor(raised)
	}
}

// dropBelowFloor drops what the kernel caches of every live inode of the
// shares in raised (by id) whose state is refused now (staleStateLocked's test): files open with
// FOPEN_KEEP_CACHE, and a handle kept open would read, without reaching
// the drive, pages of a state decoded under the older generation until a
// handler or the sweep (online only) came to refuse it. After the drop its
// next read or getattr comes to the drive, which fetches the record again
// or answers EIO. One pass over the live inodes per adoption, under d.mu;
// the local records of those below the floor are read after it.
func (d *Drive) dropBelowFloor(raised map[uint64]bool) {
	var ids []uint64
	d.mu.Lock()
	for id := range d.inodes {
		if st := d.states[id]; st != nil && raised[st.kid.Share] && d.belowFloorLocked(st) {
			ids = append(ids, id)
		}
	}
	d.mu.Unlock()
	dropped := 0
	for _, id := range ids {
		if d.staleNode(id) {
			d.notifyContent(id)
			dropped++
		}
	}
	if dropped > 0 {
		d.log.Debug("dropped the kernel's cached pages and attributes of nodes a shared folder's new roster refuses", "nodes", dropped)
	}
}

// sweepStale walks the local tree from roots and fetches every record
// below its share's lowest accepted generation. Asked while a sweep runs,
// it leaves roots to that sweep, which walks them again once done: a
// roster raised again meanwhile refuses records the running walk has
// already passed (fetched under the generation before).
func (d *Drive) sweepStale(roots []uint64) {
	s := &d.sh.stale
	s.mu.Lock()
	s.sweepRoots = append(s.sweepRoots, roots...)
	s.mu.Unlock()
	if s.sweep.Swap(true) {
		return
	}
	for {
		s.mu.Lock()
		roots := s.sweepRoots
		s.sweepRoots = nil
		if len(roots) == 0 {
			s.sweep.Store(false) // under mu: a request after this starts a sweep
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if d.online() { // offline: the operations that hit such records fetch them once online
			d.sweepOnce(slices.Compact(slices.Sorted(slices.Values(roots))))
		}
	}
}

// sweepOnce is one walk of sweepStale.
func (d *Drive) sweepOnce(roots []uint64) {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Minute)
	defer cancel()
	kick(d.pullKick)
	fetched := 0
	queue := roots
	for len(queue) > 0 && ctx.Err() == nil {
		dir := queue[0]
		queue = queue[1:]
		if n, err := d.store.GetNode(dir); err == nil && d.belowMinGen(n.Attrs) {
			d.sweepNode(ctx, dir)
			fetched++
		}
		if d.staleNames(dir) {
			d.refreshDir(dir)
			fetched++
		}
		es, err := d.store.List(dir)
		if err != nil {
			continue
		}
		for _, e := range es {
			n, err := d.store.GetNode(e.Child)
			if err != nil {
				continue
			}
			if d.belowMinGen(n.Attrs) {
				d.sweepNode(ctx, e.Child)
				fetched++
			}
			if n.Type == api.TypeDir {
				queue = append(queue, e.Child)
			}
		}
	}
	if fetched > 0 {
		d.log.Info("fetched the records a shared folder's new roster no longer accepts", "fetched", fetched)
	}
}

// sweepNode fetches node id's record for the sweep; if the cloud's is
// refused too, the node's state is refused from now on, and what the kernel
// caches of it goes (dropRefused): no handler may come to refuse it, a
// handle kept open reading the kernel's pages.
func (d *Drive) sweepNode(ctx context.Context, id uint64) {
	d.freshenNode(ctx, id)
	if d.staleNode(id) {
		d.dropRefused(id)
	}
}

// lookupFresh resolves name in parent as the kernel's lookup does, fetching
// records a new roster refuses (retryStale).
func (d *Drive) lookupFresh(parent uint64, name string) (*nodeState, syscall.Errno) {
	var st *nodeState
	e := d.retryStale(parent, func() syscall.Errno {
		d.mu.Lock()
		defer d.mu.Unlock()
		var e syscall.Errno
		_, st, e = d.lookupLocked(parent, name)
		return e
	})
	return st, e
}

// listFresh lists directory dir as readdir does, fetching records a new
// roster refuses (list leaves refused entries out).
func (d *Drive) listFresh(dir uint64) ([]dirEnt, listedAt, syscall.Errno) {
	var es []dirEnt
	var at listedAt
	e := d.retryStale(dir, func() syscall.Errno {
		var e syscall.Errno
		es, at, e = d.list(dir)
		return e
	})
	return es, at, e
}

// stateFresh returns node id's state (getattr, open and the other
// operations on an inode), fetching its record if a new roster refuses the
// local one, or if the state kept in memory was decoded before the roster
// rose (staleStateLocked): such a state answers only once the cloud's
// record, checked under the new roster, replaced it; EIO if that is
// refused too.
func (d *Drive) stateFresh(id uint64) (*nodeState, syscall.Errno) {
	var st *nodeState
	var refused bool
	e := d.retryStale(id, func() syscall.Errno {
		d.mu.Lock()
		defer d.mu.Unlock()
		s, err := d.stateLocked(id)
		if err != nil {
			refused = errors.Is(err, errStaleRecord)
			return errno(err)
		}
		refused = d.staleStateLocked(s)
		if refused {
			return syscall.EIO
		}
		st = s
		return 0
	})
	if refused {
		d.dropRefused(id)
	}
	return st, e
}

// heldFresh is stateFresh for st, the state an open file handle holds
// (getattr and read through the handle): the kernel keeps a handle opened
// before the roster rose, and its state must not answer in place of the
// record a new roster refuses either. The fetch updates st in place
// (pullNode).
func (d *Drive) heldFresh(st *nodeState) syscall.Errno {
	var refused bool
	e := d.retryStale(st.id, func() syscall.Errno {
		d.mu.Lock()
		defer d.mu.Unlock()
		refused = d.staleStateLocked(st)
		if refused {
			return syscall.EIO
		}
		return 0
	})
	if refused {
		d.dropRefused(st.id)
	}
	return e
}

// dropRefused drops what the kernel caches of node id, whose state is
// refused (EIO) under its shared folder's new roster: files open with
// FOPEN_KEEP_CACHE, so pages read before the roster rose would otherwise
// still answer reads of a handle open since (and mmaps), without reaching
// the drive, and its attributes stat for the attribute timeout.
// NotifyContent(0, 0) drops both; the next read or getattr comes here and
// is refused. From another goroutine: it runs in a handler of that inode,
// and the kernel may hold the inode's locks until the handler answers.
func (d *Drive) dropRefused(id uint64) {
	d.log.Debug("dropping the kernel's cached pages and attributes of a node whose state is refused", "node", id)
	go d.notifyContent(id)
}
