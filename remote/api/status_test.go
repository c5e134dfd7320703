package api

import (
	"net/http"
	"testing"
)

// TestStatusTable: every code has the status its comment in api.go gives,
// and a bare status maps back to a code with that status (501 and 500 to
// internal: a proxy's 501 says nothing about payments).
func TestStatusTable(t *testing.T) {
	want := map[string]int{
		CodeBadRequest: 400, CodeUnauthorized: 401, CodeForbidden: 403, CodeReadOnly: 403,
		CodeNotFound: 404, CodeConflict: 409, CodeExists: 409, CodeNotEmpty: 409, CodeNotDir: 409,
		CodeIsDir: 409, CodeInvalidMove: 400, CodeTooLarge: 413, CodeRateLimited: 429,
		CodeQuota: 507, CodeNodeLimit: 507, CodeInternal: 500, CodeUnavailable: 503,
		CodePaymentsOff: 501, CodeBadVoucher: 400, CodeUsedVoucher: 409,
		CodeLinkNotFound: 404, CodeLinkExpired: 410, CodeWrongPassword: 403, CodeHistoryGone: 410,
		CodeCrossShare: 409, CodeStaleGeneration: 409,
		"no_such_code": 500,
	}
	seen := map[string]bool{}
	for _, cs := range statusTable() {
		if seen[cs.code] {
			t.Errorf("%s listed twice", cs.code)
		}
		seen[cs.code] = true
		if _, ok := want[cs.code]; !ok {
			t.Errorf("%s: in the table, not in this test", cs.code)
		}
	}
	for code, status := range want {
		if got := HTTPStatus(code); got != status {
			t.Errorf("HTTPStatus(%s) = %d, want %d", code, got, status)
		}
		if code == "no_such_code" || status == http.StatusNotImplemented || status == http.StatusInternalServerError {
			continue
		}
		if back := CodeForStatus(status); HTTPStatus(back) != status {
			t.Errorf("CodeForStatus(%d) = %s, whose status is %d", status, back, HTTPStatus(back))
		}
	}
	for status, code := range map[int]string{
		http.StatusBadRequest: CodeBadRequest, http.StatusConflict: CodeConflict,
		http.StatusForbidden: CodeForbidden, http.StatusInsufficientStorage: CodeQuota,
		http.StatusBadGateway: CodeUnavailable, http.StatusGatewayTimeout: CodeUnavailable,
		http.StatusServiceUnavailable: CodeUnavailable, 599: CodeInternal,
		http.StatusTeapot: CodeBadRequest, http.StatusNotImplemented: CodeInternal,
	} {
		if got := CodeForStatus(status); got != code {
			t.Errorf("CodeForStatus(%d) = %s, want %s", status, got, code)
		}
	}
}
