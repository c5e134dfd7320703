package server

// Validation of chunk requests: the have-list and the Range header of a GET.

import (
	"net/http"
	"strconv"
	"strings"

	"kumo/remote/api"
)

// parseRange parses a single-range header "bytes=a-b", "bytes=a-" or
// "bytes=-n" against a blob of size bytes. An empty header means the whole blob.
func parseRange(h string, size int64) (off, length int64, partial bool, err error) {
	if h == "" {
		return 0, size, false, nil
	}
	bad := apiErr(http.StatusRequestedRangeNotSatisfiable, api.CodeBadRequest, "invalid or unsatisfiable range")
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false, bad
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false, bad
	}
	num := func(s string) (int64, bool) {
		if s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if first == "" { // suffix: the last n bytes
		n, ok := num(last)
		if !ok || n == 0 || size == 0 {
			return 0, 0, false, bad
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	a, ok := num(first)
	if !ok || a >= size {
		return 0, 0, false, bad
	}
	if last == "" {
		return a, size - a, true, nil
	}
	b, ok := num(last)
	if !ok || b < a {
		return 0, 0, false, bad
	}
	b = min(b, size-1)
	return a, b - a + 1, true, nil
}

func validateHave(r *api.HaveRequest) error {
	if len(r.IDs) > api.MaxHaveBatch {
		return badRequest("at most %d ids", api.MaxHaveBatch)
	}
	for _, id := range r.IDs {
		if !api.ValidHexID(id) {
			return badRequest("invalid chunk id")
		}
	}
	return nil
}
