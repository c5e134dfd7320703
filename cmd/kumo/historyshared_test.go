package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"kumo/remote/pathops"
	"kumo/remote/session"
)

// memberRmrf removes path p of the folder which (OWNER_EMAIL/FOLDER) shared
// with the account of cfg and everything below it, through the share's
// scope, like rm -rf in the member's mounted drive.
func memberRmrf(t *testing.T, cfg, which, p string) {
	t.Helper()
	ctx := context.Background()
	sp := filepath.Join(cfg, "session.json")
	s, err := session.Load(sp)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := session.EnsureIdentity(ctx, cl, s)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cl.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	contacts, err := pathops.LoadContacts(pathops.ContactsPath(sp))
	if err != nil {
		t.Fatal(err)
	}
	shs, err := pathops.LoadShares(ctx, cl, pathops.Account{ID: a.ID, Email: s.Email, Master: s.Master, Identity: id, Contacts: contacts})
	if err != nil {
		t.Fatal(err)
	}
	sh, err := shs.Find(which)
	if err != nil {
		t.Fatal(err)
	}
	v, err := pathops.New(cl, s.Subkeys()).WithShares(id, shs.All()...).View(sh)
	if err != nil {
		t.Fatal(err)
	}
	removeTree(t, v, cl.ForShare(sh.OwnerID, sh.ID).Unlink, p)
}

// TestCLISharedHistory: a writer member of alice's folder overwrites a file
// and rm -rf's a directory there, then gets both back byte for byte with
// kumo history, trash and restore on /Shared/Docs paths; the reader lists
// the trash but cannot restore; nothing of alice's own tree shows. Fails
// on the old code (the cloud refused history reads on a share, and the
// CLI knew no /Shared paths for history).
func TestCLISharedHistory(t *testing.T) {
	bin := buildKumo(t)
	url, _ := startServe(t, bin)
	aliceCfg, bobCfg := t.TempDir(), t.TempDir()
	alice := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + aliceCfg, "KUMO_PASSWORD=pw alice"}}
	bob := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + bobCfg, "KUMO_PASSWORD=pw bob"}}
	carol := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=pw carol"}}
	alice.ok("signup", "--server", url, "--email", "alice@example.com")
	bob.ok("signup", "--server", url, "--email", "bob@example.com")
	carol.ok("signup", "--server", url, "--email", "carol@example.com")

	src := t.TempDir()
	big := make([]byte, 5<<20+3)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644)
	os.WriteFile(filepath.Join(src, "c.txt"), []byte("sea\n"), 0o644)
	os.WriteFile(filepath.Join(src, "private.txt"), []byte("alice only\n"), 0o644)
	alice.ok("put", filepath.Join(src, "big.bin"), "/Docs/big.bin")
	alice.ok("put", filepath.Join(src, "c.txt"), "/Docs/sub/c.txt")
	alice.ok("put", filepath.Join(src, "private.txt"), "/private.txt")
	alice.ok("share", "/Docs", "--with", "bob@example.com", "--role", "writer")
	alice.ok("share", "/Docs", "--with", "carol@example.com", "--role", "reader")
	bob.ok("share", "accept", "alice@example.com/Docs")
	carol.ok("share", "accept", "alice@example.com/Docs")
	rmrf(t, aliceCfg, "/private.txt") // in alice's trash, never in the folder's
	os.WriteFile(filepath.Join(src, "mine.txt"), []byte("bob's own\n"), 0o644)
	bob.ok("put", filepath.Join(src, "mine.txt"), "/mine.txt")

	time.Sleep(20 * time.Millisecond)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(20 * time.Millisecond)
	os.WriteFile(filepath.Join(src, "over.bin"), []byte("bob overwrote it\n"), 0o644)
	bob.ok("share", "put", filepath.Join(src, "over.bin"), "alice@example.com/Docs/big.bin")
	memberRmrf(t, bobCfg, "alice@example.com/Docs", "/sub")

	if out := bob.ok("history", "/Shared/Docs/big.bin"); len(strings.Split(strings.TrimSpace(out), "\n")) < 3 || !strings.Contains(out, "5242883") {
		t.Fatalf("bob's kumo history of the shared file:\n%s", out)
	}
	for who, r := range map[string]*runner{"bob": bob, "carol": carol} {
		out := r.ok("trash", "/Shared/Docs")
		// Only the folder's items: alice's private.txt would list as a
		// "refused" line (sealed under her own keys), not by name.
		if !regexp.MustCompile(`(?m) dir +- +/Shared/Docs/sub$`).MatchString(out) || strings.Contains(out, "private") ||
			strings.Contains(out, "refused") {
			t.Fatalf("%s's kumo trash /Shared/Docs:\n%s", who, out)
		}
	}
	carol.fails("reader", "trash", "restore", "/Shared/Docs/sub")
	if out := bob.ok("trash", "restore", "/Shared/Docs/sub"); !strings.Contains(out, "restored /Shared/Docs/sub") {
		t.Fatalf("bob's trash restore: %s", out)
	}
	bob.fails("not in the shared folder", "restore", "/Shared/Docs/big.bin", "--at", at, "--to", "/mine.bin")
	// The other way round too: bob's own file is not restored into a real
	// /Shared/Docs of his own tree (which his mount would hide).
	bob.fails("not in the shared folder", "restore", "/mine.txt", "--at", at, "--to", "/Shared/Docs/mine.txt")
	if out := bob.ok("ls", "/"); strings.Contains(out, "Shared") {
		t.Fatalf("bob's own tree after the refused restore:\n%s", out)
	}
	// A folder nobody shared with alice: an error, not her own trash.
	alice.fails("no folder of that name is shared with you", "trash", "/Shared/Docs")
	bob.fails("no folder of that name is shared with you", "trash", "/Shared/Nope")
	if out := bob.ok("restore", "/Shared/Docs/big.bin", "--at", at, "--force"); !strings.Contains(out, "1 updated") {
		t.Fatalf("bob's restore: %s", out)
	}
	dst := t.TempDir()
	for name, want := range map[string][]byte{"big.bin": big, "sub/c.txt": []byte("sea\n")} {
		local := filepath.Join(dst, strings.ReplaceAll(name, "/", "_"))
		bob.ok("share", "get", "alice@example.com/Docs/"+name, local+".bob")
		alice.ok("get", "/Docs/"+name, local+".alice")
		for _, who := range []string{".bob", ".alice"} {
			if got, err := os.ReadFile(local + who); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s%s after the restores: %d bytes, %v", name, who, len(got), err)
			}
		}
	}
}
