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

	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/pathops"
)

// memberMount mounts a's drive showing the shares it joined in MNT/Shared.
func memberMount(t *testing.T, c *cloud, a *shareAcct) *mounted {
	t.Helper()
	return c.mount(t, t.TempDir(), func(o *Options) {
		driveShareOptions(a)(o)
		o.Session, o.Client, o.SharedDir = a.sess, a.c, "Shared"
		o.AcceptShare = func(ctx context.Context, which string) (*pathops.Share, error) {
			return pathops.AcceptShare(ctx, a.c, a.acct, which)
		}
		o.Invitations = func() []*pathops.Invitation {
			sh, err := pathops.LoadShares(context.Background(), a.c, a.acct)
			if err != nil {
				t.Error(err)
				return nil
			}
			return sh.Invitations
		}
	})
}

// waitUntil polls f for up to d.
func waitUntil(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	end := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileIs(p string, want []byte) func() error {
	return func() error {
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s: %d bytes, want %d", p, len(got), len(want))
		}
		return nil
	}
}

// TestShareMemberMount: the writer member's drive shows the share it
// joined at Shared/Docs: it reads the owner's files, a file the owner adds
// appears through the share's change feed, what it writes (a directory, a
// file) the owner reads through its share view (which checks the member's
// signatures), a record the server planted before the listing is EIO, a
// rename out of the share is EXDEV, and the name Shared cannot be made in
// the account's own tree while it shows shares. With the old drive there
// was no Shared directory.
func TestShareMemberMount(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	owner.put(t, owner.view(t), "/planted.txt", []byte("to be forged\n"))
	plantShareAttrs(t, owner, "/Docs/planted.txt", "stranger")
	bob.put(t, bob.home, "/mine.txt", []byte("bob's own\n"))
	owner.put(t, owner.view(t), "/foreign.txt", []byte("the owner's user\n"))
	reownShareFile(t, owner, "/Docs/foreign.txt", 4242)

	m := memberMount(t, c, bob)
	if err := fileIs(m.p("Shared/Docs/sub/b.txt"), []byte("shared b\n"))(); err != nil {
		t.Fatalf("member reads the joined share: %v", err)
	}
	if err := fileIs(m.p("mine.txt"), []byte("bob's own\n"))(); err != nil {
		t.Fatalf("member's own tree: %v", err)
	}
	if _, err := os.ReadFile(m.p("Shared/Docs/planted.txt")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a planted record in the joined share: %v, want EIO", err)
	}
	if r := m.report(); r.Shares == nil || len(r.Shares.Joined) != 1 || r.Shares.Joined[0].Refused == 0 {
		t.Fatalf(".kumo.json does not count the refused record: %+v", r.Shares)
	}
	var st syscall.Stat_t
	must(t, syscall.Stat(m.p("Shared/Docs/foreign.txt"), &st))
	if st.Uid != uint32(os.Getuid()) || st.Gid != uint32(os.Getgid()) {
		t.Fatalf("a joined share's file of the owner's user 4242 shows as %d:%d, want the mount's owner %d:%d", st.Uid, st.Gid, os.Getuid(), os.Getgid())
	}
	ents, err := os.ReadDir(m.p("Shared"))
	if err != nil || len(ents) != 1 || ents[0].Name() != "Docs" {
		t.Fatalf("ls Shared: %v %v", ents, err)
	}

	// The owner's change arrives through the share's feed.
	owner.put(t, owner.view(t), "/sub/new.txt", []byte("from the owner\n"))
	waitUntil(t, 10*time.Second, "the owner's new file in the member's drive", fileIs(m.p("Shared/Docs/sub/new.txt"), []byte("from the owner\n")))

	// The member writes: sealed under the share, signed by bob.
	data := bytes.Repeat([]byte("member data "), 100<<10)
	must(t, os.Mkdir(m.p("Shared/Docs/made"), 0o755))
	must(t, os.WriteFile(m.p("Shared/Docs/made/w.bin"), data, 0o644))
	if err := os.Rename(m.p("Shared/Docs/made/w.bin"), m.p("w.bin")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("mv out of the joined share: %v, want EXDEV", err)
	}
	if err := os.Mkdir(m.p("Shared"), 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("mkdir Shared in the member's tree: %v, want EEXIST", err)
	}
	m.flush()
	if got, err := shareGet(t, owner.view(t), "/made/w.bin"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("owner reads what the member's drive wrote: %d bytes, %v", len(got), err)
	}
}

// TestShareMemberReaderAndRevoke: the invitation shows in .kumo with the
// owner's key fingerprint and is accepted there; a reader's joined share is read-only
// (EROFS, nothing reaches the cloud); after the owner removes the member,
// the share leaves its drive at the next load and what the owner writes
// afterwards never shows there; invited again, the share opens again (with
// the new keys); promoted to writer, its drive is writable; at unmount only
// the current share's cache is kept.
func TestShareMemberReaderAndRevoke(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	carol := signupShareAcct(t, c, "carol@example.com")
	f, _ := owner.load(t)
	if _, err := f.ShareFolder(context.Background(), owner.acct, "/Docs", "carol@example.com", keys.RoleReader); err != nil {
		t.Fatal(err)
	}
	m := memberMount(t, c, carol)
	// The invitation is in .kumo with the owner's fingerprint; accepting
	// it there shows the folder at once.
	fp := owner.acct.Identity.Public.Fingerprint()
	if r := m.report(); r.Shares == nil || len(r.Shares.Invitations) != 1 || r.Shares.Invitations[0].Fingerprint != fp ||
		r.Shares.Invitations[0].Name != owner.acct.Email+"/Docs" || r.Shares.Invitations[0].Role != "reader" {
		t.Fatalf(".kumo.json shares: %+v, want the invitation with fingerprint %s", r.Shares, fp)
	}
	if err := m.command("share accept " + owner.acct.Email + "/Docs"); err != nil {
		t.Fatalf("share accept in .kumo: %v", err)
	}
	if r := m.report(); r.Shares == nil || len(r.Shares.Joined) != 1 || r.Shares.Joined[0].Path != "/Shared/Docs" || len(r.Shares.Invitations) != 0 {
		t.Fatalf(".kumo.json shares after accepting: %+v", r.Shares)
	}
	if err := fileIs(m.p("Shared/Docs/a.txt"), []byte("shared a\n"))(); err != nil {
		t.Fatalf("reader reads the joined share: %v", err)
	}
	for what, err := range map[string]error{
		"create": os.WriteFile(m.p("Shared/Docs/x.txt"), []byte("x"), 0o644),
		"write":  os.WriteFile(m.p("Shared/Docs/a.txt"), []byte("x"), 0o644),
		"unlink": os.Remove(m.p("Shared/Docs/a.txt")),
		"mkdir":  os.Mkdir(m.p("Shared/Docs/d"), 0o755),
		"chmod":  os.Chmod(m.p("Shared/Docs/a.txt"), 0o600),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("reader's %s: %v, want EROFS", what, err)
		}
	}
	_ = bob

	// Revoke: the share leaves carol's drive once it loads the shares again.
	f, _ = owner.load(t)
	if _, err := f.RemoveMember(context.Background(), owner.acct, "/Docs", "carol@example.com"); err != nil {
		t.Fatal(err)
	}
	owner.put(t, owner.view(t), "/after.txt", []byte("after the revoke\n"))
	if err := m.d.loadShares(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the share leaves the removed reader's drive", func() error {
		if _, err := os.Stat(m.p("Shared/Docs")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("Shared/Docs: %v", err)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(m.p("Shared/Docs"), "after.txt")); err == nil {
		t.Fatal("the removed member sees a file written after the revoke")
	}

	// Invited again and accepted while the stopped drive of the share
	// still holds its cache: the share opens again, with the new keys.
	f, _ = owner.load(t)
	if _, err := f.ShareFolder(context.Background(), owner.acct, "/Docs", "carol@example.com", keys.RoleReader); err != nil {
		t.Fatal(err)
	}
	if err := m.command("share accept " + owner.acct.Email + "/Docs"); err != nil {
		t.Fatalf("share accept again: %v (%+v)", err, m.report().LastCommand)
	}
	waitUntil(t, 10*time.Second, "the share, joined again, reads the file written meanwhile", fileIs(m.p("Shared/Docs/after.txt"), []byte("after the revoke\n")))

	// Promoted to writer while mounted: the share's drive starts again, writable.
	f, _ = owner.load(t)
	if _, err := f.ShareFolder(context.Background(), owner.acct, "/Docs", "carol@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	if err := m.d.loadShares(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the promoted member writes", func() error {
		return os.WriteFile(m.p("Shared/Docs/by-carol.txt"), []byte("carol, writer now\n"), 0o644)
	})
	m.flush()
	if got, err := shareGet(t, owner.view(t), "/by-carol.txt"); err != nil || string(got) != "carol, writer now\n" {
		t.Fatalf("owner reads what the promoted member wrote: %q %v", got, err)
	}
	caches := filepath.Join(m.d.o.CacheDir, "shares")
	m.unmount()
	ents, err := os.ReadDir(caches)
	var dirs []os.DirEntry
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, e)
		}
	}
	if err != nil || len(dirs) != 1 {
		t.Fatalf("member caches after unmount: %v %v, want the current share's only", ents, err)
	}
}

// TestMemberName: a joined share's name under Shared is its folder's name,
// made unique with the owner's e-mail, then the share id; a name that
// cannot be a file name is the share id.
func TestMemberName(t *testing.T) {
	taken := map[string]bool{}
	a := &pathops.Share{ID: 0xa, OwnerEmail: "x@example.com", Folder: "Docs"}
	b := &pathops.Share{ID: 0xb, OwnerEmail: "y@example.com", Folder: "Docs"}
	b2 := &pathops.Share{ID: 0xc, OwnerEmail: "y@example.com", Folder: "Docs"}
	bad := &pathops.Share{ID: 0xd, OwnerEmail: "y@example.com", Folder: ".."}
	for _, c := range []struct {
		sh   *pathops.Share
		want string
	}{
		{a, "Docs"}, {b, "Docs (y@example.com)"}, {b2, "Docs (y@example.com, 000000000000000c)"}, {bad, "000000000000000d"},
	} {
		if got := c.sh.DirName(taken); got != c.want {
			t.Errorf("share %x: %q, want %q", c.sh.ID, got, c.want)
		}
		taken[c.want] = true
	}
}

// reownShareFile gives the file at p (in the owner's shared folder) the
// owner and group uid, as the owner's devices may (records signed by the owner).
func reownShareFile(t *testing.T, owner *shareAcct, p string, uid uint32) {
	t.Helper()
	ctx := context.Background()
	n, sealed := sealShareAttrs(t, owner, p, 1, func(a *meta.Attrs) { a.UID, a.GID = uid, uid })
	rec, err := keys.SignRecord(owner.acct.Identity, keys.RecordAttrs, n.ID(), nil, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.c.Update(ctx, n.ID(), api.UpdateRequest{Version: n.Node.Version, Attrs: rec, Chunks: n.Node.Chunks}); err != nil {
		t.Fatalf("chown %s: %v", p, err)
	}
}

// TestShareMemberConflict: the writer member's drive and the owner change
// the same file of the share; the member's change, pushed after the
// owner's, keeps both versions as between two devices: the owner's under
// the name, the member's as a conflict copy in the same folder (sealed and
// signed for the share: the owner's share view reads it).
func TestShareMemberConflict(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	m := c.mount(t, t.TempDir(), func(o *Options) {
		driveShareOptions(bob)(o)
		o.Session, o.Client, o.SharedDir = bob.sess, bob.c, "Shared"
		o.QuietTime = time.Hour // bob's change waits for the flush
	})
	must(t, os.WriteFile(m.p("Shared/Docs/a.txt"), []byte("bob's version\n"), 0o644))
	owner.put(t, owner.view(t), "/a.txt", []byte("owner's version\n"))
	time.Sleep(500 * time.Millisecond) // the feed brings the owner's change (bob's local one wins here meanwhile)
	m.flush()
	waitUntil(t, 10*time.Second, "the owner's version under the name in the member's drive", fileIs(m.p("Shared/Docs/a.txt"), []byte("owner's version\n")))
	v := owner.view(t)
	nodes, err := v.List(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	var copyName string
	for _, n := range nodes {
		if strings.HasPrefix(n.Name, "a (conflict ") {
			copyName = n.Name
		}
	}
	if copyName == "" {
		t.Fatalf("no conflict copy in the share: %v", nodes)
	}
	if got, err := shareGet(t, v, "/"+copyName); err != nil || string(got) != "bob's version\n" {
		t.Fatalf("owner reads the conflict copy: %q %v", got, err)
	}
	if got, err := shareGet(t, v, "/a.txt"); err != nil || string(got) != "owner's version\n" {
		t.Fatalf("owner reads a.txt: %q %v", got, err)
	}
	waitUntil(t, 10*time.Second, "the conflict copy in the member's drive", fileIs(m.p("Shared/Docs/"+copyName), []byte("bob's version\n")))
}

// TestShareMemberOwnerQuota: a writer member fills the owner's quota. The
// cloud refuses the upload (a shared folder's data counts against its
// owner), and from then on the member's growing writes in the share fail
// with EDQUOT, as at the account's own quota, instead of queueing without
// end; what was written stays readable, and a write that does not grow a
// file still works. With the old drive every write succeeded.
func TestShareMemberOwnerQuota(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	m := memberMount(t, c, bob)
	docs := m.p("Shared/Docs")
	waitUntil(t, 20*time.Second, "the share in the member's mount", fileIs(filepath.Join(docs, "a.txt"), []byte("shared a\n")))
	if err := c.srv.SetQuota(owner.acct.Email, 1<<20); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("over the owner's quota "), 100_000) // 2.3 MB
	if err := os.WriteFile(filepath.Join(docs, "big.bin"), big, 0o644); err != nil {
		t.Fatalf("the first write (the quota is unknown to the member until the cloud refuses): %v", err)
	}
	// Polled slowly: uploads wait while the kernel keeps asking.
	for end := time.Now().Add(30 * time.Second); ; {
		time.Sleep(time.Second)
		err := os.WriteFile(filepath.Join(docs, "more.bin"), []byte("more"), 0o644)
		if errors.Is(err, syscall.EDQUOT) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("a growing write after the cloud refused the owner's quota: %v, want EDQUOT", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(docs, "a.txt"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("SHARED"), 0); err != nil {
		t.Fatalf("a write that does not grow the file: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(docs, "big.bin")); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("the refused file reads %d bytes, %v", len(got), err)
	}
}
