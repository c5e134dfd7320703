package payment

// Tests against a real btcd node in regtest on 127.0.0.1, driven by btcd's
// integration/rpctest harness: its in-memory wallet pays invoices and it
// mines blocks. The btcd binary comes from $KUMO_BTCD or is built once into
// the user cache directory.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil/v2"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/integration/rpctest"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"
	"github.com/dgraph-io/badger/v4"

	"kumo/internal/payment/paytest"
)

const childEnv = "KUMO_PAYMENT_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	code := m.Run()
	shared.teardown()
	os.Exit(code)
}

// sharedNode is one btcd regtest node for the whole test binary; tests using
// it run sequentially (none calls t.Parallel).
type sharedNode struct {
	once sync.Once
	h    *rpctest.Harness
	err  error
	skip string
}

var shared sharedNode

func (n *sharedNode) teardown() {
	if n.h != nil {
		n.h.TearDown()
	}
}

func (n *sharedNode) get(t *testing.T) *rpctest.Harness {
	t.Helper()
	n.once.Do(func() {
		path, err := paytest.BtcdPath()
		if err != nil {
			n.skip = err.Error()
			return
		}
		h, err := rpctest.New(&chaincfg.RegressionNetParams, nil, []string{"--nolisten"}, path)
		if err != nil {
			n.err = fmt.Errorf("rpctest.New: %w", err)
			return
		}
		if err := h.SetUp(true, 60); err != nil {
			h.TearDown()
			n.err = fmt.Errorf("harness setup: %w", err)
			return
		}
		n.h = h
	})
	if n.skip != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no btcd for the node tests: %s", n.skip)
		}
		t.Skipf("no btcd (set KUMO_BTCD): %s", n.skip)
	}
	if n.err != nil {
		t.Fatal(n.err)
	}
	return n.h
}

// env is one payment service (own badger dir) on the shared node.
type env struct {
	t      *testing.T
	h      *rpctest.Harness
	dir    string
	cfg    Config
	db     *badger.DB
	svc    *Service
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	changes map[string]int
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	h := shared.get(t)
	key, _ := testAccountKey(t, &chaincfg.RegressionNetParams, true)
	e := &env{t: t, h: h, dir: t.TempDir(), changes: map[string]int{}}
	e.cfg = nodeConfig(h, key)
	e.cfg.OnChange = func(a string) { e.mu.Lock(); e.changes[a]++; e.mu.Unlock() }
	if mod != nil {
		mod(&e.cfg)
	}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func nodeConfig(h *rpctest.Harness, key string) Config {
	rc := h.RPCConfig()
	return Config{
		AccountKey: key, Network: "regtest",
		RPCHost: rc.Host, RPCUser: rc.User, RPCPassword: rc.Pass, RPCTLS: true, RPCCert: rc.Certificates,
		PriceSatPerGiBMonth: 100_000, Confirmations: 2,
		InvoiceLifetime: time.Hour, PollInterval: 150 * time.Millisecond,
	}
}

func (e *env) start() {
	e.t.Helper()
	e.db = openDB(e.t, e.dir)
	svc, err := New(e.db, e.cfg, ledgerCredit, slog.New(slog.NewTextHandler(testWriter{e.t}, nil)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.svc = svc
	// First poll synchronously so the scan cursor exists before any payment.
	if err := svc.Poll(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.run()
}

// start2 starts without the first synchronous poll (node may be down).
func (e *env) start2() {
	e.t.Helper()
	e.db = openDB(e.t, e.dir)
	svc, err := New(e.db, e.cfg, ledgerCredit, quiet)
	if err != nil {
		e.t.Fatal(err)
	}
	e.svc = svc
	e.run()
}

func (e *env) run() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() { defer close(e.done); e.svc.Run(ctx) }()
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
	e.cancel = nil
	if err := e.db.Close(); err != nil {
		e.t.Error(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func scriptOf(t testing.TB, addr string) []byte {
	a, err := address.DecodeAddress(addr, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	s, err := txscript.PayToAddrScript(a)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pay sends sat to addr from the harness wallet.
func pay(t testing.TB, h *rpctest.Harness, addr string, sat int64) *chainhash.Hash {
	t.Helper()
	id, err := h.SendOutputs([]*wire.TxOut{wire.NewTxOut(sat, scriptOf(t, addr))}, 10)
	if err != nil {
		t.Fatalf("pay: %v", err)
	}
	return id
}

func mine(t testing.TB, h *rpctest.Harness, n uint32) []*chainhash.Hash {
	t.Helper()
	hs, err := h.Client.Generate(n)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	return hs
}

// wait polls the invoice until cond holds.
func (e *env) wait(id, desc string, cond func(Invoice) bool) Invoice {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var inv Invoice
	for time.Now().Before(deadline) {
		var err error
		if inv, err = e.svc.Invoice(id); err != nil {
			e.t.Fatal(err)
		}
		if cond(inv) {
			return inv
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("invoice never reached %s; last: state=%s paid=%d confs=%d flags partial=%v over=%v late=%v lost=%v credited=%v",
		desc, inv.State, inv.PaidSat, inv.Confirmations, inv.Partial, inv.Over, inv.PaidLate, inv.PaymentLost, inv.Credited)
	return inv
}

func (e *env) waitState(id string, s State, confs int64) Invoice {
	e.t.Helper()
	return e.wait(id, fmt.Sprintf("%s with %d confirmations", s, confs), func(i Invoice) bool {
		return i.State == s && i.Confirmations == confs
	})
}

func (e *env) ledger(account string) (int64, int64) { return readLedger(e.t, e.db, account) }

func TestNodeExactPayment(t *testing.T) {
	e := newEnv(t, nil)
	inv, err := e.svc.CreateInvoice("alice", 3*GiB/2, 2) // rounds up to 2 GiB
	if err != nil {
		t.Fatal(err)
	}
	if inv.AmountSat != 400_000 || inv.AmountBTC != "0.00400000" || inv.State != StateNew {
		t.Fatalf("invoice %+v", inv)
	}
	if !strings.HasPrefix(inv.URI, "bitcoin:"+inv.Address+"?amount=0.004&label=kumo") || !strings.HasPrefix(inv.Address, "bcrt1q") {
		t.Fatalf("uri %s", inv.URI)
	}
	pay(t, e.h, inv.Address, inv.AmountSat)
	got := e.waitState(inv.ID, StateProcessing, 0)
	if got.PaidSat != inv.AmountSat || got.MissingSat != 0 || len(got.Payments) != 1 || got.Credited {
		t.Fatalf("processing invoice %+v", got)
	}
	mine(t, e.h, 1)
	e.waitState(inv.ID, StateProcessing, 1)
	mine(t, e.h, 1)
	got = e.wait(inv.ID, "settled and credited", func(i Invoice) bool { return i.State == StateSettled && i.Credited })
	if got.Confirmations != 2 || got.SettledAt == nil || got.Over || got.Partial || got.Attention != "" {
		t.Fatalf("settled invoice %+v", got)
	}
	mine(t, e.h, 3)
	time.Sleep(500 * time.Millisecond)
	if n, b := e.ledger("alice"); n != 1 || b != 3*GiB/2 {
		t.Fatalf("ledger: %d credits, %d bytes; want 1 credit of %d", n, b, 3*GiB/2)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.changes["alice"] < 4 {
		t.Fatalf("OnChange called %d times for alice, want each state change", e.changes["alice"])
	}
}

func TestNodePartialThenCompleted(t *testing.T) {
	e := newEnv(t, nil)
	inv, err := e.svc.CreateInvoice("bob", GiB, 1)
	if err != nil {
		t.Fatal(err)
	}
	pay(t, e.h, inv.Address, 30_000)
	got := e.wait(inv.ID, "partial", func(i Invoice) bool { return i.Partial })
	if got.State != StateNew || got.MissingSat != 70_000 || got.MissingBTC != "0.00070000" {
		t.Fatalf("partial invoice %+v", got)
	}
	mine(t, e.h, 2)
	time.Sleep(400 * time.Millisecond)
	if got, _ := e.svc.Invoice(inv.ID); got.State != StateNew {
		t.Fatalf("confirmed partial payment changed state to %s", got.State)
	}
	pay(t, e.h, inv.Address, 70_000)
	e.waitState(inv.ID, StateProcessing, 0)
	mine(t, e.h, 2)
	got = e.wait(inv.ID, "settled", func(i Invoice) bool { return i.Credited })
	if got.State != StateSettled || got.Partial || len(got.Payments) != 2 || got.PaidSat != 100_000 {
		t.Fatalf("settled %+v", got)
	}
	if n, _ := e.ledger("bob"); n != 1 {
		t.Fatalf("%d credits", n)
	}
}

func TestNodeOverpayment(t *testing.T) {
	e := newEnv(t, nil)
	inv, _ := e.svc.CreateInvoice("carol", GiB, 1)
	pay(t, e.h, inv.Address, 150_000)
	mine(t, e.h, 2)
	got := e.wait(inv.ID, "settled", func(i Invoice) bool { return i.Credited })
	if got.State != StateSettled || !got.Over || got.OverSat != 50_000 {
		t.Fatalf("overpaid %+v", got)
	}
	if n, b := e.ledger("carol"); n != 1 || b != GiB {
		t.Fatalf("ledger %d %d", n, b)
	}
}

func TestNodeLatePayment(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InvoiceLifetime = 2 * time.Second })
	inv, _ := e.svc.CreateInvoice("dave", GiB, 1)
	e.waitState(inv.ID, StateExpired, 0)
	pay(t, e.h, inv.Address, inv.AmountSat)
	got := e.wait(inv.ID, "paid late", func(i Invoice) bool { return i.PaidLate })
	if got.State != StateExpired || got.LateSat != inv.AmountSat || got.Attention == "" {
		t.Fatalf("late %+v", got)
	}
	mine(t, e.h, 3)
	e.wait(inv.ID, "late payment confirmed", func(i Invoice) bool {
		return len(i.Payments) == 1 && i.Payments[0].Confirmations == 2
	})
	got, _ = e.svc.Invoice(inv.ID)
	if got.State != StateExpired || got.Credited {
		t.Fatalf("late payment settled by itself: %+v", got)
	}
	if l, err := e.svc.AttentionInvoices(); err != nil || len(l) != 1 || l[0].ID != inv.ID {
		t.Fatalf("attention list %v %v", l, err)
	}
	// The operator settles it by hand: credited once.
	if _, err := e.svc.MarkSettled(inv.ID, "late payment accepted"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.MarkSettled(inv.ID, ""); err == nil {
		t.Fatal("settled twice")
	}
	mine(t, e.h, 1)
	time.Sleep(400 * time.Millisecond)
	got, _ = e.svc.Invoice(inv.ID)
	if got.State != StateSettled || !got.Credited {
		t.Fatalf("after manual settle %+v", got)
	}
	if n, _ := e.ledger("dave"); n != 1 {
		t.Fatalf("%d credits", n)
	}
}

// wallet is a single test-owned P2WPKH key, so the test can sign two
// conflicting spends of one coin (a double spend after a reorg).
type wallet struct {
	key    *btcec.PrivateKey
	script []byte
	coin   wire.OutPoint
	value  int64
}

func fundWallet(t *testing.T, h *rpctest.Harness) *wallet {
	key, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	a, err := address.NewAddressWitnessPubKeyHash(address.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	w := &wallet{key: key, script: scriptOf(t, a.EncodeAddress()), value: 10_000_000}
	tx, err := h.CreateTransaction([]*wire.TxOut{wire.NewTxOut(w.value, w.script)}, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range tx.TxOut {
		if string(o.PkScript) == string(w.script) {
			w.coin = wire.OutPoint{Hash: tx.TxHash(), Index: uint32(i)}
		}
	}
	if _, err := h.Client.SendRawTransaction(tx, true); err != nil {
		t.Fatal(err)
	}
	mine(t, h, 1)
	return w
}

// spend signs a transaction spending the wallet's coin to script.
func (w *wallet) spend(t *testing.T, script []byte, sat int64) *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&w.coin, nil, nil))
	tx.AddTxOut(wire.NewTxOut(sat, script))
	sh := txscript.NewTxSigHashes(tx, txscript.NewCannedPrevOutputFetcher(w.script, w.value))
	wit, err := txscript.WitnessSignature(tx, sh, 0, w.value, w.script, txscript.SigHashAll, w.key, true)
	if err != nil {
		t.Fatal(err)
	}
	tx.TxIn[0].Witness = wit
	return tx
}

// TestNodeReorg: a payment confirmed in a block that is then invalidated goes
// back to the mempool (Processing, 0 confirmations); when a competing block
// double-spends it, the invoice moves back to New with its payment lost.
func TestNodeReorg(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, settled := range []bool{false, true} {
		if settled {
			e.stop()
			e.cfg.Confirmations = 1
			e.start()
		}
		w := fundWallet(t, e.h)
		inv, _ := e.svc.CreateInvoice("erin", GiB, 1)
		txA := w.spend(t, scriptOf(t, inv.Address), inv.AmountSat)
		if _, err := e.h.Client.SendRawTransaction(txA, true); err != nil {
			t.Fatal(err)
		}
		blocks := mine(t, e.h, 1)
		if settled {
			e.wait(inv.ID, "settled", func(i Invoice) bool { return i.Credited })
		} else {
			e.waitState(inv.ID, StateProcessing, 1)
		}
		// Reorg: invalidate the block holding the payment.
		if _, err := e.svc.rpc.Call(ctx, "invalidateblock", blocks[0].String()); err != nil {
			t.Fatalf("invalidateblock: %v", err)
		}
		if !settled {
			e.waitState(inv.ID, StateProcessing, 0)
		} else {
			time.Sleep(500 * time.Millisecond)
			if got, _ := e.svc.Invoice(inv.ID); got.State != StateSettled || !got.Credited || got.PaymentLost {
				t.Fatalf("settled invoice after reorg to mempool: %+v", got)
			}
		}
		// A competing block double-spends the payment's coin.
		other, _ := e.h.NewAddress()
		txB := w.spend(t, scriptOf(t, other.EncodeAddress()), w.value-20_000)
		if _, err := e.h.GenerateAndSubmitBlock([]*btcutil.Tx{btcutil.NewTx(txB)}, -1, time.Time{}); err != nil {
			t.Fatalf("submit double-spend block: %v", err)
		}
		got := e.wait(inv.ID, "payment lost", func(i Invoice) bool { return i.PaymentLost })
		if settled {
			if got.State != StateSettled || !got.Credited || got.Attention == "" {
				t.Fatalf("settled invoice after losing payment: %+v", got)
			}
		} else if got.State != StateNew || got.PaidSat != 0 || !got.Payments[0].Gone {
			t.Fatalf("processing invoice after losing payment: %+v", got)
		}
	}
	if n, _ := e.ledger("erin"); n != 1 {
		t.Fatalf("%d credits, want 1 (only the settled round)", n)
	}
}

// TestNodeReorgRemined: the reorged-out payment is mined again and settles.
func TestNodeReorgRemined(t *testing.T) {
	e := newEnv(t, nil)
	inv, _ := e.svc.CreateInvoice("fay", GiB, 1)
	pay(t, e.h, inv.Address, inv.AmountSat)
	blocks := mine(t, e.h, 1)
	e.waitState(inv.ID, StateProcessing, 1)
	if _, err := e.svc.rpc.Call(context.Background(), "invalidateblock", blocks[0].String()); err != nil {
		t.Fatal(err)
	}
	e.waitState(inv.ID, StateProcessing, 0)
	mine(t, e.h, 2)
	got := e.wait(inv.ID, "settled", func(i Invoice) bool { return i.Credited })
	if got.Payments[0].Height <= 0 || got.PaymentLost || got.State != StateSettled {
		t.Fatalf("%+v", got)
	}
	if n, _ := e.ledger("fay"); n != 1 {
		t.Fatalf("%d credits", n)
	}
}

// TestNodeRestart closes and reopens the database and the service between
// payment and crediting, including right between the settling block and the
// credit transaction.
func TestNodeRestart(t *testing.T) {
	e := newEnv(t, nil)
	inv, _ := e.svc.CreateInvoice("gus", GiB, 1)
	pay(t, e.h, inv.Address, inv.AmountSat)
	mine(t, e.h, 1)
	e.waitState(inv.ID, StateProcessing, 1)
	e.stop()
	mine(t, e.h, 1) // settles while the service is down
	e.start()
	e.wait(inv.ID, "credited after restart", func(i Invoice) bool { return i.Credited })
	e.stop()
	e.start()
	time.Sleep(400 * time.Millisecond)
	if n, _ := e.ledger("gus"); n != 1 {
		t.Fatalf("%d credits", n)
	}

	// Crash window: the block that settles is committed (Settled, credit due)
	// but the credit transaction has not run.
	inv2, _ := e.svc.CreateInvoice("gus", 2*GiB, 1)
	e.stop()
	e.db = openDB(t, e.dir)
	svc, err := New(e.db, e.cfg, ledgerCredit, quiet)
	if err != nil {
		t.Fatal(err)
	}
	pay(t, e.h, inv2.Address, inv2.AmountSat)
	mine(t, e.h, 2)
	ctx := context.Background()
	tip, err := svc.followChain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.scanMempool(ctx, tip); err != nil {
		t.Fatal(err)
	}
	got, _ := svc.Invoice(inv2.ID)
	if got.State != StateSettled || got.Credited {
		t.Fatalf("before credit: %+v", got)
	}
	e.db.Close() // "crash"
	e.start()
	e.wait(inv2.ID, "credited after crash", func(i Invoice) bool { return i.Credited })
	if n, b := e.ledger("gus"); n != 2 || b != 3*GiB {
		t.Fatalf("ledger %d credits %d bytes, want 2 and 3 GiB", n, b)
	}
	// Addresses keep advancing after restarts.
	inv3, _ := e.svc.CreateInvoice("gus", GiB, 1)
	if inv3.AddressIndex != 2 || inv3.Address == inv.Address || inv3.Address == inv2.Address {
		t.Fatalf("address index %d after restart", inv3.AddressIndex)
	}
}

// childMain runs the service in a child process that the test kills with
// SIGKILL. It prints "STATE <invoice> <state> <credited>" on every change.
func childMain() int {
	var cfg Config
	cfg.AccountKey = os.Getenv("KP_KEY")
	cfg.Network = "regtest"
	cfg.RPCHost = os.Getenv("KP_HOST")
	cfg.RPCUser, cfg.RPCPassword = os.Getenv("KP_USER"), os.Getenv("KP_PASS")
	cfg.RPCTLS, cfg.RPCInsecureSkipVerify = true, true
	cfg.PriceSatPerGiBMonth, cfg.Confirmations = 100_000, 2
	cfg.InvoiceLifetime, cfg.PollInterval = time.Hour, 20*time.Millisecond
	db, err := badger.Open(badger.DefaultOptions(os.Getenv("KP_DIR")).WithLogger(nil))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	var svc *Service
	cfg.OnChange = func(account string) {
		l, _ := svc.Invoices(account)
		for _, inv := range l {
			fmt.Printf("STATE %s %s %v\n", inv.ID, inv.State, inv.Credited)
		}
	}
	svc, err = New(db, cfg, ledgerCredit, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	fmt.Println("READY")
	svc.Run(context.Background())
	return 0
}

// TestNodeKill9 kills the service process with SIGKILL at varying moments
// after the settling blocks are mined; the reopened service credits each
// invoice exactly once.
func TestNodeKill9(t *testing.T) {
	h := shared.get(t)
	key, _ := testAccountKey(t, &chaincfg.RegressionNetParams, false)
	cfg := nodeConfig(h, key)
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	creditedBeforeKill := 0
	delays := []time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond, 60 * time.Millisecond, 150 * time.Millisecond, 400 * time.Millisecond}
	for i, delay := range delays {
		account := fmt.Sprintf("kill%d", i)
		db := openDB(t, dir)
		svc, err := New(db, cfg, ledgerCredit, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := svc.Poll(context.Background()); err != nil { // sets the scan cursor
				t.Fatal(err)
			}
		}
		inv, err := svc.CreateInvoice(account, GiB, 1)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()

		rc := h.RPCConfig()
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", "KP_KEY="+key, "KP_HOST="+rc.Host,
			"KP_USER="+rc.User, "KP_PASS="+rc.Pass, "KP_DIR="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		waitLine := func(want string) {
			timeout := time.After(20 * time.Second)
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("child exited before %q", want)
					}
					if strings.HasPrefix(l, want) {
						return
					}
				case <-timeout:
					cmd.Process.Kill()
					t.Fatalf("child never printed %q", want)
				}
			}
		}
		waitLine("READY")
		pay(t, h, inv.Address, inv.AmountSat)
		waitLine("STATE " + inv.ID + " Processing")
		mine(t, h, 2)
		time.Sleep(delay)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		for range lines {
		}

		db = openDB(t, dir)
		if got, _ := readInvoice(db, inv.ID); got.Credited {
			creditedBeforeKill++
		}
		svc, err = New(db, cfg, ledgerCredit, quiet)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			if err := svc.Poll(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got, _ := svc.Invoice(inv.ID); got.Credited {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("invoice %d not credited after restart", i)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := svc.Poll(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n, _ := readLedger(t, db, account); n != 1 {
			t.Fatalf("kill after %v: %d credits", delay, n)
		}
		db.Close()
	}
	t.Logf("%d of %d kills landed after the child had credited", creditedBeforeKill, len(delays))
}

func readInvoice(db *badger.DB, id string) (Invoice, error) {
	var inv Invoice
	err := db.View(func(txn *badger.Txn) error {
		_, err := getJSON(txn, invKey(id), &inv)
		return err
	})
	return inv, err
}

var quiet = slog.New(slog.DiscardHandler)

// TestNodeInvalid: paid in full on time but never confirmed within the watch
// window, the invoice becomes Invalid and stays so when mined later.
func TestNodeInvalid(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InvoiceLifetime, c.LateWindow = 4*time.Second, 2*time.Second })
	inv, _ := e.svc.CreateInvoice("hal", GiB, 1)
	pay(t, e.h, inv.Address, inv.AmountSat)
	e.waitState(inv.ID, StateProcessing, 0)
	got := e.waitState(inv.ID, StateInvalid, 0)
	if got.Attention == "" || got.Credited {
		t.Fatalf("invalid %+v", got)
	}
	mine(t, e.h, 2)
	time.Sleep(500 * time.Millisecond)
	if got, _ := e.svc.Invoice(inv.ID); got.State != StateInvalid || got.Credited {
		t.Fatalf("unwatched invoice changed: %+v", got)
	}
	if n, _ := e.ledger("hal"); n != 0 {
		t.Fatalf("%d credits", n)
	}
	// The operator may still settle it by hand, once.
	if _, err := e.svc.MarkSettled(inv.ID, ""); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.ledger("hal"); n != 1 {
		t.Fatalf("%d credits", n)
	}
}

// TestNodeExpiresWhileNodeDown: expiry shows even when the node is unreachable.
func TestNodeExpiresWhileNodeDown(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InvoiceLifetime = time.Second })
	inv, _ := e.svc.CreateInvoice("ivy", GiB, 1)
	e.stop()
	e.cfg.RPCHost = "127.0.0.1:1" // nothing listens there
	e.start2()
	e.waitState(inv.ID, StateExpired, 0)
}
