package pathops_test

import (
	"bytes"
	"errors"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/pathops"
)

// shareHistoryFixture is newRevokeFixture with a day of history kept: at
// moment `at`, /a.txt holds alice's second version and /bob.txt bob's;
// both were written over afterwards, then bob (a writer) was removed and
// the folder re-sealed under generation 2 with generation 1 refused.
type shareHistoryFixture struct {
	*revokeFixture
	p                 *hostile.Proxy // every account's way to the cloud, honest unless a test says otherwise
	at                int64
	aliceOld, bobOld  []byte
	aliceLive, bobNew []byte
}

func newShareHistoryFixture(t *testing.T) *shareHistoryFixture {
	t.Helper()
	p := hostile.Start(t, startServer(t).url)
	fx := &shareHistoryFixture{revokeFixture: newRevokeFixture(t, p.URL, p.URL), p: p}
	if _, err := fx.alice.home.SetRetention(tctx(t), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	fx.aliceOld, fx.bobOld = randBytes(t, 300<<10), []byte("bob's second version\n")
	fx.aliceLive, fx.bobNew = []byte("alice's third version\n"), []byte("bob's third version\n")
	av, bv := fx.alice.view(t), fx.bob.view(t)
	if err := putBytes(t, av, "/a.txt", fx.aliceOld); err != nil {
		t.Fatal(err)
	}
	if err := putBytes(t, bv, "/bob.txt", fx.bobOld); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	fx.at = time.Now().UnixNano()
	time.Sleep(20 * time.Millisecond)
	if err := putBytes(t, av, "/a.txt", fx.aliceLive); err != nil {
		t.Fatal(err)
	}
	if err := putBytes(t, bv, "/bob.txt", fx.bobNew); err != nil {
		t.Fatal(err)
	}
	af, _ := fx.alice.load(t)
	sh, err := af.RemoveMember(tctx(t), fx.alice.acct, "/Docs", "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if sh.Roster.MinGen != 2 {
		t.Fatalf("after removing a writer: lowest accepted generation %d, want 2", sh.Roster.MinGen)
	}
	return fx
}

// TestShareHistoryAfterWriterRemoved: after a writer's removal and the
// re-seal, the owner's kept versions from before it (generation 1, signed
// by the owner) open in history reads, by path and as versions; the
// removed writer's are refused, saying it was removed. The live tree still
// refuses generation 1.
func TestShareHistoryAfterWriterRemoved(t *testing.T) {
	fx := newShareHistoryFixture(t)
	af, _ := fx.alice.load(t)
	got, err := getAt(t, af, "/Docs/a.txt", fx.at)
	if err != nil || !bytes.Equal(got, fx.aliceOld) {
		t.Fatalf("owner's version from before the re-seal: %d bytes, %v", len(got), err)
	}
	_, err = getAt(t, af, "/Docs/bob.txt", fx.at)
	if !errors.Is(err, pathops.ErrShare) || !errors.Is(err, keys.ErrRecordSig) || !strings.Contains(err.Error(), "since removed") {
		t.Fatalf("removed writer's version from before the re-seal: %v, want ErrShare saying it was written by a member since removed", err)
	}
	vs, err := af.Versions(tctx(t), "/Docs/a.txt")
	if err != nil {
		t.Fatalf("versions of the owner's file: %v", err)
	}
	if len(vs) < 3 {
		t.Fatalf("versions of the owner's file: %d, want at least 3", len(vs))
	}
	if _, err := af.Versions(tctx(t), "/Docs/bob.txt"); !errors.Is(err, pathops.ErrShare) {
		t.Fatalf("versions of the removed writer's file: %v, want ErrShare", err)
	}
	// The live tree is unchanged: every record is of generation 2.
	if g := gens(t, fx.alice.c, fx.bobShare.Root); len(g) != 1 || g[2] == 0 {
		t.Fatalf("live records by generation: %v, want all 2", g)
	}
}

// TestShareHistoryPlantedByRemovedWriter: a record the removed writer makes
// now in generation 1, which a hostile server shows as a past version (at
// a moment after the removal, then deleted: in the trash), is refused by
// history reads.
func TestShareHistoryPlantedByRemovedWriter(t *testing.T) {
	fx := newShareHistoryFixture(t)
	planted := fx.bobEntry(t, "planted.txt")
	at := time.Now().UnixNano()
	root := strconv.FormatUint(planted.Parent, 10)
	fx.p.On("GET", "/v1/history/entries", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if q, _ := url.ParseQuery(req.Query); q.Get("parent") != root {
			return next(req)
		}
		return hostile.EditJSON(func(r *api.HistoryListResponse) { r.Entries = append(r.Entries, planted) })(req, next)
	})
	fx.p.On("GET", "/v1/history/trash", hostile.EditJSON(func(r *api.TrashResponse) {
		r.Items = append(r.Items, api.TrashItem{Deleted: at + 1, Parent: planted.Parent, NameMAC: planted.NameMAC, Name: planted.Name, Node: planted.Node})
	}))
	af, _ := fx.alice.load(t)
	if _, err := af.ResolveAt(tctx(t), "/Docs/planted.txt", at); !errors.Is(err, pathops.ErrShare) || !strings.Contains(err.Error(), "since removed") {
		t.Fatalf("planted generation-1 record in history: %v, want ErrShare", err)
	}
	items, err := af.Trash(tctx(t))
	if err != nil || len(items) != 1 || items[0].Node != nil || !errors.Is(items[0].Refused, pathops.ErrShare) {
		t.Fatalf("trash holding the planted record: %+v, %v; want it listed as refused", items, err)
	}
	// The owner's version of that moment still opens.
	if got, err := getAt(t, af, "/Docs/a.txt", fx.at); err != nil || !bytes.Equal(got, fx.aliceOld) {
		t.Fatalf("owner's old version: %d bytes, %v", len(got), err)
	}
}

// TestShareRestoreOldGeneration: restoring the owner's version from before
// the re-seal writes it under the current generation, signed by the owner,
// its chunks re-encrypted: every live record stays of generation 2, and the
// remaining reader reads the restored bytes.
func TestShareRestoreOldGeneration(t *testing.T) {
	fx := newShareHistoryFixture(t)
	af, _ := fx.alice.load(t)
	st, err := af.Restore(tctx(t), "/Docs/a.txt", fx.at, "", true, nil)
	if err != nil {
		t.Fatalf("restore of the owner's old version: %v", err)
	}
	if st.Updated != 1 {
		t.Fatalf("restore: %+v, want one update", st)
	}
	if g := gens(t, fx.alice.c, fx.bobShare.Root); len(g) != 1 || g[2] == 0 {
		t.Fatalf("live records by generation after the restore: %v, want all 2", g)
	}
	for who, v := range map[string]*pathops.FS{"owner": fx.alice.view(t), "reader": fx.carol.view(t)} {
		if got, err := getBytes(t, v, "/a.txt"); err != nil || !bytes.Equal(got, fx.aliceOld) {
			t.Fatalf("%s reads the restored file: %d bytes, %v", who, len(got), err)
		}
	}
	// Run again: already as at the moment (chunk ids compared under the
	// current generation's keys), nothing changes.
	if st, err := af.Restore(tctx(t), "/Docs/a.txt", fx.at, "", true, nil); err != nil || st.Skipped != 1 || st.Updated != 0 {
		t.Fatalf("second restore: %+v, %v, want skipped", st, err)
	}
	// A restore to a new name in the folder is a new record of generation 2.
	if _, err := af.Restore(tctx(t), "/Docs/a.txt", fx.at, "/Docs/a-old.txt", false, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := getBytes(t, fx.carol.view(t), "/a-old.txt"); err != nil || !bytes.Equal(got, fx.aliceOld) {
		t.Fatalf("reader reads the restored copy: %d bytes, %v", len(got), err)
	}
	if g := gens(t, fx.alice.c, fx.bobShare.Root); len(g) != 1 || g[2] == 0 {
		t.Fatalf("live records by generation after the restore to a new name: %v, want all 2", g)
	}
	// A restore of the folder as it was then meets the removed writer's
	// version: nothing is restored, and the error says what to do.
	if _, err := af.Restore(tctx(t), "/Docs", fx.at, "", true, nil); !errors.Is(err, pathops.ErrShare) || !strings.Contains(err.Error(), "one by one") {
		t.Fatalf("restore of the folder holding the removed writer's version: %v", err)
	}
	if got, err := getBytes(t, fx.carol.view(t), "/bob.txt"); err != nil || !bytes.Equal(got, fx.bobNew) {
		t.Fatalf("bob.txt after the refused restore: %q %v", got, err)
	}
	// The removed writer's version is not restored.
	if _, err := af.Restore(tctx(t), "/Docs/bob.txt", fx.at, "", true, nil); !errors.Is(err, pathops.ErrShare) {
		t.Fatalf("restore of the removed writer's version: %v, want ErrShare", err)
	}
}

// getAt downloads p as it was at at.
func getAt(t *testing.T, f *pathops.FS, p string, at int64) ([]byte, error) {
	t.Helper()
	local := t.TempDir() + "/out"
	if err := f.GetAt(tctx(t), p, at, local, nil); err != nil {
		return nil, err
	}
	return os.ReadFile(local)
}

// TestShareRestoreFolder: restoring the shared folder itself (its root is
// a home entry naming a share root) writes every restored record for the
// share, signed by the owner: a conflict copy, and with force the root's
// attributes and a file's old version. The writer member then reads the
// whole folder. (A restore sealed them as home records before, which every
// client refuses in a shared folder, the root's included.)
func TestShareRestoreFolder(t *testing.T) {
	e := startServer(t)
	fx := newRevokeFixture(t, e.url, e.url)
	if _, err := fx.alice.home.SetRetention(tctx(t), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	old := randBytes(t, 200<<10)
	av := fx.alice.view(t)
	if err := putBytes(t, av, "/a.txt", old); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	at := time.Now().UnixNano()
	time.Sleep(20 * time.Millisecond)
	if err := putBytes(t, av, "/a.txt", []byte("newer\n")); err != nil {
		t.Fatal(err)
	}
	af, _ := fx.alice.load(t)
	st, err := af.Restore(tctx(t), "/Docs", at, "", false, nil)
	if err != nil {
		t.Fatalf("restore of the shared folder: %v", err)
	}
	if st.Conflicts != 1 {
		t.Fatalf("restore: %+v, want one conflict copy", st)
	}
	if g := gens(t, fx.alice.c, fx.bobShare.Root); g[0] != 0 {
		t.Fatalf("records by generation after the restore: %v: home records (generation 0) in the shared folder", g)
	}
	bv := fx.bob.view(t)
	kids, err := bv.List(tctx(t), "/")
	if err != nil {
		t.Fatalf("the writer lists the folder after the restore: %v", err)
	}
	var copyName string
	for _, k := range kids {
		if strings.HasPrefix(k.Name, "a") && k.Name != "a.txt" {
			copyName = k.Name
		}
	}
	if got, err := getBytes(t, bv, "/"+copyName); copyName == "" || err != nil || !bytes.Equal(got, old) {
		t.Fatalf("the writer reads the conflict copy %q: %d bytes, %v", copyName, len(got), err)
	}
	af, _ = fx.alice.load(t)
	if _, err := af.Restore(tctx(t), "/Docs", at, "", true, nil); err != nil {
		t.Fatalf("forced restore of the shared folder: %v", err)
	}
	fx.want["/a.txt"] = old
	fx.readsAll(t, "writer", fx.bob.view(t))
	fx.readsAll(t, "reader", fx.carol.view(t))
}

// TestShareTrashAfterWriterRemoved: files the owner and a writer deleted
// from a shared folder before the writer's removal are in the trash; after
// the re-seal the owner's lists and restores (under generation 2, read by
// the remaining reader), and the removed writer's is listed as refused,
// saying why, without hiding the rest of the trash.
func TestShareTrashAfterWriterRemoved(t *testing.T) {
	e := startServer(t)
	fx := newRevokeFixture(t, e.url, e.url)
	if _, err := fx.alice.home.SetRetention(tctx(t), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	gone := randBytes(t, 100<<10)
	if err := putBytes(t, fx.alice.view(t), "/gone-alice.txt", gone); err != nil {
		t.Fatal(err)
	}
	if err := putBytes(t, fx.bob.view(t), "/gone-bob.txt", []byte("bob's, deleted\n")); err != nil {
		t.Fatal(err)
	}
	av := fx.alice.view(t)
	for _, p := range []string{"/gone-alice.txt", "/gone-bob.txt"} {
		n, err := av.Resolve(tctx(t), p)
		if err != nil {
			t.Fatal(err)
		}
		if err := fx.alice.c.Unlink(tctx(t), api.UnlinkRequest{Parent: n.Parent, NameMAC: n.NameMAC}); err != nil {
			t.Fatal(err)
		}
	}
	af, _ := fx.alice.load(t)
	if _, err := af.RemoveMember(tctx(t), fx.alice.acct, "/Docs", "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	af, _ = fx.alice.load(t)
	items, err := af.Trash(tctx(t))
	if err != nil {
		t.Fatalf("trash after the re-seal: %v", err)
	}
	var listed []string
	refused := 0
	for _, it := range items {
		switch {
		case it.Node != nil:
			listed = append(listed, it.Node.Path)
		case errors.Is(it.Refused, pathops.ErrShare) && strings.Contains(it.Refused.Error(), "since removed") && it.Dir == "/Docs":
			refused++
		default:
			t.Fatalf("trash item: %+v", it)
		}
	}
	if len(listed) != 1 || listed[0] != "/Docs/gone-alice.txt" || refused != 1 {
		t.Fatalf("trash lists %v and %d refused, want the owner's file and the removed writer's refused", listed, refused)
	}
	if _, _, err := af.TrashRestore(tctx(t), "/Docs/gone-alice.txt", nil); err != nil {
		t.Fatalf("trash restore of the owner's file: %v", err)
	}
	if got, err := getBytes(t, fx.carol.view(t), "/gone-alice.txt"); err != nil || !bytes.Equal(got, gone) {
		t.Fatalf("the reader reads the restored file: %d bytes, %v", len(got), err)
	}
	if g := gens(t, fx.alice.c, fx.bobShare.Root); len(g) != 1 || g[2] == 0 {
		t.Fatalf("live records by generation after the trash restore: %v, want all 2", g)
	}
}
