package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"kumo/cache"
	"kumo/internal/meta"
	"kumo/remote/api"
)

func (d *Drive) pollWait() time.Duration {
	if d.o.PollWait > 0 {
		return d.o.PollWait
	}
	return defaultPollWait
}

// pullLoop follows the change feed and brings other clients' changes into
// the local tree and the kernel's caches.
func (d *Drive) pullLoop() {
	defer d.wg.Done()
	var backoff time.Duration
	for d.ctx.Err() == nil {
		d.doRefreshes()
		cur, err := d.store.Cursor()
		if err != nil {
			d.log.Error("reading change cursor", "err", err)
			return
		}
		resp, err := d.c.Changes(d.ctx, cur, d.pollWait())
		if err != nil {
			if d.ctx.Err() != nil {
				return
			}
			d.noteErr(err)
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(backoff):
			case <-d.pullKick:
			}
			continue
		}
		backoff = 0
		d.noteOnline()
		// noteOnline's wake-up is for a puller in its backoff; this one
		// is not (a refresh asked for meanwhile runs at the loop's top).
		select {
		case <-d.pullKick:
		default:
		}
		if resp.Reset {
			d.log.Warn("change feed was reset: relisting the cloud")
			if err := d.resync(); err != nil {
				d.log.Error("relisting failed", "err", err)
				sleepCtx(d.ctx, 5*time.Second)
			}
			continue
		}
		if why := d.head.Broken(); why != "" {
			// The cloud's history contradicts this device's: apply nothing more from it.
			if !sleepCtx(d.ctx, 30*time.Second) {
				return
			}
			continue
		}
		if err := d.applyChanges(resp.Changes, resp.Seq); err != nil {
			d.noteErr(err)
			d.log.Warn("applying remote changes failed; will retry", "err", err)
			sleepCtx(d.ctx, 2*time.Second)
		}
	}
}

func (d *Drive) isPending(key opKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending[key] > 0
}

// applyChanges refetches what the changes name and applies it locally.
func (d *Drive) applyChanges(changes []api.Change, seq uint64) error {
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	entries := map[feedKey]api.Change{}
	var eorder []feedKey
	nodes := map[uint64]api.Change{}
	var norder []uint64
	for _, c := range changes {
		switch c.Kind {
		case api.ChangeEntry:
			k := feedKey{c.Parent, c.NameMAC}
			if _, ok := entries[k]; !ok {
				eorder = append(eorder, k)
			}
			entries[k] = c
		case api.ChangeNode:
			if _, ok := nodes[c.Node]; !ok {
				norder = append(norder, c.Node)
			}
			nodes[c.Node] = c
		case api.ChangeAccount:
			if a, err := d.c.Account(ctx); err == nil {
				d.setAccount(a)
			}
		}
	}
	paired := pairFeedEntries(entries, eorder, d.store)
	done := map[feedKey]bool{}
	for _, k := range eorder {
		if done[k] {
			continue
		}
		p := paired[k]
		if p == nil {
			if err := d.pullEntry(ctx, k.parent, k.mac, entries[k]); err != nil {
				return err
			}
			continue
		}
		done[k] = true
		if !done[p.del] || !done[p.add] {
			continue // the pair's first change: applied with its second
		}
		if p.exchange && d.exchangeInFeed(ctx, entries[p.del], entries[p.add]) ||
			!p.exchange && d.moveInFeed(ctx, entries[p.del], entries[p.add], p.repoint) {
			continue
		}
		first := p.del // the pair's first change in the feed's order, kept
		if k == p.del {
			first = p.add
		}
		for _, k := range []feedKey{first, k} {
			if err := d.pullEntry(ctx, k.parent, k.mac, entries[k]); err != nil {
				return err
			}
		}
	}
	for _, id := range norder {
		if err := d.pullNode(ctx, id, nodes[id]); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.store.Apply(cache.Mutation{Cursor: &seq})
}

// feedKey is an entry a feed batch changes: its directory and name MAC.
type feedKey struct {
	parent uint64
	mac    string
}

// feedPair is two entry changes of a feed batch applied as one local step
// (moveInFeed, exchangeInFeed) at the later one's place in the feed.
type feedPair struct {
	// The deletion and the creation; exchanged: the two creations;
	// repointed: the creation over the moved node's old entry, and its
	// new entry's.
	del, add feedKey
	exchange bool // two entries each pointed at the node the other named
	repoint  bool // the moved node's old entry pointed at another node
}

// localTree is what pairFeedEntries reads of the local tree (*cache.Store).
type localTree interface {
	GetNode(id uint64) (api.Node, error)
	Lookup(parent uint64, nameMAC string) (cache.Entry, error)
}

// pairFeedEntries finds the entry changes of a feed batch (entries, in the
// feed's order eorder) that are one move or exchange, by both of their
// keys.
func pairFeedEntries(entries map[feedKey]api.Change, eorder []feedKey, tree localTree) map[feedKey]*feedPair {
	// A node whose entry the batch deletes and for which it creates one
	// other entry was moved: renamed within its directory or into another,
	// maybe over an existing name, or its name re-sealed under a share's
	// new generation (the same name under a new MAC). Applied as two
	// pullEntry calls, the node had no entry while the second looked the
	// cloud up, and a lookup then answered ENOENT for a file that is there:
	// the pair is applied at the later one's place in the feed, in one step
	// if moveInFeed can.
	dels, adds := map[uint64][]feedKey{}, map[uint64][]feedKey{}
	for _, k := range eorder {
		c := entries[k]
		if c.Node == 0 {
			continue
		}
		if c.Deleted {
			dels[c.Node] = append(dels[c.Node], k)
		} else {
			adds[c.Node] = append(adds[c.Node], k)
		}
	}
	paired := map[feedKey]*feedPair{}
	for node, ks := range dels {
		if as := adds[node]; len(ks) == 1 && len(as) == 1 {
			p := &feedPair{del: ks[0], add: as[0]}
			paired[p.del], paired[p.add] = p, p
		}
	}
	byNode := map[uint64]feedKey{} // lone creations of nodes the batch deletes no entry of
	for node, ks := range adds {
		if len(ks) == 1 && len(dels[node]) == 0 {
			byNode[node] = ks[0]
		}
	}
	if len(byNode) < 2 {
		return paired // an exchange or a repointing pairs two lone creations
	}
	// The other node each lone creation's local entry names (none if it
	// has no local entry, or one naming its own node), read once for both
	// kinds of pair below: two store reads a creation were 28,000 for an
	// untar of 14,000 files elsewhere. A directory this drive does not have
	// holds no local entry (often one the batch creates: the untar's), so
	// its entries are not looked up.
	others := map[feedKey]uint64{}
	dirs := map[uint64]bool{} // directories this drive has, by id
	for node, k := range byNode {
		have, ok := dirs[k.parent]
		if !ok {
			_, err := tree.GetNode(k.parent)
			have = err == nil
			dirs[k.parent] = have
		}
		if !have {
			continue
		}
		if local, err := tree.Lookup(k.parent, k.mac); err == nil && local.Child != node {
			others[k] = local.Child
		}
	}
	// Two entries the batch points each at the node the other names here
	// were exchanged (a rename with RENAME_EXCHANGE). Applied as two
	// pullEntry calls, the first dropped its node's link, which then had
	// no name till the second: one step if exchangeInFeed can.
	for node, k := range byNode {
		other, ok := others[k]
		if !ok || paired[k] != nil {
			continue
		}
		k2, ok := byNode[other]
		if !ok || paired[k2] != nil {
			continue
		}
		if o2, ok := others[k2]; !ok || o2 != node {
			continue
		}
		p := &feedPair{del: k, add: k2, exchange: true}
		paired[k], paired[k2] = p, p
	}
	// A node's entry the batch points at another node while it creates one
	// other entry of the first (mv doc doc~, then a new doc, as an editor
	// saves) was moved: the feed's deletion there was folded into the later
	// creation. Applied as two pullEntry calls, the first dropped the moved
	// node's last link: one step if moveInFeed can.
	repointed := map[uint64]feedKey{} // a lone creation, by the other node its local entry names
	for k, other := range others {
		if paired[k] == nil {
			repointed[other] = k
		}
	}
	for node, k2 := range byNode {
		if k1, ok := repointed[node]; ok && k1 != k2 && paired[k1] == nil && paired[k2] == nil {
			p := &feedPair{del: k1, add: k2, repoint: true}
			paired[k1], paired[k2] = p, p
		}
	}
	return paired
}

// moveInFeed applies del, the feed's deletion of a node's entry, and add,
// its creation of another entry of that node (in the same directory or
// another, maybe over an existing name), in one local step (moveEntry)
// once the cloud shows the old entry gone and the new one naming the node.
// It reports whether it did; false leaves both to pullEntry (also an entry
// this drive does not hold, or holds already: often its own rename coming
// back), which then makes the requests again. With repoint, del is the
// feed's pointing of the node's old entry at another node (the deletion
// folded into it), taken in with the move.
func (d *Drive) moveInFeed(ctx context.Context, del, add api.Change, repoint bool) bool {
	if d.isPending(entryKey(del.Parent, del.NameMAC)) || d.isPending(entryKey(add.Parent, add.NameMAC)) ||
		d.isPending(nodeKey(add.Node)) || repoint && d.isPending(nodeKey(del.Node)) {
		return false
	}
	old, err := d.store.Lookup(del.Parent, del.NameMAC)
	if err != nil || old.Child != add.Node {
		return false
	}
	if e, err := d.store.Lookup(add.Parent, add.NameMAC); err == nil && e.Child == add.Node || err != nil && !errors.Is(err, cache.ErrNotFound) {
		return false
	}
	var next *api.Entry
	if e, err := d.c.Lookup(ctx, del.Parent, del.NameMAC); repoint && (err != nil || e.Node.ID != del.Node) || !repoint && !errors.Is(err, api.ErrNotFound) {
		return false
	} else if repoint {
		next = &e
	}
	cur, err := d.c.Lookup(ctx, add.Parent, add.NameMAC)
	if err != nil || cur.Node.ID != add.Node {
		return false
	}
	return d.moveEntry(ctx, old, add.Parent, cur, next)
}

// exchangeInFeed applies x and y, the feed's pointing of two entries each
// at the node the other names here (a rename exchanging them), in one local
// step (exchangeLocked) once the cloud shows both so. It reports whether it
// did; false leaves both to pullEntry, which then makes the requests again.
func (d *Drive) exchangeInFeed(ctx context.Context, x, y api.Change) bool {
	for _, c := range []api.Change{x, y} {
		if d.isPending(entryKey(c.Parent, c.NameMAC)) || d.isPending(nodeKey(c.Node)) {
			return false
		}
	}
	cur := make([]api.Entry, 2)
	for i, c := range []api.Change{x, y} {
		e, err := d.c.Lookup(ctx, c.Parent, c.NameMAC)
		if err != nil || e.Node.ID != c.Node {
			return false
		}
		cur[i] = e
	}
	return d.takeIn(ctx, []*api.Entry{&cur[0], &cur[1]}, func() (func(), bool) {
		notes := d.exchangeLocked(x.Parent, cur[0], y.Parent, cur[1])
		return notes, notes != nil
	})
}

// takeIn runs change, one local step under d.mu taking in es, entries
// from the cloud (nil ones left out): moveEntry's and exchangeInFeed's.
// Before it, the keys of a share or generation new to this drive that es
// are sealed under are fetched; after it, the kernel is told what changed
// (notes, nil if nothing did) and each directory among es is relisted, as
// pullEntry does for a directory's new entry. It reports change's ok.
func (d *Drive) takeIn(ctx context.Context, es []*api.Entry, change func() (notes func(), ok bool)) bool {
	for _, e := range es {
		if e != nil {
			d.ensureEntryKeys(ctx, *e)
		}
	}
	d.mu.Lock()
	notes, ok := change()
	d.mu.Unlock()
	if notes == nil {
		return ok
	}
	notifyIn(ctx, notes)
	for _, e := range es {
		if e != nil && e.Node.Type == api.TypeDir {
			go d.refreshDir(e.Node.ID)
		}
	}
	return ok
}

// ensureEntryKeys fetches the keys of a share or generation new to this
// drive that e, the cloud's entry, has its name or its node's record
// sealed under (share.go), before e is opened.
func (d *Drive) ensureEntryKeys(ctx context.Context, e api.Entry) {
	d.ensureShareKeys(ctx, e.Name)
	d.ensureShareKeys(ctx, e.Node.Attrs)
}

// exchangeLocked points x, the cloud's entry in directory dx, and y, its
// entry in dy, at their nodes in one local mutation, where the local
// entries name each other's node: a lookup meanwhile finds each node under
// one of the two names. It checks both as pullEntry does, and returns what
// to tell the kernel once d.mu is released, or nil if it changed nothing
// (queued local changes, an entry refused, a directory it would move below
// itself here). Under d.mu.
func (d *Drive) exchangeLocked(dx uint64, x api.Entry, dy uint64, y api.Entry) func() {
	type side struct {
		dir   uint64
		e     api.Entry
		other uint64 // the node the local entry names
		name  []byte
		st    *nodeState // a directory changing parent
	}
	sides := []*side{{dir: dx, e: x, other: y.Node.ID}, {dir: dy, e: y, other: x.Node.ID}}
	for _, s := range sides {
		if d.pending[entryKey(s.dir, s.e.NameMAC)] > 0 || d.pending[nodeKey(s.e.Node.ID)] > 0 {
			return nil
		}
		if l, err := d.store.Lookup(s.dir, s.e.NameMAC); err != nil || l.Child != s.other {
			return nil
		}
		name, err := d.openCloudEntryLocked(s.dir, s.e.NameMAC, s.e)
		if err != nil {
			return nil
		}
		s.name = name
	}
	var m cache.Mutation
	for _, s := range sides {
		m.PutEntries = append(m.PutEntries, cache.Entry{Parent: s.dir, NameMAC: s.e.NameMAC, Name: s.e.Name, Child: s.e.Node.ID})
		if dx == dy || s.e.Node.Type != api.TypeDir {
			continue
		}
		st, err := d.stateLocked(s.e.Node.ID)
		if err != nil || st.deleted || s.dir == st.id || st.mayBeAncestorLocked(d, s.dir) {
			return nil
		}
		s.st = st
	}
	parents := make([]uint64, len(sides))
	for i, s := range sides {
		if s.st != nil {
			parents[i], s.st.parent = s.st.parent, s.dir
			m.PutNodes = append(m.PutNodes, d.localNode(s.st))
		}
	}
	if err := d.store.Apply(m); err != nil {
		for i, s := range sides {
			if s.st != nil {
				s.st.parent = parents[i]
			}
		}
		d.log.Warn("exchanging two entries exchanged elsewhere", "parent", dx, "other parent", dy, "err", err)
		return nil
	}
	for _, s := range sides {
		if st := d.states[s.e.Node.ID]; st != nil {
			st.lastParent, st.lastName = s.dir, string(s.name)
		}
	}
	return func() {
		for _, s := range sides {
			d.notifyEntry(s.dir, string(s.name))
		}
	}
}

// pullEntry brings one entry up to date.
func (d *Drive) pullEntry(ctx context.Context, parent uint64, mac string, c api.Change) error {
	if d.isPending(entryKey(parent, mac)) {
		return nil
	}
	if _, err := d.store.GetNode(parent); err != nil {
		return nil // a directory we do not have
	}
	local, lerr := d.store.Lookup(parent, mac)
	if !c.Deleted && lerr == nil && local.Child == c.Node && !v1Name(local.Name) {
		return nil // already so (often our own change coming back)
	}
	if c.Deleted && errors.Is(lerr, cache.ErrNotFound) {
		return nil
	}
	remote, err := d.c.Lookup(ctx, parent, mac)
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("lookup: %w", err)
	}
	found := err == nil
	if found {
		d.ensureEntryKeys(ctx, remote)
	}
	d.mu.Lock()
	if d.pending[entryKey(parent, mac)] > 0 {
		d.mu.Unlock()
		return nil
	}
	local, lerr = d.store.Lookup(parent, mac)
	var m cache.Mutation
	var oldName, newName string
	var gone *nodeState
	if lerr == nil && (!found || local.Child != remote.Node.ID) {
		st, err := d.stateLocked(local.Child)
		if err == nil {
			if n, err := d.openName(parent, local.Child, st.kind(), mac, local.Name); err == nil {
				oldName = string(n)
			}
		}
		m.DeleteEntries = append(m.DeleteEntries, local)
		if err == nil && d.pending[nodeKey(st.id)] == 0 {
			d.dropLinkLocked(st, &m, nowNs())
			gone = st
		}
	}
	if found && (lerr != nil || local.Child != remote.Node.ID || !bytes.Equal(local.Name, remote.Name)) {
		n, err := d.openCloudEntryLocked(parent, mac, remote)
		if err != nil {
			if errors.Is(err, errShareRecord) || d.staleNode(parent) {
				// Maybe a folder being shared right now (its names re-sealed
				// before its nodes' attributes), or one re-sealed whose
				// directory's record here a new roster refuses
				// (sharestale.go): look again after this batch.
				if d.refresh == nil {
					d.refresh = map[uint64]bool{}
				}
				d.refresh[parent] = true
			}
			d.mu.Unlock()
			if !errors.Is(err, errStaleRecord) { // the local directory's record, not the cloud's entry
				d.authFailure("entry name from the cloud fails authentication", "parent", parent, "child", remote.Node.ID, "err", err)
			}
			return nil
		}
		newEntry := lerr != nil || local.Child != remote.Node.ID
		st := d.states[remote.Node.ID]
		if st != nil && !st.deleted && st.isDir() && newEntry && d.pending[nodeKey(st.id)] > 0 {
			// A second entry for a directory whose own ops are queued: an
			// earlier try of our create that went through under another
			// name, which the pusher renames to ours. Taken in, its
			// removal would drop the directory here.
			d.mu.Unlock()
			return nil
		}
		newName = string(n)
		m.PutEntries = append(m.PutEntries, cache.Entry{Parent: parent, NameMAC: mac, Name: remote.Name, Child: remote.Node.ID})
		if st == nil {
			if _, err := d.store.GetNode(remote.Node.ID); errors.Is(err, cache.ErrNotFound) {
				m.PutNodes = append(m.PutNodes, remote.Node)
			}
		} else if st.deleted {
			st.deleted = false
			m.PutNodes = append(m.PutNodes, d.localNode(st))
		} else if newEntry && !st.isDir() {
			// A new entry for a file this drive has is one more link
			// here (a hard link made elsewhere, or an earlier try of our
			// create that went through under another name; pullNode sets
			// the cloud's count). Without it, removing either entry would
			// drop the file and its data not uploaded yet.
			st.nlink++
			m.PutNodes = append(m.PutNodes, d.localNode(st))
		}
		if remote.Node.Type == api.TypeDir {
			defer func() { go d.refreshDir(remote.Node.ID) }()
		}
	}
	err = d.store.Apply(m)
	if gone != nil {
		d.afterDropLocked(gone)
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	notifyIn(ctx, func() {
		if oldName != "" {
			d.notifyDelete(parent, oldName, gone)
		}
		if newName != "" {
			d.notifyEntry(parent, newName)
		}
	})
	return nil
}

// v1Name reports whether a sealed name is in format v1: such an entry may be
// re-sealed in place (kumo migrate) without another change to it.
func v1Name(sealed []byte) bool { return len(sealed) > 0 && sealed[0] == meta.SealedV1 }

// localNewerLocked says st holds what no record in the cloud has yet: data
// not uploaded (layers, or inline data: d.dirty) or attributes not saved.
// Its update follows, so the puller leaves it alone. Under d.mu.
func (d *Drive) localNewerLocked(st *nodeState) bool {
	return len(st.layers) > 0 || st.unsavedAttrs || d.dirty[st.id] != nil
}

// inHandlerKey marks the context of work done inside a FUSE request's
// handler (sharestale.go's retry of a lookup, a listing, a getattr).
type inHandlerKey struct{}

// notifyIn tells the kernel what changed (f): at once, or, inside a FUSE
// handler (inHandlerKey), from another goroutine once the handler has
// answered. An entry notification for a directory waits for the kernel's
// lock on it, which the kernel holds for the lookup or listing being
// handled there: sent from the handler itself, it would wait for ever.
func notifyIn(ctx context.Context, f func()) {
	if ctx.Value(inHandlerKey{}) != nil {
		go f()
		return
	}
	f()
}

// pullNode refetches a node changed elsewhere.
func (d *Drive) pullNode(ctx context.Context, id uint64, c api.Change) error {
	if c.Deleted || d.isPending(nodeKey(id)) {
		return nil
	}
	d.mu.Lock()
	st := d.states[id]
	skip := st != nil && (st.seq >= c.Seq || d.localNewerLocked(st))
	d.mu.Unlock()
	if skip {
		return nil
	}
	local, err := d.store.GetNode(id)
	if err != nil {
		return nil // not in our tree (yet): its entry brings it
	}
	remote, err := d.c.GetNode(ctx, id)
	if errors.Is(err, api.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get node: %w", err)
	}
	d.ensureShareKeys(ctx, remote.Attrs)
	if remote.Version == local.Version && remote.Nlink == local.Nlink && remote.Parent == local.Parent {
		d.mu.Lock()
		if st := d.states[id]; st != nil {
			st.seq = max(st.seq, remote.Seq)
		}
		d.mu.Unlock()
		return nil
	}
	fresh, err := d.decodeCloud(remote)
	if err != nil {
		return nil
	}
	d.mu.Lock()
	if d.pending[nodeKey(id)] > 0 {
		d.mu.Unlock()
		return nil
	}
	st = d.states[id]
	var known uint64
	if st != nil {
		known = st.seen
	} else if prev, err := d.decode(local); err == nil {
		known = prev.seen
	}
	if d.rolledBackLocked(id, known, fresh.rev) {
		d.mu.Unlock()
		return nil
	}
	if st != nil {
		// Data not uploaded yet (layers, or inline data: d.dirty) is newer
		// than any record the cloud has; its update follows.
		if d.localNewerLocked(st) { // checked again: it may have changed meanwhile
			d.mu.Unlock()
			return nil
		}
		st.version, st.seq, st.serverCh = remote.Version, remote.Seq, remote.Chunks
		st.rev, st.seen = max(st.rev, fresh.rev), fresh.rev
		st.nlink, st.parent, st.attrs, st.trunc, st.kid = fresh.nlink, fresh.parent, fresh.attrs, noTrunc, fresh.kid
		if st.typ == api.TypeDir {
			st.nlink = max(local.Nlink, 2)
		}
		err = d.store.Apply(cache.Mutation{PutNodes: []api.Node{d.localNode(st)}})
	} else {
		if remote.Type == api.TypeDir {
			remote.Nlink = max(local.Nlink, 2)
		}
		err = d.store.Apply(cache.Mutation{PutNodes: []api.Node{remote}})
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	notifyIn(ctx, func() { d.notifyContent(id) })
	return nil
}

// doRefreshes relists directories the pusher asked for.
func (d *Drive) doRefreshes() {
	d.mu.Lock()
	dirs := d.refresh
	d.refresh = nil
	d.mu.Unlock()
	for id := range dirs {
		d.refreshDir(id)
	}
}

// refreshDir makes a directory's entries match the cloud, except entries
// with queued local changes.
func (d *Drive) refreshDir(id uint64) { d.refreshDirIn(d.ctx, id) }

// refreshDirIn is refreshDir within ctx (a FUSE handler's: notifyIn).
func (d *Drive) refreshDirIn(ctx context.Context, id uint64) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// The directory's own record first if a new roster refuses the local
	// one (sharestale.go): its new entries would be refused with it, after
	// the old ones were dropped.
	d.freshenNode(ctx, id)
	remote, err := d.c.List(ctx, id)
	if err != nil {
		if !errors.Is(err, api.ErrNotFound) {
			d.noteErr(err)
		}
		return
	}
	local, err := d.store.List(id)
	if err != nil {
		return
	}
	have := map[string]cache.Entry{}
	for _, e := range local {
		have[e.NameMAC] = e
	}
	seen := map[string]bool{}
	for _, e := range remote {
		seen[e.NameMAC] = true
	}
	// A node whose one local entry here the cloud no longer lists, and
	// which the cloud lists here under one other name MAC (one this drive
	// lacks, or names another node by), was renamed within the directory,
	// maybe over an existing name, or its name re-sealed under a share's
	// new generation (the same name under a new MAC): its entry is
	// replaced in one step (moveEntry). Removed, then added, the node had
	// no entry in between, and a lookup then answered ENOENT for a file
	// that is there.
	gone, came := map[uint64][]cache.Entry{}, map[uint64][]api.Entry{}
	for _, e := range local {
		if !seen[e.NameMAC] {
			gone[e.Child] = append(gone[e.Child], e)
		}
	}
	for _, e := range remote {
		if l, ok := have[e.NameMAC]; !ok || l.Child != e.Node.ID {
			came[e.Node.ID] = append(came[e.Node.ID], e)
		}
	}
	renamed := map[string]bool{} // name MACs, old and new, handled by moveEntry
	for child, olds := range gone {
		if news := came[child]; len(olds) == 1 && len(news) == 1 && d.moveEntry(ctx, olds[0], id, news[0], nil) {
			renamed[olds[0].NameMAC], renamed[news[0].NameMAC] = true, true
		}
	}
	// Removals first, as the feed orders a rename: a node renamed within
	// the directory in a way moveEntry leaves alone would otherwise
	// lose its last link after its new entry came in.
	for _, e := range local {
		if !seen[e.NameMAC] && !renamed[e.NameMAC] {
			_ = d.pullEntry(ctx, id, e.NameMAC, api.Change{Kind: api.ChangeEntry, Parent: id, NameMAC: e.NameMAC, Node: e.Child, Deleted: true})
		}
	}
	for _, e := range remote {
		if l, ok := have[e.NameMAC]; ok && l.Child == e.Node.ID || renamed[e.NameMAC] {
			continue
		}
		_ = d.pullEntry(ctx, id, e.NameMAC, api.Change{Kind: api.ChangeEntry, Parent: id, NameMAC: e.NameMAC, Node: e.Node.ID})
	}
}

// openCloudEntryLocked opens the name of e, the cloud's entry under dir by
// name MAC mac, and checks its placement there: what the drive checks of an
// entry from the cloud before taking it in (or trusting it). Under d.mu.
func (d *Drive) openCloudEntryLocked(dir uint64, mac string, e api.Entry) ([]byte, error) {
	name, err := d.openName(dir, e.Node.ID, meta.KindOf(e.Node.Type == api.TypeDir), mac, e.Name)
	if err != nil {
		return nil, err
	}
	pst, err := d.stateLocked(dir)
	if err != nil {
		return nil, err
	}
	ck, _ := meta.RecordKeyID(e.Node.Attrs)
	return name, d.checkPlacement(pst.kid, e.Name, e.Node.ID, ck)
}

// moveEntry replaces old, the local entry of a node, by cur, the cloud's
// entry of the same node in directory dir (old's or another) under another
// name MAC, in one local mutation under d.mu, so a lookup meanwhile finds
// the node under one name or the other: the node and its link count stay
// as they are (a moved directory's parent changes). An entry cur replaces
// loses its link in that mutation, as in a local rename. It checks cur as
// pullEntry does, and reports whether it moved old (or found it moved
// already); false leaves both to pullEntry's removal and addition: an
// entry cur the drive refuses (then logged and counted there), one with
// queued local changes, a replaced entry a local rename would refuse (a
// directory not empty here, or of another type).
//
// next, if set, is the cloud's entry now at old's place (a node new there
// for this drive, or a file it has: one more link), taken in in the same
// mutation instead of old's removal.
func (d *Drive) moveEntry(ctx context.Context, old cache.Entry, dir uint64, cur api.Entry, next *api.Entry) bool {
	return d.takeIn(ctx, []*api.Entry{&cur, next}, func() (func(), bool) {
		return d.moveEntryLocked(old, dir, cur, next)
	})
}

// moveEntryLocked is moveEntry's change of the local tree; it returns what
// to tell the kernel once d.mu is released (nil if it changed nothing).
// Under d.mu.
func (d *Drive) moveEntryLocked(old cache.Entry, dir uint64, cur api.Entry, next *api.Entry) (notes func(), moved bool) {
	child, from := cur.Node.ID, old.Parent
	if d.pending[entryKey(from, old.NameMAC)] > 0 || d.pending[entryKey(dir, cur.NameMAC)] > 0 || d.pending[nodeKey(child)] > 0 {
		return nil, false
	}
	var target *cache.Entry // the entry cur replaces
	if e, err := d.store.Lookup(dir, cur.NameMAC); err == nil {
		if e.Child == child {
			// Moved already (another refresh), if old is gone.
			_, err := d.store.Lookup(from, old.NameMAC)
			return nil, errors.Is(err, cache.ErrNotFound) && bytes.Equal(e.Name, cur.Name)
		}
		target = &e
	} else if !errors.Is(err, cache.ErrNotFound) {
		return nil, false
	}
	if e, err := d.store.Lookup(from, old.NameMAC); err != nil || e.Child != child {
		return nil, false
	}
	if _, err := d.store.GetNode(dir); err != nil {
		return nil, false // a directory this drive does not have
	}
	// The node's record is not opened (a share's re-seal may have left it
	// refused here till it is fetched), but for a directory that changes
	// parent.
	st := d.states[child]
	if st != nil && st.deleted {
		return nil, false
	}
	if _, err := d.store.GetNode(child); err != nil {
		return nil, false
	}
	kind := meta.KindOf(cur.Node.Type == api.TypeDir)
	moveDir := kind == meta.KindDir && from != dir
	if moveDir {
		var err error
		if st, err = d.stateLocked(child); err != nil || dir == child || st.mayBeAncestorLocked(d, dir) {
			return nil, false // not below itself here: the local tree is behind
		}
	}
	var gone *nodeState
	if target != nil {
		if d.pending[nodeKey(target.Child)] > 0 {
			return nil, false
		}
		var err error
		if gone, err = d.stateLocked(target.Child); err != nil || gone.kind() != kind {
			return nil, false
		}
		if gone.isDir() {
			if empty, err := d.store.DirEmpty(gone.id); err != nil || !empty {
				return nil, false
			}
		}
	}
	var nextName []byte
	var nst *nodeState // next's node, a file this drive has: one more link
	if next != nil {
		id := next.Node.ID
		if d.pending[nodeKey(id)] > 0 || id == child || target != nil && target.Child == id {
			return nil, false
		}
		if nst = d.states[id]; nst != nil && (nst.deleted || nst.isDir()) {
			return nil, false // left to pullEntry
		}
		var err error
		if nextName, err = d.openCloudEntryLocked(from, old.NameMAC, *next); err != nil {
			return nil, false
		}
	}
	newName, err := d.openCloudEntryLocked(dir, cur.NameMAC, cur)
	if err != nil {
		return nil, false
	}
	// The old name, for the kernel, unless a new roster refuses it (a
	// re-seal: the same name; opening it would note it to fetch again).
	var oldName, goneName []byte
	if !d.belowMinGen(old.Name) {
		oldName, _ = d.openName(from, child, kind, old.NameMAC, old.Name)
	}
	m := cache.Mutation{PutEntries: []cache.Entry{{Parent: dir, NameMAC: cur.NameMAC, Name: cur.Name, Child: child}}}
	if next == nil {
		m.DeleteEntries = []cache.Entry{old}
	} else {
		m.PutEntries = append(m.PutEntries, cache.Entry{Parent: from, NameMAC: old.NameMAC, Name: next.Name, Child: next.Node.ID})
		if nst != nil {
			nst.nlink++ // as pullEntry counts a new entry of a file this drive has
			m.PutNodes = append(m.PutNodes, d.localNode(nst))
		} else if _, err := d.store.GetNode(next.Node.ID); errors.Is(err, cache.ErrNotFound) {
			m.PutNodes = append(m.PutNodes, next.Node)
		}
	}
	var parent uint64
	if moveDir {
		parent, st.parent = st.parent, dir
		m.PutNodes = append(m.PutNodes, d.localNode(st))
	}
	// What dropLinkLocked changes of gone, put back if m fails.
	var nlink uint32
	var deleted bool
	var ctime int64
	if gone != nil {
		goneName, _ = d.openName(dir, gone.id, gone.kind(), target.NameMAC, target.Name)
		nlink, deleted, ctime = gone.nlink, gone.deleted, gone.attrs.Ctime
		d.dropLinkLocked(gone, &m, nowNs())
	}
	if err := d.store.Apply(m); err != nil {
		if moveDir {
			st.parent = parent
		}
		if nst != nil {
			nst.nlink--
		}
		if gone != nil {
			gone.nlink, gone.deleted, gone.attrs.Ctime = nlink, deleted, ctime
		}
		d.log.Warn("moving an entry moved elsewhere", "from", from, "to", dir, "child", child, "err", err)
		return nil, false
	}
	if st != nil {
		st.lastParent, st.lastName = dir, string(newName)
	}
	if gone != nil {
		d.afterDropLocked(gone)
	}
	return func() {
		if len(nextName) > 0 {
			d.notifyEntry(from, string(nextName))
		} else if len(oldName) > 0 && (from != dir || !bytes.Equal(oldName, newName)) {
			d.notifyDelete(from, string(oldName), nil)
		}
		if len(goneName) > 0 {
			d.notifyDelete(dir, string(goneName), gone)
		}
		d.notifyEntry(dir, string(newName))
	}, true
}

// relist copies the whole tree from the cloud into an empty local tree. The
// root node goes in last: its presence marks a complete tree.
func (d *Drive) relist(ctx context.Context) error {
	seq, err := d.feedStart(ctx) // the account's (sharemember.go: or a joined share's)
	if err != nil {
		return err
	}
	rootID := d.rootID()
	root, err := d.c.GetNode(ctx, rootID)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	queue := []uint64{rootID}
	nlink := map[uint64]uint32{}
	var pendingNodes []api.Node
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		es, err := d.c.List(ctx, dir)
		if err != nil {
			return fmt.Errorf("list %d: %w", dir, err)
		}
		var m cache.Mutation
		subdirs := uint32(0)
		for _, e := range es {
			m.PutEntries = append(m.PutEntries, cache.Entry{Parent: dir, NameMAC: e.NameMAC, Name: e.Name, Child: e.Node.ID})
			if e.Node.Type == api.TypeDir {
				subdirs++
				queue = append(queue, e.Node.ID)
				pendingNodes = append(pendingNodes, e.Node)
			} else {
				m.PutNodes = append(m.PutNodes, e.Node)
			}
		}
		nlink[dir] = 2 + subdirs
		for len(m.PutEntries) > 0 || len(m.PutNodes) > 0 {
			part := cache.Mutation{}
			n := min(len(m.PutEntries), 2000)
			part.PutEntries, m.PutEntries = m.PutEntries[:n], m.PutEntries[n:]
			k := min(len(m.PutNodes), 2000)
			part.PutNodes, m.PutNodes = m.PutNodes[:k], m.PutNodes[k:]
			if err := d.store.Apply(part); err != nil {
				return fmt.Errorf("save listing: %w", err)
			}
		}
	}
	for i := range pendingNodes {
		pendingNodes[i].Nlink = nlink[pendingNodes[i].ID]
	}
	for start := 0; start < len(pendingNodes); start += 2000 {
		part := pendingNodes[start:min(len(pendingNodes), start+2000)]
		if err := d.store.Apply(cache.Mutation{PutNodes: part}); err != nil {
			return fmt.Errorf("save listing: %w", err)
		}
	}
	root.Nlink = nlink[rootID]
	if err := d.store.Apply(cache.Mutation{PutNodes: []api.Node{root}, Cursor: &seq}); err != nil {
		return fmt.Errorf("save listing: %w", err)
	}
	return d.store.Sync()
}

// resync handles a change-feed reset: once queued local changes are pushed,
// the local tree is dropped and relisted.
func (d *Drive) resync() error {
	// A feed that restarts below our cursor is also what a server restored
	// from an old backup shows: relist only if the account head says the
	// cloud still holds the history this device saw.
	if !d.isMember() { // a joined share's drive has no head of its own: the owner's account has
		d.head.mu.Lock()
		err := d.checkHeadLocked(d.ctx)
		d.head.mu.Unlock()
		if err != nil {
			return fmt.Errorf("not relisting: %w", err)
		}
	}
	for {
		n, err := d.store.PendingCount()
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		kick(d.pushKick)
		if !sleepCtx(d.ctx, time.Second) {
			return d.ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.store.Reset(); err != nil {
		return err
	}
	if err := d.relist(d.ctx); err != nil {
		return err
	}
	// Forget decoded states of nodes nobody holds; the kernel relooks up names
	// after its entry timeout.
	for id, st := range d.states {
		if st.opens == 0 && len(st.layers) == 0 {
			delete(d.states, id)
		}
	}
	return nil
}
