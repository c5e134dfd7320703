package linkfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/link"
	"kumo/internal/link/linktest"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/server"
	"kumo/remote/session"
)

// needFUSE skips without FUSE on a laptop, but fails in CI.
func needFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no /dev/fuse: %v", err)
		}
		t.Skip("no /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil && os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no fusermount3 and not root")
		}
		t.Skip("no fusermount3")
	}
}

// logBuf collects a mount's log lines for the test to look at.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is a real server behind a hostile proxy, an account holding the
// source tree, and what a link's reader has: an anonymous client through
// the proxy.
type env struct {
	proxy *hostile.Proxy
	owner *pathops.FS
	oc    *client.Client // the owner's
	anon  *client.Client
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func startEnv(t *testing.T) *env {
	t.Helper()
	srv, err := server.New(server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 30,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), LoginLimit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	c, err := client.New(client.Options{BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Signup(tctx(t), c, hs.URL, "owner@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	p := hostile.Start(t, hs.URL)
	anon, err := client.New(client.Options{BaseURL: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	return &env{proxy: p, owner: pathops.New(c, s.Subkeys()), oc: c, anon: anon}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, b []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// makeTree writes the test tree under dir: a 9 MiB file, a file with a
// hole, a symlink, 200 small files of several modes, an empty file, and two
// files the test reads only late (after a tamper and after a revoke).
func makeTree(t *testing.T, dir string) {
	writeFile(t, filepath.Join(dir, "big.bin"), randBytes(t, 9<<20+12345), 0o644)
	holey := make([]byte, 6<<20) // the first chunk is all zeros: a hole
	copy(holey[5<<20:], randBytes(t, 1000))
	writeFile(t, filepath.Join(dir, "sub", "holey"), holey, 0o600)
	writeFile(t, filepath.Join(dir, "sub", "deep", "empty"), nil, 0o640)
	if err := os.Symlink("../big.bin", filepath.Join(dir, "sub", "ln")); err != nil {
		t.Fatal(err)
	}
	modes := []fs.FileMode{0o644, 0o600, 0o755, 0o444}
	for i := range 200 {
		writeFile(t, filepath.Join(dir, "small", fmt.Sprintf("f%03d.txt", i)), randBytes(t, 1+i*97), modes[i%len(modes)])
	}
	writeFile(t, filepath.Join(dir, "late", "tampered.bin"), randBytes(t, 300<<10), 0o644)
	writeFile(t, filepath.Join(dir, "late", "revoked.bin"), randBytes(t, 200<<10), 0o644)
	if err := os.Chmod(filepath.Join(dir, "small"), 0o750); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	os.Chtimes(filepath.Join(dir, "big.bin"), old, old)
}

// mountLink opens the link's manifest as a reader would and mounts it.
func mountLink(t *testing.T, e *env, rawURL string, logw io.Writer) (*FS, string) {
	t.Helper()
	_, id, secret, err := link.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	m, err := pathops.OpenLink(tctx(t), e.anon, id, secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	uid, gid := Owner()
	f, err := Mount(mnt, Options{Client: e.anon, LinkID: id.String(), Manifest: m, UID: uid, GID: gid,
		Logger: slog.New(slog.NewTextHandler(logw, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			exec.Command("fusermount3", "-uz", mnt).Run()
		}
	})
	return f, mnt
}

// chunkBytes is the sealed bytes the proxy served through the link so far.
func chunkBytes(p *hostile.Proxy) (n int64) {
	for _, x := range p.Exchanges("GET", "/v1/s/*/chunks/*") {
		if x.Upstream != nil {
			n += int64(len(x.Upstream.Body))
		}
	}
	return n
}

func sum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return sha256.Sum256(b)
}

// lsLR is `ls -lR` of dir reduced to mode, size and name (with symlink
// targets) per line, with dir's own path taken out of the headers.
func lsLR(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("ls", "-lR", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -lR %s: %v\n%s", dir, err, out)
	}
	var b strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || f[0] == "total":
		case strings.HasSuffix(line, ":"):
			fmt.Fprintln(&b, strings.TrimPrefix(line, dir))
		case len(f) >= 9:
			size := f[4]
			if f[0][0] == 'd' {
				size = "-" // a directory's size is the file system's business
			}
			fmt.Fprintln(&b, f[0], size, strings.Join(f[8:], " "))
		default:
			t.Fatalf("ls -lR line %q", line)
		}
	}
	return b.String()
}

func TestMountFolderLink(t *testing.T) {
	needFUSE(t)
	e := startEnv(t)
	ctx := tctx(t)
	src := filepath.Join(t.TempDir(), "tree")
	makeTree(t, src)
	if err := e.owner.PutTree(ctx, src, "/tree", nil, nil); err != nil {
		t.Fatal(err)
	}
	u, err := e.owner.CreateLink(ctx, "/tree", pathops.LinkOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	f, mnt := mountLink(t, e, u, logs)

	// A random-offset read first, before anything is in the page cache:
	// right bytes, and the whole chunk it falls in fetched (a chunk is
	// checked whole against its hash in the link), not more.
	big, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	fh, err := os.Open(filepath.Join(mnt, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close() // before the cleanup's unmount, should a check below fail
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := range 40 {
		off := r.Int64N(int64(len(big)))
		n := 1 + r.IntN(200<<10)
		if i == 0 {
			off, n = 5<<20+70000, 4096
		}
		buf := make([]byte, n)
		got, err := fh.ReadAt(buf, off)
		if err != nil && !(errors.Is(err, io.EOF) && off+int64(n) > int64(len(big))) {
			t.Fatalf("pread %d at %d: %v", n, off, err)
		}
		if !bytes.Equal(buf[:got], big[off:off+int64(got)]) {
			t.Fatalf("pread %d at %d: wrong bytes", n, off)
		}
		if i == 0 {
			// The kernel reads ahead on its own (up to 1 MiB here), which
			// stays in the chunk; a random read fetches nothing ahead.
			if b := chunkBytes(e.proxy); b != int64(chunk.MaxSealedSize) {
				t.Fatalf("a 4 KiB pread fetched %d sealed bytes, want one whole chunk (%d)", b, chunk.MaxSealedSize)
			}
		}
	}
	fh.Close()

	// Every file byte exact, modes, times, symlinks.
	before := chunkBytes(e.proxy)
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if strings.HasPrefix(rel, "late") {
			return nil
		}
		m := filepath.Join(mnt, rel)
		sst, _ := os.Lstat(p)
		mst, err := os.Lstat(m)
		if err != nil {
			return err
		}
		if sst.Mode() != mst.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, mst.Mode(), sst.Mode())
		}
		if d.Type().IsRegular() {
			if sum(t, p) != sum(t, m) {
				t.Errorf("%s: content differs", rel)
			}
			if !sst.ModTime().Equal(mst.ModTime()) || sst.Size() != mst.Size() {
				t.Errorf("%s: mtime %v size %d, want %v %d", rel, mst.ModTime(), mst.Size(), sst.ModTime(), sst.Size())
			}
			if st := mst.Sys().(*syscall.Stat_t); st.Uid != uint32(os.Getuid()) {
				t.Errorf("%s: uid %d", rel, st.Uid)
			}
		}
		if d.Type()&fs.ModeSymlink != 0 {
			st, _ := os.Readlink(p)
			mt, err := os.Readlink(m)
			if err != nil || st != mt {
				t.Errorf("%s: symlink to %q (%v), want %q", rel, mt, err, st)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cmp", filepath.Join(src, "big.bin"), filepath.Join(mnt, "big.bin")).CombinedOutput(); err != nil {
		t.Fatalf("cmp: %v %s", err, out)
	}
	// The sequential reads fetched each chunk about once (the pread pass
	// fetched some of big.bin before).
	var sealed int64
	for _, en := range f.m.Entries {
		if !strings.HasPrefix(en.Path, "late") {
			for _, c := range en.Chunks {
				if !c.IsHole() {
					sealed += int64(chunk.SealedSize(c.N))
				}
			}
		}
	}
	if got := chunkBytes(e.proxy) - before; got > sealed*11/10 {
		t.Errorf("reading every file once fetched %d sealed bytes, the files hold %d", got, sealed)
	}
	t.Logf("sealed bytes %d, fetched by the sequential pass %d, by the preads %d", sealed, chunkBytes(e.proxy)-before, before)
	if f.cache.bytes() > DefaultCacheBytes {
		t.Errorf("cache holds %d bytes, more than its %d", f.cache.bytes(), DefaultCacheBytes)
	}

	// ls -lR shows the same names, modes and sizes (late/ aside: not read).
	if got, want := lsLR(t, mnt), lsLR(t, src); got != want {
		t.Errorf("ls -lR differs:\n--- mount\n%s\n--- source\n%s", got, want)
	}

	// Writes of every kind: EROFS, and nothing changes.
	for what, err := range map[string]error{
		"create":   os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o644),
		"open rw":  func() error { _, err := os.OpenFile(filepath.Join(mnt, "big.bin"), os.O_RDWR, 0); return err }(),
		"truncate": os.Truncate(filepath.Join(mnt, "big.bin"), 0),
		"mkdir":    os.Mkdir(filepath.Join(mnt, "d"), 0o755),
		"remove":   os.Remove(filepath.Join(mnt, "small", "f000.txt")),
		"rmdir":    os.Remove(filepath.Join(mnt, "sub", "deep")),
		"rename":   os.Rename(filepath.Join(mnt, "big.bin"), filepath.Join(mnt, "b2")),
		"chmod":    os.Chmod(filepath.Join(mnt, "big.bin"), 0o777),
		"symlink":  os.Symlink("x", filepath.Join(mnt, "ln2")),
		"link":     os.Link(filepath.Join(mnt, "big.bin"), filepath.Join(mnt, "hard")),
		"setxattr": syscall.Setxattr(filepath.Join(mnt, "big.bin"), "user.x", []byte("1"), 0),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", what, err)
		}
	}

	// A chunk changed on the way: that read is EIO, logged; nothing wrong
	// is cached: the honest answer reads right afterwards.
	e.proxy.On("GET", "/v1/s/*/chunks/*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		resp := next(req)
		if resp.Status/100 == 2 && len(resp.Body) > 100 {
			resp.Body = bytes.Clone(resp.Body)
			resp.Body[100] ^= 1
		}
		return resp
	})
	if _, err := os.ReadFile(filepath.Join(mnt, "late", "tampered.bin")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a tampered chunk: %v, want EIO", err)
	}
	if !strings.Contains(logs.String(), "failed its check against the link") {
		t.Errorf("no log line for the tampered chunk:\n%s", logs.String())
	}
	e.proxy.Honest()
	if sum(t, filepath.Join(mnt, "late", "tampered.bin")) != sum(t, filepath.Join(src, "late", "tampered.bin")) {
		t.Fatal("tampered.bin differs once the proxy is honest")
	}

	// Revoked while mounted: reads of data not read yet are EIO, said once
	// in the log; the mount stays up.
	_, id, _, _ := link.ParseURL(u)
	if err := e.oc.DeleteLink(ctx, id.String()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := os.ReadFile(filepath.Join(mnt, "late", "revoked.bin")); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read after revoke: %v, want EIO", err)
		}
	}
	if n := strings.Count(logs.String(), "no longer serves this link"); n != 1 {
		t.Errorf("the revoked link is said %d times in the log, want once:\n%s", n, logs.String())
	}
	if _, err := os.ReadDir(filepath.Join(mnt, "small")); err != nil {
		t.Fatalf("the mount after a revoke: %v", err)
	}
}

func TestMountFileLink(t *testing.T) {
	needFUSE(t)
	e := startEnv(t)
	ctx := tctx(t)
	src := t.TempDir()
	data := randBytes(t, 4<<20+1) // two chunks, the second 1 byte
	writeFile(t, filepath.Join(src, "one.bin"), data, 0o640)
	if err := e.owner.PutTree(ctx, filepath.Join(src, "one.bin"), "/one.bin", nil, nil); err != nil {
		t.Fatal(err)
	}
	u, err := e.owner.CreateLink(ctx, "/one.bin", pathops.LinkOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, mnt := mountLink(t, e, u, io.Discard)
	ents, err := os.ReadDir(mnt)
	if err != nil || len(ents) != 1 || ents[0].Name() != "one.bin" {
		t.Fatalf("a file link's mount lists %v (%v)", ents, err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "one.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("one.bin: %d bytes, %v", len(got), err)
	}
	if st, _ := os.Stat(filepath.Join(mnt, "one.bin")); st.Mode() != 0o640 {
		t.Fatalf("mode %v", st.Mode())
	}
}

// TestChunkCacheBound: the cache keeps at most its budget of bytes (and
// always the newest chunk), least recently used out first, and a failed
// fetch is not cached.
func TestChunkCacheBound(t *testing.T) {
	c := newChunkCache(30)
	key := func(i int) chunkKey { return chunkKey{fmt.Sprint(i), "k", "s"} }
	for i := range 5 {
		if _, _, ok := c.getOrClaim(key(i)); !ok {
			t.Fatal("not claimed")
		}
		c.finish(key(i), bytes.Repeat([]byte{byte(i)}, 10))
	}
	if c.bytes() != 30 {
		t.Fatalf("%d bytes", c.bytes())
	}
	if b, _, _ := c.getOrClaim(key(4)); len(b) != 10 || b[0] != 4 {
		t.Fatalf("newest chunk: %v", b)
	}
	k0 := key(0)
	if _, _, ok := c.getOrClaim(k0); !ok {
		t.Fatal("the oldest chunk was kept")
	}
	if c.claim(k0) {
		t.Fatal("claimed twice")
	}
	_, wait, _ := c.getOrClaim(k0)
	c.finish(k0, nil)
	<-wait
	if c.bytes() != 30 || !c.claim(k0) {
		t.Fatal("a failed fetch was cached or stays claimed")
	}
	c.finish(k0, make([]byte, 100)) // bigger than the budget: kept alone
	if c.bytes() != 100 {
		t.Fatalf("%d bytes after a big chunk", c.bytes())
	}
}

// TestMountForgeries: another holder of the link, with the server's help,
// serves a manifest sealed under the link's key (refused when the link is
// opened, so nothing mounts), or a chunk sealed under its content key with
// other bytes (every segment authenticates): that read is EIO, logged, and
// nothing of it is cached or shown.
func TestMountForgeries(t *testing.T) {
	needFUSE(t)
	e := startEnv(t)
	ctx := tctx(t)
	src := t.TempDir()
	data := randBytes(t, 6<<20)
	writeFile(t, filepath.Join(src, "tree", "f.bin"), data, 0o644)
	if err := e.owner.PutTree(ctx, filepath.Join(src, "tree"), "/tree", nil, nil); err != nil {
		t.Fatal(err)
	}
	u, err := e.owner.CreateLink(ctx, "/tree", pathops.LinkOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, id, secret, _ := link.ParseURL(u)

	e.proxy.On("GET", "/v1/s/*", hostile.EditJSON(func(pub *api.LinkPublic) {
		forged, err := linktest.Reseal(u, pub.Blob, func(m *link.Manifest) { m.Entries[0].Mode = 0o4755 })
		if err != nil {
			t.Error(err)
		}
		pub.Blob = forged
	}))
	if _, err := pathops.OpenLink(ctx, e.anon, id, secret, nil); !errors.Is(err, pathops.ErrLinkSecret) {
		t.Fatalf("forged manifest: %v, want %v", err, pathops.ErrLinkSecret)
	}
	e.proxy.Honest()

	logs := &logBuf{}
	f, mnt := mountLink(t, e, u, logs)
	c := f.m.Entries[0].Chunks[1]
	forged := linktest.Forge(c)
	e.proxy.On("GET", "/v1/s/*/chunks/"+c.ID, func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		resp := next(req)
		if resp.Status == 200 {
			resp.Body = forged
		}
		return resp
	})
	fh, err := os.Open(filepath.Join(mnt, "f.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	buf := make([]byte, 4096)
	if _, err := fh.ReadAt(buf, 5<<20); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a forged chunk: %v, want EIO", err)
	}
	if !strings.Contains(logs.String(), "failed its check against the link") {
		t.Errorf("no log line for the forged chunk:\n%s", logs.String())
	}
	if f.cache.bytes() != 0 {
		t.Fatalf("the cache holds %d bytes after only a forged chunk was fetched", f.cache.bytes())
	}
	// The first chunk is honest and reads; the forged one stays EIO.
	if _, err := fh.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
		t.Fatalf("the honest chunk: %v", err)
	}
	if _, err := fh.ReadAt(buf, 4<<20); !errors.Is(err, syscall.EIO) {
		t.Fatalf("second read of the forged chunk: %v, want EIO", err)
	}
	e.proxy.Honest()
	if _, err := fh.ReadAt(buf, 5<<20); err != nil || !bytes.Equal(buf, data[5<<20:5<<20+4096]) {
		t.Fatalf("once the server is honest: %v", err)
	}
}
