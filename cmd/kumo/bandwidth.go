package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// bandwidthUnits maps a rate unit (lower case) to bytes per second per unit.
// Bit units are decimal, as network rates are ("200Mbit" = 25,000,000 B/s);
// byte units follow internal/size (KB = 1000, KiB = 1024).
var bandwidthUnits = map[string]float64{
	"bit": 1.0 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
	"bps": 1.0 / 8, "kbps": 1e3 / 8, "mbps": 1e6 / 8, "gbps": 1e9 / 8,
	"b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9,
	"kib/s": 1 << 10, "mib/s": 1 << 20, "gib/s": 1 << 30,
}

// parseBandwidth returns the bytes per second of a rate such as "200Mbit",
// "1Gbit", "25MB/s" or "10MiB/s". "0" (or "") means unlimited and returns 0.
func parseBandwidth(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" || t == "0" {
		return 0, nil
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("bandwidth %q: want a number and a unit like 200Mbit, 1Gbit, 25MB/s or 10MiB/s", s)
	}
	mult, ok := bandwidthUnits[unit]
	if !ok {
		return 0, fmt.Errorf("bandwidth %q: unknown unit %q (use bit, Kbit, Mbit, Gbit, B/s, KB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s)", s, t[i:])
	}
	bps := v * mult
	if bps > math.MaxInt64/2 {
		return 0, fmt.Errorf("bandwidth %q: too large", s)
	}
	if bps > 0 && bps < 1 {
		return 0, fmt.Errorf("bandwidth %q: below 1 byte per second", s)
	}
	return int64(bps), nil
}
