package server

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kumo/remote/api"
)

// login opens another session of u and returns its token.
func (u *user) login() string {
	u.e.t.Helper()
	var lr api.LoginResponse
	if st, code := u.e.call("POST", "/v1/login", "", api.LoginRequest{Email: u.email, AuthKey: u.authKey}, &lr); code != "" {
		u.e.t.Fatalf("login: %d %s", st, code)
	}
	return lr.Token
}

// cached reports whether the session of tok is in the server's session cache.
func cached(s *Server, tok string) bool {
	c := &s.limits.sessions
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[tokenHash(tok)]
	return ok
}

// TestSessionCacheRevocation: a session the cache holds is refused right
// away after logout, password change, expiry and account disabling.
func TestSessionCacheRevocation(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("cache@example.com")
	other := e.signup("other@example.com")
	tok2 := u.login()
	use := func(what, tok string, wantStatus int, wantCode string) {
		t.Helper()
		st, code := e.call("GET", "/v1/account", tok, nil, nil)
		expect(t, what, st, code, wantStatus, wantCode)
	}
	use("first session", u.token, 200, "")
	use("second session", tok2, 200, "")
	use("other account", other.token, 200, "")
	if !cached(e.s, u.token) || !cached(e.s, tok2) {
		t.Fatal("sessions in use are not cached")
	}
	var acct api.Account
	if st, code := e.call("GET", "/v1/account", tok2, nil, &acct); code != "" || acct.ID != u.id {
		t.Fatalf("cached session answers for account %q (%d %s), want %q", acct.ID, st, code, u.id)
	}

	// Logout of a cached session.
	if st, code := e.call("POST", "/v1/logout", tok2, nil, nil); code != "" {
		t.Fatalf("logout: %d %s", st, code)
	}
	use("cached session after logout", tok2, 401, api.CodeUnauthorized)
	use("other session after logout", u.token, 200, "")

	// Disabling takes effect at the next request, and so does enabling.
	if err := e.s.SetDisabled(u.email, true); err != nil {
		t.Fatal(err)
	}
	use("cached session of a disabled account", u.token, 403, api.CodeForbidden)
	use("other account while one is disabled", other.token, 200, "")
	if err := e.s.SetDisabled(u.email, false); err != nil {
		t.Fatal(err)
	}
	use("cached session after enabling", u.token, 200, "")

	// A password change ends the other (cached) sessions, not its own.
	tok3 := u.login()
	use("third session", tok3, 200, "")
	u.must("POST", "/v1/password", api.PasswordRequest{OldAuthKey: u.authKey, NewSalt: randBytes(16),
		NewKDF: defaultKDF, NewAuthKey: randBytes(32), NewWrappedMaster: randBytes(73)}, nil)
	use("cached session after password change", tok3, 401, api.CodeUnauthorized)
	use("session that changed the password", u.token, 200, "")
	use("other account after password change", other.token, 200, "")
}

// TestSessionCacheExpiry: a cached session ends at its expiry.
func TestSessionCacheExpiry(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.SessionTTL = 1500 * time.Millisecond })
	u := e.signup("expiry@example.com")
	u.must("GET", "/v1/account", nil, nil)
	if !cached(e.s, u.token) {
		t.Fatal("session not cached")
	}
	time.Sleep(1600 * time.Millisecond)
	st, code := u.call("GET", "/v1/account", nil, nil)
	expect(t, "expired cached session", st, code, 401, api.CodeUnauthorized)
}

// TestSessionCacheLogoutRace: requests racing with a logout may pass while
// it runs, but none after it returned, and the cache holds no trace of it
// (a lookup that began before the logout must not put it back).
func TestSessionCacheLogoutRace(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("race@example.com")
	h := e.s.Handler()
	status := func(tok string) int {
		r := httptest.NewRequest("GET", "/v1/account", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for range 30 {
		tok := u.login()
		var done atomic.Bool
		var after atomic.Int64 // requests that began after logout returned and still passed
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 1000; i++ {
					began := done.Load()
					if status(tok) == http.StatusOK && began {
						after.Add(1)
					}
					if began && i%10 == 9 {
						return
					}
				}
			}()
		}
		r := httptest.NewRequest("POST", "/v1/logout", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("logout: %d", w.Code)
		}
		done.Store(true)
		wg.Wait()
		if n := after.Load(); n > 0 {
			t.Fatalf("%d requests passed after the logout returned", n)
		}
		if cached(e.s, tok) || status(tok) != http.StatusUnauthorized {
			t.Fatal("logged-out session cached or accepted")
		}
	}
}

// TestSessionCacheEpoch: a lookup that began before a revocation does not
// cache what it found.
func TestSessionCacheEpoch(t *testing.T) {
	var c sessionCache
	now := time.Now()
	_, epoch, ok := c.get("h", now)
	if ok {
		t.Fatal("empty cache hit")
	}
	c.revoke(func(string, cachedSession) bool { return true })
	c.put("h", cachedSession{account: "a", expires: now.Add(time.Hour)}, epoch)
	if _, _, ok := c.get("h", now); ok {
		t.Fatal("a lookup from before a revocation was cached")
	}
	_, epoch, _ = c.get("h", now)
	c.put("h", cachedSession{account: "a", expires: now.Add(time.Hour)}, epoch)
	if cs, _, ok := c.get("h", now); !ok || cs.account != "a" {
		t.Fatal("not cached")
	}
	if _, _, ok := c.get("h", now.Add(2*time.Hour)); ok {
		t.Fatal("expired session returned")
	}
}
