package pathops

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/link"
	"kumo/remote/api"
	"kumo/remote/client"
)

// LinkManifest builds the manifest of a link to remote path p: a file, or a
// folder's whole tree (directories before their children). Each chunk
// carries its content key, so the link opens exactly the chunks it names,
// and the hash of its sealed bytes (linkSums: every chunk is read once, from
// o.Local where it holds it, else from the cloud). Special files (fifos,
// devices) are left out and reported through skip. Only o's Progress and
// Local are used here.
func (f *FS) LinkManifest(ctx context.Context, p string, o LinkOptions, skip func(path string)) (*link.Manifest, error) {
	n, err := f.Resolve(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	name := n.Name
	if name == "" {
		name = "kumo" // the root has no name of its own
	}
	m := &link.Manifest{V: link.ManifestVersion, Name: name, Created: time.Now().UTC().Truncate(time.Second)}
	ciphers := map[string]*chunk.Cipher{}
	pr := &linkTracker{fn: o.Progress}
	if !n.IsDir() {
		e, ok := f.linkEntry(n, "", ciphers)
		if !ok || e.Type != link.TypeFile {
			return nil, fmt.Errorf("link %s: only regular files and directories can be linked", n.Path)
		}
		m.Kind, m.Entries = link.KindFile, []link.Entry{e}
		if err := f.linkSums(ctx, m, ciphers, o.Local, pr); err != nil {
			return nil, err
		}
		return m, m.Validate()
	}
	m.Kind = link.KindDir
	var walk func(dir *Node, rel string) error
	walk = func(dir *Node, rel string) error {
		kids, err := f.ListNode(ctx, dir)
		if err != nil {
			return fmt.Errorf("link: %w", err)
		}
		for _, k := range kids {
			kp := path.Join(rel, k.Name)
			e, ok := f.linkEntry(k, kp, ciphers)
			if !ok {
				if skip != nil {
					skip(k.Path)
				}
				continue
			}
			m.Entries = append(m.Entries, e)
			pr.update(func(p *LinkProgress) { p.Entries = len(m.Entries) })
			if k.IsDir() {
				if err := walk(k, kp); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(n, ""); err != nil {
		return nil, err
	}
	if err := f.linkSums(ctx, m, ciphers, o.Local, pr); err != nil {
		return nil, err
	}
	return m, m.Validate()
}

// linkEntry is the manifest entry of node n at rel; false for a type a link
// does not carry. Chunk sums are left empty: linkSums fills them.
func (f *FS) linkEntry(n *Node, rel string, ciphers map[string]*chunk.Cipher) (link.Entry, bool) {
	a := n.Attrs
	e := link.Entry{Path: rel, Mode: a.Mode & 0o7777, Mtime: time.Unix(0, a.Mtime).UTC()}
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		e.Type = link.TypeDir
	case syscall.S_IFLNK:
		e.Type, e.Target = link.TypeSymlink, string(a.Target)
	case syscall.S_IFREG:
		e.Type, e.Size = link.TypeFile, int64(a.Size)
		cph := f.chunkCipher(n) // a shared folder's chunks are under its keys
		for _, r := range a.Chunks {
			c := link.Chunk{N: int(r.Len)}
			if !r.ID.IsZero() {
				k := cph.ContentKey(r.ID)
				c.ID, c.Key = r.ID.String(), hex.EncodeToString(k[:])
				ciphers[c.ID] = cph
			}
			e.Chunks = append(e.Chunks, c)
		}
	default:
		return e, false
	}
	return e, true
}

// linkSums gives every chunk of m the hash of its sealed bytes (what a
// reader checks a whole chunk against). Each distinct chunk is read once,
// from local where it holds the whole sealed chunk, else from the cloud, and
// opened with the account's keys, its id checked against its plaintext
// (chunk.Open), before its sealed bytes are hashed: a link never vouches for
// bytes the owner did not write, and a local copy is never trusted over that
// check (one that fails it is dropped and the cloud's read instead). Sealing
// is deterministic (docs/FORMAT.md section 4), so these are the only bytes
// the id can have, wherever they were read.
func (f *FS) linkSums(ctx context.Context, m *link.Manifest, ciphers map[string]*chunk.Cipher, local LocalChunks, pr *linkTracker) error {
	ids := m.ChunkIDs()
	if len(ids) > link.MaxChunks { // refused before reading them all
		return fmt.Errorf("link: %d chunks, more than the %d a link holds: link a smaller folder", len(ids), link.MaxChunks)
	}
	plainLen := make(map[string]int, len(ids))
	var total int64
	for _, e := range m.Entries {
		for _, c := range e.Chunks {
			if !c.IsHole() && plainLen[c.ID] == 0 {
				plainLen[c.ID] = c.N
				total += int64(c.N)
			}
		}
	}
	pr.update(func(p *LinkProgress) { p.Chunks, p.Bytes = len(ids), total })
	sums := make([]string, len(ids))
	items := make([]int, len(ids))
	for i := range items {
		items[i] = i
	}
	err := f.forEach(ctx, items, func(ctx context.Context, i int, buf []byte) error {
		id, err := chunk.ParseID(ids[i])
		if err != nil {
			return fmt.Errorf("link: %w", err)
		}
		n, cph := plainLen[ids[i]], ciphers[ids[i]]
		var sealed []byte
		if local != nil {
			if b, ok := local.SealedChunk(buf[chunk.Size:chunk.Size], ids[i], n); ok {
				if _, err := cph.Open(buf[:0], id, b); err == nil {
					sealed = b
				} else {
					local.Bad(ids[i], err)
				}
			}
		}
		fromLocal := sealed != nil
		if sealed == nil {
			if sealed, err = f.c.GetChunkInto(ctx, ids[i], 0, -1, buf[chunk.Size:chunk.Size]); err != nil {
				return fmt.Errorf("link: read chunk %s: %w", ids[i], err)
			}
			if _, err := cph.Open(buf[:0], id, sealed); err != nil {
				return fmt.Errorf("link: chunk %s does not open with this account's keys (%v): %w", ids[i], err, ErrMismatch)
			}
		}
		sums[i] = link.ChunkSum(sealed)
		pr.update(func(p *LinkProgress) {
			p.ChunksDone++
			p.BytesDone += int64(n)
			if fromLocal {
				p.Local++
			}
		})
		return nil
	})
	if err != nil {
		return err
	}
	byID := make(map[string]string, len(ids))
	for i, id := range ids {
		byID[id] = sums[i]
	}
	for ei := range m.Entries {
		for ci := range m.Entries[ei].Chunks {
			c := &m.Entries[ei].Chunks[ci]
			if !c.IsHole() {
				c.Sum = byID[c.ID]
			}
		}
	}
	return nil
}

// LinkOptions are a new link's expiry (zero: none) and password (nil: none),
// and how it is made.
type LinkOptions struct {
	Expires  time.Time
	Password []byte
	// Progress, if set, is told how far the link is as it is made (calls
	// are serialized; the counts only grow).
	Progress func(LinkProgress)
	// Local, if set, is a local copy of sealed chunks (a drive's chunk
	// cache) to read before the cloud.
	Local LocalChunks
}

// LinkProgress is how far the making of a link is: the entries listed so
// far, then the distinct chunks (and their plaintext bytes) read and hashed,
// Local of them from the local copy.
type LinkProgress struct {
	Entries            int
	Chunks, ChunksDone int
	Bytes, BytesDone   int64
	Local              int
}

// LocalChunks holds sealed chunks exactly as the cloud stores them.
type LocalChunks interface {
	// SealedChunk appends to dst the whole sealed chunk id, of n plaintext
	// bytes, if it holds all of it.
	SealedChunk(dst []byte, id string, n int) ([]byte, bool)
	// Bad says that the copy of chunk id failed its check (err): it should
	// be dropped.
	Bad(id string, err error)
}

// linkTracker serializes a link's progress reports.
type linkTracker struct {
	mu sync.Mutex
	fn func(LinkProgress)
	p  LinkProgress
}

func (t *linkTracker) update(change func(*LinkProgress)) {
	if t.fn == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	change(&t.p)
	t.fn(t.p)
}

// CreateLink makes a read-only link to remote path p and returns its URL,
// https://SERVER/s/ID#SECRET. The link is a snapshot of p as it is now.
func (f *FS) CreateLink(ctx context.Context, p string, o LinkOptions, skip func(path string)) (string, error) {
	if f.c.InProcess() {
		return "", errors.New("link: this machine's embedded cloud has no address others can reach: log in to a server (kumo login) to make links")
	}
	m, err := f.LinkManifest(ctx, p, o, skip)
	if err != nil {
		return "", err
	}
	id, err := link.NewID()
	if err != nil {
		return "", err
	}
	req := api.LinkCreateRequest{ID: id.String(), Chunks: m.ChunkIDs()} // at most link.MaxChunks: linkSums
	// The secret is the commitment to the manifest (link.Seal); the key
	// derives from it, and from the password if there is one.
	key := func(s link.Secret) (link.Key, error) { return link.KeyNoPassword(id, s), nil }
	if o.Password != nil {
		pw, err := link.NewPassword()
		if err != nil {
			return "", err
		}
		key = func(s link.Secret) (link.Key, error) {
			k, auth, err := link.KeysWithPassword(id, s, o.Password, pw)
			if err != nil {
				return link.Key{}, err
			}
			h := link.AuthHash(auth[:])
			req.Password = &api.LinkPassword{Salt: pw.Salt, AuthHash: h[:],
				KDF: api.KDFParams{Time: pw.KDF.Time, MemoryKiB: pw.KDF.MemoryKiB, Threads: pw.KDF.Threads}}
			return k, nil
		}
	}
	secret, blob, err := link.Seal(id, m, key)
	if err != nil {
		return "", err
	}
	req.Blob = blob
	if !o.Expires.IsZero() {
		req.Expires = &o.Expires
	}
	if _, err := f.c.CreateLink(ctx, req); err != nil {
		return "", fmt.Errorf("link %s: %w", p, err)
	}
	return link.FormatURL(f.c.BaseURL(), id, secret), nil
}

// Errors of a link download a user can act on.
var (
	ErrLinkGone   = errors.New("the link was revoked, or the address is wrong")
	ErrLinkExpiry = errors.New("the link has expired: ask its owner for a new one")
	ErrLinkSecret = errors.New("the link does not open with its secret: copy the whole address, with the part after # (if it is whole, the link's data on the server was altered)")
	ErrLinkPw     = errors.New("wrong password for this link")
)

// GetLinkOptions configure GetLink.
type GetLinkOptions struct {
	// Password is asked for a password-protected link (nil: such a link fails).
	Password func() ([]byte, error)
	Parallel int // chunks at once; 0: DefaultParallel
	Progress Progress
}

// GetLink downloads what link rawURL shows into dest, with no account: a
// file link to dest (into it, if it is a directory), a folder link to
// dest/NAME (dest/NAME must not exist) or to dest when dest does not exist.
// Every chunk is authenticated under its content key; the tree is written
// under a temporary name and renamed into place only when complete, so a
// failure leaves nothing behind. The client c needs no session.
func GetLink(ctx context.Context, c *client.Client, rawURL, dest string, o GetLinkOptions) error {
	_, id, secret, err := link.ParseURL(rawURL)
	if err != nil {
		return err
	}
	m, err := OpenLink(ctx, c, id, secret, o.Password)
	if err != nil {
		return err
	}
	if dest == "" {
		dest = "."
	}
	target := dest
	if st, err := os.Stat(dest); err == nil && st.IsDir() {
		target = filepath.Join(dest, m.Name)
	}
	if m.Kind == link.KindDir {
		if _, err := os.Lstat(target); err == nil {
			return fmt.Errorf("get: %s exists: remove it or name another destination", target)
		}
	} else if st, err := os.Lstat(target); err == nil && st.IsDir() {
		return fmt.Errorf("get: %s is a directory", target)
	}
	parent := filepath.Dir(target)
	var total int64
	for _, e := range m.Entries {
		total += e.Size
	}
	pr := &progress{fn: o.Progress, total: total}
	lf := &FS{c: c, Parallel: o.Parallel}

	if m.Kind == link.KindFile {
		tmp, err := os.CreateTemp(parent, ".kumo-get-*")
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		tmp.Close()
		defer os.Remove(tmp.Name()) // no-op once renamed
		if err := lf.fetchEntries(ctx, id, m, func(string) string { return tmp.Name() }, pr); err != nil {
			return err
		}
		if err := finishFile(tmp.Name(), m.Entries[0]); err != nil {
			return err
		}
		if fh, err := os.Open(tmp.Name()); err == nil {
			fh.Sync()
			fh.Close()
		}
		if err := os.Rename(tmp.Name(), target); err != nil {
			return fmt.Errorf("get: %w", err)
		}
		return nil
	}

	root, err := os.MkdirTemp(parent, ".kumo-get-*")
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer os.RemoveAll(root) // no-op once renamed
	local := func(rel string) string { return filepath.Join(root, filepath.FromSlash(rel)) }
	for _, e := range m.Entries {
		// The manifest's paths are clean and relative (link.Validate), and a
		// child's parent is a directory entry made here, never a symlink:
		// nothing is written outside root. Checked again, cheaply.
		lp := local(e.Path)
		if !strings.HasPrefix(lp, root+string(filepath.Separator)) {
			return fmt.Errorf("get: the link names %q, outside the destination; refusing", e.Path)
		}
		switch e.Type {
		case link.TypeDir:
			err = os.Mkdir(lp, 0o700)
		case link.TypeFile:
			var fh *os.File
			if fh, err = os.OpenFile(lp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600); err == nil {
				err = fh.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
	}
	if err := lf.fetchEntries(ctx, id, m, local, pr); err != nil {
		return err
	}
	// Symlinks last, then modes and times, deepest first so that a
	// directory's time is set after its children were written.
	for _, e := range m.Entries {
		if e.Type == link.TypeSymlink {
			if err := os.Symlink(e.Target, local(e.Path)); err != nil {
				return fmt.Errorf("get: %w", err)
			}
		}
	}
	for i := len(m.Entries) - 1; i >= 0; i-- {
		e := m.Entries[i]
		switch e.Type {
		case link.TypeFile:
			err = finishFile(local(e.Path), e)
		case link.TypeDir:
			err = finishDir(local(e.Path), e.Mode, e.Mtime)
		}
		if err != nil {
			return err
		}
	}
	if err := finishDir(root, 0o755, m.Created); err != nil {
		return err
	}
	if fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
		unix.Syncfs(fd) // one flush for the whole tree before it appears
		unix.Close(fd)
	}
	if err := os.Rename(root, target); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return nil
}

// OpenLink reads and opens a link's manifest (what GetLink downloads and
// kumo mount URL shows), asking password for a password-protected link. The
// client c needs no session.
func OpenLink(ctx context.Context, c *client.Client, id link.ID, secret link.Secret, password func() ([]byte, error)) (*link.Manifest, error) {
	pub, err := c.PublicLink(ctx, id.String())
	if err != nil {
		return nil, linkErr(err)
	}
	k := link.KeyNoPassword(id, secret)
	blob := pub.Blob
	if pub.Password != nil {
		if password == nil {
			return nil, errors.New("the link is password-protected: give its password")
		}
		pw, err := password()
		if err != nil {
			return nil, err
		}
		p := link.Password{Salt: pub.Password.Salt,
			KDF: keys.KDFParams{Time: pub.Password.KDF.Time, MemoryKiB: pub.Password.KDF.MemoryKiB, Threads: pub.Password.KDF.Threads}}
		var auth [32]byte
		if k, auth, err = link.KeysWithPassword(id, secret, pw, p); err != nil {
			return nil, err
		}
		if blob, err = c.OpenLink(ctx, id.String(), auth[:]); err != nil {
			return nil, linkErr(err)
		}
	}
	m, err := link.Open(k, id, secret, blob)
	if errors.Is(err, link.ErrOpen) {
		return nil, ErrLinkSecret
	}
	return m, err
}

func linkErr(err error) error {
	switch {
	case errors.Is(err, api.ErrLinkNotFound):
		return fmt.Errorf("%w (%v)", ErrLinkGone, err)
	case errors.Is(err, api.ErrLinkExpired):
		return fmt.Errorf("%w (%v)", ErrLinkExpiry, err)
	case errors.Is(err, api.ErrWrongPassword):
		return fmt.Errorf("%w (%v)", ErrLinkPw, err)
	}
	return err
}

// linkBatch is how many chunks GetLink asks for in one request
// (GET /v1/s/ID/chunks?ids=...): 4 full chunks are 16 MiB a worker.
const linkBatch = 4

// fetchEntries downloads every distinct chunk of the manifest's files, a
// few a request, with half as many requests at once as f's parallelism,
// checks each whole chunk against the link (its sealed length and hash,
// then its AEAD under its content key: link.Chunk.Open) before any of its
// bytes is written, and writes it to every place it has in the files
// local(path) names (made beforehand).
func (f *FS) fetchEntries(ctx context.Context, id link.ID, m *link.Manifest, local func(string) string, pr *progress) error {
	type place struct{ e, c int }
	var ids []string
	where := map[string][]place{}
	for ei, e := range m.Entries {
		for ci, c := range e.Chunks {
			if c.IsHole() {
				pr.add(int64(c.N))
				continue
			}
			if where[c.ID] == nil {
				ids = append(ids, c.ID)
			}
			where[c.ID] = append(where[c.ID], place{ei, ci})
		}
	}
	var batches []int // index into ids of each batch's first chunk
	for i := 0; i < len(ids); i += linkBatch {
		batches = append(batches, i)
	}
	lf := &FS{c: f.c, Parallel: max(1, f.parallel()/2)}
	// Each worker's buffer holds one chunk's plaintext, then a request's
	// answer (up to linkBatch framed sealed chunks, 16 MiB): made once per
	// worker, not per request.
	answerCap := linkBatch * (4 + chunk.SealedSize(chunk.Size))
	return lf.forEachBuf(ctx, batches, chunk.Size+answerCap, func(ctx context.Context, first int, buf []byte) error {
		plainBuf, answer := buf[:chunk.Size:chunk.Size], buf[chunk.Size:chunk.Size] // capped: Open may write up to dst's capacity, which must not reach the answer
		bids := ids[first:min(first+linkBatch, len(ids))]
		sizes := make([]int, len(bids))
		for i, cid := range bids {
			p := where[cid][0]
			sizes[i] = chunk.SealedSize(m.Entries[p.e].Chunks[p.c].N)
		}
		sealed, err := f.c.LinkChunks(ctx, id.String(), bids, sizes, answer)
		if err != nil {
			p := where[bids[0]][0]
			return fmt.Errorf("get %s: download chunk %d: %w", m.Entries[p.e].Path, p.c, linkErr(err))
		}
		for i, cid := range bids {
			ps := where[cid]
			e := m.Entries[ps[0].e]
			plain, err := e.Chunks[ps[0].c].Open(plainBuf[:0], sealed[i])
			if err != nil {
				return fmt.Errorf("get %s: chunk %d: %w", e.Path, ps[0].c, err)
			}
			for _, p := range ps {
				if err := writeChunk(local(m.Entries[p.e].Path), int64(p.c)*chunk.Size, plain); err != nil {
					return err
				}
				pr.add(int64(len(plain)))
			}
		}
		return nil
	})
}

func writeChunk(p string, off int64, b []byte) error {
	fh, err := os.OpenFile(p, os.O_WRONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	_, err = fh.WriteAt(b, off)
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return nil
}

// finishFile gives a downloaded file its size (holes at the end), mode and time.
func finishFile(p string, e link.Entry) error {
	if err := os.Truncate(p, e.Size); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := os.Chmod(p, fs.FileMode(e.Mode&0o777)); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := os.Chtimes(p, e.Mtime, e.Mtime); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return nil
}

func finishDir(p string, mode uint32, mtime time.Time) error {
	if err := os.Chmod(p, fs.FileMode(mode&0o777)); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return nil
}
