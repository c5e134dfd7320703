package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/internal/control"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/session"
)

// TestMountOwnerShare: with the built binary, the owner mounts the drive
// after sharing a folder (kumo share): the folder reads through the mount,
// a file written there reads byte exact for the writer member (kumo share
// get checks its signature), and mv out of the folder is EXDEV. Before the
// drive knew shares, reading the folder was EIO.
func TestMountOwnerShare(t *testing.T) {
	needFUSE(t)
	bin := buildKumo(t)
	url, _ := startServe(t, bin)
	base := t.TempDir()
	alice := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw alice", "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	bob := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw bob"}}
	alice.ok("signup", "--server", url, "--email", "alice@example.com")
	bob.ok("signup", "--server", url, "--email", "bob@example.com")
	src := filepath.Join(base, "a.txt")
	if err := os.WriteFile(src, []byte("shared a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	alice.ok("put", src, "/Docs/a.txt")
	alice.ok("share", "/Docs", "--with", "bob@example.com", "--role", "writer")
	bob.ok("share", "accept", "alice@example.com/Docs")

	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	alice.ok("mount", "--server", url, "--cache-dir", filepath.Join(base, "cache"), mnt)
	mounted := true
	defer func() {
		if mounted {
			alice.run("unmount", "--force", mnt)
		}
	}()
	if got, err := os.ReadFile(filepath.Join(mnt, "Docs", "a.txt")); err != nil || string(got) != "shared a\n" {
		t.Fatalf("owner reads the shared folder through the mount: %q %v", got, err)
	}
	data := make([]byte, 200<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(mnt, "Docs", "w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "Docs", "w.bin"), filepath.Join(mnt, "w.bin")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("mv out of the shared folder: %v, want EXDEV", err)
	}
	alice.ok("unmount", mnt) // pushes what is queued
	mounted = false
	out := filepath.Join(t.TempDir(), "w.out")
	bob.ok("share", "get", "alice@example.com/Docs/w.bin", out)
	if got, err := os.ReadFile(out); err != nil || string(got) != string(data) {
		t.Fatalf("member reads the file the owner's mount wrote: %d bytes, %v", len(got), err)
	}
}

// TestMountMemberShares: two accounts, two mounts of the built binary (two
// daemons, one kumo serve). alice shares /Docs with bob as a writer, bob
// shares /Pics with alice as a reader; each sees the invitation (with the
// owner's key fingerprint) in .kumo, accepts it (bob with kumo share accept,
// alice with share accept in .kumo), and the folder appears in its mount at
// Shared/NAME. Live, each direction:
// the owner's new file shows in the member's mount, the writer member's
// file in the owner's; the reader's writes are EROFS before any request; a
// record planted on the server (signed by a key not in the roster) is EIO
// in the member's mount; after kumo share rm the removed member's mount
// shows nothing the owner writes afterwards (nor can kumo share get read
// it), and the folder leaves its mount. Before joined shares were mounted,
// Shared/ did not exist.
func TestMountMemberShares(t *testing.T) {
	needFUSE(t)
	bin := buildKumo(t)
	url, _ := startServe(t, bin)
	base := t.TempDir()
	aliceCfg, bobCfg := t.TempDir(), t.TempDir()
	alice := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + aliceCfg, "KUMO_PASSWORD=pw alice", "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	bob := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + bobCfg, "KUMO_PASSWORD=pw bob", "TMPDIR=" + base, "XDG_RUNTIME_DIR="}}
	alice.ok("signup", "--server", url, "--email", "alice@example.com")
	bob.ok("signup", "--server", url, "--email", "bob@example.com")
	put := func(r *runner, body, remote string) {
		t.Helper()
		src := filepath.Join(t.TempDir(), "in")
		if err := os.WriteFile(src, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		r.ok("put", src, remote)
	}
	put(alice, "shared a\n", "/Docs/a.txt")
	put(bob, "picture p\n", "/Pics/p.txt")
	alice.ok("share", "/Docs", "--with", "bob@example.com", "--role", "writer")
	bob.ok("share", "/Pics", "--with", "alice@example.com", "--role", "reader")

	mount := func(r *runner, name string) string {
		t.Helper()
		mnt := filepath.Join(base, name)
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		r.ok("mount", "--server", url, "--cache-dir", filepath.Join(base, name+"-cache"), mnt)
		t.Cleanup(func() { r.run("unmount", "--force", mnt) })
		return mnt
	}
	amnt, bmnt := mount(alice, "alice"), mount(bob, "bob")

	// The invitation is in .kumo with the owner's key fingerprint.
	fp := regexp.MustCompile(`invited\s+\S+\s+alice@example.com/Docs\s+writer\s+\d+\s+(\S+)`).FindStringSubmatch(bob.ok("shares"))
	if fp == nil {
		t.Fatalf("kumo shares shows no invitation from alice:\n%s", bob.ok("shares"))
	}
	report := func(mnt string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(mnt, ".kumo"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if r := report(bmnt); !strings.Contains(r, "alice@example.com/Docs (writer)  INVITATION, owner's key fingerprint "+fp[1]) {
		t.Fatalf(".kumo does not list the invitation with fingerprint %s:\n%s", fp[1], r)
	}
	bob.ok("share", "accept", "alice@example.com/Docs")
	// alice accepts through her drive's control file.
	if err := os.WriteFile(filepath.Join(amnt, ".kumo"), []byte("share accept bob@example.com/Pics\n"), 0); err != nil {
		t.Fatalf("share accept through .kumo: %v", err)
	}
	if r := report(amnt); !strings.Contains(r, `"share accept bob@example.com/Pics" ok: accepted bob@example.com/Pics: in /Shared/Pics`) {
		t.Fatalf(".kumo does not report the accept:\n%s", r)
	}

	// eventually polls f until it returns nil, for up to d.
	eventually := func(d time.Duration, what string, f func() error) {
		t.Helper()
		start := time.Now()
		end := start.Add(d)
		for {
			err := f()
			if err == nil {
				t.Logf("%s: after %s", what, time.Since(start).Round(10*time.Millisecond))
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: not within %s: %v", what, d, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	readIs := func(p, want string) func() error {
		return func() error {
			got, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if string(got) != want {
				return fmt.Errorf("%s reads %q, want %q", p, got, want)
			}
			return nil
		}
	}
	// Accepted: the folders appear (reading .kumo loads the shares again).
	eventually(20*time.Second, "bob's mount shows Shared/Docs", func() error {
		report(bmnt)
		return readIs(filepath.Join(bmnt, "Shared", "Docs", "a.txt"), "shared a\n")()
	})
	eventually(20*time.Second, "alice's mount shows Shared/Pics", func() error {
		report(amnt)
		return readIs(filepath.Join(amnt, "Shared", "Pics", "p.txt"), "picture p\n")()
	})
	if r := report(bmnt); !strings.Contains(r, "alice@example.com/Docs (writer)  in /Shared/Docs") {
		t.Fatalf(".kumo does not list the joined share:\n%s", r)
	}

	// Live, each direction, within a few seconds.
	const live = 10 * time.Second
	write := func(p, body string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
	}
	write(filepath.Join(amnt, "Docs", "from-alice.txt"), "alice wrote this\n")
	eventually(live, "owner's file in the writer member's mount", readIs(filepath.Join(bmnt, "Shared", "Docs", "from-alice.txt"), "alice wrote this\n"))
	big := strings.Repeat("bob's bytes ", 50<<10)
	write(filepath.Join(bmnt, "Shared", "Docs", "from-bob.txt"), big)
	eventually(live, "writer member's file in the owner's mount", readIs(filepath.Join(amnt, "Docs", "from-bob.txt"), big))
	write(filepath.Join(bmnt, "Pics", "q.txt"), "new picture\n")
	eventually(live, "owner's file in the reader member's mount", readIs(filepath.Join(amnt, "Shared", "Pics", "q.txt"), "new picture\n"))
	if err := os.Mkdir(filepath.Join(bmnt, "Shared", "Docs", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(bmnt, "Shared", "Docs", "sub", "deep.txt"), "deep\n")
	eventually(live, "writer member's subdirectory in the owner's mount", readIs(filepath.Join(amnt, "Docs", "sub", "deep.txt"), "deep\n"))
	// kumo share get checks bob's signatures on what his mount wrote.
	out := filepath.Join(t.TempDir(), "out")
	alice.ok("share", "get", "bob@example.com/Pics/q.txt", out)
	bob.ok("share", "get", "alice@example.com/Docs/from-bob.txt", out)
	if got, _ := os.ReadFile(out); string(got) != big {
		t.Fatalf("kumo share get of the file bob's mount wrote: %d bytes", len(got))
	}

	// The reader's writes are refused locally.
	for what, err := range map[string]error{
		"create": os.WriteFile(filepath.Join(amnt, "Shared", "Pics", "x.txt"), []byte("x"), 0o644),
		"write":  os.WriteFile(filepath.Join(amnt, "Shared", "Pics", "p.txt"), []byte("x"), 0o644),
		"remove": os.Remove(filepath.Join(amnt, "Shared", "Pics", "p.txt")),
		"mkdir":  os.Mkdir(filepath.Join(amnt, "Shared", "Pics", "d"), 0o755),
		"rename": os.Rename(filepath.Join(amnt, "Shared", "Pics", "p.txt"), filepath.Join(amnt, "Shared", "Pics", "p2.txt")),
	} {
		if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) {
			t.Errorf("reader's %s in the shared folder: %v, want EROFS or EACCES", what, err)
		}
	}
	if err := readIs(filepath.Join(amnt, "Shared", "Pics", "p.txt"), "picture p\n")(); err != nil {
		t.Fatalf("after the refused writes: %v", err)
	}
	// Moving across the joined share's edge is EXDEV.
	if err := os.Rename(filepath.Join(bmnt, "Shared", "Docs", "a.txt"), filepath.Join(bmnt, "a.txt")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("mv out of the joined share: %v, want EXDEV", err)
	}

	// A record the server plants (attributes signed by a key not in the
	// roster, under a name the owner signed) is EIO in the member's mount.
	plantFile(t, url, aliceCfg, "forged.txt", true)
	plantFile(t, url, aliceCfg, "control.txt", false) // the same, signed by alice: reads
	eventually(live, "the control file planted alike, signed by the owner, reads", readIs(filepath.Join(bmnt, "Shared", "Docs", "control.txt"), ""))
	eventually(live, "the planted file reads as EIO", func() error {
		_, err := os.ReadFile(filepath.Join(bmnt, "Shared", "Docs", "forged.txt"))
		if errors.Is(err, syscall.EIO) {
			return nil
		}
		return fmt.Errorf("read: %v, want EIO", err)
	})

	// Revoke, then the owner writes: the removed member never gets it.
	alice.ok("share", "rm", "/Docs", "--with", "bob@example.com")
	write(filepath.Join(amnt, "Docs", "after.txt"), "written after the revoke\n")
	write(filepath.Join(amnt, "Docs", "a.txt"), "a rewritten after the revoke\n")
	eventually(live, "alice's mount pushes what it wrote", func() error {
		b, err := os.ReadFile(filepath.Join(amnt, ".kumo.json"))
		if err != nil {
			return err
		}
		var st control.Status
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
		if st.Uploads.Files+st.Uploads.Ops > 0 {
			return fmt.Errorf("%d files, %d ops queued", st.Uploads.Files, st.Uploads.Ops)
		}
		return nil
	})
	bob.fails("", "share", "get", "alice@example.com/Docs/after.txt", out)
	eventually(40*time.Second, "the folder leaves the removed member's mount", func() error {
		report(bmnt)
		if _, err := os.Stat(filepath.Join(bmnt, "Shared", "Docs")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("Shared/Docs: %v", err)
		}
		return nil
	})
	if _, err := os.ReadFile(filepath.Join(bmnt, "Shared", "Docs", "after.txt")); err == nil {
		t.Fatal("the removed member reads a file written after the revoke")
	}
	// The remaining share is untouched.
	if err := readIs(filepath.Join(amnt, "Shared", "Pics", "q.txt"), "new picture\n")(); err != nil {
		t.Fatal(err)
	}
}

// plantFile creates, as a hostile server could, an empty file in alice's
// only owned share: its name sealed and signed by alice (valid), its
// attributes sealed under the share's key (which every member holds) and,
// if forge, signed by a key not in the roster (else by alice).
func plantFile(t *testing.T, url, aliceCfg, name string, forge bool) {
	t.Helper()
	ctx := context.Background()
	sess, err := session.Load(filepath.Join(aliceCfg, "session.json"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Options{BaseURL: url, Token: sess.Token})
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := session.EnsureIdentity(ctx, cl, sess)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cl.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	contacts, err := pathops.LoadContacts(filepath.Join(aliceCfg, "contacts.json"))
	if err != nil {
		t.Fatal(err)
	}
	acct := pathops.Account{ID: a.ID, Email: sess.Email, Master: sess.Master, Identity: id, Contacts: contacts}
	shares, err := pathops.LoadShares(ctx, cl, acct)
	if err != nil || len(shares.Owned) != 1 {
		t.Fatalf("alice's shares: %v (%d owned)", err, len(shares.Owned))
	}
	sh := shares.Owned[0]
	kid := meta.KeyID{Share: sh.ID, Gen: sh.Gen()}
	sealer := meta.NewSealer(sess.Subkeys()).WithShare(kid, keys.ShareSubkeys(sh.Secrets[kid.Gen], sh.ID, kid.Gen))
	signer := id
	if forge {
		if signer, err = keys.NewIdentity(); err != nil {
			t.Fatal(err)
		}
	}
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		t.Fatal(err)
	}
	node := binary.BigEndian.Uint64(nb[:])>>2 | 1
	now := time.Now().UnixNano()
	sealed, err := sealer.SealAttrsAs(kid, node, meta.NextRev(0), &meta.Attrs{Mode: syscall.S_IFREG | 0o644, Mtime: now, Ctime: now, Atime: now})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := keys.SignRecord(signer, keys.RecordAttrs, node, nil, sealed)
	if err != nil {
		t.Fatal(err)
	}
	mac, err := sealer.NameMACAs(kid, sh.Root, []byte(name))
	if err != nil {
		t.Fatal(err)
	}
	sn, err := sealer.SealNameAs(kid, sh.Root, node, meta.KindFile, []byte(name))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := hex.DecodeString(mac)
	signedName, err := keys.SignRecord(id, keys.RecordName, sh.Root, raw, sn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Create(ctx, api.CreateRequest{Parent: sh.Root, NameMAC: mac, Name: signedName, ID: node, Type: api.TypeFile, Attrs: attrs, Chunks: []string{}}); err != nil {
		t.Fatalf("plant %s: %v", name, err)
	}
}
