package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"os"
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

// A server that points the entry notes.txt at the node of secret.txt must not
// make the name open the other file: the drive answers EIO and counts it.
func TestHostileServerEntrySwap(t *testing.T) {
	needFUSE(t)
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	if err := os.WriteFile(m.p("notes.txt"), []byte("my notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.p("secret.txt"), []byte("the secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.flush()
	m.unmount()

	sealer := meta.NewSealer(c.sess.Subkeys())
	secret, err := c.client(t).Lookup(context.Background(), api.RootID, sealer.NameMAC(api.RootID, []byte("secret.txt")))
	if err != nil {
		t.Fatal(err)
	}
	p := hostile.Start(t, c.url)
	p.PointEntry(sealer.NameMAC(api.RootID, []byte("notes.txt")), secret.Node)
	via := *c
	via.url = p.URL
	// A new device (empty cache) lists the tree through the hostile server.
	m2 := via.mount(t, t.TempDir(), nil)
	got, err := os.ReadFile(m2.p("notes.txt"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read notes.txt through a server that swapped its node: %q, %v; want EIO", got, err)
	}
	if b, err := os.ReadFile(m2.p("secret.txt")); err != nil || string(b) != "the secret\n" {
		t.Fatalf("secret.txt: %q, %v", b, err)
	}
	ents, err := os.ReadDir(m2.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "notes.txt" {
			t.Fatal("the swapped entry is listed")
		}
	}
	if r := m2.d.Integrity(); r.AuthFailures == 0 {
		t.Fatalf("integrity report counts no failure: %+v", r)
	}
}

// A server that puts back an older record of a node (a replay) is refused by a
// client that has seen the newer one: it keeps serving the newer content and
// counts the rollback.
func TestHostileServerRollback(t *testing.T) {
	needFUSE(t)
	c := startCloud(t, t.TempDir(), 0)
	writer := c.mount(t, t.TempDir(), nil)
	p := writer.p("notes.txt")
	if err := os.WriteFile(p, []byte("first version\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writer.flush()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cl := c.client(t)
	lookup := func() api.Entry {
		t.Helper()
		e, err := cl.Lookup(ctx, api.RootID, meta.NewSealer(c.sess.Subkeys()).NameMAC(api.RootID, []byte("notes.txt")))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	old := lookup().Node
	if err := os.WriteFile(p, []byte("second version, longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writer.flush()

	reader := c.mount(t, t.TempDir(), nil)
	if b, err := os.ReadFile(reader.p("notes.txt")); err != nil || string(b) != "second version, longer\n" {
		t.Fatalf("reader: %q, %v", b, err)
	}
	// The server replays the first record (as if restored from a backup),
	// which announces a change to every client.
	cur := lookup().Node
	if _, err := cl.Update(ctx, cur.ID, api.UpdateRequest{Version: cur.Version, Attrs: old.Attrs, Chunks: old.Chunks}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for reader.d.Integrity().Rollbacks == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the reader did not refuse the replayed record: %+v", reader.d.Integrity())
		}
		time.Sleep(100 * time.Millisecond)
	}
	report, err := os.ReadFile(reader.p(".kumo"))
	if err != nil || !bytes.Contains(report, []byte("integrity   REFUSED")) {
		t.Fatalf(".kumo does not show the refused rollback: %v\n%s", err, report)
	}
	for _, m := range []*mounted{reader, writer} {
		if b, err := os.ReadFile(m.p("notes.txt")); err != nil || string(b) != "second version, longer\n" {
			t.Fatalf("after the replay: %q, %v; want the newer content", b, err)
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

// A new account is all v2 (its root carries the mark): a v1 record planted by
// the server, valid under the account's keys but bound to less, is refused
// even by a new device that never saw the node before.
func TestHostileServerV1Downgrade(t *testing.T) {
	needFUSE(t)
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	if err := os.WriteFile(m.p("notes.txt"), []byte("my notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.flush()
	ctx := context.Background()
	cl := c.client(t)
	e, err := cl.Lookup(ctx, api.RootID, meta.NewSealer(c.sess.Subkeys()).NameMAC(api.RootID, []byte("notes.txt")))
	if err != nil {
		t.Fatal(err)
	}
	planted := sealV1Attrs(t, c, e.Node.ID, &meta.Attrs{Mode: 0o100666, Size: 3})
	if _, err := cl.Update(ctx, e.Node.ID, api.UpdateRequest{Version: e.Node.Version, Attrs: planted, Chunks: []string{}}); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	fresh := c.mount(t, t.TempDir(), nil)
	var st syscall.Stat_t
	if err := syscall.Stat(fresh.p("notes.txt"), &st); !errors.Is(err, syscall.EIO) {
		t.Fatalf("stat of a node whose record the server replaced by a v1 one: mode %o size %d, %v; want EIO", st.Mode, st.Size, err)
	}
	if fresh.d.Integrity().AuthFailures == 0 {
		t.Fatal("the refused v1 record is not counted")
	}
}

// headTest mounts a drive through a hostile proxy, writes two files (each
// flush advances the account head) and returns the proxy, the mount and the
// real server's head log after the first file.
func headTest(t *testing.T) (*hostile.Proxy, *mounted, api.HeadLog) {
	t.Helper()
	needFUSE(t)
	c := startCloud(t, t.TempDir(), 0)
	p := hostile.Start(t, c.url)
	via := *c
	via.url = p.URL
	m := via.mount(t, t.TempDir(), nil)
	if err := os.WriteFile(m.p("a"), []byte("first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.flush()
	old, err := c.client(t).Heads(context.Background(), 1)
	if err != nil || old.Current == 0 {
		t.Fatalf("no head after a push: %+v, %v", old, err)
	}
	if err := os.WriteFile(m.p("b"), []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.flush()
	if m.d.head.Broken() != "" {
		t.Fatalf("honest server seen as hostile: %s", m.d.head.Broken())
	}
	return p, m, old
}

// headRefused writes one more file (its push makes the drive check the head
// before advancing it) and asserts that the drive refused the cloud's history
// and says so in .kumo. It does not wait for the push: once the history is
// refused, the drive keeps that change queued rather than push it there.
func headRefused(t *testing.T, m *mounted, want error) {
	t.Helper()
	if err := os.WriteFile(m.p("c"), []byte("third\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kick(m.d.pushKick)
	deadline := time.Now().Add(20 * time.Second)
	for m.d.head.Broken() == "" && time.Now().Before(deadline) {
		kick(m.d.head.kick)
		time.Sleep(50 * time.Millisecond)
	}
	why := m.d.head.Broken()
	if why == "" || !strings.Contains(why, want.Error()) {
		t.Fatalf("head refusal %q, want %v", why, want)
	}
	report, err := os.ReadFile(m.p(".kumo"))
	if err != nil || !bytes.Contains(report, []byte("integrity   REFUSED")) || !bytes.Contains(report, []byte("remote changes are no longer applied")) {
		t.Fatalf(".kumo does not show the refused history: %v\n%s", err, report)
	}
}

// A server restored to an older state of the account (its heads too) is
// caught by a device that saw a newer head.
func TestHostileServerAccountRollback(t *testing.T) {
	p, m, old := headTest(t)
	p.On(http.MethodGet, "/v1/head", hostile.EditJSON(func(l *api.HeadLog) {
		l.Current, l.Heads = old.Current, [][]byte{}
	}))
	headRefused(t, m, head.ErrRollback)
}

// A server that shows this device another history (a head at its counter
// written by a device it keeps apart: valid, but not the one seen here) is
// caught as a fork.
func TestHostileServerAccountFork(t *testing.T) {
	p, m, _ := headTest(t)
	m.d.head.mu.Lock()
	known := m.d.head.known
	m.d.head.mu.Unlock()
	other := head.Head{Counter: known.Counter, Seq: known.Seq + 7, Time: 1}.Encode(m.d.head.key)
	p.On(http.MethodGet, "/v1/head", hostile.EditJSON(func(l *api.HeadLog) {
		if len(l.Heads) > 0 {
			l.Heads[0] = other
		}
	}))
	headRefused(t, m, head.ErrFork)
}

// A server restored from an old backup also restarts its change feed below
// the device's cursor, which would make the drive relist the tree from it: the
// head check comes first, and nothing is relisted.
func TestHostileServerFeedResetAfterRollback(t *testing.T) {
	p, m, old := headTest(t)
	lists := p.Count(http.MethodGet, "/v1/nodes/*/entries")
	p.On(http.MethodGet, "/v1/head", hostile.EditJSON(func(l *api.HeadLog) {
		l.Current, l.Heads = old.Current, [][]byte{}
	}))
	p.On(http.MethodGet, "/v1/changes", hostile.EditJSON(func(r *api.ChangesResponse) {
		r.Changes, r.Reset, r.Seq = nil, true, 1
	}))
	kick(m.d.pullKick)
	deadline := time.Now().Add(20 * time.Second)
	for m.d.head.Broken() == "" {
		if time.Now().After(deadline) {
			t.Fatal("the rolled-back server's feed reset was not refused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if n := p.Count(http.MethodGet, "/v1/nodes/*/entries"); n != lists {
		t.Fatalf("the drive relisted the tree from a rolled-back server (%d listings)", n-lists)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := os.Stat(m.p(name)); err != nil {
			t.Fatalf("%s after the refused reset: %v", name, err)
		}
	}
}
