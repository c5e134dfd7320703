package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestRoute(t *testing.T) {
	mac := strings.Repeat("ab", 32)
	for in, want := range map[string]string{
		"/v1/nodes/123":                "/v1/nodes/{id}",
		"/v1/nodes/123/entries/" + mac: "/v1/nodes/{id}/entries/{hex}",
		"/v1/chunks/" + mac:            "/v1/chunks/{hex}",
		"/v1/account":                  "/v1/account",
		"/a/b/c/d/e/f/g":               "other",
	} {
		if got := Route(in); got != want {
			t.Errorf("Route(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestScrape serves instrumented requests and scrapes them over real HTTP.
func TestScrape(t *testing.T) {
	r := New()
	r.GaugeFunc("kumo_test_gauge", "a test gauge", func() float64 { return 42 })
	app := r.Instrument(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "hello")
	}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.Handler())
	mux.Handle("/", app)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", mux, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		resp, err := http.Get("http://" + addr.String() + "/v1/nodes/7")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kumo_http_requests_total{code="418",route="/v1/nodes/{id}"} 3`,
		`kumo_http_response_bytes_total{route="/v1/nodes/{id}"} 15`,
		"kumo_test_gauge 42",
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if _, err := Serve(ctx, "0.0.0.0:0", mux, slog.Default()); err == nil {
		t.Error("Serve accepted a non-loopback address")
	}
}
