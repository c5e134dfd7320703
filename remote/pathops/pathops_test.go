package pathops_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kumo/internal/chunk"
	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/server"
	"kumo/remote/session"
)

type env struct {
	srv  *server.Server
	url  string
	data string
	stop func()
}

func startServer(t *testing.T) *env { return startServerQuota(t, 1<<30) }

func startServerQuota(t *testing.T, quota int64) *env {
	t.Helper()
	data := t.TempDir()
	srv, err := server.New(server.Config{
		DataDir:      data,
		DefaultQuota: quota,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		LoginLimit:   1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	e := &env{srv: srv, url: hs.URL, data: data}
	stopped := false
	e.stop = func() {
		if !stopped {
			stopped = true
			hs.Close()
			if err := srv.Close(); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(e.stop)
	return e
}

func tctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func account(t *testing.T, e *env, email string) (*pathops.FS, *client.Client) {
	t.Helper()
	c, err := client.New(client.Options{BaseURL: e.url})
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Signup(tctx(t), c, e.url, email, []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	return pathops.New(c, s.Subkeys()), c
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestPutGetRoundTrip(t *testing.T) {
	e := startServer(t)
	f, _ := account(t, e, "rt@example.com")
	dir := t.TempDir()
	sizes := []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 4<<20 - 1, 4 << 20, 4<<20 + 1, 9 << 20}
	for _, n := range sizes {
		name := filepath.Join(dir, "in", "f"+itoa(n))
		data := randBytes(t, n)
		writeFile(t, name, data)
		mt := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
		if err := os.Chtimes(name, mt, mt); err != nil {
			t.Fatal(err)
		}
		var last, total int64
		node, err := f.PutFile(tctx(t), name, "/a/b/f"+itoa(n), func(d, tot int64) { last, total = d, tot })
		if err != nil {
			t.Fatalf("put %d: %v", n, err)
		}
		if node.Size() != int64(n) || node.Mode() != 0o640 || node.IsDir() {
			t.Fatalf("put %d: node size %d mode %v", n, node.Size(), node.Mode())
		}
		if n > 0 && (last != int64(n) || total != int64(n)) {
			t.Fatalf("put %d: progress ended at %d/%d", n, last, total)
		}
		out := filepath.Join(dir, "out", "g"+itoa(n))
		os.MkdirAll(filepath.Dir(out), 0o755)
		if err := f.GetFile(tctx(t), "a/b/f"+itoa(n), out, nil); err != nil {
			t.Fatalf("get %d: %v", n, err)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("get %d: %d bytes differ (%v)", n, len(got), err)
		}
		st, _ := os.Stat(out)
		if st.Mode().Perm() != 0o640 || !st.ModTime().Equal(mt) {
			t.Fatalf("get %d: mode %v mtime %v", n, st.Mode(), st.ModTime())
		}
	}
	ls, err := f.List(tctx(t), "/a/b")
	if err != nil || len(ls) != len(sizes) {
		t.Fatalf("list: %d entries, %v", len(ls), err)
	}
	for i := 1; i < len(ls); i++ {
		if ls[i-1].Name >= ls[i].Name {
			t.Fatal("list not sorted")
		}
	}
	root, err := f.List(tctx(t), "/")
	if err != nil || len(root) != 1 || root[0].Name != "a" || !root[0].IsDir() || root[0].Mode() != fs.ModeDir|0o755 {
		t.Fatalf("root list %v %v", root, err)
	}
	// No temp files are left in the download directory.
	ents, _ := os.ReadDir(filepath.Join(dir, "out"))
	if len(ents) != len(sizes) {
		t.Fatalf("%d files in out", len(ents))
	}
	// Putting into an existing directory keeps the local name; overwriting replaces.
	writeFile(t, filepath.Join(dir, "x.txt"), []byte("one"))
	if _, err := f.PutFile(tctx(t), filepath.Join(dir, "x.txt"), "/a", nil); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "x.txt"), []byte("two!"))
	if _, err := f.PutFile(tctx(t), filepath.Join(dir, "x.txt"), "/a/x.txt", nil); err != nil {
		t.Fatal(err)
	}
	n, err := f.Resolve(tctx(t), "/a/x.txt")
	if err != nil || n.Size() != 4 {
		t.Fatalf("overwrite: %v %v", n, err)
	}
	if err := f.GetFile(tctx(t), "/a", filepath.Join(dir, "y"), nil); !errors.Is(err, api.ErrIsDir) {
		t.Fatalf("get of a dir: %v", err)
	}
	if _, err := f.Resolve(tctx(t), "/a/nope"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("resolve missing: %v", err)
	}
	if _, err := f.Resolve(tctx(t), "/a/x.txt/z"); !errors.Is(err, api.ErrNotDir) {
		t.Fatalf("resolve under a file: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestDedupAndHoles(t *testing.T) {
	e := startServer(t)
	f, c := account(t, e, "dedup@example.com")
	dir := t.TempDir()
	// 3 chunks: random, zeros (a hole), the same random again.
	a := randBytes(t, chunk.Size)
	data := append(append(append([]byte{}, a...), make([]byte, chunk.Size)...), a...)
	writeFile(t, filepath.Join(dir, "f"), data)
	node, err := f.PutFile(tctx(t), filepath.Join(dir, "f"), "/f", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Attrs.Chunks) != 3 || !node.Attrs.Chunks[1].ID.IsZero() || node.Attrs.Chunks[0].ID != node.Attrs.Chunks[2].ID {
		t.Fatalf("chunks %+v", node.Attrs.Chunks)
	}
	acct1, err := c.Account(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	// One distinct chunk, plus the metadata of the root and /f (sealed
	// attributes, names, name MACs: a few hundred bytes).
	if sealed := int64(chunk.SealedSize(chunk.Size)); acct1.QuotaUsed < sealed || acct1.QuotaUsed > sealed+4096 {
		t.Fatalf("one distinct chunk stored, usage %d", acct1.QuotaUsed)
	}
	// The same file again, under another name: nothing new is stored.
	if _, err := f.PutFile(tctx(t), filepath.Join(dir, "f"), "/g", nil); err != nil {
		t.Fatal(err)
	}
	// Only /g's metadata (its sealed attributes, name and name MAC) is new.
	acct2, err := c.Account(tctx(t))
	if grew := acct2.QuotaUsed - acct1.QuotaUsed; err != nil || grew <= 0 || grew > 4096 {
		t.Fatalf("usage %d -> %d (%v)", acct1.QuotaUsed, acct2.QuotaUsed, err)
	}
	out := filepath.Join(dir, "out")
	if err := f.GetFile(tctx(t), "/g", out, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("dedup/hole file differs")
	}
}

func TestTreeAndSymlinks(t *testing.T) {
	e := startServer(t)
	f, _ := account(t, e, "tree@example.com")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("alpha"))
	writeFile(t, filepath.Join(src, "sub", "deep", "b.bin"), randBytes(t, 100000))
	if err := os.Symlink("../a.txt", filepath.Join(src, "sub", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := f.PutTree(tctx(t), src, "/backup", nil, nil); err != nil {
		t.Fatal(err)
	}
	l, err := f.Resolve(tctx(t), "/backup/sub/link")
	if err != nil || l.Mode()&fs.ModeSymlink == 0 || string(l.Attrs.Target) != "../a.txt" {
		t.Fatalf("symlink %+v %v", l, err)
	}
	dst := t.TempDir()
	if err := f.GetTree(tctx(t), "/backup", dst, nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dst, "backup")
	for _, p := range []string{"a.txt", "sub/deep/b.bin"} {
		want, _ := os.ReadFile(filepath.Join(src, p))
		got, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s differs: %v", p, err)
		}
	}
	if tg, err := os.Readlink(filepath.Join(out, "sub", "link")); err != nil || tg != "../a.txt" {
		t.Fatalf("link %q %v", tg, err)
	}
	if st, err := os.Stat(filepath.Join(out, "empty")); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("empty dir %v %v", st, err)
	}
}

// Two accounts on one server see nothing of each other.
func TestAccountsIsolated(t *testing.T) {
	e := startServer(t)
	fa, _ := account(t, e, "a@example.com")
	fb, cb := account(t, e, "b@example.com")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "secret"), []byte("a's data"))
	na, err := fa.PutFile(tctx(t), filepath.Join(dir, "secret"), "/secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := fb.List(tctx(t), "/")
	if err != nil || len(ls) != 0 {
		t.Fatalf("b sees %d entries in its root (%v)", len(ls), err)
	}
	if _, err := fb.Resolve(tctx(t), "/secret"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("b resolves a's file: %v", err)
	}
	if _, err := cb.GetNode(tctx(t), na.ID()); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("b gets a's node: %v", err)
	}
	id := na.Attrs.Chunks[0].ID.String()
	if _, err := cb.GetChunk(tctx(t), id, 0, -1); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("b reads a's chunk: %v", err)
	}
	if have, err := cb.HaveChunks(tctx(t), []string{id}); err != nil || have[0] {
		t.Fatalf("b probes a's chunk: %v %v", have, err)
	}
	// b storing the same id does not touch a's chunk.
	if err := cb.PutChunk(tctx(t), id, []byte("garbage from b")); err != nil && !errors.Is(err, api.ErrBadRequest) {
		t.Fatalf("b put: %v", err)
	}
	if err := fa.GetFile(tctx(t), "/secret", filepath.Join(dir, "back"), nil); err != nil {
		t.Fatalf("a's file after b's put: %v", err)
	}
}

// Tampering on the server is detected, never returned as data.
func TestTamperDetected(t *testing.T) {
	e := startServer(t)
	f, c := account(t, e, "tamper@example.com")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "x"), randBytes(t, 1000))
	writeFile(t, filepath.Join(dir, "y"), randBytes(t, 2000))
	nx, err := f.PutFile(tctx(t), filepath.Join(dir, "x"), "/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	ny, err := f.PutFile(tctx(t), filepath.Join(dir, "y"), "/y", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Swap y's attributes into x: bound to the node id, so refused.
	if _, err := c.Update(tctx(t), nx.ID(), api.UpdateRequest{Version: nx.Node.Version, Attrs: ny.Node.Attrs, Chunks: ny.Node.Chunks}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Resolve(tctx(t), "/x"); !errors.Is(err, meta.ErrAuth) {
		t.Fatalf("swapped attrs: %v", err)
	}
	// A chunk list on the server that disagrees with the sealed one is refused.
	cur, _ := c.GetNode(tctx(t), ny.ID())
	if _, err := c.Update(tctx(t), ny.ID(), api.UpdateRequest{Version: cur.Version, Attrs: cur.Attrs, Chunks: []string{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Resolve(tctx(t), "/y"); !errors.Is(err, pathops.ErrMismatch) {
		t.Fatalf("chunk list mismatch: %v", err)
	}
}

// The canary test: nothing a user names or writes reaches the server's disk
// in any recognizable form.
func TestCanaryNeverOnServerDisk(t *testing.T) {
	e := startServer(t)
	f, _ := account(t, e, "canary@example.com")
	canary := "CANARY" + hex.EncodeToString(randBytes(t, 12))
	dir := t.TempDir()
	local := filepath.Join(dir, "dir-"+canary)
	content := bytes.Repeat([]byte("data "+canary+" "), 1000)
	fileName := "file-" + canary + ".txt"
	writeFile(t, filepath.Join(local, fileName), content)
	writeFile(t, filepath.Join(local, "small-"+canary), []byte(canary))
	writeFile(t, filepath.Join(local, "big"), append(randBytes(t, 5<<20), []byte(canary)...))
	if err := os.Symlink("/target/"+canary, filepath.Join(local, "link-"+canary)); err != nil {
		t.Fatal(err)
	}
	xattrOnDisk := unix.Setxattr(filepath.Join(local, fileName), "user."+canary, []byte("v-"+canary), 0) == nil
	if err := f.PutTree(tctx(t), local, "/", nil, nil); err != nil {
		t.Fatal(err)
	}
	if !xattrOnDisk {
		t.Log("local filesystem has no user xattrs; sealing one through WriteNode")
	}
	// Also through attributes directly: xattr, symlink target and mode.
	if _, err := f.WriteNode(tctx(t), "/x-"+canary, &meta.Attrs{
		Mode: syscall.S_IFREG | 0o600, Xattrs: map[string][]byte{"user." + canary: []byte("v-" + canary)},
	}); err != nil {
		t.Fatal(err)
	}
	n, err := f.Resolve(tctx(t), "/dir-"+canary+"/"+fileName)
	if err != nil {
		t.Fatal(err)
	}
	if xattrOnDisk && string(n.Attrs.Xattrs["user."+canary]) != "v-"+canary {
		t.Fatalf("xattr not kept: %v", n.Attrs.Xattrs)
	}
	// Flush everything to disk and scan every file the server wrote.
	e.stop()
	needles := canaryForms(canary)
	needles = append(needles, fileName, "dir-"+canary)
	scanned, emailSeen := 0, false
	err = filepath.WalkDir(e.data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		scanned += len(b)
		emailSeen = emailSeen || bytes.Contains(b, []byte("canary@example.com"))
		low := bytes.ToLower(b)
		for _, nd := range needles {
			if bytes.Contains(b, []byte(nd)) || bytes.Contains(low, bytes.ToLower([]byte(nd))) && isHex(nd) {
				t.Errorf("%s holds %q", p, nd)
			}
		}
		if strings.Contains(p, canary) {
			t.Errorf("file name %s holds the canary", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Positive control: the scan does see what the server stores in clear.
	if !emailSeen {
		t.Fatal("the account e-mail was not found on the server's disk either: the scan misses data")
	}
	if scanned < 5<<20 {
		t.Fatalf("scanned only %d bytes of server data: wrong directory?", scanned)
	}
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// canaryForms returns the canary as raw text, hex, and base64 (standard and
// URL alphabets, at each of the three byte alignments inside a longer value).
func canaryForms(c string) []string {
	out := []string{c, hex.EncodeToString([]byte(c))}
	for s := 0; s < 3; s++ {
		b := append(make([]byte, s), c...)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			e := enc.EncodeToString(b)
			first := (s + 2) / 3 * 4
			last := (s + len(c)) / 3 * 4
			out = append(out, e[first:last])
		}
	}
	return out
}

func TestQuotaExceeded(t *testing.T) {
	e := startServerQuota(t, 6<<20)
	f, c := account(t, e, "quota@example.com")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "small"), randBytes(t, 1<<20))
	if _, err := f.PutFile(tctx(t), filepath.Join(dir, "small"), "/small", nil); err != nil {
		t.Fatal(err)
	}
	before, err := c.Account(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "big"), randBytes(t, 12<<20))
	if _, err := f.PutFile(tctx(t), filepath.Join(dir, "big"), "/big", nil); !errors.Is(err, api.ErrQuota) {
		t.Fatalf("put over quota: %v", err)
	}
	if _, err := f.Resolve(tctx(t), "/big"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("node of a refused upload: %v", err)
	}
	if err := f.GetFile(tctx(t), "/small", filepath.Join(dir, "back"), nil); err != nil {
		t.Fatalf("earlier file after a refused upload: %v", err)
	}
	after, _ := c.Account(tctx(t))
	if after.QuotaUsed > after.QuotaLimit || after.QuotaUsed < before.QuotaUsed {
		t.Fatalf("usage %d -> %d of %d", before.QuotaUsed, after.QuotaUsed, after.QuotaLimit)
	}
}

// The CLI's path walk refuses a name the server pointed at another file: an
// error, and not a byte of the other file written out.
func TestEntrySwapRefused(t *testing.T) {
	e := startServer(t)
	p := hostile.Start(t, e.url)
	c, err := client.New(client.Options{BaseURL: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Signup(tctx(t), c, p.URL, "swap@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	f := pathops.New(c, s.Subkeys())
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "notes.txt"), []byte("my notes\n"))
	writeFile(t, filepath.Join(dir, "secret.txt"), []byte("the secret\n"))
	notes, err := f.PutFile(tctx(t), filepath.Join(dir, "notes.txt"), "/notes.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := f.PutFile(tctx(t), filepath.Join(dir, "secret.txt"), "/secret.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	p.PointEntry(notes.NameMAC, secret.Node)
	out := filepath.Join(dir, "out")
	err = pathops.New(c, s.Subkeys()).GetFile(tctx(t), "/notes.txt", out, nil)
	if !errors.Is(err, meta.ErrAuth) {
		t.Fatalf("get of a swapped entry: %v, want an authentication error", err)
	}
	if b, _ := os.ReadFile(out); bytes.Contains(b, []byte("secret")) {
		t.Fatal("the other file's content was written out")
	}
}
