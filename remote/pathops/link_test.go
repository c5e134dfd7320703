package pathops_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/hostile"
	"kumo/internal/link"
	"kumo/internal/link/linktest"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
)

// anon is a client with no account, as a link's reader has.
func anon(t *testing.T, e *env) *client.Client {
	c, err := client.New(client.Options{BaseURL: e.url})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dirEmpty fails unless dir holds nothing (a failed get leaves nothing behind).
func dirEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 0 {
		t.Fatalf("%s after a failed get: %v %v", dir, ents, err)
	}
}

func TestLinkFileAndTree(t *testing.T) {
	e := startServer(t)
	f, c := account(t, e, "linker@example.com")
	ctx := tctx(t)
	src := t.TempDir()
	big := randBytes(t, 9<<20+3)
	holey := make([]byte, 5<<20) // a zero chunk is stored as a hole
	copy(holey[4<<20:], "tail")
	writeFile(t, filepath.Join(src, "tree", "big.bin"), big)
	writeFile(t, filepath.Join(src, "tree", "sub", "holey"), holey)
	writeFile(t, filepath.Join(src, "tree", "sub", "deep", "empty"), nil)
	os.Symlink("../big.bin", filepath.Join(src, "tree", "sub", "ln"))
	if err := f.PutTree(ctx, filepath.Join(src, "tree"), "/tree", nil, nil); err != nil {
		t.Fatal(err)
	}

	fileURL, err := f.CreateLink(ctx, "/tree/big.bin", pathops.LinkOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(fileURL, e.url+"/s/") {
		t.Fatalf("url %s", fileURL)
	}
	dst := t.TempDir()
	var last int64
	if err := pathops.GetLink(ctx, anon(t, e), fileURL, dst, pathops.GetLinkOptions{Progress: func(d, tot int64) { last = d }}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "big.bin")); !bytes.Equal(got, big) || last != int64(len(big)) {
		t.Fatalf("file link: %d bytes, progress %d", len(got), last)
	}

	dirURL, err := f.CreateLink(ctx, "/tree", pathops.LinkOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pathops.GetLink(ctx, anon(t, e), dirURL, dst, pathops.GetLinkOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "tree", "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("tree big.bin differs")
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "tree", "sub", "holey")); !bytes.Equal(got, holey) {
		t.Fatal("tree holey differs")
	}
	if st, err := os.Stat(filepath.Join(dst, "tree", "sub", "deep", "empty")); err != nil || st.Size() != 0 || st.Mode().Perm() != 0o640 {
		t.Fatalf("empty file: %v %v", st, err)
	}
	if tg, err := os.Readlink(filepath.Join(dst, "tree", "sub", "ln")); err != nil || tg != "../big.bin" {
		t.Fatalf("symlink: %q %v", tg, err)
	}
	// The folder exists now: a second get refuses to merge into it.
	if err := pathops.GetLink(ctx, anon(t, e), dirURL, dst, pathops.GetLinkOptions{}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second get: %v", err)
	}

	// A wrong secret (another link's), a revoked link: clear errors, nothing written.
	empty := t.TempDir()
	wrong := dirURL[:strings.Index(dirURL, "#")] + fileURL[strings.Index(fileURL, "#"):]
	if err := pathops.GetLink(ctx, anon(t, e), wrong, empty, pathops.GetLinkOptions{}); !errors.Is(err, pathops.ErrLinkSecret) {
		t.Fatalf("wrong secret: %v", err)
	}
	dirEmpty(t, empty)
	links, err := c.Links(ctx)
	if err != nil || len(links) != 2 {
		t.Fatalf("links: %v %v", links, err)
	}
	_, id, _, _ := link.ParseURL(dirURL)
	if err := c.DeleteLink(ctx, id.String()); err != nil {
		t.Fatal(err)
	}
	if err := pathops.GetLink(ctx, anon(t, e), dirURL, empty, pathops.GetLinkOptions{}); !errors.Is(err, pathops.ErrLinkGone) {
		t.Fatalf("revoked: %v", err)
	}
	dirEmpty(t, empty)
}

func TestLinkPasswordAndExpiry(t *testing.T) {
	e := startServer(t)
	f, _ := account(t, e, "pwlink@example.com")
	ctx := tctx(t)
	src := filepath.Join(t.TempDir(), "note.txt")
	writeFile(t, src, []byte("secret note"))
	if _, err := f.PutFile(ctx, src, "/note.txt", nil); err != nil {
		t.Fatal(err)
	}
	u, err := f.CreateLink(ctx, "/note.txt", pathops.LinkOptions{Password: []byte("hunter2")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	pw := func(p string) pathops.GetLinkOptions {
		return pathops.GetLinkOptions{Password: func() ([]byte, error) { return []byte(p), nil }}
	}
	if err := pathops.GetLink(ctx, anon(t, e), u, dst, pw("wrong")); !errors.Is(err, pathops.ErrLinkPw) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := pathops.GetLink(ctx, anon(t, e), u, dst, pathops.GetLinkOptions{}); err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("no password: %v", err)
	}
	dirEmpty(t, dst)
	if err := pathops.GetLink(ctx, anon(t, e), u, dst, pw("hunter2")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "note.txt")); string(b) != "secret note" {
		t.Fatalf("got %q", b)
	}

	exp := time.Now().Add(time.Second)
	u2, err := f.CreateLink(ctx, "/note.txt", pathops.LinkOptions{Expires: exp}, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(exp) + 50*time.Millisecond)
	empty := t.TempDir()
	if err := pathops.GetLink(ctx, anon(t, e), u2, empty, pathops.GetLinkOptions{}); !errors.Is(err, pathops.ErrLinkExpiry) {
		t.Fatalf("expired: %v", err)
	}
	dirEmpty(t, empty)
}

// TestLinkForgeries: another holder of a link, with the server's help, can
// seal another manifest under the link's key and other bytes under a
// chunk's content key (both are in every holder's hands). GetLink refuses
// both and writes nothing: the secret commits to the manifest, the
// manifest to each chunk's sealed bytes.
func TestLinkForgeries(t *testing.T) {
	e := startServer(t)
	f, _ := account(t, e, "forged@example.com")
	ctx := tctx(t)
	src := t.TempDir()
	big := randBytes(t, 9<<20+3)
	writeFile(t, filepath.Join(src, "tree", "big.bin"), big)
	writeFile(t, filepath.Join(src, "tree", "small.txt"), []byte("small"))
	if err := f.PutTree(ctx, filepath.Join(src, "tree"), "/tree", nil, nil); err != nil {
		t.Fatal(err)
	}
	u, err := f.CreateLink(ctx, "/tree", pathops.LinkOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := hostile.Start(t, e.url)
	reader, err := client.New(client.Options{BaseURL: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	pu := p.URL + u[len(e.url):]
	_, id, s, _ := link.ParseURL(pu)
	m, err := pathops.OpenLink(ctx, reader, id, s, nil)
	if err != nil {
		t.Fatal(err)
	}

	// (a) A manifest sealed under the right key that the secret does not
	// commit to.
	p.On("GET", "/v1/s/*", hostile.EditJSON(func(pub *api.LinkPublic) {
		forged, err := linktest.Reseal(pu, pub.Blob, func(m *link.Manifest) { m.Entries[1].Mode = 0o4777 })
		if err != nil {
			t.Error(err)
		}
		pub.Blob = forged
	}))
	dst := t.TempDir()
	if err := pathops.GetLink(ctx, reader, pu, dst, pathops.GetLinkOptions{}); !errors.Is(err, pathops.ErrLinkSecret) {
		t.Fatalf("forged manifest: %v, want %v", err, pathops.ErrLinkSecret)
	}
	dirEmpty(t, dst)
	p.Honest()

	// (b) A chunk sealed under its content key with other bytes: each
	// segment authenticates, the hash does not match.
	var c link.Chunk
	for _, en := range m.Entries {
		if len(en.Chunks) > 1 {
			c = en.Chunks[1]
		}
	}
	forged := linktest.Forge(c)
	var ck [32]byte
	hex.Decode(ck[:], []byte(c.Key))
	if _, err := chunk.OpenWithKey(nil, ck, forged); err != nil {
		t.Fatalf("the forged chunk does not pass its AEAD, so it tests nothing: %v", err)
	}
	p.On("GET", "/v1/s/*/chunks", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		resp := next(req)
		q, _ := url.ParseQuery(req.Query)
		resp.Body = linktest.ReplaceFrame(resp.Body, strings.Split(q.Get("ids"), ","), c.ID, forged)
		return resp
	})
	err = pathops.GetLink(ctx, reader, pu, dst, pathops.GetLinkOptions{})
	if !errors.Is(err, link.ErrChunk) {
		t.Fatalf("forged chunk: %v, want %v", err, link.ErrChunk)
	}
	dirEmpty(t, dst)
	if p.Count("GET", "/v1/s/*/chunks") == 0 {
		t.Fatal("GetLink did not use the batched chunk route")
	}
	p.Honest()
	if err := pathops.GetLink(ctx, reader, pu, dst, pathops.GetLinkOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "tree", "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("big.bin differs once the server is honest")
	}
}
