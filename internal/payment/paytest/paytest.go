// Package paytest runs a real Bitcoin node for tests: btcd in regtest through
// btcd's rpctest harness (a funded wallet that pays and mines), and watch-only
// BIP84 keys for the payment watcher. Tests of several packages share it.
package paytest

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/integration/rpctest"
	"github.com/btcsuite/btcd/txscript/v2"
	"github.com/btcsuite/btcd/wire/v2"
)

// BtcdPath returns a btcd binary: $KUMO_BTCD, or one built once (the version
// pinned by go.mod) into the user cache, shared by every package's tests.
func BtcdPath() (string, error) {
	if p := os.Getenv("KUMO_BTCD"); p != "" {
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "kumo-test")
	out := filepath.Join(dir, "btcd-v0.26.2")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
	if b, err := exec.Command("go", "build", "-o", tmp, "github.com/btcsuite/btcd").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build btcd: %v: %s", err, b)
	}
	return out, os.Rename(tmp, out)
}

// StartBtcd starts btcd in regtest with a harness wallet that owns
// matureOutputs spendable coinbase outputs; it is torn down with the test.
// Without btcd the test is skipped, except with CI=true where it fails.
func StartBtcd(t testing.TB, matureOutputs uint32) *rpctest.Harness {
	t.Helper()
	path, err := BtcdPath()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no btcd: %v", err)
		}
		t.Skipf("no btcd (set KUMO_BTCD): %v", err)
	}
	h, err := rpctest.New(&chaincfg.RegressionNetParams, nil, []string{"--nolisten"}, path)
	if err != nil {
		t.Fatalf("rpctest.New: %v", err)
	}
	if err := h.SetUp(true, matureOutputs); err != nil {
		h.TearDown()
		t.Fatalf("btcd harness setup: %v", err)
	}
	t.Cleanup(func() { h.TearDown() })
	return h
}

// WatchOnlyKey returns a fresh BIP84 regtest account public key (m/84'/1'/0').
func WatchOnlyKey(t testing.TB) string {
	t.Helper()
	seed := make([]byte, 32)
	rand.Read(seed)
	k, err := hdkeychain.NewMaster(seed, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint32{84, 1, 0} {
		if k, err = k.Derive(hdkeychain.HardenedKeyStart + i); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := k.Neuter()
	if err != nil {
		t.Fatal(err)
	}
	return pub.String()
}

// Pay sends sat satoshis to a regtest address from the harness wallet.
func Pay(t testing.TB, h *rpctest.Harness, addr string, sat int64) *chainhash.Hash {
	t.Helper()
	a, err := address.DecodeAddress(addr, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	script, err := txscript.PayToAddrScript(a)
	if err != nil {
		t.Fatal(err)
	}
	txid, err := h.SendOutputs([]*wire.TxOut{wire.NewTxOut(sat, script)}, 10)
	if err != nil {
		t.Fatalf("pay %d sat to %s: %v", sat, addr, err)
	}
	return txid
}
