package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/internal/payment"
	"kumo/remote/api"
	"kumo/remote/blob"
)

// The operator's functions. Each works on a Server from New, so `kumo admin`
// can open the data directory itself while the server is stopped (with
// Config.NoBackground), or call the /v1/admin endpoints of a running server
// with the admin token.

// AdminTokenFile is the name of the admin token file in the data directory.
const AdminTokenFile = "admin-token"

// Accounts lists every account.
func (s *Server) Accounts() ([]api.Account, error) {
	var out []api.Account
	now := time.Now()
	err := s.eachAccount(func(a *accountRec) { out = append(out, s.view(a, now)) })
	return out, err
}

// AdminAccounts lists every account as the operator sees it.
func (s *Server) AdminAccounts() ([]api.AdminAccount, error) {
	out := []api.AdminAccount{}
	now := time.Now()
	err := s.eachAccount(func(a *accountRec) {
		out = append(out, api.AdminAccount{ID: a.ID, Email: a.Email, QuotaUsed: a.Used,
			QuotaLimit: a.limit(now), Disabled: a.Disabled, Created: a.Created})
	})
	return out, err
}

func (s *Server) eachAccount(f func(a *accountRec)) error {
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte("acct/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var a accountRec
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &a) }); err != nil {
				return err
			}
			f(&a)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("server: list accounts: %w", err)
	}
	return nil
}

func (s *Server) accountID(email string) (string, error) {
	e, err := normalizeEmail(email)
	if err != nil {
		return "", fmt.Errorf("server: %w", err)
	}
	var id string
	err = s.db.View(func(tx *badger.Txn) error {
		a, err := s.accountByEmail(tx, e)
		if err != nil {
			return err
		}
		if a == nil {
			return fmt.Errorf("no account %s: %w", e, api.ErrNotFound)
		}
		id = a.ID
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("server: %w", err)
	}
	return id, nil
}

// MaxQuota is the largest quota an account can have (1 EiB): a larger base
// quota is stored as MaxQuota, and the sum of base and grants stops there
// (accountRec.limit), so that no sum of int64 byte counts can wrap negative
// and make an account read-only.
const MaxQuota int64 = 1 << 60

// SetQuota sets the base quota of an account (grants from purchases add to
// it); more than MaxQuota is stored as MaxQuota.
func (s *Server) SetQuota(email string, limit int64) error {
	if limit < 0 {
		return fmt.Errorf("server: negative quota")
	}
	limit = min(limit, MaxQuota)
	id, err := s.accountID(email)
	if err != nil {
		return err
	}
	return s.adminMutate(id, func(a *accountRec) { a.Quota = limit })
}

// AddQuota grants bytes of extra quota until the given time (a plan or a
// top-up). When it expires while usage exceeds the remaining limit, the account
// becomes read-only until enough is deleted or more is bought.
func (s *Server) AddQuota(accountID string, bytes int64, until time.Time) error {
	if bytes <= 0 {
		return fmt.Errorf("server: grant must be positive")
	}
	err := s.mutate(accountID, false, func(m *mtx) error { return m.addGrant(bytes, until) })
	return adminErr(accountID, err)
}

// addGrant adds a time-limited grant (dropping expired ones) and announces it.
func (m *mtx) addGrant(bytes int64, until time.Time) error {
	kept := m.acct.Grants[:0]
	for _, g := range m.acct.Grants {
		if g.Until.After(m.now) {
			kept = append(kept, g)
		}
	}
	m.acct.Grants = append(kept, grant{Bytes: min(bytes, MaxQuota), Until: until.UTC()})
	return m.accountChange()
}

// DisableAccount refuses further logins and requests of an account (403).
func (s *Server) DisableAccount(email string) error { return s.SetDisabled(email, true) }

// SetDisabled disables or re-enables an account. Its sessions are kept:
// they work again once it is enabled.
func (s *Server) SetDisabled(email string, disabled bool) error {
	id, err := s.accountID(email)
	if err != nil {
		return err
	}
	return s.adminMutate(id, func(a *accountRec) { a.Disabled = disabled })
}

func (s *Server) adminMutate(id string, f func(a *accountRec)) error {
	err := s.mutate(id, false, func(m *mtx) error {
		f(m.acct)
		return m.accountChange()
	})
	return adminErr(id, err)
}

func adminErr(id string, err error) error {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeUnauthorized {
		return fmt.Errorf("server: no account %s: %w", id, api.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("server: update account %s: %w", id, err)
	}
	return nil
}

// CreateVouchers makes count single-use voucher codes, each worth bytes of
// quota for days (what a reseller sells). The codes are shown only now: the
// server keeps their hashes.
func (s *Server) CreateVouchers(bytes int64, days, count int) ([]string, error) {
	codes, err := s.vouchers.CreateVouchers(bytes, days, count)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return codes, nil
}

// AttentionInvoices lists invoices the operator should look at (paid late,
// or lost their payment after being credited), newest first. Nil without
// Bitcoin payments configured.
func (s *Server) AttentionInvoices() ([]api.Invoice, error) {
	if s.pay == nil {
		return []api.Invoice{}, nil
	}
	l, err := s.pay.AttentionInvoices()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	out := make([]api.Invoice, 0, len(l))
	for i := range l {
		v := invoiceView(&l[i])
		v.AccountID, v.Attention = l[i].AccountID, l[i].Attention
		out = append(out, v)
	}
	return out, nil
}

// Backup writes an online backup of the metadata (badger's backup format:
// every current key, including payments, vouchers and the bytes of small
// chunks) to w. Blobs are not included: back up the blob store by its own
// means.
func (s *Server) Backup(w io.Writer) error {
	if _, err := s.db.Backup(w, 0); err != nil {
		return fmt.Errorf("server: backup: %w", err)
	}
	return nil
}

// Restore loads a backup made by Backup into dataDir's metadata store, which
// must not exist yet or be empty (the server must be stopped). The admin
// token and blobs are not part of a backup.
func Restore(dataDir string, backup io.Reader) error {
	dir := filepath.Join(dataDir, "meta")
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("server: restore: %s is not empty; restore into a fresh data directory", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("server: restore: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("server: restore: %w", err)
	}
	// The server's options, so that chunk bytes land in the value log as
	// they would have been written.
	db, err := badger.Open(badgerOptions(dir, Config{SyncWrites: true}).WithLogger(nil))
	if err != nil {
		return fmt.Errorf("server: restore: open %s: %w", dir, err)
	}
	if err := db.Load(backup, 256); err != nil {
		db.Close()
		return fmt.Errorf("server: restore: load: %w", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("server: restore: close: %w", err)
	}
	return nil
}

// loadAdminToken reads DATA/admin-token, creating it (0600, 32 random bytes
// in hex) on first start.
func loadAdminToken(dataDir string) (string, error) {
	p := filepath.Join(dataDir, AdminTokenFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		tok := randHex(tokenBytes)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", fmt.Errorf("server: create admin token: %w", err)
		}
		_, werr := f.WriteString(tok + "\n")
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			os.Remove(p)
			return "", fmt.Errorf("server: write admin token: %w", err)
		}
		return tok, nil
	}
	if err != nil {
		return "", fmt.Errorf("server: read admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 32 {
		return "", fmt.Errorf("server: admin token in %s is too short (want at least 32 characters)", p)
	}
	return tok, nil
}

// admin guards the /v1/admin endpoints: the bearer must be the admin token
// (compared in constant time). Wrong tokens are rate-limited per client
// address like logins, and the limit is consulted before the token is
// compared: once an address has used up its guesses, the right token is
// refused too (otherwise a 429 would not stop guessing, only slow the answers
// to wrong guesses).
func (s *Server) admin(f handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key := "admin-ip:" + clientNet(r)
		if err := s.limits.check(w, key); err != nil {
			s.log.Warn("admin: rate limited", "req", info(r).id, "ip", clientIP(r))
			return err
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(tok), []byte(s.adminToken)) == 1 {
			info(r).account = "admin"
			return f(w, r)
		}
		s.log.Warn("admin: wrong token", "req", info(r).id, "ip", clientIP(r))
		s.limits.charge(key)
		return apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "missing or wrong admin token")
	}
}

func (s *Server) handleAdminAccounts(w http.ResponseWriter, r *http.Request) error {
	l, err := s.AdminAccounts()
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, l)
}

// adminResult turns a not-found account into a 404 for the HTTP answer.
func adminResult(err error) error {
	if errors.Is(err, api.ErrNotFound) {
		return notFound("account")
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	return err
}

func (s *Server) handleAdminQuota(w http.ResponseWriter, r *http.Request) error {
	var req api.AdminQuotaRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if req.Limit < 0 {
		return badRequest("negative quota")
	}
	if err := adminResult(s.SetQuota(req.Email, req.Limit)); err != nil {
		return err
	}
	s.log.Info("admin: quota set", "req", info(r).id, "email", req.Email, "limit", min(req.Limit, MaxQuota))
	return writeJSON(w, http.StatusOK, okBody)
}

func (s *Server) handleAdminDisable(w http.ResponseWriter, r *http.Request) error {
	var req api.AdminDisableRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := adminResult(s.SetDisabled(req.Email, req.Disabled)); err != nil {
		return err
	}
	s.log.Info("admin: account disabled", "req", info(r).id, "email", req.Email, "disabled", req.Disabled)
	return writeJSON(w, http.StatusOK, okBody)
}

func (s *Server) handleAdminVouchers(w http.ResponseWriter, r *http.Request) error {
	var req api.AdminVoucherRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if req.Count > maxVouchersPerRequest {
		return badRequest("at most %d codes per request", maxVouchersPerRequest)
	}
	codes, err := s.CreateVouchers(req.Bytes, req.Days, req.Count)
	if errors.Is(err, payment.ErrInvalidRequest) {
		return badRequest("%v", err)
	}
	if err != nil {
		return err
	}
	s.log.Info("admin: vouchers created", "req", info(r).id, "count", len(codes), "bytes", req.Bytes, "days", req.Days)
	return writeJSON(w, http.StatusOK, api.AdminVoucherResponse{Codes: codes})
}

// maxVouchersPerRequest keeps one answer small; run it again for more.
const maxVouchersPerRequest = 10000

func (s *Server) handleAdminBackup(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="kumo-meta.backup"`)
	w.WriteHeader(http.StatusOK)
	if err := s.Backup(w); err != nil {
		// Too late for an error answer: cut the stream so the client sees a
		// truncated body, not a complete-looking backup.
		s.log.Error("admin: backup failed", "req", info(r).id, "err", err)
		panic(http.ErrAbortHandler)
	}
	s.log.Info("admin: backup streamed", "req", info(r).id)
	return nil
}

func (s *Server) handleAdminAttention(w http.ResponseWriter, r *http.Request) error {
	l, err := s.AttentionInvoices()
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.InvoicesResponse{Invoices: l})
}

// healthProbeKey is a valid blob key that is never written: asking its size
// checks that the blob store answers.
const healthProbeKey = "0/0000000000000000000000000000000000000000000000000000000000000000"

// Health reports whether the metadata store is open and the blob store
// answers a cheap probe.
func (s *Server) Health(ctx context.Context) error {
	if s.db.IsClosed() {
		return errors.New("metadata store closed")
	}
	if err := s.db.View(func(tx *badger.Txn) error { _, err := tx.Get(kSecret()); return err }); err != nil {
		return fmt.Errorf("metadata store: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := s.blobs.Size(ctx, healthProbeKey); err != nil && !errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("blob store: %w", err)
	}
	return nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	if err := s.Health(r.Context()); err != nil {
		s.log.Warn("health check failed", "err", err)
		return apiErr(http.StatusServiceUnavailable, api.CodeUnavailable, "unhealthy (see the server log)")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, err := io.WriteString(w, "ok\n")
	return err
}
