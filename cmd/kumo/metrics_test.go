package main

import (
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// metricValue returns the value of the sample whose line starts with prefix.
func metricValue(t *testing.T, text, prefix string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, prefix)), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no %s in the metrics", prefix)
	return 0
}

func TestServeMetrics(t *testing.T) {
	bin := buildKumo(t)
	p := serveAt(t, bin, t.TempDir(), "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--pprof", "127.0.0.1:0")
	if !strings.HasPrefix(p.metricsURL, "http://127.0.0.1:") {
		t.Fatalf("metrics url %q", p.metricsURL)
	}
	cfg := t.TempDir()
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=pw"}}
	r.ok("signup", "--server", p.url, "--email", "m1@example.com")
	r.ok("ls", "/")
	r.ok("ls", "/")
	r.fails("not_found", "ls", "/missing")

	m := scrape(t, p.metricsURL)
	if v := metricValue(t, m, `kumo_http_requests_total{code="202",route="/v1/signup"}`); v != 1 {
		t.Errorf("signup requests: %v", v)
	}
	if v := metricValue(t, m, `kumo_http_requests_total{code="404",route="/v1/nodes/{id}/entries/{mac}"}`); v < 1 {
		t.Errorf("404 lookups: %v", v)
	}
	if v := metricValue(t, m, `kumo_http_request_duration_seconds_count{route="/v1/nodes/{id}/entries"}`); v < 2 {
		t.Errorf("listing latency count: %v", v)
	}
	if v := metricValue(t, m, `kumo_http_request_bytes_total{route="/v1/signup"}`); v <= 0 {
		t.Errorf("signup bytes in: %v", v)
	}
	if v := metricValue(t, m, "kumo_accounts"); v != 1 {
		t.Errorf("kumo_accounts %v", v)
	}
	if v := metricValue(t, m, "kumo_quota_limit_bytes"); v != 10<<30 {
		t.Errorf("kumo_quota_limit_bytes %v", v)
	}
	if !regexp.MustCompile(`(?m)^go_goroutines \d+`).MatchString(m) {
		t.Error("no Go runtime metrics")
	}

	if h := scrape(t, p.url+"/healthz"); h != "ok\n" {
		t.Errorf("/healthz: %q", h)
	}
	if pp := scrape(t, p.pprofURL+"goroutine?debug=1"); !strings.Contains(pp, "goroutine profile") {
		t.Errorf("pprof goroutine profile: %.200s", pp)
	}

	// Metrics and profiles are never served off loopback.
	out, err := exec.Command(bin, "serve", "--data", t.TempDir(), "--metrics", "0.0.0.0:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "loopback") {
		t.Fatalf("--metrics on 0.0.0.0: %v %s", err, out)
	}
}
