package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
	"kumo/remote/blob"
)

// env is a real server on a loopback port over a temp data directory.
type env struct {
	t   *testing.T
	cfg Config
	s   *Server
	hs  *httptest.Server
	url string
}

func localBlobs(t *testing.T) blob.Store {
	l, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// allBlobs marks a store (from a suite's newBlobs) to hold every chunk, also
// the small ones the server would keep in its metadata store
// (Config.SmallChunkMax < 0), so the blob path is tested with any size.
type allBlobs struct{ blob.Store }

func allInBlobs(nb func(t *testing.T) blob.Store) func(t *testing.T) blob.Store {
	return func(t *testing.T) blob.Store { return allBlobs{nb(t)} }
}

// chunkStored reports whether the bytes of a chunk are stored: in the
// metadata store or in the blob store.
func chunkStored(t *testing.T, s *Server, acct, id string) bool {
	t.Helper()
	var inDB bool
	if err := s.db.View(func(tx *badger.Txn) (err error) { inDB, err = exists(tx, kChunkData(acct, id)); return err }); err != nil {
		t.Fatal(err)
	}
	_, err := s.blobs.Size(context.Background(), blobKey(acct, id))
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		t.Fatal(err)
	}
	return inDB || err == nil
}

func newEnv(t *testing.T, newBlobs func(t *testing.T) blob.Store, mod func(*Config)) *env {
	t.Helper()
	cfg := Config{
		DataDir:      t.TempDir(),
		DefaultQuota: 1 << 30,
		GCGrace:      time.Hour,
		GCInterval:   time.Hour,
		LoginLimit:   1000,
		Logger:       slog.New(slog.DiscardHandler),
	}
	if os.Getenv("KUMO_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if newBlobs != nil {
		cfg.Blobs = newBlobs(t)
		if b, ok := cfg.Blobs.(allBlobs); ok {
			cfg.Blobs, cfg.SmallChunkMax = b.Store, -1
		}
	}
	if mod != nil {
		mod(&cfg)
	}
	e := &env{t: t, cfg: cfg}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *env) start() {
	s, err := New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.s = s
	e.hs = httptest.NewServer(s.Handler())
	e.url = e.hs.URL
}

func (e *env) stop() {
	if e.s == nil {
		return
	}
	e.hs.CloseClientConnections()
	e.hs.Close()
	if err := e.s.Close(); err != nil {
		e.t.Error(err)
	}
	e.s = nil
}

func (e *env) reopen() {
	e.stop()
	e.start()
}

// call sends a JSON (or raw []byte) body and decodes a JSON answer into out.
// It returns the status and the error code ("" on success).
func (e *env) call(method, path, token string, body, out any) (int, string) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var er api.ErrorResponse
		if err := json.Unmarshal(data, &er); err != nil || er.Error.Code == "" {
			return resp.StatusCode, fmt.Sprintf("(non-json %q)", data)
		}
		return resp.StatusCode, er.Error.Code
	}
	if out != nil {
		if b, ok := out.(*[]byte); ok {
			*b = data
		} else if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, ""
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func randMAC() string { return hex.EncodeToString(randBytes(32)) }

func randID() uint64 {
	for {
		id := binary.LittleEndian.Uint64(randBytes(8))
		if id > 1 {
			return id
		}
	}
}

// user is a signed-up account with a session.
type user struct {
	e       *env
	email   string
	authKey []byte
	token   string
	id      string
}

func (e *env) signup(email string) *user {
	e.t.Helper()
	u := &user{e: e, email: email, authKey: randBytes(32)}
	req := signupReq(email)
	req.AuthKey = u.authKey
	if st, code := e.call("POST", "/v1/signup", "", req, nil); code != "" {
		e.t.Fatalf("signup %s: %d %s", email, st, code)
	}
	u.token = req.Token
	u.id = u.account().ID
	return u
}

// signupReq is a valid signup of email with fresh keys and session token.
func signupReq(email string) api.SignupRequest {
	return api.SignupRequest{Email: email, Salt: randBytes(16), KDF: defaultKDF, AuthKey: randBytes(32),
		WrappedMaster: randBytes(73), RootAttrs: randBytes(40), Token: hex.EncodeToString(randBytes(32))}
}

func (u *user) call(method, path string, body, out any) (int, string) {
	u.e.t.Helper()
	return u.e.call(method, path, u.token, body, out)
}

// must fails the test unless the call succeeded.
func (u *user) must(method, path string, body, out any) {
	u.e.t.Helper()
	if st, code := u.call(method, path, body, out); code != "" {
		u.e.t.Fatalf("%s %s: %d %s", method, path, st, code)
	}
}

func (u *user) create(parent uint64, typ string, chunks ...string) api.Entry {
	u.e.t.Helper()
	var e api.Entry
	u.must("POST", "/v1/nodes", api.CreateRequest{Parent: parent, NameMAC: randMAC(), Name: randBytes(20),
		ID: randID(), Type: typ, Attrs: randBytes(50), Chunks: chunks}, &e)
	return e
}

func (u *user) putChunk(size int) string {
	u.e.t.Helper()
	id := randMAC()
	u.must("PUT", "/v1/chunks/"+id, randBytes(size), nil)
	return id
}

func (u *user) account() api.Account {
	u.e.t.Helper()
	var a api.Account
	u.must("GET", "/v1/account", nil, &a)
	return a
}

func (u *user) list(dir uint64) []api.Entry {
	u.e.t.Helper()
	var es []api.Entry
	u.must("GET", fmt.Sprintf("/v1/nodes/%d/entries", dir), nil, &es)
	return es
}

func expect(t *testing.T, what string, gotStatus int, gotCode string, wantStatus int, wantCode string) {
	t.Helper()
	if gotStatus != wantStatus || gotCode != wantCode {
		t.Errorf("%s: got %d %q, want %d %q", what, gotStatus, gotCode, wantStatus, wantCode)
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// metaUsed is what the account's sealed attributes and names cost
// (usage.go), counted from its records.
func (u *user) metaUsed() int64 {
	u.e.t.Helper()
	var c usageCount
	if err := u.e.s.db.View(func(tx *badger.Txn) (err error) { c, err = countUsage(tx, u.id); return err }); err != nil {
		u.e.t.Fatal(err)
	}
	return c.attrs + c.names
}

// chunkAccount is the account with QuotaUsed counting chunk bytes only.
func (u *user) chunkAccount() api.Account {
	u.e.t.Helper()
	a := u.account()
	var rec accountRec
	if err := u.e.s.db.View(func(tx *badger.Txn) error { return getJSON(tx, kAcct(u.id), &rec) }); err != nil {
		u.e.t.Fatal(err)
	}
	if rec.UsageV == usageVersion { // not yet recounted: metadata not charged yet
		a.QuotaUsed -= u.metaUsed()
	}
	return a
}
