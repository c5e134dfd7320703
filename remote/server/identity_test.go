package server

import (
	"bytes"
	"net/http"
	"net/url"
	"testing"

	"kumo/remote/api"
)

func randIdentity() api.Identity {
	return api.Identity{Sealed: randBytes(169), BoxPublic: randBytes(32), SignPublic: randBytes(32)}
}

func TestIdentityPublishOnce(t *testing.T) {
	e := newEnv(t, localBlobs, nil)
	alice, bob := e.signup("alice@example.com"), e.signup("bob@example.com")

	var got api.Identity
	alice.must("GET", "/v1/account/identity", nil, &got)
	if got.Sealed != nil || got.BoxPublic != nil || got.SignPublic != nil {
		t.Fatalf("new account has identity %+v", got)
	}
	st, code := bob.call("GET", "/v1/keys?email=alice%40example.com", nil, nil)
	expect(t, "keys before publishing", st, code, http.StatusNotFound, api.CodeNotFound)

	// Bad sizes: refused, nothing stored.
	for _, bad := range []api.Identity{
		{Sealed: randBytes(169), BoxPublic: randBytes(31), SignPublic: randBytes(32)},
		{Sealed: randBytes(169), BoxPublic: randBytes(32), SignPublic: randBytes(33)},
		{Sealed: randBytes(8), BoxPublic: randBytes(32), SignPublic: randBytes(32)},
		{Sealed: randBytes(api.MaxSealedIdentity + 1), BoxPublic: randBytes(32), SignPublic: randBytes(32)},
	} {
		st, code := alice.call("PUT", "/v1/account/identity", bad, nil)
		expect(t, "bad identity", st, code, http.StatusBadRequest, api.CodeBadRequest)
	}
	st, code = alice.call("PUT", "/v1/account/identity", `{"sealed":"AA==","extra":1}`, nil)
	expect(t, "unknown field", st, code, http.StatusBadRequest, api.CodeBadRequest)
	alice.must("GET", "/v1/account/identity", nil, &got)
	if got.Sealed != nil {
		t.Fatal("a refused identity was stored")
	}

	id := randIdentity()
	alice.must("PUT", "/v1/account/identity", id, nil)
	// Published once: a second PUT (a stolen token, a second device) changes nothing.
	st, code = alice.call("PUT", "/v1/account/identity", randIdentity(), nil)
	expect(t, "second publish", st, code, http.StatusConflict, api.CodeExists)
	alice.must("GET", "/v1/account/identity", nil, &got)
	if !bytes.Equal(got.Sealed, id.Sealed) || !bytes.Equal(got.BoxPublic, id.BoxPublic) || !bytes.Equal(got.SignPublic, id.SignPublic) {
		t.Fatal("identity changed")
	}

	var pk api.PublicKeys
	bob.must("GET", "/v1/keys?email="+url.QueryEscape(" Alice@Example.com"), nil, &pk)
	if pk.Email != "alice@example.com" || !bytes.Equal(pk.BoxPublic, id.BoxPublic) || !bytes.Equal(pk.SignPublic, id.SignPublic) {
		t.Fatalf("public keys %+v", pk)
	}
	st, code = bob.call("GET", "/v1/keys?email=nobody%40example.com", nil, nil)
	expect(t, "unknown e-mail", st, code, http.StatusNotFound, api.CodeNotFound)
	st, code = bob.call("GET", "/v1/keys?email=not-an-email", nil, nil)
	expect(t, "bad e-mail", st, code, http.StatusBadRequest, api.CodeBadRequest)
	st, code = e.call("GET", "/v1/keys?email=alice%40example.com", "", nil, nil)
	expect(t, "keys without a session", st, code, http.StatusUnauthorized, api.CodeUnauthorized)
	// Bob's record is untouched by all this.
	bob.must("GET", "/v1/account/identity", nil, &got)
	if got.Sealed != nil {
		t.Fatal("bob got an identity")
	}
}

// login posts an auth key and reports the status and code.
func (e *env) login(email string, authKey []byte) (int, string, api.LoginResponse) {
	e.t.Helper()
	var resp api.LoginResponse
	st, code := e.call("POST", "/v1/login", "", api.LoginRequest{Email: email, AuthKey: authKey}, &resp)
	return st, code, resp
}

func TestRecoveryOverHTTP(t *testing.T) {
	e := newEnv(t, localBlobs, nil)
	alice := e.signup("alice@example.com")
	bob := e.signup("bob@example.com")
	rauth, rwrap := randBytes(32), randBytes(73)

	// Registering needs the current password's auth key.
	st, code := alice.call("PUT", "/v1/account/recovery", api.RecoverySetRequest{AuthKey: randBytes(32), RecoveryAuthKey: rauth, WrappedMaster: rwrap}, nil)
	expect(t, "set recovery, wrong password", st, code, http.StatusForbidden, api.CodeForbidden)
	st, code = e.call("POST", "/v1/recovery/open", "", api.RecoveryOpenRequest{Email: alice.email, AuthKey: rauth}, nil)
	expect(t, "open after refused set", st, code, http.StatusUnauthorized, api.CodeUnauthorized)
	st, code = alice.call("PUT", "/v1/account/recovery", api.RecoverySetRequest{AuthKey: alice.authKey, RecoveryAuthKey: rauth[:5], WrappedMaster: rwrap}, nil)
	expect(t, "set recovery, short key", st, code, http.StatusBadRequest, api.CodeBadRequest)
	alice.must("PUT", "/v1/account/recovery", api.RecoverySetRequest{AuthKey: alice.authKey, RecoveryAuthKey: rauth, WrappedMaster: rwrap}, nil)

	var open api.RecoveryOpenResponse
	if st, code := e.call("POST", "/v1/recovery/open", "", api.RecoveryOpenRequest{Email: "ALICE@example.com", AuthKey: rauth}, &open); code != "" {
		t.Fatalf("open: %d %s", st, code)
	}
	if !bytes.Equal(open.WrappedMaster, rwrap) {
		t.Fatal("open returned another wrapping")
	}
	// Wrong key, unknown e-mail, account without a recovery key: one answer.
	for _, r := range []api.RecoveryOpenRequest{
		{Email: alice.email, AuthKey: randBytes(32)},
		{Email: "nobody@example.com", AuthKey: rauth},
		{Email: bob.email, AuthKey: rauth},
		{Email: bob.email, AuthKey: make([]byte, 32)}, // the filler hash of "no recovery key"
	} {
		st, code := e.call("POST", "/v1/recovery/open", "", r, nil)
		expect(t, "open "+r.Email, st, code, http.StatusUnauthorized, api.CodeUnauthorized)
	}

	newAuth := randBytes(32)
	reset := api.RecoveryResetRequest{Email: alice.email, AuthKey: randBytes(32), NewSalt: randBytes(16), NewKDF: defaultKDF,
		NewAuthKey: newAuth, NewWrappedMaster: randBytes(73)}
	st, code = e.call("POST", "/v1/recovery/reset", "", reset, nil)
	expect(t, "reset, wrong key", st, code, http.StatusUnauthorized, api.CodeUnauthorized)
	// Nothing changed: the old password logs in, the old session lives.
	if st, code, _ := e.login(alice.email, alice.authKey); code != "" {
		t.Fatalf("old password after a refused reset: %d %s", st, code)
	}
	alice.account()
	bad := reset
	bad.AuthKey, bad.NewKDF = rauth, api.KDFParams{Time: 0, MemoryKiB: 64, Threads: 1}
	st, code = e.call("POST", "/v1/recovery/reset", "", bad, nil)
	expect(t, "reset, bad KDF", st, code, http.StatusBadRequest, api.CodeBadRequest)

	reset.AuthKey = rauth
	var resp api.LoginResponse
	if st, code := e.call("POST", "/v1/recovery/reset", "", reset, &resp); code != "" {
		t.Fatalf("reset: %d %s", st, code)
	}
	if !bytes.Equal(resp.WrappedMaster, reset.NewWrappedMaster) || resp.Token == "" {
		t.Fatalf("reset answer %+v", resp)
	}
	// The old password and the old session are dead; the new ones work.
	st, code, _ = e.login(alice.email, alice.authKey)
	expect(t, "old password after reset", st, code, http.StatusUnauthorized, api.CodeUnauthorized)
	st, code = alice.call("GET", "/v1/account", nil, nil)
	expect(t, "old session after reset", st, code, http.StatusUnauthorized, api.CodeUnauthorized)
	if st, code, _ := e.login(alice.email, newAuth); code != "" {
		t.Fatalf("new password: %d %s", st, code)
	}
	if st, code := e.call("GET", "/v1/account", resp.Token, nil, nil); code != "" {
		t.Fatalf("session of the reset: %d %s", st, code)
	}
	var pre api.PreloginResponse
	e.call("POST", "/v1/prelogin", "", api.PreloginRequest{Email: alice.email}, &pre)
	if !bytes.Equal(pre.Salt, reset.NewSalt) {
		t.Fatal("salt not replaced")
	}
	// The recovery key stays valid; Bob's account was never touched.
	if st, code := e.call("POST", "/v1/recovery/open", "", api.RecoveryOpenRequest{Email: alice.email, AuthKey: rauth}, nil); code != "" {
		t.Fatalf("open after reset: %d %s", st, code)
	}
	bob.account()
}

// TestRecoveryRateLimited: recovery attempts spend the login budget of the
// address and the e-mail, so alternating them gains a guesser nothing.
func TestRecoveryRateLimited(t *testing.T) {
	e := newEnv(t, localBlobs, func(c *Config) { c.LoginLimit = 3 })
	alice := e.signup("alice@example.com")
	req := api.RecoveryOpenRequest{Email: alice.email, AuthKey: randBytes(32)}
	for i := 0; i < 3; i++ {
		st, code := e.call("POST", "/v1/recovery/open", "", req, nil)
		expect(t, "guess", st, code, http.StatusUnauthorized, api.CodeUnauthorized)
	}
	st, code := e.call("POST", "/v1/recovery/open", "", req, nil)
	expect(t, "fourth guess", st, code, http.StatusTooManyRequests, api.CodeRateLimited)
	st, code = e.call("POST", "/v1/recovery/reset", "", api.RecoveryResetRequest{Email: alice.email, AuthKey: randBytes(32),
		NewSalt: randBytes(16), NewKDF: defaultKDF, NewAuthKey: randBytes(32), NewWrappedMaster: randBytes(73)}, nil)
	expect(t, "reset guess", st, code, http.StatusTooManyRequests, api.CodeRateLimited)
	st, code, _ = e.login(alice.email, alice.authKey)
	expect(t, "login after recovery guesses", st, code, http.StatusTooManyRequests, api.CodeRateLimited)
}
