package fs

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"kumo/remote/api"
)

// Table tests of the pusher's batch planning (batchplan.go): no mount, no
// cloud, so they run under -short.

func crOp(id uint64, attrs string) api.BatchOp {
	return api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: api.RootID, ID: id, Type: api.TypeFile,
		NameMAC: strings.Repeat("a", 64), Name: []byte("n"), Attrs: []byte(attrs)}}
}

func upOp(id uint64, attrs string, chunks ...string) api.BatchOp {
	return api.BatchOp{Op: api.OpUpdate, ID: id, Update: &api.UpdateRequest{Attrs: []byte(attrs), Chunks: chunks}}
}

func rmOp(id uint64) api.BatchOp {
	return api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: api.RootID, NameMAC: strings.Repeat("b", 64)}}
}

// sizedOp is an unlink of about n bytes by opBytes.
func sizedOp(n int) api.BatchOp {
	return api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{NameMAC: strings.Repeat("c", n-256)}}
}

func TestPlanBatch(t *testing.T) {
	versions := map[uint64]uint64{7: 3, 8: 5} // nodes the cloud knows, at these versions
	versionOf := func(id uint64) (uint64, bool) { v, ok := versions[id]; return v, ok }
	type want struct {
		op      string // op of the batch entry
		id      uint64 // node of a create or update
		version uint64 // base version of an update
		attrs   string // attributes a create or update carries
	}
	tests := []struct {
		name  string
		ops   []api.BatchOp
		batch []want
		need  []int
	}{
		{"empty", nil, nil, []int{}},
		{"create alone", []api.BatchOp{crOp(20, "a")},
			[]want{{api.OpCreate, 20, 0, "a"}}, []int{0}},
		{"update gets the cloud's version", []api.BatchOp{upOp(7, "x")},
			[]want{{api.OpUpdate, 7, 3, "x"}}, []int{0}},
		{"earlier update superseded by the last", []api.BatchOp{upOp(7, "x"), upOp(8, "y"), upOp(7, "z")},
			[]want{{api.OpUpdate, 8, 5, "y"}, {api.OpUpdate, 7, 3, "z"}}, []int{1, 0, 1}},
		{"update folded into the create before it", []api.BatchOp{crOp(20, "a"), upOp(20, "b"), upOp(20, "c")},
			[]want{{api.OpCreate, 20, 0, "c"}}, []int{0, 0, 0}},
		{"update before the create is not folded", []api.BatchOp{upOp(7, "x"), crOp(20, "a")},
			[]want{{api.OpUpdate, 7, 3, "x"}, {api.OpCreate, 20, 0, "a"}}, []int{0, 1}},
		{"update of a node deleted here is dropped, acked with what precedes it",
			[]api.BatchOp{crOp(20, "a"), upOp(9, "x"), rmOp(9)},
			[]want{{api.OpCreate, 20, 0, "a"}, {api.OpUnlink, 0, 0, ""}}, []int{0, 0, 1}},
		{"dropped update first needs nothing", []api.BatchOp{upOp(9, "x"), rmOp(9)},
			[]want{{api.OpUnlink, 0, 0, ""}}, []int{-1, 0}},
		{"many updates, one op", []api.BatchOp{upOp(8, "1"), upOp(8, "2"), upOp(8, "3"), upOp(8, "4")},
			[]want{{api.OpUpdate, 8, 5, "4"}}, []int{0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var before [][]byte
			for _, op := range tc.ops {
				if op.Create != nil {
					before = append(before, bytes.Clone(op.Create.Attrs))
				}
			}
			batch, need := planBatch(tc.ops, versionOf)
			if !reflect.DeepEqual(need, tc.need) {
				t.Errorf("need = %v, want %v", need, tc.need)
			}
			var got []want
			for _, op := range batch {
				w := want{op: op.Op}
				switch {
				case op.Create != nil:
					w.id, w.attrs = op.Create.ID, string(op.Create.Attrs)
				case op.Update != nil:
					w.id, w.version, w.attrs = op.ID, op.Update.Version, string(op.Update.Attrs)
				}
				got = append(got, w)
			}
			if !reflect.DeepEqual(got, tc.batch) {
				t.Errorf("batch = %+v, want %+v", got, tc.batch)
			}
			// The journal's ops are kept by the push loop: planning must not change them.
			i := 0
			for _, op := range tc.ops {
				if op.Create != nil {
					if !bytes.Equal(op.Create.Attrs, before[i]) {
						t.Errorf("planBatch changed a queued create's attributes")
					}
					i++
				}
				if op.Update != nil && op.Update.Version != 0 {
					t.Errorf("planBatch changed a queued update's version")
				}
			}
		})
	}
}

func TestBatchCut(t *testing.T) {
	k := func(n int) []api.BatchOp { // n ops of 1000 bytes each by opBytes
		ops := make([]api.BatchOp, n)
		for i := range ops {
			ops[i] = sizedOp(1000)
		}
		return ops
	}
	tests := []struct {
		name  string
		batch []api.BatchOp
		limit int
		cut   int
	}{
		{"empty", nil, 5000, 0},
		{"all fit", k(5), 5000, 5},
		{"exactly at the limit", k(5), 5000, 5},
		{"one byte short", k(5), 4999, 4},
		{"cut in the middle", k(10), 3500, 3},
		{"a lone op over the limit still goes", k(3), 10, 1},
		{"a big op behind small ones starts the next request", append(k(2), sizedOp(100000)), 5000, 2},
	}
	for _, tc := range tests {
		if got := batchCut(tc.batch, tc.limit); got != tc.cut {
			t.Errorf("%s: batchCut = %d, want %d", tc.name, got, tc.cut)
		}
	}
	if got := opBytes(sizedOp(1000)); got != 1000 {
		t.Fatalf("sizedOp(1000) is %d bytes by opBytes", got)
	}
}

// TestShrinkBatch follows what pushOnce sends after each 413.
func TestShrinkBatch(t *testing.T) {
	ops := func(n, size int) []api.BatchOp {
		s := make([]api.BatchOp, n)
		for i := range s {
			s[i] = sizedOp(size)
		}
		return s
	}
	tests := []struct {
		name      string
		batch     []api.BatchOp
		cut       int
		limit     int
		wantCut   int
		wantLimit int
		ok        bool
	}{
		{"a lone op cannot shrink, the bound stays", ops(3, 1<<20), 1, maxBatchBytes, 1, maxBatchBytes, false},
		{"half the ops, bound half the request", ops(300, 10000), 300, maxBatchBytes, 150, 1500000, true},
		{"the halved bound cuts further", ops(300, 10000), 200, maxBatchBytes, 100, 1000000, true},
		{"bound never rises above the current one", ops(100, 10000), 100, 200000, 20, 200000, true},
		{"bound never falls below minBatchBytes", ops(10, 10000), 10, maxBatchBytes, 5, minBatchBytes, true},
		{"two big ops become one", ops(2, 1<<20), 2, maxBatchBytes, 1, 1 << 20, true},
	}
	for _, tc := range tests {
		cut, limit, ok := shrinkBatch(tc.batch, tc.cut, tc.limit)
		if cut != tc.wantCut || limit != tc.wantLimit || ok != tc.ok {
			t.Errorf("%s: shrinkBatch = (%d, %d, %v), want (%d, %d, %v)", tc.name, cut, limit, ok, tc.wantCut, tc.wantLimit, tc.ok)
		}
	}
	// Refused again and again, a batch shrinks to a single op in a few steps.
	batch := ops(300, 10000)
	cut, limit, steps := batchCut(batch, maxBatchBytes), maxBatchBytes, 0
	for ok := true; ok; steps++ {
		cut, limit, ok = shrinkBatch(batch, cut, limit)
	}
	if cut != 1 || steps > 10 {
		t.Fatalf("after %d refusals the request has %d ops, want 1 within 10", steps, cut)
	}
}

func TestAckedPrefix(t *testing.T) {
	tests := []struct {
		need []int
		done int
		n    int
	}{
		{nil, 0, 0},
		{[]int{0, 1, 2}, 0, 0},
		{[]int{0, 1, 2}, 2, 2},
		{[]int{0, 1, 2}, 3, 3},
		{[]int{-1, 0}, 0, 1},      // a dropped update before anything is sent
		{[]int{1, 0, 1}, 1, 0},    // a superseded update waits for its replacement
		{[]int{1, 0, 1}, 2, 3},    //
		{[]int{0, 0, 0, 1}, 1, 3}, // updates folded into a create ack with it
	}
	for _, tc := range tests {
		if got := ackedPrefix(tc.need, tc.done); got != tc.n {
			t.Errorf("ackedPrefix(%v, %d) = %d, want %d", tc.need, tc.done, got, tc.n)
		}
	}
}

// The pusher rests twice as long as a push took while the kernel keeps
// asking, up to pushRestMax, and not at all when the drive is idle or a
// flush waits.
func TestPushRest(t *testing.T) {
	d := &Drive{}
	if r := d.pushRest(300 * time.Millisecond); r != 0 {
		t.Fatalf("idle drive rests %v", r)
	}
	d.noteForeground()
	if r := d.pushRest(300 * time.Millisecond); r != 600*time.Millisecond {
		t.Fatalf("busy drive rests %v after a 300 ms push, want 600 ms", r)
	}
	if r := d.pushRest(5 * time.Second); r != pushRestMax {
		t.Fatalf("busy drive rests %v after a 5 s push, want %v", r, pushRestMax)
	}
	d.up.flushing.Add(1)
	if r := d.pushRest(300 * time.Millisecond); r != 0 {
		t.Fatalf("rest %v while a flush waits", r)
	}
}
