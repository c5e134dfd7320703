package fs

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// TestMaxFileSizeFits: the largest file the drive accepts can reach the
// cloud. Its whole chunk list (every chunk holding data) travels in one
// create or update op, which must fit in one request with a long name and a
// 64 KiB xattr, and its sealed attributes under api.MaxAttrsSize.
func TestMaxFileSizeFits(t *testing.T) {
	n := maxFileSize / chunk.Size
	if maxFileSize%chunk.Size != 0 || n > 1<<20 {
		t.Fatalf("maxFileSize %d: %d chunks, cannot fit one request", maxFileSize, n)
	}
	k, err := keys.NewMasterKey()
	must(t, err)
	s := meta.NewSealer(keys.Derive(k))
	a := meta.Attrs{Mode: syscall.S_IFREG | 0o644, Size: maxFileSize,
		Xattrs: map[string][]byte{"user." + strings.Repeat("x", 250): make([]byte, xattrMax)}}
	ids := make([]string, n)
	for i := range n {
		var id chunk.ID
		rand.Read(id[:])
		a.Chunks = append(a.Chunks, meta.ChunkRef{ID: id, Len: chunk.Size})
		ids[i] = id.String()
	}
	sealed := s.SealAttrs(7, 1, &a)
	if len(sealed) > api.MaxAttrsSize {
		t.Fatalf("sealed attributes of a %d-byte file: %d bytes, over api.MaxAttrsSize", maxFileSize, len(sealed))
	}
	name := []byte(strings.Repeat("n", meta.MaxNameLen))
	op := api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{
		Parent: 1<<63 - 1, NameMAC: strings.Repeat("f", api.HexIDLen), Name: s.SealName(1<<63-1, 7, meta.KindFile, name),
		ID: 1<<63 - 2, Type: api.TypeFile, Attrs: sealed, Chunks: ids}}
	body, err := json.Marshal(api.BatchRequest{Ops: []api.BatchOp{op}})
	must(t, err)
	if len(body) > api.MaxJSONBody {
		t.Fatalf("create of a %d-byte file: %d bytes, over api.MaxJSONBody %d", maxFileSize, len(body), api.MaxJSONBody)
	}
	t.Logf("largest file %d GiB: sealed attributes %d bytes, request %d bytes (limit %d)", maxFileSize>>30, len(sealed), len(body), api.MaxJSONBody)
}

// TestTruncateEFBIG: truncate, ftruncate, fallocate and write past the
// largest file the drive supports fail with EFBIG and change nothing; the
// largest size itself works and reaches the cloud.
func TestTruncateEFBIG(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	p := m.p("big")
	must(t, os.WriteFile(p, []byte("head"), 0o644))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	size := func() int64 {
		fi, err := os.Stat(p)
		must(t, err)
		return fi.Size()
	}
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"truncate", func() error { return os.Truncate(p, maxFileSize+1) }},
		{"ftruncate", func() error { return f.Truncate(maxFileSize + 1) }},
		{"truncate far", func() error { return os.Truncate(p, 1<<50) }},
		{"fallocate", func() error { return unix.Fallocate(int(f.Fd()), 0, maxFileSize, 1) }},
		{"fallocate keep size", func() error { return unix.Fallocate(int(f.Fd()), fallocKeepSize, maxFileSize-10, 11) }},
		{"write", func() error { _, err := f.WriteAt([]byte("x"), maxFileSize); return err }},
	} {
		if err := tc.do(); !errors.Is(err, syscall.EFBIG) {
			t.Errorf("%s past %d bytes: %v, want EFBIG", tc.name, int64(maxFileSize), err)
		}
		if got := size(); got != 4 {
			t.Fatalf("after a refused %s: size %d, want 4", tc.name, got)
		}
	}
	must(t, f.Truncate(maxFileSize))
	if _, err := f.WriteAt([]byte("tail"), maxFileSize-4); err != nil {
		t.Fatal(err)
	}
	must(t, f.Close())
	m.flush()
	m.unmount()
	m2 := c.mount(t, t.TempDir(), nil) // a fresh cache: what the cloud has
	g, err := os.Open(m2.p("big"))
	must(t, err)
	defer g.Close()
	fi, err := g.Stat()
	must(t, err)
	got := make([]byte, 4)
	_, err = g.ReadAt(got, maxFileSize-4)
	must(t, err)
	if fi.Size() != maxFileSize || string(got) != "tail" {
		t.Fatalf("from the cloud: size %d, last bytes %q; want %d, \"tail\"", fi.Size(), got, int64(maxFileSize))
	}
}

// TestFallocate: fallocate's modes on the drive end where a local
// directory's do (content and size), over data in the cloud, data written
// since, and the file's end; and preallocation reports as allocated.
func TestFallocate(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	local := t.TempDir()
	const mib = 1 << 20
	orig := make([]byte, 9*mib+12345) // three chunks, the last short
	rand.Read(orig)
	for _, dir := range []string{local, m.mnt} {
		must(t, os.WriteFile(filepath.Join(dir, "f"), orig, 0o644))
	}
	m.flush() // the base now holds the data: zeroing must hide it
	patch := bytes.Repeat([]byte{0xab}, 200000)

	open := func(dir string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, "f"), os.O_RDWR, 0)
		must(t, err)
		return f
	}
	compare := func(t *testing.T, when string) {
		t.Helper()
		want, err := os.ReadFile(filepath.Join(local, "f"))
		must(t, err)
		got, err := os.ReadFile(m.p("f"))
		must(t, err)
		if len(got) != len(want) {
			t.Fatalf("%s: size %d, local %d", when, len(got), len(want))
		}
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("%s: differs from the local file at byte %d", when, i)
		}
	}
	steps := []struct {
		name      string
		mode      uint32
		off, len  int64
		writeHere int64 // write patch here first (data in a layer, not the base)
	}{
		{"punch hole across chunks", fallocPunchHole | fallocKeepSize, 100000, 5 * mib, -1},
		{"punch hole in new data", fallocPunchHole | fallocKeepSize, 8*mib + 70000, 1000, 8 * mib},
		{"punch hole past the end", fallocPunchHole | fallocKeepSize, 9 * mib, 4 * mib, -1},
		{"zero range", fallocZeroRange, 6*mib + 5, 300000, -1},
		{"zero range keep size past the end", fallocZeroRange | fallocKeepSize, 9*mib + 10000, mib, -1},
		{"zero range extends", fallocZeroRange, 9*mib + 10000, mib, -1},
		{"allocate extends", 0, 10 * mib, 3 * mib, -1},
		{"allocate keep size", fallocKeepSize, 12 * mib, 4 * mib, -1},
		{"punch hole whole chunk", fallocPunchHole | fallocKeepSize, 4 * mib, 4 * mib, -1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			for _, dir := range []string{local, m.mnt} {
				f := open(dir)
				if s.writeHere >= 0 {
					_, err := f.WriteAt(patch, s.writeHere)
					must(t, err)
				}
				if err := unix.Fallocate(int(f.Fd()), s.mode, s.off, s.len); err != nil {
					t.Fatalf("%s: fallocate(mode %#x, %d, %d): %v", dir, s.mode, s.off, s.len, err)
				}
				must(t, f.Close())
			}
			compare(t, "at once")
		})
	}
	m.flush()
	m.unmount()
	m = c.mount(t, t.TempDir(), nil) // a fresh cache: what the cloud has
	compare(t, "from the cloud")

	// Punch without KEEP_SIZE is refused, as on a local disk.
	for _, dir := range []string{local, m.mnt} {
		f := open(dir)
		if err := unix.Fallocate(int(f.Fd()), fallocPunchHole, 0, 10); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("%s: punch hole without keep size: %v, want EOPNOTSUPP", dir, err)
		}
		f.Close()
	}

	// A hole punched over a whole file leaves nothing stored.
	f := open(m.mnt)
	fi, err := f.Stat()
	must(t, err)
	must(t, unix.Fallocate(int(f.Fd()), fallocPunchHole|fallocKeepSize, 0, fi.Size()))
	must(t, f.Close())
	m.flush()
	var st syscall.Stat_t
	must(t, syscall.Stat(m.p("f"), &st))
	if st.Size != fi.Size() || st.Blocks != 0 {
		t.Errorf("whole file punched and uploaded: size %d, %d blocks; want %d, 0", st.Size, st.Blocks, fi.Size())
	}
}

// TestFallocateKeepSizeBlocks: a KEEP_SIZE preallocation reports as
// allocated (st_blocks) and keeps the size, as on a local disk; a truncate
// below it frees it; it survives a remount.
func TestFallocateKeepSizeBlocks(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	cache := t.TempDir()
	m := c.mount(t, cache, nil)
	local := t.TempDir()
	const mib = 1 << 20
	stat := func(p string) syscall.Stat_t {
		var st syscall.Stat_t
		must(t, syscall.Stat(p, &st))
		return st
	}
	for _, dir := range []string{local, m.mnt} {
		p := filepath.Join(dir, "pre")
		f, err := os.Create(p)
		must(t, err)
		_, err = f.Write(make([]byte, 1000))
		must(t, err)
		must(t, unix.Fallocate(int(f.Fd()), fallocKeepSize, 0, 2*mib))
		must(t, f.Close())
		st := stat(p)
		if st.Size != 1000 || st.Blocks*512 < 2*mib || st.Blocks*512 > 2*mib+64<<10 {
			t.Errorf("%s: after a 2 MiB keep-size fallocate: size %d, %d blocks; want 1000, about %d", dir, st.Size, st.Blocks, 2*mib/512)
		}
		must(t, os.Truncate(p, 500))
		st = stat(p)
		if st.Size != 500 || st.Blocks*512 > 64<<10 {
			t.Errorf("%s: truncated to 500: size %d, %d blocks; want 500, at most %d", dir, st.Size, st.Blocks, 64<<10/512)
		}
		f, err = os.OpenFile(p, os.O_RDWR, 0)
		must(t, err)
		must(t, unix.Fallocate(int(f.Fd()), fallocKeepSize, mib, mib))
		must(t, f.Close())
	}
	m.unmount()
	m = c.mount(t, cache, nil)
	if st := stat(m.p("pre")); st.Size != 500 || st.Blocks*512 < mib {
		t.Errorf("after a remount: size %d, %d blocks; want 500, at least %d", st.Size, st.Blocks, mib/512)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
