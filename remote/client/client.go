// Package client is the drive's and the CLI's client of the kumo cloud: typed
// errors (api.ErrNotFound, ...), retries with backoff on transient failures,
// connection reuse and context deadlines.
package client

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"kumo/remote/api"
)

// Options configure a Client.
type Options struct {
	BaseURL    string       // e.g. http://127.0.0.1:8080 (no trailing /v1)
	Token      string       // bearer session token, may be set later with SetToken
	AdminToken string       // bearer token of the /v1/admin calls (the server's DATA/admin-token)
	HTTPClient *http.Client // nil: a tuned default with connection reuse
	Logger     *slog.Logger
	// MaxRetries for transient failures (connection errors, 5xx, 429); 0: 4.
	MaxRetries int
}

// Tuning of retries and per-attempt timeouts.
const (
	backoffBase     = 100 * time.Millisecond
	backoffMax      = 5 * time.Second
	maxRetryAfter   = 30 * time.Second // a longer Retry-After is capped to this
	attemptTimeout  = 2 * time.Minute  // per attempt, when the caller's ctx allows more
	changesSlack    = 30 * time.Second // Changes waits this much longer than the server's wait
	maxJSONResponse = 512 << 20        // a listing of a huge directory stays below this
)

// Client talks to one server. Safe for concurrent use.
type Client struct {
	base       string
	hc         *http.Client
	log        *slog.Logger
	maxRetries int

	mu         sync.RWMutex
	token      string
	adminToken string
	// signupVoucher goes with Signup (SetSignupVoucher).
	signupVoucher string
	// shareScope, when set (ForShare), goes in the Kumo-Share header of every request.
	shareScope string
}

// NewHTTPClient returns the tuned default HTTP client: keep-alive with many idle
// connections per host, since the drive uploads and downloads chunks in parallel.
// No overall timeout: every request carries a context deadline instead.
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 128
	t.MaxIdleConnsPerHost = 32
	t.MaxConnsPerHost = 0
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = 0 // long polls wait; attempts have their own deadline
	t.ForceAttemptHTTP2 = true
	return &http.Client{Transport: t}
}

func New(o Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(o.BaseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: bad server URL %q: %w", o.BaseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: bad server URL %q: want http(s)://host:port", o.BaseURL)
	}
	if strings.HasSuffix(u.Path, "/v1") {
		return nil, fmt.Errorf("client: bad server URL %q: leave out /v1", o.BaseURL)
	}
	c := &Client{
		base:       u.String(),
		hc:         o.HTTPClient,
		log:        o.Logger,
		maxRetries: o.MaxRetries,
		token:      o.Token,
		adminToken: o.AdminToken,
	}
	if c.hc == nil {
		c.hc = NewHTTPClient()
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.maxRetries == 0 {
		c.maxRetries = 4
	}
	if c.maxRetries < 0 {
		c.maxRetries = 0
	}
	return c, nil
}

// BaseURL returns the server address the client talks to.
func (c *Client) BaseURL() string { return c.base }

// InProcess reports whether the server runs in this process (an InProcess
// transport, the embedded cloud): its data is on this machine already.
func (c *Client) InProcess() bool {
	_, ok := c.hc.Transport.(*InProcess)
	return ok
}

func (c *Client) SetToken(tok string) {
	c.mu.Lock()
	c.token = tok
	c.mu.Unlock()
}

// retryPolicy says which failures a request may be repeated after.
type retryPolicy int

const (
	// retryNotSent: only failures where the server surely did not act
	// (dial errors, 429). For requests whose repeat would do harm.
	retryNotSent retryPolicy = iota
	// retryAll: also connection errors mid-request and 502/503/504.
	retryAll
)

// call is one API request.
type call struct {
	method  string
	path    string // below the base URL, with /v1
	query   url.Values
	body    []byte // JSON or raw chunk
	rawBody bool   // body is a raw octet stream
	header  http.Header
	policy  retryPolicy
	timeout time.Duration // per attempt; 0: attemptTimeout
	limit   int64         // max response bytes; 0: maxJSONResponse
	admin   bool          // authenticate with the admin token instead of the session token
	token   string        // authenticate with this session token instead of the client's
	into    []byte        // a 2xx answer that fits goes into this buffer
}

func (c *Client) doJSON(ctx context.Context, cl call, in, out any) error {
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: encode %s %s: %w", cl.method, cl.path, err)
		}
		cl.body = b
	}
	body, _, err := c.do(ctx, cl)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("client: decode answer of %s %s: %w", cl.method, cl.path, err)
	}
	return nil
}

// do runs a request with retries and returns the body of a 2xx answer. Errors
// are *api.Error (wrapped), connection failures are api.ErrUnavailable.
func (c *Client) do(ctx context.Context, cl call) ([]byte, int, error) {
	var lastErr error
	for attempt := 0; ; attempt++ {
		body, status, retryAfter, err := c.once(ctx, cl)
		if err == nil {
			return body, status, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("%w (%w)", lastErr, context.Cause(ctx))
		}
		if attempt >= c.maxRetries || !retryable(err, cl.policy) {
			return nil, 0, err
		}
		wait := backoff(attempt)
		if retryAfter > 0 {
			wait = min(retryAfter, maxRetryAfter)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, 0, fmt.Errorf("%w (no time left to retry)", lastErr)
		}
		c.log.Debug("retrying request", "method", cl.method, "path", cl.path, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, 0, fmt.Errorf("%w (%w)", lastErr, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// backoff returns the wait before retry attempt+1: exponential with jitter in [d/2, d].
func backoff(attempt int) time.Duration {
	d := backoffBase << min(attempt, 16)
	if d > backoffMax || d <= 0 {
		d = backoffMax
	}
	return d/2 + rand.N(d/2+1)
}

func retryable(err error, p retryPolicy) bool {
	var ce *connError
	if errors.As(err, &ce) {
		return ce.notSent || p == retryAll
	}
	var ae *api.Error
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Status {
	case http.StatusTooManyRequests:
		return true // refused before doing anything
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return p == retryAll
	}
	return false
}

func (c *Client) once(ctx context.Context, cl call) (body []byte, status int, retryAfter time.Duration, err error) {
	timeout := cl.timeout
	if timeout == 0 {
		timeout = attemptTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if cl.into != nil {
		actx = context.WithValue(actx, intoKey{}, cl.into) // for InProcess
	}

	u := c.base + cl.path
	if len(cl.query) > 0 {
		u += "?" + cl.query.Encode()
	}
	var rd io.Reader
	if cl.body != nil {
		rd = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(actx, cl.method, u, rd)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("client: %s %s: %w", cl.method, cl.path, err)
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	if cl.body != nil {
		if cl.rawBody {
			req.Header.Set("Content-Type", "application/octet-stream")
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	req.Header.Set("Accept", "application/json")
	if c.shareScope != "" {
		req.Header.Set(api.ShareHeader, c.shareScope)
	}
	if cl.token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.token)
	} else {
		c.authorize(req, cl.admin)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, 0, c.connFailure(cl, err)
	}
	defer func() {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
		resp.Body.Close()
	}()
	limit := cl.limit
	if limit == 0 {
		limit = maxJSONResponse
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		b, err := readBody(resp, limit, cl.into)
		if err != nil {
			return nil, 0, 0, c.connFailure(cl, err)
		}
		if int64(len(b)) > limit {
			return nil, 0, 0, fmt.Errorf("client: %s %s: answer larger than %d bytes", cl.method, cl.path, limit)
		}
		return b, resp.StatusCode, 0, nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ae := decodeError(resp.StatusCode, b)
	return nil, resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("%s %s: %w", cl.method, cl.path, ae)
}

// connFailure wraps a transport error as api.ErrUnavailable.
func (c *Client) connFailure(cl call, err error) error {
	var op *net.OpError
	return &connError{
		op:      cl.method + " " + cl.path,
		err:     err,
		notSent: errors.As(err, &op) && op.Op == "dial",
		ae:      &api.Error{Code: api.CodeUnavailable, Message: "cannot reach server " + c.base},
	}
}

// connError is a failure to talk to the server at all: errors.Is matches both
// api.ErrUnavailable and the transport error. notSent says the request surely
// never reached the server (it failed while dialing).
type connError struct {
	op      string
	err     error
	notSent bool
	ae      *api.Error
}

func (e *connError) Error() string   { return e.op + ": " + e.ae.Message + ": " + e.err.Error() }
func (e *connError) Unwrap() []error { return []error{e.ae, e.err} }

// decodeError turns an error answer into *api.Error, also when a proxy answered
// with something that is not our JSON.
func decodeError(status int, b []byte) *api.Error {
	var er api.ErrorResponse
	if err := json.Unmarshal(b, &er); err == nil && er.Error.Code != "" {
		e := er.Error
		e.Status = status
		return &e
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200]
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &api.Error{Status: status, Code: api.CodeForStatus(status), Message: msg}
}

// parseRetryAfter reads seconds or an HTTP date; 0 if absent or unparsable.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return time.Duration(min(n, 86400)) * time.Second // no overflow; callers cap lower
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// Routes of API v1 (see docs/API.md).
const (
	pathPrelogin = "/v1/prelogin"
	pathSignup   = "/v1/signup"
	pathLogin    = "/v1/login"
	pathLogout   = "/v1/logout"
	pathPassword = "/v1/password"
	pathAccount  = "/v1/account"
	pathNodes    = "/v1/nodes" // POST create; /{id} GET, PUT update; /{id}/entries list; /{id}/entries/{mac} lookup
	pathRename   = "/v1/rename"
	pathLink     = "/v1/link"
	pathUnlink   = "/v1/unlink"
	pathBatch    = "/v1/batch"
	pathChunks   = "/v1/chunks" // /{id} PUT, GET
	pathHave     = "/v1/chunks/have"
	pathChanges  = "/v1/changes"
)

func nodePath(id uint64) string { return pathNodes + "/" + strconv.FormatUint(id, 10) }

func (c *Client) Prelogin(ctx context.Context, email string) (api.PreloginResponse, error) {
	var r api.PreloginResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathPrelogin, policy: retryAll}, api.PreloginRequest{Email: email}, &r)
	return r, err
}

// Signup creates an account and returns its session, like Login. The server
// answers a signup the same way whether or not the e-mail had an account
// (202, no session: no account enumeration), so the session token is chosen
// here (unless r has one), sent with the signup, and tried: a 401 means the
// e-mail had an account already and nothing was made (an error matching
// api.ErrExists). The voucher of SetSignupVoucher goes with it unless r has
// one. A repeat is safe (the first attempt's account and token answer it),
// so the signup is retried like any idempotent call.
func (c *Client) Signup(ctx context.Context, r api.SignupRequest) (api.LoginResponse, error) {
	if r.Token == "" {
		b := make([]byte, 32)
		if _, err := crand.Read(b); err != nil {
			return api.LoginResponse{}, fmt.Errorf("signup: session token: %w", err)
		}
		r.Token = hex.EncodeToString(b)
	}
	c.mu.RLock()
	if r.Voucher == "" {
		r.Voucher = c.signupVoucher
	}
	c.mu.RUnlock()
	var resp api.SignupResponse
	if err := c.doJSON(ctx, call{method: http.MethodPost, path: pathSignup, policy: retryAll}, r, &resp); err != nil {
		return api.LoginResponse{}, err
	}
	var a api.Account
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathAccount, policy: retryAll, token: r.Token}, nil, &a)
	if errors.Is(err, api.ErrUnauthorized) {
		return api.LoginResponse{}, &api.Error{Code: api.CodeExists,
			Message: "no account was made: this e-mail has one already (log in with its password)"}
	}
	if err != nil {
		return api.LoginResponse{}, fmt.Errorf("signup: try the new session: %w", err)
	}
	return api.LoginResponse{Token: r.Token, Expires: resp.Expires, WrappedMaster: r.WrappedMaster, Account: a}, nil
}

// SetSignupVoucher sets the invitation voucher Signup sends (servers that
// take signups by voucher only need one).
func (c *Client) SetSignupVoucher(code string) {
	c.mu.Lock()
	c.signupVoucher = code
	c.mu.Unlock()
}

// Login is safe to repeat: at worst the server holds one more session token.
func (c *Client) Login(ctx context.Context, r api.LoginRequest) (api.LoginResponse, error) {
	var resp api.LoginResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathLogin, policy: retryAll}, r, &resp)
	return resp, err
}

// Logout ends the session. A repeat whose first attempt got through answers
// unauthorized, which means the same: the token is dead.
func (c *Client) Logout(ctx context.Context) error {
	_, _, err := c.do(ctx, call{method: http.MethodPost, path: pathLogout, policy: retryAll})
	return err
}

// ChangePassword is not repeated after a failure mid-request: once it went
// through, the old auth key no longer works and a repeat would be refused.
func (c *Client) ChangePassword(ctx context.Context, r api.PasswordRequest) error {
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathPassword, policy: retryNotSent}, r, nil)
}

func (c *Client) Account(ctx context.Context) (api.Account, error) {
	var a api.Account
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathAccount, policy: retryAll}, nil, &a)
	return a, err
}

func (c *Client) GetNode(ctx context.Context, id uint64) (api.Node, error) {
	var n api.Node
	err := c.doJSON(ctx, call{method: http.MethodGet, path: nodePath(id), policy: retryAll}, nil, &n)
	return n, err
}

func (c *Client) List(ctx context.Context, dir uint64) ([]api.Entry, error) {
	var es []api.Entry
	err := c.doJSON(ctx, call{method: http.MethodGet, path: nodePath(dir) + "/entries", policy: retryAll}, nil, &es)
	return es, err
}

func (c *Client) Lookup(ctx context.Context, parent uint64, nameMAC string) (api.Entry, error) {
	var e api.Entry
	if !api.ValidHexID(nameMAC) {
		return e, fmt.Errorf("client: lookup: %w", api.ErrInvalidID)
	}
	err := c.doJSON(ctx, call{method: http.MethodGet, path: nodePath(parent) + "/entries/" + nameMAC, policy: retryAll}, nil, &e)
	return e, err
}

// Create is repeated after transient failures. If an earlier attempt went
// through, the repeat is refused (exists/conflict); then the entry is looked up
// and, if it names our node, the create counts as done.
func (c *Client) Create(ctx context.Context, r api.CreateRequest) (api.Entry, error) {
	var e api.Entry
	b, err := json.Marshal(r)
	if err != nil {
		return e, fmt.Errorf("client: encode create: %w", err)
	}
	cl := call{method: http.MethodPost, path: pathNodes, body: b, policy: retryNotSent}
	for attempt := 0; ; attempt++ {
		body, _, err := c.do(ctx, cl)
		if err == nil {
			if err := json.Unmarshal(body, &e); err != nil {
				return e, fmt.Errorf("client: decode create answer: %w", err)
			}
			return e, nil
		}
		if attempt > 0 && (errors.Is(err, api.ErrExists) || errors.Is(err, api.ErrConflict)) {
			if got, lerr := c.Lookup(ctx, r.Parent, r.NameMAC); lerr == nil && got.Node.ID == r.ID {
				return got, nil
			}
			return e, err
		}
		// Only failures after which the server may or may not have acted are
		// retried here; retryNotSent cases were already retried inside do.
		if attempt >= c.maxRetries || !retryable(err, retryAll) || ctx.Err() != nil {
			return e, err
		}
		if err := sleepCtx(ctx, backoff(attempt)); err != nil {
			return e, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// Update is safe to repeat: a repeat of an update that went through is refused
// with CodeConflict (the version moved on), which the caller resolves.
func (c *Client) Update(ctx context.Context, id uint64, r api.UpdateRequest) (api.Node, error) {
	var n api.Node
	err := c.doJSON(ctx, call{method: http.MethodPut, path: nodePath(id), policy: retryAll}, r, &n)
	return n, err
}

// Rename is not repeated after a failure mid-request: a repeated exchange would swap back.
func (c *Client) Rename(ctx context.Context, r api.RenameRequest) error {
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathRename, policy: retryNotSent}, r, nil)
}

// Link is repeated like Create: an "exists" answer naming our node is success.
func (c *Client) Link(ctx context.Context, r api.LinkRequest) (api.Entry, error) {
	var e api.Entry
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathLink, policy: retryNotSent}, r, &e)
	if err != nil && retryable(err, retryAll) && ctx.Err() == nil {
		err = c.doJSON(ctx, call{method: http.MethodPost, path: pathLink, policy: retryAll}, r, &e)
		if errors.Is(err, api.ErrExists) {
			if got, lerr := c.Lookup(ctx, r.Parent, r.NameMAC); lerr == nil && got.Node.ID == r.ID {
				return got, nil
			}
		}
	}
	return e, err
}

// Unlink is not repeated after a failure mid-request: the name could have been
// taken again by someone else in between.
func (c *Client) Unlink(ctx context.Context, r api.UnlinkRequest) error {
	return c.doJSON(ctx, call{method: http.MethodPost, path: pathUnlink, policy: retryNotSent}, r, nil)
}

// Batch is not repeated after a failure mid-request (its ops are not all idempotent).
func (c *Client) Batch(ctx context.Context, r api.BatchRequest) (api.BatchResponse, error) {
	var resp api.BatchResponse
	err := c.doJSON(ctx, call{method: http.MethodPost, path: pathBatch, policy: retryNotSent}, r, &resp)
	return resp, err
}

// PutChunk uploads a sealed chunk. Uploading a chunk the server has is a cheap no-op.
func (c *Client) PutChunk(ctx context.Context, id string, sealed []byte) error {
	if !api.ValidHexID(id) {
		return fmt.Errorf("client: put chunk: %w", api.ErrInvalidID)
	}
	if sealed == nil {
		sealed = []byte{}
	}
	_, _, err := c.do(ctx, call{method: http.MethodPut, path: pathChunks + "/" + id, body: sealed, rawBody: true, policy: retryAll})
	return err
}

// GetChunk reads length bytes at off of a sealed chunk (HTTP Range); length < 0 reads all.
func (c *Client) GetChunk(ctx context.Context, id string, off, length int64) ([]byte, error) {
	return c.GetChunkInto(ctx, id, off, length, nil)
}

// GetChunkInto is GetChunk reading the answer into buf when it fits in
// cap(buf) (the result then aliases buf), so that a caller can reuse buffers.
func (c *Client) GetChunkInto(ctx context.Context, id string, off, length int64, buf []byte) ([]byte, error) {
	if !api.ValidHexID(id) {
		return nil, fmt.Errorf("client: get chunk: %w", api.ErrInvalidID)
	}
	if off < 0 {
		return nil, fmt.Errorf("client: get chunk: negative offset %d", off)
	}
	if length == 0 {
		return []byte{}, nil
	}
	return c.getRange(ctx, pathChunks+"/"+id, id, off, length, buf)
}

// getRange reads length bytes at off (length < 0: to the end) of the
// sealed chunk at path with HTTP Range, into buf when it fits.
func (c *Client) getRange(ctx context.Context, path, id string, off, length int64, buf []byte) ([]byte, error) {
	cl := call{method: http.MethodGet, path: path, policy: retryAll, limit: api.MaxChunkBody, into: buf}
	if off > 0 || length > 0 {
		rng := fmt.Sprintf("bytes=%d-", off)
		if length > 0 {
			rng = fmt.Sprintf("bytes=%d-%d", off, off+length-1)
		}
		cl.header = http.Header{"Range": {rng}}
	}
	b, status, err := c.do(ctx, cl)
	if err != nil {
		return nil, err
	}
	if status == http.StatusOK && (off > 0 || length > 0) {
		// The server ignored Range and sent the whole chunk: cut it here.
		if off > int64(len(b)) {
			return nil, fmt.Errorf("client: get chunk %s: offset %d beyond %d bytes", id, off, len(b))
		}
		b = b[off:]
		if length > 0 && length < int64(len(b)) {
			b = b[:length]
		}
	}
	if length > 0 && int64(len(b)) > length {
		return nil, fmt.Errorf("client: get chunk %s: server sent %d bytes, asked %d", id, len(b), length)
	}
	return b, nil
}

func (c *Client) HaveChunks(ctx context.Context, ids []string) ([]bool, error) {
	out := make([]bool, 0, len(ids))
	for start := 0; start < len(ids); start += api.MaxHaveBatch {
		part := ids[start:min(start+api.MaxHaveBatch, len(ids))]
		var r api.HaveResponse
		if err := c.doJSON(ctx, call{method: http.MethodPost, path: pathHave, policy: retryAll}, api.HaveRequest{IDs: part}, &r); err != nil {
			return nil, err
		}
		if len(r.Have) != len(part) {
			return nil, fmt.Errorf("client: have chunks: server answered %d of %d", len(r.Have), len(part))
		}
		out = append(out, r.Have...)
	}
	return out, nil
}

// Changes long-polls the change feed for changes after seq, waiting up to wait.
func (c *Client) Changes(ctx context.Context, after uint64, wait time.Duration) (api.ChangesResponse, error) {
	var r api.ChangesResponse
	wait = min(max(wait, 0), api.MaxChangeWait)
	secs := int64((wait + time.Second - 1) / time.Second)
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "wait": {strconv.FormatInt(secs, 10)}}
	err := c.doJSON(ctx, call{method: http.MethodGet, path: pathChanges, query: q, policy: retryAll,
		timeout: time.Duration(secs)*time.Second + changesSlack}, nil, &r)
	return r, err
}
