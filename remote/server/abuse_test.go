package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"kumo/internal/metrics"
	"kumo/remote/api"
	"kumo/remote/client"
)

// raw posts a JSON body and returns the answer as it is.
func (e *env) raw(path string, body any) (int, http.Header, []byte) {
	e.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.Post(e.url+path, "application/json", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// serveFrom sends a JSON request through the server's handler as if from addr.
func serveFrom(t *testing.T, h http.Handler, addr, method, path string, body any) int {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(method, path, bytes.NewReader(b))
	r.RemoteAddr = addr
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code
}

// TestSignupRateLimit (issue 15, item 4): signups are limited per client
// address (an IPv6 /64 counts as one), and a refused signup creates nothing.
// Before, 60 signups from one address in 0.05 s all made accounts.
func TestSignupRateLimit(t *testing.T) {
	e := newEnv(t, nil, nil) // the default limit: 10 an hour
	for i := range 10 {
		st, code := e.call("POST", "/v1/signup", "", signupReq(fmt.Sprintf("u%d@example.com", i)), nil)
		expect(t, "signup within the limit", st, code, 202, "")
	}
	late := signupReq("late@example.com")
	st, code := e.call("POST", "/v1/signup", "", late, nil)
	expect(t, "signup over the limit", st, code, 429, api.CodeRateLimited)
	st, code = e.call("GET", "/v1/account", late.Token, nil, nil)
	expect(t, "session of a refused signup", st, code, 401, api.CodeUnauthorized)
	if l, err := e.s.Accounts(); err != nil || len(l) != 10 {
		t.Fatalf("accounts: %d %v, want 10", len(l), err)
	}

	h := e.s.Handler()
	for i := range 10 {
		st := serveFrom(t, h, fmt.Sprintf("[2001:db8:1:2::%x]:4000", i+1), "POST", "/v1/signup", signupReq(fmt.Sprintf("v6-%d@example.com", i)))
		if st != 202 {
			t.Fatalf("IPv6 signup %d: %d", i, st)
		}
	}
	if st := serveFrom(t, h, "[2001:db8:1:2:ffff::9]:4000", "POST", "/v1/signup", signupReq("v6-more@example.com")); st != 429 {
		t.Errorf("signup from the same /64 after its budget: %d, want 429", st)
	}
	if st := serveFrom(t, h, "[2001:db8:1:3::1]:4000", "POST", "/v1/signup", signupReq("v6-other@example.com")); st != 202 {
		t.Errorf("signup from another /64: %d, want 202", st)
	}
}

// TestSignupKnownEmail (issue 15, item 4): a signup of an e-mail that has an
// account is answered exactly like one of a new e-mail (no 409 oracle next to
// prelogin's fake salts); nothing changes for the existing account, and the
// client, whose token opens no session, says the e-mail has an account.
func TestSignupKnownEmail(t *testing.T) {
	e := newEnv(t, nil, nil)
	owner := e.signup("known@example.com")
	var pre api.PreloginResponse
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: "known@example.com"}, &pre)

	known, fresh := signupReq("Known@example.com"), signupReq("fresh@example.com")
	stK, hK, bK := e.raw("/v1/signup", known)
	stF, hF, bF := e.raw("/v1/signup", fresh)
	if stK != 202 || stF != 202 {
		t.Fatalf("signup statuses: known %d %s, fresh %d %s; want 202 for both", stK, bK, stF, bF)
	}
	if hK.Get("Content-Type") != hF.Get("Content-Type") || hK.Get("Retry-After") != hF.Get("Retry-After") {
		t.Errorf("headers differ: %v vs %v", hK, hF)
	}
	var mK, mF map[string]any
	if json.Unmarshal(bK, &mK) != nil || json.Unmarshal(bF, &mF) != nil || !slices.Equal(sortedKeys(mK), sortedKeys(mF)) {
		t.Errorf("bodies differ in shape: %s vs %s", bK, bF)
	}
	if len(bK) != len(bF) {
		t.Errorf("bodies differ in length: %s vs %s", bK, bF)
	}

	st, code := e.call("GET", "/v1/account", fresh.Token, nil, nil)
	expect(t, "session of the new account", st, code, 200, "")
	st, code = e.call("GET", "/v1/account", known.Token, nil, nil)
	expect(t, "session of the known e-mail's signup", st, code, 401, api.CodeUnauthorized)
	st, code = e.call("POST", "/v1/login", "", api.LoginRequest{Email: "known@example.com", AuthKey: owner.authKey}, nil)
	expect(t, "owner's login", st, code, 200, "")
	st, code = e.call("POST", "/v1/login", "", api.LoginRequest{Email: "known@example.com", AuthKey: known.AuthKey}, nil)
	expect(t, "login with the second signup's key", st, code, 401, api.CodeUnauthorized)
	var pre2 api.PreloginResponse
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: "known@example.com"}, &pre2)
	if !bytes.Equal(pre.Salt, pre2.Salt) || pre2.KDF != pre.KDF {
		t.Error("the second signup changed the account's salt")
	}
	if l, _ := e.s.Accounts(); len(l) != 2 {
		t.Errorf("%d accounts, want 2", len(l))
	}

	// The client tells its user, and a repeated signup of its own account is
	// not mistaken for one.
	c, err := client.New(client.Options{BaseURL: e.url})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Signup(context.Background(), signupReq("known@example.com")); !errors.Is(err, api.ErrExists) {
		t.Errorf("client signup of a known e-mail: %v, want ErrExists", err)
	}
	again := signupReq("repeat@example.com")
	for i := range 2 {
		lr, err := c.Signup(context.Background(), again)
		if err != nil || lr.Token != again.Token || lr.Account.Email != "repeat@example.com" {
			t.Fatalf("client signup, attempt %d: %+v %v", i, lr, err)
		}
	}
}

func sortedKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestSignupModes (issue 15, item 4): --signup closed refuses every signup;
// --signup voucher takes only signups carrying an unused voucher, spends it
// on the new account (or, for an e-mail that has one, on that account, so
// the answer and the voucher tell nothing), and creates nothing otherwise.
func TestSignupModes(t *testing.T) {
	closed := newEnv(t, nil, func(c *Config) { c.Signup = SignupClosed })
	st, code := closed.call("POST", "/v1/signup", "", signupReq("a@example.com"), nil)
	expect(t, "closed signup", st, code, 403, api.CodeForbidden)
	if l, _ := closed.s.Accounts(); len(l) != 0 {
		t.Fatalf("closed server made %d accounts", len(l))
	}
	unknown := closed.vouchers(1<<20, 30, 1)[0] // well-formed, unknown to the other server

	e := newEnv(t, nil, func(c *Config) { c.Signup = SignupVoucher })
	codes := e.vouchers(1<<20, 30, 4)
	withVoucher := func(email, code string) api.SignupRequest {
		r := signupReq(email)
		r.Voucher = code
		return r
	}
	for _, c := range []struct {
		what, code string
		st         int
		errCode    string
	}{
		{"no voucher", "", 403, api.CodeForbidden},
		{"malformed voucher", "NOPE-NOPE", 400, api.CodeBadVoucher},
		{"unknown voucher", unknown, 400, api.CodeBadVoucher},
	} {
		r := withVoucher("new@example.com", c.code)
		st, code := e.call("POST", "/v1/signup", "", r, nil)
		expect(t, c.what, st, code, c.st, c.errCode)
	}
	if l, _ := e.s.Accounts(); len(l) != 0 {
		t.Fatalf("refused signups made %d accounts", len(l))
	}

	r := withVoucher("new@example.com", codes[0])
	st, code = e.call("POST", "/v1/signup", "", r, nil)
	expect(t, "signup with a voucher", st, code, 202, "")
	var a api.Account
	st, code = e.call("GET", "/v1/account", r.Token, nil, &a)
	if code != "" || a.QuotaLimit != e.cfg.DefaultQuota+1<<20 || a.Plan != "paid" {
		t.Fatalf("new account: %d %s %+v, want the voucher's grant", st, code, a)
	}
	st, code = e.call("POST", "/v1/signup", "", withVoucher("other@example.com", codes[0]), nil)
	expect(t, "signup with a spent voucher", st, code, 409, api.CodeUsedVoucher)

	// A known e-mail with a voucher: the same answer; the voucher goes to
	// the existing account.
	k := withVoucher("new@example.com", codes[1])
	st, code = e.call("POST", "/v1/signup", "", k, nil)
	expect(t, "known e-mail with a voucher", st, code, 202, "")
	st, code = e.call("GET", "/v1/account", r.Token, nil, &a)
	if code != "" || a.QuotaLimit != e.cfg.DefaultQuota+2<<20 {
		t.Fatalf("existing account after a voucher signup of its e-mail: %d %s %+v", st, code, a)
	}
	if l, _ := e.s.Accounts(); len(l) != 1 {
		t.Fatalf("%d accounts, want 1", len(l))
	}

	// The CLI's way: the client carries the voucher.
	c, err := client.New(client.Options{BaseURL: e.url})
	if err != nil {
		t.Fatal(err)
	}
	c.SetSignupVoucher(codes[2])
	lr, err := c.Signup(context.Background(), signupReq("cli@example.com"))
	if err != nil || lr.Account.QuotaLimit != e.cfg.DefaultQuota+1<<20 {
		t.Fatalf("client signup with a voucher: %+v %v", lr, err)
	}
	if _, err := New(Config{DataDir: t.TempDir(), Signup: "invite"}); err == nil {
		t.Error("New accepted signup mode \"invite\"")
	}
}

// TestLimitBeforeSecret (issue 15, item 6): the guessing limits are consulted
// before a voucher code or the admin token is checked, so once an address
// has had its 429s the right secret is refused too, and nothing is spent.
func TestLimitBeforeSecret(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.LoginLimit, c.SignupLimit, c.Signup = 3, 3, SignupVoucher })
	codes := e.vouchers(1<<20, 30, 3)
	r := signupReq("u@example.com")
	r.Voucher = codes[0]
	if st, code := e.call("POST", "/v1/signup", "", r, nil); code != "" {
		t.Fatalf("signup: %d %s", st, code)
	}
	u := &user{e: e, email: r.Email, authKey: r.AuthKey, token: r.Token}
	before := u.account().QuotaLimit

	// Redeem.
	for range 3 {
		st, code := u.call("POST", "/v1/redeem", api.RedeemRequest{Code: "WRON-GGUE-SS"}, nil)
		expect(t, "wrong code", st, code, 400, api.CodeBadVoucher)
	}
	st, code := u.call("POST", "/v1/redeem", api.RedeemRequest{Code: codes[1]}, nil)
	expect(t, "valid code after the limit", st, code, 429, api.CodeRateLimited)
	if got := u.account().QuotaLimit; got != before {
		t.Errorf("quota %d after a refused redeem, want %d", got, before)
	}

	// Signup with a voucher (the signup's own budget: 1 used above).
	for range 2 {
		bad := signupReq("x@example.com")
		bad.Voucher = "WRON-GGUE-SS"
		st, code := e.call("POST", "/v1/signup", "", bad, nil)
		expect(t, "signup with a wrong voucher", st, code, 400, api.CodeBadVoucher)
	}
	good := signupReq("late@example.com")
	good.Voucher = codes[1]
	st, code = e.call("POST", "/v1/signup", "", good, nil)
	expect(t, "signup with a valid voucher after the limit", st, code, 429, api.CodeRateLimited)
	if l, _ := e.s.Accounts(); len(l) != 1 {
		t.Errorf("%d accounts, want 1", len(l))
	}

	// Admin token.
	for range 3 {
		st, code := e.call("GET", "/v1/admin/accounts", strings.Repeat("ab", 32), nil, nil)
		expect(t, "wrong admin token", st, code, 401, api.CodeUnauthorized)
	}
	st, code = e.admin("GET", "/v1/admin/accounts", nil, nil)
	expect(t, "right admin token after the limit", st, code, 429, api.CodeRateLimited)

	// The codes refused with 429 were not spent: a fresh server (fresh
	// limits) takes them.
	e.reopen()
	u.must("POST", "/v1/redeem", api.RedeemRequest{Code: codes[1]}, nil)
	if got := u.account().QuotaLimit; got != before+1<<20 {
		t.Errorf("quota %d after redeeming the refused code, want %d", got, before+1<<20)
	}
}

// TestAdminQuotaSaturates (issue 15, item 7): a base quota of 2^63-1 plus a
// grant used to wrap to a negative limit and make the account read-only; the
// quota is capped at MaxQuota and sums saturate there.
func TestAdminQuotaSaturates(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("big@example.com")
	if st, code := e.admin("POST", "/v1/admin/quota", api.AdminQuotaRequest{Email: u.email, Limit: math.MaxInt64}, nil); code != "" {
		t.Fatalf("set quota: %d %s", st, code)
	}
	for _, c := range e.vouchers(math.MaxInt64/2, 30, 3) {
		u.must("POST", "/v1/redeem", api.RedeemRequest{Code: c}, nil)
	}
	a := u.account()
	if a.QuotaLimit != MaxQuota || a.ReadOnly {
		t.Fatalf("account: limit %d read-only %v, want %d and writable", a.QuotaLimit, a.ReadOnly, MaxQuota)
	}
	u.create(api.RootID, api.TypeFile, u.putChunk(1000))
	var l []api.AdminAccount
	e.admin("GET", "/v1/admin/accounts", nil, &l)
	if len(l) != 1 || l[0].QuotaLimit != MaxQuota {
		t.Fatalf("admin view: %+v", l)
	}
}

// TestMetricsRouteLabels (issue 15, item 7): metrics label requests by route
// pattern; 3,000 unauthenticated requests to random paths used to make
// thousands of series.
func TestMetricsRouteLabels(t *testing.T) {
	e := newEnv(t, nil, nil)
	reg := metrics.New()
	hs := httptest.NewServer(reg.Instrument(e.s.Handler()))
	t.Cleanup(hs.Close)
	paths := []string{"/%s", "/v1/%s", "/v1/nodes/%s", "/v1/nodes/%s/entries/x", "/v1/chunks/%s", "/v1/admin/%s", "/v1//%s"}
	for i := range 3000 {
		p := fmt.Sprintf(paths[i%len(paths)], randMAC()[:8+i%20])
		resp, err := http.Get(hs.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, p := range []string{"/v1/nodes/5", "/v1/account"} {
		resp, err := http.Get(hs.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	w := httptest.NewRecorder()
	reg.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	var series []string
	for line := range strings.Lines(w.Body.String()) {
		if strings.HasPrefix(line, "kumo_http_requests_total{") {
			series = append(series, strings.TrimSpace(line))
		}
	}
	if len(series) > 12 {
		t.Fatalf("%d request series after 3000 random paths, e.g. %q", len(series), series[:5])
	}
	for _, want := range []string{`code="401",route="/v1/nodes/{id}"`, `code="401",route="/v1/account"`} {
		if !slices.ContainsFunc(series, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("no series %s in %q", want, series)
		}
	}
}

// TestLoginLimiterBounded (issue 15, item 7): a limited address cannot grow
// the limiter's map with random e-mails, and the map has a hard bound that
// fails closed.
func TestLoginLimiterBounded(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.LoginLimit = 5 })
	for i := range 2000 {
		st, code := e.call("POST", "/v1/login", "", api.LoginRequest{Email: fmt.Sprintf("r%d@example.com", i), AuthKey: randBytes(32)}, nil)
		if i < 5 {
			expect(t, "login", st, code, 401, api.CodeUnauthorized)
		} else if st != 429 {
			t.Fatalf("login %d: %d %s, want 429", i, st, code)
		}
	}
	if n := e.s.limits.size(); n > 6 {
		t.Fatalf("limiter holds %d buckets after 2000 e-mails from one address, want at most 6", n)
	}

	// Many addresses: the map stops at its bound, and new keys are refused.
	e.s.limits.mu.Lock()
	e.s.limits.max = 50
	e.s.limits.mu.Unlock()
	h := e.s.Handler()
	refused := 0
	for i := range 200 {
		st := serveFrom(t, h, fmt.Sprintf("10.0.%d.%d:5000", i/250, i%250+1), "POST", "/v1/login",
			api.LoginRequest{Email: fmt.Sprintf("m%d@example.com", i), AuthKey: randBytes(32)})
		if st == 429 {
			refused++
		}
	}
	if n := e.s.limits.size(); n > 50 {
		t.Fatalf("limiter holds %d buckets, bound 50", n)
	}
	if refused == 0 {
		t.Fatal("a full limiter let new keys in")
	}
}
