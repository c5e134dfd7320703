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

	"kumo/internal/keys"
	"kumo/internal/payment"
	"kumo/remote/api"
)

// defaultKDF is what prelogin returns for unknown e-mails: the client's
// default, taken from internal/keys, so fake answers look like real ones and
// stay at or above the client's floor if that is ever raised (a fake answer
// below it would be refused differently from a wrong password: an oracle).
var defaultKDF = func() api.KDFParams {
	k := keys.DefaultKDF()
	return api.KDFParams{Time: k.Time, MemoryKiB: k.MemoryKiB, Threads: k.Threads}
}()

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

// SignupMode says who may create an account (kumo serve --signup).
type SignupMode string

const (
	SignupOpen    SignupMode = "open"    // anyone (the default)
	SignupVoucher SignupMode = "voucher" // by invitation: a signup spends an unused voucher code
	SignupClosed  SignupMode = "closed"  // nobody; existing accounts work as before
)

// ParseSignupMode parses the value of --signup.
func ParseSignupMode(s string) (SignupMode, error) {
	switch m := SignupMode(s); m {
	case SignupOpen, SignupVoucher, SignupClosed:
		return m, nil
	}
	return "", fmt.Errorf("signup mode %q: want open, voucher or closed", s)
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
	case len(req.Token) != 2*tokenBytes || !isLowerHex(req.Token):
		return "", badRequest("session token must be %d lower-case hex characters", 2*tokenBytes)
	case len(req.Voucher) > 100:
		return "", apiErr(http.StatusBadRequest, api.CodeBadVoucher, payment.ErrVoucherMalformed.Error())
	}
	return email, validKDF(req.KDF)
}

// handleSignup creates an account, and answers a known e-mail exactly as a
// new one (202, the same body): a 409 would undo prelogin's fake salts. For a
// known e-mail nothing is created and the client's token opens no session,
// which its first request on it shows (401); the client then tells its user
// to log in with that account's password. Learning that still costs a
// signup, which is limited per client address (and a voucher where signups
// need one).
func (s *Server) handleSignup(w http.ResponseWriter, r *http.Request) error {
	var req api.SignupRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if s.cfg.Signup == SignupClosed {
		return apiErr(http.StatusForbidden, api.CodeForbidden, "this server takes no new accounts (signups are closed); ask its operator")
	}
	email, err := validateSignup(&req)
	if err != nil {
		return err
	}
	if s.cfg.Signup == SignupVoucher && req.Voucher == "" {
		return apiErr(http.StatusForbidden, api.CodeForbidden,
			"this server takes new accounts by invitation only: sign up with a voucher code (kumo signup --voucher CODE)")
	}
	// Every attempt counts, and before the voucher or the e-mail is looked at.
	if err := s.limits.signups.allow(w, "signup:"+clientNet(r)); err != nil {
		s.log.Warn("signup rate limited", "req", info(r).id, "ip", clientIP(r))
		return err
	}
	now := time.Now()
	a := accountRec{
		ID: randHex(accountIDBytes), Email: email, Salt: req.Salt, KDF: req.KDF,
		AuthHash: s.authHash(req.AuthKey), WrappedMaster: req.WrappedMaster,
		Created: now, Quota: s.cfg.DefaultQuota, Seq: 1, FeedMin: 1,
	}
	root := api.Node{ID: api.RootID, Type: api.TypeDir, Version: 1, Nlink: 1, Attrs: req.RootAttrs, Seq: 1}
	// Whole seconds, UTC: every signup answer then has the same length, new
	// e-mail or known (RFC 3339 drops trailing zeros of the nanoseconds).
	expires := now.Add(s.cfg.SessionTTL).UTC().Truncate(time.Second)
	// Signups of one e-mail are serialized by the e-mail's lock name, and
	// only signups make accounts: whether it has one holds until the unlock.
	mu := s.locks.get("email:" + email)
	mu.Lock()
	defer mu.Unlock()
	var existing string
	err = s.db.View(func(tx *badger.Txn) error {
		old, err := s.accountByEmail(tx, email)
		if old != nil {
			existing = old.ID
		}
		return err
	})
	if err != nil {
		return err
	}
	create := func(tx *badger.Txn) error {
		if ok, err := exists(tx, kEmail(email)); err != nil || ok {
			if ok {
				return fmt.Errorf("signup of %s: the e-mail got an account under its lock", a.ID)
			}
			return err
		}
		if ok, err := exists(tx, kSess(tokenHash(req.Token))); err != nil || ok {
			if ok {
				return conflict(api.CodeConflict, "this session token is in use: sign up again with a fresh one")
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
		return s.addSession(tx, a.ID, req.Token, expires)
	}
	var bytes int64
	var days int
	switch {
	case existing != "" && req.Voucher == "":
	case existing != "":
		// The voucher is spent on the account the e-mail has: its holder
		// loses nothing, and a voucher that stayed valid would tell that
		// the e-mail had an account.
		bytes, days, err = s.redeem(existing, req.Voucher)
	case req.Voucher == "":
		err = s.db.Update(create)
	default:
		// The account is made in the transaction that spends the voucher.
		v := payment.NewVouchers(s.db, func(tx *badger.Txn, id string, b int64, d int) error {
			if err := create(tx); err != nil {
				return err
			}
			return s.creditVoucher(tx, id, b, d)
		})
		bytes, days, err = v.Redeem(a.ID, req.Voucher)
	}
	if err != nil {
		if e := voucherErr(err); e != err {
			s.log.Warn("signup: voucher refused", "req", info(r).id, "ip", clientIP(r), "err", err)
			return e
		}
		return err
	}
	if existing != "" {
		info(r).account = existing
		s.log.Info("signup for an e-mail that has an account: nothing created", "req", info(r).id,
			"account", existing, "voucher_bytes", bytes, "voucher_days", days)
	} else {
		info(r).account = a.ID
		s.log.Info("signup", "req", info(r).id, "account", a.ID, "voucher_bytes", bytes, "voucher_days", days)
	}
	return writeJSON(w, http.StatusAccepted, api.SignupResponse{Expires: expires})
}

// voucherErr maps the voucher store's refusals to API errors; other errors
// are returned as they are.
func voucherErr(err error) error {
	switch {
	case errors.Is(err, payment.ErrVoucherMalformed), errors.Is(err, payment.ErrVoucherUnknown):
		return apiErr(http.StatusBadRequest, api.CodeBadVoucher, err.Error())
	case errors.Is(err, payment.ErrVoucherUsed):
		return apiErr(http.StatusConflict, api.CodeUsedVoucher, err.Error())
	}
	return err
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

// guess checks the shape of a request that tries a secret for an e-mail (a
// login, a recovery), then consults the login limiter per client address and
// per e-mail, before the caller compares the secret. It returns the
// normalized e-mail.
func (s *Server) guess(w http.ResponseWriter, r *http.Request, what, email string, authKey []byte) (string, error) {
	email, err := normalizeEmail(email)
	if err != nil {
		return "", err
	}
	if len(authKey) != authKeySize {
		return "", badRequest("auth key must be %d bytes", authKeySize)
	}
	if err := s.limits.allow(w, "ip:"+clientNet(r), "email:"+email); err != nil {
		s.log.Warn(what+" rate limited", "req", info(r).id, "ip", clientIP(r))
		return "", err
	}
	return email, nil
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	var req api.LoginRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	email, err := s.guess(w, r, "login", req.Email, req.AuthKey)
	if err != nil {
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
		resp = api.LoginResponse{Token: tok, Expires: expires, WrappedMaster: a.WrappedMaster, Account: s.view(a, now)}
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
		if _, ok := r.Header[api.ShareHeader]; ok { // a request on a share (shares_access.go)
			return s.serveShared(w, r, acct)
		}
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
	if err := s.limits.allow(w, "ip:"+clientNet(r), "acct:"+acct); err != nil {
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
	return writeJSON(w, http.StatusOK, s.view(a, time.Now()))
}

// loginLimiter holds the server's guessing and abuse limits and its session
// cache: authentication state kept in memory for the server's lifetime (kept
// together so that it needs one field in Server).
type loginLimiter struct {
	// rateBuckets limits logins, password checks, recovery, voucher and
	// admin-token guesses: LoginLimit a minute per client address and per
	// account or e-mail.
	rateBuckets
	// signups limits account creation per client address: SignupLimit an hour.
	signups rateBuckets
	// sessions is the session cache.
	sessions sessionCache
}

func newLoginLimiter(perMinute, signupsPerHour int) *loginLimiter {
	return &loginLimiter{
		rateBuckets: newRateBuckets(perMinute, time.Minute),
		signups:     newRateBuckets(signupsPerHour, time.Hour),
	}
}

// rateBuckets is a token bucket per key (client address, e-mail, account):
// burst tokens, refilled over per. A bucket that has refilled is the same as
// no bucket and may be forgotten; the map holds at most maxBuckets.
type rateBuckets struct {
	mu        sync.Mutex
	every     time.Duration // one token per every
	burst     int
	max       int // maxBuckets; a field so tests can make it small
	m         map[string]*rate.Limiter
	lastSweep time.Time
}

// maxBuckets bounds a limiter's map (a bucket is about 150 bytes). When it is
// full of buckets that have not refilled, requests that would need a new
// bucket are refused (429) until some refill: failing open would let whoever
// filled it guess without limit.
const maxBuckets = 1 << 16

// sweepEvery spaces the scans for refilled buckets of a full map, so that a
// full map does not cost a scan per request.
const sweepEvery = time.Second

func newRateBuckets(burst int, per time.Duration) rateBuckets {
	return rateBuckets{every: per / time.Duration(burst), burst: burst, max: maxBuckets, m: map[string]*rate.Limiter{}}
}

// buckets returns the buckets of keys, or the wait before a retry when one of
// them is empty. Existing buckets are looked at first and new ones are made
// only when none of those is empty, so a limited client (its address is the
// first key) cannot grow the map with new e-mails. Called with mu held.
func (b *rateBuckets) buckets(now time.Time, keys []string) ([]*rate.Limiter, time.Duration) {
	ls := make([]*rate.Limiter, len(keys))
	missing := 0
	var wait time.Duration
	for i, k := range keys {
		l := b.m[k]
		if l == nil {
			missing++
			continue
		}
		ls[i] = l
		if t := l.TokensAt(now); t < 1 {
			wait = max(wait, time.Duration((1-t)*float64(b.every)))
		}
	}
	if wait > 0 {
		return nil, wait
	}
	if missing > 0 && len(b.m)+missing > b.max {
		if now.Sub(b.lastSweep) >= sweepEvery {
			b.lastSweep = now
			for k, l := range b.m {
				if l.TokensAt(now) >= float64(b.burst) {
					delete(b.m, k)
				}
			}
		}
		if len(b.m)+missing > b.max {
			return nil, max(b.every, sweepEvery)
		}
	}
	for i, k := range keys {
		if ls[i] == nil {
			ls[i] = rate.NewLimiter(rate.Every(b.every), b.burst)
			b.m[k] = ls[i]
		}
	}
	return ls, 0
}

// allow takes one token from each key's bucket, or none (and a 429 with
// Retry-After) if any bucket is empty. Put the client's address first.
func (b *rateBuckets) allow(w http.ResponseWriter, keys ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	ls, wait := b.buckets(now, keys)
	if wait > 0 {
		return tooMany(w, wait)
	}
	for _, l := range ls {
		l.AllowN(now, 1)
	}
	return nil
}

// check answers 429 if any key's bucket is empty, and takes nothing. It is
// consulted before a secret (voucher code, admin token) is compared, so that
// once failures have emptied a bucket even the right secret is refused;
// failures are then charged with charge.
func (b *rateBuckets) check(w http.ResponseWriter, keys ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, wait := b.buckets(time.Now(), keys); wait > 0 {
		return tooMany(w, wait)
	}
	return nil
}

// charge takes one token from each key's bucket after a failed attempt.
func (b *rateBuckets) charge(keys ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	ls, _ := b.buckets(now, keys)
	for _, l := range ls {
		l.AllowN(now, 1)
	}
}

// size is the number of buckets held (tests).
func (b *rateBuckets) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

func tooMany(w http.ResponseWriter, wait time.Duration) error {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	return apiErr(http.StatusTooManyRequests, api.CodeRateLimited, "too many attempts from this address or for this account; retry later")
}
