package linkpage

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// TestHeaders checks the page and its code are served with the strict
// policy and the headers that keep the fragment and the page to themselves.
func TestHeaders(t *testing.T) {
	h := Handler()
	for _, tc := range []struct{ path, ctype, body string }{
		{"/s/AAAAAAAAAAAAAAAAAAAAAA", "text/html; charset=utf-8", `<script src="/s/_/page.js"`},
		{"/s/_/page.js", "text/javascript; charset=utf-8", "crypto.subtle"},
		{"/s/_/page.css", "text/css; charset=utf-8", "body"},
		{"/s/_/sw.js", "text/javascript; charset=utf-8", "respondWith"},
		{"/s/_/chunks.js", "text/javascript; charset=utf-8", "open.js"},
		{"/s/_/open.js", "text/javascript; charset=utf-8", "crypto.subtle.decrypt"},
		{"/s/_/pw.js", "text/javascript; charset=utf-8", "kumoLinkKeys"},
		{"/s/_/wasm_exec.js", "text/javascript; charset=utf-8", "globalThis.Go = class"},
	} {
		res, body := get(t, h, tc.path)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %q, body has %q: %v", tc.path, res.StatusCode, res.Header.Get("Content-Type"), tc.body, strings.Contains(body, tc.body))
		}
		csp := res.Header.Get("Content-Security-Policy")
		if tc.path == "/s/_/pw.js" { // the one place WebAssembly may compile
			csp = strings.Replace(csp, " 'wasm-unsafe-eval'", "", 1)
		}
		if !strings.HasPrefix(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("%s: CSP %q", tc.path, csp)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
			if res.Header.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", tc.path, k, res.Header.Get(k), v)
			}
		}
	}
	if res, _ := get(t, h, "/s/_/sw.js"); res.Header.Get("Service-Worker-Allowed") != "/s/_/dl/" {
		t.Errorf("sw.js Service-Worker-Allowed = %q", res.Header.Get("Service-Worker-Allowed"))
	}
	if res, _ := get(t, h, "/s/AAAAAAAAAAAAAAAAAAAAAA"); !strings.Contains(res.Header.Get("Content-Security-Policy"), "script-src 'self';") {
		t.Errorf("page CSP %q", res.Header.Get("Content-Security-Policy"))
	}
}

// TestNoInlineCode: the CSP forbids inline script and style, so the page
// must have none (it would silently not run), and nothing may name another
// origin.
func TestNoInlineCode(t *testing.T) {
	b, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if inline := regexp.MustCompile(`<script>|<script[^>]*>[^<]|<style|\sstyle=|\son[a-z]+=`); inline.Match(b) {
		t.Errorf("index.html has inline code or style: %q", inline.Find(b))
	}
	url := regexp.MustCompile(`(https?:)?//[a-zA-Z0-9.-]+`)
	for _, f := range []string{"static/index.html", "static/page.js", "static/sw.js", "static/page.css", "static/chunks.js", "static/open.js", "static/pw.js"} {
		b, _ := static.ReadFile(f)
		for _, m := range url.FindAll(b, -1) {
			if string(m) != "https://SERVER" {
				t.Errorf("%s names another origin: %q", f, m)
			}
		}
	}
}

func TestNotFound(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/s/short", "/s/AAAAAAAAAAAAAAAAAAAAA!", "/s/_/other.js", "/s/_/index.html"} {
		if res, _ := get(t, h, p); res.StatusCode != 404 || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d", p, res.StatusCode)
		}
	}
}

// TestPasswordWasm: the password code is served gzipped to browsers (all
// take gzip) and unpacked to anything else, a WebAssembly module either way.
func TestPasswordWasm(t *testing.T) {
	h := Handler()
	req := httptest.NewRequest("GET", "/s/_/pw.wasm", nil)
	req.Header.Set("Accept-Encoding", "gzip, deflate, br")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	gz := rec.Result()
	if gz.StatusCode != 200 || gz.Header.Get("Content-Encoding") != "gzip" || gz.Header.Get("Content-Type") != "application/wasm" {
		t.Fatalf("gzip: %d %q %q", gz.StatusCode, gz.Header.Get("Content-Encoding"), gz.Header.Get("Content-Type"))
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	unpacked, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	res, plain := get(t, h, "/s/_/pw.wasm")
	if res.Header.Get("Content-Encoding") != "" || plain != string(unpacked) || !strings.HasPrefix(plain, "\x00asm") {
		t.Fatalf("plain: encoding %q, %d bytes (gzip: %d), starts %q", res.Header.Get("Content-Encoding"), len(plain), len(unpacked), plain[:min(4, len(plain))])
	}
}

// TestWasmUpToDate rebuilds the password code (go generate's command) and
// compares it and Go's loader with what is embedded: a change to ./pwwasm,
// internal/link or internal/keys, or another Go release, needs
// go generate ./internal/linkpage, or the page would derive with stale code.
func TestWasmUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the WebAssembly module")
	}
	out := filepath.Join(t.TempDir(), "pw.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s", "-o", out, "./pwwasm")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build ./pwwasm: %v\n%s", err, b)
	}
	built, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := static.ReadFile("static/pw.wasm.gz")
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(built, embedded) {
		t.Errorf("static/pw.wasm.gz is stale (%d bytes built, %d embedded): run go generate ./internal/linkpage", len(built), len(embedded))
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	loader, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		t.Fatal(err)
	}
	if ours, _ := static.ReadFile("static/wasm_exec.js"); !bytes.Equal(ours, loader) {
		t.Error("static/wasm_exec.js is not this Go release's loader: run go generate ./internal/linkpage")
	}
}
