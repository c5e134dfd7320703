package fs

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/remote/api"
)

// The request mix the mount command chooses its processor count from
// (internal/procs): the kernel's requests that change the tree, data
// written and read, and how often the changing caller differs from the one
// before; not the drive's own work (an upload's commit is queued as a
// change for the cloud, but a drain of uploads is no burst of the user's).
func TestCoreLoadCounts(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	// Uploads wait until the test lets them (Flush below).
	d := coreDriveAt(t, c, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour }, nil)
	as := func(pid uint32) context.Context {
		return fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: pid})
	}
	root := &fnode{d: d, id: api.RootID}
	st, e := d.create(api.RootID, newNode{name: "f", mode: syscall.S_IFREG | 0o644}) // not a kernel request: not counted
	if e != 0 {
		t.Fatal(e)
	}
	before := d.Load()
	n := &fnode{d: d, id: st.id}
	h := d.open(st, syscall.O_RDWR)
	// One writer: the same thread writes, reads, closes and removes.
	for i := range 4 {
		if _, e := n.Write(as(100), h, []byte("0123456789"), int64(10*i)); e != 0 {
			t.Fatal(e)
		}
	}
	if _, e := n.Read(as(100), h, make([]byte, 25), 0); e != 0 {
		t.Fatal(e)
	}
	if e := n.Flush(as(100), h); e != 0 {
		t.Fatal(e)
	}
	if got := d.Load().Changes - before.Changes; got != 1 {
		t.Errorf("changes after the writes and the close: %d, want 1 (the close)", got)
	}
	// The upload commits the file's chunks and queues its update for the
	// cloud: the drive's work, not a change the kernel asked for.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if e := root.Unlink(as(100), "f"); e != 0 {
		t.Fatal(e)
	}
	after := d.Load()
	if got := after.Changes - before.Changes; got != 2 {
		t.Errorf("changes: %d, want 2 (the close and the unlink; not the upload)", got)
	}
	if got := after.DataOps - before.DataOps; got != 5 {
		t.Errorf("data ops: %d, want 5 (4 writes, 1 read)", got)
	}
	if got := after.DataBytes - before.DataBytes; got != 65 {
		t.Errorf("data bytes: %d, want 65 (40 written, 25 read)", got)
	}
	if got := after.CallerSwitches - before.CallerSwitches; got != 1 {
		t.Errorf("caller switches for one writer: %d, want 1 (its first change)", got)
	}
	// Two writers taking turns: every change switches.
	for i := range 6 {
		if e := root.Unlink(as(uint32(200+i%2)), "missing"); e != syscall.ENOENT {
			t.Fatalf("unlink of a missing name: %v", e)
		}
	}
	if got := d.Load().CallerSwitches - after.CallerSwitches; got != 6 {
		t.Errorf("caller switches for two writers taking turns: %d, want 6", got)
	}
}
