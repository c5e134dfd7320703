package pathops

// History: the tree at a moment, restore, trash, versions and purge, over
// the server's history (docs/API.md "History"). Times are Unix ns of the
// server's clock; the tree at T is the state after every change at or
// before T. Every name and record of a snapshot is authenticated exactly as
// the live ones are (openEntry, open): the server keeps old sealed records,
// it cannot make new ones.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"kumo/internal/meta"
	"kumo/remote/api"
)

// historyErr makes a refused moment say how far back the account's history
// goes (or that it keeps none).
func (f *FS) historyErr(ctx context.Context, at int64, err error) error {
	if !errors.Is(err, api.ErrHistoryGone) {
		return err
	}
	const ms = "2006-01-02T15:04:05.000Z07:00"
	when := time.Unix(0, at).UTC().Format(ms)
	if f.scope != nil { // the owner's account keeps the folder's history
		return fmt.Errorf("%s is older than the history the owner of shared folder %s keeps: %w", when, f.scope.Name(), err)
	}
	a, aerr := f.c.Account(ctx)
	switch {
	case aerr != nil:
		return fmt.Errorf("%s is older than the history this account keeps: %w", when, err)
	case a.HistoryRetention == 0:
		return fmt.Errorf("this account keeps no history (turn it on with kumo history retention 30d): %w", err)
	}
	return fmt.Errorf("%s is older than the history this account keeps: it goes back to %s (kept %s): %w",
		when, a.HistoryFrom.UTC().Format(ms), FormatSpan(a.HistoryRetention.D()), err)
}

// FormatSpan writes a retention window as days when it is whole days ("30d"),
// else as a Go duration ("12h0m0s").
func FormatSpan(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// RootAt returns the authenticated root directory as it was at at.
func (f *FS) RootAt(ctx context.Context, at int64) (*Node, error) {
	n, err := f.c.NodeAt(ctx, f.rootID(), at)
	if err != nil {
		return nil, f.historyErr(ctx, at, fmt.Errorf("root: %w", err))
	}
	if n.ID != f.rootID() {
		return nil, fmt.Errorf("root at a moment: the server answered node %d for %d: %w", n.ID, f.rootID(), ErrMismatch)
	}
	if err := f.checkRoot(n); err != nil { // in a shared folder: the share's root
		return nil, err
	}
	return f.past().open("/", "", 0, "", n)
}

// ListNodeAt returns the entries of directory dir (by node id) as they were
// at at, sorted by name.
func (f *FS) ListNodeAt(ctx context.Context, dir *Node, at int64) ([]*Node, error) {
	if !dir.IsDir() {
		return nil, fmt.Errorf("%s: %w", dir.Path, api.ErrNotDir)
	}
	es, err := f.c.ListAt(ctx, dir.ID(), at)
	if err != nil {
		return nil, f.historyErr(ctx, at, fmt.Errorf("list %s: %w", dir.Path, err))
	}
	return f.past().openEntries(dir, es)
}

// ResolveAt returns the node at remote path p as it was at at.
func (f *FS) ResolveAt(ctx context.Context, p string, at int64) (*Node, error) {
	names, err := Split(p)
	if err != nil {
		return nil, err
	}
	n, err := f.RootAt(ctx, at)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if !n.IsDir() {
			return nil, fmt.Errorf("%s: %w", n.Path, api.ErrNotDir)
		}
		es, err := f.c.ListAt(ctx, n.ID(), at)
		if err != nil {
			return nil, f.historyErr(ctx, at, fmt.Errorf("list %s: %w", n.Path, err))
		}
		// In a shared folder, under the name MAC of any generation held.
		macs := f.nameMACsIn(n, name)
		i := slices.IndexFunc(es, func(e api.Entry) bool { return slices.Contains(macs, e.NameMAC) })
		p := path.Join(n.Path, name)
		if i < 0 {
			return nil, fmt.Errorf("%s did not exist at %s: %w", p, time.Unix(0, at).UTC().Format(time.RFC3339Nano), api.ErrNotFound)
		}
		if n, err = f.past().openEntry(n, p, es[i]); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// GetAt downloads the file (or symlink) p as it was at at to local, like GetFile.
func (f *FS) GetAt(ctx context.Context, p string, at int64, local string, prog Progress) error {
	n, err := f.ResolveAt(ctx, p, at)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return f.getNode(ctx, n, local, prog)
}

// RestoreStats counts a restore: the snapshot's entries (files, directories,
// symlinks) and file bytes, how many are done, and what was done to them.
type RestoreStats struct {
	Entries   int   // entries of the snapshot to restore
	Done      int   // of them handled (restored or already identical)
	Bytes     int64 // file bytes of the snapshot
	DoneBytes int64
	Created   int // new nodes (conflict copies included)
	Updated   int // existing nodes given their attributes at the moment (a new version)
	Skipped   int // already as at the moment
	Conflicts int // restored under a conflict-copy name, the newer entry kept
	Removed   int // entries that did not exist at the moment (--force), with what was below them
}

// RestoreProgress is called after each step of a restore with the counts
// so far. Calls are serialized.
type RestoreProgress func(RestoreStats)

// Restore makes dst (default: src) as src was at at. Files are not uploaded
// again: a restored file is a new or updated node whose attributes, sealed
// again for its node id, name the same chunks (the server keeps them for
// history). Directories, symlinks, modes, times and xattrs are as in the
// snapshot. An entry already as at the moment is skipped, so an interrupted
// restore resumes by running it again.
//
// Without force, nothing newer is overwritten: a differing file (or an
// entry of another type) stays and the restored one gets a conflict-copy
// name, existing directories keep their attributes and receive the restored
// entries. With force, dst is made exactly as at the moment: differing files
// get a new version with the old content, other differing entries are
// replaced, and entries that did not exist then are removed (they go to
// history themselves, so a restore can be undone).
func (f *FS) Restore(ctx context.Context, src string, at int64, dst string, force bool, prog RestoreProgress) (RestoreStats, error) {
	if dst == "" {
		dst = src
	}
	snap, err := f.ResolveAt(ctx, src, at)
	if err != nil {
		return RestoreStats{}, fmt.Errorf("restore: %w", err)
	}
	r := &restorer{f: f, at: at, force: force, prog: prog}
	tree, err := r.snapshot(ctx, snap)
	if err != nil {
		return r.st, fmt.Errorf("restore: %w%s", err, refusedHint(err))
	}
	names, err := Split(dst)
	if err != nil {
		return r.st, err
	}
	if len(names) == 0 {
		root, err := f.Root(ctx)
		if err != nil {
			return r.st, err
		}
		if !snap.IsDir() {
			return r.st, fmt.Errorf("restore %s to /: %w", snap.Path, api.ErrIsDir)
		}
		err = r.reconcileDir(ctx, tree, root)
		if err == nil {
			err = r.flush(ctx)
		}
		return r.st, err
	}
	parent, err := f.MkdirAll(ctx, "/"+strings.Join(names[:len(names)-1], "/"))
	if err != nil {
		return r.st, fmt.Errorf("restore: %w", err)
	}
	if err := r.restoreInto(ctx, tree, parent, names[len(names)-1]); err != nil {
		return r.st, err
	}
	return r.st, nil
}

// snapNode is a node of a snapshot with, for a directory, its entries.
type snapNode struct {
	n    *Node
	kids []*snapNode
}

// restorer plans a restore as batch operations, in an order the server can
// apply them (a directory before what goes into it, removals of a name
// before its new entry), and sends them MaxBatchOps at a time.
type restorer struct {
	f     *FS
	at    int64
	force bool
	prog  RestoreProgress
	st    RestoreStats
	ops   []plannedOp
	now   time.Time
	// In shared folders: the FS that writes each share's restored
	// records, and kept versions re-encrypted for it (historyshare.go).
	writers   map[uint64]*FS
	recrypted map[recryptKey]*meta.Attrs
}

// plannedOp is one batch operation and what it counts for when it succeeds.
type plannedOp struct {
	op    api.BatchOp
	what  string // path, for errors
	entry bool   // finishes a snapshot entry
	bytes int64
	count *int // the RestoreStats counter it adds to
	copy  bool // a conflict copy
}

// snapshot reads the whole snapshot tree below n (by node id).
func (r *restorer) snapshot(ctx context.Context, n *Node) (*snapNode, error) {
	s := &snapNode{n: n}
	r.st.Entries++
	if n.Attrs.Mode&syscall.S_IFMT == syscall.S_IFREG {
		r.st.Bytes += n.Size()
	}
	if !n.IsDir() {
		return s, nil
	}
	kids, err := r.f.ListNodeAt(ctx, n, r.at)
	if err != nil {
		return nil, err
	}
	for _, k := range kids {
		ks, err := r.snapshot(ctx, k)
		if err != nil {
			return nil, err
		}
		s.kids = append(s.kids, ks)
	}
	return s, nil
}

// restoreInto restores s as the entry name of the live directory parent.
func (r *restorer) restoreInto(ctx context.Context, s *snapNode, parent *Node, name string) error {
	live, err := r.f.ListNode(ctx, parent)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	byName := map[string]*Node{}
	for _, l := range live {
		byName[l.Name] = l
	}
	if err := r.reconcile(ctx, s, parent, name, byName); err != nil {
		return err
	}
	return r.flush(ctx)
}

func fileBytes(n *Node) int64 {
	if n.Attrs.Mode&syscall.S_IFMT == syscall.S_IFREG {
		return n.Size()
	}
	return 0
}

// sameContent reports whether live holds what snap held: same type, size,
// chunk list and symlink target.
func sameContent(live, snap *meta.Attrs) bool {
	return live.Mode&syscall.S_IFMT == snap.Mode&syscall.S_IFMT && live.Size == snap.Size &&
		slices.Equal(live.Chunks, snap.Chunks) && bytes.Equal(live.Target, snap.Target)
}

// sameMeta reports whether live has snap's mode, owner, mtime and xattrs.
func sameMeta(live, snap *meta.Attrs) bool {
	return live.Mode == snap.Mode && live.UID == snap.UID && live.GID == snap.GID && live.Mtime == snap.Mtime &&
		maps.EqualFunc(live.Xattrs, snap.Xattrs, bytes.Equal)
}

// reconcile plans making the entry name of live directory parent (siblings:
// its live entries by name) as s.
func (r *restorer) reconcile(ctx context.Context, s *snapNode, parent *Node, name string, siblings map[string]*Node) error {
	live := siblings[name]
	same := false
	if live != nil && !s.n.IsDir() && !live.IsDir() {
		var err error
		if same, err = r.sameAs(ctx, live, s.n); err != nil {
			return err
		}
	}
	switch {
	case live == nil:
		return r.create(ctx, s, parent, path.Join(parent.Path, name), name, false)
	case s.n.IsDir() && live.IsDir():
		return r.reconcileDir(ctx, s, live)
	case same:
		if !r.force || sameMeta(live.Attrs, s.n.Attrs) {
			r.skip(s.n)
			return nil
		}
		return r.update(ctx, live, s.n)
	case r.force && !s.n.IsDir() && !live.IsDir():
		return r.update(ctx, live, s.n) // a new version of the same node
	case r.force:
		if err := r.remove(ctx, live); err != nil {
			return err
		}
		return r.create(ctx, s, parent, path.Join(parent.Path, name), name, false)
	}
	// A newer entry is kept; the restored one gets a conflict-copy name,
	// unless a conflict copy of the name already holds it (a resumed restore).
	for cname, c := range siblings {
		if !meta.IsConflictOf(cname, name) || c.Node.ID == 0 {
			continue // not a copy, or one planned in this run
		}
		if s.n.IsDir() && c.IsDir() {
			return r.reconcileDir(ctx, s, c)
		}
		if !s.n.IsDir() && !c.IsDir() {
			same, err := r.sameAs(ctx, c, s.n)
			if err != nil {
				return err
			}
			if same {
				r.skip(s.n)
				return nil
			}
		}
	}
	if r.now.IsZero() {
		r.now = time.Now()
	}
	for i := 1; ; i++ {
		cname := meta.ConflictName(name, i, r.now)
		if siblings[cname] == nil {
			siblings[cname] = &Node{Name: cname, Node: api.Node{Type: s.n.Node.Type}, Attrs: s.n.Attrs}
			return r.create(ctx, s, parent, path.Join(parent.Path, cname), cname, true)
		}
	}
}

// reconcileDir plans making the live directory live as s: its attributes
// (with force), then its entries.
func (r *restorer) reconcileDir(ctx context.Context, s *snapNode, live *Node) error {
	if r.force && !sameMeta(live.Attrs, s.n.Attrs) {
		if err := r.update(ctx, live, s.n); err != nil {
			return err
		}
	} else {
		r.skip(s.n)
	}
	kids, err := r.f.ListNode(ctx, live)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	byName := make(map[string]*Node, len(kids))
	for _, k := range kids {
		byName[k.Name] = k
	}
	if r.force {
		want := make(map[string]bool, len(s.kids))
		for _, k := range s.kids {
			want[k.n.Name] = true
		}
		for _, k := range kids {
			if !want[k.Name] {
				if err := r.remove(ctx, k); err != nil {
					return err
				}
				delete(byName, k.Name)
			}
		}
	}
	for _, k := range s.kids {
		if err := r.reconcile(ctx, k, live, k.n.Name, byName); err != nil {
			return err
		}
		if err := r.maybeFlush(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) skip(n *Node) {
	r.st.Skipped++
	r.st.Done++
	r.st.DoneBytes += fileBytes(n)
}

// create plans s as a new node (and, for a directory, its whole subtree)
// named name in the live directory parent, sealed for parent's tree.
func (r *restorer) create(ctx context.Context, s *snapNode, parent *Node, p, name string, conflict bool) error {
	return r.createIn(ctx, s, parent.ID(), shareOf(parent), p, name, conflict)
}

// createIn plans s as a new node named name in directory parent (a live
// one, or one planned in this run), sealed for share (0: home).
func (r *restorer) createIn(ctx context.Context, s *snapNode, parent, share uint64, p, name string, conflict bool) error {
	w, err := r.restoreWriter(share)
	if err != nil {
		return err
	}
	a, err := r.restoredAttrs(ctx, w, s.n)
	if err != nil {
		return err
	}
	req, err := w.createRequest(parent, name, a, p)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	r.ops = append(r.ops, plannedOp{
		op:   api.BatchOp{Op: api.OpCreate, Create: &req},
		what: p, entry: true, bytes: fileBytes(s.n), count: &r.st.Created, copy: conflict,
	})
	for _, k := range s.kids {
		if err := r.createIn(ctx, k, req.ID, share, path.Join(p, k.n.Name), k.n.Name, false); err != nil {
			return err
		}
	}
	return nil
}

// update plans giving the live node live the attributes of snapshot node
// s, sealed for live's tree.
func (r *restorer) update(ctx context.Context, live, s *Node) error {
	w, err := r.restoreWriter(shareOf(live))
	if err != nil {
		return err
	}
	a, err := r.restoredAttrs(ctx, w, s)
	if err != nil {
		return err
	}
	req, err := w.updateRequest(live, a)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	r.ops = append(r.ops, plannedOp{
		op:   api.BatchOp{Op: api.OpUpdate, ID: live.ID(), Update: &req},
		what: live.Path, entry: true, bytes: fileBytes(s), count: &r.st.Updated,
	})
	return nil
}

// remove plans removing the live entry n and everything below it.
func (r *restorer) remove(ctx context.Context, n *Node) error {
	if n.IsDir() {
		kids, err := r.f.ListNode(ctx, n)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		for _, k := range kids {
			if err := r.remove(ctx, k); err != nil {
				return err
			}
		}
	}
	r.ops = append(r.ops, plannedOp{
		op:   api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: n.Parent, NameMAC: n.NameMAC, Dir: n.IsDir()}},
		what: n.Path, count: &r.st.Removed,
	})
	return nil
}

// maybeFlush sends the planned operations once a full batch is ready.
func (r *restorer) maybeFlush(ctx context.Context) error {
	for len(r.ops) >= api.MaxBatchOps {
		if err := r.send(ctx, r.ops[:api.MaxBatchOps]); err != nil {
			return err
		}
		r.ops = r.ops[api.MaxBatchOps:]
	}
	return nil
}

// flush sends every planned operation.
func (r *restorer) flush(ctx context.Context) error {
	if err := r.maybeFlush(ctx); err != nil {
		return err
	}
	if len(r.ops) > 0 {
		if err := r.send(ctx, r.ops); err != nil {
			return err
		}
		r.ops = nil
	}
	if r.prog != nil {
		r.prog(r.st)
	}
	return nil
}

// send applies one batch; a refused operation stops the restore after the
// batch (the server applied the others), to be resumed by running it again.
func (r *restorer) send(ctx context.Context, ops []plannedOp) error {
	req := api.BatchRequest{Ops: make([]api.BatchOp, len(ops))}
	for i, o := range ops {
		req.Ops[i] = o.op
	}
	resp, err := r.f.c.Batch(ctx, req)
	if err != nil {
		return fmt.Errorf("restore: %w (run the restore again to resume)", err)
	}
	if len(resp.Results) != len(ops) {
		return fmt.Errorf("restore: the server answered %d results for %d operations: %w", len(resp.Results), len(ops), ErrMismatch)
	}
	var failed []string
	var first error
	for i, res := range resp.Results {
		o := ops[i]
		if res.Error != nil {
			if first == nil {
				first = res.Error
			}
			failed = append(failed, o.what)
			continue
		}
		*o.count++
		if o.copy {
			r.st.Conflicts++
		}
		if o.entry {
			r.st.Done++
			r.st.DoneBytes += o.bytes
		}
	}
	if r.prog != nil {
		r.prog(r.st)
	}
	if first != nil {
		return fmt.Errorf("restore: %d of %d operations were refused (first: %s: %w); run the restore again to resume", len(failed), len(ops), failed[0], first)
	}
	return nil
}

// TrashItem is a node deleted within the history window from a directory
// that still exists: Node is its last version, authenticated, named by its
// path then. An item of a shared folder whose records are refused (written
// by a member since removed, or altered) has no Node: Refused says why, and
// Dir is the path of its directory.
type TrashItem struct {
	Deleted int64 // when (server clock, Unix ns)
	Node    *Node
	Refused error
	Dir     string
	raw     api.TrashItem
}

// trashState is the raw trash and the live directories resolved so far.
type trashState struct {
	raw   []api.TrashItem
	dirs  map[uint64]*Node // live directories by id, with their paths
	items []*TrashItem
}

// Trash lists what was deleted within the window and can be restored by
// path, oldest first: the nodes whose directory exists now (what was below
// a deleted directory comes back with it and is not listed).
func (f *FS) Trash(ctx context.Context) ([]*TrashItem, error) {
	ts, err := f.trash(ctx)
	if err != nil {
		return nil, err
	}
	return ts.items, nil
}

func (f *FS) trash(ctx context.Context) (*trashState, error) {
	raw, err := f.c.Trash(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("trash: %w", err)
	}
	ts := &trashState{raw: raw, dirs: map[uint64]*Node{}}
	gone := map[uint64]bool{} // directories that do not exist now
	past := f.past()
	for _, it := range raw {
		if gone[it.Parent] {
			continue
		}
		dir, err := f.liveDir(ctx, ts.dirs, it.Parent, 0)
		if errors.Is(err, api.ErrNotFound) {
			gone[it.Parent] = true
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("trash: %w", err)
		}
		n, err := past.openEntry(dir, "", api.Entry{Parent: it.Parent, NameMAC: it.NameMAC, Name: it.Name, Node: it.Node})
		if errors.Is(err, ErrShare) {
			// Listed as refused: one such version (a removed writer's
			// deletion, say) must not hide the rest of the trash.
			ts.items = append(ts.items, &TrashItem{Deleted: it.Deleted, Refused: err, Dir: dir.Path, raw: it})
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("trash: %w", err)
		}
		ts.items = append(ts.items, &TrashItem{Deleted: it.Deleted, Node: n, raw: it})
	}
	return ts, nil
}

// liveDir returns the live directory id, authenticated, with its path
// (found by walking up its parents); api.ErrNotFound if it does not exist.
func (f *FS) liveDir(ctx context.Context, cache map[uint64]*Node, id uint64, depth int) (*Node, error) {
	if d := cache[id]; d != nil {
		return d, nil
	}
	if id == f.rootID() {
		root, err := f.Root(ctx)
		if err != nil {
			return nil, err
		}
		cache[id] = root
		return root, nil
	}
	if depth > 4096 {
		return nil, fmt.Errorf("directory %d: parent chain too deep: %w", id, ErrMismatch)
	}
	n, err := f.c.GetNode(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("directory %d: %w", id, err)
	}
	if n.Type != api.TypeDir {
		return nil, fmt.Errorf("node %d is not a directory: %w", id, api.ErrNotFound)
	}
	parent, err := f.liveDir(ctx, cache, n.Parent, depth+1)
	if err != nil {
		return nil, err
	}
	kids, err := f.ListNode(ctx, parent)
	if err != nil {
		return nil, err
	}
	for _, k := range kids {
		if k.IsDir() {
			cache[k.ID()] = k
		}
	}
	if d := cache[id]; d != nil {
		return d, nil
	}
	return nil, fmt.Errorf("directory %d is not in its parent %s: %w", id, parent.Path, api.ErrNotFound)
}

// rmGap is the longest pause between two deletions of one removal of a
// tree (rm -rf deletes what is below a directory first): a descendant
// deleted longer before was deleted on its own and is not brought back.
const rmGap = 10 * time.Minute

// TrashRestore brings back the most recent deletion at path p to where it
// was. A directory comes back with everything that was below it when it
// was removed: the tree as it was just before the first deletion of that
// removal (rm -rf deletes the entries below a directory before it). If p
// is taken now by an entry of another kind, the restored one gets a
// conflict-copy name; an existing directory there receives the restored
// entries (a differing file as a conflict copy), so an interrupted trash
// restore resumes by running it again. It returns the restored path.
func (f *FS) TrashRestore(ctx context.Context, p string, prog RestoreProgress) (string, RestoreStats, error) {
	names, err := Split(p)
	if err != nil {
		return "", RestoreStats{}, err
	}
	p = "/" + strings.Join(names, "/")
	ts, err := f.trash(ctx)
	if err != nil {
		return "", RestoreStats{}, err
	}
	var item *TrashItem
	for _, it := range ts.items {
		if it.Node != nil && it.Node.Path == p && (item == nil || it.Deleted > item.Deleted) {
			item = it
		}
	}
	if item == nil {
		return "", RestoreStats{}, fmt.Errorf("trash restore: nothing deleted at %s within the history window (kumo trash lists what can be restored): %w", p, api.ErrNotFound)
	}
	at := item.Deleted
	if item.Node.IsDir() {
		at = removalStart(ts.raw, item.Node.ID(), item.Deleted)
	}
	at-- // just before
	n, err := f.c.NodeAt(ctx, item.Node.ID(), at)
	if err != nil {
		return "", RestoreStats{}, f.historyErr(ctx, at, fmt.Errorf("trash restore %s: %w", p, err))
	}
	parent := ts.dirs[item.Node.Parent]
	// The sealed name is bound to the node, not to a version of it.
	snap, err := f.past().openEntry(parent, p, api.Entry{Parent: parent.ID(), NameMAC: item.raw.NameMAC, Name: item.raw.Name, Node: n})
	if err != nil {
		return "", RestoreStats{}, fmt.Errorf("trash restore: %w", err)
	}
	r := &restorer{f: f, at: at, prog: prog}
	tree, err := r.snapshot(ctx, snap)
	if err != nil {
		return "", r.st, fmt.Errorf("trash restore: %w%s", err, refusedHint(err))
	}
	if err := r.restoreInto(ctx, tree, parent, item.Node.Name); err != nil {
		return "", r.st, err
	}
	return p, r.st, nil
}

// removalStart returns when the removal that deleted directory dir at t
// began: the earliest deletion among dir's deleted descendants (found from
// the trash's parent links) that follows the one after it within rmGap.
func removalStart(raw []api.TrashItem, dir uint64, t int64) int64 {
	kids := map[uint64][]api.TrashItem{}
	for _, it := range raw {
		kids[it.Parent] = append(kids[it.Parent], it)
	}
	var times []int64
	queue := []uint64{dir}
	seen := map[uint64]bool{dir: true}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		for _, it := range kids[d] {
			if it.Deleted <= t {
				times = append(times, it.Deleted)
			}
			if it.Node.Type == api.TypeDir && !seen[it.Node.ID] {
				seen[it.Node.ID] = true
				queue = append(queue, it.Node.ID)
			}
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] > times[j] })
	start := t
	for _, d := range times {
		if start-d > int64(rmGap) {
			break
		}
		start = min(start, d)
	}
	return start
}

// Version is one kept version of a node: current from Since to Until
// (Until zero: the current version).
type Version struct {
	Since, Until int64 // server clock, Unix ns; Since 0: before history was kept
	Node         *Node
}

// Versions lists the kept versions of the node at p, newest first. If
// nothing is at p now, the versions of the most recent deletion there.
// Attributes carry no device name, so a version does not say which device
// wrote it.
func (f *FS) Versions(ctx context.Context, p string) ([]Version, error) {
	n, err := f.resolveOrTrash(ctx, p)
	if err != nil {
		return nil, err
	}
	vs, err := f.c.Versions(ctx, n.ID())
	if err != nil {
		return nil, fmt.Errorf("versions of %s: %w", n.Path, err)
	}
	out := make([]Version, 0, len(vs))
	past := f.past()
	for _, v := range vs {
		if v.Node.ID != n.ID() {
			return nil, fmt.Errorf("versions of %s: the server answered a version of node %d for %d: %w", n.Path, v.Node.ID, n.ID(), ErrMismatch)
		}
		o, err := past.open(n.Path, n.Name, n.Parent, n.NameMAC, v.Node)
		if err != nil {
			return nil, err
		}
		out = append(out, Version{Since: v.Node.Since, Until: v.Until, Node: o})
	}
	return out, nil
}

// resolveOrTrash returns the live node at p, or the most recent one deleted there.
func (f *FS) resolveOrTrash(ctx context.Context, p string) (*Node, error) {
	n, err := f.Resolve(ctx, p)
	if !errors.Is(err, api.ErrNotFound) {
		return n, err
	}
	items, terr := f.Trash(ctx)
	if terr != nil {
		return nil, err
	}
	clean := path.Clean("/" + p)
	var last *TrashItem
	for _, it := range items {
		if it.Node != nil && it.Node.Path == clean && (last == nil || it.Deleted > last.Deleted) {
			last = it
		}
	}
	if last == nil {
		return nil, err
	}
	return last.Node, nil
}

// PurgeBefore frees every version that ended before t (Unix ns; 0: now) and
// what was deleted before t.
func (f *FS) PurgeBefore(ctx context.Context, t int64) (api.PurgeResponse, error) {
	r, err := f.c.PurgeHistory(ctx, api.PurgeRequest{Before: t})
	if err != nil {
		return r, fmt.Errorf("purge history: %w", err)
	}
	return r, nil
}

// PurgePath frees the history of p (or of the most recent deletion there)
// and of everything that was ever below it. The current version stays.
func (f *FS) PurgePath(ctx context.Context, p string) (api.PurgeResponse, error) {
	n, err := f.resolveOrTrash(ctx, p)
	if err != nil {
		return api.PurgeResponse{}, fmt.Errorf("purge history: %w", err)
	}
	r, err := f.c.PurgeHistory(ctx, api.PurgeRequest{Node: n.ID()})
	if err != nil {
		return r, fmt.Errorf("purge history of %s: %w", n.Path, err)
	}
	return r, nil
}

// Account returns the account as the server reports it (history usage and window included).
func (f *FS) Account(ctx context.Context) (api.Account, error) { return f.c.Account(ctx) }

// SetRetention sets how long the account's history is kept (0: no history).
func (f *FS) SetRetention(ctx context.Context, d time.Duration) (api.Account, error) {
	a, err := f.c.SetRetention(ctx, api.RetentionRequest{Retention: api.Duration(d / time.Second)})
	if err != nil {
		return a, fmt.Errorf("set history retention: %w", err)
	}
	return a, nil
}
