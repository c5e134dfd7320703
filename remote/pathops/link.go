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
// carries its content key, so the link opens exactly the chunks it names.
// Special files (fifos, devices) are left out and reported through skip.
func (f *FS) LinkManifest(ctx context.Context, p string, skip func(path string)) (*link.Manifest, error) {
	n, err := f.Resolve(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	name := n.Name
	if name == "" {
		name = "kumo" // the root has no name of its own
	}
	m := &link.Manifest{V: 1, Name: name, Created: time.Now().UTC().Truncate(time.Second)}
	if !n.IsDir() {
		e, ok := f.linkEntry(n, "")
		if !ok || e.Type != link.TypeFile {
			return nil, fmt.Errorf("link %s: only regular files and directories can be linked", n.Path)
		}
		m.Kind, m.Entries = link.KindFile, []link.Entry{e}
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
			e, ok := f.linkEntry(k, kp)
			if !ok {
				if skip != nil {
					skip(k.Path)
				}
				continue
			}
			m.Entries = append(m.Entries, e)
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
	return m, m.Validate()
}

// linkEntry is the manifest entry of node n at rel; false for a type a link
// does not carry.
func (f *FS) linkEntry(n *Node, rel string) (link.Entry, bool) {
	a := n.Attrs
	e := link.Entry{Path: rel, Mode: a.Mode & 0o7777, Mtime: time.Unix(0, a.Mtime).UTC()}
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		e.Type = link.TypeDir
	case syscall.S_IFLNK:
		e.Type, e.Target = link.TypeSymlink, string(a.Target)
	case syscall.S_IFREG:
		e.Type, e.Size = link.TypeFile, int64(a.Size)
		for _, r := range a.Chunks {
			c := link.Chunk{N: int(r.Len)}
			if !r.ID.IsZero() {
				k := f.cipher.ContentKey(r.ID)
				c.ID, c.Key = r.ID.String(), hex.EncodeToString(k[:])
			}
			e.Chunks = append(e.Chunks, c)
		}
	default:
		return e, false
	}
	return e, true
}

// LinkOptions are a new link's expiry (zero: none) and password (nil: none).
type LinkOptions struct {
	Expires  time.Time
	Password []byte
}

// CreateLink makes a read-only link to remote path p and returns its URL,
// https://SERVER/s/ID#SECRET. The link is a snapshot of p as it is now.
func (f *FS) CreateLink(ctx context.Context, p string, o LinkOptions, skip func(path string)) (string, error) {
	if f.c.InProcess() {
		return "", errors.New("link: this machine's embedded cloud has no address others can reach: log in to a server (kumo login) to make links")
	}
	m, err := f.LinkManifest(ctx, p, skip)
	if err != nil {
		return "", err
	}
	id, err := link.NewID()
	if err != nil {
		return "", err
	}
	secret, err := link.NewSecret()
	if err != nil {
		return "", err
	}
	req := api.LinkCreateRequest{ID: id.String(), Chunks: m.ChunkIDs()}
	if len(req.Chunks) > link.MaxChunks {
		return "", fmt.Errorf("link %s: %d chunks, more than the %d a link holds: link a smaller folder", p, len(req.Chunks), link.MaxChunks)
	}
	k := link.KeyNoPassword(id, secret)
	if o.Password != nil {
		pw, err := link.NewPassword()
		if err != nil {
			return "", err
		}
		var auth [32]byte
		if k, auth, err = link.KeysWithPassword(id, secret, o.Password, pw); err != nil {
			return "", err
		}
		h := link.AuthHash(auth[:])
		req.Password = &api.LinkPassword{Salt: pw.Salt, AuthHash: h[:],
			KDF: api.KDFParams{Time: pw.KDF.Time, MemoryKiB: pw.KDF.MemoryKiB, Threads: pw.KDF.Threads}}
	}
	if req.Blob, err = link.Seal(k, id, m); err != nil {
		return "", err
	}
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
	ErrLinkSecret = errors.New("the link does not open with its secret: copy the whole address, with the part after #")
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
	m, err := link.Open(k, id, blob)
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

// fetchEntries downloads every chunk of the manifest's files in parallel
// into the files local(path) names (made beforehand), opening each with its
// content key and checking its length.
func (f *FS) fetchEntries(ctx context.Context, id link.ID, m *link.Manifest, local func(string) string, pr *progress) error {
	type job struct{ e, c int }
	var jobs []job
	for ei, e := range m.Entries {
		for ci, c := range e.Chunks {
			if c.IsHole() {
				pr.add(int64(c.N))
				continue
			}
			jobs = append(jobs, job{ei, ci})
		}
	}
	items := make([]int, len(jobs))
	for i := range items {
		items[i] = i
	}
	return f.forEach(ctx, items, func(ctx context.Context, i int, buf []byte) error {
		j := jobs[i]
		e, c := m.Entries[j.e], m.Entries[j.e].Chunks[j.c]
		var key [32]byte
		if _, err := hex.Decode(key[:], []byte(c.Key)); err != nil {
			return fmt.Errorf("get %s: chunk key: %w", e.Path, err)
		}
		sealed, err := f.c.LinkChunk(ctx, id.String(), c.ID, buf[chunk.Size:chunk.Size])
		if err != nil {
			return fmt.Errorf("get %s: download chunk %d: %w", e.Path, j.c, linkErr(err))
		}
		plain, err := chunk.OpenWithKey(buf[:0], key, sealed)
		if err != nil {
			return fmt.Errorf("get %s: chunk %d: %w", e.Path, j.c, err)
		}
		if len(plain) != c.N {
			return fmt.Errorf("get %s: chunk %d has %d bytes, the link says %d: %w", e.Path, j.c, len(plain), c.N, ErrMismatch)
		}
		fh, err := os.OpenFile(local(e.Path), os.O_WRONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		_, err = fh.WriteAt(plain, int64(j.c)*chunk.Size)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		pr.add(int64(len(plain)))
		return nil
	})
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
