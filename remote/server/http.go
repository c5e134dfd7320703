package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"kumo/internal/linkpage"
	"kumo/internal/metrics"
	"kumo/remote/api"
)

// reqInfo travels in the request context so the access log can name the account.
type reqInfo struct {
	id      string
	account string
}

type ctxKey struct{}

func info(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(ctxKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// authedFunc is a handler that needs a session; acct is the caller's account id.
type authedFunc func(w http.ResponseWriter, r *http.Request, acct string) error

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, f handlerFunc) { mux.Handle(pattern, s.wrap(f)) }
	a := func(pattern string, f authedFunc) { mux.Handle(pattern, s.wrap(s.auth(f))) }

	h("POST /v1/prelogin", s.handlePrelogin)
	h("POST /v1/signup", s.handleSignup)
	h("POST /v1/login", s.handleLogin)
	h("POST /v1/logout", s.handleLogout)
	a("POST /v1/password", s.handlePassword)
	a("GET /v1/account", s.handleAccount)
	a("GET /v1/account/identity", s.handleGetIdentity) // identity.go
	a("PUT /v1/account/identity", s.handlePutIdentity)
	a("GET /v1/keys", s.handlePublicKeys)
	a("PUT /v1/account/recovery", s.handleSetRecovery)
	h("POST /v1/recovery/open", s.handleRecoveryOpen)
	h("POST /v1/recovery/reset", s.handleRecoveryReset)

	a("POST /v1/nodes", s.handleCreate)
	a("GET /v1/nodes/{id}", s.handleGetNode)
	a("PUT /v1/nodes/{id}", s.handleUpdate)
	a("GET /v1/nodes/{id}/entries", s.handleList)
	a("GET /v1/nodes/{id}/entries/{mac}", s.handleLookup)
	a("POST /v1/rename", s.handleRename)
	a("POST /v1/link", s.handleLink)
	a("POST /v1/unlink", s.handleUnlink)
	a("POST /v1/batch", s.handleBatch)

	mux.Handle("PUT /v1/chunks/{id}", s.wrap(s.countArrival(s.auth(s.handlePutChunk))))
	a("GET /v1/chunks/{id}", s.handleGetChunk)
	a("POST /v1/chunks/have", s.handleHave)

	a("GET /v1/history/entries", s.handleHistoryEntries) // history_http.go
	a("GET /v1/history/nodes/{id}", s.handleHistoryNode)
	a("GET /v1/history/versions/{id}", s.handleVersions)
	a("GET /v1/history/trash", s.handleTrash)
	a("GET /v1/history/times", s.handleHistoryTimes)
	a("POST /v1/history/purge", s.handlePurge)
	a("PUT /v1/account/retention", s.handleRetention)

	a("POST /v1/links", s.handleLinkCreate) // links.go
	a("GET /v1/links", s.handleLinkList)
	a("DELETE /v1/links/{id}", s.handleLinkDelete)
	h("GET /v1/s/{id}", s.handleLinkGet) // public: anyone with the link's id
	h("POST /v1/s/{id}/open", s.handleLinkOpen)
	h("GET /v1/s/{id}/chunks/{chunkid}", s.handleLinkChunk)
	h("GET /v1/s/{id}/chunks", s.handleLinkChunks) // several chunks in one answer

	a("POST /v1/shares", s.handleShareCreate) // shares.go
	a("GET /v1/shares", s.handleShareList)
	a("POST /v1/shares/{share}/members", s.handleShareMember)
	a("POST /v1/shares/{share}/rotate", s.handleShareRotate)
	a("DELETE /v1/shares/{share}", s.handleShareDelete)
	a("POST /v1/shares/accept", s.handleShareAccept)
	a("POST /v1/shares/leave", s.handleShareLeave)

	a("GET /v1/changes", s.handleChanges)
	a("GET /v1/head", s.handleGetHead) // head.go
	a("PUT /v1/head", s.handlePutHead)

	a("POST /v1/topup", s.handleTopup)
	a("GET /v1/invoices", s.handleInvoices)
	a("POST /v1/redeem", s.handleRedeem)

	ad := func(pattern string, f handlerFunc) { mux.Handle(pattern, s.wrap(s.admin(f))) }
	ad("GET /v1/admin/accounts", s.handleAdminAccounts)
	ad("POST /v1/admin/quota", s.handleAdminQuota)
	ad("POST /v1/admin/disable", s.handleAdminDisable)
	ad("POST /v1/admin/vouchers", s.handleAdminVouchers)
	ad("GET /v1/admin/backup", s.handleAdminBackup)
	ad("GET /v1/admin/invoices/attention", s.handleAdminAttention)

	h("GET /healthz", s.handleHealth)

	// The page that opens a link in a browser (public: the secret stays in
	// the URL fragment, which browsers never send).
	lp := linkpage.Handler()
	for _, p := range linkpage.Routes() {
		h(p, func(w http.ResponseWriter, r *http.Request) error { lp.ServeHTTP(w, r); return nil })
	}

	h("/", func(w http.ResponseWriter, r *http.Request) error { return notFound("endpoint") })
	return s.guard(mux)
}

// guard refuses non-canonical paths before the mux sees them: the mux would
// answer them with a redirect to the cleaned path, and a path trick deserves a 400.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		raw := r.URL.RawPath
		if p == "" || p[0] != '/' || path.Clean(p) != p || strings.ContainsAny(p, "\\\x00") ||
			(raw != "" && raw != p) || strings.Contains(r.URL.EscapedPath(), "%") {
			writeError(w, badRequest("invalid path"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// wrap adds the request id, panic recovery, error rendering and the access log.
func (s *Server) wrap(f handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// The route's pattern, never the path, labels the request's metrics.
		metrics.SetRoute(r.Context(), r.Pattern)
		ri := &reqInfo{id: randHex(8)}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, ri))
		w.Header().Set("X-Request-Id", ri.id)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			if p == http.ErrAbortHandler { // deliberate: cut the connection, after the log below
				defer panic(p)
			} else if p != nil {
				s.log.Error("panic", "req", ri.id, "panic", fmt.Sprint(p))
				if sw.status == 0 {
					writeError(sw, apiErr(http.StatusInternalServerError, api.CodeInternal, "internal error"))
				}
			}
			lvl := slog.LevelDebug
			if sw.status >= 500 {
				lvl = slog.LevelWarn
			}
			if s.log.Enabled(r.Context(), lvl) { // spares building the record on every chunk read
				s.log.Log(r.Context(), lvl, "request", "req", ri.id, "account", ri.account,
					"method", r.Method, "path", r.URL.Path, "status", sw.status,
					"ms", time.Since(start).Milliseconds())
			}
		}()
		err := func() error {
			s.closeMu.RLock()
			defer s.closeMu.RUnlock() // also on panic, or Close would wait forever
			if s.closed {
				return apiErr(http.StatusServiceUnavailable, api.CodeUnavailable, "server is shutting down")
			}
			return f(sw, r)
		}()
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) {
				s.log.Error("request failed", "req", ri.id, "account", ri.account, "err", err)
				ae = apiErr(http.StatusInternalServerError, api.CodeInternal, "internal error (request "+ri.id+")")
			}
			if sw.status == 0 {
				writeError(sw, ae)
			}
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom lets a streamed answer reach the real writer's ReadFrom: sendfile
// over TCP, a read straight into the client's buffer in-process.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
	return nil
}

func writeError(w http.ResponseWriter, e *api.Error) {
	status := e.Status
	if status == 0 {
		status = api.HTTPStatus(e.Code)
	}
	if status == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "60")
	}
	writeJSON(w, status, api.ErrorResponse{Error: api.Error{Code: e.Code, Message: e.Message}})
}

// readJSON decodes a bounded JSON body into v strictly: unknown fields,
// trailing data and wrong types are refused.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > api.MaxJSONBody {
		return apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body too large")
	}
	body := http.MaxBytesReader(w, r.Body, api.MaxJSONBody)
	err := decodeJSON(body, v)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body too large")
	}
	return err
}

// decodeJSON is the strict decoder behind readJSON (fuzzed).
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("malformed JSON: trailing data")
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// parseNodeID parses a decimal node id from a path; 0 is never valid.
func parseNodeID(s string) (uint64, error) {
	if s == "" || len(s) > 20 || s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
		return 0, badRequest("invalid node id")
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, badRequest("invalid node id")
	}
	return id, nil
}

// clientIP is the peer address; proxies' headers are not trusted.
func clientIP(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}

// clientNet is the client address the rate limits count by: the address, or
// for IPv6 its /64, which one subscriber usually holds whole (counting by
// address would give them 2^64 budgets).
func clientNet(r *http.Request) string {
	ip := clientIP(r)
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Unmap().Is4() {
		return ip
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}
