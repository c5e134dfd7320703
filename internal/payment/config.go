// Package payment is the server's Bitcoin top-up watcher and voucher store.
//
// It derives a fresh receive address per invoice from a watch-only BIP84
// account key (the server never holds a private key), polls a bitcoind or btcd
// node over plain JSON-RPC, and keeps invoices, payments, the scan cursor and
// vouchers in the server's badger database under the "pay/" key prefix.
// Quota is credited through a callback that runs inside the same badger
// transaction that marks the invoice settled, so crediting happens exactly
// once even across crashes.
package payment

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/btcsuite/btcd/address/v2"
	"github.com/btcsuite/btcd/btcutil/v2/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/btcsuite/btcd/txscript/v2"
)

// Defaults used when a Config field is zero.
const (
	DefaultConfirmations   = 2
	DefaultInvoiceLifetime = 60 * time.Minute
	DefaultLateWindow      = 24 * time.Hour
	DefaultPollInterval    = 15 * time.Second
)

// Config configures the payment watcher. Zero values get the defaults above.
type Config struct {
	// AccountKey is the watch-only BIP84 account extended public key
	// (m/84'/coin'/account'), as zpub/xpub on mainnet or vpub/tpub on the test
	// networks. Receive addresses are AccountKey/0/i as P2WPKH.
	AccountKey string
	// Network is mainnet, testnet (testnet3), testnet4, regtest, signet or simnet.
	Network string

	// RPCHost is host:port of the node's JSON-RPC server.
	RPCHost     string
	RPCUser     string
	RPCPassword string
	// RPCTLS speaks HTTPS to the node (btcd serves RPC over TLS by default).
	RPCTLS bool
	// RPCCert is the PEM certificate(s) to trust for RPCTLS (btcd's rpc.cert);
	// RPCCertFile is read when RPCCert is empty. With neither, the system
	// roots are used.
	RPCCert     []byte
	RPCCertFile string
	// RPCInsecureSkipVerify disables certificate checks; only for loopback tests.
	RPCInsecureSkipVerify bool
	// RPCTimeout bounds one RPC call (default 30 s).
	RPCTimeout time.Duration

	// PriceSatPerGiBMonth is the price of one GiB for one month, in satoshis.
	PriceSatPerGiBMonth int64
	// Confirmations required before an invoice is settled and credited.
	Confirmations int
	// InvoiceLifetime is how long a new invoice accepts payment.
	InvoiceLifetime time.Duration
	// LateWindow is how long after expiry payments are still watched (24 h):
	// late payments are recorded and flagged, and a processing invoice that is
	// not settled by then becomes Invalid.
	LateWindow time.Duration
	// PollInterval is the delay between two polls of the node.
	PollInterval time.Duration
	// KeepBlocks is how many recent block hashes are kept to find the fork
	// point of a reorg (default 1000).
	KeepBlocks int

	// OnChange, if set, is called after a commit that changed an invoice of
	// accountID (state, payment, confirmations), so the server can put it on
	// its change feed. It must not block for long.
	OnChange func(accountID string)
	// VoucherCredit credits redeemed vouchers (see Vouchers); without it
	// Redeem fails.
	VoucherCredit VoucherCreditFunc
	// Now returns the current time (default time.Now); tests may replace it.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Confirmations <= 0 {
		c.Confirmations = DefaultConfirmations
	}
	if c.InvoiceLifetime <= 0 {
		c.InvoiceLifetime = DefaultInvoiceLifetime
	}
	if c.LateWindow <= 0 {
		c.LateWindow = DefaultLateWindow
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.RPCTimeout <= 0 {
		c.RPCTimeout = 30 * time.Second
	}
	if c.KeepBlocks <= 0 {
		c.KeepBlocks = 1000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// NetParams maps a network name to btcd's chain parameters.
func NetParams(network string) (*chaincfg.Params, error) {
	switch strings.ToLower(network) {
	case "mainnet", "main", "bitcoin":
		return &chaincfg.MainNetParams, nil
	case "testnet", "testnet3", "test":
		return &chaincfg.TestNet3Params, nil
	case "testnet4":
		return &chaincfg.TestNet4Params, nil
	case "regtest":
		return &chaincfg.RegressionNetParams, nil
	case "signet":
		return &chaincfg.SigNetParams, nil
	case "simnet":
		return &chaincfg.SimNetParams, nil
	}
	return nil, fmt.Errorf("unknown bitcoin network %q (want mainnet, testnet, testnet4, regtest, signet or simnet)", network)
}

// SLIP-132 version bytes of BIP84 native segwit account keys. The derivation is
// the same as for xpub/tpub; only the serialization prefix differs.
var (
	zpubVersion = []byte{0x04, 0xb2, 0x47, 0x46}
	vpubVersion = []byte{0x04, 0x5f, 0x1c, 0xf6}
)

// deriver turns address indexes into P2WPKH addresses of the account key.
type deriver struct {
	params *chaincfg.Params
	chain  *hdkeychain.ExtendedKey // AccountKey/0 (the external chain)
}

func newDeriver(accountKey string, params *chaincfg.Params) (*deriver, error) {
	key, err := hdkeychain.NewKeyFromString(strings.TrimSpace(accountKey))
	if err != nil {
		return nil, fmt.Errorf("parse account key: %w", err)
	}
	if key.IsPrivate() {
		return nil, errors.New("account key is private: give the watch-only extended public key (zpub/xpub, vpub/tpub)")
	}
	v := key.Version()
	ok := bytes.Equal(v, params.HDPublicKeyID[:])
	switch params.Net {
	case chaincfg.MainNetParams.Net:
		ok = ok || bytes.Equal(v, zpubVersion)
	case chaincfg.SimNetParams.Net:
	default:
		ok = ok || bytes.Equal(v, vpubVersion)
	}
	if !ok {
		return nil, fmt.Errorf("account key version %x is not an extended public key for %s", v, params.Name)
	}
	chain, err := key.Derive(0)
	if err != nil {
		return nil, fmt.Errorf("derive external chain: %w", err)
	}
	return &deriver{params: params, chain: chain}, nil
}

// address returns the i-th receive address and its output script.
func (d *deriver) address(i uint32) (string, []byte, error) {
	if i >= hdkeychain.HardenedKeyStart {
		return "", nil, fmt.Errorf("address index %d out of range", i)
	}
	child, err := d.chain.Derive(i)
	if err != nil {
		// BIP32: an invalid child (probability < 2^-127) is skipped by callers.
		return "", nil, fmt.Errorf("derive address %d: %w", i, err)
	}
	pub, err := child.ECPubKey()
	if err != nil {
		return "", nil, fmt.Errorf("address %d public key: %w", i, err)
	}
	addr, err := address.NewAddressWitnessPubKeyHash(address.Hash160(pub.SerializeCompressed()), d.params)
	if err != nil {
		return "", nil, fmt.Errorf("address %d: %w", i, err)
	}
	script, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return "", nil, fmt.Errorf("address %d script: %w", i, err)
	}
	return addr.EncodeAddress(), script, nil
}
