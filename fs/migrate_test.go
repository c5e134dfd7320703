package fs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kumo/remote/api"
	"kumo/remote/pathops"
	"kumo/remote/server"
	"kumo/remote/session"
)

// v1Cloud serves the committed v1 account (internal/e2e/testdata) and logs in.
func v1Cloud(t *testing.T) *cloud {
	t.Helper()
	root := t.TempDir()
	out, err := exec.Command("tar", "-xzf", filepath.Join("..", "internal", "e2e", "testdata", "v1-account.tar.gz"), "-C", root).CombinedOutput()
	if err != nil {
		t.Fatalf("untar the v1 account: %v\n%s", err, out)
	}
	dir := filepath.Join(root, "cloud")
	c := serveCloud(t, server.Config{DataDir: dir, DefaultQuota: 1 << 40})
	pw, err := os.ReadFile(filepath.Join(dir, "local-password"))
	if err != nil {
		t.Fatal(err)
	}
	c.sess, err = session.Login(context.Background(), c.client(t), c.url, "local@kumo.localhost", []byte(strings.TrimSpace(string(pw))))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A drive mounted on a v1 account while it is migrated follows along: the
// re-sealed names and records arrive through the change feed, every file
// still reads, and once the root is marked the drive refuses v1 records.
func TestMigrateWhileMounted(t *testing.T) {
	needFUSE(t)
	c := v1Cloud(t)
	m := c.mount(t, t.TempDir(), nil)
	if b, err := os.ReadFile(m.p("docs/notes.txt")); err != nil || string(b) != "notes\n" {
		t.Fatalf("before migrate: %q, %v", b, err)
	}
	if m.d.sealer.RequiresV2() {
		t.Fatal("a v1 account is strict before migration")
	}
	ctx := context.Background()
	st, err := pathops.New(c.client(t), c.sess.Subkeys()).Migrate(ctx, nil)
	if err != nil {
		t.Fatalf("migrate: %v (%+v)", err, st)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !m.d.sealer.RequiresV2() {
		if time.Now().After(deadline) {
			t.Fatal("the drive did not take the all-v2 mark from the feed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the rest of the batch of changes
	for _, name := range []string{"hello.txt", "empty", "sparse.bin", "docs/notes.txt", "docs/hardlink.txt", "docs/secret.txt", "docs/link", "docs/deep/big.bin"} {
		if _, err := os.Lstat(m.p(name)); err != nil {
			t.Fatalf("%s after migrate: %v", name, err)
		}
	}
	if b, err := os.ReadFile(m.p("docs/notes.txt")); err != nil || string(b) != "notes\n" {
		t.Fatalf("after migrate: %q, %v", b, err)
	}
	if ents, err := os.ReadDir(m.p("docs")); err != nil || len(ents) != 5 {
		t.Fatalf("docs after migrate: %d entries, %v", len(ents), err)
	}
	if r := m.d.Integrity(); r.AuthFailures+r.Rollbacks != 0 {
		t.Fatalf("the migration looked like an attack to the drive: %+v", r)
	}
	// A write after the migration is v2 like every other record.
	if err := os.WriteFile(m.p("after.txt"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.flush()
	e, err := c.client(t).List(ctx, api.RootID)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range e {
		if x.Name[0] != 2 || x.Node.Attrs[0] != 2 {
			t.Fatalf("a v1 record in the root after migrate: %x %x", x.Name[:1], x.Node.Attrs[:1])
		}
	}
}
