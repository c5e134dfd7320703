package payment

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/chaincfg/v2"
	"github.com/dgraph-io/badger/v4"
)

// State is an invoice state, named as BTCPay Server names them.
type State string

const (
	StateNew        State = "New"        // waiting for payment
	StateProcessing State = "Processing" // paid in full, not yet confirmed enough
	StateSettled    State = "Settled"    // confirmed; quota credited
	StateExpired    State = "Expired"    // lifetime over without full on-time payment
	StateInvalid    State = "Invalid"    // was paid but not settled by the end of the watch window
)

// GiB is the unit the price is quoted in.
const GiB = 1 << 30

// MinAmountSat is the smallest invoice amount: smaller outputs are dust that
// wallets refuse to create.
const MinAmountSat = 1000

// maxAmountSat is 21 million BTC, a bound that keeps arithmetic far from overflow.
const maxAmountSat = 21_000_000 * 100_000_000

// CreditFunc adds purchased quota to an account. It is called inside the
// badger transaction that marks the invoice credited and must only write
// through txn (no side effects outside it): the transaction may be retried or
// discarded, and its commit is what makes the credit happen exactly once.
type CreditFunc func(txn *badger.Txn, accountID string, bytes int64, months int) error

// Errors returned by the invoice API.
var (
	ErrInvalidRequest = errors.New("payment: invalid request")
	ErrNotFound       = errors.New("payment: invoice not found")
	ErrNotSettleable  = errors.New("payment: invoice cannot be settled by hand in its state")
)

// Payment is one transaction output paying an invoice's address.
type Payment struct {
	TxID          string    `json:"txid"`
	Vout          uint32    `json:"vout"`
	AmountSat     int64     `json:"amount_sat"`
	AmountBTC     string    `json:"amount_btc"`
	Height        int64     `json:"height,omitempty"` // 0 while unconfirmed
	Confirmations int64     `json:"confirmations"`    // capped at the required number
	SeenAt        time.Time `json:"seen_at"`
	Late          bool      `json:"late,omitempty"` // arrived after the invoice expired
	Gone          bool      `json:"gone,omitempty"` // left the mempool/chain (reorg, double spend)
}

// Invoice is a top-up invoice as shown to users and operators (stable JSON).
type Invoice struct {
	ID           string `json:"id"`
	AccountID    string `json:"account_id"`
	Bytes        int64  `json:"bytes"`  // quota bought
	Months       int    `json:"months"` // for how long
	AmountSat    int64  `json:"amount_sat"`
	AmountBTC    string `json:"amount_btc"` // 8 decimals
	Address      string `json:"address"`
	AddressIndex uint32 `json:"address_index"` // BIP84 receive index m/84'/c'/a'/0/i
	URI          string `json:"uri"`           // BIP21 payment URI
	State        State  `json:"state"`

	PaidSat     int64  `json:"paid_sat"` // live on-time payments (mempool or chain)
	PaidBTC     string `json:"paid_btc"`
	MissingSat  int64  `json:"missing_sat"` // still due
	MissingBTC  string `json:"missing_btc"`
	Partial     bool   `json:"partial,omitempty"` // paid something, less than the amount
	Over        bool   `json:"over,omitempty"`    // paid more than the amount (credited anyway)
	OverSat     int64  `json:"over_sat,omitempty"`
	PaidLate    bool   `json:"paid_late,omitempty"` // payment arrived after expiry: operator attention
	LateSat     int64  `json:"late_sat,omitempty"`
	LateBTC     string `json:"late_btc,omitempty"`
	PaymentLost bool   `json:"payment_lost,omitempty"` // a counted payment vanished (reorg/double spend)
	// Attention is set when an operator should look at the invoice: late
	// payment, or payment lost after the quota was credited.
	Attention string `json:"attention,omitempty"`

	Confirmations         int64 `json:"confirmations"` // seen, capped at required
	RequiredConfirmations int   `json:"required_confirmations"`

	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	WatchUntil time.Time  `json:"watch_until"` // payments are watched until then
	SettledAt  *time.Time `json:"settled_at,omitempty"`
	Credited   bool       `json:"credited"`                // quota was credited (exactly once)
	ManualNote string     `json:"manual_settle,omitempty"` // operator settled it by hand
	Reached    bool       `json:"reached_processing"`      // was paid in full on time at some point
	Payments   []Payment  `json:"payments"`
}

// Service watches the node and manages invoices and vouchers.
type Service struct {
	db     *badger.DB
	cfg    Config
	params *chaincfg.Params
	derive *deriver
	rpc    *rpcClient
	credit CreditFunc
	log    *slog.Logger
	*Vouchers

	pollMu sync.Mutex          // one poll at a time
	seenTx map[string]struct{} // mempool txids already examined (guarded by pollMu)
}

// New builds the service on the server's badger database. Nothing talks to
// the node until Run.
func New(db *badger.DB, cfg Config, credit CreditFunc, logger *slog.Logger) (*Service, error) {
	if db == nil || credit == nil {
		return nil, errors.New("payment: nil database or credit function")
	}
	cfg.setDefaults()
	if logger == nil {
		logger = slog.Default()
	}
	params, err := NetParams(cfg.Network)
	if err != nil {
		return nil, fmt.Errorf("payment: %w", err)
	}
	if cfg.PriceSatPerGiBMonth <= 0 {
		return nil, errors.New("payment: price per GiB-month must be positive")
	}
	d, err := newDeriver(cfg.AccountKey, params)
	if err != nil {
		return nil, fmt.Errorf("payment: %w", err)
	}
	rpc, err := newRPCClient(&cfg)
	if err != nil {
		return nil, fmt.Errorf("payment: %w", err)
	}
	return &Service{
		db: db, cfg: cfg, params: params, derive: d, rpc: rpc, credit: credit,
		log: logger.With("component", "payment"), seenTx: map[string]struct{}{},
		Vouchers: NewVouchers(db, cfg.VoucherCredit),
	}, nil
}

// FormatBTC formats satoshis as BTC with 8 decimals ("0.00100000").
func FormatBTC(sat int64) string {
	sign := ""
	if sat < 0 {
		sign, sat = "-", -sat
	}
	return fmt.Sprintf("%s%d.%08d", sign, sat/100_000_000, sat%100_000_000)
}

// bip21Amount is FormatBTC without trailing zeros, as BIP21 examples write it.
func bip21Amount(sat int64) string {
	s := strings.TrimRight(FormatBTC(sat), "0")
	return strings.TrimSuffix(s, ".")
}

// BIP21 builds a "bitcoin:" payment URI with percent-encoded parameters.
func BIP21(addr string, sat int64, label, message string) string {
	q := []string{"amount=" + bip21Amount(sat)}
	if label != "" {
		q = append(q, "label="+url.PathEscape(label))
	}
	if message != "" {
		q = append(q, "message="+url.PathEscape(message))
	}
	return "bitcoin:" + addr + "?" + strings.Join(q, "&")
}

// Price returns the amount in satoshis for bytes of quota during months:
// whole GiB (rounded up) × months × price, at least MinAmountSat.
func (s *Service) Price(bytes int64, months int) (int64, error) {
	return price(bytes, months, s.cfg.PriceSatPerGiBMonth)
}

func price(bytes int64, months int, perGiBMonth int64) (int64, error) {
	if bytes <= 0 || months <= 0 || months > 1200 {
		return 0, fmt.Errorf("%w: size must be positive and months between 1 and 1200", ErrInvalidRequest)
	}
	gib := (bytes-1)/GiB + 1
	if gib > maxAmountSat/int64(months)/perGiBMonth {
		return 0, fmt.Errorf("%w: amount too large", ErrInvalidRequest)
	}
	return max(gib*int64(months)*perGiBMonth, MinAmountSat), nil
}

// CreateInvoice creates an invoice for bytes of quota during months, paying
// to a fresh address. The address index is taken in the same transaction that
// stores the invoice, so an address is never handed out twice.
func (s *Service) CreateInvoice(accountID string, bytes int64, months int) (Invoice, error) {
	if accountID == "" {
		return Invoice{}, fmt.Errorf("%w: empty account", ErrInvalidRequest)
	}
	amount, err := s.Price(bytes, months)
	if err != nil {
		return Invoice{}, err
	}
	var inv Invoice
	err = update(s.db, func(txn *badger.Txn) error {
		next, err := loadNext(txn)
		if err != nil {
			return err
		}
		var addr string
		var script []byte
		for {
			addr, script, err = s.derive.address(next)
			if err == nil {
				break
			}
			// BIP32 says to skip an index whose child key is invalid.
			s.log.Warn("skipping underivable address index", "index", next, "err", err)
			next++
		}
		if _, err := txn.Get(addrKey(script)); err == nil {
			return fmt.Errorf("address %s (index %d) already used: refusing to reuse it", addr, next)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("check address: %w", err)
		}
		now := s.cfg.Now().UTC().Truncate(time.Second)
		id := rand.Text()
		inv = Invoice{
			ID: id, AccountID: accountID, Bytes: bytes, Months: months,
			AmountSat: amount, AmountBTC: FormatBTC(amount),
			Address: addr, AddressIndex: next,
			URI:   BIP21(addr, amount, "kumo", fmt.Sprintf("kumo %s for %d month(s), invoice %s", sizeLabel(bytes), months, id)),
			State: StateNew, MissingSat: amount, MissingBTC: FormatBTC(amount), PaidBTC: FormatBTC(0),
			RequiredConfirmations: s.cfg.Confirmations,
			CreatedAt:             now,
			ExpiresAt:             now.Add(s.cfg.InvoiceLifetime),
			WatchUntil:            now.Add(s.cfg.InvoiceLifetime + s.cfg.LateWindow),
			Payments:              []Payment{},
		}
		var nb [4]byte
		nb[0], nb[1], nb[2], nb[3] = byte((next+1)>>24), byte((next+1)>>16), byte((next+1)>>8), byte(next+1)
		if err := txn.Set([]byte(keyNext), nb[:]); err != nil {
			return fmt.Errorf("set next index: %w", err)
		}
		if err := putJSON(txn, invKey(id), &inv); err != nil {
			return err
		}
		for _, k := range [][]byte{acctKey(accountID, id), activeKey(id)} {
			if err := txn.Set(k, nil); err != nil {
				return fmt.Errorf("index invoice: %w", err)
			}
		}
		if err := txn.Set(addrKey(script), []byte(id)); err != nil {
			return fmt.Errorf("index address: %w", err)
		}
		return nil
	})
	if err != nil {
		return Invoice{}, fmt.Errorf("create invoice: %w", err)
	}
	s.log.Info("invoice created", "invoice", inv.ID, "account", accountID, "amount", inv.AmountBTC, "address", inv.Address, "index", inv.AddressIndex)
	s.notify(map[string]bool{accountID: true})
	return inv, nil
}

func sizeLabel(b int64) string {
	gib := (b-1)/GiB + 1
	return strconv.FormatInt(gib, 10) + " GiB"
}

func loadNext(txn *badger.Txn) (uint32, error) {
	item, err := txn.Get([]byte(keyNext))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get next index: %w", err)
	}
	var next uint32
	err = item.Value(func(b []byte) error {
		if len(b) != 4 {
			return fmt.Errorf("next index: bad length %d", len(b))
		}
		next = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		return nil
	})
	return next, err
}

// Invoices lists an account's invoices, newest first.
func (s *Service) Invoices(accountID string) ([]Invoice, error) {
	var out []Invoice
	err := s.db.View(func(txn *badger.Txn) error {
		p := acctPrefix(accountID)
		for _, k := range keysWithPrefix(txn, p) {
			var inv Invoice
			ok, err := getJSON(txn, invKey(string(k[len(p):])), &inv)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, inv)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list invoices: %w", err)
	}
	sortInvoices(out)
	return out, nil
}

// Invoice returns one invoice by id.
func (s *Service) Invoice(id string) (Invoice, error) {
	var inv Invoice
	err := s.db.View(func(txn *badger.Txn) error {
		ok, err := getJSON(txn, invKey(id), &inv)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	return inv, err
}

// AttentionInvoices lists invoices an operator should look at (late or lost
// payments), newest first.
func (s *Service) AttentionInvoices() ([]Invoice, error) {
	var out []Invoice
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixInv), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var inv Invoice
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &inv) }); err != nil {
				return err
			}
			if inv.Attention != "" {
				out = append(out, inv)
			}
		}
		return nil
	})
	sortInvoices(out)
	return out, err
}

func sortInvoices(l []Invoice) {
	slices.SortStableFunc(l, func(a, b Invoice) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.AddressIndex, a.AddressIndex)
	})
}

// MarkSettled is the operator's "mark as settled" for an invoice that the
// watcher did not settle (expired with a late or partial payment, or
// invalid): it credits the quota once, in the same transaction.
func (s *Service) MarkSettled(id, note string) (Invoice, error) {
	var inv Invoice
	err := update(s.db, func(txn *badger.Txn) error {
		ok, err := getJSON(txn, invKey(id), &inv)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if inv.Credited || (inv.State != StateExpired && inv.State != StateInvalid) {
			return fmt.Errorf("%w: %s", ErrNotSettleable, inv.State)
		}
		if note == "" {
			note = "settled by operator"
		}
		inv.ManualNote = note
		inv.State = StateSettled
		return s.creditTxn(txn, &inv)
	})
	if err != nil {
		return Invoice{}, fmt.Errorf("mark invoice %s settled: %w", id, err)
	}
	s.notify(map[string]bool{inv.AccountID: true})
	return inv, nil
}

// creditTxn credits inv and records it, inside txn.
func (s *Service) creditTxn(txn *badger.Txn, inv *Invoice) error {
	if err := s.credit(txn, inv.AccountID, inv.Bytes, inv.Months); err != nil {
		return fmt.Errorf("credit account %s: %w", inv.AccountID, err)
	}
	now := s.cfg.Now().UTC()
	inv.Credited = true
	inv.SettledAt = &now
	if err := txn.Delete(dueKey(inv.ID)); err != nil {
		return fmt.Errorf("clear due: %w", err)
	}
	return putJSON(txn, invKey(inv.ID), inv)
}

// creditDue credits every settled, not yet credited invoice, each in its own
// transaction so that one failing credit does not hold back the others.
func (s *Service) creditDue() error {
	var ids []string
	err := s.db.View(func(txn *badger.Txn) error {
		for _, k := range keysWithPrefix(txn, []byte(prefixDue)) {
			ids = append(ids, string(k[len(prefixDue):]))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list due credits: %w", err)
	}
	var errs []error
	for _, id := range ids {
		var inv Invoice
		credited := false
		err := update(s.db, func(txn *badger.Txn) error {
			credited = false
			ok, err := getJSON(txn, invKey(id), &inv)
			if err != nil {
				return err
			}
			if !ok || inv.Credited || inv.State != StateSettled {
				// Reorged back before crediting, or already done.
				return txn.Delete(dueKey(id))
			}
			credited = true
			return s.creditTxn(txn, &inv)
		})
		if err != nil {
			s.log.Error("credit failed; will retry", "invoice", id, "err", err)
			errs = append(errs, err)
			continue
		}
		if credited {
			s.log.Info("invoice credited", "invoice", id, "account", inv.AccountID, "bytes", inv.Bytes, "months", inv.Months)
			s.notify(map[string]bool{inv.AccountID: true})
		}
	}
	return errors.Join(errs...)
}

func (s *Service) notify(accounts map[string]bool) {
	if s.cfg.OnChange == nil {
		return
	}
	for a := range accounts {
		s.cfg.OnChange(a)
	}
}
