package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/server"
	"kumo/remote/session"
)

// shareAcct is an account of the test cloud with identity keys, as the CLI
// has it for sharing.
type shareAcct struct {
	sess *session.Session
	c    *client.Client
	acct pathops.Account
	home *pathops.FS
}

func newShareAcct(t *testing.T, c *cloud, s *session.Session) *shareAcct {
	t.Helper()
	ctx := context.Background()
	cl := c.client(t)
	cl.SetToken(s.Token)
	id, _, err := session.EnsureIdentity(ctx, cl, s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cl.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	contacts, err := pathops.LoadContacts("")
	if err != nil {
		t.Fatal(err)
	}
	return &shareAcct{sess: s, c: cl, home: pathops.New(cl, s.Subkeys()),
		acct: pathops.Account{ID: a.ID, Email: s.Email, Master: s.Master, Identity: id, Contacts: contacts}}
}

func signupShareAcct(t *testing.T, c *cloud, email string) *shareAcct {
	t.Helper()
	s, err := session.Signup(context.Background(), c.client(t), c.url, email, []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	return newShareAcct(t, c, s)
}

// load returns the home FS opening the account's shares, and the shares.
func (a *shareAcct) load(t *testing.T) (*pathops.FS, *pathops.Shares) {
	t.Helper()
	sh, err := pathops.LoadShares(context.Background(), a.c, a.acct)
	if err != nil {
		t.Fatal(err)
	}
	return a.home.WithShares(a.acct.Identity, sh.All()...), sh
}

// view returns the FS of the account's only share.
func (a *shareAcct) view(t *testing.T) *pathops.FS {
	t.Helper()
	f, sh := a.load(t)
	if len(sh.All()) != 1 {
		t.Fatalf("%s: %d shares, want 1", a.acct.Email, len(sh.All()))
	}
	v, err := f.View(sh.All()[0])
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (a *shareAcct) put(t *testing.T, f *pathops.FS, p string, b []byte) {
	t.Helper()
	local := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(local, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PutFile(context.Background(), local, p, nil); err != nil {
		t.Fatalf("put %s: %v", p, err)
	}
}

func shareGet(t *testing.T, f *pathops.FS, p string) ([]byte, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	if err := f.GetFile(context.Background(), p, out, nil); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// driveShareOptions makes a drive of a open and write a's shares.
func driveShareOptions(a *shareAcct) func(*Options) {
	return func(o *Options) {
		o.Identity = a.acct.Identity
		o.Shares = func(ctx context.Context) ([]*pathops.Share, error) {
			sh, err := pathops.LoadShares(ctx, a.c, a.acct)
			if err != nil {
				return nil, err
			}
			return sh.All(), nil
		}
	}
}

func coreDriveWith(t *testing.T, c *cloud, mod func(*Options)) *Drive {
	t.Helper()
	o := Options{Client: c.client(t), Session: c.sess, CacheDir: t.TempDir(), Logger: testLogger(t),
		QuietTime: 50 * time.Millisecond, PollWait: time.Second}
	if mod != nil {
		mod(&o)
	}
	d, err := newDrive(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.shutdown)
	return d
}

// sharedDocs makes the owner's /Docs (a.txt, sub/b.txt) and /out.txt and
// shares /Docs with bob as a writer, as `kumo share` does.
func sharedDocs(t *testing.T, c *cloud) (owner, bob *shareAcct) {
	t.Helper()
	owner = newShareAcct(t, c, c.sess)
	bob = signupShareAcct(t, c, "bob@example.com")
	owner.put(t, owner.home, "/Docs/a.txt", []byte("shared a\n"))
	owner.put(t, owner.home, "/Docs/sub/b.txt", []byte("shared b\n"))
	owner.put(t, owner.home, "/out.txt", []byte("not shared\n"))
	f, _ := owner.load(t)
	if _, err := f.ShareFolder(context.Background(), owner.acct, "/Docs", "bob@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	if _, err := pathops.AcceptShare(context.Background(), bob.c, bob.acct, owner.acct.Email+"/Docs"); err != nil {
		t.Fatal(err)
	}
	return owner, bob
}

func lookupDir(t *testing.T, d *Drive, parent uint64, name string) *nodeState {
	t.Helper()
	st, e := d.lookupForTest(parent, name)
	if e != 0 {
		t.Fatalf("lookup %s: %v", name, e)
	}
	return st
}

func flushDrive(t *testing.T, d *Drive) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestShareOwnerDrive: the owner's drive reads a folder it shares (records
// re-sealed under the share's key id and signed), writes into it records
// sealed under the share's key id and signed by the account's identity (the
// writer member reads them through its share view, which checks both),
// refuses renames and hard links across the share's boundary (EXDEV), and
// reads a record of the share the server altered as EIO: unsigned, signed
// by a key not in the roster, or with a bad signature.
func TestShareOwnerDrive(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	d := coreDriveWith(t, c, driveShareOptions(owner))

	docs := lookupDir(t, d, api.RootID, "Docs")
	if got := coreRead(t, d, docs.id, "a.txt"); got != "shared a\n" {
		t.Fatalf("owner's drive reads a.txt: %q", got)
	}
	sub := lookupDir(t, d, docs.id, "sub")
	if got := coreRead(t, d, sub.id, "b.txt"); got != "shared b\n" {
		t.Fatalf("owner's drive reads sub/b.txt: %q", got)
	}
	if ls, _, e := d.list(docs.id); e != 0 || len(ls) != 2 {
		t.Fatalf("list Docs: %v %v", ls, e)
	}

	// Writes inside the share: a new file, a new directory with a file, a
	// changed file, a chmod.
	coreFile(t, d, docs.id, "new.txt", "from the owner's drive\n")
	made, e := d.create(docs.id, newNode{name: "made", mode: syscall.S_IFDIR | 0o755})
	if e != 0 {
		t.Fatal(e)
	}
	coreFile(t, d, made.id, "deep.txt", "deep\n")
	a := lookupDir(t, d, docs.id, "a.txt")
	if _, e := d.write(context.Background(), a, []byte("SHARED"), 0); e != 0 {
		t.Fatal(e)
	}
	if e := d.makeDurable(a, true, false); e != 0 {
		t.Fatal(e)
	}
	if e := d.setAttrs(sub, func(at *meta.Attrs) syscall.Errno { at.Mode = at.Mode&^0o777 | 0o750; return 0 }); e != 0 {
		t.Fatal(e)
	}
	coreFile(t, d, api.RootID, "home.txt", "home\n")
	flushDrive(t, d)

	// The writer member reads them through its view of the share, which
	// refuses records not sealed for the share or not signed by a writer.
	bv := bob.view(t)
	for p, want := range map[string]string{"/new.txt": "from the owner's drive\n", "/made/deep.txt": "deep\n", "/a.txt": "SHARED a\n", "/sub/b.txt": "shared b\n"} {
		if got, err := shareGet(t, bv, p); err != nil || string(got) != want {
			t.Fatalf("member reads %s: %q, %v; want %q", p, got, err, want)
		}
	}
	if n, err := bv.Resolve(context.Background(), "/sub"); err != nil || n.Attrs.Mode&0o777 != 0o750 {
		t.Fatalf("member sees sub's mode: %v", err)
	}
	// What the writer member writes reaches the owner's drive through its
	// change feed, signed by the member: the drive reads it.
	fromBob := bytes.Repeat([]byte("from bob "), 20000)
	bob.put(t, bv, "/sub/from-bob.txt", fromBob)
	waitFor(t, 20*time.Second, func() bool {
		_, e := d.lookupForTest(sub.id, "from-bob.txt")
		return e == 0
	})
	if st := lookupDir(t, d, sub.id, "from-bob.txt"); st.attrs.Size != uint64(len(fromBob)) {
		t.Fatalf("the member's file in the owner's drive: size %d", st.attrs.Size)
	} else {
		buf := make([]byte, len(fromBob)+10)
		n, err := d.readAt(context.Background(), st, buf, 0, false, nil)
		if err != nil || !bytes.Equal(buf[:n], fromBob) {
			t.Fatalf("owner's drive reads the member's file: %d bytes, %v", n, err)
		}
	}
	// The owner's home tree outside the share stays home-sealed and unsigned.
	hf, _ := owner.load(t)
	if got, err := shareGet(t, hf, "/home.txt"); err != nil || string(got) != "home\n" {
		t.Fatalf("owner reads home.txt: %q %v", got, err)
	}
	if n, err := hf.Resolve(context.Background(), "/home.txt"); err != nil {
		t.Fatal(err)
	} else if k, _ := meta.RecordKeyID(n.Node.Attrs); k != meta.Home {
		t.Fatalf("home.txt sealed under %+v", k)
	}

	// Nothing leaves or enters the share by a rename or a hard link.
	out := lookupDir(t, d, api.RootID, "out.txt")
	if e := d.rename(docs.id, "new.txt", api.RootID, "new.txt", 0); e != syscall.EXDEV {
		t.Fatalf("rename out of the share: %v, want EXDEV", e)
	}
	if e := d.rename(api.RootID, "out.txt", docs.id, "out.txt", 0); e != syscall.EXDEV {
		t.Fatalf("rename into the share: %v, want EXDEV", e)
	}
	if e := d.rename(api.RootID, "out.txt", docs.id, "new.txt", renameExchange); e != syscall.EXDEV {
		t.Fatalf("exchange across the share: %v, want EXDEV", e)
	}
	if _, e := d.link(out.id, docs.id, "out-link"); e != syscall.EXDEV {
		t.Fatalf("hard link into the share: %v, want EXDEV", e)
	}
	nw := lookupDir(t, d, docs.id, "new.txt")
	if _, e := d.link(nw.id, api.RootID, "new-link"); e != syscall.EXDEV {
		t.Fatalf("hard link out of the share: %v, want EXDEV", e)
	}
	// Inside the share, and the share root itself within the home tree, move.
	if e := d.rename(docs.id, "new.txt", made.id, "moved.txt", 0); e != 0 {
		t.Fatalf("rename inside the share: %v", e)
	}
	coreFile(t, d, docs.id, "new-home.txt", "")
	if e := d.rename(api.RootID, "Docs", api.RootID, "Docs2", 0); e != 0 {
		t.Fatalf("rename the share root: %v", e)
	}
	flushDrive(t, d)
	if got, err := shareGet(t, bv, "/made/moved.txt"); err != nil || string(got) != "from the owner's drive\n" {
		t.Fatalf("member reads the moved file: %q %v", got, err)
	}

	// The server alters records of the share. The drive that has the good
	// records keeps them (the altered ones are counted, never used); a drive
	// with a fresh cache reads each altered file as EIO.
	before := d.Integrity().AuthFailures
	plantShareAttrs(t, owner, "/Docs2/a.txt", "unsigned")
	plantShareAttrs(t, owner, "/Docs2/sub/b.txt", "stranger")
	plantShareAttrs(t, owner, "/Docs2/made/moved.txt", "badsig")
	waitFor(t, 20*time.Second, func() bool { return d.Integrity().AuthFailures >= before+3 })
	if got := coreRead(t, d, docs.id, "a.txt"); got != "SHARED a\n" {
		t.Fatalf("after the server altered a.txt the drive reads %q", got)
	}
	if st := lookupDir(t, d, docs.id, "a.txt"); st.attrs.Mode&0o777 == 0o600 {
		t.Fatal("the drive adopted the altered attributes")
	}
	fresh := coreDriveWith(t, c, driveShareOptions(owner))
	docs2 := lookupDir(t, fresh, api.RootID, "Docs2")
	if got := coreRead(t, fresh, docs2.id, "new-home.txt"); got != "" {
		t.Fatalf("fresh drive reads new-home.txt: %q", got)
	}
	for _, p := range []struct{ dir, name string }{{"", "a.txt"}, {"sub", "b.txt"}, {"made", "moved.txt"}} {
		dir := docs2
		if p.dir != "" {
			dir = lookupDir(t, fresh, docs2.id, p.dir)
		}
		if _, e := fresh.lookupForTest(dir.id, p.name); e != syscall.EIO {
			t.Fatalf("fresh drive: altered %s/%s: %v, want EIO", p.dir, p.name, e)
		}
	}
}

// plantShareAttrs replaces, as a hostile server could, the attributes of
// the file at p (in the owner's shared folder) with a record sealed under
// the share's key (which a reader holds) but: not signed ("unsigned"),
// signed by a key not in the roster ("stranger"), or with the owner's
// signature spoiled ("badsig"). A higher revision, so it is no rollback.
func plantShareAttrs(t *testing.T, owner *shareAcct, p, how string) {
	t.Helper()
	ctx := context.Background()
	n, sealed := sealShareAttrs(t, owner, p, 100, func(a *meta.Attrs) { a.Mode = a.Mode&^0o777 | 0o600 })
	rec := sealed
	var err error
	switch how {
	case "stranger":
		id, err := keys.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		rec, err = keys.SignRecord(id, keys.RecordAttrs, n.ID(), nil, sealed)
		if err != nil {
			t.Fatal(err)
		}
	case "badsig":
		rec, err = keys.SignRecord(owner.acct.Identity, keys.RecordAttrs, n.ID(), nil, sealed)
		if err != nil {
			t.Fatal(err)
		}
		rec[len(rec)-1] ^= 1
	}
	if _, err := owner.c.Update(ctx, n.ID(), api.UpdateRequest{Version: n.Node.Version, Attrs: rec, Chunks: n.Node.Chunks}); err != nil {
		t.Fatalf("plant %s: %v", p, err)
	}
}

// sealShareAttrs resolves the file at p in the owner's shared folder and
// seals its attributes, changed by change, under the share's current
// generation at a revision bump higher (unsigned: callers sign or not).
func sealShareAttrs(t *testing.T, owner *shareAcct, p string, bump uint64, change func(*meta.Attrs)) (*pathops.Node, []byte) {
	t.Helper()
	return sealShareAttrsAt(t, owner, p, bump, 0, keys.Key{}, change)
}

// sealShareAttrsAt is sealShareAttrs under generation gen with secret
// (gen 0: the current one, with the owner's secret).
func sealShareAttrsAt(t *testing.T, owner *shareAcct, p string, bump uint64, gen uint32, secret keys.Key, change func(*meta.Attrs)) (*pathops.Node, []byte) {
	t.Helper()
	f, sh := owner.load(t)
	n, err := f.Resolve(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	s := sh.Owned[0]
	kid := meta.KeyID{Share: s.ID, Gen: s.Gen()}
	if gen != 0 {
		kid.Gen = gen
	} else {
		secret = s.Secrets[kid.Gen]
	}
	sealer := meta.NewSealer(owner.sess.Subkeys()).WithShare(kid, keys.ShareSubkeys(secret, s.ID, kid.Gen))
	a := *n.Attrs
	change(&a)
	sealed, err := sealer.SealAttrsAs(kid, n.ID(), meta.Rev(n.Node.Attrs)+bump, &a)
	if err != nil {
		t.Fatal(err)
	}
	return n, sealed
}

// TestShareOwnerMount: the same through a real mount: the owner's drive
// reads the shared folder, a file written into it reads byte exact for the
// writer member, mv across the share's boundary is EXDEV, and the history
// view (.kumo-history) reads the shared folder.
func TestShareOwnerMount(t *testing.T) {
	needFUSE(t)
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: time.Hour})
	owner, bob := sharedDocs(t, c)
	m := c.mount(t, t.TempDir(), driveShareOptions(owner))
	if got, err := os.ReadFile(m.p("Docs/sub/b.txt")); err != nil || string(got) != "shared b\n" {
		t.Fatalf("read through the mount: %q %v", got, err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	if err := os.WriteFile(m.p("Docs/sub/w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.p("Docs/sub/w.bin"), m.p("w.bin")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("mv out of the share: %v, want EXDEV", err)
	}
	if err := os.Link(m.p("out.txt"), m.p("Docs/out.txt")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("ln into the share: %v, want EXDEV", err)
	}
	m.flush()
	if got, err := shareGet(t, bob.view(t), "/sub/w.bin"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("member reads the file written through the owner's mount: %d bytes, %v", len(got), err)
	}
	// The history view reads the shared folder too (signatures checked).
	time.Sleep(20 * time.Millisecond)
	snap := filepath.Join(m.p(HistoryDirName), moment(time.Now()))
	if got, err := os.ReadFile(filepath.Join(snap, "Docs", "sub", "w.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read the shared folder in .kumo-history: %d bytes, %v", len(got), err)
	}
	if got, err := os.ReadFile(filepath.Join(snap, "Docs", "a.txt")); err != nil || string(got) != "shared a\n" {
		t.Fatalf("read a.txt in .kumo-history: %q %v", got, err)
	}
}

// TestShareOwnerDriveRotate: after the owner removes a member (the share
// moves to generation 2), what the owner's drive writes — a new file, new
// data in a file of generation 1 — is sealed under generation 2, chunks
// included, so the removed member's generation-1 secret opens none of it;
// the new records are what the drive and a remaining member read.
func TestShareOwnerDriveRotate(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	carol := joinDocs(t, c, owner, "carol@example.com", keys.RoleReader)
	_, bs := bob.load(t)
	bobGen1 := bs.Joined[0].Secrets[1]
	d := coreDriveWith(t, c, driveShareOptions(owner))
	docs := lookupDir(t, d, api.RootID, "Docs")
	coreRead(t, d, docs.id, "a.txt")

	f, _ := owner.load(t)
	if _, err := f.RemoveMember(context.Background(), owner.acct, "/Docs", "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	// The drive reloads its shares every 30 s (accountLoop); at once here.
	// Bob was a writer: the folder was re-sealed under generation 2, and
	// records the drive has not pulled yet are of a generation the new
	// roster refuses: wait for the change feed to bring them.
	if err := d.loadShares(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool {
		st, e := d.lookupForTest(docs.id, "a.txt")
		return e == 0 && st.kid.Gen == 2
	})
	coreFile(t, d, docs.id, "after.txt", "written after bob was removed\n")
	a := lookupDir(t, d, docs.id, "a.txt")
	if _, e := d.write(context.Background(), a, []byte(" and more\n"), int64(len("shared a\n"))); e != 0 {
		t.Fatal(e)
	}
	if e := d.makeDurable(a, true, false); e != 0 {
		t.Fatal(e)
	}
	flushDrive(t, d)

	sh := meta.KeyID{}
	_, owned := owner.load(t)
	sh.Share = owned.Owned[0].ID
	old := keys.ShareSubkeys(bobGen1, sh.Share, 1)
	oldSealer := meta.NewSealer(bob.sess.Subkeys()).WithShare(meta.KeyID{Share: sh.Share, Gen: 1}, old)
	oldChunks := chunk.NewCipher(old.ChunkID, old.Chunks)
	cv := carol.view(t)
	for name, want := range map[string]string{"/after.txt": "written after bob was removed\n", "/a.txt": "shared a\n and more\n"} {
		if got, err := shareGet(t, cv, name); err != nil || string(got) != want {
			t.Fatalf("remaining member reads %s: %q %v", name, got, err)
		}
		n, err := cv.Resolve(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := meta.RecordKeyID(n.Node.Attrs); k.Gen != 2 {
			t.Fatalf("%s: attributes sealed under generation %d, want 2", name, k.Gen)
		}
		sealed, _, _, err := keys.SplitRecord(n.Node.Attrs)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := oldSealer.OpenAttrs(n.ID(), sealed); err == nil {
			t.Fatalf("%s: the removed member's generation-1 keys open the new attributes", name)
		}
		for _, ch := range n.Node.Chunks {
			b, err := owner.c.GetChunk(context.Background(), ch, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			id, err := chunk.ParseID(ch)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := oldChunks.Open(nil, id, b); err == nil {
				t.Fatalf("%s: the removed member's generation-1 keys open chunk %s", name, ch)
			}
		}
	}
	if got := coreRead(t, d, docs.id, "a.txt"); got != "shared a\n and more\n" {
		t.Fatalf("owner's drive reads a.txt: %q", got)
	}
}

// TestShareWhileMounted: the owner shares a folder (kumo share) while its
// drive runs: the drive follows the re-sealed records through the change
// feed (the share's keys derived before the server lists it, then loaded)
// and goes on reading the folder and writing into it, signed, under the
// share's key id. With a drive that cannot open them, the folder's files
// read as EIO or vanish.
func TestShareWhileMounted(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner := newShareAcct(t, c, c.sess)
	bob := signupShareAcct(t, c, "bob@example.com")
	d := coreDriveWith(t, c, driveShareOptions(owner))
	docs, e := d.create(api.RootID, newNode{name: "Docs", mode: syscall.S_IFDIR | 0o755})
	if e != 0 {
		t.Fatal(e)
	}
	coreFile(t, d, docs.id, "a.txt", "written before sharing\n")
	sub, e := d.create(docs.id, newNode{name: "sub", mode: syscall.S_IFDIR | 0o755})
	if e != 0 {
		t.Fatal(e)
	}
	coreFile(t, d, sub.id, "b.txt", "b before sharing\n")
	flushDrive(t, d)

	f, _ := owner.load(t)
	if _, err := f.ShareFolder(context.Background(), owner.acct, "/Docs", "bob@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	if _, err := pathops.AcceptShare(context.Background(), bob.c, bob.acct, owner.acct.Email+"/Docs"); err != nil {
		t.Fatal(err)
	}
	// The drive sees the re-sealed records through the feed.
	t.Log("waiting for Docs")
	waitFor(t, 20*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		st, err := d.stateLocked(docs.id)
		return err == nil && st.kid.Share != 0
	})
	for _, p := range []struct {
		dir  uint64
		name string
	}{{docs.id, "a.txt"}, {docs.id, "sub"}, {sub.id, "b.txt"}} {
		t.Log("waiting for", p.name)
		waitFor(t, 20*time.Second, func() bool {
			st, e := d.lookupForTest(p.dir, p.name)
			return e == 0 && st.kid.Share != 0
		})
	}
	if got := coreRead(t, d, docs.id, "a.txt"); got != "written before sharing\n" {
		t.Fatalf("a.txt after sharing: %q", got)
	}
	if got := coreRead(t, d, sub.id, "b.txt"); got != "b before sharing\n" {
		t.Fatalf("sub/b.txt after sharing: %q", got)
	}
	if ls, _, e := d.list(docs.id); e != 0 || len(ls) != 2 {
		t.Fatalf("list Docs after sharing: %v %v", ls, e)
	}
	coreFile(t, d, sub.id, "c.txt", "written after sharing\n")
	flushDrive(t, d)
	bv := bob.view(t)
	for p, want := range map[string]string{"/sub/c.txt": "written after sharing\n", "/a.txt": "written before sharing\n"} {
		if got, err := shareGet(t, bv, p); err != nil || string(got) != want {
			t.Fatalf("member reads %s: %q %v", p, got, err)
		}
	}
}

// TestShareOrphanCreate: a file created in the owner's drive inside a
// shared folder whose directory is gone in the cloud is kept at the shared
// folder's root (a conflict name), where its records open — not at the
// account's root, where a share-sealed node is refused.
func TestShareOrphanCreate(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	d := coreDriveWith(t, c, driveShareOptions(owner))
	docs := lookupDir(t, d, api.RootID, "Docs")
	kid := d.writeKID(docs.kid)
	gone, id, rev := newID(), newID(), meta.NextRev(0)
	now := nowNs()
	a := meta.Attrs{Mode: syscall.S_IFREG | 0o644, Atime: now, Mtime: now, Ctime: now}
	req := &api.CreateRequest{Parent: gone, ID: id, Type: api.TypeFile, Attrs: d.sealAttrs(kid, id, rev, &a), Chunks: []string{}}
	req.NameMAC, req.Name = d.sealName(kid, gone, id, meta.KindFile, "lost.txt")
	if !d.resolveCreate(context.Background(), req, &api.Error{Code: api.CodeNotFound}) {
		t.Fatal("resolveCreate asks to retry")
	}
	ls, err := bob.view(t).List(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range ls {
		found = found || n.ID() == id
	}
	if !found {
		t.Fatalf("the orphaned file is not at the shared folder's root: %v", ls)
	}
}

// TestShareRevokeWriterDrives: after the owner removes a writer (the
// folder re-sealed under generation 2, the roster's lowest accepted
// generation raised to 2), a record the removed writer signs in generation
// 1 (which it wrote in, and whose secret it kept) and a hostile server
// plants is refused: the owner's running drive keeps its good record and
// counts the refusal, and a fresh owner's drive and a remaining reader's
// drive of the joined share read the file as EIO. Every other file reads.
// With the old lazy rotation all three took the planted record.
func TestShareRevokeWriterDrives(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	carol := joinDocs(t, c, owner, "carol@example.com", keys.RoleReader)
	bob.put(t, bob.view(t), "/bob.txt", []byte("bob wrote this\n"))
	_, bs := bob.load(t)
	bobGen1 := bs.Joined[0].Secrets[1]

	// Every drive reaches the cloud through p, which serves the plant.
	p := hostile.Start(t, c.url)
	viaProxy := func(a *shareAcct) func(*Options) {
		return func(o *Options) {
			driveShareOptions(a)(o)
			o.Client = proxyClient(t, p.URL, a.sess.Token)
		}
	}
	od := coreDriveWith(t, c, viaProxy(owner))
	docs := lookupDir(t, od, api.RootID, "Docs")
	coreRead(t, od, docs.id, "a.txt")
	// A hard link in the same directory: the re-seal lists both names with
	// the node's old record and must re-seal the node once.
	if _, e := od.link(lookupDir(t, od, docs.id, "a.txt").id, docs.id, "a-link.txt"); e != 0 {
		t.Fatalf("link: %v", e)
	}
	flushDrive(t, od)

	sh := removeBob(t, owner)
	if sh.Roster.MinGen != 2 {
		t.Fatalf("lowest accepted generation after removing a writer: %d, want 2", sh.Roster.MinGen)
	}
	if err := od.loadShares(ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool {
		st, e := od.lookupForTest(docs.id, "a.txt")
		return e == 0 && st.kid.Gen == 2
	})

	before := od.Integrity().AuthFailures
	n, sealed := sealShareAttrsAt(t, owner, "/Docs/a.txt", 100, 1, bobGen1, func(a *meta.Attrs) { a.Mode = a.Mode&^0o777 | 0o600 })
	rec, err := keys.SignRecord(bob.acct.Identity, keys.RecordAttrs, n.ID(), nil, sealed)
	if err != nil {
		t.Fatal(err)
	}
	serveAttrs(p, n.ID(), rec)
	// The owner's other device writes a.txt's record again (unchanged,
	// generation 2): the change feed tells the drive, which fetches the node
	// and is shown the plant.
	if _, err := owner.c.Update(ctx, n.ID(), api.UpdateRequest{Version: n.Node.Version, Attrs: n.Node.Attrs, Chunks: n.Node.Chunks}); err != nil {
		t.Fatalf("update a.txt: %v", err)
	}
	waitFor(t, 20*time.Second, func() bool { return od.Integrity().AuthFailures > before })
	if st := lookupDir(t, od, docs.id, "a.txt"); st.attrs.Mode&0o777 == 0o600 || st.kid.Gen != 2 {
		t.Fatalf("the owner's drive adopted the removed writer's generation-1 record (generation %d)", st.kid.Gen)
	}
	if got := coreRead(t, od, docs.id, "a.txt"); got != "shared a\n" {
		t.Fatalf("owner's drive reads a.txt: %q", got)
	}

	fresh := coreDriveWith(t, c, viaProxy(owner))
	cd := coreDriveWith(t, c, func(o *Options) {
		viaProxy(carol)(o)
		o.Session, o.SharedDir = carol.sess, "Shared"
	})
	md, e := cd.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatalf("carol's drive of the joined share: %v", e)
	}
	for name, d := range map[string]*Drive{"a fresh owner's drive": fresh, "the remaining reader's drive": md} {
		dir := d.rootID()
		if d == fresh {
			dir = lookupDir(t, fresh, api.RootID, "Docs").id
		}
		if _, e := d.lookupForTest(dir, "a.txt"); e != syscall.EIO {
			t.Fatalf("%s: the removed writer's planted record: %v, want EIO", name, e)
		}
		if got := coreRead(t, d, dir, "bob.txt"); got != "bob wrote this\n" {
			t.Fatalf("%s reads bob.txt (re-sealed by the owner): %q", name, got)
		}
		sub := lookupDir(t, d, dir, "sub")
		if got := coreRead(t, d, sub.id, "b.txt"); got != "shared b\n" {
			t.Fatalf("%s reads sub/b.txt: %q", name, got)
		}
	}
}

// A member holds its generation's chunk keys, so with the server it can
// seal other bytes under a chunk id of the owner's: every segment then
// authenticates. The drive checks a shared folder's chunks against their
// id (the keyed hash the signed record names) and fetches them only whole:
// a read at an offset (not sequential) of a forged chunk is EIO, not the
// forged bytes; the file reads once the cloud serves the right chunk.
func TestShareForgedChunkIsEIO(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	forge := &forgeCloud{}
	d := coreDriveWith(t, c, driveShareOptions(owner))
	forge.chunkCloud, d.chunks = d.chunks, forge
	docs := lookupDir(t, d, api.RootID, "Docs")
	a := lookupDir(t, d, docs.id, "a.txt")
	d.mu.Lock()
	ref := a.attrs.Chunks[0]
	d.mu.Unlock()
	forged := d.chunkCipher(ref.ID).Seal(nil, ref.ID, []byte("forged a\n")) // as long as "shared a\n"
	forge.set(ref.ID.String(), forged)
	buf := make([]byte, 64)
	if n, err := d.readAt(context.Background(), a, buf, 3, false, nil); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a forged shared chunk: %q, %v; want EIO", buf[:n], err)
	}
	forge.set("", nil)
	if n, err := d.readAt(context.Background(), a, buf, 3, false, nil); err != nil || string(buf[:n]) != "red a\n" {
		t.Fatalf("read once the cloud serves the chunk: %q, %v", buf[:n], err)
	}
}

// forgeCloud answers every fetch of one chunk with other sealed bytes.
type forgeCloud struct {
	chunkCloud
	mu     sync.Mutex
	id     string
	sealed []byte
}

func (f *forgeCloud) set(id string, sealed []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.id, f.sealed = id, sealed
}

func (f *forgeCloud) GetChunkInto(ctx context.Context, id string, off, length int64, buf []byte) ([]byte, error) {
	f.mu.Lock()
	forged := f.sealed
	if id != f.id {
		forged = nil
	}
	f.mu.Unlock()
	if forged == nil {
		return f.chunkCloud.GetChunkInto(ctx, id, off, length, buf)
	}
	if length < 0 {
		length = int64(len(forged)) - off
	}
	return append(buf[:0], forged[off:off+length]...), nil
}

// joinDocs signs up an account for email, shares owner's /Docs with it in
// role and has it accept.
// removeBob removes bob@example.com from owner's shared /Docs (rotating it
// to a new key generation) and returns the share after it.
func removeBob(t *testing.T, owner *shareAcct) *pathops.Share {
	t.Helper()
	f, _ := owner.load(t)
	sh, err := f.RemoveMember(context.Background(), owner.acct, "/Docs", "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

func joinDocs(t *testing.T, c *cloud, owner *shareAcct, email string, role keys.Role) *shareAcct {
	t.Helper()
	ctx := context.Background()
	a := signupShareAcct(t, c, email)
	f, _ := owner.load(t)
	if _, err := f.ShareFolder(ctx, owner.acct, "/Docs", email, role); err != nil {
		t.Fatal(err)
	}
	if _, err := pathops.AcceptShare(ctx, a.c, a.acct, owner.acct.Email+"/Docs"); err != nil {
		t.Fatal(err)
	}
	return a
}
