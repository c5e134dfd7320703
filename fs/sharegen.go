package fs

// Records queued under a share generation that is no longer current. A
// drive of the owner or of a writer member that has not learnt of a
// rotation (`kumo share rm` ran elsewhere) seals what it writes in the
// folder under the generation it knows; the cloud refuses such a record (409 stale_generation, docs/API.md),
// since the removed member kept that generation's keys and every client
// refuses it once the roster's lowest accepted generation is raised. The
// write must not be lost: the pusher loads the shares again (resolveStaleGen)
// and, before the next push, seals the queued records of an older generation
// again under the current one (resealStale): a name is opened and sealed
// anew (a new name MAC: the local entry moves to it and later queued ops that
// name the old one follow, as for conflict copies), and attributes naming
// chunks are sealed anew after their chunks are read (whole, checked against
// their id), encrypted under the current generation's keys and uploaded.
// The journal is not rewritten: the replacements are kept in memory
// (freshGenOp applies them to each op sent), and after a restart a refused
// op is re-sealed again the same way. Only records this account signed are
// re-sealed: the drive vouches for its own writes, not for others'.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	"kumo/cache"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
)

var (
	// errCannotReseal marks a failure that trying again cannot mend: the op
	// is refused for good (resolveStaleGen) and the queue goes on.
	errCannotReseal = errors.New("cannot be sealed again under the shared folder's current key generation")
	errNotOwnRecord = errors.New("the record is signed by another account: only this account's own records are sealed again")
	errNoChild      = errors.New("the name's node is not known")
	errNoKeys       = errors.New("no keys of the share's current generation")
)

// genFix is a queued record sealed again under its share's current generation.
type genFix struct {
	rec    []byte
	mac    string   // a name's new MAC
	prev   []string // a name's MACs of earlier fixes of the same record (an earlier generation's re-seal)
	chunks []string // attributes: the chunk list the new record names
	// What the local tree changes (applied under d.mu): a name's entry
	// moves from (parent, from) to the new MAC, kept pending (the puller
	// leaves it alone) while the fix lives; a node's key id and chunks.
	parent, child uint64
	from          string
	node          uint64
	old, cur      meta.KeyID // cur: the generation the fix is sealed under
	base, refs    []meta.ChunkRef
}

// staleGens holds the re-sealed forms of queued records, by the SHA-256 of
// the record as queued (the journal's, never an earlier fix's: a second
// rotation seals the queued record again from the original), and the
// journal's head the pusher works on.
type staleGens struct {
	mu    sync.Mutex
	fixes map[[32]byte]genFix
	head  []cache.JournalOp
	// lists: directories movedByReseal listed in this push round (the
	// batch ran before its answers are handled: one listing serves them).
	lists  map[uint64][]api.Entry
	loaded bool // shareRotated loaded the shares in this push round
}

// opRecord is one record an op writes, with what opens it.
type opRecord struct {
	b      []byte
	attrs  bool // node attributes of node id; else a name under parent id
	id     uint64
	child  uint64 // names: the node the entry names (0: unknown)
	kind   meta.Kind
	known  bool   // names: kind is known (else looked up by child)
	mac    string // names: the entry's MAC
	inSitu bool   // a name the op writes at an existing MAC (exchange, re-seal in place): cannot move
}

// opRecords lists the records op writes.
func opRecords(op api.BatchOp) []opRecord {
	switch {
	case op.Op == api.OpCreate && op.Create != nil:
		c := op.Create
		return []opRecord{{b: c.Attrs, attrs: true, id: c.ID},
			{b: c.Name, id: c.Parent, child: c.ID, kind: createKind(c), known: true, mac: c.NameMAC}}
	case op.Op == api.OpUpdate && op.Update != nil:
		return []opRecord{{b: op.Update.Attrs, attrs: true, id: op.ID}}
	case op.Op == api.OpLink && op.Link != nil:
		l := op.Link
		return []opRecord{{b: l.Name, id: l.Parent, child: l.ID, kind: meta.KindOf(false), known: true, mac: l.NameMAC}}
	case op.Op == api.OpRename && op.Rename != nil:
		r := op.Rename
		inSitu := r.Mode == api.RenameExchange || r.SrcParent == r.DstParent && r.SrcNameMAC == r.DstNameMAC
		out := []opRecord{{b: r.Name, id: r.DstParent, child: r.Node, mac: r.DstNameMAC, inSitu: inSitu}}
		if len(r.SrcName) > 0 {
			out = append(out, opRecord{b: r.SrcName, id: r.SrcParent, child: r.DstNode, mac: r.SrcNameMAC, inSitu: true})
		}
		return out
	}
	return nil
}

// staleKID returns the key id of record b and the current one of its share
// if b is sealed under an older generation of a share this drive holds the
// current generation of.
func (s *shareSet) staleKID(b []byte) (old, cur meta.KeyID, ok bool) {
	kid, ok := meta.RecordKeyID(b)
	if !ok || kid.Share == 0 {
		return kid, kid, false
	}
	sh := s.byID[kid.Share]
	if sh == nil || kid.Gen >= sh.Gen() {
		return kid, kid, false
	}
	if _, held := sh.Secrets[sh.Gen()]; !held {
		return kid, kid, false
	}
	return kid, meta.KeyID{Share: kid.Share, Gen: sh.Gen()}, true
}

// resolveStaleGen handles an op the cloud refused as sealed under an older
// generation of a share: the shares are loaded again and the op stays
// queued, to be sealed again before the next push (resealStale). An op this
// drive cannot seal again (an exchange, whose names stay at their MACs, or
// one that is still of the current generation as the cloud lists it) is
// refused for good, and so is one whose re-seal fails for a reason trying
// again cannot mend (another account's record, its node gone, its chunks
// gone from the cloud: not transientErr), so that later ops go on.
func (d *Drive) resolveStaleGen(ctx context.Context, op api.BatchOp, e *api.Error) bool {
	d.log.Info("cloud refused a record sealed under an older key generation of a shared folder: loading the shares again to seal it under the current one",
		"op", op.Op, "err", e)
	if err := d.loadShares(ctx, 0); err != nil {
		d.log.Warn("loading shared folders to seal a refused record again failed; will retry", "err", err)
		return false
	}
	s := d.shares()
	fixable, stale := true, false
	var stales [][32]byte
	for _, r := range opRecords(op) {
		if _, _, ok := s.staleKID(r.b); ok {
			stale = true
			fixable = fixable && !r.inSitu
			stales = append(stales, sha256.Sum256(r.b))
		}
	}
	if !stale && d.isMember() {
		// A member drive's shares come through the account's drive, loaded
		// at most once a second: the rotation may not be in them yet.
		return false
	}
	if stale && fixable {
		// Sealed again now (not at the next push): the roster just loaded
		// may refuse the local records of this write meanwhile. From the
		// queued ops, not op as sent: that may be an earlier fix's form.
		g := &d.sh.gens
		g.mu.Lock()
		head := g.head
		g.mu.Unlock()
		if len(head) == 0 {
			head = []cache.JournalOp{{Op: op}}
		}
		_, errs := d.resealOps(head)
		for _, h := range stales {
			err := errs[h]
			if err == nil {
				continue
			}
			if !errors.Is(err, errCannotReseal) && transientErr(err) {
				return false // the cloud unreachable or busy: tried again
			}
			d.noteRefused(op, &api.Error{Code: e.Code, Message: fmt.Sprintf("%s, and %v", e.Message, err)}, keptUndone)
			d.refreshLater(op)
			return true
		}
		return false
	}
	d.noteRefused(op, e, keptUndone)
	d.refreshLater(op)
	return true
}

// resealStale seals again, under their share's current generation, the
// records of ops (the journal's head) sealed under an older one, and keeps
// them for freshGenOp; the local tree follows (the node's key id and chunks,
// the entry's MAC), and forgets the re-sealed forms of records no longer
// queued in ops (sent; pushOnce also prunes at each ack). Not under d.mu: chunks are read and uploaded. A
// record that cannot be sealed again now is sent as it is (the cloud refuses
// it again, and it is tried again).
func (d *Drive) resealStale(ops []cache.JournalOp) {
	g := &d.sh.gens
	g.mu.Lock()
	g.head, g.lists, g.loaded = ops, nil, false
	idle := len(d.shares().byID) == 0 && len(g.fixes) == 0
	g.mu.Unlock()
	if idle {
		return
	}
	d.resealOps(ops)
	d.mu.Lock()
	d.pruneGenFixesLocked(ops)
	d.mu.Unlock()
}

// pruneGenFixesLocked forgets the re-sealed forms of records no longer
// queued in rest (the journal's ops still to send: sent, or refused for
// good), releasing the pending mark of a name's new MAC so the puller
// follows the cloud's changes to the entry again. Called when ops are
// acked as well as before a push: after the last one no push runs. Under
// d.mu.
func (d *Drive) pruneGenFixesLocked(rest []cache.JournalOp) {
	g := &d.sh.gens
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.fixes) == 0 {
		return
	}
	queued := map[[32]byte]bool{}
	for _, jo := range rest {
		for _, r := range opRecords(jo.Op) {
			if len(r.b) > 0 {
				queued[sha256.Sum256(r.b)] = true
			}
		}
	}
	for h, f := range g.fixes {
		if !queued[h] {
			delete(g.fixes, h)
			if f.mac != "" {
				d.donePending(api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: f.parent, NameMAC: f.mac}})
			}
		}
	}
}

// resealOps seals again the records of ops of an older generation that
// have no re-sealed form under the current one yet (none, or one of a
// generation rotated since: then sealed again from the queued record, and
// the local tree moves on from where the earlier fix put it), and returns
// the hashes of all of ops' records of an older generation, and the
// failures, by the hash of the record as queued and of its earlier fix.
func (d *Drive) resealOps(ops []cache.JournalOp) (keep map[[32]byte]bool, errs map[[32]byte]error) {
	s := d.shares()
	g := &d.sh.gens
	keep, errs = map[[32]byte]bool{}, map[[32]byte]error{}
	// Attributes the push leaves out (planBatch): an update followed by
	// another of the same node, a create's followed by an update of it.
	// Sealing them again would read and re-encrypt a file's chunks for
	// nothing (a file saved N times, N times).
	lastUpdate := map[uint64]int{}
	for i, jo := range ops {
		if jo.Op.Op == api.OpUpdate {
			lastUpdate[jo.Op.ID] = i
		}
	}
	for i, jo := range ops {
		for _, r := range opRecords(jo.Op) {
			old, cur, ok := s.staleKID(r.b)
			if !ok || r.inSitu {
				continue
			}
			if last, upd := lastUpdate[r.id]; r.attrs && upd && last > i {
				continue
			}
			h := sha256.Sum256(r.b)
			keep[h] = true
			g.mu.Lock()
			f, had := g.fixes[h]
			g.mu.Unlock()
			if had && f.cur == cur {
				continue
			}
			fix, err := d.resealRecord(s, r, old, cur)
			if err != nil {
				errs[h] = err
				if had {
					errs[sha256.Sum256(f.rec)] = err
				}
				d.log.Warn("sealing a queued record again under the shared folder's current key generation failed; will retry",
					"op", jo.Op.Op, "node", r.id, "generation", cur.Gen, "err", err)
				continue
			}
			d.mu.Lock()
			g.mu.Lock()
			if f, had := g.fixes[h]; !had || f.cur != cur {
				if g.fixes == nil {
					g.fixes = map[[32]byte]genFix{}
				}
				var prev *genFix
				if had {
					prev = &f
					if f.mac != "" {
						fix.prev = append(slices.Clone(f.prev), f.mac)
					}
				}
				g.fixes[h] = fix
				d.applyGenFixLocked(fix, prev)
			}
			g.mu.Unlock()
			d.mu.Unlock()
		}
	}
	return keep, errs
}

// applyGenFixLocked makes the local tree follow a re-sealed record: the
// node's key id and chunks if it still names what the record named, the
// entry's MAC (kept pending until the fix goes, so the puller does not drop
// the entry the cloud does not have yet). prev is the fix f replaces (of
// a generation rotated since), whose moves f continues. Under d.mu.
func (d *Drive) applyGenFixLocked(f genFix, prev *genFix) {
	var m cache.Mutation
	if f.mac != "" {
		from := f.from
		if prev != nil && prev.mac != "" {
			from = prev.mac
			d.donePending(api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: prev.parent, NameMAC: prev.mac}})
		}
		d.pending[entryKey(f.parent, f.mac)]++
		if e, err := d.store.Lookup(f.parent, from); err == nil && e.Child == f.child {
			m.DeleteEntries = []cache.Entry{{Parent: f.parent, NameMAC: from}}
			m.PutEntries = []cache.Entry{{Parent: f.parent, NameMAC: f.mac, Name: f.rec, Child: f.child}}
		}
	} else if st := d.states[f.node]; st != nil && !st.deleted &&
		(st.kid == f.old && slices.Equal(st.attrs.Chunks, f.base) ||
			prev != nil && st.kid == prev.cur && slices.Equal(st.attrs.Chunks, prev.refs)) {
		st.attrs.Chunks, st.kid = f.refs, f.cur
		m.PutNodes = []api.Node{d.localNode(st)}
	}
	if len(m.DeleteEntries)+len(m.PutNodes) > 0 {
		if err := d.store.Apply(m); err != nil {
			d.log.Error("local tree update failed", "err", err)
		}
	}
}

// resealRecord seals record r (of key id old) again under cur.
func (d *Drive) resealRecord(s *shareSet, r opRecord, old, cur meta.KeyID) (genFix, error) {
	sealed, signer, _, err := keys.SplitRecord(r.b)
	if err != nil {
		return genFix{}, fmt.Errorf("%w: %w", errCannotReseal, err)
	}
	if d.o.Identity == nil || signer != keys.SignerOf(d.o.Identity.Public.Sign) {
		return genFix{}, fmt.Errorf("%w: %w", errCannotReseal, errNotOwnRecord)
	}
	if r.attrs {
		return d.resealAttrs(s, r.id, sealed, old, cur)
	}
	kinds := []meta.Kind{r.kind}
	if !r.known {
		if r.child == 0 {
			return genFix{}, fmt.Errorf("%w: %w", errCannotReseal, errNoChild)
		}
		// The name is sealed bound to its node's kind, so opening it tells
		// the kind: both are tried, the one in memory first. Not the
		// node's attributes from the local tree: once the roster's lowest
		// generation rose, those of a node the kernel forgot and the sweep
		// has not fetched again are refused, and the write would be lost.
		kinds = []meta.Kind{meta.KindFile, meta.KindDir}
		d.mu.Lock()
		if st := d.states[r.child]; st != nil && st.kind() == meta.KindDir {
			kinds[0], kinds[1] = kinds[1], kinds[0]
		}
		d.mu.Unlock()
	}
	var name []byte
	for _, k := range kinds {
		if name, err = s.sealer.OpenName(r.id, r.child, k, r.mac, sealed); err == nil {
			r.kind = k
			break
		}
	}
	if err != nil {
		return genFix{}, fmt.Errorf("%w: %w", errCannotReseal, err)
	}
	mac, rec := d.sealName(cur, r.id, r.child, r.kind, string(name))
	if rec == nil {
		return genFix{}, fmt.Errorf("%w: %w", errCannotReseal, errNoKeys)
	}
	return genFix{rec: rec, mac: mac, parent: r.id, child: r.child, from: r.mac, old: old, cur: cur}, nil
}

// resealAttrs seals the attributes of node id (sealed, of key id old)
// again under cur, with their chunks encrypted under cur's keys.
func (d *Drive) resealAttrs(s *shareSet, id uint64, sealed []byte, old, cur meta.KeyID) (genFix, error) {
	a, err := s.sealer.OpenAttrs(id, sealed)
	if err != nil {
		return genFix{}, fmt.Errorf("%w: %w", errCannotReseal, err)
	}
	base := a.Chunks
	refs := base
	if len(base) > 0 {
		for _, r := range base {
			d.noteChunkKeys(old, r.ID) // read with the old generation's keys
		}
		// Read whole and checked against their id (checkShared), encrypted
		// under cur's keys, uploaded unless the cloud has them.
		if refs, err = d.buildAndUpload(id, cur, base, noTrunc, baseSize(base), nil); err != nil {
			return genFix{}, err
		}
	}
	a.Chunks = refs
	rec := d.sealAttrs(cur, id, meta.Rev(sealed), a)
	if rec == nil {
		return genFix{}, fmt.Errorf("%w: %w", errCannotReseal, errNoKeys)
	}
	ch := chunkHex(refs)
	if ch == nil {
		ch = []string{}
	}
	return genFix{rec: rec, chunks: ch, node: id, old: old, cur: cur, base: base, refs: refs}, nil
}

// freshGenOp returns op with its records replaced by their re-sealed forms
// (resealStale), and whether any was; a name's new MAC replaces the old one,
// and later queued ops naming the entry by the old MAC follow it
// (d.rewrite). Under d.mu.
func (d *Drive) freshGenOp(op api.BatchOp) (api.BatchOp, bool) {
	g := &d.sh.gens
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.fixes) == 0 {
		return op, false
	}
	fix := func(b []byte) (genFix, bool) {
		if len(b) == 0 {
			return genFix{}, false
		}
		f, ok := g.fixes[sha256.Sum256(b)]
		return f, ok
	}
	moved := func(parent uint64, from string, f genFix, child uint64) {
		rw := nameRewrite{parent: parent, mac: f.mac, name: f.rec, id: child}
		d.rewrite[entryKey(parent, from)] = rw
		for _, mac := range f.prev { // ops queued after an earlier fix moved the entry
			d.rewrite[entryKey(parent, mac)] = rw
		}
	}
	changed := false
	switch {
	case op.Op == api.OpCreate && op.Create != nil:
		c := *op.Create
		if f, ok := fix(c.Attrs); ok {
			c.Attrs, c.Chunks, changed = f.rec, f.chunks, true
		}
		if f, ok := fix(c.Name); ok {
			moved(c.Parent, c.NameMAC, f, c.ID)
			c.Name, c.NameMAC, changed = f.rec, f.mac, true
		}
		op.Create = &c
	case op.Op == api.OpUpdate && op.Update != nil:
		if f, ok := fix(op.Update.Attrs); ok {
			u := *op.Update
			u.Attrs, u.Chunks, changed = f.rec, f.chunks, true
			op.Update = &u
		}
	case op.Op == api.OpLink && op.Link != nil:
		if f, ok := fix(op.Link.Name); ok {
			l := *op.Link
			moved(l.Parent, l.NameMAC, f, l.ID)
			l.Name, l.NameMAC, changed = f.rec, f.mac, true
			op.Link = &l
		}
	case op.Op == api.OpRename && op.Rename != nil:
		if f, ok := fix(op.Rename.Name); ok {
			r := *op.Rename
			moved(r.DstParent, r.DstNameMAC, f, r.Node)
			r.Name, r.DstNameMAC, changed = f.rec, f.mac, true
			op.Rename = &r
		}
	}
	return op, changed
}

// movedByReseal handles an unlink or rename the cloud refused as not found
// under a directory of a shared folder: the owner's re-seal after a rotation
// moved every entry of the folder to the new generation's name MAC, and a
// device that has not seen it yet names the entry by the old one. If the
// cloud's directory holds the same name and the same node (and, for an
// unlink, of the type it names) under the MAC of another generation, the op and later ones name it so
// (d.rewrite) and it stays queued: true. False: it is gone indeed, or the
// directory is not in a share. A failed listing keeps the op queued.
func (d *Drive) movedByReseal(ctx context.Context, op api.BatchOp) bool {
	var parent, node uint64
	var mac string
	var isDir, kindKnown bool
	switch {
	case op.Op == api.OpUnlink && op.Unlink != nil:
		parent, mac, node = op.Unlink.Parent, op.Unlink.NameMAC, op.Unlink.Node
		isDir, kindKnown = op.Unlink.Dir, true
	case op.Op == api.OpRename && op.Rename != nil:
		parent, mac, node = op.Rename.SrcParent, op.Rename.SrcNameMAC, op.Rename.Node
	default:
		return false
	}
	if node == 0 {
		// The op does not say which node it meant (queued by an older
		// drive): the same name under another MAC may be another node,
		// which must not be removed or moved.
		return false
	}
	dir := d.dirKID(parent)
	if dir.Share == 0 {
		return false
	}
	if !d.shareRotated(ctx, dir.Share) {
		return false // never re-sealed: gone indeed
	}
	g := &d.sh.gens
	g.mu.Lock()
	es, listed := g.lists[parent]
	g.mu.Unlock()
	if !listed {
		var err error
		es, err = d.c.List(ctx, parent)
		if errors.Is(err, api.ErrNotFound) {
			return false
		}
		if err != nil {
			d.log.Warn("listing a shared folder's directory to find an entry renamed by a re-seal failed; will retry", "dir", parent, "err", err)
			return true
		}
		g.mu.Lock()
		if g.lists == nil {
			g.lists = map[uint64][]api.Entry{}
		}
		g.lists[parent] = es
		g.mu.Unlock()
	}
	for _, e := range es {
		if e.NameMAC == mac {
			return false // there after all: the refusal is about something else
		}
	}
	for _, e := range es {
		if e.Node.ID != node || kindKnown && (e.Node.Type == api.TypeDir) != isDir {
			continue // another node took the name: it is not ours to change
		}
		d.ensureShareKeys(ctx, e.Name) // the re-seal's generation may be new here
		name, err := d.openName(parent, e.Node.ID, meta.KindOf(e.Node.Type == api.TypeDir), e.NameMAC, e.Name)
		if err != nil || !slices.Contains(d.nameMACs(dir, parent, string(name)), mac) {
			continue
		}
		d.mu.Lock()
		d.rewrite[entryKey(parent, mac)] = nameRewrite{parent: parent, mac: e.NameMAC, name: e.Name, id: e.Node.ID}
		d.mu.Unlock()
		d.log.Info("an entry this drive names by an older generation's MAC was re-sealed in the cloud: sending the change again under its current MAC",
			"op", op.Op, "dir", parent)
		return true
	}
	return false
}

// shareRotated says whether share has rotated past its first generation
// (so a re-seal may have moved its entries), loading the shares again (once
// per push round) if this drive knows of none: a device that has not seen
// the rotation is the one that needs the answer. A failed load says yes
// (the listing decides).
func (d *Drive) shareRotated(ctx context.Context, share uint64) bool {
	if sh := d.shares().byID[share]; sh != nil && sh.Gen() > 1 {
		return true
	}
	if d.isMember() {
		return true // its shares load through the account's drive, at most once a second: not fresh enough to say no
	}
	g := &d.sh.gens
	g.mu.Lock()
	load := !g.loaded
	g.loaded = true
	g.mu.Unlock()
	if load {
		if err := d.loadShares(ctx, 0); err != nil {
			return true
		}
	}
	sh := d.shares().byID[share]
	return sh == nil || sh.Gen() > 1
}

// dropRewritesLocked forgets the name rewrites (re-seals, movedByReseal,
// conflict copies) once the journal is empty: they serve queued ops that
// name an entry by a MAC it no longer has, and an op queued from now on
// names the entry as the local tree has it (moved already). Without it the
// map grew with every re-sealed name for the life of the drive. Under
// d.mu (the journal grows under it).
func (d *Drive) dropRewritesLocked() {
	if len(d.rewrite) == 0 {
		return
	}
	if n, err := d.store.PendingCount(); err == nil && n == 0 {
		clear(d.rewrite)
	}
}
