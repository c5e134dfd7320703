package pathops_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/server"
	"kumo/remote/session"
)

// v1Account serves the committed v1 account (made by the last v1 release)
// and logs in to it.
func v1Account(t *testing.T) (*pathops.FS, *client.Client, *session.Session, string) {
	t.Helper()
	root := t.TempDir()
	out, err := exec.Command("tar", "-xzf", filepath.Join("..", "..", "internal", "e2e", "testdata", "v1-account.tar.gz"), "-C", root).CombinedOutput()
	if err != nil {
		t.Fatalf("untar the v1 account: %v\n%s", err, out)
	}
	srv, err := server.New(server.Config{DataDir: filepath.Join(root, "cloud"), DefaultQuota: 1 << 30,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), LoginLimit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	pw, err := os.ReadFile(filepath.Join(root, "cloud", "local-password"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Options{BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Login(tctx(t), c, hs.URL, "local@kumo.localhost", []byte(strings.TrimSpace(string(pw))))
	if err != nil {
		t.Fatalf("log in to the v1 account: %v", err)
	}
	return pathops.New(c, s.Subkeys()), c, s, root
}

// Migrate turns a v1 account into an all-v2 one: every record re-sealed,
// every byte still readable, the root marked; running it again changes
// nothing, and afterwards a replayed v1 record is refused.
func TestMigrateV1Account(t *testing.T) {
	f, c, s, root := v1Account(t)
	notes, err := f.Resolve(tctx(t), "/docs/notes.txt")
	if err != nil {
		t.Fatal(err)
	}
	if notes.Node.Attrs[0] != meta.SealedV1 {
		t.Fatal("the fixture is not a v1 account")
	}
	st, err := f.Migrate(tctx(t), nil)
	if err != nil {
		t.Fatalf("migrate: %v (%+v)", err, st)
	}
	// 10 names (hello.txt, empty, sparse.bin, docs, docs/notes.txt,
	// docs/hardlink.txt, docs/secret.txt, docs/link, docs/deep,
	// docs/deep/big.bin) and 10 nodes (9, the hard link sharing one, + root).
	if st.Names != 10 || st.Nodes != 10 || st.Skipped != 0 {
		t.Fatalf("migrate re-sealed %+v, want 10 names and 10 nodes", st)
	}
	for queue := []uint64{api.RootID}; len(queue) > 0; queue = queue[1:] {
		es, err := c.List(tctx(t), queue[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Name[0] != meta.SealedV2 || e.Node.Attrs[0] != meta.SealedV2 {
				t.Fatalf("entry %s of %d still v1 after migrate", e.NameMAC, queue[0])
			}
			if e.Node.Type == api.TypeDir {
				queue = append(queue, e.Node.ID)
			}
		}
	}
	out := filepath.Join(root, "out")
	if err := f.GetTree(tctx(t), "/", out, nil); err != nil {
		t.Fatal(err)
	}
	sums, err := os.Open(filepath.Join(root, "sums.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	for sc := bufio.NewScanner(sums); sc.Scan(); {
		want, name, _ := strings.Cut(sc.Text(), "  ")
		b, err := os.ReadFile(filepath.Join(out, name))
		if h := sha256.Sum256(b); err != nil || hex.EncodeToString(h[:]) != want {
			t.Fatalf("%s after migrate: %v", name, err)
		}
	}
	again, err := f.Migrate(tctx(t), nil)
	if err != nil || again.Names != 0 || again.Nodes != 0 {
		t.Fatalf("second migrate: %+v, %v; want nothing to do", again, err)
	}
	// The server puts back notes.txt's v1 record: a client of the now all-v2
	// account (even a new one) refuses it.
	cur, err := c.GetNode(tctx(t), notes.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(tctx(t), notes.ID(), api.UpdateRequest{Version: cur.Version, Attrs: notes.Node.Attrs, Chunks: notes.Node.Chunks}); err != nil {
		t.Fatal(err)
	}
	fresh := pathops.New(c, s.Subkeys())
	if _, err := fresh.Resolve(tctx(t), "/docs/notes.txt"); !errors.Is(err, meta.ErrAuth) {
		t.Fatalf("a v1 record replayed into a migrated account: %v, want an authentication error", err)
	}
}
