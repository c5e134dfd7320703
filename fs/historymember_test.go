package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/server"
)

// TestShareMemberHistoryMount: bob, a writer of the owner's /Docs, runs
// rm -rf on a folder of it and overwrites a file in his mounted drive; the
// folder's history in his own drive, MNT/Shared/Docs/.kumo-history/TIME,
// shows both as they were, byte exact, read-only; copying the folder back
// and restoring the file through the control file bring them back, and the
// owner reads the restored bytes. Fails on the old
// code (no history view in a joined folder; the cloud refused history
// reads on a share).
func TestShareMemberHistoryMount(t *testing.T) {
	needFUSE(t)
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	owner, bob := sharedDocs(t, c)
	big := randomBytes(t, 5<<20+7)
	owner.put(t, owner.view(t), "/sub/big.bin", big)
	m := memberMount(t, c, bob)
	docs := m.p("Shared/Docs")
	waitUntil(t, 10*time.Second, "the owner's file in bob's drive", fileIs(filepath.Join(docs, "sub", "big.bin"), big))

	time.Sleep(20 * time.Millisecond)
	at := time.Now()
	time.Sleep(20 * time.Millisecond)
	must(t, os.WriteFile(filepath.Join(docs, "a.txt"), []byte("bob overwrote it\n"), 0o644))
	must(t, os.RemoveAll(filepath.Join(docs, "sub")))
	m.flush()

	snap := filepath.Join(docs, HistoryDirName, moment(at))
	if es, err := os.ReadDir(filepath.Join(docs, HistoryDirName)); err != nil || len(es) == 0 {
		t.Fatalf("listing of the folder's history: %v, %v", es, err)
	}
	for p, want := range map[string][]byte{"a.txt": []byte("shared a\n"), "sub/b.txt": []byte("shared b\n"), "sub/big.bin": big} {
		if got, err := os.ReadFile(filepath.Join(snap, p)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s in bob's history of the folder: %d bytes, %v", p, len(got), err)
		}
	}
	// The owner's tree outside the folder is not in it (the cloud answers
	// bob's share with neither the owner's root nor its /out.txt at that
	// moment), and it is read-only.
	shs, err := pathops.LoadShares(context.Background(), bob.c, bob.acct)
	must(t, err)
	sh := shs.All()[0]
	out, err := owner.home.Resolve(context.Background(), "/out.txt")
	must(t, err)
	sc := bob.c.ForShare(sh.OwnerID, sh.ID)
	for _, id := range []uint64{api.RootID, out.ID()} {
		if _, err := sc.NodeAt(context.Background(), id, at.UnixNano()); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("the owner's node %d outside the folder at a moment through bob's share: %v", id, err)
		}
		if _, err := sc.Versions(context.Background(), id); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("the owner's node %d outside the folder: versions through bob's share: %v", id, err)
		}
	}
	if err := os.WriteFile(filepath.Join(snap, "new.txt"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write into the history view: %v, want EROFS", err)
	}

	// Copy both back: the restored folder is bob's write, read by the owner.
	if out, err := exec.Command("cp", "-a", filepath.Join(snap, "sub"), filepath.Join(docs, "sub")).CombinedOutput(); err != nil {
		t.Fatalf("cp -a from the history: %v\n%s", err, out)
	}
	// a.txt through the drive's control file, as a restore in the account's tree.
	must(t, os.WriteFile(m.p(".kumo"), fmt.Appendf(nil, "restore %s %s force\n", filepath.Join(docs, "a.txt"), moment(at)), 0o600))
	waitCommand(t, m, "restore", time.Minute)
	waitUntil(t, 10*time.Second, "the restored a.txt in bob's drive", fileIs(filepath.Join(docs, "a.txt"), []byte("shared a\n")))
	m.flush()
	ov := owner.view(t)
	for p, want := range map[string][]byte{"/a.txt": []byte("shared a\n"), "/sub/b.txt": []byte("shared b\n"), "/sub/big.bin": big} {
		local := filepath.Join(t.TempDir(), "out")
		if err := ov.GetFile(context.Background(), p, local, nil); err != nil {
			t.Fatalf("owner reads restored %s: %v", p, err)
		}
		if got, _ := os.ReadFile(local); !bytes.Equal(got, want) {
			t.Fatalf("owner reads restored %s: %d bytes, want %d", p, len(got), len(want))
		}
	}
}

// TestCoreShareMemberHistoryOtherShare: bob is a member of two of the
// owner's folders, Docs and Other. A hostile server answers Docs's history
// with Other's records (records bob can open, the owner signed): the root
// of a Docs snapshot answered with Other's root is refused (another node),
// and Other's records never open in Docs's drive (its share set holds Docs
// only), so they are EIO there by construction; in Other's own drive they
// open.
func TestCoreShareMemberHistoryOtherShare(t *testing.T) {
	ctx := context.Background()
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	owner, bob := sharedDocs(t, c)
	owner.put(t, owner.home, "/Other/o.txt", []byte("other folder\n"))
	f, _ := owner.load(t)
	if _, err := f.ShareFolder(ctx, owner.acct, "/Other", "bob@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	if _, err := pathops.AcceptShare(ctx, bob.c, bob.acct, owner.acct.Email+"/Other"); err != nil {
		t.Fatal(err)
	}
	p := hostile.Start(t, c.url)
	pc, err := client.New(client.Options{BaseURL: p.URL, Token: bob.sess.Token, MaxRetries: -1, Logger: testLogger(t)})
	must(t, err)
	d := coreDriveWith(t, c, func(o *Options) {
		o.Session, o.Client, o.SharedDir, o.Identity = bob.sess, pc, "Shared", bob.acct.Identity
		o.Shares = func(ctx context.Context) ([]*pathops.Share, error) {
			sh, err := pathops.LoadShares(ctx, pc, bob.acct)
			if err != nil {
				return nil, err
			}
			return sh.All(), nil
		}
	})
	docs, e := d.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatalf("Shared/Docs: %v", e)
	}
	other, e := d.memberByName(ctx, "Other")
	if e != 0 {
		t.Fatalf("Shared/Other: %v", e)
	}
	time.Sleep(20 * time.Millisecond)
	at := time.Now()
	time.Sleep(20 * time.Millisecond)

	// Honest: each folder's snapshot root opens in its own drive.
	for _, m := range []*Drive{docs, other} {
		n, err := m.c.NodeAt(ctx, m.rootID(), at.UnixNano())
		if err != nil {
			t.Fatal(err)
		}
		if _, e := m.snapNode(n, at.UnixNano()); e != 0 {
			t.Fatalf("honest snapshot root of node %d: %v", m.rootID(), e)
		}
	}
	// Hostile: Docs's history reads answered from Other.
	docsScope, otherScope := docs.c.ShareScope(), other.c.ShareScope()
	p.On("GET", "/v1/history/nodes/*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if req.Header.Get(api.ShareHeader) != docsScope {
			return next(req)
		}
		r := *req
		r.Header = req.Header.Clone()
		r.Header.Set(api.ShareHeader, otherScope)
		r.Path = fmt.Sprintf("/v1/history/nodes/%d", other.rootID())
		return next(&r)
	})
	h := &histRoot{d: docs}
	var out fuse.EntryOut
	if _, e := h.Lookup(ctx, moment(at), &out); e != syscall.EIO {
		t.Fatalf("Docs's snapshot root answered with Other's root: %v, want EIO", e)
	}
	n, err := other.c.NodeAt(ctx, other.rootID(), at.UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	n.ID = docs.rootID() // even under Docs's root id: bound to Other's, and of another share
	if _, e := docs.snapNode(n, at.UnixNano()); e != syscall.EIO {
		t.Fatalf("Other's root record in Docs's drive: %v, want EIO", e)
	}
}

// TestCoreShareMemberHistoryReserved: at a joined folder's root the history
// view's name is the drive's own, as the control files are at the account's
// root: bob's drive refuses to create it, rename to or from it, hard-link
// or remove it (EPERM; nothing reaches the cloud), and a real entry of that
// name the owner made is not listed (its lookup is the view). Fails on the
// old code (only lookup knew the name: the rename made a real directory).
func TestCoreShareMemberHistoryReserved(t *testing.T) {
	ctx := context.Background()
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	owner, bob := sharedDocs(t, c)
	d := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(bob)(o)
		o.Session, o.Client, o.SharedDir = bob.sess, bob.c, "Shared"
	})
	docs, e := d.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatalf("Shared/Docs: %v", e)
	}
	root := docs.rootID()
	a := lookupDir(t, docs, root, "a.txt")
	lookupDir(t, docs, root, "sub")
	if _, e := docs.create(root, newNode{name: HistoryDirName, mode: syscall.S_IFDIR | 0o755}); e != syscall.EPERM {
		t.Fatalf("mkdir Shared/Docs/%s: %v, want EPERM", HistoryDirName, e)
	}
	if e := docs.rename(root, "sub", root, HistoryDirName, 0); e != syscall.EPERM {
		t.Fatalf("mv sub Shared/Docs/%s: %v, want EPERM", HistoryDirName, e)
	}
	if e := docs.rename(root, HistoryDirName, root, "x", 0); e != syscall.EPERM {
		t.Fatalf("mv Shared/Docs/%s x: %v, want EPERM", HistoryDirName, e)
	}
	if _, e := docs.link(a.id, root, HistoryDirName); e != syscall.EPERM {
		t.Fatalf("ln a.txt Shared/Docs/%s: %v, want EPERM", HistoryDirName, e)
	}
	if e := docs.unlink(root, HistoryDirName, true); e != syscall.EPERM {
		t.Fatalf("rmdir Shared/Docs/%s: %v, want EPERM", HistoryDirName, e)
	}
	flushDrive(t, d)
	ov := owner.view(t)
	if _, err := ov.Resolve(ctx, "/"+HistoryDirName); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("the owner's /Docs/%s after bob's refused calls: %v", HistoryDirName, err)
	}
	if _, err := ov.Resolve(ctx, "/sub/b.txt"); err != nil {
		t.Fatalf("the owner's /Docs/sub after bob's refused rename: %v", err)
	}

	// The owner's real entry of that name is not in bob's listing.
	owner.put(t, ov, "/"+HistoryDirName+"/x.txt", []byte("owner's\n"))
	owner.put(t, ov, "/after.txt", []byte("after\n"))
	var names []string
	waitUntil(t, 10*time.Second, "the owner's after.txt in bob's drive", func() error {
		es, _, e := docs.list(root)
		if e != 0 {
			t.Fatalf("list Shared/Docs: %v", e)
		}
		names = names[:0]
		for _, de := range es {
			names = append(names, de.name)
		}
		if !slices.Contains(names, "after.txt") {
			return fmt.Errorf("listed %v", names)
		}
		return nil
	})
	if slices.Contains(names, HistoryDirName) {
		t.Fatalf("Shared/Docs lists a real %s: %v", HistoryDirName, names)
	}
}
