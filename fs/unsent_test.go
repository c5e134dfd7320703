package fs

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"kumo/internal/meta"
	"kumo/remote/api"
)

// The rules of unsentTree on its own: which removals cancel which seqs.
func TestUnsentTreeRules(t *testing.T) {
	create := func(id, parent uint64) api.BatchOp {
		return api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{ID: id, Parent: parent}}
	}
	update := func(id uint64) api.BatchOp { return api.BatchOp{Op: api.OpUpdate, ID: id} }
	unlink := func(parent uint64) api.BatchOp {
		return api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: parent}}
	}
	rename := func(id, from, to uint64) api.BatchOp {
		return api.BatchOp{Op: api.OpRename, Rename: &api.RenameRequest{Node: id, SrcParent: from, DstParent: to}}
	}
	link := func(id, parent uint64) api.BatchOp {
		return api.BatchOp{Op: api.OpLink, Link: &api.LinkRequest{ID: id, Parent: parent}}
	}
	type removal struct {
		id, seq uint64
		want    bool
	}
	cases := []struct {
		name      string
		ops       []api.BatchOp // seqs 1, 2, ...
		sentFrom  uint64
		removals  []removal
		cancelled []uint64
	}{
		{"file created, written and removed", []api.BatchOp{create(10, 1), update(10), update(10), unlink(1)}, 0,
			[]removal{{10, 4, true}}, []uint64{1, 2, 3, 4}},
		{"create already on its way", []api.BatchOp{create(10, 1), update(10), unlink(1)}, 1,
			[]removal{{10, 3, false}}, nil},
		{"renamed file goes as usual", []api.BatchOp{create(10, 1), rename(10, 1, 1), unlink(1)}, 0,
			[]removal{{10, 3, false}}, nil},
		{"hard-linked file goes as usual", []api.BatchOp{create(10, 1), link(10, 1), unlink(1), unlink(1)}, 0,
			[]removal{{10, 4, false}}, nil},
		{"directory emptied of unsent files", []api.BatchOp{create(20, 1), create(21, 20), create(22, 20), unlink(20), unlink(20), unlink(1)}, 0,
			[]removal{{21, 4, true}, {22, 5, true}, {20, 6, true}}, []uint64{1, 2, 3, 4, 5, 6}},
		{"directory with a sent child's unlink", []api.BatchOp{create(20, 1), create(21, 20), unlink(20), unlink(1)}, 0,
			// 21 was renamed away from the drive's view of the journal: not tracked here
			[]removal{{99, 3, false}, {20, 4, false}}, nil},
		{"directory a file was renamed out of", []api.BatchOp{create(20, 1), create(21, 20), rename(21, 20, 1), unlink(1)}, 0,
			[]removal{{20, 4, false}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnsentTree()
			for i, op := range tc.ops {
				u.queued(uint64(i+1), op)
			}
			if tc.sentFrom > 0 {
				u.planning(tc.sentFrom)
			}
			for _, r := range tc.removals {
				if got := u.removed(r.id, r.seq); got != r.want {
					t.Fatalf("removed(%d) = %v, want %v", r.id, got, r.want)
				}
			}
			for seq := uint64(1); seq <= uint64(len(tc.ops)); seq++ {
				want := false
				for _, c := range tc.cancelled {
					want = want || c == seq
				}
				if u.isCancelled(seq) != want {
					t.Errorf("seq %d cancelled = %v, want %v", seq, !want, want)
				}
			}
		})
	}
}

// Files and a directory created and removed again before the pusher sent
// them never reach the cloud (no create, no delete in its change feed); a
// renamed file removed the same way, and a file kept, do; the drive's queue
// empties and a second device sees exactly the kept tree.
func TestCoreUnsentRemovedNeverSent(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	coreFlush(t, d)
	// Keep changing a file so the pusher holds its queue (pushHold) while
	// the tree below is made and removed.
	keep := coreFile(t, d, api.RootID, "keep", "kept")
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			d.setAttrs(keep, func(a *meta.Attrs) syscall.Errno {
				a.Mode = a.Mode&^0o777 | uint32(0o600|i%2*0o44)
				return 0
			})
		}
	}()
	tmp := coreMkdir(t, d, api.RootID, "tmp")
	var gone []uint64
	for i := range 30 {
		gone = append(gone, coreFile(t, d, tmp.id, fmt.Sprintf("f%02d", i), fmt.Sprintf("data %d", i)).id)
	}
	gone = append(gone, tmp.id)
	moved := coreFile(t, d, api.RootID, "draft", "draft")
	if e := d.rename(api.RootID, "draft", api.RootID, "final", 0); e != 0 {
		t.Fatal(e)
	}
	for i := range 30 {
		if e := d.unlink(tmp.id, fmt.Sprintf("f%02d", i), false); e != 0 {
			t.Fatal(e)
		}
	}
	if e := d.unlink(api.RootID, "tmp", true); e != 0 {
		t.Fatal(e)
	}
	if e := d.unlink(api.RootID, "final", false); e != 0 {
		t.Fatal(e)
	}
	close(stop)
	<-stopped
	coreFlush(t, d)
	if q := d.Status().Queue; q.Ops != 0 {
		t.Fatalf("queue after the flush: %+v", q)
	}

	ctx := context.Background()
	seen := map[uint64]bool{}
	for after := uint64(0); ; {
		r, err := c.client(t).Changes(ctx, after, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range r.Changes {
			seen[ch.Node] = true
		}
		if len(r.Changes) == 0 || r.Seq == after {
			break
		}
		after = r.Seq
	}
	for _, id := range gone {
		if seen[id] {
			t.Errorf("node %d, created and removed before it was sent, reached the cloud", id)
		}
	}
	if !seen[moved.id] || !seen[keep.id] {
		t.Errorf("the renamed file (%v) or the kept one (%v) is missing from the cloud's feed", seen[moved.id], seen[keep.id])
	}
	other := coreDrive(t, c)
	if got := coreRead(t, other, api.RootID, "keep"); got != "kept" {
		t.Fatalf("second device reads keep = %q", got)
	}
	for _, name := range []string{"tmp", "final", "draft"} {
		if _, e := other.lookupForTest(api.RootID, name); e != syscall.ENOENT {
			t.Errorf("second device finds %s: %v", name, e)
		}
	}
}
