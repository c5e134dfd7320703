package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/server"
	"kumo/remote/session"
)

func startServer(t *testing.T) (*server.Server, string) {
	t.Helper()
	srv, err := server.New(server.Config{
		DataDir:      t.TempDir(),
		DefaultQuota: 1 << 30,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		LoginLimit:   1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return srv, hs.URL
}

func newClient(t *testing.T, url string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{BaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// signup makes an account on url and returns a logged-in client of baseURL
// (which may be a proxy in front of url) and the session.
func signup(t *testing.T, url, baseURL, email string) (*client.Client, *session.Session) {
	t.Helper()
	s, err := session.Signup(tctx(t), newClient(t, url), url, email, []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, baseURL)
	c.SetToken(s.Token)
	return c, s
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://h/v1", "http://"} {
		if _, err := client.New(client.Options{BaseURL: u}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestTypedErrors(t *testing.T) {
	_, url := startServer(t)
	c := newClient(t, url)
	if _, err := c.Account(tctx(t)); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("no token: %v", err)
	}
	c.SetToken("not-a-token")
	if _, err := c.Account(tctx(t)); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	c, s := signup(t, url, url, "typed@example.com")
	if _, err := c.GetNode(tctx(t), 424242); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("missing node: %v", err)
	}
	var ae *api.Error
	_, err := c.GetNode(tctx(t), 424242)
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("status not kept: %v", err)
	}
	sealer := meta.NewSealer(s.Subkeys())
	mac := sealer.NameMAC(api.RootID, []byte("a"))
	if _, err := c.Lookup(tctx(t), api.RootID, mac); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("missing entry: %v", err)
	}
	req := api.CreateRequest{Parent: api.RootID, NameMAC: mac, Name: sealer.SealName(api.RootID, 77, meta.KindFile, []byte("a")), ID: 77, Type: api.TypeFile,
		Attrs: sealer.SealAttrs(77, 1, &meta.Attrs{Mode: 0o100644})}
	if _, err := c.Create(tctx(t), req); err != nil {
		t.Fatal(err)
	}
	req2 := req
	req2.ID = 78
	req2.Attrs = sealer.SealAttrs(78, 1, &meta.Attrs{Mode: 0o100644})
	if _, err := c.Create(tctx(t), req2); !errors.Is(err, api.ErrExists) {
		t.Fatalf("create over existing name: %v", err)
	}
	n, err := c.GetNode(tctx(t), 77)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(tctx(t), 77, api.UpdateRequest{Version: n.Version + 5, Attrs: n.Attrs, Chunks: []string{}}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if err := c.Unlink(tctx(t), api.UnlinkRequest{Parent: api.RootID, NameMAC: mac, Dir: true}); err == nil {
		t.Fatal("rmdir of a file succeeded")
	}
	if _, err := c.GetChunk(tctx(t), strings.Repeat("ab", 32), 0, -1); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("missing chunk: %v", err)
	}
	if _, err := c.GetChunk(tctx(t), "zz", 0, -1); !errors.Is(err, api.ErrInvalidID) {
		t.Fatalf("bad chunk id: %v", err)
	}
}

func TestChunksAndRange(t *testing.T) {
	_, url := startServer(t)
	c, s := signup(t, url, url, "chunks@example.com")
	k := s.Subkeys()
	ci := chunk.NewCipher(k.ChunkID, k.Chunks)
	plain := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes: several segments
	id := ci.ID(plain)
	sealed := ci.Seal(nil, id, plain)
	before, err := c.Account(tctx(t)) // the root's sealed attributes count too
	if err != nil {
		t.Fatal(err)
	}
	have, err := c.HaveChunks(tctx(t), []string{id.String()})
	if err != nil || len(have) != 1 || have[0] {
		t.Fatalf("have before put: %v %v", have, err)
	}
	if err := c.PutChunk(tctx(t), id.String(), sealed); err != nil {
		t.Fatal(err)
	}
	if err := c.PutChunk(tctx(t), id.String(), sealed); err != nil {
		t.Fatalf("second put: %v", err)
	}
	have, err = c.HaveChunks(tctx(t), []string{id.String(), strings.Repeat("0", 64)})
	if err != nil || !have[0] || have[1] {
		t.Fatalf("have after put: %v %v", have, err)
	}
	all, err := c.GetChunk(tctx(t), id.String(), 0, -1)
	if err != nil || !bytes.Equal(all, sealed) {
		t.Fatalf("get whole chunk: %d bytes, %v", len(all), err)
	}
	// Read segment 2 alone with a Range request and open it.
	off, n := chunk.SegmentRange(len(plain), 2)
	seg, err := c.GetChunk(tctx(t), id.String(), int64(off), int64(n))
	if err != nil || !bytes.Equal(seg, sealed[off:off+n]) {
		t.Fatalf("range: %d bytes, %v", len(seg), err)
	}
	p, err := ci.OpenSegment(nil, id, len(plain), 2, seg)
	if err != nil || !bytes.Equal(p, plain[2*chunk.SegmentSize:3*chunk.SegmentSize]) {
		t.Fatalf("open segment: %v", err)
	}
	tail, err := c.GetChunk(tctx(t), id.String(), int64(len(sealed)-10), -1)
	if err != nil || !bytes.Equal(tail, sealed[len(sealed)-10:]) {
		t.Fatalf("open-ended range: %v", err)
	}
	acct, err := c.Account(tctx(t))
	if grew := acct.QuotaUsed - before.QuotaUsed; err != nil || grew != int64(len(sealed)) && grew != int64(len(plain)) {
		t.Fatalf("quota used grew by %d after one chunk of %d sealed bytes: %v", grew, len(sealed), err)
	}
}

// flaky forwards to target but answers the first fails requests matching
// match with status (the request is not forwarded unless forward is set).
type flaky struct {
	target       *httputil.ReverseProxy
	match        func(*http.Request) bool
	fails        int32
	status       int
	retryAfter   string
	forwardFirst bool
	seen         atomic.Int32
	failed       atomic.Int32
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.match == nil || f.match(r) {
		f.seen.Add(1)
		if f.failed.Load() < f.fails {
			f.failed.Add(1)
			if f.forwardFirst {
				// Let the server act, then lose the answer like a dying proxy.
				f.target.ServeHTTP(httptest.NewRecorder(), r)
			}
			if f.retryAfter != "" {
				w.Header().Set("Retry-After", f.retryAfter)
			}
			w.WriteHeader(f.status)
			return
		}
	}
	f.target.ServeHTTP(w, r)
}

func proxy(t *testing.T, target string, f *flaky) string {
	t.Helper()
	u, _ := url.Parse(target)
	f.target = httputil.NewSingleHostReverseProxy(u)
	hs := httptest.NewServer(f)
	t.Cleanup(hs.Close)
	return hs.URL
}

func TestRetryOn503(t *testing.T) {
	_, url := startServer(t)
	f := &flaky{fails: 2, status: http.StatusServiceUnavailable}
	purl := proxy(t, url, f)
	c, _ := signup(t, url, purl, "retry@example.com")
	start := time.Now()
	if _, err := c.Account(tctx(t)); err != nil {
		t.Fatalf("account through a server failing twice: %v", err)
	}
	if f.seen.Load() != 3 {
		t.Fatalf("%d attempts, want 3", f.seen.Load())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("two retries took %v", d)
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	_, url := startServer(t)
	f := &flaky{fails: 1, status: http.StatusTooManyRequests, retryAfter: "1"}
	purl := proxy(t, url, f)
	c, _ := signup(t, url, purl, "ra@example.com")
	start := time.Now()
	if _, err := c.Account(tctx(t)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("retried after %v, Retry-After said 1s", d)
	}
}

func TestGivesUpAfterMaxRetries(t *testing.T) {
	_, url := startServer(t)
	f := &flaky{fails: 100, status: http.StatusBadGateway}
	purl := proxy(t, url, f)
	_, s := signup(t, url, url, "giveup@example.com")
	c, err := client.New(client.Options{BaseURL: purl, MaxRetries: 2, Token: s.Token})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Account(tctx(t))
	if !errors.Is(err, api.ErrUnavailable) || f.seen.Load() != 3 {
		t.Fatalf("err %v after %d attempts", err, f.seen.Load())
	}
}

func TestNoRetryOfUnsafeRequests(t *testing.T) {
	_, url := startServer(t)
	f := &flaky{fails: 1, status: http.StatusServiceUnavailable, match: func(r *http.Request) bool { return r.URL.Path == "/v1/rename" }}
	purl := proxy(t, url, f)
	c, _ := signup(t, url, purl, "unsafe@example.com")
	err := c.Rename(tctx(t), api.RenameRequest{SrcParent: 1, SrcNameMAC: strings.Repeat("a", 64), DstParent: 1, DstNameMAC: strings.Repeat("b", 64), Name: []byte("x")})
	if !errors.Is(err, api.ErrUnavailable) || f.seen.Load() != 1 {
		t.Fatalf("rename: %v after %d attempts", err, f.seen.Load())
	}
}

// A create that went through but whose answer was lost is retried, refused
// as existing, and recognized as ours.
func TestCreateRetryAfterLostAnswer(t *testing.T) {
	_, url := startServer(t)
	f := &flaky{fails: 1, status: http.StatusBadGateway, forwardFirst: true,
		match: func(r *http.Request) bool { return r.Method == http.MethodPost && r.URL.Path == "/v1/nodes" }}
	purl := proxy(t, url, f)
	c, s := signup(t, url, purl, "create@example.com")
	sealer := meta.NewSealer(s.Subkeys())
	mac := sealer.NameMAC(api.RootID, []byte("f"))
	req := api.CreateRequest{Parent: api.RootID, NameMAC: mac, Name: sealer.SealName(api.RootID, 4242, meta.KindFile, []byte("f")), ID: 4242, Type: api.TypeFile,
		Attrs: sealer.SealAttrs(4242, 1, &meta.Attrs{Mode: 0o100644})}
	e, err := c.Create(tctx(t), req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if e.Node.ID != 4242 || f.seen.Load() != 2 {
		t.Fatalf("entry %+v after %d attempts", e, f.seen.Load())
	}
	// Someone else's node under the name is still an error.
	req.ID = 4343
	req.Attrs = sealer.SealAttrs(4343, 1, &meta.Attrs{Mode: 0o100644})
	f.failed.Store(0)
	if _, err := c.Create(tctx(t), req); !errors.Is(err, api.ErrExists) {
		t.Fatalf("create over another node: %v", err)
	}
}

func TestDeadPortIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, "http://"+addr)
	start := time.Now()
	_, err = c.Prelogin(tctx(t), "x@example.com")
	if !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("dead port: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	// A deadline shorter than the backoff ends it sooner, still ErrUnavailable.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.Prelogin(ctx, "x@example.com")
	if !errors.Is(err, api.ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("with deadline: %v after %v", err, time.Since(start))
	}
}

func TestDeadlineRespected(t *testing.T) {
	block := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer hs.Close()
	defer close(block)
	c := newClient(t, hs.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Account(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("hung server: %v after %v", err, time.Since(start))
	}
}

func TestNonJSONErrorIsTyped(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>nope</html>", http.StatusNotFound)
	}))
	defer hs.Close()
	c := newClient(t, hs.URL)
	if _, err := c.Account(tctx(t)); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("proxy 404: %v", err)
	}
}

func TestChangesLongPoll(t *testing.T) {
	_, url := startServer(t)
	c, s := signup(t, url, url, "changes@example.com")
	acct, err := c.Account(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan api.ChangesResponse, 1)
	go func() {
		r, err := c.Changes(tctx(t), acct.Seq, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	sealer := meta.NewSealer(s.Subkeys())
	mac := sealer.NameMAC(api.RootID, []byte("d"))
	if _, err := c.Create(tctx(t), api.CreateRequest{Parent: api.RootID, NameMAC: mac, Name: sealer.SealName(api.RootID, 99, meta.KindDir, []byte("d")),
		ID: 99, Type: api.TypeDir, Attrs: sealer.SealAttrs(99, 1, &meta.Attrs{Mode: 0o40755})}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if len(r.Changes) == 0 || r.Seq <= acct.Seq {
			t.Fatalf("changes %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll not woken by a change")
	}
}
