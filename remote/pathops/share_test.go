package pathops_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/session"
)

// sharer is a logged-in account with identity keys, as the CLI has it.
type sharer struct {
	home *pathops.FS
	c    *client.Client
	acct pathops.Account
}

func newSharer(t *testing.T, e *env, email string) *sharer { return newSharerAt(t, e.url, email) }

// newSharerAt signs up through the server (or proxy) at url.
func newSharerAt(t *testing.T, url, email string) *sharer {
	t.Helper()
	c, err := client.New(client.Options{BaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Signup(tctx(t), c, url, email, []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := session.EnsureIdentity(tctx(t), c, s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Account(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	contacts, err := pathops.LoadContacts(filepath.Join(t.TempDir(), "contacts.json"))
	if err != nil {
		t.Fatal(err)
	}
	return &sharer{home: pathops.New(c, s.Subkeys()), c: c,
		acct: pathops.Account{ID: a.ID, Email: s.Email, Master: s.Master, Identity: id, Contacts: contacts}}
}

// load returns the home FS that opens the account's shares, and the shares.
func (s *sharer) load(t *testing.T) (*pathops.FS, *pathops.Shares) {
	t.Helper()
	sh, err := pathops.LoadShares(tctx(t), s.c, s.acct)
	if err != nil {
		t.Fatal(err)
	}
	return s.home.WithShares(s.acct.Identity, sh.All()...), sh
}

// view returns the FS of the account's only owned or joined share.
func (s *sharer) view(t *testing.T) *pathops.FS {
	t.Helper()
	f, sh := s.load(t)
	all := sh.All()
	if len(all) != 1 {
		t.Fatalf("%s: %d shares, want 1", s.acct.Email, len(all))
	}
	v, err := f.View(all[0])
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (s *sharer) accept(t *testing.T, which string) {
	t.Helper()
	if _, err := pathops.AcceptShare(tctx(t), s.c, s.acct, which); err != nil {
		t.Fatal(err)
	}
}

func getBytes(t *testing.T, f *pathops.FS, p string) ([]byte, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	if err := f.GetFile(tctx(t), p, out, nil); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

func putBytes(t *testing.T, f *pathops.FS, p string, b []byte) error {
	t.Helper()
	local := filepath.Join(t.TempDir(), "in")
	writeFile(t, local, b)
	_, err := f.PutFile(tctx(t), local, p, nil)
	return err
}

// TestShareFolder: the owner shares a folder holding files; a writer and a
// reader accept; both read the files byte for byte; the writer's file reads
// right for the owner; the reader's write is refused; after the writer is
// removed, what the owner writes is sealed under a generation the removed
// member's secrets do not open, and the remaining reader reads it.
func TestShareFolder(t *testing.T) {
	e := startServer(t)
	alice, bob, carol := newSharer(t, e, "alice@example.com"), newSharer(t, e, "bob@example.com"), newSharer(t, e, "carol@example.com")
	small, big := []byte("hello, shared world\n"), randBytes(t, 5<<20+123)
	if err := putBytes(t, alice.home, "/Docs/a.txt", small); err != nil {
		t.Fatal(err)
	}
	if err := putBytes(t, alice.home, "/Docs/sub/big.bin", big); err != nil {
		t.Fatal(err)
	}
	if err := putBytes(t, alice.home, "/elsewhere.txt", small); err != nil {
		t.Fatal(err)
	}

	af, _ := alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "bob@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	af, _ = alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "carol@example.com", keys.RoleReader); err != nil {
		t.Fatal(err)
	}
	// The owner's home tree still reads the folder (re-sealed, chunks re-encrypted).
	af, _ = alice.load(t)
	if got, err := getBytes(t, af, "/Docs/sub/big.bin"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("owner reads big.bin after sharing: %v", err)
	}
	if got, err := getBytes(t, af, "/elsewhere.txt"); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("owner reads a file outside the share: %v", err)
	}
	// The home tree's FS does not write into the shared folder.
	if err := putBytes(t, af, "/Docs/home.txt", small); !errors.Is(err, pathops.ErrNotInShare) {
		t.Fatalf("home FS write into the share: %v, want ErrNotInShare", err)
	}

	// Bob sees the invitation with Alice's fingerprint and accepts it.
	_, bs := bob.load(t)
	if len(bs.Invitations) != 1 || bs.Invitations[0].Fingerprint != alice.acct.Identity.Public.Fingerprint() || bs.Invitations[0].Share.Name() != "alice@example.com/Docs" {
		t.Fatalf("bob's invitations: %+v", bs.Invitations)
	}
	bob.accept(t, "alice@example.com/Docs")
	carol.accept(t, "alice@example.com/docs") // names match case-insensitively
	bv, cv := bob.view(t), carol.view(t)
	for _, v := range []*pathops.FS{bv, cv} {
		if got, err := getBytes(t, v, "/a.txt"); err != nil || !bytes.Equal(got, small) {
			t.Fatalf("member reads a.txt: %v", err)
		}
		if got, err := getBytes(t, v, "/sub/big.bin"); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("member reads big.bin: %v", err)
		}
		if ls, err := v.List(tctx(t), "/"); err != nil || len(ls) != 2 || ls[0].Name != "a.txt" || ls[1].Name != "sub" {
			t.Fatalf("member lists the share: %v %v", ls, err)
		}
	}

	// The writer writes; the owner reads it (through the home tree and her view).
	fromBob := randBytes(t, 70<<10)
	if err := putBytes(t, bv, "/sub/from-bob.bin", fromBob); err != nil {
		t.Fatal(err)
	}
	af, _ = alice.load(t)
	if got, err := getBytes(t, af, "/Docs/sub/from-bob.bin"); err != nil || !bytes.Equal(got, fromBob) {
		t.Fatalf("owner reads the writer's file: %v", err)
	}
	// The reader's write is refused by the server.
	if err := putBytes(t, cv, "/from-carol.txt", small); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("reader's write: %v, want forbidden", err)
	}

	// Revoke Bob: the share moves to generation 2.
	bobOld := bv.Scope()
	if _, err := af.RemoveMember(tctx(t), alice.acct, "/Docs", "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	after := []byte("written after bob was removed\n")
	if err := putBytes(t, alice.view(t), "/after.txt", after); err != nil {
		t.Fatal(err)
	}
	if _, err := getBytes(t, bv, "/after.txt"); err == nil {
		t.Fatal("removed member still reads through the server")
	}
	_, bs = bob.load(t)
	if len(bs.Joined) != 0 {
		t.Fatalf("removed member still lists the share: %+v", bs.Joined)
	}
	// The record the owner wrote is sealed under generation 2, which Bob's
	// secrets (the server could hand him anything) do not open.
	av := alice.view(t)
	n, err := av.Resolve(tctx(t), "/after.txt")
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := meta.RecordKeyID(n.Node.Attrs)
	if kid.Gen != 2 || len(bobOld.Secrets) != 1 {
		t.Fatalf("after revoke: record generation %d, bob held %d generations", kid.Gen, len(bobOld.Secrets))
	}
	sealed, _, _, err := keys.SplitRecord(n.Node.Attrs)
	if err != nil {
		t.Fatal(err)
	}
	bobSealer := meta.NewSealer(keys.Derive(keys.Key{9}))
	for g, secret := range bobOld.Secrets {
		bobSealer = bobSealer.WithShare(meta.KeyID{Share: bobOld.ID, Gen: g}, keys.ShareSubkeys(secret, bobOld.ID, g))
	}
	if _, err := bobSealer.OpenAttrs(n.ID(), sealed); !errors.Is(err, meta.ErrAuth) {
		t.Fatalf("removed member's secrets open the new generation: %v", err)
	}
	// The remaining reader reads both generations.
	cv = carol.view(t)
	for p, want := range map[string][]byte{"/after.txt": after, "/a.txt": small, "/sub/from-bob.bin": fromBob} {
		if got, err := getBytes(t, cv, p); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("reader reads %s after the rotation: %v", p, err)
		}
	}
}

// TestSharePlantedRecords: records the server plants in a share, sealed
// with the share's real keys (it may have them from a reader), are refused
// with ErrShare when unsigned, badly signed, or signed by a reader.
func TestSharePlantedRecords(t *testing.T) {
	e := startServer(t)
	alice, bob, carol := newSharer(t, e, "alice@example.com"), newSharer(t, e, "bob@example.com"), newSharer(t, e, "carol@example.com")
	if err := putBytes(t, alice.home, "/Docs/a.txt", []byte("a")); err != nil {
		t.Fatal(err)
	}
	af, _ := alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "bob@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	af, _ = alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "carol@example.com", keys.RoleReader); err != nil {
		t.Fatal(err)
	}
	bob.accept(t, "alice@example.com/Docs")
	carol.accept(t, "alice@example.com/Docs")
	bv, cv := bob.view(t), carol.view(t)
	sh := cv.Scope()
	kid := meta.KeyID{Share: sh.ID, Gen: sh.Gen()}
	sealer := meta.NewSealer(keys.Derive(keys.Key{9})).WithShare(kid, keys.ShareSubkeys(sh.Secrets[kid.Gen], sh.ID, kid.Gen))
	carolID := carol.acct.Identity
	bobID := bob.acct.Identity

	plant := func(name string, sign func(kind keys.RecordKind, id uint64, mac, sealed []byte) []byte) {
		t.Helper()
		id, _ := pathops.NewNodeID()
		a := &meta.Attrs{Mode: 0o100644, Mtime: 1}
		attrs, err := sealer.SealAttrsAs(kid, id, meta.NextRev(0), a)
		if err != nil {
			t.Fatal(err)
		}
		mac, _ := sealer.NameMACAs(kid, sh.Root, []byte(name))
		sname, _ := sealer.SealNameAs(kid, sh.Root, id, meta.KindFile, []byte(name))
		raw, _ := hexDecode(mac)
		// The "server" is the owner's own unscoped access: it stores what it is given.
		_, err = alice.c.Create(tctx(t), api.CreateRequest{Parent: sh.Root, NameMAC: mac, Name: sign(keys.RecordName, sh.Root, raw, sname),
			ID: id, Type: api.TypeFile, Attrs: sign(keys.RecordAttrs, id, nil, attrs), Chunks: []string{}})
		if err != nil {
			t.Fatalf("plant %s: %v", name, err)
		}
	}
	must := func(b []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	plant("unsigned", func(_ keys.RecordKind, _ uint64, _, sealed []byte) []byte { return sealed })
	plant("badsig", func(k keys.RecordKind, id uint64, mac, sealed []byte) []byte {
		b := must(keys.SignRecord(bobID, k, id, mac, sealed))
		b[len(b)-1] ^= 1
		return b
	})
	plant("by-reader", func(k keys.RecordKind, id uint64, mac, sealed []byte) []byte {
		return must(keys.SignRecord(carolID, k, id, mac, sealed))
	})
	plant("by-writer", func(k keys.RecordKind, id uint64, mac, sealed []byte) []byte {
		return must(keys.SignRecord(bobID, k, id, mac, sealed))
	})
	for _, v := range []*pathops.FS{bv, cv} {
		for _, name := range []string{"unsigned", "badsig", "by-reader"} {
			_, err := v.Resolve(tctx(t), "/"+name)
			if !errors.Is(err, pathops.ErrShare) {
				t.Fatalf("planted %s: %v, want ErrShare", name, err)
			}
		}
		if _, err := v.Resolve(tctx(t), "/by-writer"); err != nil {
			t.Fatalf("record signed by a writer: %v", err)
		}
		if _, err := v.List(tctx(t), "/"); !errors.Is(err, pathops.ErrShare) || !strings.Contains(err.Error(), "alice@example.com/Docs") {
			t.Fatalf("listing with planted records: %v", err)
		}
	}
}

// TestShareOwnerKeyChanged: a member whose pinned keys for the owner differ
// from the keys the owner signs with refuses the invitation and the share
// until the user verifies the new fingerprint.
func TestShareOwnerKeyChanged(t *testing.T) {
	e := startServer(t)
	alice, bob := newSharer(t, e, "alice@example.com"), newSharer(t, e, "bob@example.com")
	if err := putBytes(t, alice.home, "/Docs/a.txt", []byte("a")); err != nil {
		t.Fatal(err)
	}
	af, _ := alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "bob@example.com", keys.RoleReader); err != nil {
		t.Fatal(err)
	}
	// Bob had pinned other keys for alice (the server showed him others, or alice's changed).
	other, _ := keys.NewIdentity()
	if err := bob.acct.Contacts.Check("alice@example.com", other.Public); err != nil {
		t.Fatal(err)
	}
	_, bs := bob.load(t)
	if len(bs.Invitations) != 1 || !errors.Is(bs.Invitations[0].Changed, pathops.ErrContactChanged) {
		t.Fatalf("invitation with changed owner keys: %+v", bs.Invitations)
	}
	if _, err := pathops.AcceptShare(tctx(t), bob.c, bob.acct, "alice@example.com/Docs"); !errors.Is(err, pathops.ErrContactChanged) {
		t.Fatalf("accept with changed owner keys: %v", err)
	}
	fp := alice.acct.Identity.Public.Fingerprint()
	if _, err := pathops.VerifyContact(tctx(t), bob.c, bob.acct.Contacts, "alice@example.com", other.Public.Fingerprint()); err == nil {
		t.Fatal("verify pinned a fingerprint the server does not show")
	}
	if _, err := pathops.VerifyContact(tctx(t), bob.c, bob.acct.Contacts, "alice@example.com", strings.ToUpper(fp)); err != nil {
		t.Fatal(err)
	}
	bob.accept(t, "alice@example.com/Docs")
	if got, err := getBytes(t, bob.view(t), "/a.txt"); err != nil || string(got) != "a" {
		t.Fatalf("read after verify: %v", err)
	}
	// A joined share whose owner keys change again is refused as a whole.
	if err := bob.acct.Contacts.Verify("alice@example.com", other.Public.Fingerprint(), other.Public); err != nil {
		t.Fatal(err)
	}
	if _, err := pathops.LoadShares(tctx(t), bob.c, bob.acct); !errors.Is(err, pathops.ErrContactChanged) {
		t.Fatalf("joined share with changed owner keys: %v", err)
	}
}

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }

// TestShareRosterRollback: after the owner removes a writer, a server that
// answers a member with the older roster (in which the removed account still
// writes) is refused, and so is a roster signed by anyone but the owner.
func TestShareRosterRollback(t *testing.T) {
	e := startServer(t)
	p := hostile.Start(t, e.url)
	alice, bob, carol := newSharer(t, e, "alice@example.com"), newSharer(t, e, "bob@example.com"), newSharerAt(t, p.URL, "carol@example.com")
	if err := putBytes(t, alice.home, "/Docs/a.txt", []byte("a")); err != nil {
		t.Fatal(err)
	}
	af, _ := alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "bob@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	af, _ = alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "carol@example.com", keys.RoleReader); err != nil {
		t.Fatal(err)
	}
	bob.accept(t, "alice@example.com/Docs")
	carol.accept(t, "alice@example.com/Docs")
	carol.view(t) // carol pins this roster's version
	old := p.Exchanges("GET", "/v1/shares")
	oldBody := old[len(old)-1].Upstream.Body
	af, _ = alice.load(t)
	if _, err := af.RemoveMember(tctx(t), alice.acct, "/Docs", "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	carol.view(t) // and now the newer one

	p.On("GET", "/v1/shares", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		r := next(req)
		r.Body = oldBody
		return r
	})
	if _, err := pathops.LoadShares(tctx(t), carol.c, carol.acct); !errors.Is(err, pathops.ErrRosterRollback) {
		t.Fatalf("replayed roster: %v, want ErrRosterRollback", err)
	}

	// Bob signs a roster of his own for the share (making himself owner).
	p.Honest()
	_, cs := carol.load(t)
	forged := *cs.Joined[0].Roster
	forged.Version += 10
	forged.Owner = bob.acct.Identity.Public
	forgedBytes, err := forged.Sign(bob.acct.Identity)
	if err != nil {
		t.Fatal(err)
	}
	p.On("GET", "/v1/shares", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		r := next(req)
		var resp api.SharesResponse
		if err := json.Unmarshal(r.Body, &resp); err != nil || len(resp.Joined) != 1 {
			t.Errorf("shares answer: %v", err)
			return r
		}
		resp.Joined[0].Roster = forgedBytes
		r.Body, _ = json.Marshal(resp)
		return r
	})
	if _, err := pathops.LoadShares(tctx(t), carol.c, carol.acct); !errors.Is(err, pathops.ErrContactChanged) {
		t.Fatalf("roster signed by a member: %v, want refused", err)
	}
}

// TestShareResume: sharing a folder that is interrupted mid-way (the server
// fails a request while the folder is being re-sealed) is finished by running
// it again, and the folder then reads byte for byte for owner and member.
func TestShareResume(t *testing.T) {
	e := startServer(t)
	p := hostile.Start(t, e.url)
	alice, bob := newSharerAt(t, p.URL, "alice@example.com"), newSharer(t, e, "bob@example.com")
	files := map[string][]byte{"/Docs/a.txt": []byte("a"), "/Docs/b/c.bin": randBytes(t, 5<<20), "/Docs/b/d/e.txt": []byte("e"), "/Docs/z.txt": []byte("z")}
	for p, b := range files {
		if err := putBytes(t, alice.home, p, b); err != nil {
			t.Fatal(err)
		}
	}
	renames := 0
	p.On("POST", "/v1/rename", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if renames++; renames == 3 {
			return &hostile.Response{Status: 500, Body: []byte(`{"code":"internal","message":"injected"}`)}
		}
		return next(req)
	})
	af, _ := alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "bob@example.com", keys.RoleReader); err == nil {
		t.Fatal("share went through despite the failed rename")
	}
	if n := p.Count("POST", "/v1/shares"); n != 0 {
		t.Fatalf("share created on the server before its folder was re-sealed (%d)", n)
	}
	p.Honest()
	af, _ = alice.load(t)
	if _, err := af.ShareFolder(tctx(t), alice.acct, "/Docs", "bob@example.com", keys.RoleReader); err != nil {
		t.Fatalf("resume: %v", err)
	}
	bob.accept(t, "alice@example.com/Docs")
	af, _ = alice.load(t)
	bv := bob.view(t)
	for p, want := range files {
		if got, err := getBytes(t, af, p); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("owner reads %s: %v", p, err)
		}
		if got, err := getBytes(t, bv, strings.TrimPrefix(p, "/Docs")); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("member reads %s: %v", p, err)
		}
	}
}
