package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// requestCounter is a target that can count the HTTP requests its cloud served.
type requestCounter interface {
	quiesce() error
	routes() (map[string]float64, error)
}

// netKumoTarget is kumo mounted with --server on a separate `kumo serve` whose
// listener delays and caps traffic (--sim-latency, --sim-bandwidth): the drive
// as users see it, with a real network between it and the cloud.
type netKumoTarget struct {
	bin, pprof string
	rtt        time.Duration
	rate       string
	bytesPerS  float64

	base, mnt, url, metrics string
	gen                     int
	serve, cmd              *exec.Cmd
}

func newNetKumo(bin, spec, pprof string) (*netKumoTarget, error) {
	rtts, rate, ok := strings.Cut(spec, ",")
	if !ok {
		return nil, fmt.Errorf(`-net %q: want "RTT,RATE", e.g. "40ms,200Mbit"`, spec)
	}
	rtt, err := time.ParseDuration(strings.TrimSpace(rtts))
	if err != nil || rtt < 0 {
		return nil, fmt.Errorf("-net %q: round-trip time: %v", spec, err)
	}
	bps, err := parseRate(rate)
	if err != nil {
		return nil, fmt.Errorf("-net %q: %w", spec, err)
	}
	return &netKumoTarget{bin: bin, pprof: pprof, rtt: rtt, rate: strings.TrimSpace(rate), bytesPerS: bps}, nil
}

func (n *netKumoTarget) name() string {
	return fmt.Sprintf("kumo (%s, %s)", fmtDur(n.rtt), fmtRate(n.bytesPerS))
}

func (n *netKumoTarget) env() []string {
	return append(os.Environ(), "KUMO_CONFIG_DIR="+filepath.Join(n.base, "config"),
		"KUMO_PASSWORD=bench-password-not-secret")
}

func (n *netKumoTarget) setup(base string) (string, error) {
	n.base, n.mnt, n.gen = base, filepath.Join(base, "mnt"), 0
	n.serve = exec.Command(n.bin, "serve", "--data", filepath.Join(base, "cloud"), "--listen", "127.0.0.1:0",
		"--metrics", "127.0.0.1:0", "--quota", "1TiB", "--log-level", "info",
		"--sim-latency", (n.rtt / 2).String(), "--sim-bandwidth", n.rate)
	stderr, err := n.serve.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := n.serve.Start(); err != nil {
		return "", err
	}
	// The log names the metrics URL first, then the server's URL.
	lines := bufio.NewScanner(stderr)
	for n.url == "" && lines.Scan() {
		line := lines.Text()
		if v := logValue(line, "metrics_url"); v != "" {
			n.metrics = v
		}
		if strings.Contains(line, "kumo serve listening") {
			n.url = logValue(line, "url")
		}
	}
	go io.Copy(io.Discard, stderr) // keep draining
	if n.url == "" || n.metrics == "" {
		n.stopServe()
		return "", errors.New("kumo serve did not log its url and metrics_url")
	}
	signup := exec.Command(n.bin, "signup", "--server", n.url, "--email", "bench@kumo.localhost")
	signup.Env = n.env()
	if out, err := signup.CombinedOutput(); err != nil {
		n.stopServe()
		return "", fmt.Errorf("kumo signup: %w: %s", err, out)
	}
	return n.mnt, n.mount()
}

// logValue returns the value of key=VALUE in a slog text line.
func logValue(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func (n *netKumoTarget) mount() error {
	n.gen++
	os.MkdirAll(n.mnt, 0o755)
	args := []string{"mount", "--foreground", "--log-level", "warn", "--server", n.url,
		"--cache-dir", filepath.Join(n.base, fmt.Sprintf("cache%d", n.gen))}
	if n.pprof != "" {
		args = append(args, "--pprof", n.pprof)
	}
	n.cmd = exec.Command(n.bin, append(args, n.mnt)...)
	n.cmd.Env = n.env()
	n.cmd.Stdout, n.cmd.Stderr = os.Stderr, os.Stderr
	if err := n.cmd.Start(); err != nil {
		return err
	}
	return waitMounted(n.mnt, n.cmd)
}

// cold unmounts (uploads flushed through the link), drops the page cache and
// remounts with an empty cache, so every read crosses the link.
func (n *netKumoTarget) cold() error {
	if err := n.unmount(); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	return n.mount()
}

func (n *netKumoTarget) unmount() error {
	if err := sh(n.bin, "unmount", n.mnt); err != nil {
		return err
	}
	return waitExit(n.cmd, 20*time.Minute)
}

func (n *netKumoTarget) pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

func (n *netKumoTarget) teardown() error {
	err := n.unmount()
	n.stopServe()
	n.url, n.metrics = "", ""
	return err
}

func (n *netKumoTarget) stopServe() {
	n.serve.Process.Signal(syscall.SIGTERM)
	if waitExit(n.serve, 30*time.Second) != nil {
		n.serve.Process.Kill()
	}
}

func waitExit(cmd *exec.Cmd, limit time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return nil
	case <-time.After(limit):
		cmd.Process.Kill()
		return fmt.Errorf("%s did not exit within %v", cmd.Path, limit)
	}
}

// requests sums kumo_http_requests_total of the server, except the change
// feed's long poll (it completes on its own schedule, not because of a reader).
func (n *netKumoTarget) requests() (float64, error) {
	routes, err := n.routes()
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, v := range routes {
		sum += v
	}
	return sum, nil
}

// routes returns kumo_http_requests_total by route (and code), without the change feed.
func (n *netKumoTarget) routes() (map[string]float64, error) {
	resp, err := http.Get(n.metrics)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "kumo_http_requests_total{") || strings.Contains(line, `route="/v1/changes"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[f[0]] += v
	}
	return out, sc.Err()
}

// quiesce waits (up to 5 min) until the server has seen no request for 3 s:
// uploads and pushes of what was just written must not count against a reader.
func (n *netKumoTarget) quiesce() error {
	last, stable := -1.0, time.Now()
	for start := time.Now(); time.Since(start) < 5*time.Minute; time.Sleep(250 * time.Millisecond) {
		v, err := n.requests()
		if err != nil {
			return err
		}
		if v != last {
			last, stable = v, time.Now()
		}
		if time.Since(stable) >= 3*time.Second {
			return nil
		}
	}
	return errors.New("the drive kept talking to the cloud for 5 minutes")
}

// requestDiff describes which routes got requests between two snapshots.
func requestDiff(before, after map[string]float64) string {
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s +%g", k, d))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// summary writes the simulated-network targets: cold sequential read against
// the cap (≥ 80 %), random-read latency against the round trip (≈ 1), requests
// of a warm ls -lR (0).
func (n *netKumoTarget) summary(b *strings.Builder, v map[string][]float64, median func([]float64) float64) {
	capMiB := n.bytesPerS / (1 << 20)
	cold := median(v["cold seq read"])
	lat := median(v["4 KiB random read (mean)"]) / 1000 // ms
	rttMs := float64(n.rtt) / float64(time.Millisecond)
	fmt.Fprintf(b, "\n## %s\n\nThe drive talks to a separate `kumo serve` whose listener adds %s one-way latency and caps the link at %s (%.1f MiB/s) per direction, shared by all connections.\n\n",
		n.name(), fmtDur(n.rtt/2), fmtRate(n.bytesPerS), capMiB)
	fmt.Fprintf(b, "| check | target | measured (median) |\n|---|---|---|\n")
	fmt.Fprintf(b, "| cold sequential read / link capacity | ≥ 80 %% | %.0f %% (%s of %.1f MiB/s) |\n", 100*cold/capMiB, num(cold), capMiB)
	if rttMs > 0 {
		fmt.Fprintf(b, "| 4 KiB random read mean / round trip | ≈ 1 | %.2f (%.1f ms, RTT %s) |\n", lat/rttMs, lat, fmtDur(n.rtt))
	}
	if r := v["HTTP requests in warm ls -lR"]; len(r) > 0 {
		s := append([]float64(nil), r...)
		fmt.Fprintf(b, "| HTTP requests of a warm ls -lR (change feed excluded) | 0 | %s (max %s) |\n", num(median(r)), num(maxOf(s)))
	}
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func fmtDur(d time.Duration) string {
	if d%time.Millisecond == 0 {
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	}
	return d.String()
}

func fmtRate(bps float64) string {
	bits := bps * 8
	switch {
	case bits >= 1e9:
		return strconv.FormatFloat(bits/1e9, 'f', -1, 64) + " Gbit/s"
	case bits >= 1e6:
		return strconv.FormatFloat(bits/1e6, 'f', -1, 64) + " Mbit/s"
	}
	return strconv.FormatFloat(bits/1e3, 'f', -1, 64) + " kbit/s"
}

// parseRate returns bytes per second of "200Mbit", "1Gbit", "25MB/s", "10MiB/s"
// (the units of `kumo serve --sim-bandwidth`).
func parseRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	v, err := strconv.ParseFloat(t[:i], 64)
	units := map[string]float64{
		"bit": 1.0 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
		"b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "kib/s": 1 << 10, "mib/s": 1 << 20, "gib/s": 1 << 30,
	}
	mult, ok := units[strings.ToLower(strings.TrimSpace(t[i:]))]
	if err != nil || !ok || v <= 0 {
		return 0, fmt.Errorf("rate %q: want e.g. 200Mbit, 1Gbit, 25MB/s", s)
	}
	return v * mult, nil
}
