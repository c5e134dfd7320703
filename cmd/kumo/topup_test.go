package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"kumo/internal/payment/paytest"
	"kumo/remote/api"
)

var (
	reAddress = regexp.MustCompile(`(?m)^\s+address\s+(\S+)`)
	reAmount  = regexp.MustCompile(`(?m)^\s+amount\s+\S+ BTC \((\d+) sat\)`)
	reURI     = regexp.MustCompile(`(?m)^\s+pay\s+(bitcoin:\S+)`)
)

// parseInvoice reads the address and amount kumo topup printed.
func parseInvoice(t *testing.T, out string) (addr string, sat int64) {
	t.Helper()
	ma, mm, mu := reAddress.FindStringSubmatch(out), reAmount.FindStringSubmatch(out), reURI.FindStringSubmatch(out)
	if ma == nil || mm == nil || mu == nil {
		t.Fatalf("topup output without address/amount/URI:\n%s", out)
	}
	if !strings.HasPrefix(mu[1], "bitcoin:"+ma[1]) {
		t.Fatalf("BIP21 URI %s is not for %s", mu[1], ma[1])
	}
	sat, _ = strconv.ParseInt(mm[1], 10, 64)
	return ma[1], sat
}

func TestCLITopup(t *testing.T) {
	h := paytest.StartBtcd(t, 60)
	bin := buildKumo(t)
	rc := h.RPCConfig()
	certFile := filepath.Join(t.TempDir(), "rpc.cert")
	os.WriteFile(certFile, rc.Certificates, 0o644)
	p := serveAt(t, bin, t.TempDir(), "127.0.0.1:0", "--quota", "100MiB",
		"--btc-xpub", paytest.WatchOnlyKey(t), "--btc-network", "regtest",
		"--btc-rpc", rc.Host, "--btc-rpc-user", rc.User, "--btc-rpc-pass", rc.Pass,
		"--btc-rpc-tls", "--btc-rpc-cert", certFile,
		"--btc-price-sat-per-gib-month", "100000", "--btc-confirmations", "2",
		"--btc-invoice-ttl", "30m", "--btc-poll", "200ms")
	u := userRunner(t, bin)
	u.ok("signup", "--server", p.url, "--email", "buyer@example.com")

	out := u.ok("topup", "1GiB", "--months", "2", "--no-wait")
	addr, sat := parseInvoice(t, out)
	if sat != 200000 {
		t.Fatalf("1 GiB for 2 months at 100000 sat/GiB/month: %d sat\n%s", sat, out)
	}
	if !strings.Contains(out, "█") && !strings.Contains(out, "▀") && !strings.Contains(out, "▄") {
		t.Fatalf("no QR code drawn:\n%s", out)
	}
	st := statusJSON(t, u)
	if len(st.Invoices) != 1 || st.Invoices[0].State != api.InvoiceNew || st.Invoices[0].Address != addr {
		t.Fatalf("status after topup: %+v", st.Invoices)
	}
	u.fails("--months must be", "topup", "1GiB", "--months", "0")
	u.fails("bad size", "topup", "lots")

	// Pay it, mine: the invoice settles and the quota grows.
	paytest.Pay(t, h, addr, sat)
	if _, err := h.Client.Generate(2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = statusJSON(t, u)
		if st.Invoices[0].State == api.InvoiceSettled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("invoice not settled: %+v", st.Invoices[0])
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.Quota.Limit != 100<<20+1<<30 {
		t.Fatalf("quota after settling: %d", st.Quota.Limit)
	}

	// Following an invoice: kumo topup waits, prints progress, ends on Settled.
	cmd := exec.Command(bin, "topup", "2GiB", "--interval", "200ms", "--no-qr")
	cmd.Env = append(os.Environ(), u.env...)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var printed strings.Builder
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	paid := false
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				done = true
				break
			}
			fmt.Fprintln(&printed, l)
			if !paid && strings.Contains(l, "waiting for payment") {
				a, s := parseInvoice(t, printed.String())
				paytest.Pay(t, h, a, s)
				paid = true
			}
			if strings.Contains(l, "Processing:") {
				h.Client.Generate(2)
			}
		case <-timeout:
			cmd.Process.Kill()
			t.Fatalf("topup still following after 60s:\n%s", printed.String())
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("topup: %v\n%s\n%s", err, printed.String(), stderr.String())
	}
	t.Logf("kumo topup followed the invoice:\n%s", printed.String())
	if !strings.Contains(printed.String(), "settled: quota now") {
		t.Fatalf("topup did not report settling:\n%s", printed.String())
	}
	if st := statusJSON(t, u); st.Quota.Limit != 100<<20+3<<30 || len(st.Invoices) != 2 {
		t.Fatalf("after the second top-up: %+v", st.Quota)
	}
	if txt := u.ok("status"); !strings.Contains(txt, "Settled") || !strings.Contains(txt, "bitcoin:") {
		t.Fatalf("status text:\n%s", txt)
	}
}

// A server without Bitcoin says so and points at vouchers.
func TestCLITopupWithoutPayments(t *testing.T) {
	bin := buildKumo(t)
	p := serveAt(t, bin, t.TempDir(), "127.0.0.1:0")
	u := userRunner(t, bin)
	u.ok("signup", "--server", p.url, "--email", "nopay@example.com")
	u.fails("voucher", "topup", "1GiB", "--no-wait")
	if st := statusJSON(t, u); len(st.Invoices) != 0 {
		t.Fatalf("invoices without payments: %+v", st.Invoices)
	}
	out, err := exec.Command(bin, "serve", "--data", t.TempDir(), "--btc-rpc-user", "u").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--btc-xpub") {
		t.Fatalf("btc flags without --btc-xpub: %v %s", err, out)
	}
}
