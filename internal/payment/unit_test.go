package payment

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/dgraph-io/badger/v4"
)

// BIP84 test vector (mnemonic "abandon abandon ... about").
const (
	bip84Zpub  = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs"
	bip84Addr0 = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
	bip84Addr1 = "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
)

func TestBIP84Vector(t *testing.T) {
	d, err := newDeriver(bip84Zpub, &chaincfg.MainNetParams)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{bip84Addr0, bip84Addr1} {
		got, script, err := d.address(uint32(i))
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("address %d = %s, want %s", i, got, want)
		}
		if len(script) != 22 || script[0] != 0 || script[1] != 20 {
			t.Errorf("script %d = %x, want P2WPKH", i, script)
		}
	}
	// The same key is refused on another network.
	if _, err := newDeriver(bip84Zpub, &chaincfg.RegressionNetParams); err == nil {
		t.Error("mainnet zpub accepted for regtest")
	}
}

// testAccountKey returns a fresh random BIP84 account key m/84'/1'/0' for
// params, its public form (tpub, or vpub if slip132), and the private account
// key for cross-checking.
func testAccountKey(t testing.TB, params *chaincfg.Params, slip132 bool) (string, *hdkeychain.ExtendedKey) {
	t.Helper()
	seed := make([]byte, 32)
	rand.Read(seed)
	master, err := hdkeychain.NewMaster(seed, params)
	if err != nil {
		t.Fatal(err)
	}
	acct := master
	for _, i := range []uint32{84, 1, 0} {
		if acct, err = acct.Derive(hdkeychain.HardenedKeyStart + i); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := acct.Neuter()
	if err != nil {
		t.Fatal(err)
	}
	if slip132 {
		if pub, err = pub.CloneWithVersion(vpubVersion); err != nil {
			t.Fatal(err)
		}
	}
	return pub.String(), acct
}

func TestDeriveMatchesPrivatePath(t *testing.T) {
	params := &chaincfg.RegressionNetParams
	for _, slip := range []bool{false, true} {
		pub, priv := testAccountKey(t, params, slip)
		if slip != strings.HasPrefix(pub, "vpub") || !slip && !strings.HasPrefix(pub, "tpub") {
			t.Fatalf("unexpected key prefix %s", pub[:4])
		}
		d, err := newDeriver(pub, params)
		if err != nil {
			t.Fatal(err)
		}
		for i := uint32(0); i < 5; i++ {
			got, _, err := d.address(i)
			if err != nil {
				t.Fatal(err)
			}
			c, _ := priv.Derive(0)
			k, _ := c.Derive(i)
			pk, _ := k.ECPubKey()
			a, _ := address.NewAddressWitnessPubKeyHash(address.Hash160(pk.SerializeCompressed()), params)
			if got != a.EncodeAddress() || !strings.HasPrefix(got, "bcrt1q") {
				t.Fatalf("index %d: %s != %s", i, got, a.EncodeAddress())
			}
		}
	}
	// A private key is refused: the server must be watch-only.
	_, priv := testAccountKey(t, params, false)
	if _, err := newDeriver(priv.String(), params); err == nil || !strings.Contains(err.Error(), "private") {
		t.Fatalf("private key accepted: %v", err)
	}
	if _, err := newDeriver("tpubNonsense", params); err == nil {
		t.Fatal("garbage key accepted")
	}
}

func TestPriceAndFormat(t *testing.T) {
	cases := []struct {
		bytes  int64
		months int
		want   int64
	}{
		{1, 1, 100_000},
		{GiB, 1, 100_000},
		{GiB + 1, 1, 200_000},
		{50 * GiB, 12, 60_000_000},
	}
	for _, c := range cases {
		got, err := price(c.bytes, c.months, 100_000)
		if err != nil || got != c.want {
			t.Errorf("price(%d,%d) = %d, %v; want %d", c.bytes, c.months, got, err, c.want)
		}
	}
	if got, _ := price(1, 1, 10); got != MinAmountSat {
		t.Errorf("tiny price = %d, want minimum %d", got, MinAmountSat)
	}
	for _, bad := range [][2]int64{{0, 1}, {1, 0}, {-5, 1}, {1, 1201}, {1 << 62, 1200}} {
		if _, err := price(bad[0], int(bad[1]), 100_000); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("price(%v) err = %v", bad, err)
		}
	}
	if s := FormatBTC(100_000); s != "0.00100000" {
		t.Errorf("FormatBTC = %s", s)
	}
	if s := FormatBTC(2_100_000_000_000_000); s != "21000000.00000000" {
		t.Errorf("FormatBTC = %s", s)
	}
	uri := BIP21("bcrt1qxyz", 100_000, "kumo", "kumo 1 GiB & more")
	if uri != "bitcoin:bcrt1qxyz?amount=0.001&label=kumo&message=kumo%201%20GiB%20&%20more" {
		// & inside a value must be escaped
		if !strings.Contains(uri, "%26") {
			t.Errorf("BIP21 = %s", uri)
		}
	}
	if uri := BIP21("a", 100_000_000, "", ""); uri != "bitcoin:a?amount=1" {
		t.Errorf("BIP21 = %s", uri)
	}
}

func TestEvaluate(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	base := func() Invoice {
		return Invoice{AmountSat: 1000, RequiredConfirmations: 2, ExpiresAt: t0.Add(time.Hour), WatchUntil: t0.Add(25 * time.Hour)}
	}
	pay := func(sat, height int64, seen time.Time, gone bool) paymentRec {
		return paymentRec{TxID: fmt.Sprint(sat, height), AmountSat: sat, Height: height, SeenAt: seen, Gone: gone}
	}
	cases := []struct {
		name  string
		inv   func() Invoice
		pays  []paymentRec
		tip   int64
		now   time.Time
		state State
		check func(Invoice) string
	}{
		{"unpaid", base, nil, 100, t0, StateNew, nil},
		{"partial", base, []paymentRec{pay(400, 0, t0, false)}, 100, t0, StateNew, func(i Invoice) string {
			if !i.Partial || i.MissingSat != 600 {
				return "want partial, missing 600"
			}
			return ""
		}},
		{"mempool full", base, []paymentRec{pay(1000, 0, t0, false)}, 100, t0, StateProcessing, nil},
		{"one conf", base, []paymentRec{pay(1000, 100, t0, false)}, 100, t0, StateProcessing, func(i Invoice) string {
			if i.Confirmations != 1 {
				return "want 1 conf"
			}
			return ""
		}},
		{"two confs", base, []paymentRec{pay(1000, 99, t0, false)}, 100, t0, StateSettled, nil},
		{"over", base, []paymentRec{pay(1500, 99, t0, false)}, 100, t0, StateSettled, func(i Invoice) string {
			if !i.Over || i.OverSat != 500 {
				return "want over 500"
			}
			return ""
		}},
		{"expired", base, nil, 100, t0.Add(2 * time.Hour), StateExpired, nil},
		{"expired partial", base, []paymentRec{pay(10, 90, t0, false)}, 100, t0.Add(2 * time.Hour), StateExpired, func(i Invoice) string {
			if !i.Partial {
				return "want partial"
			}
			return ""
		}},
		{"late", base, []paymentRec{pay(1000, 99, t0.Add(90*time.Minute), false)}, 100, t0.Add(2 * time.Hour), StateExpired, func(i Invoice) string {
			if !i.PaidLate || i.LateSat != 1000 || i.Attention == "" {
				return "want paid late flagged"
			}
			return ""
		}},
		{"paid on time, confirmed after expiry", base, []paymentRec{pay(1000, 100, t0, false)}, 101, t0.Add(3 * time.Hour), StateSettled, nil},
		{"gone before expiry", func() Invoice { i := base(); i.Reached = true; return i }, []paymentRec{pay(1000, 0, t0, true)}, 100, t0, StateNew, func(i Invoice) string {
			if !i.PaymentLost {
				return "want payment lost"
			}
			return ""
		}},
		{"processing past window", base, []paymentRec{pay(1000, 0, t0, false)}, 100, t0.Add(26 * time.Hour), StateInvalid, nil},
		{"lost past window", func() Invoice { i := base(); i.Reached = true; return i }, []paymentRec{pay(1000, 0, t0, true)}, 100, t0.Add(26 * time.Hour), StateInvalid, nil},
		{"credited then lost", func() Invoice { i := base(); i.Credited, i.Reached, i.State = true, true, StateSettled; return i }, []paymentRec{pay(1000, 0, t0, true)}, 100, t0, StateSettled, func(i Invoice) string {
			if !i.PaymentLost || i.Attention == "" {
				return "want lost after settlement flagged"
			}
			return ""
		}},
	}
	for _, c := range cases {
		inv := c.inv()
		evaluate(&inv, c.pays, c.tip, c.now)
		if inv.State != c.state {
			t.Errorf("%s: state %s, want %s", c.name, inv.State, c.state)
		}
		if c.check != nil {
			if msg := c.check(inv); msg != "" {
				t.Errorf("%s: %s: %+v", c.name, msg, inv)
			}
		}
	}
}

func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// ledger is the test's quota store: credits are written in the caller's txn.
func ledgerCredit(txn *badger.Txn, account string, bytes int64, months int) error {
	return addLedger(txn, account, bytes)
}

func addLedger(txn *badger.Txn, account string, bytes int64) error {
	var l struct{ Count, Bytes int64 }
	if _, err := getJSON(txn, []byte("test/ledger/"+account), &l); err != nil {
		return err
	}
	l.Count++
	l.Bytes += bytes
	return putJSON(txn, []byte("test/ledger/"+account), &l)
}

func readLedger(t testing.TB, db *badger.DB, account string) (count, bytes int64) {
	t.Helper()
	var l struct{ Count, Bytes int64 }
	if err := db.View(func(txn *badger.Txn) error {
		_, err := getJSON(txn, []byte("test/ledger/"+account), &l)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return l.Count, l.Bytes
}

func TestAddressNeverReused(t *testing.T) {
	dir := t.TempDir()
	key, _ := testAccountKey(t, &chaincfg.RegressionNetParams, false)
	cfg := Config{AccountKey: key, Network: "regtest", RPCHost: "127.0.0.1:1", PriceSatPerGiBMonth: 1000}
	seen := map[string]bool{}
	indexes := map[uint32]bool{}
	for round := 0; round < 2; round++ {
		db := openDB(t, dir)
		s, err := New(db, cfg, ledgerCredit, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					inv, err := s.CreateInvoice(fmt.Sprintf("acct%d", g), GiB, 1)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if seen[inv.Address] || indexes[inv.AddressIndex] {
						t.Errorf("address %s (index %d) handed out twice", inv.Address, inv.AddressIndex)
					}
					seen[inv.Address], indexes[inv.AddressIndex] = true, true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(indexes) != 160 {
		t.Fatalf("%d distinct indexes, want 160", len(indexes))
	}
	for i := uint32(0); i < 160; i++ {
		if !indexes[i] {
			t.Fatalf("index %d skipped (gap)", i)
		}
	}
	db := openDB(t, dir)
	defer db.Close()
	s, _ := New(db, cfg, ledgerCredit, nil)
	l, err := s.Invoices("acct3")
	if err != nil || len(l) != 20 {
		t.Fatalf("Invoices = %d, %v; want 20", len(l), err)
	}
	for i := 1; i < len(l); i++ {
		if l[i].CreatedAt.After(l[i-1].CreatedAt) {
			t.Fatal("invoices not newest first")
		}
	}
	if _, err := s.CreateInvoice("", GiB, 1); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("empty account: %v", err)
	}
	if _, err := s.Invoice("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown invoice: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	key, _ := testAccountKey(t, &chaincfg.RegressionNetParams, false)
	good := Config{AccountKey: key, Network: "regtest", RPCHost: "127.0.0.1:1", PriceSatPerGiBMonth: 1000}
	if _, err := New(db, good, ledgerCredit, nil); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"network": func(c *Config) { c.Network = "moonnet" },
		"price":   func(c *Config) { c.PriceSatPerGiBMonth = 0 },
		"rpc":     func(c *Config) { c.RPCHost = "" },
		"key":     func(c *Config) { c.AccountKey = bip84Zpub },
		"cert":    func(c *Config) { c.RPCTLS = true; c.RPCCert = []byte("not pem") },
	} {
		c := good
		mut(&c)
		if _, err := New(db, c, ledgerCredit, nil); err == nil {
			t.Errorf("%s: bad config accepted", name)
		}
	}
}
