package fs

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	mrand "math/rand/v2"
	"testing"

	"kumo/remote/api"
)

// TestOpBytesBound: opBytes never underestimates an op's JSON size, so a
// batch cut by batchCut is never over its bound (but for a lone op).
func TestOpBytesBound(t *testing.T) {
	b := func(n int) []byte { p := make([]byte, n); rand.Read(p); return p }
	mac := func() string { return hex.EncodeToString(b(32)) }
	ids := func(n int) []string {
		s := []string{}
		for range n {
			s = append(s, mac())
		}
		return s
	}
	var ops []api.BatchOp
	for i := range 500 {
		n := mrand.IntN(1 << 16)
		id := mrand.Uint64()
		switch i % 5 {
		case 0:
			ops = append(ops, api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: id, NameMAC: mac(), Name: b(1 + n%512),
				ID: ^id, Type: api.TypeFile, Attrs: b(n + 1), Chunks: ids(n % 40)}})
		case 1:
			ops = append(ops, api.BatchOp{Op: api.OpUpdate, ID: id, Update: &api.UpdateRequest{Version: id, Attrs: b(n + 1), Chunks: ids(n % 40)}})
		case 2:
			ops = append(ops, api.BatchOp{Op: api.OpRename, Rename: &api.RenameRequest{SrcParent: id, SrcNameMAC: mac(), DstParent: ^id,
				DstNameMAC: mac(), Name: b(1 + n%512), SrcName: b(n % 512), Mode: api.RenameExchange, Node: id, DstNode: ^id}})
		case 3:
			ops = append(ops, api.BatchOp{Op: api.OpLink, Link: &api.LinkRequest{ID: id, Parent: ^id, NameMAC: mac(), Name: b(1 + n%512)}})
		default:
			ops = append(ops, api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: id, NameMAC: mac(), Dir: true}})
		}
	}
	for _, op := range ops {
		j, err := json.Marshal(op)
		if err != nil {
			t.Fatal(err)
		}
		if got := opBytes(op); got < len(j) {
			t.Fatalf("opBytes %d < %d bytes of JSON for %s", got, len(j), op.Op)
		}
	}
	for _, limit := range []int{minBatchBytes, 1 << 20, maxBatchBytes} {
		for rest := ops; len(rest) > 0; {
			cut := batchCut(rest, limit)
			j, err := json.Marshal(api.BatchRequest{Ops: rest[:cut]})
			if err != nil {
				t.Fatal(err)
			}
			if cut < 1 || cut > 1 && len(j) > limit {
				t.Fatalf("batch of %d ops cut at %d is %d bytes of JSON, bound %d", len(rest), cut, len(j), limit)
			}
			rest = rest[cut:]
		}
	}
}
