package server

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"kumo/remote/api"
)

// requestTypes pairs each request type with its validation, as the handlers use them.
var requestTypes = []struct {
	name     string
	new      func() any
	validate func(v any) error
}{
	{"prelogin", func() any { return &api.PreloginRequest{} }, func(v any) error {
		_, err := normalizeEmail(v.(*api.PreloginRequest).Email)
		return err
	}},
	{"signup", func() any { return &api.SignupRequest{} }, func(v any) error { _, err := validateSignup(v.(*api.SignupRequest)); return err }},
	{"login", func() any { return &api.LoginRequest{} }, func(v any) error {
		_, err := normalizeEmail(v.(*api.LoginRequest).Email)
		return err
	}},
	{"password", func() any { return &api.PasswordRequest{} }, func(v any) error { return validatePassword(v.(*api.PasswordRequest)) }},
	{"create", func() any { return &api.CreateRequest{} }, func(v any) error { return validateCreate(v.(*api.CreateRequest)) }},
	{"update", func() any { return &api.UpdateRequest{} }, func(v any) error { return validateUpdate(7, v.(*api.UpdateRequest)) }},
	{"rename", func() any { return &api.RenameRequest{} }, func(v any) error { return validateRename(v.(*api.RenameRequest)) }},
	{"link", func() any { return &api.LinkRequest{} }, func(v any) error { return validateLink(v.(*api.LinkRequest)) }},
	{"unlink", func() any { return &api.UnlinkRequest{} }, func(v any) error { return validateUnlink(v.(*api.UnlinkRequest)) }},
	{"have", func() any { return &api.HaveRequest{} }, func(v any) error { return validateHave(v.(*api.HaveRequest)) }},
	{"batch", func() any { return &api.BatchRequest{} }, func(v any) error { return validateBatch(v.(*api.BatchRequest)) }},
	{"topup", func() any { return &api.TopupRequest{} }, func(v any) error { return validateTopup(v.(*api.TopupRequest)) }},
	{"redeem", func() any { return &api.RedeemRequest{} }, func(v any) error { return nil }},
	{"admin quota", func() any { return &api.AdminQuotaRequest{} }, func(v any) error {
		_, err := normalizeEmail(v.(*api.AdminQuotaRequest).Email)
		return err
	}},
	{"admin disable", func() any { return &api.AdminDisableRequest{} }, func(v any) error { return nil }},
	{"admin vouchers", func() any { return &api.AdminVoucherRequest{} }, func(v any) error { return nil }},
	{"purge", func() any { return &api.PurgeRequest{} }, func(v any) error { return validatePurge(v.(*api.PurgeRequest)) }},
	{"retention", func() any { return &api.RetentionRequest{} }, func(v any) error {
		return validateRetention(v.(*api.RetentionRequest), 365*24*time.Hour)
	}},
	// Format v2: identity keys and the recovery key (identity.go).
	{"identity", func() any { return &api.Identity{} }, func(v any) error { return validIdentity(v.(*api.Identity)) }},
	{"recovery set", func() any { return &api.RecoverySetRequest{} }, func(v any) error { return validRecoverySet(v.(*api.RecoverySetRequest)) }},
	{"recovery open", func() any { return &api.RecoveryOpenRequest{} }, func(v any) error {
		r := v.(*api.RecoveryOpenRequest)
		if _, err := normalizeEmail(r.Email); err != nil {
			return err
		}
		if len(r.AuthKey) != authKeySize {
			return badRequest("auth key size")
		}
		return nil
	}},
	{"recovery reset", func() any { return &api.RecoveryResetRequest{} }, func(v any) error {
		_, err := validRecoveryReset(v.(*api.RecoveryResetRequest))
		return err
	}},
}

// FuzzDecodeRequests feeds arbitrary bytes to the strict decoder and the
// validation of every request type: no panics, errors are API errors, and a
// request that passes re-encodes to one that passes again.
func FuzzDecodeRequests(f *testing.F) {
	mac := strings.Repeat("ab", 32)
	seeds := []any{
		api.CreateRequest{Parent: 1, NameMAC: mac, Name: []byte("n"), ID: 5, Type: api.TypeFile, Attrs: []byte("a"), Chunks: []string{mac}},
		api.UpdateRequest{Version: 1, Attrs: []byte("a"), Chunks: []string{mac}},
		api.RenameRequest{SrcParent: 1, SrcNameMAC: mac, DstParent: 1, DstNameMAC: mac, Name: []byte("x"), Mode: api.RenameExchange, SrcName: []byte("y")},
		api.LinkRequest{ID: 9, Parent: 1, NameMAC: mac, Name: []byte("n")},
		api.UnlinkRequest{Parent: 1, NameMAC: mac, Dir: true},
		api.HaveRequest{IDs: []string{mac}},
		api.SignupRequest{Email: "a@b.c", Salt: make([]byte, 16), KDF: defaultKDF, AuthKey: make([]byte, 32), WrappedMaster: make([]byte, 73), RootAttrs: []byte("r"), Token: strings.Repeat("a", 64), Voucher: "ABCD-EFGH"},
		api.BatchRequest{Ops: []api.BatchOp{{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: 1, NameMAC: mac}}}},
		api.TopupRequest{Bytes: 1 << 30, Months: 3},
		api.RedeemRequest{Code: "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"},
		api.AdminQuotaRequest{Email: "a@b.c", Limit: 5},
		api.AdminVoucherRequest{Bytes: 1, Days: 2, Count: 3},
		api.Identity{Sealed: make([]byte, 169), BoxPublic: make([]byte, 32), SignPublic: make([]byte, 32)},
		api.RecoverySetRequest{AuthKey: make([]byte, 32), RecoveryAuthKey: make([]byte, 32), WrappedMaster: make([]byte, 73)},
		api.RecoveryOpenRequest{Email: "a@b.c", AuthKey: make([]byte, 32)},
		api.PurgeRequest{Before: 5, Node: 9},
		api.RetentionRequest{Retention: 86400},
		api.RecoveryResetRequest{Email: "a@b.c", AuthKey: make([]byte, 32), NewSalt: make([]byte, 16), NewKDF: defaultKDF,
			NewAuthKey: make([]byte, 32), NewWrappedMaster: make([]byte, 73)},
	}
	for _, s := range seeds {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	f.Add([]byte(`{"parent":1}{}`))
	f.Add([]byte(`{"sealed":"AA=="}{}`))
	f.Add([]byte(`{"parent":-1,"x":2}`))
	f.Add([]byte("\xff\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, rt := range requestTypes {
			v := rt.new()
			if err := decodeJSON(bytes.NewReader(data), v); err != nil {
				if _, ok := err.(*api.Error); !ok {
					t.Fatalf("%s: decode error is not an API error: %v", rt.name, err)
				}
				continue
			}
			if err := rt.validate(v); err != nil {
				if _, ok := err.(*api.Error); !ok {
					t.Fatalf("%s: validation error is not an API error: %v", rt.name, err)
				}
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("%s: re-encode: %v", rt.name, err)
			}
			w := rt.new()
			if err := decodeJSON(bytes.NewReader(b), w); err != nil {
				t.Fatalf("%s: re-decode of %s: %v", rt.name, b, err)
			}
			if err := rt.validate(w); err != nil {
				t.Fatalf("%s: valid request invalid after round trip: %v", rt.name, err)
			}
		}
	})
}

// FuzzParseRange checks that an accepted range lies inside the blob.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "bytes=0-", "bytes=5-9", "bytes=-3", "bytes=1-0", "bytes=0-1,2-3", "bytes=99999999999999999999-"} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 {
			return
		}
		off, n, partial, err := parseRange(h, size)
		if err != nil {
			return
		}
		if off < 0 || n < 0 || off+n > size || (partial && n == 0) || (!partial && (off != 0 || n != size)) {
			t.Fatalf("range %q of %d: off %d len %d partial %v", h, size, off, n, partial)
		}
	})
}

// FuzzPathAndQuery covers the other untrusted strings: node ids in paths,
// change-feed queries and e-mail addresses.
func FuzzPathAndQuery(f *testing.F) {
	f.Add("12", "after=3&wait=10", "A@b.c")
	f.Add("0", "after=-1", " x@y ")
	f.Fuzz(func(t *testing.T, id, query, email string) {
		if n, err := parseNodeID(id); err == nil && n == 0 {
			t.Fatal("node id 0 accepted")
		}
		if q, err := url.ParseQuery(query); err == nil {
			if _, wait, err := parseChangesQuery(q); err == nil && (wait < 0 || wait > api.MaxChangeWait) {
				t.Fatalf("wait %v out of range", wait)
			}
		}
		if e, err := normalizeEmail(email); err == nil {
			if e2, err := normalizeEmail(e); err != nil || e2 != e || len(e) > api.MaxEmailLen || strings.Count(e, "@") != 1 {
				t.Fatalf("normalized %q -> %q not stable", email, e)
			}
		}
	})
}

// FuzzHistoryQuery feeds arbitrary query values to the history endpoints'
// parsers: no panics, and what they accept is canonical.
func FuzzHistoryQuery(f *testing.F) {
	for _, s := range []string{"0", "1733400000000000000", "-1", "01", "0000000000000001/00000000000000ab", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest("GET", "/v1/history/trash?after="+url.QueryEscape(q), nil)
		if v, err := parseTime(r, "after", -7); err == nil && q != "" && strconv.FormatInt(v, 10) != q {
			t.Fatalf("parseTime accepted %q as %d", q, v)
		}
		if validCursor(q) && (len(q) != 33 || strings.ToLower(q) != q) {
			t.Fatalf("validCursor accepted %q", q)
		}
	})
}
