package fs

// Quota refusals: when the cloud refuses an upload for quota (or because the
// account is read-only), the data stays queued and the uploader pauses,
// trying one round every quotaRetry, until the account gains room (a top-up
// settles, a voucher is redeemed, the operator raises the quota, data is
// deleted elsewhere: all arrive as account changes on the change feed), an
// upload or the refused push goes through (room no refresh showed), or the
// user writes `sync` to .kumo. Then the queue resumes at once.

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"kumo/remote/api"
)

// quotaRetry is how often a paused uploader tries again on its own.
const quotaRetry = time.Minute

type quotaState struct {
	resume chan struct{} // the uploader retries now (buffered, 1)

	mu      sync.Mutex
	seen    bool      // the uploader has seen the current block
	triedAt time.Time // last round let through while blocked
	byPush  bool      // the pusher's refusal set the block (pushRefusedQuota)
	pushSeq uint64    // journal seq of the op the pusher's refusal was for (0: unknown)

	// metaQueued is what xattr writes added to sealed attributes since the
	// cloud last reported usage with nothing left to push: the cloud
	// charges attribute bytes once they are pushed.
	metaQueued atomic.Int64
}

// checkXattrQuota refuses with EDQUOT an xattr write whose growth of the
// node's sealed attributes the known quota cannot hold, as checkQuota does
// for data; growth it lets through counts as queued until the cloud's
// usage includes it. The growth is exact: an xattr costs its name, its
// value and 5 bytes in the encoding (meta.Attrs.Encode).
func (d *Drive) checkXattrQuota(st *nodeState, name string, value []byte) syscall.Errno {
	d.mu.Lock()
	old, ok := st.attrs.Xattrs[name]
	d.mu.Unlock()
	grow := int64(len(value) - len(old))
	if !ok {
		grow += int64(1 + len(name) + 4)
	}
	if grow <= 0 {
		return 0
	}
	if e := d.checkQuota(d.quota.metaQueued.Load() + grow); e != 0 {
		return e
	}
	d.quota.metaQueued.Add(grow)
	return 0
}

// quotaRefused says whether the cloud's last answer to an upload was a
// refusal for quota.
func (d *Drive) quotaRefused() bool {
	d.stat.Lock()
	defer d.stat.Unlock()
	return d.stat.quotaBlocked
}

// uploadPaused reports whether the uploader should hold its work because the
// cloud refused it for quota; one round goes through every quotaRetry.
func (d *Drive) uploadPaused() bool {
	blocked := d.quotaRefused()
	q := &d.quota
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	switch {
	case !blocked:
		q.seen = false
		return false
	case !q.seen:
		q.seen, q.triedAt = true, now
		d.log.Warn("quota full: uploads paused until the account has room (top up or redeem a voucher)")
		return true
	case now.Sub(q.triedAt) < quotaRetry:
		return true
	}
	q.triedAt = now
	return false
}

// pushRefusedQuota notes that the cloud refused a pushed op, journal seq
// seq, for quota (or the account is read-only): the op stays at the head of
// the queue.
func (d *Drive) pushRefusedQuota(seq uint64) {
	d.stat.Lock()
	d.stat.quotaBlocked = true
	d.stat.Unlock()
	d.quota.mu.Lock()
	d.quota.byPush, d.quota.pushSeq = true, seq
	d.quota.mu.Unlock()
}

// pushWentThrough runs after a push round that acked ops; through says
// whether the cloud accepted as sent the op of a seq. If a push's refusal set the
// block and the op it refused is among them, the cloud has room again,
// whether or not an account refresh showed it (the refusal may come after
// the refresh that showed a raise; a shared folder's room is its owner's,
// which a member's refreshes never show), so the queue resumes. Any other
// op going through says nothing of the room (a rename costs none), nor does
// the refused op acked without being sent (cancelled here, or refused for
// good for another reason): the block then waits for an account change,
// an upload, or `sync`.
func (d *Drive) pushWentThrough(through func(seq uint64) bool) {
	d.quota.mu.Lock()
	byPush, seq := d.quota.byPush, d.quota.pushSeq
	d.quota.mu.Unlock()
	if !byPush || seq == 0 || !through(seq) || !d.quotaRefused() {
		return
	}
	d.log.Info("the cloud accepted the change it refused for quota: resuming uploads")
	d.resumeQueue()
}

// resumeQueue lifts a quota pause and wakes the uploader and pusher.
func (d *Drive) resumeQueue() {
	d.stat.Lock()
	d.stat.quotaBlocked = false
	d.stat.Unlock()
	d.quota.mu.Lock()
	d.quota.seen, d.quota.byPush, d.quota.pushSeq = false, false, 0
	d.quota.mu.Unlock()
	kick(d.quota.resume)
	kick(d.uploadKick)
	kick(d.pushKick)
}

// accountChanged runs after every account refresh (setAccount): invoices
// may have moved, and a queue blocked for quota resumes once there is room.
func (d *Drive) accountChanged(old, a api.Account) {
	d.ctl.staleInvoices()
	if n, err := d.store.PendingCount(); err == nil && n == 0 {
		d.quota.metaQueued.Store(0) // pushed: the cloud's usage has it
	}
	blocked := d.quotaRefused()
	if !blocked {
		return
	}
	room := func(x api.Account) int64 { return x.QuotaLimit - x.LiveUsed() }
	if room(a) > room(old) || a.QuotaLimit > old.QuotaLimit || old.ReadOnly && !a.ReadOnly {
		d.log.Info("account has more room: resuming uploads", "used", a.QuotaUsed, "limit", a.QuotaLimit)
		d.resumeQueue()
	}
}
