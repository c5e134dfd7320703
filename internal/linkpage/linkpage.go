// Package linkpage is the web page that opens a link (https://SERVER/s/ID#SECRET)
// in a browser: HTML, CSS and plain JavaScript, embedded in the binary and
// served by `kumo serve` with a strict Content-Security-Policy. The page reads
// the secret from the URL fragment (never sent to the server), fetches the
// sealed manifest and chunks from the public link API (/v1/s/{id}...), opens
// them with WebCrypto (HKDF-SHA256, AES-256-GCM) in a few workers and saves
// files to disk. A password link's keys come from the Go code of kumo get
// compiled to WebAssembly (./pwwasm), run in a worker. Nothing external is
// loaded. The format is docs/FORMAT.md (links) and
// internal/link; the page is a second, independent reader of it.
package linkpage

import (
	"bytes"
	"compress/gzip"
	"embed"
	"io"
	"net/http"
	"strconv"
	"strings"
)

//go:embed static
var static embed.FS

// The password step is Go compiled to WebAssembly (./pwwasm), kept built and
// gzipped in static/ with the loader of the Go release that built it;
// TestWasmUpToDate fails when they are stale. After changing ./pwwasm,
// internal/link or internal/keys, or the Go version: go generate ./internal/linkpage
//go:generate sh -c "GOOS=js GOARCH=wasm go build -trimpath -buildvcs=false -ldflags=-s -o static/pw.wasm ./pwwasm && gzip -9nf static/pw.wasm && cp \"$(go env GOROOT)/lib/wasm/wasm_exec.js\" static/"

// Asset paths live under /s/_/: "_" is never a link id (ids are 22 base64url
// characters), so one prefix serves every page's code.
const assetPrefix = "/s/_/"

// csp allows the page's own script, style and fetches, and nothing else: no
// inline code, no other origin, no plugins, no framing of the page. frame-src
// 'self' is for the hidden frame that starts a streamed download through the
// service worker.
const csp = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; " +
	"frame-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// plainCSP is for what is not a document or script: nothing may load.
const plainCSP = "default-src 'none'"

// pwCSP is the password worker's policy: it loads Go's wasm loader and
// compiles the password code ('wasm-unsafe-eval' allows WebAssembly only, no
// JavaScript eval), and only this worker has it.
const pwCSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'"

// workerCSP is the policy of the service worker and the chunk workers:
// they load open.js and fetch chunks from this server, nothing else.
const workerCSP = "default-src 'none'; script-src 'self'; connect-src 'self'"

var assets = map[string]struct{ file, ctype string }{
	"page.js":      {"static/page.js", "text/javascript; charset=utf-8"},
	"page.css":     {"static/page.css", "text/css; charset=utf-8"},
	"sw.js":        {"static/sw.js", "text/javascript; charset=utf-8"},
	"chunks.js":    {"static/chunks.js", "text/javascript; charset=utf-8"},
	"open.js":      {"static/open.js", "text/javascript; charset=utf-8"},
	"pw.js":        {"static/pw.js", "text/javascript; charset=utf-8"},
	"wasm_exec.js": {"static/wasm_exec.js", "text/javascript; charset=utf-8"},
	"pw.wasm":      {"static/pw.wasm.gz", "application/wasm"},
}

// Routes lists the patterns Handler answers, for the server's mux.
func Routes() []string { return []string{"GET /s/{id}", "GET /s/_/{file}"} }

// Handler serves the link page at /s/{id} and its code at /s/_/{file}. It is
// public: the page holds no secret, the fragment carries it.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /s/{id}", servePage)
	mux.HandleFunc("GET /s/_/{file}", serveAsset)
	return mux
}

func setHeaders(h http.Header, ctype, policy string) {
	h.Set("Content-Type", ctype)
	h.Set("Content-Security-Policy", policy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
}

// validID reports whether s has the shape of a link id: 16 bytes in base64url
// without padding. The page checks again; this keeps junk paths out of it.
func validID(s string) bool {
	if len(s) != 22 {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func servePage(w http.ResponseWriter, r *http.Request) {
	if !validID(r.PathValue("id")) {
		notFound(w, "no such link page: a link looks like https://SERVER/s/ID#SECRET")
		return
	}
	b, err := static.ReadFile("static/index.html")
	if err != nil { // embedded at build time: cannot happen
		http.Error(w, "link page missing from the build", http.StatusInternalServerError)
		return
	}
	write(w, b, "text/html; charset=utf-8", csp)
}

func serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	a, ok := assets[name]
	if !ok {
		notFound(w, "not found")
		return
	}
	b, err := static.ReadFile(a.file)
	if err != nil {
		http.Error(w, "link page asset missing from the build", http.StatusInternalServerError)
		return
	}
	policy := csp
	switch name {
	case "chunks.js", "sw.js":
		policy = workerCSP
	case "pw.js":
		policy = pwCSP
	case "pw.wasm":
		serveGzipped(w, r, b, a.ctype)
		return
	}
	if name == "sw.js" {
		// The worker lives at /s/_/ and controls only /s/_/dl/ (its
		// download URLs), never the pages or the API.
		w.Header().Set("Service-Worker-Allowed", assetPrefix+"dl/")
	}
	write(w, b, a.ctype, policy)
}

// serveGzipped serves gz, a gzipped asset, as is to a browser that takes
// gzip (all do), else unpacked.
func serveGzipped(w http.ResponseWriter, r *http.Request, gz []byte, ctype string) {
	setHeaders(w.Header(), ctype, plainCSP)
	w.Header().Add("Vary", "Accept-Encoding")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(len(gz)))
		w.WriteHeader(http.StatusOK)
		w.Write(gz)
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil { // embedded at build time: cannot happen
		http.Error(w, "link page asset damaged in the build", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	io.Copy(w, zr)
}

func write(w http.ResponseWriter, b []byte, ctype, policy string) {
	setHeaders(w.Header(), ctype, policy)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

func notFound(w http.ResponseWriter, msg string) {
	setHeaders(w.Header(), "text/plain; charset=utf-8", plainCSP)
	w.WriteHeader(http.StatusNotFound)
	w.Write([]byte(strings.TrimSpace(msg) + "\n"))
}
