package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// entry is what the suites compare of one name in a tree.
type entry struct {
	typ    string // "file", "dir", "symlink", "fifo", "other"
	mode   uint32 // permission and set-id/sticky bits
	uid    uint32
	gid    uint32
	size   int64 // regular files only
	sum    [32]byte
	target string // symlinks
	nlink  uint64
	group  string // hard-link group: the first name (in walk order) of the same inode
	xattrs map[string]string
	mtime  int64 // ns
}

type snapOpts struct {
	dirNlink bool // compare link counts of directories too
	owners   bool
	mtimes   bool // mtimes of files and symlinks (directories change when scanned by tools)
}

// snapshot walks root and records every name below it.
func snapshot(t testing.TB, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		e := entry{
			mode:  st.Mode & 0o7777,
			uid:   st.Uid,
			gid:   st.Gid,
			nlink: uint64(st.Nlink),
			mtime: st.Mtim.Nano(),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.typ, e.size = "file", st.Size
			sum, err := hashFile(p)
			if err != nil {
				return err
			}
			e.sum = sum
			if g, ok := inodes[st.Ino]; ok {
				e.group = g
			} else {
				inodes[st.Ino] = rel
				e.group = rel
			}
		case unix.S_IFDIR:
			e.typ = "dir"
		case unix.S_IFLNK:
			e.typ = "symlink"
			if e.target, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFIFO:
			e.typ = "fifo"
		default:
			e.typ = "other"
		}
		if e.xattrs, err = userXattrs(p); err != nil {
			return err
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return out
}

func hashFile(p string) ([32]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, fmt.Errorf("read %s: %w", p, err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s, nil
}

// userXattrs returns the user.* extended attributes of p (not following symlinks).
func userXattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, fmt.Errorf("llistxattr %s: %w", p, err)
	}
	var m map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("lgetxattr %s %s: %w", p, name, err)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[name] = string(v[:vn])
	}
	return m, nil
}

// diffSnapshots lists the differences between want and got (empty if equal).
func diffSnapshots(want, got map[string]entry, o snapOpts) []string {
	var diffs []string
	names := map[string]bool{}
	for n := range want {
		names[n] = true
	}
	for n := range got {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		w, okw := want[n]
		g, okg := got[n]
		q := fmt.Sprintf("%q", n)
		switch {
		case !okg:
			diffs = append(diffs, q+": missing")
			continue
		case !okw:
			diffs = append(diffs, q+": unexpected "+g.typ)
			continue
		}
		if w.typ != g.typ {
			diffs = append(diffs, fmt.Sprintf("%s: type %s, want %s", q, g.typ, w.typ))
			continue
		}
		if w.mode != g.mode && w.typ != "symlink" {
			diffs = append(diffs, fmt.Sprintf("%s: mode %#o, want %#o", q, g.mode, w.mode))
		}
		if o.owners && (w.uid != g.uid || w.gid != g.gid) {
			diffs = append(diffs, fmt.Sprintf("%s: owner %d:%d, want %d:%d", q, g.uid, g.gid, w.uid, w.gid))
		}
		if w.typ == "file" {
			if w.size != g.size {
				diffs = append(diffs, fmt.Sprintf("%s: size %d, want %d", q, g.size, w.size))
			} else if w.sum != g.sum {
				diffs = append(diffs, fmt.Sprintf("%s: content differs (size %d)", q, g.size))
			}
			if w.group != g.group {
				diffs = append(diffs, fmt.Sprintf("%s: hard-link group %q, want %q", q, g.group, w.group))
			}
		}
		if (w.typ != "dir" || o.dirNlink) && w.nlink != g.nlink {
			diffs = append(diffs, fmt.Sprintf("%s: nlink %d, want %d", q, g.nlink, w.nlink))
		}
		if w.target != g.target {
			diffs = append(diffs, fmt.Sprintf("%s: symlink target %q, want %q", q, g.target, w.target))
		}
		if fmt.Sprint(w.xattrs) != fmt.Sprint(g.xattrs) {
			diffs = append(diffs, fmt.Sprintf("%s: xattrs %q, want %q", q, g.xattrs, w.xattrs))
		}
		if o.mtimes && w.typ != "dir" && w.mtime != g.mtime {
			diffs = append(diffs, fmt.Sprintf("%s: mtime %d, want %d", q, g.mtime, w.mtime))
		}
	}
	return diffs
}

// requireSameTree fails t when the trees differ, listing the first differences.
func requireSameTree(t testing.TB, what string, want, got map[string]entry, o snapOpts) {
	t.Helper()
	d := diffSnapshots(want, got, o)
	if len(d) == 0 {
		return
	}
	if len(d) > 40 {
		d = append(d[:40], fmt.Sprintf("... and %d more", len(d)-40))
	}
	t.Fatalf("%s: %d differences:\n  %s", what, len(d), strings.Join(d, "\n  "))
}

// pattern returns n deterministic pseudo-random bytes for seed.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	fillPattern(seed, b)
	return b
}

func fillPattern(seed uint64, b []byte) {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	rand.NewChaCha8(key).Read(b)
}

// patternReader streams n deterministic bytes, cheaply, for large files.
type patternReader struct {
	r *rand.ChaCha8
	n int64
}

func newPatternReader(seed uint64, n int64) *patternReader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return &patternReader{r: rand.NewChaCha8(key), n: n}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	n, _ := p.r.Read(b)
	p.n -= int64(n)
	return n, nil
}

// writeFileSync writes data to p and fsyncs it before closing.
func writeFileSync(p string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mustEqualFile fails t unless p holds exactly want.
func mustEqualFile(t testing.TB, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs: got %d bytes, want %d (first difference at %d)", p, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
