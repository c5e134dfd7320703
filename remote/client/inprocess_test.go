package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/remote/api"
	"kumo/remote/client"
)

// inProcessClient is a client of srv's handler without a socket.
func inProcessClient(t *testing.T, h http.Handler) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{BaseURL: "http://inproc.test",
		HTTPClient: &http.Client{Transport: client.NewInProcess(h)}, MaxRetries: 2})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestInProcessLikeTCP runs the same calls against the real server over TCP
// and in-process: answers, typed errors and Range reads agree.
func TestInProcessLikeTCP(t *testing.T) {
	srv, url := startServer(t)
	tcp, s := signup(t, url, url, "inproc@example.com")
	mem := inProcessClient(t, srv.Handler())
	if !mem.InProcess() || tcp.InProcess() {
		t.Fatalf("InProcess: in-process %v, TCP %v", mem.InProcess(), tcp.InProcess())
	}
	if _, err := mem.Account(tctx(t)); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("no token: %v", err)
	}
	mem.SetToken(s.Token)

	k := s.Subkeys()
	ci := chunk.NewCipher(k.ChunkID, k.Chunks)
	plain := bytes.Repeat([]byte("in-process chunk"), 20000)
	id := ci.ID(plain)
	sealed := ci.Seal(nil, id, plain)
	if err := mem.PutChunk(tctx(t), id.String(), sealed); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{tcp, mem} {
		a, err := c.Account(tctx(t))
		if err != nil || a.Email != "inproc@example.com" {
			t.Fatalf("account: %+v %v", a, err)
		}
		all, err := c.GetChunk(tctx(t), id.String(), 0, -1)
		if err != nil || !bytes.Equal(all, sealed) {
			t.Fatalf("whole chunk: %d bytes, %v", len(all), err)
		}
		// Into a buffer that fits: the answer lands there; one too small: a new one.
		buf := make([]byte, 3, len(sealed)+10)
		into, err := c.GetChunkInto(tctx(t), id.String(), 0, -1, buf)
		if err != nil || !bytes.Equal(into, sealed) || &into[0] != &buf[:1][0] {
			t.Fatalf("whole chunk into a buffer: %d bytes, %v", len(into), err)
		}
		small := make([]byte, 0, 100)
		if into, err := c.GetChunkInto(tctx(t), id.String(), 0, -1, small); err != nil || !bytes.Equal(into, sealed) {
			t.Fatalf("whole chunk, buffer too small: %d bytes, %v", len(into), err)
		}
		off, n := chunk.SegmentRange(len(plain), 1)
		seg, err := c.GetChunk(tctx(t), id.String(), int64(off), int64(n))
		if err != nil || !bytes.Equal(seg, sealed[off:off+n]) {
			t.Fatalf("range: %d bytes, %v", len(seg), err)
		}
		if _, err := c.GetChunk(tctx(t), id.String(), int64(len(sealed)+5), 10); err == nil {
			t.Fatal("unsatisfiable range accepted")
		}
		_, err = c.GetNode(tctx(t), 424242)
		var ae *api.Error
		if !errors.Is(err, api.ErrNotFound) || !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
			t.Fatalf("missing node: %v", err)
		}
		if _, err := c.GetChunk(tctx(t), strings.Repeat("ab", 32), 0, -1); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("missing chunk: %v", err)
		}
	}
	// A long poll ends with the caller's context.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	a, _ := mem.Account(tctx(t))
	if _, err := mem.Changes(ctx, a.Seq, 20*time.Second); err == nil {
		t.Fatal("long poll outlived its context without an error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("long poll took %v after its context ended", d)
	}
}

// echo answers with what the handler saw of the request.
type seen struct {
	Method, URI, Path, Query, Host, Remote, Auth, Range, Body string
	ContentLength                                             int64
	NilBody                                                   bool
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	v := seen{Method: r.Method, URI: r.RequestURI, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host,
		Remote: r.RemoteAddr, Auth: r.Header.Get("Authorization"), Range: r.Header.Get("Range"),
		Body: string(b), ContentLength: r.ContentLength, NilBody: r.Body == nil}
	out, _ := json.Marshal(v)
	w.Header().Set("X-Echo", "yes")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	w.Write(out)
	w.Header().Set("X-Too-Late", "dropped") // after the header went out: not sent
}

// TestInProcessRequestAndHeaders compares what a handler sees and what the
// caller gets back, over TCP and in-process.
func TestInProcessRequestAndHeaders(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(echoHandler))
	t.Cleanup(hs.Close)
	tr := client.NewInProcess(http.HandlerFunc(echoHandler))
	do := func(rt http.RoundTripper, base, method, path string, body io.Reader) (*http.Response, seen) {
		t.Helper()
		req, err := http.NewRequestWithContext(tctx(t), method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Range", "bytes=1-2")
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v seen
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return resp, v
	}
	for _, tc := range []struct {
		method, path string
		body         func() io.Reader
	}{
		{"GET", "/v1/chunks/ab?x=1&y=%2F", func() io.Reader { return nil }},
		{"PUT", "/v1/chunks/cd", func() io.Reader { return bytes.NewReader([]byte("sealed bytes")) }},
		{"POST", "/v1/batch", func() io.Reader { return strings.NewReader(`{"ops":[]}`) }},
	} {
		rt, rs := do(http.DefaultTransport, hs.URL, tc.method, tc.path, tc.body())
		mt, ms := do(tr, "http://inproc.test", tc.method, tc.path, tc.body())
		if !strings.HasPrefix(rs.Remote, "127.0.0.1:") || !strings.HasPrefix(ms.Remote, "127.0.0.1:") {
			t.Errorf("%s %s: remote %q over TCP, %q in-process", tc.method, tc.path, rs.Remote, ms.Remote)
		}
		if ms.Host != "inproc.test" {
			t.Errorf("%s %s: host %q", tc.method, tc.path, ms.Host)
		}
		rs.Remote, ms.Remote, rs.Host, ms.Host = "", "", "", ""
		if rs != ms {
			t.Errorf("%s %s: handler saw\n TCP        %+v\n in-process %+v", tc.method, tc.path, rs, ms)
		}
		if rt.StatusCode != mt.StatusCode || mt.StatusCode != http.StatusAccepted {
			t.Errorf("status %d over TCP, %d in-process", rt.StatusCode, mt.StatusCode)
		}
		for _, h := range []string{"X-Echo", "Content-Type", "X-Too-Late"} {
			if rt.Header.Get(h) != mt.Header.Get(h) {
				t.Errorf("header %s: %q over TCP, %q in-process", h, rt.Header.Get(h), mt.Header.Get(h))
			}
		}
		// The lengths differ by the peer address and host in the echo.
		for _, r := range []*http.Response{rt, mt} {
			if cl := r.Header.Get("Content-Length"); r.ContentLength <= 0 || cl != strconv.FormatInt(r.ContentLength, 10) {
				t.Errorf("content length %d, header %q", r.ContentLength, cl)
			}
		}
	}
}

// TestInProcessFailures: what a socket would turn into a failed request
// (panic, short body, aborted answer) is a connection failure in-process too,
// retried like one; an error status is a typed error; a body is always closed.
func TestInProcessFailures(t *testing.T) {
	var calls atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/account", func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			panic("boom")
		case 2:
			panic(http.ErrAbortHandler)
		case 3:
			w.Header().Set("Content-Length", "100")
			w.Write([]byte(`{"email":`)) // then the connection "dies"
		case 4:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.Write([]byte(`{"email":"x@example.com"}`))
		}
	})
	mux.HandleFunc("/v1/nodes/5", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":{"code":"conflict","message":"stale"}}`))
	})
	mux.HandleFunc("/v1/nodes/6", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrBodyNotAllowed) {
			t.Errorf("body after 204: %v", err)
		}
	})
	c, err := client.New(client.Options{BaseURL: "http://inproc.test",
		HTTPClient: &http.Client{Transport: client.NewInProcess(mux)}, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Calls 1 and 2: a panic, then an abort: both connection failures, retried once.
	if _, err := c.Account(tctx(t)); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("panicking handler: %v", err)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d calls, want 2 (one retry)", calls.Load())
	}
	// Calls 3 (short body), 4 (503), 5: answered after retries.
	c2, _ := client.New(client.Options{BaseURL: "http://inproc.test",
		HTTPClient: &http.Client{Transport: client.NewInProcess(mux)}, MaxRetries: 3})
	a, err := c2.Account(tctx(t))
	if err != nil || a.Email != "x@example.com" || calls.Load() != 5 {
		t.Fatalf("after a short body and a 503: %+v %v (%d calls)", a, err, calls.Load())
	}
	if _, err := c2.GetNode(tctx(t), 5); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("409: %v", err)
	}
	if _, err := c2.GetNode(tctx(t), 6); err == nil {
		t.Fatal("204 with no JSON decoded")
	}
	// The transport closes the request body, and a done context is refused.
	body := &closeCheck{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest("PUT", "http://inproc.test/v1/account", body)
	resp, err := client.NewInProcess(mux).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !body.closed {
		t.Error("request body not closed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://inproc.test/v1/account", nil)
	if _, err := client.NewInProcess(mux).RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
}

type closeCheck struct {
	io.Reader
	closed bool
}

func (c *closeCheck) Close() error { c.closed = true; return nil }

// TestInProcessReadFrom: a handler streaming its answer (io.Copy into the
// writer, as the server streams a chunk) fills the caller's buffer directly,
// is held to its Content-Length, and a short stream fails the request.
func TestInProcessReadFrom(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789"), 1000)
	var declared, sent int
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(declared))
		w.WriteHeader(http.StatusOK)
		if _, ok := w.(io.ReaderFrom); !ok {
			t.Error("in-process writer has no ReadFrom")
		}
		// A reader without WriteTo, so that io.Copy uses ReadFrom.
		io.Copy(w, struct{ io.Reader }{bytes.NewReader(payload[:sent])})
	})
	c := inProcessClient(t, h)
	buf := make([]byte, 0, len(payload))
	declared, sent = 5000, 5000
	got, err := c.GetChunkInto(tctx(t), strings.Repeat("a", 64), 0, -1, buf)
	if err != nil || !bytes.Equal(got, payload[:5000]) || &got[0] != &buf[:1][0] {
		t.Fatalf("streamed answer: %d bytes, %v (into the buffer: %v)", len(got), err, len(got) > 0 && &got[0] == &buf[:1][0])
	}
	declared, sent = 5000, 6000 // more than declared: cut at the declared length, as Write does
	if got, err := c.GetChunkInto(tctx(t), strings.Repeat("a", 64), 0, -1, nil); err != nil || !bytes.Equal(got, payload[:5000]) {
		t.Fatalf("over-long stream: %d bytes, %v", len(got), err)
	}
	declared, sent = 5000, 4000
	if got, err := c.GetChunkInto(tctx(t), strings.Repeat("a", 64), 0, -1, buf); err == nil {
		t.Fatalf("short stream accepted: %d bytes", len(got))
	}
}
