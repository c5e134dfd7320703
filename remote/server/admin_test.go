package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
	"kumo/remote/blob"
)

func (e *env) adminToken() string {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.cfg.DataDir, AdminTokenFile))
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// admin calls an admin endpoint with the token from the data dir.
func (e *env) admin(method, path string, body, out any) (int, string) {
	e.t.Helper()
	return e.call(method, path, e.adminToken(), body, out)
}

func testAdmin(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, func(c *Config) { c.LoginLimit = 5 })
	st, err := os.Stat(filepath.Join(e.cfg.DataDir, AdminTokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", st, err)
	}
	tok := e.adminToken()
	if len(tok) != 64 || tok != e.s.AdminToken() {
		t.Fatalf("admin token %q", tok)
	}
	u := e.signup("admin-a@example.com")
	e.signup("admin-b@example.com")
	u.putChunk(5000)

	// Sessions are not admin tokens, and admin tokens are not sessions.
	st2, code := e.call("GET", "/v1/admin/accounts", u.token, nil, nil)
	expect(t, "user token on admin", st2, code, 401, api.CodeUnauthorized)
	st2, code = e.call("GET", "/v1/account", tok, nil, nil)
	expect(t, "admin token as session", st2, code, 401, api.CodeUnauthorized)
	st2, code = e.call("GET", "/v1/admin/accounts", "", nil, nil)
	expect(t, "no token", st2, code, 401, api.CodeUnauthorized)

	var accts []api.AdminAccount
	if st, code := e.admin("GET", "/v1/admin/accounts", nil, &accts); code != "" {
		t.Fatalf("accounts: %d %s", st, code)
	}
	if len(accts) != 2 {
		t.Fatalf("accounts: %+v", accts)
	}
	for _, a := range accts {
		if a.Email == u.email && (a.QuotaUsed != 5000+u.metaUsed() || a.QuotaLimit != 1<<30 || a.ID != u.id || a.Created.IsZero()) {
			t.Fatalf("account view: %+v", a)
		}
	}

	// Quota: lowering it below usage makes the account read-only.
	seq := u.account().Seq
	if st, code := e.admin("POST", "/v1/admin/quota", api.AdminQuotaRequest{Email: u.email, Limit: 4000}, nil); code != "" {
		t.Fatalf("quota: %d %s", st, code)
	}
	a := u.account()
	if a.QuotaLimit != 4000 || !a.ReadOnly {
		t.Fatalf("after quota: %+v", a)
	}
	ch, _ := u.changes(seq, 0)
	if !hasAccountChange(ch.Changes) {
		t.Fatalf("quota change not on the feed: %+v", ch)
	}
	st2, code = e.admin("POST", "/v1/admin/quota", api.AdminQuotaRequest{Email: "nobody@example.com", Limit: 1}, nil)
	expect(t, "quota of unknown", st2, code, 404, api.CodeNotFound)
	st2, code = e.admin("POST", "/v1/admin/quota", api.AdminQuotaRequest{Email: u.email, Limit: -1}, nil)
	expect(t, "negative quota", st2, code, 400, api.CodeBadRequest)

	// Disable, then enable.
	if st, code := e.admin("POST", "/v1/admin/disable", api.AdminDisableRequest{Email: u.email, Disabled: true}, nil); code != "" {
		t.Fatalf("disable: %d %s", st, code)
	}
	st2, code = u.call("GET", "/v1/account", nil, nil)
	expect(t, "disabled account", st2, code, 403, api.CodeForbidden)
	if st, code := e.admin("POST", "/v1/admin/disable", api.AdminDisableRequest{Email: u.email, Disabled: false}, nil); code != "" {
		t.Fatalf("enable: %d %s", st, code)
	}
	u.account()

	// Vouchers: bad requests refused.
	st2, code = e.admin("POST", "/v1/admin/vouchers", api.AdminVoucherRequest{Bytes: 0, Days: 1, Count: 1}, nil)
	expect(t, "zero-byte voucher", st2, code, 400, api.CodeBadRequest)
	var vr api.AdminVoucherResponse
	if st, code := e.admin("POST", "/v1/admin/vouchers", api.AdminVoucherRequest{Bytes: 1 << 20, Days: 1, Count: 3}, &vr); code != "" || len(vr.Codes) != 3 {
		t.Fatalf("vouchers: %d %s %v", st, code, vr)
	}
	var att api.InvoicesResponse
	if st, code := e.admin("GET", "/v1/admin/invoices/attention", nil, &att); code != "" || att.Invoices == nil || len(att.Invoices) != 0 {
		t.Fatalf("attention: %d %s %+v", st, code, att)
	}

	// Health.
	var body []byte
	if st, code := e.call("GET", "/healthz", "", nil, &body); code != "" || string(body) != "ok\n" {
		t.Fatalf("healthz: %d %s %q", st, code, body)
	}

	// Online backup, restored into a fresh data dir, gives the same accounts.
	var backup []byte
	if st, code := e.admin("GET", "/v1/admin/backup", nil, &backup); code != "" || len(backup) == 0 {
		t.Fatalf("backup: %d %s (%d bytes)", st, code, len(backup))
	}
	dir := t.TempDir()
	if err := Restore(dir, bytes.NewReader(backup)); err != nil {
		t.Fatal(err)
	}
	if err := Restore(dir, bytes.NewReader(backup)); err == nil {
		t.Fatal("restore into a non-empty meta dir accepted")
	}
	rs, err := New(Config{DataDir: dir, Blobs: e.s.blobs, NoBackground: true, Logger: e.cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	got, err := rs.AdminAccounts()
	if err != nil || len(got) != 2 {
		t.Fatalf("restored accounts: %v %v", got, err)
	}
	if rs.AdminToken() == tok {
		t.Fatal("the admin token travelled in the backup")
	}
	var buf bytes.Buffer
	if err := rs.Backup(&buf); err != nil || buf.Len() == 0 {
		t.Fatalf("offline backup: %v", err)
	}
	// Offline admin on the restored copy: vouchers made there redeem there.
	codes, err := rs.CreateVouchers(1<<20, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if b, d, err := rs.Redeem(u.email, codes[0]); err != nil || b != 1<<20 || d != 2 {
		t.Fatalf("offline redeem: %d %d %v", b, d, err)
	}
	if err := rs.Close(); err != nil {
		t.Fatal(err)
	}

	// Wrong admin tokens are rate-limited like logins (LoginLimit 5 here).
	limited := false
	for i := 0; i < 10; i++ {
		st, code := e.call("GET", "/v1/admin/accounts", strings.Repeat("ab", 32), nil, nil)
		if st == 429 && code == api.CodeRateLimited {
			limited = true
			break
		}
		expect(t, "wrong admin token", st, code, 401, api.CodeUnauthorized)
	}
	if !limited {
		t.Fatal("wrong admin tokens never rate-limited")
	}
	// The limit comes before the token is compared: while the address is
	// limited, the right token is refused too (else the 429s would not stop
	// a guesser). The restart below starts with fresh limits.
	ast, acode := e.admin("GET", "/v1/admin/accounts", nil, &accts)
	expect(t, "right admin token after the limit", ast, acode, 429, api.CodeRateLimited)
	// The token survives a restart.
	e.reopen()
	if e.s.AdminToken() != tok {
		t.Fatal("admin token changed over a restart")
	}
	if st, code := e.admin("GET", "/v1/admin/accounts", nil, &accts); code != "" {
		t.Fatalf("accounts after a restart: %d %s", st, code)
	}
}

func hasAccountChange(cs []api.Change) bool {
	for _, c := range cs {
		if c.Kind == api.ChangeAccount {
			return true
		}
	}
	return false
}

func (e *env) vouchers(bytes int64, days, count int) []string {
	e.t.Helper()
	var vr api.AdminVoucherResponse
	if st, code := e.admin("POST", "/v1/admin/vouchers", api.AdminVoucherRequest{Bytes: bytes, Days: days, Count: count}, &vr); code != "" {
		e.t.Fatalf("vouchers: %d %s", st, code)
	}
	return vr.Codes
}

func testVouchers(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, func(c *Config) { c.DefaultQuota = 1 << 20 })
	u := e.signup("v@example.com")
	codes := e.vouchers(10<<20, 30, 3)

	seq := u.account().Seq
	var rr api.RedeemResponse
	u.must("POST", "/v1/redeem", api.RedeemRequest{Code: strings.ToLower(codes[0])}, &rr)
	if rr.Bytes != 10<<20 || rr.Days != 30 || rr.Account.QuotaLimit != 11<<20 || rr.Account.Plan != "paid" {
		t.Fatalf("redeem: %+v", rr)
	}
	if d := time.Until(rr.Account.PlanExpires); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Fatalf("plan expires in %v", d)
	}
	ch, _ := u.changes(seq, 0)
	if !hasAccountChange(ch.Changes) {
		t.Fatalf("redeem not on the feed: %+v", ch)
	}
	st, code := u.call("POST", "/v1/redeem", api.RedeemRequest{Code: codes[0]}, nil)
	expect(t, "second redeem", st, code, 409, api.CodeUsedVoucher)
	st, code = u.call("POST", "/v1/redeem", api.RedeemRequest{Code: "AAAA-BBBB"}, nil)
	expect(t, "malformed code", st, code, 400, api.CodeBadVoucher)
	bad := []byte(codes[1])
	bad[0] ^= 1 // checksum catches it
	st, code = u.call("POST", "/v1/redeem", api.RedeemRequest{Code: string(bad)}, nil)
	expect(t, "typo", st, code, 400, api.CodeBadVoucher)
	if a := u.account(); a.QuotaLimit != 11<<20 {
		t.Fatalf("failed redeems changed the quota: %+v", a)
	}

	// 20 concurrent redeems of one code by two accounts: one wins, quota grows once.
	v := e.signup("v2@example.com")
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	for i := 0; i < 20; i++ {
		who := u
		if i%2 == 1 {
			who = v
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, code := e.callNoFatal("POST", "/v1/redeem", who.token, api.RedeemRequest{Code: codes[1]})
			mu.Lock()
			results[fmt.Sprintf("%d %s", st, code)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if results["200 "] != 1 || results["409 "+api.CodeUsedVoucher] != 19 {
		t.Fatalf("concurrent redeems: %v", results)
	}
	total := u.account().QuotaLimit + v.account().QuotaLimit
	if total != (11<<20)+(1<<20)+(10<<20) {
		t.Fatalf("quota after concurrent redeems: %d", total)
	}

	// A read-only account becomes writable with a redeem, at once.
	w := e.signup("v3@example.com")
	w.putChunk(900 << 10)
	if st, code := e.admin("POST", "/v1/admin/quota", api.AdminQuotaRequest{Email: w.email, Limit: 100 << 10}, nil); code != "" {
		t.Fatalf("quota: %d %s", st, code)
	}
	if !w.account().ReadOnly {
		t.Fatal("not read-only")
	}
	st, code = w.call("PUT", "/v1/chunks/"+randMAC(), randBytes(1000), nil)
	expect(t, "upload while read-only", st, code, 403, api.CodeReadOnly)
	w.must("POST", "/v1/redeem", api.RedeemRequest{Code: codes[2]}, &rr)
	if rr.Account.ReadOnly {
		t.Fatalf("still read-only: %+v", rr.Account)
	}
	w.putChunk(1000)
	w.create(api.RootID, api.TypeDir)
}

// callNoFatal is call for goroutines: it never calls t.Fatal.
func (e *env) callNoFatal(method, path, token string, body any) (int, string) {
	j, _ := jsonMarshal(body)
	if raw, ok := body.(rawBody); ok {
		j = raw
	}
	req, _ := http.NewRequest(method, e.url+path, bytes.NewReader(j))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode < 300 {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, ""
	}
	var er api.ErrorResponse
	jsonDecode(resp.Body, &er)
	return resp.StatusCode, er.Error.Code
}

func testTopupDisabled(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("t@example.com")
	st, code := u.call("POST", "/v1/topup", api.TopupRequest{Bytes: 1 << 30, Months: 1}, nil)
	expect(t, "topup without payments", st, code, 501, api.CodePaymentsOff)
	var ir api.InvoicesResponse
	u.must("GET", "/v1/invoices", nil, &ir)
	if ir.Invoices == nil || len(ir.Invoices) != 0 {
		t.Fatalf("invoices: %+v", ir)
	}
}

// testUsageFeed: large usage changes reach the feed (coalesced), small ones
// do not add a change per chunk.
func testUsageFeed(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, func(c *Config) { c.GCGrace = time.Millisecond; c.DefaultQuota = 100 << 20 })
	u := e.signup("u@example.com")
	seq := u.account().Seq
	u.putChunk(1000)
	u.putChunk(1000)
	if a := u.account(); a.Seq != seq {
		t.Fatalf("tiny uploads added changes: seq %d → %d", seq, a.Seq)
	}
	big := u.putChunk(4 << 20) // > usageStep of 100 MiB
	ch, _ := u.changes(seq, 0)
	if !hasAccountChange(ch.Changes) {
		t.Fatalf("a 4 MiB upload did not announce usage: %+v", ch)
	}
	seq = ch.Seq
	_ = big
	time.Sleep(5 * time.Millisecond)
	if n, _, err := e.s.RunGC(context.Background()); err != nil || n != 3 {
		t.Fatalf("gc: %d %v", n, err)
	}
	ch, _ = u.changes(seq, 0)
	if !hasAccountChange(ch.Changes) {
		t.Fatalf("gc did not announce usage: %+v", ch)
	}
	if a := u.chunkAccount(); a.QuotaUsed != 0 {
		t.Fatalf("usage after gc: %d", a.QuotaUsed)
	}
}

// testOrphanSweep: a blob written whose record never committed (crash) is
// found by its pending marker and deleted by the GC.
func testOrphanSweep(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil) // GCGrace 1 h: the orphan is young until we shorten it
	u := e.signup("o@example.com")
	kept := u.putChunk(1000)
	u.create(api.RootID, api.TypeFile, kept) // referenced: the GC keeps it
	orphan := randMAC()
	ctx := context.Background()
	// What putChunk does up to the crash: marker, then blob, no record.
	if err := e.s.db.Update(func(tx *badger.Txn) error { return setJSON(tx, kPend(u.id, orphan), time.Now()) }); err != nil {
		t.Fatal(err)
	}
	if err := e.s.blobs.Put(ctx, blobKey(u.id, orphan), randBytes(777)); err != nil {
		t.Fatal(err)
	}
	e.reopen() // the "crash"
	if _, _, err := e.s.RunGC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.blobs.Size(ctx, blobKey(u.id, orphan)); err != nil {
		t.Fatalf("young orphan swept too early: %v", err)
	}
	e.s.cfg.GCGrace = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	if _, _, err := e.s.RunGC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.blobs.Size(ctx, blobKey(u.id, orphan)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("orphan blob not swept: %v", err)
	}
	if !chunkStored(t, e.s, u.id, kept) {
		t.Fatal("recorded chunk lost")
	}
	var pend bool
	e.s.db.View(func(tx *badger.Txn) error { pend, _ = exists(tx, kPend(u.id, orphan)); return nil })
	if pend {
		t.Fatal("pending marker left behind")
	}
	// Normal uploads leave no marker.
	e.s.db.View(func(tx *badger.Txn) error { pend, _ = exists(tx, kPend(u.id, kept)); return nil })
	if pend || u.chunkAccount().QuotaUsed != 1000 {
		t.Fatalf("marker after upload %v, usage %d", pend, u.account().QuotaUsed)
	}
}
