package fs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"kumo/cache"
	"kumo/internal/control"
	"kumo/internal/meta"
	"kumo/internal/size"
	"kumo/remote/api"
)

const pushBatch = 300

// pushLoop sends the journal to the cloud in order.
func (d *Drive) pushLoop() {
	defer d.wg.Done()
	var backoff time.Duration
	// buf holds journal ops already read and decoded: a batch is often cut
	// after a few ops (see pushOnce), and reading the same 300 ops again for
	// every short batch would cost O(batch) per op.
	var buf []cache.JournalOp
	limit := maxBatchBytes
	var lastPush time.Time
	stuck := pushStuck{limit: pushStuckTries}
	for {
		if d.ctx.Err() != nil {
			return
		}
		acked := d.store.AckedUpto()
		for len(buf) > 0 && buf[0].Seq <= acked {
			buf = buf[1:]
		}
		if len(buf) < pushBatch {
			var after uint64
			if len(buf) > 0 {
				after = buf[len(buf)-1].Seq
			}
			more, err := d.store.PendingAfter(after, pushBatch-len(buf))
			if err != nil {
				buf = nil
				d.log.Error("reading journal", "err", err)
				if !sleepCtx(d.ctx, time.Second) {
					return
				}
				continue
			}
			buf = append(slices.Clip(buf), more...)
		}
		ops := buf
		if wait := max(d.pushHold(len(ops) > 0), d.gatherHold(len(ops), lastPush)); wait > 0 {
			// Local changes are still coming: let them gather (see pushHold).
			if !sleepCtx(d.ctx, wait) {
				return
			}
			continue
		}
		if len(ops) == 0 {
			select {
			case <-d.ctx.Done():
				return
			case <-d.pushKick:
			case <-time.After(2 * time.Second):
			}
			continue
		}
		if d.head.Broken() != "" {
			// The cloud's history contradicts ours (head.go): keep our
			// changes queued here rather than push them into it.
			if !sleepCtx(d.ctx, 30*time.Second) {
				return
			}
			continue
		}
		lastPush = time.Now()
		retry, err := d.pushOnce(ops, &limit)
		if rest := d.pushRest(time.Since(lastPush)); rest > 0 && !sleepCtx(d.ctx, rest) {
			return
		}
		if err != nil {
			if retry {
				err = stuck.failed(d, ops[0], err)
			}
			d.noteErr(err)
			if !errors.Is(err, api.ErrUnavailable) {
				d.log.Warn("pushing tree changes failed; will retry", "err", err)
			}
		}
		if retry {
			backoff = min(max(2*backoff, 500*time.Millisecond), 30*time.Second)
			if !sleepCtx(d.ctx, backoff) {
				return
			}
			continue
		}
		backoff = 0
	}
}

// pushStuckTries is after how many failed tries in a row of the same op,
// with the cloud answering, the queue is reported stuck (about 2.5 minutes
// of the pusher's backoff).
const pushStuckTries = 10

// pushStuck follows the tries of the op at the head of the queue, so that
// one the cloud keeps refusing is reported instead of retried in silence
// for ever (every op behind it waits: an unmount waits for all of them).
type pushStuck struct {
	limit    int    // pushStuckTries
	seq      uint64 // the op at the head
	since    time.Time
	tries    int
	reported bool
}

// failed notes that a push starting at head failed with err and returns the
// error to show: once the same op failed s.limit times in a row
// while the cloud answers (not offline, not the quota), err says the queue
// is stuck, and the log says it once at error level with what to do.
func (s *pushStuck) failed(d *Drive, head cache.JournalOp, err error) error {
	if head.Seq != s.seq {
		*s = pushStuck{limit: s.limit, seq: head.Seq, since: time.Now()}
	}
	if errors.Is(err, api.ErrUnavailable) || d.quotaRefused() {
		s.tries = 0 // waiting for the cloud or the quota is not being stuck
		return err
	}
	s.tries++
	if s.tries < s.limit {
		return err
	}
	err = fmt.Errorf("queue stuck for %s (%d tries in a row, nothing acked): %w", time.Since(s.since).Round(time.Second), s.tries, err)
	if !s.reported {
		s.reported = true
		d.log.Error("a queued change keeps failing and every change behind it waits; the drive keeps retrying. "+
			"See the error and the cloud's log; `kumo unmount --force` unmounts without waiting (the queue stays on this machine and resumes at the next mount)",
			"seq", head.Seq, "err", err)
	}
	return err
}

// pushQuiet is how long local changes must pause before the pusher sends
// them, and pushBacklog how many queued ops (not counting cancelled ones)
// end that wait (see pushHold). Unpacking a source tree and committing it to
// git queues about 66,000 ops; at 16,384 the pushes ran during the commit
// (git add + commit 29-35 s, now 19-22 s; docs/PERFORMANCE.md).
const (
	pushQuiet   = 250 * time.Millisecond
	pushBacklog = 65536
)

// pushHold says how long the pusher should still wait before sending queued
// ops: while files are being created, written, renamed or deleted, each push
// is a cloud commit with a device flush (on this disk when the cloud is
// embedded) and competes with the writer's own closes for the CPU and the
// disk, so ops gather until changes pause for pushQuiet. The queue is durable
// locally; a long burst still pushes once pushBacklog ops wait, and Flush
// (unmount, --fsync=remote) does not wait.
func (d *Drive) pushHold(queued bool) time.Duration {
	if !queued || d.up.flushing.Load() > 0 {
		return 0
	}
	since := time.Since(time.Unix(0, d.lastChange.Load()))
	quiet := pushQuiet + time.Duration(d.quietExtra.Load())
	if since >= quiet && !d.foregroundBusy(since) {
		return 0
	}
	n, err := d.store.PendingCount()
	if err != nil {
		return 0
	}
	if n >= pushBacklog {
		// Cancelled ops (unsent.go) never reach the cloud: an rm -rf of a
		// tree whose creates are still queued cancels them, and counting
		// them made the pusher send the very creates the rm was about to
		// cancel. (Only counted here: below the backlog they change nothing,
		// and d.mu is every file operation's lock.)
		d.mu.Lock()
		n -= len(d.unsent.cancelled)
		d.mu.Unlock()
		if n >= pushBacklog {
			return 0
		}
	}
	// Sleep in short steps so a Flush is not kept waiting.
	return max(min(quiet-since, 50*time.Millisecond), 10*time.Millisecond)
}

// pushShare is the part of the time the pusher may take while the kernel
// keeps asking (pushRest), and pushRestMax the longest rest.
const (
	pushShare   = 3 // one push in three times its length
	pushRestMax = 2 * time.Second
)

// pushRest is how long the pusher rests after a push that took took. With
// the embedded cloud, a push is also the cloud's transactions, on the same
// cores as the user's work; once the queue passed pushBacklog, pushHold no
// longer holds it, and pushes back to back took a core from an `rm -rf` or a
// `git commit` (rm -rf of the Go tree: 10.1-11.2 s with them, 6.7-7.9 s with
// this rest). So while requests keep coming the pusher works a third of
// the time; a Flush (unmount, --fsync remote) does not wait.
func (d *Drive) pushRest(took time.Duration) time.Duration {
	if d.up.flushing.Load() > 0 || !d.foregroundActive() {
		return 0
	}
	return min((pushShare-1)*took, pushRestMax)
}

// pushGather is how long the pusher lets ops gather while uploads run
// (gatherHold).
const pushGather = 500 * time.Millisecond

// gatherHold says how long the pusher should wait for more ops before
// sending n, lastPush being when it last sent: while uploads run, each
// upload's commit queues its file's update, one file at a time, and a push
// per handful of ops is a cloud commit (a device flush, serialized with the
// uploads' own commits on the account) per handful of files. So ops gather
// up to a full batch, for at most pushGather after the last push. Nothing
// waits on that: a Flush waits for the uploads first, and once none runs
// the ops go at once.
func (d *Drive) gatherHold(n int, lastPush time.Time) time.Duration {
	if n == 0 || n >= pushBatch || d.uploadsRunning.Load() == 0 {
		return 0
	}
	left := pushGather - time.Since(lastPush)
	if left <= 0 {
		return 0
	}
	return min(left, 20*time.Millisecond)
}

// versionOf is the server version updates of node id are based on; ok is
// false when the node is gone here (deleted since the update was queued).
// Under d.mu.
func (d *Drive) versionOf(id uint64) (v uint64, ok bool) {
	if st := d.states[id]; st != nil {
		return st.version, true
	}
	if n, err := d.store.GetNode(id); err == nil {
		return n.Version, true
	}
	return 0, false
}

// hasGenFixesLocked says whether any queued record has a re-sealed form
// (sharegen.go). Fixes are added and pruned only under d.mu, so the answer
// holds while the caller keeps d.mu: pushOnce asks once per batch, not
// freshGenOp (and the fixes' lock) once per op. Under d.mu.
func (d *Drive) hasGenFixesLocked() bool {
	g := &d.sh.gens
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.fixes) > 0
}

// pushOnce pushes a prefix of ops in one batch and acks what is done. retry
// says the rest must wait (cloud unreachable, quota, ...).
//
// A batch holds at most *limit bytes (batchCut). One the cloud refuses as
// too large (413) is halved and sent again, and *limit with it, down to a
// single op; a single op still too large can never be accepted: it is
// refused for good like any op the cloud refuses (resolve), reported in
// .kumo, and the ops behind it go on.
//
// An update carries a node's whole state (attributes and chunk list), so an
// update followed by another update of the same node later in ops is left
// out, and an update of a node created earlier in the batch is folded into
// that create: a file that is created, written and chmod'ed costs one op, not
// three batches (an update's base version is known only from the answer to
// the op before it, so a batch used to end there). The planning is pure
// (batchplan.go); this function does the locking, the requests and the acks.
func (d *Drive) pushOnce(ops []cache.JournalOp, limit *int) (retry bool, err error) {
	d.resealStale(ops) // records of an older share generation (sharegen.go)
	d.mu.Lock()
	regen := d.hasGenFixesLocked()
	rewritten := make([]api.BatchOp, len(ops))
	compacted := make([]bool, len(ops)) // cancelled or moved (unsent.go)
	for i, jo := range ops {
		var op api.BatchOp
		op, compacted[i] = d.unsent.asSent(jo)
		if op.Op != opCancelled {
			op = d.rewriteOp(op)
			var fresh bool
			if regen {
				if op, fresh = d.freshGenOp(op); fresh {
					compacted[i] = true // its pending keys are the queued op's
				}
			}
		}
		rewritten[i] = op
	}
	d.unsent.planning(ops[len(ops)-1].Seq)
	batch, need := planBatch(rewritten, d.versionOf)
	d.mu.Unlock()

	ctx, cancel := context.WithTimeout(d.ctx, 2*time.Minute)
	defer cancel()
	var resp api.BatchResponse
	if len(batch) > 0 {
		cut := batchCut(batch, *limit)
		for {
			resp, err = d.c.Batch(ctx, api.BatchRequest{Ops: batch[:cut]})
			if !errors.Is(err, api.ErrTooLarge) {
				break
			}
			next, nextLimit, ok := shrinkBatch(batch, cut, *limit)
			if !ok {
				// No request can carry this op: the cloud refuses it for good.
				d.noteOnline()
				sz := batchBytes(batch[:cut])
				resp, err = api.BatchResponse{Results: []api.BatchResult{{Error: &api.Error{Code: api.CodeTooLarge,
					Message: fmt.Sprintf("one change of about %s is over the cloud's request size limit", size.Format(int64(sz)))}}}}, nil
				break
			}
			cut, *limit = next, nextLimit
			d.log.Info("cloud refused a batch as too large: sending smaller ones", "ops", cut, "bound_bytes", *limit)
		}
		if err != nil {
			return true, fmt.Errorf("batch: %w", err)
		}
		d.noteOnline()
		if len(resp.Results) != cut {
			return true, fmt.Errorf("batch: %d results for %d ops", len(resp.Results), cut)
		}
	}
	done := 0
	var results []*api.Node // nodes the batch changed: their records are saved at once
	for i, r := range resp.Results {
		op := batch[i]
		if r.Error != nil {
			if !d.resolve(ctx, op, r.Error) {
				retry = true
				err = fmt.Errorf("%s refused: %w", op.Op, r.Error)
				if r.Error.Code == api.CodeQuota || r.Error.Code == api.CodeReadOnly {
					var seq uint64 // the journal op sent as entry i (0: none)
					if j := sentOps(rewritten, need, len(batch))[i]; j >= 0 {
						seq = ops[j].Seq
					}
					d.pushRefusedQuota(seq) // quota.go
				}
				break
			}
		} else if r.Node != nil {
			d.mu.Lock()
			d.noteResultLocked(r.Node)
			d.mu.Unlock()
			results = append(results, r.Node)
		}
		done = i + 1
	}
	if len(results) > 0 {
		d.mu.Lock()
		d.saveResultsLocked(results)
		d.mu.Unlock()
	}
	// Ack the longest prefix of ops whose batch entries are all done.
	n := ackedPrefix(need, done)
	if n > 0 {
		if aerr := d.store.Ack(ops[n-1].Seq); aerr != nil {
			return true, fmt.Errorf("ack journal: %w", aerr)
		}
		d.mu.Lock()
		for i, op := range rewritten[:n] {
			if compacted[i] {
				op = ops[i].Op // its keys were counted as queued
			}
			d.donePending(op)
		}
		d.unsent.acked(ops[:n])
		d.pruneGenFixesLocked(ops[n:]) // sharegen.go
		if n == len(ops) {
			d.dropRewritesLocked()
		}
		d.mu.Unlock()
		// One of the acked ops that went through as sent (not cancelled here,
		// not refused for good) may be the one the cloud refused for quota,
		// which lifts the block: looked for only while such a block is set.
		d.pushWentThrough(func(seq uint64) bool { // quota.go
			for b, j := range sentOps(rewritten, need, len(batch)) {
				if j >= 0 && j < n && ops[j].Seq == seq && b < len(resp.Results) && resp.Results[b].Error == nil {
					return true
				}
			}
			return false
		})
	}
	return retry, err
}

// sentOps returns, for each of the entries batch entries, the index of the
// journal op sent as it (planBatch's need), or -1: of the ops mapped to one
// entry, the first not cancelled is the one sent (later ones are folded
// into it or acked with it; an earlier update it supersedes is of the same
// node); an op cancelled here, or mapped to no entry, is sent as none.
func sentOps(rewritten []api.BatchOp, need []int, entries int) []int {
	sent := make([]int, entries)
	for b := range sent {
		sent[b] = -1
	}
	for j, b := range need {
		if b >= 0 && b < entries && sent[b] < 0 && rewritten[j].Op != opCancelled {
			sent[b] = j
		}
	}
	return sent
}

// noteResult records the version and chunks the cloud now holds for a node.
func (d *Drive) noteResult(n *api.Node) {
	if n == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noteResultLocked(n)
	d.saveResultsLocked([]*api.Node{n})
}

// noteResultLocked records in memory what the cloud reported for a node.
// Under d.mu.
func (d *Drive) noteResultLocked(n *api.Node) {
	if st := d.states[n.ID]; st != nil {
		if n.Version >= st.version {
			st.version = n.Version
		}
		st.serverCh = n.Chunks
		st.seq = max(st.seq, n.Seq)
		st.seen = max(st.seen, meta.Rev(n.Attrs))
	}
	d.head.notePush(n.Seq)
}

// saveResultsLocked saves the local records of nodes the cloud reported
// changed, in one Apply, from their state now: a node deleted here since is
// not written back. Under d.mu.
func (d *Drive) saveResultsLocked(ns []*api.Node) {
	var m cache.Mutation
	seen := map[uint64]bool{}
	for _, n := range ns {
		if seen[n.ID] {
			continue
		}
		seen[n.ID] = true
		if st := d.states[n.ID]; st != nil {
			if !st.deleted {
				m.PutNodes = append(m.PutNodes, d.localNode(st))
			}
		} else if ln, err := d.store.GetNode(n.ID); err == nil && ln.Version < n.Version {
			ln.Version = n.Version
			m.PutNodes = append(m.PutNodes, ln)
		}
	}
	if len(m.PutNodes) > 0 {
		if err := d.store.Apply(m); err != nil {
			// The cloud has them; the local records catch up at the next change.
			d.log.Error("saving the cloud's answer for pushed nodes locally failed", "nodes", len(m.PutNodes), "err", err)
		}
	}
}

// resolve handles an op the cloud refused: true when it is handled (ack it),
// false to leave it queued and retry later.
func (d *Drive) resolve(ctx context.Context, op api.BatchOp, e *api.Error) bool {
	switch e.Code {
	case api.CodeUnavailable, api.CodeInternal, api.CodeRateLimited, api.CodeQuota, api.CodeReadOnly, api.CodeUnauthorized:
		return false // a refusal for quota blocks uploads (pushOnce: pushRefusedQuota)
	case api.CodeStaleGeneration:
		return d.resolveStaleGen(ctx, op, e) // sharegen.go
	}
	switch op.Op {
	case api.OpCreate:
		return d.resolveCreate(ctx, op.Create, e)
	case api.OpUpdate:
		return d.resolveUpdate(ctx, op, e)
	case api.OpLink:
		if e.Code == api.CodeExists {
			if got, err := d.c.Lookup(ctx, op.Link.Parent, op.Link.NameMAC); err == nil && got.Node.ID == op.Link.ID {
				return true // an earlier attempt went through
			}
		}
	case api.OpUnlink, api.OpRename:
		if e.Code == api.CodeNotFound {
			if d.movedByReseal(ctx, op) { // sharegen.go
				return false // sent again under the entry's current MAC
			}
			d.log.Info("cloud refused a tree change: already gone there", "op", op.Op, "err", e)
			d.refreshLater(op)
			return true
		}
		if op.Op == api.OpUnlink && e.Code == api.CodeConflict && d.unlinkRaced(ctx, op.Unlink) {
			// The name holds another node now (another device replaced the
			// file after we removed the old one): an ordinary race whose
			// right outcome is the new file, so not a refusal to report.
			d.log.Info("cloud refused an unlink: another node has the name now; keeping it", "parent", op.Unlink.Parent, "node", op.Unlink.Node, "err", e)
			d.refreshLater(op)
			return true
		}
	}
	d.noteRefused(op, e, keptUndone)
	d.refreshLater(op)
	return true
}

// unlinkRaced reports whether the cloud's entry for the name an unlink u
// was refused for (409 conflict) now names, authenticated as the drive
// opens any entry, a node other than the one unlinked: the benign race of
// another device replacing the file. The server answers the 409, so it is
// not taken on its word: an entry still naming our node, none, one that
// fails authentication (counted) or a failed lookup leave the refusal
// reported as any other.
func (d *Drive) unlinkRaced(ctx context.Context, u *api.UnlinkRequest) bool {
	got, err := d.c.Lookup(ctx, u.Parent, u.NameMAC)
	if err != nil {
		d.log.Warn("looking up the name an unlink was refused for failed: reporting the refusal", "parent", u.Parent, "node", u.Node, "err", err)
		return false
	}
	if got.Node.ID == u.Node {
		return false
	}
	d.ensureEntryKeys(ctx, got) // pull.go
	if _, err = d.decodeCloud(got.Node); err != nil {
		return false // counted by decodeCloud
	}
	d.mu.Lock()
	_, err = d.openCloudEntryLocked(u.Parent, u.NameMAC, got) // pull.go
	d.mu.Unlock()
	if err != nil {
		d.authFailure("entry name from the cloud fails authentication", "parent", u.Parent, "child", got.Node.ID, "err", err)
		return false
	}
	return true
}

// What became, on this machine, of a change the cloud refused for good.
const (
	keptLocal  = "kept on this machine only, not in the cloud; a later change of it that the cloud accepts sends it whole"
	keptUndone = "undone here: the local view follows the cloud"
)

// noteRefused reports a change the cloud refused for good: in .kumo and
// .kumo.json (with its path when the drive knows it) and in the log. The op
// leaves the queue so the changes behind it go on; kept says what became of
// it here.
func (d *Drive) noteRefused(op api.BatchOp, e *api.Error, kept string) {
	r := control.RefusedOp{At: time.Now().UTC(), Op: op.Op, Reason: e.Error(), Kept: kept}
	var name []byte
	if c := op.Create; c != nil {
		name, _ = d.openName(c.Parent, c.ID, createKind(c), c.NameMAC, c.Name)
	}
	d.mu.Lock()
	switch {
	case op.Create != nil:
		r.Node = op.Create.ID
		if r.Path = d.pathLocked(r.Node); r.Path == "" && name != nil {
			if dir := d.pathLocked(op.Create.Parent); dir != "" {
				r.Path = path.Join(dir, string(name))
			}
		}
	case op.Update != nil:
		r.Node, r.Path = op.ID, d.pathLocked(op.ID)
	case op.Link != nil:
		r.Node, r.Path = op.Link.ID, d.pathLocked(op.Link.ID)
	case op.Rename != nil: // the names are sealed to their nodes: the directory it was in
		r.Path = d.pathLocked(op.Rename.SrcParent)
	case op.Unlink != nil:
		r.Path = d.pathLocked(op.Unlink.Parent)
	}
	d.mu.Unlock()
	d.log.Error("cloud refused a change for good; the changes queued behind it go on",
		"op", r.Op, "node", r.Node, "path", r.Path, "err", e, "kept", kept)
	d.ctl.addRefused(r)
}

// pathLocked is node id's path in the mount from what the drive has seen
// of it, or "" if some step is unknown. Under d.mu.
func (d *Drive) pathLocked(id uint64) string {
	var parts []string
	for range 4096 {
		if id == api.RootID {
			slices.Reverse(parts)
			return "/" + strings.Join(parts, "/")
		}
		st := d.states[id]
		if st == nil || st.lastName == "" {
			return ""
		}
		parts = append(parts, st.lastName)
		id = st.lastParent
		if st.isDir() && st.parent != 0 {
			id = st.parent
		}
	}
	return ""
}

// refreshLater relists the directories an op touched so the local tree
// matches the cloud again.
func (d *Drive) refreshLater(op api.BatchOp) {
	var dirs []uint64
	switch op.Op {
	case api.OpCreate:
		dirs = append(dirs, op.Create.Parent)
	case api.OpLink:
		dirs = append(dirs, op.Link.Parent)
	case api.OpUnlink:
		dirs = append(dirs, op.Unlink.Parent)
	case api.OpRename:
		dirs = append(dirs, op.Rename.SrcParent, op.Rename.DstParent)
	}
	d.mu.Lock()
	if d.refresh == nil {
		d.refresh = map[uint64]bool{}
	}
	for _, p := range dirs {
		d.refresh[p] = true
	}
	d.mu.Unlock()
	kick(d.pullKick)
}

// conflictName returns "NAME (conflict YYYY-MM-DD HHMMSS).EXT" (the name
// the CLI's restore gives conflict copies too).
func conflictName(name string, n int) string { return meta.ConflictName(name, n, time.Now()) }

// createKind is the kind a create's entry names (bound into its sealed name).
func createKind(c *api.CreateRequest) meta.Kind { return meta.KindOf(c.Type == api.TypeDir) }

// resolveCreate handles a refused create: a name another client took keeps
// theirs and puts ours under a conflict name.
func (d *Drive) resolveCreate(ctx context.Context, c *api.CreateRequest, e *api.Error) bool {
	op := api.BatchOp{Op: api.OpCreate, Create: c}
	// ownName opens our own name of the create; false: it does not open
	// here, and the create is reported refused.
	ownName := func() (string, bool) {
		name, err := d.openName(c.Parent, c.ID, createKind(c), c.NameMAC, c.Name)
		if err != nil {
			d.noteRefused(op, &api.Error{Code: e.Code, Message: fmt.Sprintf("%s, and our own name for it fails authentication here (%v)", e.Message, err)}, keptLocal)
			return "", false
		}
		return string(name), true
	}
	switch e.Code {
	case api.CodeExists:
		got, err := d.c.Lookup(ctx, c.Parent, c.NameMAC)
		if err == nil && got.Node.ID == c.ID {
			d.noteResult(&got.Node)
			return true // an earlier attempt went through
		}
		if err != nil {
			d.log.Warn("looking up the name a create was refused for failed; will retry", "node", c.ID, "err", err)
			return false
		}
		name, ok := ownName()
		if !ok {
			return true
		}
		return d.recreateAs(ctx, c, c.Parent, name, &got)
	case api.CodeConflict:
		// "node id in use" (the cloud checks the name first: it is free).
		return d.resolveIDInUse(ctx, c)
	case api.CodeNotFound, api.CodeNotDir:
		// The parent is gone in the cloud: keep ours at the root.
		name, ok := ownName()
		if !ok {
			return true
		}
		return d.recreateAs(ctx, c, d.orphanParent(c.Attrs, c.Parent), name, nil)
	}
	d.noteRefused(op, e, keptLocal)
	return true
}

// resolveIDInUse handles a create c refused because its node id exists in
// the cloud while its name is free. Either an earlier try went through and
// its answer was lost, the node then having another name (a create queued
// before a restart is sent under the name its file was renamed to since,
// unsent.go), or the cloud is wrong. The node is taken as ours only if it
// authenticates as ours (ownCreated); then it is given c's name.
func (d *Drive) resolveIDInUse(ctx context.Context, c *api.CreateRequest) bool {
	op := api.BatchOp{Op: api.OpCreate, Create: c}
	own, err := d.ownCreated(ctx, c)
	if errors.Is(err, errNotOurs) {
		d.noteRefused(op, notOursError(err), keptLocal)
		return true
	}
	if err != nil {
		d.log.Warn("checking the node the cloud says exists already failed; will retry", "node", c.ID, "err", err)
		return false
	}
	d.noteResult(&own)
	e, _, err := d.ownEntry(ctx, c.Parent, own)
	if err != nil {
		d.log.Warn("listing where our node is in the cloud failed; will retry", "node", c.ID, "dir", c.Parent, "err", err)
		return false
	}
	if e != nil {
		// noreplace: if another client took the name meanwhile, theirs stays.
		err = d.c.Rename(ctx, api.RenameRequest{SrcParent: c.Parent, SrcNameMAC: e.NameMAC,
			DstParent: c.Parent, DstNameMAC: c.NameMAC, Name: c.Name, Node: c.ID, Mode: api.RenameNoReplace})
		if err == nil {
			d.log.Info("an earlier create went through under another name: renamed it to ours", "node", c.ID)
			// The rename is a change of the node the feed will bring: note
			// its sequence now, while the create is still queued, so the
			// puller does not take our node's newer local state for older.
			if n, err := d.c.GetNode(ctx, c.ID); err == nil && n.ID == c.ID {
				d.noteResult(&n)
			}
			return true
		}
		if transientErr(err) {
			d.log.Warn("renaming our node in the cloud to its name here failed; will retry", "node", c.ID, "err", err)
			return false
		}
	}
	// Ours, but not where a rename can fix it: show the cloud's view.
	d.log.Warn("the cloud holds this node under another name or directory (an earlier create went through); the local view follows the cloud's",
		"node", c.ID, "dir", c.Parent, "rename_err", err)
	d.refreshLater(op)
	return true
}

// errNotOurs: the cloud says a node id this drive chose is in use, but what
// it shows for it does not authenticate as the node this drive created.
var errNotOurs = errors.New("the cloud says this node id is in use, by a node that is not ours")

// errVanished: the cloud says a node id is in use, then that there is no
// such node. Not a refusal: a try later may go through.
var errVanished = errors.New("the cloud said this node id is in use, then that there is no such node")

// notOursError is how a create refused for errNotOurs is reported: with
// what to do about it.
func notOursError(err error) *api.Error {
	return &api.Error{Code: api.CodeConflict, Message: err.Error() +
		" (a fault or an attack of the server); copy the file to a new name to send it again"}
}

// ownCreated checks the cloud's word that node c.ID exists when c is a
// create of ours, and returns the node when it is ours: an earlier try went
// through. The server is not trusted on this: the node must be c's kind
// and its attributes must open under this account's keys, bound to c.ID
// (only this account seals them, and this drive picked the id at random for
// c); else the error is errNotOurs. Other errors: asking failed (try again).
func (d *Drive) ownCreated(ctx context.Context, c *api.CreateRequest) (api.Node, error) {
	n, err := d.c.GetNode(ctx, c.ID)
	if errors.Is(err, api.ErrNotFound) {
		// Deleted since (by another device), or the cloud contradicts
		// itself: the next try of the create tells.
		return n, fmt.Errorf("node %d: %w (%v)", c.ID, errVanished, err)
	}
	if err != nil {
		return n, fmt.Errorf("node %d: %w", c.ID, err)
	}
	if n.ID != c.ID || n.Type != c.Type {
		return n, fmt.Errorf("%w: node %d shown as node %d of type %q, want %q", errNotOurs, c.ID, n.ID, n.Type, c.Type)
	}
	if _, _, err := d.openAttrs(c.ID, n.Attrs); err != nil {
		d.authFailure("the cloud shows, for a node id it says is in use, attributes that fail authentication", "node", c.ID, "err", err)
		return n, fmt.Errorf("%w: node %d: %v", errNotOurs, c.ID, err)
	}
	return n, nil
}

// ownEntry finds the entry of our node n in directory dir of the cloud, its
// name authenticated (bound to dir, n and n's kind), and the name; nil if
// dir has none.
func (d *Drive) ownEntry(ctx context.Context, dir uint64, n api.Node) (*api.Entry, string, error) {
	es, err := d.c.List(ctx, dir)
	if err != nil {
		return nil, "", fmt.Errorf("list directory %d: %w", dir, err)
	}
	for i := range es {
		e := &es[i]
		if e.Node.ID != n.ID {
			continue
		}
		name, err := d.openName(dir, n.ID, meta.KindOf(n.Type == api.TypeDir), e.NameMAC, e.Name)
		if err != nil {
			d.authFailure("entry name from the cloud fails authentication", "parent", dir, "child", n.ID, "err", err)
			continue
		}
		e.Parent, e.Node = dir, n
		return e, string(name), nil
	}
	return nil, "", nil
}

// errOwnElsewhere: the cloud holds our node (an earlier try went through)
// but not in the directory a create put it in.
var errOwnElsewhere = errors.New("the cloud holds our node in another directory")

// createOwn creates req, our node id under the name cname, and returns the
// entry the cloud holds for it and that entry's name. When the cloud says
// the id is in use and the node authenticates as ours, an earlier try went
// through (its answer lost): the entry is the one it made, usually under
// the conflict name of that try. Errors: those of the create, errNotOurs,
// errOwnElsewhere, or a failure to check.
func (d *Drive) createOwn(ctx context.Context, req api.CreateRequest, cname string) (api.Entry, string, error) {
	got, err := d.c.Create(ctx, req)
	if err == nil {
		// The entry is the one we sent, not the answer's copy of it.
		got.Parent, got.NameMAC, got.Name = req.Parent, req.NameMAC, req.Name
		return got, cname, nil
	}
	if !errors.Is(err, api.ErrConflict) {
		return got, "", err
	}
	own, oerr := d.ownCreated(ctx, &req)
	if oerr != nil {
		return got, "", oerr
	}
	e, name, lerr := d.ownEntry(ctx, req.Parent, own)
	if lerr != nil {
		return got, "", lerr
	}
	if e == nil {
		d.noteResult(&own)
		return got, "", fmt.Errorf("node %d: %w", req.ID, errOwnElsewhere)
	}
	d.log.Info("an earlier create of a conflict copy went through: taking it as done", "node", req.ID, "name", name)
	return *e, name, nil
}

// transientErr says whether a request that failed with err may go through
// when repeated later: the cloud unreachable or busy, the account blocked
// for now (quota, read-only, session), or a failure to check what the cloud
// holds. Any other answer of the cloud is its answer to this request.
func transientErr(err error) bool {
	if errors.Is(err, errNotOurs) || errors.Is(err, errOwnElsewhere) {
		return false
	}
	var ae *api.Error
	if !errors.As(err, &ae) {
		return true // no answer: network, timeouts, the drive stopping
	}
	switch ae.Code {
	case api.CodeUnavailable, api.CodeInternal, api.CodeRateLimited, api.CodeQuota, api.CodeReadOnly, api.CodeUnauthorized:
		return true
	}
	return false
}

// copyFailed handles a conflict copy's create that failed with err (not
// "name exists"): false to leave the op queued and retry later when that
// may change; else it is reported refused for good (or, errOwnElsewhere,
// taken as done) and the queue goes on. what names the copy in the log.
func (d *Drive) copyFailed(req *api.CreateRequest, err error, what string) bool {
	op := api.BatchOp{Op: api.OpCreate, Create: req}
	switch {
	case errors.Is(err, errOwnElsewhere):
		d.log.Warn(what+": the cloud holds it in another directory (an earlier try went through); the local view follows the cloud's",
			"node", req.ID, "err", err)
		d.refreshLater(op)
		return true
	case errors.Is(err, errNotOurs):
		d.noteRefused(op, notOursError(err), keptLocal)
		return true
	}
	return d.retryOrRefuse(op, req.ID, what, err)
}

// retryOrRefuse ends a resolution of op (of node) that failed with err: a
// transient error is logged and op retried later (false); any other answer
// refuses op for good (true). what names the attempt in the log.
func (d *Drive) retryOrRefuse(op api.BatchOp, node uint64, what string, err error) bool {
	if transientErr(err) {
		d.log.Warn(what+" failed; will retry", "node", node, "err", err)
		return false
	}
	ae := &api.Error{Code: api.CodeBadRequest, Message: err.Error()}
	errors.As(err, &ae)
	d.noteRefused(op, ae, keptLocal)
	return true
}

// maxConflictNames is how many conflict names ("NAME (conflict DATE N)")
// are tried before a copy is reported refused.
const maxConflictNames = 20

// recreateAs creates our node c under parent with a conflict name, moves the
// local entry there, and (theirs != nil) shows their entry under the old name.
// Refused for good, ours still moves to the conflict name here: the name is
// theirs, and a later queued op naming our entry by it must not reach
// their node (an unlink names no node).
func (d *Drive) recreateAs(ctx context.Context, c *api.CreateRequest, parent uint64, name string, theirs *api.Entry) bool {
	for n := 1; n <= maxConflictNames; n++ {
		cname := conflictName(name, n)
		mac, sealed := d.sealName(d.writeKID(d.dirKID(parent)), parent, c.ID, createKind(c), cname)
		req := *c
		req.Parent, req.NameMAC, req.Name = parent, mac, sealed
		got, gotName, err := d.createOwn(ctx, req, cname)
		if errors.Is(err, api.ErrExists) {
			continue
		}
		if errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrNotDir) {
			// The directory is gone in the cloud too: keep ours where orphans go.
			if p := d.orphanParent(c.Attrs, parent); p != parent {
				parent, n = p, 0
				continue
			}
		}
		if err != nil {
			if !d.copyFailed(&req, err, "creating conflict copy") {
				return false
			}
			if !errors.Is(err, errOwnElsewhere) {
				d.moveAside(c, &req, name, cname, theirs)
			}
			return true
		}
		// got is the entry the cloud made: this try's, or an earlier one's.
		d.log.Warn("name taken in the cloud by another client: kept ours under a conflict name",
			"parent", c.Parent, "name", name, "conflict_name", gotName)
		d.noteResult(&got.Node)
		req.NameMAC, req.Name = got.NameMAC, got.Name
		d.moveAside(c, &req, name, gotName, theirs)
		return true
	}
	req := *c
	cname := conflictName(name, maxConflictNames+1)
	req.Parent = parent
	req.NameMAC, req.Name = d.sealName(d.writeKID(d.dirKID(parent)), parent, c.ID, createKind(c), cname)
	d.noteRefused(api.BatchOp{Op: api.OpCreate, Create: &req}, &api.Error{Code: api.CodeExists,
		Message: fmt.Sprintf("the name and %d conflict names for it are all taken in the cloud; rename the file to send it again", maxConflictNames)}, keptLocal)
	d.moveAside(c, &req, name, cname, theirs)
	return true
}

// moveAside moves the local entry of create c (named name) to the entry of
// to (named cname), and shows theirs (if known) under the old name.
func (d *Drive) moveAside(c, to *api.CreateRequest, name, cname string, theirs *api.Entry) {
	d.mu.Lock()
	m := cache.Mutation{
		DeleteEntries: []cache.Entry{{Parent: c.Parent, NameMAC: c.NameMAC}},
		PutEntries:    []cache.Entry{{Parent: to.Parent, NameMAC: to.NameMAC, Name: to.Name, Child: c.ID}},
	}
	if st := d.states[c.ID]; st != nil {
		st.lastParent, st.lastName = to.Parent, cname
		if st.typ == api.TypeDir {
			st.parent = to.Parent
			m.PutNodes = append(m.PutNodes, d.localNode(st))
		}
	}
	if theirs != nil {
		m.PutEntries = append(m.PutEntries, cache.Entry{Parent: c.Parent, NameMAC: c.NameMAC, Name: theirs.Name, Child: theirs.Node.ID})
		if _, err := d.store.GetNode(theirs.Node.ID); errors.Is(err, cache.ErrNotFound) {
			m.PutNodes = append(m.PutNodes, theirs.Node)
		}
	}
	// Later queued ops that name our entry by its old name follow it.
	d.rewrite[entryKey(c.Parent, c.NameMAC)] = nameRewrite{parent: to.Parent, mac: to.NameMAC, name: to.Name, id: c.ID}
	if err := d.store.Apply(m); err != nil {
		d.log.Error("local tree update failed", "err", err)
	}
	d.mu.Unlock()
	d.notifyEntry(c.Parent, name)
	d.notifyEntry(to.Parent, cname)
}

// rewriteOp applies conflict renames to a queued op that names an entry by a
// name the cloud gave to another client's node. Under d.mu.
func (d *Drive) rewriteOp(op api.BatchOp) api.BatchOp {
	if len(d.rewrite) == 0 {
		return op
	}
	switch op.Op {
	case api.OpUnlink:
		if rw, ok := d.rewrite[entryKey(op.Unlink.Parent, op.Unlink.NameMAC)]; ok {
			u := *op.Unlink
			u.Parent, u.NameMAC = rw.parent, rw.mac
			op.Unlink = &u
		}
	case api.OpRename:
		if rw, ok := d.rewrite[entryKey(op.Rename.SrcParent, op.Rename.SrcNameMAC)]; ok {
			r := *op.Rename
			r.SrcParent, r.SrcNameMAC = rw.parent, rw.mac
			op.Rename = &r
		}
	case api.OpCreate:
		// A new create of the same name is meant for a new node: stop rewriting.
		delete(d.rewrite, entryKey(op.Create.Parent, op.Create.NameMAC))
	}
	return op
}

// resolveUpdate handles a refused update. A stale version where only we
// changed the data is retried; a real concurrent change keeps theirs under
// the name and ours as a conflict copy.
func (d *Drive) resolveUpdate(ctx context.Context, op api.BatchOp, e *api.Error) bool {
	u := op.Update
	switch e.Code {
	case api.CodeConflict:
		remote, err := d.c.GetNode(ctx, op.ID)
		if errors.Is(err, api.ErrNotFound) {
			// Deleted in the cloud since it refused the update.
			d.log.Warn("a file changed here was deleted in the cloud; keeping ours as a conflict copy", "node", op.ID)
			return d.keepBoth(ctx, op, api.Node{})
		}
		if err != nil {
			d.log.Warn("reading the cloud's version of a node an update conflicts with failed; will retry", "node", op.ID, "err", err)
			return false
		}
		d.mu.Lock()
		st := d.states[op.ID]
		var known []string
		knownOK := false
		if st != nil && st.serverCh != nil {
			known, knownOK = st.serverCh, true
		}
		d.mu.Unlock()
		if sameChunks(remote.Chunks, u.Chunks) || knownOK && sameChunks(remote.Chunks, known) {
			req := *u
			req.Version = remote.Version
			n, err := d.c.Update(ctx, op.ID, req)
			if err != nil {
				if errors.Is(err, api.ErrConflict) {
					return false // raced again: retry later
				}
				if errors.Is(err, api.ErrNotFound) {
					return d.keepBoth(ctx, op, api.Node{}) // deleted there meanwhile
				}
				return d.retryOrRefuse(op, op.ID, "retrying update", err)
			}
			d.noteResult(&n)
			return true
		}
		return d.keepBoth(ctx, op, remote)
	case api.CodeNotFound:
		d.log.Warn("a file changed here was deleted in the cloud; keeping ours as a conflict copy", "node", op.ID)
		return d.keepBoth(ctx, op, api.Node{})
	}
	d.noteRefused(op, e, keptLocal)
	return true
}

func sameChunks(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// keepBoth saves our version of a node as a new node under a conflict name
// and adopts theirs (remote.ID == 0: theirs was deleted).
func (d *Drive) keepBoth(ctx context.Context, op api.BatchOp, remote api.Node) bool {
	a, kid, err := d.openAttrs(op.ID, op.Update.Attrs)
	if err != nil {
		d.log.Error("own attributes fail authentication", "node", op.ID, "err", err)
		return true
	}
	d.mu.Lock()
	parent, name := api.RootID, fmt.Sprintf("recovered-%d", op.ID)
	typ := api.TypeFile
	if st := d.states[op.ID]; st != nil {
		if st.lastParent != 0 {
			parent, name = st.lastParent, st.lastName
		}
		typ = st.typ
	}
	d.mu.Unlock()
	if typ == api.TypeDir {
		// Directories carry no data: adopt theirs, ours only differed in attributes.
		d.adopt(remote)
		return true
	}
	id, rev := copyID(op), meta.NextRev(0)
	c := &api.CreateRequest{Parent: parent, ID: id, Type: typ, Attrs: d.sealAttrs(kid, id, rev, a), Chunks: op.Update.Chunks}
	if c.Chunks == nil {
		c.Chunks = []string{}
	}
	d.mu.Lock()
	cpy := &nodeState{id: id, kid: kid, typ: typ, rev: rev, nlink: 1, attrs: *a, trunc: noTrunc, nextGen: 1}
	d.states[id] = cpy
	d.mu.Unlock()
	c.NameMAC, c.Name = d.sealName(d.writeKID(d.dirKID(parent)), parent, c.ID, createKind(c), name)
	// recreateAs picks a free conflict name and moves the (non-existent)
	// local entry: put the copy's node first.
	d.mu.Lock()
	err = d.store.Apply(cache.Mutation{PutNodes: []api.Node{d.localNode(cpy)}})
	if err != nil {
		delete(d.states, id)
	}
	d.mu.Unlock()
	if err != nil {
		// Without its local record the copy would exist only in the cloud:
		// keep our update queued and try again.
		d.log.Error("saving a conflict copy locally failed; will retry", "node", op.ID, "err", err)
		return false
	}
	if !d.recreateAsCopy(ctx, c, name) {
		// The next try makes the copy again, under the same id (copyID):
		// drop this one's local record meanwhile.
		d.mu.Lock()
		delete(d.states, c.ID)
		if err := d.store.Apply(cache.Mutation{DeleteNodes: []uint64{c.ID}}); err != nil {
			d.log.Error("dropping an unmade conflict copy's local record failed", "node", c.ID, "err", err)
		}
		d.mu.Unlock()
		return false
	}
	if remote.ID != 0 {
		d.adopt(remote)
	}
	d.log.Warn("file changed here and in the cloud: kept theirs under the name, ours as a conflict copy",
		"node", op.ID, "name", name, "copy", c.ID)
	return true
}

// copyID is the node id of the conflict copy keepBoth makes of refused
// update op: derived from the update's sealed record, so every try of the
// same queued op (the pusher's next round, or after a restart) creates the
// same node, and a try whose answer was lost is found by the next
// (createOwn), never followed by a second copy. The record is sealed with
// a random nonce, so two updates never share an id; the hash tells the
// cloud nothing it does not see anyway (the copy's create sends the
// update's chunk list right after the refused update). A cloud that
// claims the id for another node only makes the copy take a random one
// (renumberCopy).
func copyID(op api.BatchOp) uint64 {
	h := sha256.New()
	h.Write([]byte("kumo conflict copy id\x00"))
	h.Write(binary.BigEndian.AppendUint64(nil, op.ID))
	h.Write(op.Update.Attrs)
	id := binary.BigEndian.Uint64(h.Sum(nil)) >> 1 // 63-bit, as newID
	if id <= api.RootID {
		id += 2 // newID never returns 0 or 1 (the root)
	}
	return id
}

// recreateAsCopy creates the conflict copy c and its local entry.
func (d *Drive) recreateAsCopy(ctx context.Context, c *api.CreateRequest, name string) bool {
	renumbered, tries := 0, 0
	for n := 1; n <= maxConflictNames; n++ {
		cname := conflictName(name, n)
		req := *c
		req.NameMAC, req.Name = d.sealName(d.writeKID(d.dirKID(c.Parent)), c.Parent, c.ID, createKind(c), cname)
		got, gotName, err := d.createOwn(ctx, req, cname)
		if errors.Is(err, api.ErrExists) {
			continue
		}
		if errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrNotDir) {
			// The directory is gone in the cloud: keep the copy where orphans go.
			if p := d.orphanParent(c.Attrs, req.Parent); p != req.Parent {
				c.Parent, n = p, 0
				continue
			}
		}
		if errors.Is(err, errNotOurs) || errors.Is(err, errVanished) {
			if renumbered == 2 {
				d.keepCopyHere(&req, cname)
				d.noteRefused(api.BatchOp{Op: api.OpCreate, Create: &req}, notOursError(err), keptLocal)
				return true
			}
			// The id is another node's, or the cloud contradicts itself
			// about it (a fault or an attack of the server): the copy is
			// new here, it can take another.
			if !d.renumberCopy(c) {
				return false
			}
			renumbered, n = renumbered+1, 0
			continue
		}
		if err != nil && transientErr(err) && tries < 2 && ctx.Err() == nil {
			// Try again now rather than only at the pusher's next round:
			// if this try went through and only its answer was lost, the
			// next finds it (createOwn), as the next round does (copyID).
			tries++
			d.log.Info("creating conflict copy failed; trying again", "node", c.ID, "err", err)
			if !sleepCtx(ctx, time.Duration(tries)*time.Second) {
				return false
			}
			n--
			continue
		}
		if err != nil {
			if !d.copyFailed(&req, err, "creating conflict copy") {
				return false
			}
			if !errors.Is(err, errOwnElsewhere) {
				d.keepCopyHere(&req, cname) // refused for good
			}
			return true
		}
		d.noteResult(&got.Node)
		req.NameMAC, req.Name = got.NameMAC, got.Name
		d.keepCopyHere(&req, gotName)
		return true
	}
	req := *c
	cname := conflictName(name, maxConflictNames+1)
	req.NameMAC, req.Name = d.sealName(d.writeKID(d.dirKID(c.Parent)), c.Parent, c.ID, createKind(c), cname)
	d.keepCopyHere(&req, cname)
	d.noteRefused(api.BatchOp{Op: api.OpCreate, Create: &req}, &api.Error{Code: api.CodeExists,
		Message: fmt.Sprintf("%d conflict names for a copy of %q are all taken in the cloud", maxConflictNames, name)}, keptLocal)
	return true
}

// keepCopyHere puts the local entry of conflict copy c, under the name it
// was created with or, refused by the cloud, the one it was last tried
// under: the copy is the only place this version of the file is kept, so
// it must show here even if the cloud never holds it.
func (d *Drive) keepCopyHere(c *api.CreateRequest, name string) {
	d.mu.Lock()
	err := d.store.Apply(cache.Mutation{PutEntries: []cache.Entry{{Parent: c.Parent, NameMAC: c.NameMAC, Name: c.Name, Child: c.ID}}})
	if st := d.states[c.ID]; st != nil && err == nil {
		st.lastParent, st.lastName = c.Parent, name
	}
	d.mu.Unlock()
	if err != nil {
		// If the cloud has the copy, its entry arrives with the change feed.
		d.log.Error("saving a conflict copy's entry locally failed", "node", c.ID, "name", name, "err", err)
	}
	d.notifyEntry(c.Parent, name)
}

// renumberCopy gives the conflict copy c, not in the cloud yet, a new node
// id: its attributes sealed again, bound to it, and its local record moved.
// False when that fails (the op stays queued).
func (d *Drive) renumberCopy(c *api.CreateRequest) bool {
	a, kid, err := d.openAttrs(c.ID, c.Attrs)
	if err != nil {
		d.log.Error("a conflict copy's own attributes fail authentication", "node", c.ID, "err", err)
		return false
	}
	id := newID()
	attrs := d.sealAttrs(kid, id, meta.Rev(c.Attrs), a)
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.states[c.ID]
	if st == nil {
		return false
	}
	old := st.id
	st.id = id
	if err := d.store.Apply(cache.Mutation{DeleteNodes: []uint64{old}, PutNodes: []api.Node{d.localNode(st)}}); err != nil {
		st.id = old
		d.log.Error("moving a conflict copy's local record to a new id failed; will retry", "node", old, "err", err)
		return false
	}
	delete(d.states, old)
	d.states[id] = st
	d.log.Warn("the cloud says a conflict copy's new node id is another node's: giving the copy another", "was", old, "node", id)
	c.ID, c.Attrs = id, attrs
	return true
}

// adopt makes the local node follow the cloud's version of it.
func (d *Drive) adopt(remote api.Node) {
	if remote.ID == 0 {
		return
	}
	fresh, err := d.decodeCloud(remote)
	if err != nil {
		return
	}
	d.mu.Lock()
	st := d.states[remote.ID]
	if st != nil && d.rolledBackLocked(st.id, st.seen, fresh.rev) {
		d.mu.Unlock()
		return
	}
	if st != nil {
		st.version, st.seq, st.serverCh = remote.Version, remote.Seq, remote.Chunks
		st.rev, st.seen = max(st.rev, fresh.rev), fresh.rev
		st.nlink = fresh.nlink
		st.parent = fresh.parent
		size := st.attrs.Size
		st.attrs = fresh.attrs
		st.trunc = noTrunc
		if len(st.layers) > 0 && size > st.attrs.Size {
			st.attrs.Size = size
		}
		err = d.store.Apply(cache.Mutation{PutNodes: []api.Node{d.localNode(st)}})
	} else {
		err = d.store.Apply(cache.Mutation{PutNodes: []api.Node{remote}})
	}
	if err != nil {
		// Memory has their version; the local record follows at its next save.
		d.log.Error("saving the cloud's version of a node locally failed", "node", remote.ID, "err", err)
	}
	d.mu.Unlock()
	d.notifyContent(remote.ID)
}
