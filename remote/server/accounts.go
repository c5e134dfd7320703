package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/time/rate"

	"kumo/remote/api"
)

// defaultKDF is what prelogin returns for unknown e-mails. It equals the
// client's default (internal/keys.DefaultKDF) so fake answers look like real ones.
var defaultKDF = api.KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 2}

const (
	saltSize        = 16
	authKeySize     = 32
	maxWrappedSize  = 1024
	minWrappedSize  = 16
	accountIDBytes  = 16
	tokenBytes      = 32
	kdfMaxTime      = 20
	kdfMinMemoryKiB = 64
	kdfMaxMemoryKiB = 4 << 20
	kdfMaxThreads   = 16
)

// normalizeEmail trims and lower-cases an address and checks its shape.
func normalizeEmail(s string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(s))
	if len(e) == 0 || len(e) > api.MaxEmailLen {
		return "", badRequest("invalid e-mail")
	}
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") ||
		strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return "", badRequest("invalid e-mail")
	}
	for _, r := range e {
		if r == unicode.ReplacementChar || unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("<>()[]\\,;:\"/", r) {
			return "", badRequest("invalid e-mail")
		}
	}
	return e, nil
}

func validKDF(k api.KDFParams) error {
	if k.Time < 1 || k.Time > kdfMaxTime || k.MemoryKiB < kdfMinMemoryKiB || k.MemoryKiB > kdfMaxMemoryKiB ||
		k.Threads < 1 || k.Threads > kdfMaxThreads || k.MemoryKiB < 8*uint32(k.Threads) {
		return badRequest("KDF parameters out of range")
	}
	return nil
}

func (s *Server) authHash(authKey []byte) []byte {
	h := sha256.New()
	h.Write(s.pepper)
	h.Write(authKey)
	return h.Sum(nil)
}

func (s *Server) fakeSalt(email string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("kumo/server/fake-salt\x00" + email))
	return m.Sum(nil)[:saltSize]
}

func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func (s *Server) handlePrelogin(w http.ResponseWriter, r *http.Request) error {
	var req api.PreloginRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return err
	}
	resp := api.PreloginResponse{Salt: s.fakeSalt(email), KDF: defaultKDF}
	err = s.db.View(func(tx *badger.Txn) error {
		a, err := s.accountByEmail(tx, email)
		if err != nil || a == nil {
			return err
		}
		resp.Salt, resp.KDF = a.Salt, a.KDF
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

// accountByEmail returns nil, nil for an unknown e-mail.
func (s *Server) accountByEmail(tx *badger.Txn, email string) (*accountRec, error) {
	it, err := tx.Get(kEmail(email))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	id, err := it.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	var a accountRec
	if err := getJSON(tx, kAcct(string(id)), &a); err != nil {
		return nil, fmt.Errorf("account of %s: %w", email, err)
	}
	return &a, nil
}

func validateSignup(req *api.SignupRequest) (string, error) {
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return "", err
	}
	switch {
	case len(req.Salt) != saltSize:
		return "", badRequest("salt must be %d bytes", saltSize)
	case len(req.AuthKey) != authKeySize:
		return "", badRequest("auth key must be %d bytes", authKeySize)
	case len(req.WrappedMaster) < minWrappedSize || len(req.WrappedMaster) > maxWrappedSize:
		return "", badRequest("invalid wrapped master key size")
	case len(req.RootAttrs) == 0 || len(req.RootAttrs) > api.MaxAttrsSize:
		return "", badRequest("invalid root attributes size")
	}
	return email, validKDF(req.KDF)
}

func (s *Server) handleSignup(w http.ResponseWriter, r *http.Request) error {
	var req api.SignupRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	email, err := validateSignup(&req)
	if err != nil {
		return err
	}
	now := time.Now()
	a := accountRec{
		ID: randHex(accountIDBytes), Email: email, Salt: req.Salt, KDF: req.KDF,
		AuthHash: s.authHash(req.AuthKey), WrappedMaster: req.WrappedMaster,
		Created: now, Quota: s.cfg.DefaultQuota, Seq: 1, FeedMin: 1,
	}
	root := api.Node{ID: api.RootID, Type: api.TypeDir, Version: 1, Nlink: 1, Attrs: req.RootAttrs, Seq: 1}
	tok := randHex(tokenBytes)
	expires := now.Add(s.cfg.SessionTTL)
	// Signups of one e-mail are serialized by the e-mail's lock name.
	mu := s.locks.get("email:" + email)
	mu.Lock()
	defer mu.Unlock()
	err = s.db.Update(func(tx *badger.Txn) error {
		if ok, err := exists(tx, kEmail(email)); err != nil || ok {
			if ok {
				return conflict(api.CodeExists, "an account with this e-mail exists")
			}
			return err
		}
		if err := tx.Set(kEmail(email), []byte(a.ID)); err != nil {
			return err
		}
		if err := setJSON(tx, kAcct(a.ID), &a); err != nil {
			return err
		}
		if err := setJSON(tx, kNode(a.ID, api.RootID), &root); err != nil {
			return err
		}
		if err := setJSON(tx, kFeed(a.ID, 1), api.Change{Seq: 1, Kind: api.ChangeNode, Node: api.RootID}); err != nil {
			return err
		}
		return s.addSession(tx, a.ID, tok, expires)
	})
	if err != nil {
		return err
	}
	info(r).account = a.ID
	s.log.Info("signup", "req", info(r).id, "account", a.ID)
	return writeJSON(w, http.StatusOK, api.LoginResponse{
		Token: tok, Expires: expires, WrappedMaster: a.WrappedMaster, Account: a.view(now),
	})
}

func (s *Server) addSession(tx *badger.Txn, acct, tok string, expires time.Time) error {
	h := tokenHash(tok)
	ttl := time.Until(expires)
	b, err := jsonBytes(sessionRec{Account: acct, Expires: expires})
	if err != nil {
		return err
	}
	if err := tx.SetEntry(badger.NewEntry(kSess(h), b).WithTTL(ttl)); err != nil {
		return err
	}
	return tx.SetEntry(badger.NewEntry(kAcctSess(acct, h), nil).WithTTL(ttl))
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	var req api.LoginRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return err
	}
	if len(req.AuthKey) != authKeySize {
		return badRequest("auth key must be %d bytes", authKeySize)
	}
	if err := s.limits.allow(w, "ip:"+clientIP(r), "email:"+email); err != nil {
		s.log.Warn("login rate limited", "req", info(r).id, "ip", clientIP(r))
		return err
	}
	now := time.Now()
	tok := randHex(tokenBytes)
	expires := now.Add(s.cfg.SessionTTL)
	var resp api.LoginResponse
	err = s.db.Update(func(tx *badger.Txn) error {
		a, err := s.accountByEmail(tx, email)
		if err != nil {
			return err
		}
		want := s.authHash(make([]byte, authKeySize)) // same work for unknown e-mails
		if a != nil {
			want = a.AuthHash
		}
		if subtle.ConstantTimeCompare(s.authHash(req.AuthKey), want) != 1 || a == nil {
			return apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "wrong e-mail or password")
		}
		if a.Disabled {
			return apiErr(http.StatusForbidden, api.CodeForbidden, "account disabled")
		}
		info(r).account = a.ID
		resp = api.LoginResponse{Token: tok, Expires: expires, WrappedMaster: a.WrappedMaster, Account: a.view(now)}
		return s.addSession(tx, a.ID, tok, expires)
	})
	if err != nil {
		if ae, ok := err.(*api.Error); ok && ae.Code == api.CodeUnauthorized {
			s.log.Warn("login failed", "req", info(r).id, "ip", clientIP(r))
		}
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

// bearer extracts the session token of a request.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || len(tok) != 2*tokenBytes || !isLowerHex(tok) {
		return "", false
	}
	return tok, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

var errNoSession = apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "missing, expired or invalid session token")

// session resolves a token to its account; disabled accounts are refused.
// A session found once is kept in memory (sessionCache): later requests read
// only the account record, and decode it only when it changed, instead of
// reading and decoding the session and the account every time.
func (s *Server) session(tok string) (string, error) {
	h := tokenHash(tok)
	now := time.Now()
	sc := &s.limits.sessions
	cs, epoch, hit := sc.get(h, now)
	changed := !hit // the cache needs cs (again)
	err := s.db.View(func(tx *badger.Txn) error {
		if !hit {
			var se sessionRec
			if err := getJSON(tx, kSess(h), &se); err != nil {
				if errors.Is(err, badger.ErrKeyNotFound) {
					return errNoSession
				}
				return err
			}
			if !now.Before(se.Expires) {
				return errNoSession
			}
			cs = cachedSession{account: se.Account, expires: se.Expires}
		}
		it, err := tx.Get(kAcct(cs.account))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return errNoSession
		}
		if err != nil {
			return err
		}
		if v := it.Version(); v != cs.acctVersion {
			var a accountRec
			if err := it.Value(func(b []byte) error { return jsonUnmarshal(b, &a) }); err != nil {
				return err
			}
			cs.acctVersion, cs.disabled = v, a.Disabled
			changed = true
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if changed {
		sc.put(h, cs, epoch)
	}
	if cs.disabled {
		return "", apiErr(http.StatusForbidden, api.CodeForbidden, "account disabled")
	}
	return cs.account, nil
}

// sessionCache keeps sessions resolved lately, by token hash. A session
// record never changes, it only ends: by expiry (checked on every use), by
// logout or by a password change (both revoke it here after their commit).
// The account's disabled flag is cached with the version of the account
// record it was read from, and the record's version is checked on every
// request, so disabling an account takes effect with the next request too.
// An entry is added only if no revocation happened since the lookup began
// (epoch), so a lookup racing with a logout cannot bring the session back.
type sessionCache struct {
	mu    sync.Mutex
	m     map[string]cachedSession
	epoch uint64 // bumped by every revocation
}

type cachedSession struct {
	account     string
	expires     time.Time
	acctVersion uint64 // badger version of the account record disabled was read from
	disabled    bool
}

// maxCachedSessions bounds the cache (about 200 bytes an entry); when full,
// it starts over.
const maxCachedSessions = 4096

// get returns the cached session of token hash h unless it expired, and the
// epoch to hand to put.
func (c *sessionCache) get(h string, now time.Time) (cachedSession, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs, ok := c.m[h]
	if ok && !now.Before(cs.expires) {
		delete(c.m, h)
		ok = false
	}
	return cs, c.epoch, ok
}

// put caches a session looked up since epoch, unless a revocation came between.
func (c *sessionCache) put(h string, cs cachedSession, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if c.m == nil || len(c.m) >= maxCachedSessions {
		c.m = map[string]cachedSession{}
	}
	c.m[h] = cs
}

// revoke forgets the sessions drop says, after their end was committed.
func (c *sessionCache) revoke(drop func(h string, cs cachedSession) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for h, cs := range c.m {
		if drop(h, cs) {
			delete(c.m, h)
		}
	}
}

func (s *Server) auth(f authedFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		tok, ok := bearer(r)
		if !ok {
			return errNoSession
		}
		acct, err := s.session(tok)
		if err != nil {
			return err
		}
		info(r).account = acct
		return f(w, r, acct)
	}
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	tok, ok := bearer(r)
	if !ok {
		return errNoSession
	}
	h := tokenHash(tok)
	err := s.db.Update(func(tx *badger.Txn) error {
		var se sessionRec
		if err := getJSON(tx, kSess(h), &se); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return errNoSession
			}
			return err
		}
		info(r).account = se.Account
		if err := tx.Delete(kSess(h)); err != nil {
			return err
		}
		return tx.Delete(kAcctSess(se.Account, h))
	})
	s.limits.sessions.revoke(func(x string, _ cachedSession) bool { return x == h })
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

func validatePassword(req *api.PasswordRequest) error {
	switch {
	case len(req.OldAuthKey) != authKeySize || len(req.NewAuthKey) != authKeySize:
		return badRequest("auth keys must be %d bytes", authKeySize)
	case len(req.NewSalt) != saltSize:
		return badRequest("salt must be %d bytes", saltSize)
	case len(req.NewWrappedMaster) < minWrappedSize || len(req.NewWrappedMaster) > maxWrappedSize:
		return badRequest("invalid wrapped master key size")
	}
	return validKDF(req.NewKDF)
}

func (s *Server) handlePassword(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.PasswordRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := validatePassword(&req); err != nil {
		return err
	}
	if err := s.limits.allow(w, "ip:"+clientIP(r), "acct:"+acct); err != nil {
		return err
	}
	tok, _ := bearer(r)
	keep := tokenHash(tok)
	ended := 0
	err := s.mutate(acct, false, func(m *mtx) error {
		ended = 0
		if subtle.ConstantTimeCompare(s.authHash(req.OldAuthKey), m.acct.AuthHash) != 1 {
			return apiErr(http.StatusForbidden, api.CodeForbidden, "wrong current password")
		}
		m.acct.Salt, m.acct.KDF = req.NewSalt, req.NewKDF
		m.acct.AuthHash = s.authHash(req.NewAuthKey)
		m.acct.WrappedMaster = req.NewWrappedMaster
		// End every other session.
		it := m.tx.NewIterator(badger.IteratorOptions{Prefix: pAcctSess(acct)})
		var del [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			h := string(k[len(pAcctSess(acct)):])
			if h != keep {
				del = append(del, k, kSess(h))
			}
		}
		it.Close()
		for _, k := range del {
			if err := m.tx.Delete(k); err != nil {
				return err
			}
		}
		ended = len(del) / 2
		return m.accountChange()
	})
	// The kept session goes too; its next request reads it again.
	s.limits.sessions.revoke(func(_ string, cs cachedSession) bool { return cs.account == acct })
	if err != nil {
		return err
	}
	s.log.Info("password changed", "req", info(r).id, "account", acct, "sessions_ended", ended)
	return writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request, acct string) error {
	a, err := s.loadAccount(acct)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a.view(time.Now()))
}

// loginLimiter is a token bucket per key (client address, account), refilling
// limit tokens per minute. Idle buckets are forgotten.
type loginLimiter struct {
	mu    sync.Mutex
	limit int
	m     map[string]*limiterEntry
	// sessions is the session cache: like the limiter, authentication state
	// the server keeps in memory for its lifetime (kept here so that it
	// needs no field of its own in Server).
	sessions sessionCache
}

type limiterEntry struct {
	l    *rate.Limiter
	seen time.Time
}

func newLoginLimiter(perMinute int) *loginLimiter {
	return &loginLimiter{limit: perMinute, m: map[string]*limiterEntry{}}
}

// allow takes one token from each key's bucket, or none (and a 429 with
// Retry-After) if any bucket is empty.
func (l *loginLimiter) allow(w http.ResponseWriter, keys ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if len(l.m) > 100000 {
		for k, e := range l.m {
			if now.Sub(e.seen) > 2*time.Minute {
				delete(l.m, k)
			}
		}
	}
	var rs []*rate.Reservation
	var wait time.Duration
	for _, k := range keys {
		e := l.m[k]
		if e == nil {
			e = &limiterEntry{l: rate.NewLimiter(rate.Every(time.Minute/time.Duration(l.limit)), l.limit)}
			l.m[k] = e
		}
		e.seen = now
		r := e.l.ReserveN(now, 1)
		rs = append(rs, r)
		if d := r.DelayFrom(now); d > wait {
			wait = d
		}
	}
	if wait == 0 {
		return nil
	}
	for _, r := range rs {
		r.CancelAt(now)
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	return apiErr(http.StatusTooManyRequests, api.CodeRateLimited, "too many login attempts; retry later")
}
