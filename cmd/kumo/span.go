package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseSpan reads a span of time as days ("30d") or a Go duration ("12h",
// "90m"); "0" is zero.
func parseSpan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("%q: want a number of days such as 30d", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q: want a span such as 30d, 12h or 0", s)
	}
	return v, nil
}
