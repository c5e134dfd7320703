package main

import (
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestParseBandwidth(t *testing.T) {
	good := map[string]int64{
		"200Mbit":  25_000_000,
		"200 mbit": 25_000_000,
		"1Gbit":    125_000_000,
		"1.5Gbps":  187_500_000,
		"800kbit":  100_000,
		"25MB/s":   25_000_000,
		"10MiB/s":  10 << 20,
		"512B/s":   512,
		"0":        0,
		"":         0,
	}
	for in, want := range good {
		got, err := parseBandwidth(in)
		if err != nil || got != want {
			t.Errorf("parseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"fast", "200", "200Mb", "-5Mbit", "1.2.3Mbit", "Mbit", "1bit", "1e30Gbit"} {
		if got, err := parseBandwidth(in); err == nil {
			t.Errorf("parseBandwidth(%q) = %d, want an error", in, got)
		}
	}
}

func FuzzParseBandwidth(f *testing.F) {
	for _, s := range []string{"200Mbit", "25MB/s", "0", "1.5Gbps"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseBandwidth(s)
		if err == nil && n < 0 {
			t.Fatalf("parseBandwidth(%q) = %d", s, n)
		}
	})
}

// TestSimBandwidthHelp: the help says what the code does, one cap shared by
// every connection (netsim), not a cap per connection.
func TestSimBandwidthHelp(t *testing.T) {
	for _, f := range serveCommand().Flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "sim-bandwidth" {
			if !strings.Contains(sf.Usage, "shared by all connections") || strings.Contains(sf.Usage, "each connection") {
				t.Fatalf("--sim-bandwidth help: %q", sf.Usage)
			}
			return
		}
	}
	t.Fatal("no --sim-bandwidth flag")
}
