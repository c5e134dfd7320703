package server

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"kumo/remote/api"
	"kumo/remote/blob"
)

// rawRequest sends bytes as-is (no client-side path cleaning) and returns the status.
func rawRequest(t *testing.T, addr, req string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	var status int
	fmt.Sscanf(string(buf[:n]), "HTTP/1.1 %d", &status)
	return status
}

func testBadInput(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("bad@example.com")
	ch := u.putChunk(100)
	d := u.create(api.RootID, api.TypeDir)
	f := u.create(d.Node.ID, api.TypeFile, ch)
	mac := randMAC()
	id := randID()
	createJSON := func(extra string) string {
		return fmt.Sprintf(`{"parent":1,"name_mac":%q,"name":"AAAA","id":%d,"type":"file","attrs":"AAAA"%s}`, mac, id, extra)
	}
	big := strings.Repeat("A", api.MaxJSONBody)
	ids := make([]string, api.MaxHaveBatch+1)
	for i := range ids {
		ids[i] = ch
	}
	ops := make([]api.BatchOp, api.MaxBatchOps+1)
	for i := range ops {
		ops[i] = api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: api.RootID, NameMAC: d.NameMAC}}
	}
	cr := func(mod func(*api.CreateRequest)) api.CreateRequest {
		r := api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(4), ID: randID(), Type: api.TypeFile, Attrs: randBytes(4)}
		mod(&r)
		return r
	}
	cases := []struct {
		name, method, path string
		token              string
		body               any
		status             int
		code               string
	}{
		{"malformed json", "POST", "/v1/nodes", u.token, "{", 400, api.CodeBadRequest},
		{"unknown field", "POST", "/v1/nodes", u.token, createJSON(`,"evil":1`), 400, api.CodeBadRequest},
		{"trailing data", "POST", "/v1/nodes", u.token, createJSON("") + "{}", 400, api.CodeBadRequest},
		{"wrong type", "POST", "/v1/nodes", u.token, `{"parent":"1"}`, 400, api.CodeBadRequest},
		{"negative id", "POST", "/v1/nodes", u.token, `{"parent":1,"id":-5}`, 400, api.CodeBadRequest},
		{"not base64", "POST", "/v1/nodes", u.token, strings.Replace(createJSON(""), `"AAAA"`, `"!!"`, 1), 400, api.CodeBadRequest},
		{"oversized body", "POST", "/v1/nodes", u.token, `{"attrs":"` + big + `"}`, 413, api.CodeTooLarge},
		{"short name_mac", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.NameMAC = "abc" }), 400, api.CodeBadRequest},
		{"upper-case name_mac", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.NameMAC = strings.ToUpper(randMAC()) }), 400, api.CodeBadRequest},
		{"id 0", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.ID = 0 }), 400, api.CodeBadRequest},
		{"id 1", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.ID = 1 }), 400, api.CodeBadRequest},
		{"parent 0", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Parent = 0 }), 400, api.CodeBadRequest},
		{"missing parent", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Parent = randID() }), 404, api.CodeNotFound},
		{"bad type", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Type = "symlink" }), 400, api.CodeBadRequest},
		{"empty attrs", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Attrs = nil }), 400, api.CodeBadRequest},
		{"huge attrs", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Attrs = make([]byte, api.MaxAttrsSize+1) }), 400, api.CodeBadRequest},
		{"huge name", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Name = make([]byte, api.MaxNameSize+1) }), 400, api.CodeBadRequest},
		{"bad chunk id", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Chunks = []string{"../" + ch[3:]} }), 400, api.CodeBadRequest},
		{"unstored chunk", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Chunks = []string{ch, randMAC()} }), 400, api.CodeBadRequest},
		{"dir with chunks", "POST", "/v1/nodes", u.token, cr(func(r *api.CreateRequest) { r.Type = api.TypeDir; r.Chunks = []string{ch} }), 400, api.CodeBadRequest},
		{"replayed create", "POST", "/v1/nodes", u.token, api.CreateRequest{Parent: d.Node.ID, NameMAC: f.NameMAC, Name: f.Name, ID: f.Node.ID, Type: api.TypeFile, Attrs: f.Node.Attrs, Chunks: f.Node.Chunks}, 409, api.CodeExists},
		{"node id letters", "GET", "/v1/nodes/abc", u.token, nil, 400, api.CodeBadRequest},
		{"node id 0", "GET", "/v1/nodes/0", u.token, nil, 400, api.CodeBadRequest},
		{"node id leading 0", "GET", "/v1/nodes/01", u.token, nil, 400, api.CodeBadRequest},
		{"node id overflow", "GET", "/v1/nodes/18446744073709551616", u.token, nil, 400, api.CodeBadRequest},
		{"node id negative", "GET", "/v1/nodes/-1", u.token, nil, 400, api.CodeBadRequest},
		{"lookup bad mac", "GET", "/v1/nodes/1/entries/xyz", u.token, nil, 400, api.CodeBadRequest},
		{"update bad json", "PUT", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), u.token, `{"version":"x"}`, 400, api.CodeBadRequest},
		{"update huge attrs", "PUT", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), u.token, api.UpdateRequest{Version: 1, Attrs: make([]byte, api.MaxAttrsSize+1)}, 400, api.CodeBadRequest},
		{"chunk bad id", "PUT", "/v1/chunks/xyz", u.token, []byte("data"), 400, api.CodeBadRequest},
		{"chunk upper-case id", "PUT", "/v1/chunks/" + strings.ToUpper(randMAC()), u.token, []byte("data"), 400, api.CodeBadRequest},
		{"chunk encoded slash", "PUT", "/v1/chunks/..%2F" + ch[3:], u.token, []byte("data"), 400, api.CodeBadRequest},
		{"chunk empty", "PUT", "/v1/chunks/" + randMAC(), u.token, []byte{}, 400, api.CodeBadRequest},
		{"chunk too big", "PUT", "/v1/chunks/" + randMAC(), u.token, make([]byte, api.MaxChunkBody+1), 413, api.CodeTooLarge},
		{"get chunk bad id", "GET", "/v1/chunks/zz", u.token, nil, 400, api.CodeBadRequest},
		{"get unknown chunk", "GET", "/v1/chunks/" + randMAC(), u.token, nil, 404, api.CodeNotFound},
		{"have too many", "POST", "/v1/chunks/have", u.token, api.HaveRequest{IDs: ids}, 400, api.CodeBadRequest},
		{"have bad id", "POST", "/v1/chunks/have", u.token, api.HaveRequest{IDs: []string{"x"}}, 400, api.CodeBadRequest},
		{"batch too big", "POST", "/v1/batch", u.token, api.BatchRequest{Ops: ops}, 400, api.CodeBadRequest},
		{"rename bad mode", "POST", "/v1/rename", u.token, api.RenameRequest{SrcParent: d.Node.ID, SrcNameMAC: f.NameMAC, DstParent: 1, DstNameMAC: randMAC(), Name: randBytes(3), Mode: "swap"}, 400, api.CodeBadRequest},
		{"rename no name", "POST", "/v1/rename", u.token, api.RenameRequest{SrcParent: d.Node.ID, SrcNameMAC: f.NameMAC, DstParent: 1, DstNameMAC: randMAC()}, 400, api.CodeBadRequest},
		{"rename into file", "POST", "/v1/rename", u.token, api.RenameRequest{SrcParent: 1, SrcNameMAC: d.NameMAC, DstParent: f.Node.ID, DstNameMAC: randMAC(), Name: randBytes(3)}, 409, api.CodeNotDir},
		{"link root", "POST", "/v1/link", u.token, api.LinkRequest{ID: 1, Parent: 1, NameMAC: randMAC(), Name: randBytes(3)}, 400, api.CodeBadRequest},
		{"unlink bad mac", "POST", "/v1/unlink", u.token, api.UnlinkRequest{Parent: 1, NameMAC: "zz"}, 400, api.CodeBadRequest},
		{"unlink missing", "POST", "/v1/unlink", u.token, api.UnlinkRequest{Parent: 1, NameMAC: randMAC()}, 404, api.CodeNotFound},
		{"changes bad after", "GET", "/v1/changes?after=x", u.token, nil, 400, api.CodeBadRequest},
		{"changes bad wait", "GET", "/v1/changes?wait=-1", u.token, nil, 400, api.CodeBadRequest},
		{"changes unknown param", "GET", "/v1/changes?after=1&x=2", u.token, nil, 400, api.CodeBadRequest},
		{"no token", "GET", "/v1/account", "", nil, 401, api.CodeUnauthorized},
		{"wrong token", "GET", "/v1/account", randMAC(), nil, 401, api.CodeUnauthorized},
		{"malformed token", "GET", "/v1/account", "x y", nil, 401, api.CodeUnauthorized},
		{"token without auth on write", "POST", "/v1/nodes", "", cr(func(*api.CreateRequest) {}), 401, api.CodeUnauthorized},
		{"unknown endpoint", "GET", "/v1/nope", u.token, nil, 404, api.CodeNotFound},
		{"double slash", "GET", "/v1//account", u.token, nil, 400, api.CodeBadRequest},
		{"trailing slash", "GET", "/v1/account/", u.token, nil, 400, api.CodeBadRequest},
		{"signup bad email", "POST", "/v1/signup", "", api.SignupRequest{Email: "no-at-sign", Salt: randBytes(16), KDF: defaultKDF, AuthKey: randBytes(32), WrappedMaster: randBytes(73), RootAttrs: randBytes(4)}, 400, api.CodeBadRequest},
		{"signup short salt", "POST", "/v1/signup", "", api.SignupRequest{Email: "n@example.com", Salt: randBytes(5), KDF: defaultKDF, AuthKey: randBytes(32), WrappedMaster: randBytes(73), RootAttrs: randBytes(4)}, 400, api.CodeBadRequest},
		{"signup weak kdf", "POST", "/v1/signup", "", api.SignupRequest{Email: "n@example.com", Salt: randBytes(16), KDF: api.KDFParams{Time: 0, MemoryKiB: 8, Threads: 1}, AuthKey: randBytes(32), WrappedMaster: randBytes(73), RootAttrs: randBytes(4)}, 400, api.CodeBadRequest},
		{"signup huge kdf", "POST", "/v1/signup", "", api.SignupRequest{Email: "n@example.com", Salt: randBytes(16), KDF: api.KDFParams{Time: 3, MemoryKiB: 1 << 30, Threads: 1}, AuthKey: randBytes(32), WrappedMaster: randBytes(73), RootAttrs: randBytes(4)}, 400, api.CodeBadRequest},
		{"signup without session token", "POST", "/v1/signup", "", api.SignupRequest{Email: "n@example.com", Salt: randBytes(16), KDF: defaultKDF, AuthKey: randBytes(32), WrappedMaster: randBytes(73), RootAttrs: randBytes(4)}, 400, api.CodeBadRequest},
		{"login short key", "POST", "/v1/login", "", api.LoginRequest{Email: "bad@example.com", AuthKey: randBytes(3)}, 400, api.CodeBadRequest},
		{"prelogin bad email", "POST", "/v1/prelogin", "", api.PreloginRequest{Email: "a@@b"}, 400, api.CodeBadRequest},
		{"password short key", "POST", "/v1/password", u.token, api.PasswordRequest{OldAuthKey: u.authKey, NewSalt: randBytes(16), NewKDF: defaultKDF, NewAuthKey: randBytes(2), NewWrappedMaster: randBytes(73)}, 400, api.CodeBadRequest},
	}
	before := checkConsistent(t, e.s, u.id)
	for _, c := range cases {
		st, code := e.call(c.method, c.path, c.token, c.body, nil)
		if st != c.status || code != c.code {
			t.Errorf("%s: got %d %s, want %d %s", c.name, st, code, c.status, c.code)
		}
	}
	// Path tricks the Go client would clean are sent raw.
	addr := strings.TrimPrefix(e.url, "http://")
	for _, p := range []string{"/v1/chunks/../account", "/v1/chunks/./" + ch, "/v1/nodes/1/../1", "/v1/%2e%2e/account"} {
		req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", p, u.token)
		if st := rawRequest(t, addr, req); st != 400 {
			t.Errorf("raw path %s: %d, want 400", p, st)
		}
	}
	if st := rawRequest(t, addr, "DELETE /v1/nodes/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); st < 400 || st >= 500 {
		t.Errorf("wrong method: %d", st)
	}
	if after := checkConsistent(t, e.s, u.id); after != before {
		t.Errorf("bad input changed state: %+v -> %+v", before, after)
	}
	if accts, _ := e.s.Accounts(); len(accts) != 1 {
		t.Errorf("bad signups created accounts: %d", len(accts))
	}
}
