package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// Accounts lists every account (for `kumo admin`).
func (s *Server) Accounts() ([]api.Account, error) {
	var out []api.Account
	now := time.Now()
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte("acct/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var a accountRec
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &a) }); err != nil {
				return err
			}
			out = append(out, a.view(now))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("server: list accounts: %w", err)
	}
	return out, nil
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

// SetQuota sets the base quota of an account (grants from AddQuota add to it).
func (s *Server) SetQuota(email string, limit int64) error {
	if limit < 0 {
		return fmt.Errorf("server: negative quota")
	}
	id, err := s.accountID(email)
	if err != nil {
		return err
	}
	return s.adminMutate(id, func(a *accountRec) { a.Quota = limit })
}

// AddQuota grants bytes of extra quota until the given time (a plan or a
// top-up). When it expires while usage exceeds the remaining limit, the account
// becomes read-only until enough is deleted.
func (s *Server) AddQuota(accountID string, bytes int64, until time.Time) error {
	if bytes <= 0 {
		return fmt.Errorf("server: grant must be positive")
	}
	now := time.Now()
	return s.adminMutate(accountID, func(a *accountRec) {
		kept := a.Grants[:0]
		for _, g := range a.Grants {
			if g.Until.After(now) {
				kept = append(kept, g)
			}
		}
		a.Grants = append(kept, grant{Bytes: bytes, Until: until.UTC()})
	})
}

// DisableAccount refuses further logins and requests of an account (403).
func (s *Server) DisableAccount(email string) error {
	id, err := s.accountID(email)
	if err != nil {
		return err
	}
	return s.adminMutate(id, func(a *accountRec) { a.Disabled = true })
}

func (s *Server) adminMutate(id string, f func(a *accountRec)) error {
	err := s.mutate(id, false, func(m *mtx) error {
		f(m.acct)
		_, err := m.change(api.Change{Kind: api.ChangeAccount})
		return err
	})
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeUnauthorized {
		return fmt.Errorf("server: no account %s: %w", id, api.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("server: update account %s: %w", id, err)
	}
	return nil
}
