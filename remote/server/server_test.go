package server

import (
	"fmt"
	"testing"

	"kumo/remote/api"
	"kumo/remote/blob"
)

func TestServerLocal(t *testing.T) {
	runServerSuite(t, localBlobs)
}

// runServerSuite runs every server test against blob stores made by newBlobs.
func runServerSuite(t *testing.T, newBlobs func(t *testing.T) blob.Store) {
	t.Run("Basic", func(t *testing.T) { testBasic(t, newBlobs) })
}

func testBasic(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	u := e.signup("a@example.com")
	ch := u.putChunk(1000)
	f := u.create(api.RootID, api.TypeFile, ch)
	d := u.create(api.RootID, api.TypeDir)
	if es := u.list(api.RootID); len(es) != 2 {
		t.Fatalf("list: %d entries", len(es))
	}
	var got api.Entry
	u.must("GET", fmt.Sprintf("/v1/nodes/1/entries/%s", f.NameMAC), nil, &got)
	if got.Node.ID != f.Node.ID || len(got.Node.Chunks) != 1 {
		t.Fatalf("lookup: %+v", got)
	}
	var n api.Node
	u.must("GET", fmt.Sprintf("/v1/nodes/%d", d.Node.ID), nil, &n)
	if n.Type != api.TypeDir || n.Parent != api.RootID {
		t.Fatalf("get dir: %+v", n)
	}
	var data []byte
	u.must("GET", "/v1/chunks/"+ch, nil, &data)
	if len(data) != 1000 {
		t.Fatalf("chunk: %d bytes", len(data))
	}
	if a := u.account(); a.QuotaUsed != 1000 {
		t.Fatalf("usage %d", a.QuotaUsed)
	}
}
