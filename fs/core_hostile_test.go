package fs

import (
	"context"
	"encoding/binary"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"kumo/internal/head"
	"kumo/internal/hostile"
	"kumo/internal/meta"
	"kumo/remote/api"
)

// viaURL makes a drive talk to the cloud through url (a hostile proxy).
func viaURL(t *testing.T, c *cloud, url string) func(*Options) {
	return func(o *Options) {
		via := *c
		via.url = url
		o.Client = via.client(t)
	}
}

// coreControlText is what .kumo shows.
func coreControlText(t *testing.T, d *Drive) string {
	t.Helper()
	b, e := d.controlContent(context.Background(), ctlText, false)
	if e != 0 {
		t.Fatalf(".kumo: %v", e)
	}
	return string(b)
}

// A server that points the entry notes.txt at the node of secret.txt must
// not make the name open the other file: the drive answers EIO, does not
// list the name, and counts it.
func TestCoreHostileEntrySwap(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	w := coreDrive(t, c)
	coreFile(t, w, api.RootID, "notes.txt", "my notes\n")
	coreFile(t, w, api.RootID, "secret.txt", "the secret\n")
	coreFlush(t, w)
	sealer := meta.NewSealer(c.sess.Subkeys())
	secret, err := c.client(t).Lookup(context.Background(), api.RootID, sealer.NameMAC(api.RootID, []byte("secret.txt")))
	must(t, err)
	p := hostile.Start(t, c.url)
	p.PointEntry(sealer.NameMAC(api.RootID, []byte("notes.txt")), secret.Node)
	// A new device (empty cache) lists the tree through the hostile server.
	d := coreDriveAt(t, c, t.TempDir(), viaURL(t, c, p.URL), nil)
	if st, e := d.lookupForTest(api.RootID, "notes.txt"); e != syscall.EIO {
		got := ""
		if e == 0 {
			b, _ := coreReadFile(d, st)
			got = string(b)
		}
		t.Fatalf("notes.txt through a server that swapped its node: %q, %v; want EIO", got, e)
	}
	if got := coreRead(t, d, api.RootID, "secret.txt"); got != "the secret\n" {
		t.Fatalf("secret.txt: %q", got)
	}
	if names := coreNames(t, d, api.RootID); !equal(names, []string{"secret.txt"}) {
		t.Fatalf("listed: %q; the swapped entry must not be", names)
	}
	if r := d.Integrity(); r.AuthFailures == 0 {
		t.Fatalf("integrity report counts no failure: %+v", r)
	}
}

// A new account is all v2 (its root carries the mark): a v1 record planted
// by the server, valid under the account's keys but bound to less, is
// refused even by a new device that never saw the node before.
func TestCoreHostileV1Downgrade(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	w := coreDrive(t, c)
	coreFile(t, w, api.RootID, "notes.txt", "my notes\n")
	coreFlush(t, w)
	ctx := context.Background()
	cl := c.client(t)
	e, err := cl.Lookup(ctx, api.RootID, meta.NewSealer(c.sess.Subkeys()).NameMAC(api.RootID, []byte("notes.txt")))
	must(t, err)
	planted := sealV1Attrs(t, c, e.Node.ID, &meta.Attrs{Mode: 0o100666, Size: 3})
	_, err = cl.Update(ctx, e.Node.ID, api.UpdateRequest{Version: e.Node.Version, Attrs: planted, Chunks: []string{}})
	must(t, err)
	fresh := coreDrive(t, c)
	if st, errno := fresh.lookupForTest(api.RootID, "notes.txt"); errno != syscall.EIO {
		t.Fatalf("a node whose record the server replaced by a v1 one: %+v, %v; want EIO", st, errno)
	}
	if fresh.Integrity().AuthFailures == 0 {
		t.Fatal("the refused v1 record is not counted")
	}
}

// A server that puts back an older record of a node (a replay) is refused
// by a device that has seen the newer one: it keeps serving the newer
// content, counts the rollback and shows it in .kumo.
func TestCoreHostileRollback(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	writer := coreDrive(t, c)
	coreFile(t, writer, api.RootID, "notes.txt", "first version\n")
	coreFlush(t, writer)
	ctx := context.Background()
	cl := c.client(t)
	lookup := func() api.Entry {
		t.Helper()
		e, err := cl.Lookup(ctx, api.RootID, meta.NewSealer(c.sess.Subkeys()).NameMAC(api.RootID, []byte("notes.txt")))
		must(t, err)
		return e
	}
	old := lookup().Node
	coreRewrite(t, writer, "notes.txt", "second version, longer\n")
	coreFlush(t, writer)
	reader := coreDrive(t, c)
	if got := coreRead(t, reader, api.RootID, "notes.txt"); got != "second version, longer\n" {
		t.Fatalf("reader: %q", got)
	}
	// The server replays the first record (as if restored from a backup),
	// which announces a change to every client.
	cur := lookup().Node
	_, err := cl.Update(ctx, cur.ID, api.UpdateRequest{Version: cur.Version, Attrs: old.Attrs, Chunks: old.Chunks})
	must(t, err)
	waitFor(t, 20*time.Second, func() bool { return reader.Integrity().Rollbacks > 0 })
	if text := coreControlText(t, reader); !strings.Contains(text, "integrity   REFUSED") {
		t.Fatalf(".kumo does not show the refused rollback:\n%s", text)
	}
	for _, d := range []*Drive{reader, writer} {
		if got := coreRead(t, d, api.RootID, "notes.txt"); got != "second version, longer\n" {
			t.Fatalf("after the replay: %q; want the newer content", got)
		}
	}
}

// coreHeadTest starts a drive through a hostile proxy, writes two files
// (each flush advances the account head) and returns the proxy, the drive
// and the real server's head log after the first file.
func coreHeadTest(t *testing.T) (*hostile.Proxy, *Drive, api.HeadLog) {
	t.Helper()
	c := startCloud(t, t.TempDir(), 0)
	p := hostile.Start(t, c.url)
	d := coreDriveAt(t, c, t.TempDir(), viaURL(t, c, p.URL), nil)
	coreFile(t, d, api.RootID, "a", "first\n")
	coreFlush(t, d)
	old, err := c.client(t).Heads(context.Background(), 1)
	if err != nil || old.Current == 0 {
		t.Fatalf("no head after a push: %+v, %v", old, err)
	}
	coreFile(t, d, api.RootID, "b", "second\n")
	coreFlush(t, d)
	if d.head.Broken() != "" {
		t.Fatalf("honest server seen as hostile: %s", d.head.Broken())
	}
	return p, d, old
}

// coreHeadRefused writes one more file (its push makes the drive check the
// head before advancing it) and asserts that the drive refused the cloud's
// history and says so in .kumo. It does not wait for the push: once the
// history is refused, the drive keeps that change queued.
func coreHeadRefused(t *testing.T, d *Drive, want error) {
	t.Helper()
	coreFile(t, d, api.RootID, "c", "third\n")
	kick(d.pushKick)
	deadline := time.Now().Add(20 * time.Second)
	for d.head.Broken() == "" && time.Now().Before(deadline) {
		kick(d.head.kick)
		time.Sleep(50 * time.Millisecond)
	}
	why := d.head.Broken()
	if why == "" || !strings.Contains(why, want.Error()) {
		t.Fatalf("head refusal %q, want %v", why, want)
	}
	text := coreControlText(t, d)
	if !strings.Contains(text, "integrity   REFUSED") || !strings.Contains(text, "remote changes are no longer applied") {
		t.Fatalf(".kumo does not show the refused history:\n%s", text)
	}
}

// A server restored to an older state of the account (its heads too) is
// caught by a device that saw a newer head.
func TestCoreHostileAccountRollback(t *testing.T) {
	p, d, old := coreHeadTest(t)
	p.On(http.MethodGet, "/v1/head", hostile.EditJSON(func(l *api.HeadLog) {
		l.Current, l.Heads = old.Current, [][]byte{}
	}))
	coreHeadRefused(t, d, head.ErrRollback)
}

// A server that shows this device another history (a head at its counter
// written by a device it keeps apart: valid, but not the one seen here) is
// caught as a fork.
func TestCoreHostileAccountFork(t *testing.T) {
	p, d, _ := coreHeadTest(t)
	d.head.mu.Lock()
	known := d.head.known
	d.head.mu.Unlock()
	other := head.Head{Counter: known.Counter, Seq: known.Seq + 7, Time: 1}.Encode(d.head.key)
	p.On(http.MethodGet, "/v1/head", hostile.EditJSON(func(l *api.HeadLog) {
		if len(l.Heads) > 0 {
			l.Heads[0] = other
		}
	}))
	coreHeadRefused(t, d, head.ErrFork)
}

// A server restored from an old backup also restarts its change feed below
// the device's cursor, which would make the drive relist the tree from it:
// the head check comes first, and nothing is relisted.
func TestCoreHostileFeedResetAfterRollback(t *testing.T) {
	p, d, old := coreHeadTest(t)
	lists := p.Count(http.MethodGet, "/v1/nodes/*/entries")
	p.On(http.MethodGet, "/v1/head", hostile.EditJSON(func(l *api.HeadLog) {
		l.Current, l.Heads = old.Current, [][]byte{}
	}))
	p.On(http.MethodGet, "/v1/changes", hostile.EditJSON(func(r *api.ChangesResponse) {
		r.Changes, r.Reset, r.Seq = nil, true, 1
	}))
	kick(d.pullKick)
	waitFor(t, 20*time.Second, func() bool { return d.head.Broken() != "" })
	time.Sleep(500 * time.Millisecond)
	if n := p.Count(http.MethodGet, "/v1/nodes/*/entries"); n != lists {
		t.Fatalf("the drive relisted the tree from a rolled-back server (%d listings)", n-lists)
	}
	for _, name := range []string{"a", "b"} {
		if _, e := d.lookupForTest(api.RootID, name); e != 0 {
			t.Fatalf("%s after the refused reset: %v", name, e)
		}
	}
}

// sealV1Attrs seals a in the v1 envelope (docs/FORMAT.md §2, v1): what a
// hostile server could replay from before an account's move to v2.
func sealV1Attrs(t *testing.T, c *cloud, id uint64, a *meta.Attrs) []byte {
	t.Helper()
	k := c.sess.Subkeys().Attrs
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	out := append([]byte{meta.SealedV1}, nonce...)
	return aead.Seal(out, nonce, a.Encode(), binary.BigEndian.AppendUint64([]byte("kumo/v1/attrs"), id))
}
