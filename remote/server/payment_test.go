package server

// Bitcoin top-up through the HTTP API against a real btcd regtest node,
// driven by btcd's integration/rpctest harness (as internal/payment's node
// tests do): its wallet pays the invoice and it mines blocks. The btcd binary
// comes from $KUMO_BTCD or is built once into the user cache directory.

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"

	"kumo/internal/payment"
	"kumo/internal/payment/paytest"
	"kumo/remote/api"
)

func (u *user) invoice(id string) api.Invoice {
	u.e.t.Helper()
	var ir api.InvoicesResponse
	u.must("GET", "/v1/invoices", nil, &ir)
	for _, inv := range ir.Invoices {
		if inv.ID == id {
			return inv
		}
	}
	u.e.t.Fatalf("invoice %s not listed", id)
	return api.Invoice{}
}

func (u *user) waitInvoice(id, state string) api.Invoice {
	u.e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		inv := u.invoice(id)
		if inv.State == state {
			return inv
		}
		if time.Now().After(deadline) {
			u.e.t.Fatalf("invoice never reached %s: %+v", state, inv)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTopupBitcoin(t *testing.T) {
	h := paytest.StartBtcd(t, 20)
	rc := h.RPCConfig()
	pc := &payment.Config{
		AccountKey: paytest.WatchOnlyKey(t), Network: "regtest",
		RPCHost: rc.Host, RPCUser: rc.User, RPCPassword: rc.Pass, RPCTLS: true, RPCCert: rc.Certificates,
		PriceSatPerGiBMonth: 100_000, Confirmations: 2,
		InvoiceLifetime: time.Hour, PollInterval: 100 * time.Millisecond,
	}
	const base = 1 << 30
	e := newEnv(t, nil, func(c *Config) { c.Payments = pc; c.DefaultQuota = base })
	// One poll first, so the scan cursor exists before anything is paid.
	if err := e.s.Payments().Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	u := e.signup("btc@example.com")

	for _, bad := range []api.TopupRequest{{Bytes: 1 << 20, Months: 1}, {Bytes: 1 << 30, Months: 0},
		{Bytes: 1 << 30, Months: 37}, {Bytes: 200 << 40, Months: 1}} {
		st, code := u.call("POST", "/v1/topup", bad, nil)
		expect(t, fmt.Sprintf("topup %+v", bad), st, code, 400, api.CodeBadRequest)
	}

	seq := u.account().Seq
	var inv api.Invoice
	u.must("POST", "/v1/topup", api.TopupRequest{Bytes: 2 << 30, Months: 3}, &inv)
	if inv.State != api.InvoiceNew || inv.AmountSat != 2*3*100_000 || inv.AmountBTC != "0.00600000" ||
		inv.Required != 2 || inv.Address == "" || inv.URI == "" || inv.Bytes != 2<<30 || inv.Months != 3 {
		t.Fatalf("invoice: %+v", inv)
	}

	// A long-poll on the feed wakes when the invoice moves.
	polled := make(chan api.ChangesResponse, 1)
	go func() {
		var cr api.ChangesResponse
		e.callNoFatalOut("GET", fmt.Sprintf("/v1/changes?after=%d&wait=30", seq), u.token, &cr)
		polled <- cr
	}()

	addr, err := address.DecodeAddress(inv.Address, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	script, err := txscript.PayToAddrScript(addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.SendOutputs([]*wire.TxOut{wire.NewTxOut(inv.AmountSat, script)}, 10); err != nil {
		t.Fatalf("pay: %v", err)
	}
	select {
	case cr := <-polled:
		if !hasAccountChange(cr.Changes) {
			t.Fatalf("long-poll woke without an account change: %+v", cr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long-poll did not wake on the invoice change")
	}
	u.waitInvoice(inv.ID, api.InvoiceProcessing)
	if a := u.account(); a.QuotaLimit != base {
		t.Fatalf("credited before confirmation: %+v", a)
	}
	if _, err := h.Client.Generate(2); err != nil {
		t.Fatal(err)
	}
	got := u.waitInvoice(inv.ID, api.InvoiceSettled)
	if got.PaidSat != inv.AmountSat || got.Confirmations != 2 || len(got.Flags) != 0 {
		t.Fatalf("settled invoice: %+v", got)
	}
	// The credit commits with the settled state: the quota is there now.
	a := u.account()
	if a.QuotaLimit != base+2<<30 || a.Plan != "paid" {
		t.Fatalf("account after settle: %+v", a)
	}
	if d := time.Until(a.PlanExpires); d < 89*24*time.Hour || d > 91*24*time.Hour {
		t.Fatalf("plan expires in %v, want 90 days", d)
	}
	cr, _ := u.changes(seq, 0)
	n := 0
	for _, c := range cr.Changes {
		if c.Kind == api.ChangeAccount {
			n++
		}
	}
	if n < 3 { // created, processing, settled (+ credited)
		t.Fatalf("account changes on the feed: %d (%+v)", n, cr.Changes)
	}

	// Exactly once: more blocks, more polls and a restart change nothing.
	if _, err := h.Client.Generate(3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	e.reopen()
	if err := e.s.Payments().Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if a := u.account(); a.QuotaLimit != base+2<<30 {
		t.Fatalf("quota after more blocks and a restart: %d, want %d", a.QuotaLimit, base+2<<30)
	}

	// Unpaid invoices are bounded per account.
	open := 0
	for i := 0; i < 10; i++ {
		st, code := u.call("POST", "/v1/topup", api.TopupRequest{Bytes: 1 << 30, Months: 1}, nil)
		if code == api.CodeRateLimited {
			break
		}
		if code != "" {
			t.Fatalf("topup %d: %d %s", i, st, code)
		}
		open++
	}
	if open != maxOpenInvoices {
		t.Fatalf("%d open invoices allowed, want %d", open, maxOpenInvoices)
	}
	var ir api.InvoicesResponse
	u.must("GET", "/v1/invoices", nil, &ir)
	if len(ir.Invoices) != maxOpenInvoices+1 || ir.Invoices[len(ir.Invoices)-1].ID != inv.ID {
		t.Fatalf("invoices (newest first, paid one last): %d", len(ir.Invoices))
	}
	var att api.InvoicesResponse
	if st, code := e.admin("GET", "/v1/admin/invoices/attention", nil, &att); code != "" || len(att.Invoices) != 0 {
		t.Fatalf("attention: %d %s %+v", st, code, att)
	}
}

// callNoFatalOut is callNoFatal decoding a JSON answer (for goroutines).
func (e *env) callNoFatalOut(method, path, token string, out any) int {
	req, _ := http.NewRequest(method, e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	jsonDecode(resp.Body, out)
	return resp.StatusCode
}
