package server

// Format v2 account keys: identity keys (published once, public halves readable
// by every account for sharing) and the recovery key (a second wrapping of the
// master key, and a password reset authenticated by the recovery auth key).
// The server checks sizes only: everything here is sealed or derived on the
// client, and the server stores a hash of the recovery auth key, never the key.

import (
	"crypto/subtle"
	"net/http"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

const (
	minSealedIdentity = 16
	// errRecovery is the one answer to every failed recovery: unknown e-mail,
	// no recovery key registered, wrong recovery key.
	recoveryFailedMsg = "wrong e-mail or recovery key"
)

func errRecovery() *api.Error {
	return apiErr(http.StatusUnauthorized, api.CodeUnauthorized, recoveryFailedMsg)
}

func validIdentity(id *api.Identity) error {
	switch {
	case len(id.BoxPublic) != api.PublicKeySize || len(id.SignPublic) != api.PublicKeySize:
		return badRequest("public keys must be %d bytes each", api.PublicKeySize)
	case len(id.Sealed) < minSealedIdentity || len(id.Sealed) > api.MaxSealedIdentity:
		return badRequest("sealed identity must be %d..%d bytes", minSealedIdentity, api.MaxSealedIdentity)
	}
	return nil
}

// handlePutIdentity publishes the account's identity keys, once: keys others
// may have pinned are never replaced (a stolen session token cannot swap them).
func (s *Server) handlePutIdentity(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.Identity
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := validIdentity(&req); err != nil {
		return err
	}
	err := s.mutate(acct, false, func(m *mtx) error {
		if m.acct.Identity != nil {
			return conflict(api.CodeExists, "the account's identity keys are published already; they are never replaced")
		}
		m.acct.Identity = &req
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("identity keys published", "req", info(r).id, "account", acct)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// handleGetIdentity returns the caller's own identity record (empty fields
// while it has none), for its clients to open and check.
func (s *Server) handleGetIdentity(w http.ResponseWriter, r *http.Request, acct string) error {
	a, err := s.loadAccount(acct)
	if err != nil {
		return err
	}
	var resp api.Identity
	if a.Identity != nil {
		resp = *a.Identity
	}
	return writeJSON(w, http.StatusOK, resp)
}

// handlePublicKeys returns another account's public keys by e-mail. Lookups
// are rate-limited per caller like logins, since they tell whether an e-mail
// has an account.
func (s *Server) handlePublicKeys(w http.ResponseWriter, r *http.Request, acct string) error {
	email, err := normalizeEmail(r.URL.Query().Get("email"))
	if err != nil {
		return err
	}
	if err := s.limits.allow(w, "keys:"+acct); err != nil {
		return err
	}
	var resp *api.PublicKeys
	err = s.db.View(func(tx *badger.Txn) error {
		a, err := s.accountByEmail(tx, email)
		if err != nil || a == nil || a.Identity == nil {
			return err
		}
		resp = &api.PublicKeys{Email: a.Email, BoxPublic: a.Identity.BoxPublic, SignPublic: a.Identity.SignPublic}
		return nil
	})
	if err != nil {
		return err
	}
	if resp == nil {
		return notFound("published keys of this e-mail")
	}
	return writeJSON(w, http.StatusOK, resp)
}

func validRecoverySet(req *api.RecoverySetRequest) error {
	switch {
	case len(req.AuthKey) != authKeySize || len(req.RecoveryAuthKey) != authKeySize:
		return badRequest("auth keys must be %d bytes", authKeySize)
	case len(req.WrappedMaster) < minWrappedSize || len(req.WrappedMaster) > maxWrappedSize:
		return badRequest("invalid wrapped master key size")
	}
	return nil
}

// handleSetRecovery registers a recovery key, replacing any earlier one. It
// needs the current password (as its auth key): a stolen session token alone
// must not be able to plant a recovery key and then reset the password.
func (s *Server) handleSetRecovery(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.RecoverySetRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := validRecoverySet(&req); err != nil {
		return err
	}
	if err := s.limits.allow(w, "ip:"+clientNet(r), "acct:"+acct); err != nil {
		return err
	}
	err := s.mutate(acct, false, func(m *mtx) error {
		if subtle.ConstantTimeCompare(s.authHash(req.AuthKey), m.acct.AuthHash) != 1 {
			return apiErr(http.StatusForbidden, api.CodeForbidden, "wrong current password")
		}
		m.acct.RecoveryHash = s.authHash(req.RecoveryAuthKey)
		m.acct.RecoveryWrap = req.WrappedMaster
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("recovery key set", "req", info(r).id, "account", acct)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// recoveryCheck compares a recovery auth key with the account's in constant
// time, with the same work for an unknown e-mail or an account without a
// recovery key; nil means it matches.
func (s *Server) recoveryCheck(a *accountRec, authKey []byte) error {
	want := s.authHash(make([]byte, authKeySize))
	if a != nil && a.RecoveryHash != nil {
		want = a.RecoveryHash
	}
	if subtle.ConstantTimeCompare(s.authHash(authKey), want) != 1 || a == nil || a.RecoveryHash == nil {
		return errRecovery()
	}
	if a.Disabled {
		return apiErr(http.StatusForbidden, api.CodeForbidden, "account disabled")
	}
	return nil
}

func (s *Server) handleRecoveryOpen(w http.ResponseWriter, r *http.Request) error {
	var req api.RecoveryOpenRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	email, err := s.guess(w, r, "recovery", req.Email, req.AuthKey)
	if err != nil {
		return err
	}
	var resp api.RecoveryOpenResponse
	err = s.db.View(func(tx *badger.Txn) error {
		a, err := s.accountByEmail(tx, email)
		if err != nil {
			return err
		}
		if err := s.recoveryCheck(a, req.AuthKey); err != nil {
			return err
		}
		info(r).account = a.ID
		resp.WrappedMaster = a.RecoveryWrap
		return nil
	})
	if err != nil {
		if ae, ok := err.(*api.Error); ok && ae.Code == api.CodeUnauthorized {
			s.log.Warn("recovery failed", "req", info(r).id, "ip", clientIP(r))
		}
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

func validRecoveryReset(req *api.RecoveryResetRequest) (string, error) {
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return "", err
	}
	switch {
	case len(req.AuthKey) != authKeySize || len(req.NewAuthKey) != authKeySize:
		return "", badRequest("auth keys must be %d bytes", authKeySize)
	case len(req.NewSalt) != saltSize:
		return "", badRequest("salt must be %d bytes", saltSize)
	case len(req.NewWrappedMaster) < minWrappedSize || len(req.NewWrappedMaster) > maxWrappedSize:
		return "", badRequest("invalid wrapped master key size")
	}
	return email, validKDF(req.NewKDF)
}

// handleRecoveryReset replaces the password (salt, parameters, auth hash,
// password wrapping of the master key) of an account whose recovery auth key
// the caller has, ends every session and opens a new one. The recovery key
// stays registered: it still wraps the same master key.
func (s *Server) handleRecoveryReset(w http.ResponseWriter, r *http.Request) error {
	var req api.RecoveryResetRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	email, err := validRecoveryReset(&req)
	if err != nil {
		return err
	}
	if _, err := s.guess(w, r, "recovery", email, req.AuthKey); err != nil {
		return err
	}
	var acctID string
	err = s.db.View(func(tx *badger.Txn) error {
		a, err := s.accountByEmail(tx, email)
		if err != nil {
			return err
		}
		if err := s.recoveryCheck(a, req.AuthKey); err != nil {
			return err
		}
		acctID = a.ID
		return nil
	})
	if err != nil {
		if ae, ok := err.(*api.Error); ok && ae.Code == api.CodeUnauthorized {
			s.log.Warn("recovery failed", "req", info(r).id, "ip", clientIP(r))
		}
		return err
	}
	info(r).account = acctID
	now := time.Now()
	tok := randHex(tokenBytes)
	expires := now.Add(s.cfg.SessionTTL)
	var resp api.LoginResponse
	ended := 0
	err = s.mutate(acctID, false, func(m *mtx) error {
		// Checked again inside the transaction: the recovery key may have
		// been replaced since the lookup.
		if err := s.recoveryCheck(m.acct, req.AuthKey); err != nil {
			return err
		}
		m.acct.Salt, m.acct.KDF = req.NewSalt, req.NewKDF
		m.acct.AuthHash = s.authHash(req.NewAuthKey)
		m.acct.WrappedMaster = req.NewWrappedMaster
		it := m.tx.NewIterator(badger.IteratorOptions{Prefix: pAcctSess(acctID)})
		var del [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			del = append(del, k, kSess(string(k[len(pAcctSess(acctID)):])))
		}
		it.Close()
		for _, k := range del {
			if err := m.tx.Delete(k); err != nil {
				return err
			}
		}
		ended = len(del) / 2
		if err := s.addSession(m.tx, acctID, tok, expires); err != nil {
			return err
		}
		resp = api.LoginResponse{Token: tok, Expires: expires, WrappedMaster: m.acct.WrappedMaster, Account: s.view(m.acct, now)}
		return m.accountChange()
	})
	s.limits.sessions.revoke(func(_ string, cs cachedSession) bool { return cs.account == acctID })
	if err != nil {
		return err
	}
	s.log.Info("password reset with the recovery key", "req", info(r).id, "account", acctID, "sessions_ended", ended)
	return writeJSON(w, http.StatusOK, resp)
}
