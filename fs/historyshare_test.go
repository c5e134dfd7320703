package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/pathops"
	"kumo/remote/server"
)

// TestShareHistoryAfterWriterRemovedMount: the owner shares /Docs with bob
// (a writer); at a moment both have written a version, later both write
// newer ones; bob is removed and the folder re-sealed under generation 2
// (generation 1 refused from then on). In the owner's mounted
// .kumo-history, the folder as it was at that moment opens: the owner's
// versions read byte exact, bob's version is EIO (written by a member since
// removed). A record bob makes after his removal in generation 1, which a
// hostile server keeps as a past version, is EIO there too. A restore
// through the control file of the owner's old version writes it under
// generation 2 (chunks re-encrypted) and the file reads again in the live
// tree.
// shareHistory: the owner shares /Docs with bob (a writer); at `at` the
// owner's /a.txt holds ownerOld and bob's /bob.txt his second version,
// both written over afterwards; then bob is removed and the folder
// re-sealed under generation 2, generation 1 refused from then on.
type shareHistory struct {
	c          *cloud
	owner, bob *shareAcct
	sh         *pathops.Share
	at         time.Time
	ownerOld   []byte
	bobGen1    keys.Key
}

func newShareHistory(t *testing.T) *shareHistory {
	t.Helper()
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	owner, bob := sharedDocs(t, c)
	_, bs := bob.load(t)
	hx := &shareHistory{c: c, owner: owner, bob: bob, bobGen1: bs.Joined[0].Secrets[1], ownerOld: randomBytes(t, 300<<10)}
	owner.put(t, owner.view(t), "/a.txt", hx.ownerOld)
	bob.put(t, bob.view(t), "/bob.txt", []byte("bob's second version\n"))
	time.Sleep(20 * time.Millisecond)
	hx.at = time.Now()
	time.Sleep(20 * time.Millisecond)
	owner.put(t, owner.view(t), "/a.txt", []byte("owner's third version\n"))
	bob.put(t, bob.view(t), "/bob.txt", []byte("bob's third version\n"))
	sh := removeBob(t, owner)
	if sh.Roster.MinGen != 2 {
		t.Fatalf("lowest accepted generation after removing a writer: %d, want 2", sh.Roster.MinGen)
	}
	hx.sh = sh
	return hx
}

// TestCoreShareHistoryAfterWriterRemoved: the drive's snapshot nodes (what
// .kumo-history shows), without a mount: after the re-seal, the owner's
// version from before it opens and reads byte exact, bob's is refused with
// the reason, and the live tree's rule is unchanged.
func TestCoreShareHistoryAfterWriterRemoved(t *testing.T) {
	ctx := context.Background()
	hx := newShareHistory(t)
	d := coreDriveWith(t, hx.c, driveShareOptions(hx.owner))
	if err := d.loadShares(ctx, 0); err != nil {
		t.Fatal(err)
	}
	at := hx.at.UnixNano()
	n, err := d.c.NodeAt(ctx, api.RootID, at)
	if err != nil {
		t.Fatal(err)
	}
	root, e := d.snapNode(n, at)
	if e != 0 {
		t.Fatalf("snapshot root: %v", e)
	}
	kids, _, e := root.list(ctx)
	if e != 0 || kids["Docs"] == nil {
		t.Fatalf("snapshot root lists %v (%v): the shared folder from before the re-seal is missing", kids, e)
	}
	docs, _, e := kids["Docs"].list(ctx)
	if e != 0 {
		t.Fatalf("snapshot of the shared folder: %v", e)
	}
	a := docs["a.txt"]
	if a == nil {
		t.Fatalf("the owner's a.txt from before the re-seal is not in the snapshot: %v", docs)
	}
	buf := make([]byte, len(hx.ownerOld)+10)
	got, err := d.readAt(ctx, a.st, buf, 0, true, nil)
	if err != nil || !bytes.Equal(buf[:got], hx.ownerOld) {
		t.Fatalf("the owner's version from before the re-seal: %d bytes, %v", got, err)
	}
	if docs["bob.txt"] != nil {
		t.Fatal("the removed writer's version from before the re-seal is in the snapshot")
	}
	// The reason is the one verifyPast gives.
	es, err := d.c.ListAt(ctx, kids["Docs"].st.id, at)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, en := range es {
		if _, _, err := d.openAttrsBy(d.verifyPast, en.Node.ID, en.Node.Attrs); err != nil {
			refused++
			if !errors.Is(err, keys.ErrRecordSig) || !strings.Contains(err.Error(), "bob@example.com, a member since removed") {
				t.Fatalf("refusal of the removed writer's version: %v", err)
			}
		}
		// The live rule refuses every generation-1 record, whoever signed it.
		if _, _, err := d.openAttrs(en.Node.ID, en.Node.Attrs); !errors.Is(err, keys.ErrRecordSig) {
			t.Fatalf("the live rule opens a generation-1 record: %v", err)
		}
	}
	if refused != 1 {
		t.Fatalf("%d versions refused in the snapshot of /Docs, want 1 (bob's)", refused)
	}
}

func TestShareHistoryAfterWriterRemovedMount(t *testing.T) {
	needFUSE(t)
	hx := newShareHistory(t)
	c, owner, bob, sh, at, ownerOld := hx.c, hx.owner, hx.bob, hx.sh, hx.at, hx.ownerOld
	bobGen1 := hx.bobGen1

	p := hostile.Start(t, c.url) // honest until it serves the plant below
	m := c.mount(t, t.TempDir(), func(o *Options) {
		driveShareOptions(owner)(o)
		o.Client = proxyClient(t, p.URL, owner.sess.Token)
	})
	snap := filepath.Join(m.p(HistoryDirName), moment(at))
	before := m.d.Integrity().AuthFailures
	if got, err := os.ReadFile(filepath.Join(snap, "Docs", "a.txt")); err != nil || !bytes.Equal(got, ownerOld) {
		t.Fatalf("the owner's version from before the re-seal in .kumo-history: %d bytes, %v", len(got), err)
	}
	if got, err := os.ReadFile(filepath.Join(snap, "Docs", "sub", "b.txt")); err != nil || string(got) != "shared b\n" {
		t.Fatalf("sub/b.txt from before the re-seal: %q %v", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(snap, "Docs", "bob.txt")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("the removed writer's version from before the re-seal: %q, %v; want EIO", got, err)
	}
	if m.d.Integrity().AuthFailures == before {
		t.Error("the refused version is not counted as an authentication failure")
	}
	// The live tree still refuses generation 1: it holds none (all re-sealed).
	if got, err := os.ReadFile(m.p("Docs/a.txt")); err != nil || string(got) != "owner's third version\n" {
		t.Fatalf("live a.txt: %q %v", got, err)
	}

	// bob, removed, makes a generation-1 record of sub/b.txt; the server
	// shows it as the version of a later moment (an honest one refuses to
	// store it), while the live tree shows the owner's.
	n, sealed := sealShareAttrsAt(t, owner, "/Docs/sub/b.txt", 100, 1, bobGen1, func(a *meta.Attrs) { a.Mode = a.Mode&^0o777 | 0o600 })
	rec, err := keys.SignRecord(bob.acct.Identity, keys.RecordAttrs, n.ID(), nil, sealed)
	if err != nil {
		t.Fatal(err)
	}
	serveAttrsAt(p, n.ID(), rec)
	plantedAt := time.Now()
	snap2 := filepath.Join(m.p(HistoryDirName), moment(plantedAt))
	// A stat, not a read: the plant names the re-sealed chunks, which its
	// generation's keys do not open, so a read fails even if the record
	// were taken; the stat shows whether the record itself is refused.
	if fi, err := os.Lstat(filepath.Join(snap2, "Docs", "sub", "b.txt")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a generation-1 record the removed writer made after its removal, in .kumo-history: %v, %v; want EIO", fi, err)
	}

	// Restore the owner's old version through the control file.
	cmd := fmt.Sprintf("restore /Docs/a.txt %s force\n", moment(at))
	if err := os.WriteFile(m.p(".kumo"), []byte(cmd), 0o600); err != nil {
		t.Fatal(err)
	}
	waitCommand(t, m, "restore", time.Minute)
	waitFor(t, 20*time.Second, func() bool {
		got, err := os.ReadFile(m.p("Docs/a.txt"))
		return err == nil && bytes.Equal(got, ownerOld)
	})
	st := lookupDir(t, m.d, lookupDir(t, m.d, api.RootID, "Docs").id, "a.txt")
	if st.kid != (meta.KeyID{Share: sh.ID, Gen: 2}) {
		t.Fatalf("restored a.txt is sealed under %+v, want the share's generation 2", st.kid)
	}
	for _, r := range st.attrs.Chunks {
		if k := m.d.chunkKID(r.ID); k != st.kid {
			t.Fatalf("restored a.txt names chunk %s of key id %+v", r.ID, k)
		}
	}
}
