package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

func newLinkID() string { return base64.RawURLEncoding.EncodeToString(randBytes(16)) }

// linkGet is a public GET (no session) of path; it returns status, code and body.
func (e *env) publicGet(path, rng string) (int, string, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.url+path, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		st, code := resp.StatusCode, ""
		var er api.ErrorResponse
		if jsonDecode(bytes.NewReader(b), &er) == nil {
			code = er.Error.Code
		}
		return st, code, nil
	}
	return resp.StatusCode, "", b
}

func TestLinkCreateListRevoke(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("links@example.com")
	c1, c2, c3 := randMAC(), randMAC(), randMAC()
	data1 := randBytes(5000)
	u.must("PUT", "/v1/chunks/"+c1, data1, nil)
	u.must("PUT", "/v1/chunks/"+c2, randBytes(100), nil)
	u.must("PUT", "/v1/chunks/"+c3, randBytes(100), nil)
	id := newLinkID()
	blob := randBytes(300)
	var cr api.LinkCreateResponse
	st, code := u.call("POST", "/v1/links", api.LinkCreateRequest{ID: id, Blob: blob, Chunks: []string{c1, c2}}, &cr)
	expect(t, "create", st, code, 201, "")
	if cr.ID != id || cr.Created.IsZero() || cr.Expires != nil {
		t.Fatalf("create answer %+v", cr)
	}
	st, code = u.call("POST", "/v1/links", api.LinkCreateRequest{ID: id, Blob: blob, Chunks: []string{c3}}, nil)
	expect(t, "same id again", st, code, 409, api.CodeExists)

	var ls api.LinksResponse
	u.must("GET", "/v1/links", nil, &ls)
	if len(ls.Links) != 1 || ls.Links[0].ID != id || ls.Links[0].Chunks != 2 || ls.Links[0].Bytes != 5100 || ls.Links[0].HasPassword {
		t.Fatalf("list: %+v", ls)
	}

	// Public reads, no session.
	var pub api.LinkPublic
	st, code, b := e.publicGet("/v1/s/"+id, "")
	expect(t, "public get", st, code, 200, "")
	if err := jsonDecode(bytes.NewReader(b), &pub); err != nil || !bytes.Equal(pub.Blob, blob) || pub.Password != nil {
		t.Fatalf("public get: %v %+v", err, pub)
	}
	st, code, b = e.publicGet("/v1/s/"+id+"/chunks/"+c1, "")
	if st != 200 || !bytes.Equal(b, data1) {
		t.Fatalf("chunk through the link: %d %s %d bytes", st, code, len(b))
	}
	st, _, b = e.publicGet("/v1/s/"+id+"/chunks/"+c1, "bytes=10-19")
	if st != 206 || !bytes.Equal(b, data1[10:20]) {
		t.Fatalf("range through the link: %d %d bytes", st, len(b))
	}
	st, code, _ = e.publicGet("/v1/s/"+id+"/chunks/"+c3, "")
	expect(t, "chunk not in the link", st, code, 404, api.CodeNotFound)
	st, code, _ = e.publicGet("/v1/s/"+newLinkID(), "")
	expect(t, "unknown link", st, code, 404, api.CodeLinkNotFound)
	st, code, _ = e.publicGet("/v1/s/"+newLinkID()+"/chunks/"+c1, "")
	expect(t, "chunk of an unknown link", st, code, 404, api.CodeLinkNotFound)
	st, code, _ = e.publicGet("/v1/s/short", "")
	expect(t, "malformed id", st, code, 404, api.CodeLinkNotFound)

	// Another account can neither revoke it nor pin this account's chunks.
	v := e.signup("other@example.com")
	st, code = v.call("DELETE", "/v1/links/"+id, nil, nil)
	expect(t, "other account revokes", st, code, 404, api.CodeLinkNotFound)
	st, code = v.call("POST", "/v1/links", api.LinkCreateRequest{ID: newLinkID(), Blob: blob, Chunks: []string{c1}}, nil)
	expect(t, "other account's chunk", st, code, 400, api.CodeBadRequest)
	var vls api.LinksResponse
	v.must("GET", "/v1/links", nil, &vls)
	if len(vls.Links) != 0 {
		t.Fatalf("other account lists %+v", vls)
	}
	st, code = e.call("GET", "/v1/links", "", nil, nil)
	expect(t, "list without a session", st, code, 401, api.CodeUnauthorized)

	st, code = u.call("DELETE", "/v1/links/"+id, nil, nil)
	expect(t, "revoke", st, code, 204, "")
	st, code, _ = e.publicGet("/v1/s/"+id, "")
	expect(t, "revoked", st, code, 404, api.CodeLinkNotFound)
	st, code, _ = e.publicGet("/v1/s/"+id+"/chunks/"+c1, "")
	expect(t, "chunk of a revoked link", st, code, 404, api.CodeLinkNotFound)
	st, code = u.call("DELETE", "/v1/links/"+id, nil, nil)
	expect(t, "revoke twice", st, code, 404, api.CodeLinkNotFound)
	u.must("GET", "/v1/links", nil, &ls)
	if len(ls.Links) != 0 {
		t.Fatalf("list after revoke: %+v", ls)
	}
}

func TestLinkBadRequests(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("bad@example.com")
	c := u.putChunk(10)
	past := time.Now().Add(-time.Minute)
	for name, r := range map[string]api.LinkCreateRequest{
		"short id":        {ID: "abc", Blob: []byte{1}},
		"non-canonical":   {ID: strings.Repeat("A", 21) + "B", Blob: []byte{1}},
		"no blob":         {ID: newLinkID()},
		"big blob":        {ID: newLinkID(), Blob: make([]byte, api.MaxLinkBlob+1)},
		"chunk twice":     {ID: newLinkID(), Blob: []byte{1}, Chunks: []string{c, c}},
		"bad chunk id":    {ID: newLinkID(), Blob: []byte{1}, Chunks: []string{"XY"}},
		"chunk not there": {ID: newLinkID(), Blob: []byte{1}, Chunks: []string{randMAC()}},
		"past expiry":     {ID: newLinkID(), Blob: []byte{1}, Expires: &past},
		"bad password":    {ID: newLinkID(), Blob: []byte{1}, Password: &api.LinkPassword{Salt: randBytes(3), KDF: defaultKDF, AuthHash: randBytes(32)}},
		"bad kdf":         {ID: newLinkID(), Blob: []byte{1}, Password: &api.LinkPassword{Salt: randBytes(16), KDF: api.KDFParams{}, AuthHash: randBytes(32)}},
	} {
		st, code := u.call("POST", "/v1/links", r, nil)
		expect(t, name, st, code, 400, api.CodeBadRequest)
	}
	// Nothing was pinned by the refusals: the chunk is still unreferenced.
	var rec *chunkRec
	e.s.db.View(func(tx *badger.Txn) (err error) { rec, err = readChunk(tx, u.id, c); return err })
	if rec == nil || rec.Refs != 0 {
		t.Fatalf("chunk after refused links: %+v", rec)
	}
	var ls api.LinksResponse
	u.must("GET", "/v1/links", nil, &ls)
	if len(ls.Links) != 0 {
		t.Fatalf("refused links listed: %+v", ls)
	}
	// A blob of the maximum size is taken (the body limit is above the JSON one).
	u.must("POST", "/v1/links", api.LinkCreateRequest{ID: newLinkID(), Blob: make([]byte, api.MaxLinkBlob), Chunks: []string{c}}, nil)
}

func TestLinkPassword(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.LoginLimit = 3 })
	u := e.signup("pw@example.com")
	auth := randBytes(32)
	h := sha256.Sum256(auth)
	salt := randBytes(16)
	id, blob := newLinkID(), randBytes(64)
	u.must("POST", "/v1/links", api.LinkCreateRequest{ID: id, Blob: blob,
		Password: &api.LinkPassword{Salt: salt, KDF: defaultKDF, AuthHash: h[:]}}, nil)
	var pub api.LinkPublic
	st, code, b := e.publicGet("/v1/s/"+id, "")
	expect(t, "get", st, code, 200, "")
	jsonDecode(bytes.NewReader(b), &pub)
	if pub.Blob != nil || pub.Password == nil || !bytes.Equal(pub.Password.Salt, salt) || pub.Password.KDF != defaultKDF || pub.Password.AuthHash != nil {
		t.Fatalf("public view of a password link: %+v", pub)
	}
	var open api.LinkOpenResponse
	st, code = e.call("POST", "/v1/s/"+id+"/open", "", api.LinkOpenRequest{Auth: auth}, &open)
	expect(t, "right password", st, code, 200, "")
	if !bytes.Equal(open.Blob, blob) {
		t.Fatal("open: wrong blob")
	}
	st, code = e.call("POST", "/v1/s/"+id+"/open", "", api.LinkOpenRequest{Auth: randBytes(32)}, nil)
	expect(t, "wrong password", st, code, 403, api.CodeWrongPassword)
	st, code = e.call("POST", "/v1/s/"+id+"/open", "", api.LinkOpenRequest{Auth: randBytes(32)}, nil)
	expect(t, "wrong password 2", st, code, 403, api.CodeWrongPassword)
	// The limit is 3 a minute: the fourth attempt, even the right one, waits.
	req, _ := http.NewRequest("POST", e.url+"/v1/s/"+id+"/open", strings.NewReader(`{"auth":"`+base64.StdEncoding.EncodeToString(auth)+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after 3 attempts: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	st, code = e.call("POST", "/v1/s/"+id+"/open", "", api.LinkOpenRequest{Auth: []byte{1}}, nil)
	expect(t, "short auth", st, code, 400, api.CodeBadRequest)
}

func TestLinkExpiry(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("exp@example.com")
	c := u.putChunk(100)
	id := newLinkID()
	exp := time.Now().Add(1200 * time.Millisecond)
	var cr api.LinkCreateResponse
	u.must("POST", "/v1/links", api.LinkCreateRequest{ID: id, Blob: randBytes(10), Chunks: []string{c}, Expires: &exp}, &cr)
	if cr.Expires == nil || !cr.Expires.Equal(exp) {
		t.Fatalf("expires %v, want %v", cr.Expires, exp)
	}
	if n, err := e.s.sweepLinks(context.Background()); err != nil || n != 0 {
		t.Fatalf("sweep before expiry: %d %v", n, err)
	}
	st, code, _ := e.publicGet("/v1/s/"+id, "")
	expect(t, "before expiry", st, code, 200, "")
	time.Sleep(time.Until(exp) + 50*time.Millisecond)
	st, code, _ = e.publicGet("/v1/s/"+id, "")
	expect(t, "expired", st, code, 410, api.CodeLinkExpired)
	st, code, _ = e.publicGet("/v1/s/"+id+"/chunks/"+c, "")
	expect(t, "chunk of an expired link", st, code, 410, api.CodeLinkExpired)
	st, code = e.call("POST", "/v1/s/"+id+"/open", "", api.LinkOpenRequest{Auth: randBytes(32)}, nil)
	expect(t, "open expired", st, code, 410, api.CodeLinkExpired)
	if n, err := e.s.sweepLinks(context.Background()); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	st, code, _ = e.publicGet("/v1/s/"+id, "")
	expect(t, "swept", st, code, 404, api.CodeLinkNotFound)
	var rec *chunkRec
	e.s.db.View(func(tx *badger.Txn) (err error) { rec, err = readChunk(tx, u.id, c); return err })
	if rec == nil || rec.Refs != 0 {
		t.Fatalf("chunk after the sweep: %+v", rec)
	}
}

// TestLinkPinsAgainstGC: a link's chunks survive the GC after the file that
// held them is gone, and are freed once the link is revoked.
func TestLinkPinsAgainstGC(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.GCGrace = time.Millisecond })
	u := e.signup("gc@example.com")
	c := u.putChunk(3000)
	f := u.create(api.RootID, api.TypeFile, c)
	id := newLinkID()
	u.must("POST", "/v1/links", api.LinkCreateRequest{ID: id, Blob: randBytes(10), Chunks: []string{c}}, nil)
	u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: f.NameMAC}, nil)
	time.Sleep(5 * time.Millisecond)
	if _, _, err := e.s.RunGC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !chunkStored(t, e.s, u.id, c) {
		t.Fatal("GC freed a chunk a link pins")
	}
	st, _, b := e.publicGet("/v1/s/"+id+"/chunks/"+c, "")
	if st != 200 || len(b) != 3000 {
		t.Fatalf("pinned chunk through the link: %d", st)
	}
	u.must("DELETE", "/v1/links/"+id, nil, nil)
	time.Sleep(5 * time.Millisecond)
	if n, _, err := e.s.RunGC(context.Background()); err != nil || n != 1 {
		t.Fatalf("GC after revoke: %d %v", n, err)
	}
	if chunkStored(t, e.s, u.id, c) {
		t.Fatal("chunk kept after its link was revoked")
	}
}

// FuzzDecodeLinkRequests: the link requests' strict decoding and checks
// never panic, and what they accept is within the limits.
func FuzzDecodeLinkRequests(f *testing.F) {
	f.Add([]byte(`{"id":"AAAAAAAAAAAAAAAAAAAAAA","blob":"AQ==","chunks":[]}`), false)
	f.Add([]byte(`{"id":"AAAAAAAAAAAAAAAAAAAAAA","blob":"AQ==","chunks":["`+strings.Repeat("a", 64)+`"],"expires":"2999-01-01T00:00:00Z","password":{"salt":"AAAAAAAAAAAAAAAAAAAAAA==","kdf":{"time":3,"memory_kib":65536,"threads":2},"auth_hash":"`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`"}}`), false)
	f.Add([]byte(`{"auth":"AAAA"}`), true)
	f.Fuzz(func(t *testing.T, b []byte, open bool) {
		if open {
			var r api.LinkOpenRequest
			decodeJSON(bytes.NewReader(b), &r)
			return
		}
		var r api.LinkCreateRequest
		if decodeJSON(bytes.NewReader(b), &r) != nil || validateLinkCreate(&r, time.Now()) != nil {
			return
		}
		if !validLinkID(r.ID) || len(r.Blob) == 0 || len(r.Blob) > api.MaxLinkBlob || len(r.Chunks) > api.MaxLinkChunks {
			t.Fatalf("accepted %+v", r)
		}
	})
}

// TestLinkOwnerDisabled: disabling an account stops its links; enabling it
// again brings them back.
func TestLinkOwnerDisabled(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("dis@example.com")
	c := u.putChunk(100)
	id := newLinkID()
	u.must("POST", "/v1/links", api.LinkCreateRequest{ID: id, Blob: randBytes(10), Chunks: []string{c}}, nil)
	if err := e.s.SetDisabled(u.email, true); err != nil {
		t.Fatal(err)
	}
	st, code, _ := e.publicGet("/v1/s/"+id, "")
	expect(t, "disabled owner", st, code, 403, api.CodeForbidden)
	st, code, _ = e.publicGet("/v1/s/"+id+"/chunks/"+c, "")
	expect(t, "chunk of a disabled owner", st, code, 403, api.CodeForbidden)
	if err := e.s.SetDisabled(u.email, false); err != nil {
		t.Fatal(err)
	}
	st, code, _ = e.publicGet("/v1/s/"+id+"/chunks/"+c, "")
	expect(t, "enabled again", st, code, 200, "")
}

// batchBody is what GET /v1/s/{id}/chunks answers for chunks data, in order:
// each one's length (4 bytes, big-endian) and bytes.
func batchBody(data ...[]byte) []byte {
	var b []byte
	for _, d := range data {
		b = binary.BigEndian.AppendUint32(b, uint32(len(d)))
		b = append(b, d...)
	}
	return b
}

// TestLinkChunksBatch: GET /v1/s/{id}/chunks?ids=... answers the chunks the
// link pins back to back, framed, in the order asked for, from the blob
// store and the metadata store alike; a password link's chunks as its
// single-chunk reads (no auth); bad input is a 400 (or 404 for a chunk the
// link does not pin) and nothing else.
func TestLinkChunksBatch(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("batch@example.com")
	big, small, other := randBytes(200<<10), randBytes(100), randBytes(300<<10)
	cBig, cSmall, cOther := randMAC(), randMAC(), randMAC()
	u.must("PUT", "/v1/chunks/"+cBig, big, nil)
	u.must("PUT", "/v1/chunks/"+cSmall, small, nil) // kept in the metadata store
	u.must("PUT", "/v1/chunks/"+cOther, other, nil) // stored, not in the link
	id := newLinkID()
	u.must("POST", "/v1/links", api.LinkCreateRequest{ID: id, Blob: randBytes(50), Chunks: []string{cBig, cSmall}}, nil)

	get := func(query string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get(e.url + "/v1/s/" + id + "/chunks?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, tc := range []struct {
		ids  []string
		want []byte
	}{
		{[]string{cBig, cSmall}, batchBody(big, small)},
		{[]string{cSmall, cBig}, batchBody(small, big)},
		{[]string{cSmall}, batchBody(small)},
	} {
		resp, b := get("ids=" + strings.Join(tc.ids, ","))
		if resp.StatusCode != 200 || !bytes.Equal(b, tc.want) || resp.ContentLength != int64(len(tc.want)) {
			t.Fatalf("batch %d ids: %d, %d bytes (Content-Length %d), want %d", len(tc.ids), resp.StatusCode, len(b), resp.ContentLength, len(tc.want))
		}
	}

	pathOf := func(q string) string { return "/v1/s/" + id + "/chunks?" + q }
	many := make([]string, api.MaxLinkBatchChunks+1)
	for i := range many {
		many[i] = randMAC()
	}
	for _, tc := range []struct {
		name, path string
		status     int
		code       string
	}{
		{"no query", pathOf(""), 400, api.CodeBadRequest},
		{"empty ids", pathOf("ids="), 400, api.CodeBadRequest},
		{"trailing comma", pathOf("ids=" + cBig + ","), 400, api.CodeBadRequest},
		{"duplicate", pathOf("ids=" + cBig + "," + cSmall + "," + cBig), 400, api.CodeBadRequest},
		{"too many", pathOf("ids=" + strings.Join(many, ",")), 400, api.CodeBadRequest},
		{"uppercase id", pathOf("ids=" + strings.ToUpper(cBig)), 400, api.CodeBadRequest},
		{"short id", pathOf("ids=abc"), 400, api.CodeBadRequest},
		{"ids twice", pathOf("ids=" + cBig + "&ids=" + cSmall), 400, api.CodeBadRequest},
		{"other parameter", pathOf("ids=" + cBig + "&x=1"), 400, api.CodeBadRequest},
		{"bad escape", pathOf("ids=%zz"), 400, api.CodeBadRequest},
		{"not in the link", pathOf("ids=" + cBig + "," + cOther), 404, api.CodeNotFound},
		{"unknown chunk", pathOf("ids=" + randMAC()), 404, api.CodeNotFound},
		{"unknown link", "/v1/s/" + newLinkID() + "/chunks?ids=" + cBig, 404, api.CodeLinkNotFound},
	} {
		st, code, b := e.publicGet(tc.path, "")
		expect(t, tc.name, st, code, tc.status, tc.code)
		if b != nil {
			t.Errorf("%s: answered %d bytes", tc.name, len(b))
		}
	}

	// A password link: its chunks are read as through /chunks/{chunkid}.
	pid := newLinkID()
	u.must("POST", "/v1/links", api.LinkCreateRequest{ID: pid, Blob: randBytes(50), Chunks: []string{cOther},
		Password: &api.LinkPassword{Salt: randBytes(16), KDF: defaultKDF, AuthHash: randBytes(32)}}, nil)
	st, _, b := e.publicGet("/v1/s/"+pid+"/chunks?ids="+cOther, "")
	if st != 200 || !bytes.Equal(b, batchBody(other)) {
		t.Fatalf("password link batch: %d, %d bytes", st, len(b))
	}

	// A blob lost from the store after the answer started: the answer is
	// cut short, never a whole-looking answer.
	if err := e.s.blobs.Delete(context.Background(), blobKey(u.id, cBig)); err != nil {
		t.Fatal(err)
	}
	// (The first frame may not even have left the server's buffer.)
	resp, err := http.Get(e.url + pathOf("ids="+cSmall+","+cBig))
	if err == nil {
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil || len(b) >= len(batchBody(small, big)) {
			t.Fatalf("lost blob in a batch: %d, read %d bytes, err %v; want a cut answer", resp.StatusCode, len(b), err)
		}
	}

	// Revoked: the link's chunks are gone with it.
	u.must("DELETE", "/v1/links/"+id, nil, nil)
	st, code, _ := e.publicGet(pathOf("ids="+cSmall), "")
	expect(t, "revoked", st, code, 404, api.CodeLinkNotFound)
}

// TestLinkChunksBatchBytes: an answer holds at most MaxLinkBatchBytes of
// sealed chunks; more is a 400 before any byte is sent.
func TestLinkChunksBatchBytes(t *testing.T) {
	e := newEnv(t, nil, nil)
	u := e.signup("batchbytes@example.com")
	var ids []string
	for total := 0; total <= api.MaxLinkBatchBytes; total += api.MaxChunkBody {
		ids = append(ids, u.putChunk(api.MaxChunkBody))
	}
	id := newLinkID()
	u.must("POST", "/v1/links", api.LinkCreateRequest{ID: id, Blob: randBytes(50), Chunks: ids}, nil)
	st, code, _ := e.publicGet("/v1/s/"+id+"/chunks?ids="+strings.Join(ids, ","), "")
	expect(t, "over the bytes", st, code, 400, api.CodeBadRequest)
	st, _, b := e.publicGet("/v1/s/"+id+"/chunks?ids="+strings.Join(ids[1:], ","), "")
	if st != 200 || len(b) != len(ids[1:])*(4+api.MaxChunkBody) {
		t.Fatalf("at the bytes: %d, %d bytes", st, len(b))
	}
}

// FuzzParseLinkChunkIDs: whatever the query, the parser either refuses it
// with a 400 or returns 1..MaxLinkBatchChunks distinct valid chunk ids.
func FuzzParseLinkChunkIDs(f *testing.F) {
	a, b := strings.Repeat("a", 64), strings.Repeat("0", 63)+"1"
	for _, s := range []string{"ids=" + a, "ids=" + a + "," + b, "ids=" + a + "," + a, "ids=", "", "ids=" + a + "&ids=" + b,
		"ids=%zz", "ids=" + a + ",", strings.Repeat("ids="+a+",", 20)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		ids, err := parseLinkChunkIDs(q)
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != 400 || ids != nil {
				t.Fatalf("%q: error %v (%T), ids %v", q, err, err, ids)
			}
			return
		}
		if len(ids) == 0 || len(ids) > api.MaxLinkBatchChunks {
			t.Fatalf("%q: %d ids", q, len(ids))
		}
		seen := map[string]bool{}
		for _, c := range ids {
			if !api.ValidHexID(c) || seen[c] {
				t.Fatalf("%q: id %q invalid or twice", q, c)
			}
			seen[c] = true
		}
	})
}
