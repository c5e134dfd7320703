// Package metrics exposes a process's Prometheus metrics and profiling endpoints:
// HTTP request counters and latencies for the server, gauges the drive fills from
// its status, and net/http/pprof on a separate loopback address.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds one process's metrics.
type Registry struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	bytesIn  *prometheus.CounterVec
	bytesOut *prometheus.CounterVec
}

// New returns a registry with Go runtime and process metrics already registered.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kumo_http_requests_total", Help: "HTTP requests served, by route and status code.",
	}, []string{"route", "code"})
	r.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kumo_http_request_duration_seconds", Help: "HTTP request latency, by route.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"route"})
	r.bytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kumo_http_request_bytes_total", Help: "Request body bytes received, by route.",
	}, []string{"route"})
	r.bytesOut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kumo_http_response_bytes_total", Help: "Response body bytes sent, by route.",
	}, []string{"route"})
	r.reg.MustRegister(r.requests, r.latency, r.bytesIn, r.bytesOut)
	return r
}

// Handler serves the metrics in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}

// GaugeFunc registers a gauge whose value is read from f at scrape time.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// CounterFunc registers a counter whose value is read from f at scrape time.
func (r *Registry) CounterFunc(name, help string, f func() float64) {
	r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// routeKey carries, in a request's context, where the served handler writes
// its route (SetRoute).
type routeKey struct{}

// SetRoute tells Instrument which route served the request: the pattern of
// the mux entry it matched ("GET /v1/nodes/{id}"). A server whose handlers
// sit below wrappers that copy the request calls it from inside the mux.
func SetRoute(ctx context.Context, pattern string) {
	if p, ok := ctx.Value(routeKey{}).(*string); ok {
		*p = pattern
	}
}

// Unmatched labels requests no route took (unknown paths, path tricks,
// wrong methods).
const Unmatched = "unmatched"

// routeLabel is the label of a mux pattern: its path, without the method,
// so that a route's label is the same whatever method a request used. Only
// patterns are labels, never request paths, so what clients send cannot
// make new series.
func routeLabel(pattern string) string {
	if _, p, ok := strings.Cut(pattern, " "); ok {
		pattern = p
	}
	if pattern == "" {
		return Unmatched
	}
	return pattern
}

// Instrument wraps an HTTP handler with request, latency and byte metrics,
// labeled by route: the pattern given to SetRoute, else the pattern of a
// ServeMux that h is or hands the request to unchanged (Request.Pattern),
// else Unmatched.
func (r *Registry) Instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var pattern string
		req = req.WithContext(context.WithValue(req.Context(), routeKey{}, &pattern))
		rw := &recorder{ResponseWriter: w, code: http.StatusOK}
		start := time.Now()
		h.ServeHTTP(rw, req)
		if pattern == "" {
			pattern = req.Pattern
		}
		route := routeLabel(pattern)
		r.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		r.requests.WithLabelValues(route, strconv.Itoa(rw.code)).Inc()
		if req.ContentLength > 0 {
			r.bytesIn.WithLabelValues(route).Add(float64(req.ContentLength))
		}
		r.bytesOut.WithLabelValues(route).Add(float64(rw.bytes))
	})
}

type recorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (r *recorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }
func (r *recorder) Write(b []byte) (int, error) {
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Flush keeps long-polls and streaming responses working through the wrapper.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// PprofHandler serves net/http/pprof under /debug/pprof/.
func PprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Serve serves h on addr until ctx ends. It refuses non-loopback addresses:
// metrics and profiles are for the operator's machine, not the internet.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) (net.Addr, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, errors.New("metrics/pprof address must be on loopback (e.g. 127.0.0.1:9100)")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	return ln.Addr(), nil
}
