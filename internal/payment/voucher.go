package payment

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// VoucherCreditFunc adds a voucher's quota to an account. Like CreditFunc it
// runs inside the transaction that marks the voucher used and must only
// write through txn.
type VoucherCreditFunc func(txn *badger.Txn, accountID string, bytes int64, days int) error

// Voucher errors, distinct so a user can be told what went wrong.
var (
	ErrVoucherMalformed = errors.New("voucher code is malformed (check it for typos)")
	ErrVoucherUnknown   = errors.New("voucher code is unknown")
	ErrVoucherUsed      = errors.New("voucher code was already redeemed")
	ErrNoVoucherCredit  = errors.New("vouchers are not enabled on this server")
)

// A code is 12 random bytes (96 bits) and a 3-byte checksum, written as 24
// base32 characters in groups of 4: XXXX-XXXX-XXXX-XXXX-XXXX-XXXX. The
// checksum catches typos before the database is asked.
const (
	voucherRandLen = 12
	voucherSumLen  = 3
	voucherChars   = (voucherRandLen + voucherSumLen) * 8 / 5
)

var voucherEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

// voucherRec is stored under the SHA-256 of the code's random part, so the
// database does not hold redeemable codes.
type voucherRec struct {
	Bytes      int64     `json:"bytes"`
	Days       int       `json:"days"`
	CreatedAt  time.Time `json:"created_at"`
	RedeemedBy string    `json:"redeemed_by,omitempty"`
	RedeemedAt time.Time `json:"redeemed_at,omitzero"`
}

// Vouchers creates and redeems single-use quota vouchers.
type Vouchers struct {
	db     *badger.DB
	credit VoucherCreditFunc
}

// NewVouchers returns the voucher store on db. credit may be nil, and then
// Redeem fails with ErrNoVoucherCredit.
func NewVouchers(db *badger.DB, credit VoucherCreditFunc) *Vouchers {
	return &Vouchers{db: db, credit: credit}
}

func voucherSum(secret []byte) []byte {
	h := sha256.Sum256(append([]byte("kumo voucher checksum\x00"), secret...))
	return h[:voucherSumLen]
}

func voucherKey(secret []byte) []byte {
	h := sha256.Sum256(secret)
	return []byte(prefixVouch + hex.EncodeToString(h[:]))
}

// formatVoucher writes a code's bytes in groups of four characters.
func formatVoucher(raw []byte) string {
	s := voucherEnc.EncodeToString(raw)
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

// ParseVoucher normalizes a typed code (case, spaces, dashes, 0/O and 1/I
// confusion) and checks its checksum; it returns the secret part.
func ParseVoucher(code string) ([]byte, error) {
	var b strings.Builder
	for _, r := range strings.ToUpper(code) {
		switch {
		case r == '-' || r == ' ' || r == '\t':
		case r == '0':
			b.WriteByte('O')
		case r == '1':
			b.WriteByte('I')
		case r == '8':
			b.WriteByte('B')
		case r >= 'A' && r <= 'Z' || r >= '2' && r <= '7':
			b.WriteRune(r)
		default:
			return nil, ErrVoucherMalformed
		}
	}
	s := b.String()
	if len(s) != voucherChars {
		return nil, ErrVoucherMalformed
	}
	raw, err := voucherEnc.DecodeString(s)
	if err != nil || len(raw) != voucherRandLen+voucherSumLen {
		return nil, ErrVoucherMalformed
	}
	secret, sum := raw[:voucherRandLen], raw[voucherRandLen:]
	if !bytes.Equal(sum, voucherSum(secret)) {
		return nil, ErrVoucherMalformed
	}
	return secret, nil
}

// CreateVouchers makes count single-use codes, each worth bytes of quota for
// days. Only hashes of the codes are stored; the codes are returned once.
func (v *Vouchers) CreateVouchers(bytes int64, days int, count int) ([]string, error) {
	if bytes <= 0 || days <= 0 || days > 36500 || count <= 0 || count > 100000 {
		return nil, fmt.Errorf("%w: need positive size, 1..36500 days and 1..100000 codes", ErrInvalidRequest)
	}
	codes := make([]string, 0, count)
	now := time.Now().UTC()
	wb := v.db.NewWriteBatch()
	defer wb.Cancel()
	for range count {
		secret := make([]byte, voucherRandLen)
		rand.Read(secret)
		rec, err := jsonMarshal(voucherRec{Bytes: bytes, Days: days, CreatedAt: now})
		if err != nil {
			return nil, err
		}
		if err := wb.Set(voucherKey(secret), rec); err != nil {
			return nil, fmt.Errorf("store voucher: %w", err)
		}
		codes = append(codes, formatVoucher(append(secret, voucherSum(secret)...)))
	}
	if err := wb.Flush(); err != nil {
		return nil, fmt.Errorf("store vouchers: %w", err)
	}
	return codes, nil
}

// Redeem credits a voucher to accountID once. Concurrent redeems of one code
// conflict in badger; exactly one commits, the others see ErrVoucherUsed.
// On any error nothing changes.
func (v *Vouchers) Redeem(accountID, code string) (bytes int64, days int, err error) {
	if v == nil || v.credit == nil {
		return 0, 0, ErrNoVoucherCredit
	}
	if accountID == "" {
		return 0, 0, fmt.Errorf("%w: empty account", ErrInvalidRequest)
	}
	secret, err := ParseVoucher(code)
	if err != nil {
		return 0, 0, err
	}
	key := voucherKey(secret)
	err = update(v.db, func(txn *badger.Txn) error {
		var rec voucherRec
		ok, err := getJSON(txn, key, &rec)
		if err != nil {
			return err
		}
		if !ok {
			return ErrVoucherUnknown
		}
		if rec.RedeemedBy != "" {
			return ErrVoucherUsed
		}
		rec.RedeemedBy = accountID
		rec.RedeemedAt = time.Now().UTC()
		if err := v.credit(txn, accountID, rec.Bytes, rec.Days); err != nil {
			return fmt.Errorf("credit voucher: %w", err)
		}
		bytes, days = rec.Bytes, rec.Days
		return putJSON(txn, key, &rec)
	})
	if err != nil {
		return 0, 0, err
	}
	return bytes, days, nil
}
