package linkpage

import (
	"io"
	"net/http"
	"net/http/httptest"
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
	} {
		res, body := get(t, h, tc.path)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %q, body has %q: %v", tc.path, res.StatusCode, res.Header.Get("Content-Type"), tc.body, strings.Contains(body, tc.body))
		}
		csp := res.Header.Get("Content-Security-Policy")
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
	for _, f := range []string{"static/index.html", "static/page.js", "static/sw.js", "static/page.css"} {
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
