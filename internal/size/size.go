// Package size parses and formats byte sizes such as "10GiB", "500MB" or "1T".
//
// Units: B; KiB MiB GiB TiB PiB EiB (powers of 1024); KB MB GB TB PB EB (powers of
// 1000); bare K M G T P E mean the binary units, as in coreutils (so "1T" is 1 TiB).
// Units are case-insensitive, a fraction is allowed ("1.5GiB"), spaces between
// number and unit are ignored.
package size

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// ErrSyntax is returned for strings that are not sizes.
var ErrSyntax = errors.New("size: invalid size")

var units = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	"p": 1 << 50, "pib": 1 << 50, "pb": 1e15,
	"e": 1 << 60, "eib": 1 << 60, "eb": 1e18,
}

// Parse returns the number of bytes s denotes. Negative sizes, and sizes that
// do not fit in an int64, are errors; a fraction of a byte is rounded down.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, fmt.Errorf("%w %q: want a number and a unit like 10GiB, 500MB or 1T", ErrSyntax, s)
	}
	mult, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("%w %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB, K, M, G, T)", ErrSyntax, s, t[i:])
	}
	// Exact rational arithmetic: no float rounding surprises on large sizes.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%w %q", ErrSyntax, s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, fmt.Errorf("%w %q: too large", ErrSyntax, s)
	}
	return n.Int64(), nil
}

// Format renders n bytes with a binary unit and up to one decimal: "0 B",
// "999 B", "1.5 KiB", "10 GiB".
func Format(n int64) string {
	if n < 0 {
		return "-" + Format(-n)
	}
	const unitsBin = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	u := -1
	for v >= 1024 && u < len(unitsBin)-1 {
		v /= 1024
		u++
	}
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string(unitsBin[u]) + "iB"
}
