package client

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// InProcess is an http.RoundTripper that answers every request by calling an
// http.Handler in this process, in the caller's goroutine: the embedded cloud
// without a socket, so a chunk read costs no TCP round trip, no goroutine
// hand-offs and no copy through the kernel. The handler sees a server-side
// request like one net/http would build (RemoteAddr on loopback, RequestURI,
// Host, a non-nil Body), and the client sees the status, headers and body the
// handler wrote, the body handed over without another copy.
//
// Differences from a socket, on purpose: the answer is delivered when the
// handler returns (Flush is a no-op), and the caller waits for the handler
// even after its context is done (handlers watch r.Context()). A handler that
// panics, or writes less than the Content-Length it declared, fails the
// request like a connection cut in the middle of the answer.
type InProcess struct {
	h http.Handler
}

// NewInProcess returns a transport that serves requests with h.
func NewInProcess(h http.Handler) *InProcess { return &InProcess{h: h} }

// inProcessAddr is the peer address handlers see: the loopback, as for a
// client on this machine over TCP.
const inProcessAddr = "127.0.0.1:0"

func (t *InProcess) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	if req.Body != nil {
		defer req.Body.Close() // a RoundTripper always closes the request body
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	sreq, err := serverRequest(req)
	if err != nil {
		return nil, err
	}
	w := &memResponse{header: http.Header{}, declared: -1}
	w.into, _ = req.Context().Value(intoKey{}).([]byte)
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, fmt.Errorf("client: in-process handler aborted the answer (%v): %w", p, io.ErrUnexpectedEOF)
		}
	}()
	t.h.ServeHTTP(w, sreq)
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.declared >= 0 && int64(len(w.body)) < w.declared {
		return nil, fmt.Errorf("client: in-process handler wrote %d of %d bytes: %w", len(w.body), w.declared, io.ErrUnexpectedEOF)
	}
	if w.declared < 0 && bodyAllowed(w.status) {
		w.sent.Set("Content-Length", strconv.Itoa(len(w.body))) // the whole answer is known, as net/http tells for short ones
	}
	return &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &memBody{b: w.body},
		ContentLength: int64(len(w.body)),
		Request:       req,
	}, nil
}

// serverRequest builds what net/http's server would hand the handler for req.
func serverRequest(req *http.Request) (*http.Request, error) {
	uri := req.URL.RequestURI()
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, fmt.Errorf("client: in-process request %q: %w", uri, err)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	body, n := req.Body, req.ContentLength
	switch {
	case body == nil || body == http.NoBody:
		body, n = http.NoBody, 0
	case n == 0:
		n = -1 // unknown length, as a chunked body arrives
	}
	h := req.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	sreq := &http.Request{
		Method:        req.Method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(body), // the transport closes the caller's body, not the handler
		ContentLength: n,
		Host:          host,
		RemoteAddr:    inProcessAddr,
		RequestURI:    uri,
	}
	if body == http.NoBody {
		sreq.Body = http.NoBody
	}
	return sreq.WithContext(req.Context()), nil
}

// memResponse collects a handler's answer in memory.
type memResponse struct {
	header   http.Header // what the handler is editing
	sent     http.Header // the header as of WriteHeader, as a socket would have sent it
	status   int
	wrote    bool
	declared int64 // Content-Length the handler set, -1 if none
	body     []byte
	into     []byte // the caller's buffer for a 2xx answer (Client.GetChunkInto)
}

// intoKey is the request context key of the buffer a call reads its answer
// into (call.into), so an in-process answer lands there directly.
type intoKey struct{}

func (w *memResponse) Header() http.Header { return w.header }

func (w *memResponse) WriteHeader(code int) {
	if w.wrote || code >= 100 && code < 200 {
		return // informational answers are not delivered; later calls are ignored, as net/http does
	}
	w.wrote, w.status = true, code
	w.sent = w.header.Clone()
	if v := w.sent.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.declared = n
			switch {
			case code >= 200 && code < 300 && n <= int64(cap(w.into)):
				w.body = w.into[:0]
			case n <= maxPrealloc:
				w.body = make([]byte, 0, n)
			}
		}
	}
}

// maxPrealloc bounds the buffer a declared Content-Length reserves up front.
const maxPrealloc = 64 << 20

func (w *memResponse) Write(p []byte) (int, error) {
	if !w.wrote {
		if w.header.Get("Content-Type") == "" && len(p) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(p))
		}
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.declared >= 0 && int64(len(w.body)+len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// ReadFrom takes a streamed answer (a chunk the server reads from its blob
// store) straight into the buffer WriteHeader set aside for the declared
// length: into the caller's buffer for GetChunkInto, without a copy through
// a buffer of the server's. Anything else goes through Write.
func (w *memResponse) ReadFrom(r io.Reader) (int64, error) {
	if !w.wrote || w.declared < 0 || int64(cap(w.body)) < w.declared || !bodyAllowed(w.status) {
		return io.Copy(struct{ io.Writer }{w}, r)
	}
	var total int64
	for int64(len(w.body)) < w.declared {
		n, err := r.Read(w.body[len(w.body):w.declared])
		w.body = w.body[:len(w.body)+n]
		total += int64(n)
		if err == io.EOF {
			return total, nil // short: RoundTrip reports it
		}
		if err != nil {
			return total, err
		}
	}
	// Full: more would exceed the declared length, as Write refuses it.
	var one [1]byte
	for i := 0; ; i++ {
		n, err := r.Read(one[:])
		if n > 0 {
			return total, http.ErrContentLength
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if i >= 100 {
			return total, io.ErrNoProgress
		}
	}
}

// Flush is a no-op: the whole answer is delivered when the handler returns.
func (w *memResponse) Flush() {}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// memBody is an answer already in memory. once takes its bytes without copying.
type memBody struct {
	b []byte
}

func (b *memBody) Read(p []byte) (int, error) {
	if len(b.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.b)
	b.b = b.b[n:]
	return n, nil
}

func (b *memBody) Close() error { return nil }

// take returns the unread bytes and empties the body.
func (b *memBody) take() []byte {
	p := b.b
	b.b = nil
	return p
}

// readBody reads a whole answer of at most limit bytes: an in-process answer
// as is, a declared length into into (if it fits) or one buffer of that
// size, anything else growing.
func readBody(resp *http.Response, limit int64, into []byte) ([]byte, error) {
	if mb, ok := resp.Body.(*memBody); ok {
		b := mb.take()
		if int64(len(b)) > limit {
			return b[:limit+1], nil // the caller reports the answer too large
		}
		return b, nil
	}
	if n := resp.ContentLength; n >= 0 && n <= limit {
		var b []byte
		if n <= int64(cap(into)) {
			b = into[:n]
		} else {
			b = make([]byte, n)
		}
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
	return buf.Bytes(), err
}
