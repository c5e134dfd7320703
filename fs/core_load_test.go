package fs

import (
	"context"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/remote/api"
)

// The request mix the mount command chooses its processor count from
// (internal/procs): changes queued, data written and read through the FUSE
// handlers, and how often the changing caller differs from the one before.
func TestCoreLoadCounts(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	as := func(pid uint32) context.Context {
		return fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: pid})
	}
	before := d.Load()
	st, e := d.create(api.RootID, newNode{name: "f", mode: syscall.S_IFREG | 0o644})
	if e != 0 {
		t.Fatal(e)
	}
	n := &fnode{d: d, id: st.id}
	h := d.open(st, syscall.O_WRONLY)
	// One writer: the same thread writes and closes.
	for i := range 4 {
		if _, e := n.Write(as(100), h, []byte("0123456789"), int64(10*i)); e != 0 {
			t.Fatal(e)
		}
	}
	if e := n.Flush(as(100), h); e != 0 {
		t.Fatal(e)
	}
	after := d.Load()
	if got := after.Changes - before.Changes; got != 1 {
		t.Errorf("changes: %d, want 1 (the create; the data waits for its upload)", got)
	}
	if got := after.DataOps - before.DataOps; got != 4 {
		t.Errorf("data ops: %d, want 4 writes", got)
	}
	if got := after.DataBytes - before.DataBytes; got != 40 {
		t.Errorf("data bytes: %d, want 40", got)
	}
	if got := after.CallerSwitches - before.CallerSwitches; got != 1 {
		t.Errorf("caller switches for one writer: %d, want 1 (its first request)", got)
	}
	// Two writers taking turns: every request switches.
	for i := range 6 {
		if _, e := n.Write(as(uint32(200+i%2)), h, []byte("x"), 0); e != 0 {
			t.Fatal(e)
		}
	}
	if got := d.Load().CallerSwitches - after.CallerSwitches; got != 6 {
		t.Errorf("caller switches for two writers taking turns: %d, want 6", got)
	}
}
