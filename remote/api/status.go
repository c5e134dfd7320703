package api

import "net/http"

// codeStatus pairs an error code with the HTTP status the server answers it
// with; generic marks the code a bare status (a proxy's answer) maps back to.
type codeStatus struct {
	code    string
	status  int
	generic bool
}

// statusTable is the one table of error codes and their HTTP statuses: the
// server answers each code with its status (HTTPStatus), and a client
// reading an answer that is not ours (a proxy's) takes its status's generic
// code (CodeForStatus). A new code goes here.
func statusTable() [25]codeStatus {
	return [...]codeStatus{
		{CodeBadRequest, http.StatusBadRequest, true},
		{CodeInvalidMove, http.StatusBadRequest, false},
		{CodeBadVoucher, http.StatusBadRequest, false},
		{CodeUnauthorized, http.StatusUnauthorized, true},
		{CodeForbidden, http.StatusForbidden, true},
		{CodeReadOnly, http.StatusForbidden, false},
		{CodeNotFound, http.StatusNotFound, true},
		{CodeConflict, http.StatusConflict, true},
		{CodeUsedVoucher, http.StatusConflict, false},
		{CodeExists, http.StatusConflict, false},
		{CodeNotEmpty, http.StatusConflict, false},
		{CodeNotDir, http.StatusConflict, false},
		{CodeIsDir, http.StatusConflict, false},
		{CodeCrossShare, http.StatusConflict, false},
		{CodeStaleGeneration, http.StatusConflict, false},
		{CodeTooLarge, http.StatusRequestEntityTooLarge, true},
		{CodeRateLimited, http.StatusTooManyRequests, true},
		{CodeQuota, http.StatusInsufficientStorage, true},
		{CodeNodeLimit, http.StatusInsufficientStorage, false},
		{CodeHistoryGone, http.StatusGone, false},
		{CodeUnavailable, http.StatusServiceUnavailable, true},
		{CodePaymentsOff, http.StatusNotImplemented, false},
		{CodeLinkNotFound, http.StatusNotFound, false},
		{CodeLinkExpired, http.StatusGone, true},
		{CodeWrongPassword, http.StatusForbidden, false},
	}
}

// HTTPStatus is the HTTP status of an error code; 500 for CodeInternal and
// any code not in the table.
func HTTPStatus(code string) int {
	for _, cs := range statusTable() {
		if cs.code == code {
			return cs.status
		}
	}
	return http.StatusInternalServerError
}

// CodeForStatus is the error code of an answer that carries only an HTTP
// status (a proxy's error page): the status's generic code in the table; a
// gateway's 502 and 504 are CodeUnavailable, any other 5xx CodeInternal,
// and any other status CodeBadRequest.
func CodeForStatus(status int) string {
	for _, cs := range statusTable() {
		if cs.generic && cs.status == status {
			return cs.code
		}
	}
	switch {
	case status == http.StatusBadGateway, status == http.StatusGatewayTimeout:
		return CodeUnavailable
	case status >= 500:
		return CodeInternal
	}
	return CodeBadRequest
}
