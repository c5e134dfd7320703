package client

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"kumo/remote/api"
)

// FuzzDecodeError: any error answer becomes a well-formed *api.Error with the status kept.
func FuzzDecodeError(f *testing.F) {
	f.Add(404, []byte(`{"error":{"code":"not_found","message":"no such node"}}`))
	f.Add(502, []byte("<html>bad gateway</html>"))
	f.Add(409, []byte(`{"error":{"code":"","message":"x"}}`))
	f.Add(500, []byte(`{"error":null}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		e := decodeError(status, body)
		if e == nil || e.Code == "" || e.Status != status {
			t.Fatalf("decodeError(%d, %q) = %+v", status, body, e)
		}
		if !errors.Is(e, &api.Error{Code: e.Code}) {
			t.Fatal("not matched by its code")
		}
		if len(e.Message) > 64<<10+200 {
			t.Fatal("message not bounded")
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "120", "-3", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d := parseRetryAfter(s); d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %v", s, d)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	if d := parseRetryAfter("3"); d != 3*time.Second {
		t.Fatal(d)
	}
	if d := parseRetryAfter(time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat)); d < 8*time.Second || d > 11*time.Second {
		t.Fatal(d)
	}
	if d := parseRetryAfter("later"); d != 0 {
		t.Fatal(d)
	}
}
