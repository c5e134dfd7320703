package fs

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"kumo/internal/meta"
	"kumo/remote/api"
)

// coreDrive is a drive over c with no FUSE mount: its operations are called
// directly (as gocryptfs's newTestFS and JuiceFS's createTestVFS do), so the
// logic runs under `go test -short` on any machine. It is shut down when the
// test ends.
func coreDrive(t testing.TB, c *cloud) *Drive {
	t.Helper()
	return coreDriveAt(t, c, t.TempDir(), nil, nil)
}

// coreDriveAt is coreDrive over the cache in cacheDir (a second drive on
// the same directory is a remount, once the first is shut down), with its
// options changed by mod and, if chunks is set, its chunk traffic going
// through what chunks makes of the client's (a fault-injecting cloud).
func coreDriveAt(t testing.TB, c *cloud, cacheDir string, mod func(*Options), chunks func(chunkCloud) chunkCloud) *Drive {
	t.Helper()
	o := Options{Client: c.client(t), Session: c.sess, CacheDir: cacheDir, Logger: testLogger(t),
		QuietTime: 50 * time.Millisecond, PollWait: time.Second}
	if mod != nil {
		mod(&o)
	}
	d, err := newDrive(o)
	if err != nil {
		t.Fatal(err)
	}
	if chunks != nil {
		d.chunks = chunks(d.chunks)
	}
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.shutdown)
	return d
}

// lookup resolves name in parent (an authenticated entry, as FUSE's lookup).
func (d *Drive) lookupForTest(parent uint64, name string) (*nodeState, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, st, e := d.lookupLocked(parent, name)
	return st, e
}

func coreFile(t *testing.T, d *Drive, parent uint64, name, content string) *nodeState {
	t.Helper()
	st, e := d.create(parent, newNode{name: name, mode: syscall.S_IFREG | 0o644})
	if e != 0 {
		t.Fatalf("create %s: %v", name, e)
	}
	if content != "" {
		if _, e := d.write(context.Background(), st, []byte(content), 0); e != 0 {
			t.Fatalf("write %s: %v", name, e)
		}
	}
	if e := d.makeDurable(st, true, false); e != 0 {
		t.Fatalf("close %s: %v", name, e)
	}
	return st
}

func coreRead(t *testing.T, d *Drive, parent uint64, name string) string {
	t.Helper()
	st, e := d.lookupForTest(parent, name)
	if e != 0 {
		t.Fatalf("lookup %s: %v", name, e)
	}
	buf := make([]byte, 4096)
	n, err := d.readAt(context.Background(), st, buf, 0, false, nil)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(buf[:n])
}

// Rename's flags and errors, decided by the drive alone (no kernel involved).
func TestCoreRenameFlags(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	coreFile(t, d, api.RootID, "a", "AAA")
	coreFile(t, d, api.RootID, "b", "BB")
	if e := d.rename(api.RootID, "a", api.RootID, "b", renameNoReplace); e != syscall.EEXIST {
		t.Fatalf("RENAME_NOREPLACE onto an existing name: %v, want EEXIST", e)
	}
	if e := d.rename(api.RootID, "a", api.RootID, "b", renameNoReplace|renameExchange); e != syscall.EINVAL {
		t.Fatalf("NOREPLACE|EXCHANGE: %v, want EINVAL", e)
	}
	if e := d.rename(api.RootID, "a", api.RootID, "missing", renameExchange); e != syscall.ENOENT {
		t.Fatalf("EXCHANGE with a missing target: %v, want ENOENT", e)
	}
	if e := d.rename(api.RootID, "a", api.RootID, "b", renameExchange); e != 0 {
		t.Fatalf("EXCHANGE: %v", e)
	}
	if a, b := coreRead(t, d, api.RootID, "a"), coreRead(t, d, api.RootID, "b"); a != "BB" || b != "AAA" {
		t.Fatalf("after EXCHANGE: a=%q b=%q", a, b)
	}
	dir, e := d.create(api.RootID, newNode{name: "dir", mode: syscall.S_IFDIR | 0o755})
	if e != 0 {
		t.Fatal(e)
	}
	if e := d.rename(api.RootID, "dir", dir.id, "inside", 0); e != syscall.EINVAL {
		t.Fatalf("a directory into itself: %v, want EINVAL", e)
	}
	if e := d.rename(api.RootID, "a", api.RootID, "dir", 0); e != syscall.EISDIR {
		t.Fatalf("a file over a directory: %v, want EISDIR", e)
	}
}

// What one drive pushes, a second one reads, with every v2 record
// authenticated and the account head advanced — all without a mount.
func TestCorePushAndSecondDevice(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	coreFile(t, d, api.RootID, "notes.txt", "my notes\n")
	if e := d.truncate(context.Background(), coreFileState(t, d, "notes.txt"), 3); e != 0 {
		t.Fatal(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := c.client(t).Heads(ctx, 0)
	if err != nil || l.Current == 0 {
		t.Fatalf("no account head after a push: %+v, %v", l, err)
	}
	e, err := c.client(t).Lookup(ctx, api.RootID, meta.NewSealer(c.sess.Subkeys()).NameMAC(api.RootID, []byte("notes.txt")))
	if err != nil || e.Name[0] != meta.SealedV2 || e.Node.Attrs[0] != meta.SealedV2 {
		t.Fatalf("pushed records are not v2: %v", err)
	}
	other := coreDrive(t, c)
	if got := coreRead(t, other, api.RootID, "notes.txt"); got != "my " {
		t.Fatalf("second device reads %q", got)
	}
	if _, e := other.lookupForTest(api.RootID, "missing"); !errors.Is(e, syscall.ENOENT) {
		t.Fatalf("missing name: %v", e)
	}
}

func coreFileState(t *testing.T, d *Drive, name string) *nodeState {
	t.Helper()
	st, e := d.lookupForTest(api.RootID, name)
	if e != 0 {
		t.Fatal(e)
	}
	return st
}
