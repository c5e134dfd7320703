package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/internal/payment"
	"kumo/remote/api"
)

// Limits of one Bitcoin top-up.
const (
	MinTopupBytes = 1 << 30   // 1 GiB
	MaxTopupBytes = 100 << 40 // 100 TiB
	MaxTopupMonth = 36
	// maxOpenInvoices bounds the unpaid invoices of an account: each one takes
	// a fresh address, and a wallet restored from its seed stops looking after
	// 20 unused addresses in a row (BIP44 gap limit).
	maxOpenInvoices = 5
	// daysPerMonth is the length of a purchased month.
	daysPerMonth = 30
)

// creditInvoice is the payment service's CreditFunc: a settled invoice buys
// bytes for months×30 days. It writes only through txn, whose commit is
// what makes the credit happen (exactly once).
func (s *Server) creditInvoice(txn *badger.Txn, acct string, bytes int64, months int) error {
	return s.creditTxn(txn, acct, bytes, time.Duration(months)*daysPerMonth*24*time.Hour)
}

// creditVoucher is the VoucherCreditFunc: bytes for days.
func (s *Server) creditVoucher(txn *badger.Txn, acct string, bytes int64, days int) error {
	return s.creditTxn(txn, acct, bytes, time.Duration(days)*24*time.Hour)
}

// creditTxn adds a grant of bytes for d from now and puts an account change
// on the feed, inside txn. The caller wakes long-polls after the commit.
func (s *Server) creditTxn(txn *badger.Txn, acct string, bytes int64, d time.Duration) error {
	if bytes <= 0 || d <= 0 {
		return fmt.Errorf("credit %s: invalid grant %d bytes for %v", acct, bytes, d)
	}
	_, err := s.mutateTxn(txn, acct, false, func(m *mtx) error { return m.addGrant(bytes, m.now.Add(d)) })
	if err != nil {
		return fmt.Errorf("credit %s: %w", acct, err)
	}
	return nil
}

// paymentChanged is the payment service's OnChange: an invoice of acct was
// created, changed state or was credited. It goes on the feed as an account
// change, so mounted drives refresh their quota and invoices at once.
func (s *Server) paymentChanged(acct string) {
	err := s.mutate(acct, false, func(m *mtx) error { return m.accountChange() })
	if err != nil {
		s.log.Warn("payment: announce invoice change", "account", acct, "err", err)
	}
}

// invoiceView maps a payment invoice to its wire form.
func invoiceView(inv *payment.Invoice) api.Invoice {
	v := api.Invoice{
		ID: inv.ID, Bytes: inv.Bytes, Months: inv.Months,
		AmountSat: inv.AmountSat, AmountBTC: inv.AmountBTC, PaidSat: inv.PaidSat,
		Address: inv.Address, URI: inv.URI, State: string(inv.State),
		Confirmations: int(inv.Confirmations), Required: inv.RequiredConfirmations,
		Created: inv.CreatedAt, Expires: inv.ExpiresAt,
	}
	if inv.State == payment.StateSettled && !inv.Credited {
		// Confirmed, credit not yet committed (a moment, or until a failed
		// credit is retried): users see Settled exactly when the quota is there.
		v.State = api.InvoiceProcessing
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{inv.Partial, api.FlagPartial}, {inv.Over, api.FlagOver}, {inv.PaidLate, api.FlagLate}, {inv.PaymentLost, api.FlagLostPayment}} {
		if f.on {
			v.Flags = append(v.Flags, f.name)
		}
	}
	return v
}

func validateTopup(r *api.TopupRequest) error {
	if r.Bytes < MinTopupBytes || r.Bytes > MaxTopupBytes {
		return badRequest("top-up size must be 1 GiB..100 TiB")
	}
	if r.Months < 1 || r.Months > MaxTopupMonth {
		return badRequest("months must be 1..%d", MaxTopupMonth)
	}
	return nil
}

func (s *Server) handleTopup(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.TopupRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if s.pay == nil {
		return apiErr(http.StatusNotImplemented, api.CodePaymentsOff, "this server does not take Bitcoin payments; ask the operator for a voucher")
	}
	if err := validateTopup(&req); err != nil {
		return err
	}
	// One top-up of an account at a time, so the open-invoice count holds.
	// (Not the account's mutation lock: creating an invoice announces it.)
	mu := s.locks.get("topup:" + acct)
	mu.Lock()
	defer mu.Unlock()
	invs, err := s.pay.Invoices(acct)
	if err != nil {
		return err
	}
	open := 0
	now := time.Now()
	for _, inv := range invs {
		if inv.State == payment.StateNew && inv.PaidSat == 0 && inv.ExpiresAt.After(now) {
			open++
		}
	}
	if open >= maxOpenInvoices {
		return apiErr(http.StatusTooManyRequests, api.CodeRateLimited,
			fmt.Sprintf("%d unpaid invoices are open: pay one or let them expire first", open))
	}
	inv, err := s.pay.CreateInvoice(acct, req.Bytes, req.Months)
	if errors.Is(err, payment.ErrInvalidRequest) {
		return badRequest("%v", err)
	}
	if err != nil {
		return err
	}
	s.log.Info("topup invoice", "req", info(r).id, "account", acct, "invoice", inv.ID, "bytes", inv.Bytes,
		"months", inv.Months, "amount_sat", inv.AmountSat)
	return writeJSON(w, http.StatusOK, invoiceView(&inv))
}

func (s *Server) handleInvoices(w http.ResponseWriter, r *http.Request, acct string) error {
	resp := api.InvoicesResponse{Invoices: []api.Invoice{}}
	if s.pay != nil {
		invs, err := s.pay.Invoices(acct) // newest first
		if err != nil {
			return err
		}
		for i := range invs {
			resp.Invoices = append(resp.Invoices, invoiceView(&invs[i]))
		}
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleRedeem(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.RedeemRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Code) > 100 {
		return apiErr(http.StatusBadRequest, api.CodeBadVoucher, payment.ErrVoucherMalformed.Error())
	}
	// Guessing codes is as hopeless as guessing passwords (96 random bits),
	// but failed attempts are still limited like logins. The limit is
	// consulted before the code is looked at: after 429s a valid code is
	// refused too, or the 429s would not stop a guesser.
	keys := []string{"ip:" + clientNet(r), "acct:" + acct}
	if err := s.limits.check(w, keys...); err != nil {
		s.log.Warn("redeem: rate limited", "req", info(r).id, "account", acct, "ip", clientIP(r))
		return err
	}
	bytes, days, err := s.redeem(acct, req.Code)
	switch {
	case errors.Is(err, payment.ErrVoucherMalformed), errors.Is(err, payment.ErrVoucherUnknown):
		s.log.Warn("redeem: bad voucher", "req", info(r).id, "account", acct, "ip", clientIP(r))
		s.limits.charge(keys...)
		return apiErr(http.StatusBadRequest, api.CodeBadVoucher, err.Error())
	case errors.Is(err, payment.ErrVoucherUsed):
		return apiErr(http.StatusConflict, api.CodeUsedVoucher, err.Error())
	case err != nil:
		return err
	}
	a, err := s.loadAccount(acct)
	if err != nil {
		return err
	}
	s.log.Info("voucher redeemed", "req", info(r).id, "account", acct, "bytes", bytes, "days", days)
	return writeJSON(w, http.StatusOK, api.RedeemResponse{Bytes: bytes, Days: days, Account: s.view(a, time.Now())})
}

// redeem spends a voucher for acct. It holds the account's mutation lock so
// the credit does not race the account's other writes (badger would detect
// the conflict, but waiting is cheaper than retrying), then wakes long-polls.
func (s *Server) redeem(acct, code string) (int64, int, error) {
	mu := s.locks.get(acct)
	mu.Lock()
	bytes, days, err := s.vouchers.Redeem(acct, code)
	mu.Unlock()
	if err == nil {
		s.feed.notify(acct)
	}
	return bytes, days, err
}

// Redeem spends a voucher code for the account with this e-mail (offline
// admin and tests); it returns the bytes and days credited.
func (s *Server) Redeem(email, code string) (int64, int, error) {
	id, err := s.accountID(email)
	if err != nil {
		return 0, 0, err
	}
	b, d, err := s.redeem(id, code)
	if err != nil {
		return 0, 0, fmt.Errorf("server: redeem: %w", err)
	}
	return b, d, nil
}
