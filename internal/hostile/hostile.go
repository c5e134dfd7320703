// Package hostile is an HTTP proxy that plays a hostile kumo server in tests.
//
// A Proxy sits in front of a real server (an httptest server, `kumo serve`)
// and forwards every request, except where a test has added a Rule for the
// route: a rule may rewrite the answer (EditJSON), answer itself without
// asking the server (Reply, e.g. a replay of an earlier answer), cut the
// connection (Drop), wait (Delay), forward to another path (Route: a swap) or
// hold requests until the test releases them in the order it wants (Gate).
// Every request the client sent is recorded with the real server's answer, so a
// test can assert what was (not) sent and replay what was answered.
//
// It is test code that other packages' tests import; nothing else may import it.
package hostile

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path"
	"sync"
	"testing"
	"time"
)

// Request is a request as the client sent it (body read in full).
type Request struct {
	Method string
	Path   string // URL path, e.g. /v1/prelogin
	Query  string // raw query, without '?'
	Header http.Header
	Body   []byte
	ctx    context.Context
}

// Context is the client's request context (done when the client gives up).
func (r *Request) Context() context.Context { return r.ctx }

// Response is an answer, from the real server or made up by a rule.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Forward passes a request on: to the next rule of the route, and after the
// last one to the real server.
type Forward func(*Request) *Response

// A Rule handles one request. It may change the request before calling next,
// change the answer next returns, or answer without calling next (then the
// server never sees the request). Returning nil cuts the client's connection.
type Rule func(req *Request, next Forward) *Response

// Exchange is one recorded request and the real server's answer to it
// (Upstream is nil when no rule forwarded the request).
type Exchange struct {
	Request  Request
	Upstream *Response
}

// Proxy is a hostile server in front of a real one. Its methods are safe for
// concurrent use.
type Proxy struct {
	// URL is the proxy's address (http://127.0.0.1:port): give it to the client.
	URL string

	rp *httputil.ReverseProxy

	mu    sync.Mutex
	rules []route
	log   []*Exchange
}

type route struct {
	method, pattern string
	rule            Rule
}

// Start runs a proxy in front of the server at target until the test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "" || u.Host == "" {
		t.Fatalf("hostile: bad target URL %q: %v", target, err)
	}
	p := &Proxy{rp: &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		FlushInterval: -1,
	}}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// On adds a rule for the requests whose method is method ("" for any) and
// whose path matches pattern (path.Match syntax: "/v1/nodes/*"). Several rules
// for one request run in the order they were added, each one's next calling
// the following one.
func (p *Proxy) On(method, pattern string, r Rule) {
	if _, err := path.Match(pattern, "/"); err != nil {
		panic(fmt.Sprintf("hostile: bad pattern %q: %v", pattern, err))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, route{method, pattern, r})
}

// Honest removes every rule: from now on the proxy forwards everything as is.
func (p *Proxy) Honest() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Exchanges returns the recorded requests to method ("" for any) and paths
// matching pattern ("*" alone matches every path), oldest first. A request is
// recorded when it arrives, before any rule runs.
func (p *Proxy) Exchanges(method, pattern string) []Exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Exchange
	for _, e := range p.log {
		if matches(method, pattern, &e.Request) {
			out = append(out, *e)
		}
	}
	return out
}

// Count is len(Exchanges(method, pattern)).
func (p *Proxy) Count(method, pattern string) int { return len(p.Exchanges(method, pattern)) }

func matches(method, pattern string, r *Request) bool {
	if method != "" && method != r.Method {
		return false
	}
	if pattern == "*" {
		return true
	}
	ok, _ := path.Match(pattern, r.Path)
	return ok
}

func (p *Proxy) serve(w http.ResponseWriter, hr *http.Request) {
	body, err := io.ReadAll(hr.Body)
	if err != nil {
		http.Error(w, "hostile: reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	req := Request{Method: hr.Method, Path: hr.URL.Path, Query: hr.URL.RawQuery, Header: hr.Header.Clone(), Body: body, ctx: hr.Context()}
	ex := &Exchange{Request: req}
	ex.Request.Header, ex.Request.Body = req.Header.Clone(), bytes.Clone(body)
	p.mu.Lock()
	p.log = append(p.log, ex)
	var chain []Rule
	for _, r := range p.rules {
		if matches(r.method, r.pattern, &req) {
			chain = append(chain, r.rule)
		}
	}
	p.mu.Unlock()

	var next func(i int) Forward
	next = func(i int) Forward {
		if i == len(chain) {
			return func(r *Request) *Response {
				resp := p.upstream(r)
				p.mu.Lock()
				c := *resp
				c.Header, c.Body = resp.Header.Clone(), bytes.Clone(resp.Body)
				ex.Upstream = &c
				p.mu.Unlock()
				return resp
			}
		}
		return func(r *Request) *Response { return chain[i](r, next(i+1)) }
	}
	resp := next(0)(&req)
	if resp == nil {
		panic(http.ErrAbortHandler) // cut the connection: the client sees a network error
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	w.Header().Set("Content-Length", fmt.Sprint(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// upstream sends r to the real server.
func (p *Proxy) upstream(r *Request) *Response {
	u := &url.URL{Path: r.Path, RawQuery: r.Query}
	hr, err := http.NewRequestWithContext(r.ctx, r.Method, u.String(), bytes.NewReader(r.Body))
	if err != nil {
		return &Response{Status: http.StatusBadGateway, Header: http.Header{}, Body: []byte("hostile: " + err.Error())}
	}
	hr.Header = r.Header.Clone()
	hr.Header.Del("Content-Length")
	hr.ContentLength = int64(len(r.Body))
	rec := httptest.NewRecorder()
	p.rp.ServeHTTP(rec, hr)
	return &Response{Status: rec.Code, Header: rec.Header().Clone(), Body: rec.Body.Bytes()}
}

// EditJSON rewrites successful JSON answers: the body is decoded into a T, f
// changes it, and the result is sent instead (the real answer is still
// recorded). Other answers pass unchanged, as do bodies that do not decode.
func EditJSON[T any](f func(*T)) Rule {
	return func(req *Request, next Forward) *Response {
		resp := next(req)
		if resp == nil || resp.Status/100 != 2 {
			return resp
		}
		var v T
		if err := json.Unmarshal(resp.Body, &v); err != nil {
			return resp
		}
		f(&v)
		b, err := json.Marshal(&v)
		if err != nil {
			panic("hostile: re-encoding an edited answer: " + err.Error())
		}
		out := *resp
		out.Body = b
		return &out
	}
}

// Reply answers with resp (e.g. an earlier Exchange's Upstream: a replay)
// and does not forward the request.
func Reply(resp *Response) Rule {
	return func(*Request, Forward) *Response {
		c := *resp
		c.Header, c.Body = resp.Header.Clone(), bytes.Clone(resp.Body)
		if c.Header == nil {
			c.Header = http.Header{}
		}
		return &c
	}
}

// Drop cuts the connection without forwarding: the server never sees the
// request and the client gets a network error.
func Drop() Rule { return func(*Request, Forward) *Response { return nil } }

// Delay forwards the request after d (sooner if the client gives up).
func Delay(d time.Duration) Rule {
	return func(req *Request, next Forward) *Response {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-req.ctx.Done():
			return nil
		}
		return next(req)
	}
}

// Route forwards the request to another path of the server (same method,
// query and body): e.g. GET /v1/nodes/A answered with node B.
func Route(to string) Rule {
	return func(req *Request, next Forward) *Response {
		r := *req
		r.Path = to
		return next(&r)
	}
}

// Gate holds the requests its Rule sees until the test releases them, in any
// order: two requests held and released last-first arrive at the server
// reordered.
type Gate struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever held grows
	held    []chan struct{}
}

// NewGate returns a gate holding nothing.
func NewGate() *Gate { return &Gate{changed: make(chan struct{})} }

// Rule holds each request until Release(i) for its arrival index i, then forwards it.
func (g *Gate) Rule() Rule {
	return func(req *Request, next Forward) *Response {
		ch := make(chan struct{})
		g.mu.Lock()
		g.held = append(g.held, ch)
		close(g.changed)
		g.changed = make(chan struct{})
		g.mu.Unlock()
		select {
		case <-ch:
		case <-req.ctx.Done():
			return nil
		}
		return next(req)
	}
}

// Wait blocks until n requests have arrived at the gate (held or released
// since), or ctx is done.
func (g *Gate) Wait(ctx context.Context, n int) error {
	for {
		g.mu.Lock()
		got, changed := len(g.held), g.changed
		g.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("hostile: %d of %d requests at the gate: %w", got, n, ctx.Err())
		}
	}
}

// Release lets the i-th request that arrived at the gate (from 0) go on.
// Releasing one twice, or one that has not arrived, panics.
func (g *Gate) Release(i int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.held[i])
}
