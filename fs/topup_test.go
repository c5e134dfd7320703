package fs

// Bitcoin top-up end to end through a mounted drive, against a real btcd
// regtest node driven by btcd's integration/rpctest harness (as
// remote/server's TestTopupBitcoin does). The btcd binary comes from
// $KUMO_BTCD or is built once into the user cache directory.

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"kumo/internal/control"
	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/payment"
	"kumo/internal/payment/paytest"
	"kumo/remote/server"
	"kumo/remote/session"
)

// startPayingCloud is startCloud with Bitcoin payments configured.
func startPayingCloud(t *testing.T, quota int64, pc *payment.Config) *cloud {
	t.Helper()
	c := serveCloud(t, server.Config{DataDir: t.TempDir(), DefaultQuota: quota, Payments: pc})
	s, err := session.Signup(context.Background(), c.client(t), c.url, testEmail, []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	c.sess = s
	return c
}

// parseBTC turns "0.00100000" into satoshis.
func parseBTC(t *testing.T, s string) int64 {
	t.Helper()
	whole, frac, _ := strings.Cut(s, ".")
	w, err1 := strconv.ParseInt(whole, 10, 64)
	frac = (frac + "00000000")[:8]
	f, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("amount %q", s)
	}
	return w*100_000_000 + f
}

// TestTopupThroughMount: `topup 1GiB` written to .kumo, the invoice read from
// .kumo.json and .kumo-topup.png, paid from the harness wallet; the state goes
// New → Processing → Settled in .kumo.json, the quota grows in statfs, and an
// upload the cloud had refused for quota completes.
func TestTopupThroughMount(t *testing.T) {
	needFUSE(t)
	h := paytest.StartBtcd(t, 10)
	rc := h.RPCConfig()
	pc := &payment.Config{
		AccountKey: paytest.WatchOnlyKey(t), Network: "regtest",
		RPCHost: rc.Host, RPCUser: rc.User, RPCPassword: rc.Pass, RPCTLS: true, RPCCert: rc.Certificates,
		PriceSatPerGiBMonth: 100_000, Confirmations: 2,
		InvoiceLifetime: time.Hour, PollInterval: 100 * time.Millisecond,
	}
	const base = 64 << 20
	c := startPayingCloud(t, base, pc)
	// One poll first, so the scan cursor exists before anything is paid.
	if err := c.srv.Payments().Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Through a proxy that can hold the change feed: the feed's account
	// change is what refreshes the quota otherwise, and it may come late.
	p := hostile.Start(t, c.url)
	var holdFeed atomic.Bool
	p.On(http.MethodGet, "/v1/changes", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		for holdFeed.Load() {
			select {
			case <-req.Context().Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		}
		return next(req)
	})
	// And that fails the account's reads for a while once the cloud has
	// listed the invoice Settled: the drive's read of the credited quota
	// fails, so the report must keep showing the invoice unpaid.
	var settledListed atomic.Bool
	var failUntil atomic.Int64 // unix ns
	p.On(http.MethodGet, "/v1/invoices", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		resp := next(req)
		if resp != nil && bytes.Contains(resp.Body, []byte(`"state":"Settled"`)) {
			settledListed.Store(true)
		}
		return resp
	})
	var accountFailed atomic.Int32
	p.On(http.MethodGet, "/v1/account", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if settledListed.Load() {
			now := time.Now().UnixNano()
			failUntil.CompareAndSwap(0, now+int64(3*time.Second)) // past the drive's 1.5 s fetch
			if now < failUntil.Load() {
				accountFailed.Add(1)
				return &hostile.Response{Status: http.StatusServiceUnavailable, Header: http.Header{}, Body: []byte("unavailable")}
			}
		}
		return next(req)
	})
	via := *c
	via.url = p.URL
	m := via.mount(t, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour })

	// A queued upload the cloud refuses for quota (the operator shrank it).
	data := randBytes(2<<20 + 777)
	f, err := os.Create(m.p("queued"))
	must(t, err)
	_, err = f.Write(data)
	must(t, err)
	must(t, c.srv.SetQuota(testEmail, 1<<20))
	must(t, f.Close())
	waitFor(t, 15*time.Second, func() bool { return m.report().Quota.Full })

	if _, err := os.Stat(m.p(control.FileQR)); !os.IsNotExist(err) {
		t.Fatalf("QR code before any invoice: %v", err)
	}
	must(t, m.command("topup 1GiB"))
	s := m.report()
	if len(s.Invoices) != 1 {
		t.Fatalf("invoices after topup: %+v", s.Invoices)
	}
	inv := s.Invoices[0]
	if inv.State != "New" || inv.Bytes != 1<<30 || inv.Months != 1 || inv.Address == "" ||
		!strings.HasPrefix(inv.URI, "bitcoin:"+inv.Address) || inv.Required != 2 || inv.AmountBTC != "0.00100000" {
		t.Fatalf("invoice in .kumo.json: %+v", inv)
	}
	if lc := s.LastCommand; lc == nil || !lc.OK || !strings.Contains(lc.Message, inv.ID) {
		t.Errorf("last command: %+v", lc)
	}
	text, err := os.ReadFile(m.p(".kumo"))
	must(t, err)
	if !bytes.Contains(text, []byte(inv.URI)) || !bytes.Contains(text, []byte("quota full")) {
		t.Errorf(".kumo lacks the invoice or the quota state:\n%s", text)
	}
	qr, err := os.ReadFile(m.p(control.FileQR))
	must(t, err)
	if img, err := png.Decode(bytes.NewReader(qr)); err != nil || img.Bounds().Dx() < 100 {
		t.Fatalf("%s is not a QR code image: %v", control.FileQR, err)
	}

	// Pay it from the harness wallet.
	addr, err := address.DecodeAddress(inv.Address, &chaincfg.RegressionNetParams)
	must(t, err)
	script, err := txscript.PayToAddrScript(addr)
	must(t, err)
	if _, err := h.SendOutputs([]*wire.TxOut{wire.NewTxOut(parseBTC(t, inv.AmountBTC), script)}, 10); err != nil {
		t.Fatalf("pay: %v", err)
	}
	stateIn := func(r control.Status) string {
		for _, i := range r.Invoices {
			if i.ID == inv.ID {
				return i.State
			}
		}
		return ""
	}
	state := func() string { return stateIn(m.report()) }
	waitFor(t, 30*time.Second, func() bool { return state() == "Processing" })
	if size, _ := m.statfsSize(); size != 1<<20 {
		t.Fatalf("quota grew before confirmation: statfs size %d", size)
	}
	if !m.report().Quota.Full {
		t.Fatal("queue unblocked before the payment settled")
	}
	holdFeed.Store(true)
	if _, err := h.Client.Generate(2); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 30*time.Second, func() bool {
		r := m.report()
		if stateIn(r) != "Settled" {
			return false
		}
		// The report that first shows it paid shows its quota too.
		if r.Quota.Limit != 1<<20+1<<30 {
			t.Errorf("invoice Settled beside the quota from before it: limit %d", r.Quota.Limit)
		}
		return true
	})
	holdFeed.Store(false)
	if accountFailed.Load() == 0 {
		t.Error("test premise: no read of the account failed after the invoice was listed Settled")
	}
	waitFor(t, 10*time.Second, func() bool { size, _ := m.statfsSize(); return size == 1<<20+1<<30 })
	t.Logf("settled and quota in statfs %v after mining", time.Since(start).Round(time.Millisecond))

	// The refused upload completes without a remount.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, m.d.Flush(ctx))
	t.Logf("queue drained %v after mining", time.Since(start).Round(time.Millisecond))
	s = m.report()
	if s.Quota.Full || s.Uploads.Files != 0 || s.Quota.Limit != 1<<20+1<<30 {
		t.Errorf("after settling: quota %+v uploads %+v", s.Quota, s.Uploads)
	}
	if _, err := os.Stat(m.p(control.FileQR)); !os.IsNotExist(err) {
		// The kernel may keep the entry for its timeout; the open must fail.
		if _, err := os.ReadFile(m.p(control.FileQR)); !os.IsNotExist(err) {
			t.Errorf("QR code with no open invoice: %v", err)
		}
	}
	m.unmount()
	m2 := c.mount(t, t.TempDir(), nil)
	checkFile(t, m2.p("queued"), data)
}
