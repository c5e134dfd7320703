// Package pathops works on an account's encrypted tree by path, for the CLI:
// resolve and list paths, upload a local file (chunked, deduplicated, sealed)
// and download one (verified, written atomically). Every name and attribute is
// opened and authenticated on the way; nothing the server says is trusted.
package pathops

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
)

// DefaultParallel is how many chunks move at once by default.
const DefaultParallel = 8

// ErrMismatch is returned when the server's view of a node disagrees with its
// sealed attributes (chunk lists differ, a directory sealed as a file, ...).
var ErrMismatch = errors.New("pathops: server data disagrees with sealed attributes")

// Progress is called with bytes done and total bytes of a transfer. Calls are
// serialized; done only grows.
type Progress func(done, total int64)

// FS is an account's tree seen by path. Safe for concurrent use.
type FS struct {
	c      *client.Client
	sealer *meta.Sealer
	cipher *chunk.Cipher
	// Parallel is how many chunks are uploaded or downloaded at once; 0: DefaultParallel.
	Parallel int
	// Shared folders (share.go): the shares whose records this FS opens,
	// the identity that signs its writes in one, and for a view of one
	// share (rooted at its root, writing under its current generation), which.
	shares map[uint64]*Share
	me     *keys.Identity
	scope  *Share
	// history marks a copy of the FS that opens kept versions (history.go
	// past): a share record below the roster's lowest accepted generation
	// opens if the owner or a current writer signed it (VerifyHistory).
	history bool
}

// New returns an FS over the client with the account's subkeys.
func New(c *client.Client, k keys.Subkeys) *FS {
	return &FS{c: c, sealer: meta.NewSealer(k), cipher: chunk.NewCipher(k.ChunkID, k.Chunks)}
}

func (f *FS) parallel() int {
	if f.Parallel > 0 {
		return f.Parallel
	}
	return DefaultParallel
}

// Node is one authenticated node with the entry that named it.
type Node struct {
	Path    string // clean absolute remote path, "/" for the root
	Name    string // "" for the root
	Parent  uint64 // 0 for the root
	NameMAC string
	Node    api.Node
	Attrs   *meta.Attrs
}

// ID returns the node id.
func (n *Node) ID() uint64 { return n.Node.ID }

// IsDir reports whether the node is a directory.
func (n *Node) IsDir() bool { return n.Node.Type == api.TypeDir }

// Mode returns the node's mode as an fs.FileMode.
func (n *Node) Mode() fs.FileMode { return FileMode(n.Attrs.Mode) }

// Size returns the file size (0 for directories).
func (n *Node) Size() int64 { return int64(n.Attrs.Size) }

// ModTime returns the modification time.
func (n *Node) ModTime() time.Time { return time.Unix(0, n.Attrs.Mtime) }

// FileMode converts st_mode bits to an fs.FileMode.
func FileMode(st uint32) fs.FileMode {
	m := fs.FileMode(st & 0o777)
	switch st & syscall.S_IFMT {
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	case syscall.S_IFIFO:
		m |= fs.ModeNamedPipe
	case syscall.S_IFSOCK:
		m |= fs.ModeSocket
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		m |= fs.ModeDevice
	}
	if st&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if st&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if st&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// Split cleans a remote path into its names; "/", "" and "." are the root.
func Split(p string) ([]string, error) {
	p = path.Clean("/" + p)
	if p == "/" {
		return nil, nil
	}
	names := strings.Split(p[1:], "/")
	for _, n := range names {
		if err := meta.ValidName([]byte(n)); err != nil {
			return nil, fmt.Errorf("remote path %q: %w", p, err)
		}
	}
	return names, nil
}

// Root returns the authenticated root directory.
func (f *FS) Root(ctx context.Context) (*Node, error) {
	n, err := f.c.GetNode(ctx, f.rootID())
	if err != nil {
		return nil, fmt.Errorf("get root: %w", err)
	}
	if err := f.checkRoot(n); err != nil {
		return nil, err
	}
	root, err := f.open("/", "", 0, "", n)
	if err == nil && f.scope == nil && meta.HasFormatMarkV2(root.Attrs) {
		f.sealer.RequireV2() // an all-v2 account: a v1 record is a replay
	}
	return root, err
}

// open authenticates a node's attributes and checks them against what the
// server says about the node.
func (f *FS) open(p, name string, parent uint64, mac string, n api.Node) (*Node, error) {
	a, err := f.openAttrs(n)
	if err != nil {
		return nil, fmt.Errorf("%s: attributes of node %d: %w", p, n.ID, err)
	}
	isDir := a.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if isDir != (n.Type == api.TypeDir) {
		return nil, fmt.Errorf("%s: node %d is a %q on the server but not in its sealed attributes: %w", p, n.ID, n.Type, ErrMismatch)
	}
	if !sameChunks(a.Chunks, n.Chunks) {
		return nil, fmt.Errorf("%s: chunk list of node %d: %w", p, n.ID, ErrMismatch)
	}
	return &Node{Path: p, Name: name, Parent: parent, NameMAC: mac, Node: n, Attrs: a}, nil
}

// chunkIDs returns the unique non-hole chunk ids of refs in first-use order,
// as the server keeps them.
func chunkIDs(refs []meta.ChunkRef) []string {
	seen := make(map[chunk.ID]bool, len(refs))
	out := []string{}
	for _, r := range refs {
		if r.ID.IsZero() || seen[r.ID] {
			continue
		}
		seen[r.ID] = true
		out = append(out, r.ID.String())
	}
	return out
}

// sameChunks compares the sealed chunk list with the server's as sets.
func sameChunks(refs []meta.ChunkRef, server []string) bool {
	a := chunkIDs(refs)
	b := slices.Clone(server)
	slices.Sort(a)
	slices.Sort(b)
	b = slices.Compact(b)
	return slices.Equal(a, b)
}

// child looks name up in dir; api.ErrNotFound if absent.
func (f *FS) child(ctx context.Context, dir *Node, name string) (*Node, error) {
	if !dir.IsDir() {
		return nil, fmt.Errorf("%s: %w", dir.Path, api.ErrNotDir)
	}
	e, err := f.lookup(ctx, dir, name)
	p := path.Join(dir.Path, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return f.openEntry(dir, p, e)
}

// openEntry authenticates an entry's name and node.
func (f *FS) openEntry(dir *Node, p string, e api.Entry) (*Node, error) {
	if e.Parent != dir.ID() {
		return nil, fmt.Errorf("%s: entry of directory %d returned for %d: %w", p, e.Parent, dir.ID(), ErrMismatch)
	}
	name, err := f.openName(dir, e)
	if err != nil {
		return nil, fmt.Errorf("%s: entry name: %w", dir.Path, err)
	}
	if p == "" {
		p = path.Join(dir.Path, string(name))
	} else if path.Base(p) != string(name) {
		return nil, fmt.Errorf("%s: server returned the entry %q: %w", p, name, ErrMismatch)
	}
	return f.open(p, string(name), dir.ID(), e.NameMAC, e.Node)
}

// Resolve returns the node at remote path p.
func (f *FS) Resolve(ctx context.Context, p string) (*Node, error) {
	names, err := Split(p)
	if err != nil {
		return nil, err
	}
	n, err := f.Root(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if n, err = f.child(ctx, n, name); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// List returns the entries of the directory at p sorted by name; for a
// non-directory, the node itself (like ls).
func (f *FS) List(ctx context.Context, p string) ([]*Node, error) {
	dir, err := f.Resolve(ctx, p)
	if err != nil {
		return nil, err
	}
	if !dir.IsDir() {
		return []*Node{dir}, nil
	}
	return f.ListNode(ctx, dir)
}

// ListNode returns the entries of directory dir sorted by name.
func (f *FS) ListNode(ctx context.Context, dir *Node) ([]*Node, error) {
	es, err := f.c.List(ctx, dir.ID())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir.Path, err)
	}
	return f.openEntries(dir, es)
}

// openEntries authenticates the entries of directory dir, sorted by name.
func (f *FS) openEntries(dir *Node, es []api.Entry) ([]*Node, error) {
	out := make([]*Node, 0, len(es))
	for _, e := range es {
		n, err := f.openEntry(dir, "", e)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// NewNodeID returns a random node id (never 0 or the root's).
func NewNodeID() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("node id: %w", err)
		}
		if id := binary.LittleEndian.Uint64(b[:]); id > api.RootID {
			return id, nil
		}
	}
}

// Create makes a new node named name in dir with the given attributes. The
// server's chunk list is derived from a.Chunks.
func (f *FS) Create(ctx context.Context, dir *Node, name string, a *meta.Attrs) (*Node, error) {
	p := path.Join(dir.Path, name)
	if err := meta.ValidName([]byte(name)); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !dir.IsDir() {
		return nil, fmt.Errorf("%s: %w", dir.Path, api.ErrNotDir)
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if err := f.canWrite(dir); err != nil {
		return nil, err
	}
	req, err := f.createRequest(dir.ID(), name, a, p)
	if err != nil {
		return nil, err
	}
	e, err := f.c.Create(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", p, err)
	}
	return f.openEntry(dir, p, e)
}

// createRequest seals a new node (random id) named name in directory dir
// with attributes a; p names it in errors.
func (f *FS) createRequest(dir uint64, name string, a *meta.Attrs, p string) (api.CreateRequest, error) {
	id, err := NewNodeID()
	if err != nil {
		return api.CreateRequest{}, err
	}
	typ := api.TypeFile
	if a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		typ = api.TypeDir
	}
	sealed, err := f.sealAttrs(id, meta.NextRev(0), a)
	if err != nil {
		return api.CreateRequest{}, fmt.Errorf("%s: %w", p, err)
	}
	if len(sealed) > api.MaxAttrsSize {
		return api.CreateRequest{}, fmt.Errorf("%s: attributes of %d bytes exceed the server's limit (file too large: %d chunks)", p, len(sealed), len(a.Chunks))
	}
	mac, sealedName, err := f.sealName(dir, id, meta.KindOf(typ == api.TypeDir), name)
	if err != nil {
		return api.CreateRequest{}, fmt.Errorf("%s: %w", p, err)
	}
	return api.CreateRequest{
		Parent:  dir,
		NameMAC: mac,
		Name:    sealedName,
		ID:      id,
		Type:    typ,
		Attrs:   sealed,
		Chunks:  chunkIDs(a.Chunks),
	}, nil
}

// update replaces n's attributes, retrying on a version conflict (the last
// writer wins, as with cp over a file).
func (f *FS) update(ctx context.Context, n *Node, a *meta.Attrs) (*Node, error) {
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", n.Path, err)
	}
	if err := f.canWrite(n); err != nil {
		return nil, err
	}
	req, err := f.updateRequest(n, a)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		got, err := f.c.Update(ctx, n.ID(), req)
		if err == nil {
			return f.open(n.Path, n.Name, n.Parent, n.NameMAC, got)
		}
		if !errors.Is(err, api.ErrConflict) || attempt >= 4 {
			return nil, fmt.Errorf("update %s: %w", n.Path, err)
		}
		cur, gerr := f.c.GetNode(ctx, n.ID())
		if gerr != nil {
			return nil, fmt.Errorf("update %s: %w", n.Path, gerr)
		}
		req.Version = cur.Version
	}
}

// updateRequest seals a as n's next attributes (for n's node id, at n's version).
func (f *FS) updateRequest(n *Node, a *meta.Attrs) (api.UpdateRequest, error) {
	sealed, err := f.sealAttrs(n.ID(), meta.NextRev(meta.Rev(n.Node.Attrs)), a)
	if err != nil {
		return api.UpdateRequest{}, fmt.Errorf("%s: %w", n.Path, err)
	}
	if len(sealed) > api.MaxAttrsSize {
		return api.UpdateRequest{}, fmt.Errorf("%s: attributes of %d bytes exceed the server's limit (file too large: %d chunks)", n.Path, len(sealed), len(a.Chunks))
	}
	return api.UpdateRequest{Version: n.Node.Version, Attrs: sealed, Chunks: chunkIDs(a.Chunks)}, nil
}

// dirAttrs returns fresh attributes of a directory.
func dirAttrs(perm uint32) *meta.Attrs {
	now := time.Now().UnixNano()
	return &meta.Attrs{
		Mode: syscall.S_IFDIR | perm&0o7777,
		UID:  uint32(syscall.Getuid()), GID: uint32(syscall.Getgid()),
		Atime: now, Mtime: now, Ctime: now,
	}
}

// Mkdir creates the directory p; its parent must exist.
func (f *FS) Mkdir(ctx context.Context, p string, perm uint32) (*Node, error) {
	names, err := Split(p)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("mkdir /: %w", api.ErrExists)
	}
	dir, err := f.Resolve(ctx, "/"+strings.Join(names[:len(names)-1], "/"))
	if err != nil {
		return nil, err
	}
	return f.Create(ctx, dir, names[len(names)-1], dirAttrs(perm))
}

// MkdirAll returns the directory p, creating it and missing parents (0755).
func (f *FS) MkdirAll(ctx context.Context, p string) (*Node, error) {
	names, err := Split(p)
	if err != nil {
		return nil, err
	}
	n, err := f.Root(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		next, err := f.child(ctx, n, name)
		if errors.Is(err, api.ErrNotFound) {
			next, err = f.Create(ctx, n, name, dirAttrs(0o755))
			if errors.Is(err, api.ErrExists) { // created meanwhile by someone else
				next, err = f.child(ctx, n, name)
			}
		}
		if err != nil {
			return nil, err
		}
		if !next.IsDir() {
			return nil, fmt.Errorf("%s: %w", next.Path, api.ErrNotDir)
		}
		n = next
	}
	return n, nil
}

// Symlink creates (or replaces) a symbolic link at p pointing to target.
func (f *FS) Symlink(ctx context.Context, target, p string) (*Node, error) {
	now := time.Now().UnixNano()
	a := &meta.Attrs{
		Mode: syscall.S_IFLNK | 0o777,
		UID:  uint32(syscall.Getuid()), GID: uint32(syscall.Getgid()),
		Size:  uint64(len(target)),
		Atime: now, Mtime: now, Ctime: now,
		Target: []byte(target),
	}
	return f.WriteNode(ctx, p, a)
}

// WriteNode creates the non-directory p with attributes a, or replaces the
// attributes of the non-directory already there. Missing parents are created.
func (f *FS) WriteNode(ctx context.Context, p string, a *meta.Attrs) (*Node, error) {
	names, err := Split(p)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("/: %w", api.ErrIsDir)
	}
	dir, err := f.MkdirAll(ctx, "/"+strings.Join(names[:len(names)-1], "/"))
	if err != nil {
		return nil, err
	}
	name := names[len(names)-1]
	for attempt := 0; ; attempt++ {
		old, err := f.child(ctx, dir, name)
		switch {
		case err == nil:
			if old.IsDir() {
				return nil, fmt.Errorf("%s: %w", old.Path, api.ErrIsDir)
			}
			return f.update(ctx, old, a)
		case !errors.Is(err, api.ErrNotFound):
			return nil, err
		}
		n, err := f.Create(ctx, dir, name, a)
		if errors.Is(err, api.ErrExists) && attempt < 2 {
			continue // created meanwhile: replace it
		}
		return n, err
	}
}
