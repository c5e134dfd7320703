package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestRouteLabel(t *testing.T) {
	for in, want := range map[string]string{
		"GET /v1/nodes/{id}":             "/v1/nodes/{id}",
		"/v1/nodes/{id}/entries/{mac}":   "/v1/nodes/{id}/entries/{mac}",
		"PUT example.com/v1/chunks/{id}": "example.com/v1/chunks/{id}",
		"":                               Unmatched,
		"GET /":                          "/",
	} {
		if got := routeLabel(in); got != want {
			t.Errorf("routeLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestScrape serves instrumented requests and scrapes them over real HTTP.
func TestScrape(t *testing.T) {
	r := New()
	r.GaugeFunc("kumo_test_gauge", "a test gauge", func() float64 { return 42 })
	routes := http.NewServeMux()
	routes.HandleFunc("GET /v1/nodes/{id}", func(w http.ResponseWriter, req *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "hello")
	})
	app := r.Instrument(routes)
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.Handler())
	mux.Handle("/", app)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", mux, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/nodes/7", "/v1/nodes/8", "/v1/nodes/9", "/no/such/path", "/other"} {
		resp, err := http.Get("http://" + addr.String() + p)
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
		`kumo_http_requests_total{code="404",route="unmatched"} 2`,
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
