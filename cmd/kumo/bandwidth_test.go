package main

import "testing"

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
