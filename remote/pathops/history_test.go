package pathops_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/server"
	"kumo/remote/session"
)

// histAccount is an account on an in-process server that keeps a day of history.
type histAccount struct {
	f      *pathops.FS
	c      *client.Client
	sealer *meta.Sealer
}

func startHistory(t *testing.T) *histAccount {
	t.Helper()
	srv, err := server.New(server.Config{
		DataDir:        t.TempDir(),
		DefaultQuota:   1 << 30,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		LoginLimit:     1000,
		HistoryDefault: 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	c, err := client.New(client.Options{BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.Signup(tctx(t), c, hs.URL, "hist@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	return &histAccount{f: pathops.New(c, s.Subkeys()), c: c, sealer: meta.NewSealer(s.Subkeys())}
}

// putTree writes files local files named by rel path and uploads the tree
// to remote; it returns the sha256 of each file by remote path.
func putTree(t *testing.T, a *histAccount, remote string, files map[string][]byte) map[string][32]byte {
	t.Helper()
	dir := t.TempDir()
	sums := map[string][32]byte{}
	for rel, b := range files {
		writeFile(t, filepath.Join(dir, rel), b)
		sums[path.Join(remote, rel)] = sha256.Sum256(b)
	}
	if _, err := a.f.MkdirAll(tctx(t), path.Dir(remote)); err != nil {
		t.Fatal(err)
	}
	if err := a.f.PutTree(tctx(t), dir, remote, nil, nil); err != nil {
		t.Fatal(err)
	}
	return sums
}

// remoteSums walks the remote tree below p: sha256 of every file by path.
func remoteSums(t *testing.T, a *histAccount, p string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	local := t.TempDir()
	var walk func(p string)
	walk = func(p string) {
		nodes, err := a.f.List(tctx(t), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.IsDir() {
				walk(n.Path)
				continue
			}
			lp := filepath.Join(local, "f")
			if err := a.f.GetFile(tctx(t), n.Path, lp, nil); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(lp)
			if err != nil {
				t.Fatal(err)
			}
			out[n.Path] = sha256.Sum256(b)
		}
	}
	walk(p)
	return out
}

// rename moves the entry at p to the name newName in the same directory.
func (a *histAccount) rename(t *testing.T, p, newName string) {
	t.Helper()
	n, err := a.f.Resolve(tctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	err = a.c.Rename(tctx(t), api.RenameRequest{
		SrcParent: n.Parent, SrcNameMAC: n.NameMAC,
		DstParent: n.Parent, DstNameMAC: a.sealer.NameMAC(n.Parent, []byte(newName)),
		Name: a.sealer.SealName(n.Parent, n.ID(), meta.KindOf(n.IsDir()), []byte(newName)),
		Mode: api.RenameNoReplace, Node: n.ID(),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rmrf removes p and everything below it like rm -rf: entries before their
// directory, in batches.
func (a *histAccount) rmrf(t *testing.T, p string) {
	t.Helper()
	var ops []api.BatchOp
	var walk func(n *pathops.Node)
	walk = func(n *pathops.Node) {
		if n.IsDir() {
			kids, err := a.f.ListNode(tctx(t), n)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range kids {
				walk(k)
			}
		}
		ops = append(ops, api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: n.Parent, NameMAC: n.NameMAC, Dir: n.IsDir()}})
	}
	n, err := a.f.Resolve(tctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	walk(n)
	a.batch(t, "rm -rf", ops)
}

// TestRestoreRansomware: every file of a tree overwritten with random bytes
// and renamed to NAME.locked; a forced restore to the moment before brings
// every byte back, leaves no .locked file, uploads nothing, and running it
// again changes nothing.
func TestRestoreRansomware(t *testing.T) {
	a := startHistory(t)
	files := map[string][]byte{}
	for i := range 200 {
		files[fmt.Sprintf("d%d/sub%d/f%03d.txt", i%5, i%3, i)] = randBytes(t, 100+i*37)
	}
	files["big.bin"] = randBytes(t, 5<<20+3)
	want := putTree(t, a, "/tree", files)
	before := time.Now().UnixNano()

	// The attack: overwrite with random bytes, rename to NAME.locked.
	evil := t.TempDir()
	for p := range want {
		lp := filepath.Join(evil, "x")
		writeFile(t, lp, randBytes(t, 999))
		if _, err := a.f.PutFile(tctx(t), lp, p, nil); err != nil {
			t.Fatal(err)
		}
		a.rename(t, p, path.Base(p)+".locked")
	}
	if got := remoteSums(t, a, "/tree"); len(got) != len(want) {
		t.Fatalf("after the attack: %d files, want %d", len(got), len(want))
	} else if _, ok := got["/tree/big.bin"]; ok {
		t.Fatal("the attack did not rename")
	}
	acct, err := a.f.Account(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	usedBefore := acct.QuotaUsed

	var calls int
	var last pathops.RestoreStats
	start := time.Now()
	st, err := a.f.Restore(tctx(t), "/tree", before, "", true, func(s pathops.RestoreStats) { calls++; last = s })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore of %d entries (%d bytes) took %v: %+v", st.Entries, st.Bytes, time.Since(start), st)
	if st.Entries != len(want)+1+5+15 || st.Done != st.Entries || st.DoneBytes != st.Bytes || st.Removed != len(want) || st.Created != len(want) {
		t.Fatalf("stats %+v", st)
	}
	if calls == 0 || last != st {
		t.Fatalf("progress: %d calls, last %+v", calls, last)
	}
	got := remoteSums(t, a, "/tree")
	if len(got) != len(want) {
		t.Fatalf("restored %d files, want %d", len(got), len(want))
	}
	for p, sum := range want {
		if got[p] != sum {
			t.Fatalf("%s: checksum differs after restore", p)
		}
	}
	for p := range got {
		if strings.HasSuffix(p, ".locked") {
			t.Fatalf("%s left after restore", p)
		}
	}
	// Modes and times are the snapshot's.
	old, err := a.f.ResolveAt(tctx(t), "/tree/d1/sub1/f001.txt", before)
	if err != nil {
		t.Fatal(err)
	}
	now, err := a.f.Resolve(tctx(t), "/tree/d1/sub1/f001.txt")
	if err != nil {
		t.Fatal(err)
	}
	if now.Attrs.Mode != old.Attrs.Mode || now.Attrs.Mtime != old.Attrs.Mtime || now.ID() == old.ID() {
		t.Fatalf("restored attrs %+v (node %d), at the moment %+v (node %d)", now.Attrs, now.ID(), old.Attrs, old.ID())
	}
	// No chunk was uploaded again: the restored files reference the kept
	// chunks, which now count as live data (not more than before the restore).
	acct, err = a.f.Account(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if acct.QuotaUsed > usedBefore+1<<20 {
		t.Fatalf("quota used went from %d to %d: chunks stored again?", usedBefore, acct.QuotaUsed)
	}

	// Again: nothing to do (an interrupted restore resumes this way).
	st, err = a.f.Restore(tctx(t), "/tree", before, "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Created != 0 || st.Updated != 0 || st.Removed != 0 || st.Skipped != st.Entries {
		t.Fatalf("second restore changed things: %+v", st)
	}
}

// TestRestoreKeepsNewer: without force a file changed since the moment stays
// and the old content comes back as a conflict copy; a deleted file comes
// back under its name; running it again creates nothing.
func TestRestoreKeepsNewer(t *testing.T) {
	a := startHistory(t)
	v1, gone := randBytes(t, 3000), randBytes(t, 500)
	putTree(t, a, "/docs", map[string][]byte{"a.txt": v1, "gone.txt": gone, "same.txt": []byte("same")})
	before := time.Now().UnixNano()
	v2 := randBytes(t, 4000)
	lp := filepath.Join(t.TempDir(), "v2")
	writeFile(t, lp, v2)
	if _, err := a.f.PutFile(tctx(t), lp, "/docs/a.txt", nil); err != nil {
		t.Fatal(err)
	}
	a.rmrf(t, "/docs/gone.txt")

	st, err := a.f.Restore(tctx(t), "/docs", before, "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Conflicts != 1 || st.Created != 2 || st.Updated != 0 || st.Removed != 0 {
		t.Fatalf("stats %+v", st)
	}
	got := remoteSums(t, a, "/docs")
	if got["/docs/a.txt"] != sha256.Sum256(v2) || got["/docs/gone.txt"] != sha256.Sum256(gone) || len(got) != 4 {
		t.Fatalf("after restore: %v", got)
	}
	var copies int
	for p, sum := range got {
		if meta.IsConflictOf(path.Base(p), "a.txt") {
			copies++
			if sum != sha256.Sum256(v1) {
				t.Fatalf("%s does not hold the old content", p)
			}
		}
	}
	if copies != 1 {
		t.Fatalf("%d conflict copies: %v", copies, got)
	}
	st, err = a.f.Restore(tctx(t), "/docs", before, "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Created != 0 || st.Updated != 0 || st.Skipped != st.Entries {
		t.Fatalf("second restore: %+v", st)
	}

	// To another place: a fresh copy of the tree at the moment.
	if _, err := a.f.Restore(tctx(t), "/docs", before, "/copy/of/docs", false, nil); err != nil {
		t.Fatal(err)
	}
	got = remoteSums(t, a, "/copy/of/docs")
	if len(got) != 3 || got["/copy/of/docs/a.txt"] != sha256.Sum256(v1) {
		t.Fatalf("restore --to: %v", got)
	}

	// The whole account, forced: exactly the tree at the moment.
	st, err = a.f.Restore(tctx(t), "/", before, "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	got = remoteSums(t, a, "/")
	if len(got) != 3 || got["/docs/a.txt"] != sha256.Sum256(v1) || got["/docs/gone.txt"] != sha256.Sum256(gone) {
		t.Fatalf("restore of /: %+v\n%v", st, got)
	}
	if _, err := a.f.Resolve(tctx(t), "/copy"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("/copy after restoring / to before it existed: %v", err)
	}
}

// TestTrashRestoreRmRf: rm -rf of a 1,000-file tree, then the trash lists
// only the tree's top directory, and restoring it brings back every file.
func TestTrashRestoreRmRf(t *testing.T) {
	a := startHistory(t)
	files := map[string][]byte{}
	for i := range 1000 {
		files[fmt.Sprintf("p%d/q%d/f%04d", i%4, i%7, i)] = randBytes(t, 50+i%300)
	}
	want := putTree(t, a, "/work/project", files)
	putTree(t, a, "/work/keep", map[string][]byte{"k": []byte("keep")})
	a.rmrf(t, "/work/project")
	a.rmrf(t, "/work/keep/k")

	items, err := a.f.Trash(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, it := range items {
		paths = append(paths, it.Node.Path)
	}
	if len(items) != 2 || paths[0] != "/work/project" || paths[1] != "/work/keep/k" || !items[0].Node.IsDir() || items[1].Node.Size() != 4 {
		t.Fatalf("trash: %v", paths)
	}

	start := time.Now()
	p, st, err := a.f.TrashRestore(tctx(t), "/work/project", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trash restore of %d entries took %v", st.Entries, time.Since(start))
	if p != "/work/project" || st.Created != st.Entries {
		t.Fatalf("restored to %s: %+v", p, st)
	}
	got := remoteSums(t, a, "/work/project")
	if len(got) != len(want) {
		t.Fatalf("restored %d files, want %d", len(got), len(want))
	}
	for p, sum := range want {
		if got[p] != sum {
			t.Fatalf("%s differs after trash restore", p)
		}
	}
	if _, _, err := a.f.TrashRestore(tctx(t), "/work/keep/k", nil); err != nil {
		t.Fatal(err)
	}
	if got := remoteSums(t, a, "/work/keep"); got["/work/keep/k"] != sha256.Sum256([]byte("keep")) {
		t.Fatalf("file trash restore: %v", got)
	}
	if _, _, err := a.f.TrashRestore(tctx(t), "/work/never", nil); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "kumo trash") {
		t.Fatalf("restore of something never deleted: %v", err)
	}
}

// TestVersionsEachReadable: a file updated 20 times; every version is
// listed and reads back at its time.
func TestVersionsEachReadable(t *testing.T) {
	a := startHistory(t)
	dir := t.TempDir()
	var contents [][]byte
	var times []int64
	for i := range 20 {
		b := randBytes(t, 1000+i)
		lp := filepath.Join(dir, "v")
		writeFile(t, lp, b)
		if _, err := a.f.PutFile(tctx(t), lp, "/f.txt", nil); err != nil {
			t.Fatal(err)
		}
		contents = append(contents, b)
		times = append(times, time.Now().UnixNano())
	}
	vs, err := a.f.Versions(tctx(t), "/f.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 20 || vs[0].Until != 0 {
		t.Fatalf("%d versions, newest until %d", len(vs), vs[0].Until)
	}
	for i, v := range vs {
		k := 19 - i
		if v.Node.Size() != int64(len(contents[k])) || v.Since > times[k] || k > 0 && v.Since <= times[k-1] {
			t.Fatalf("version %d: size %d since %d", i, v.Node.Size(), v.Since)
		}
	}
	for i, at := range times {
		lp := filepath.Join(dir, "out")
		if err := a.f.GetAt(tctx(t), "/f.txt", at, lp, nil); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(lp); sha256.Sum256(b) != sha256.Sum256(contents[i]) {
			t.Fatalf("version %d read back differs", i)
		}
	}
	// Purge of the path frees its old versions; the current one stays.
	r, err := a.f.PurgePath(tctx(t), "/f.txt")
	if err != nil || r.Versions < 19 {
		t.Fatalf("purge: %+v %v", r, err)
	}
	if vs, err := a.f.Versions(tctx(t), "/f.txt"); err != nil || len(vs) != 1 {
		t.Fatalf("after purge: %d versions, %v", len(vs), err)
	}
}

// TestRestoreBeforeWindow: a moment older than the history says how far
// back it goes, and changes nothing.
func TestRestoreBeforeWindow(t *testing.T) {
	a := startHistory(t)
	putTree(t, a, "/d", map[string][]byte{"x": []byte("x")})
	at := time.Now().Add(-48 * time.Hour).UnixNano()
	_, err := a.f.Restore(tctx(t), "/d", at, "", true, nil)
	if !errors.Is(err, api.ErrHistoryGone) || !strings.Contains(err.Error(), "it goes back to") || !strings.Contains(err.Error(), "kept 1d") {
		t.Fatalf("restore before the window: %v", err)
	}
	if got := remoteSums(t, a, "/d"); len(got) != 1 {
		t.Fatalf("tree changed: %v", got)
	}
	if _, err := a.f.SetRetention(tctx(t), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.f.ResolveAt(tctx(t), "/d", time.Now().Add(-time.Minute).UnixNano()); !errors.Is(err, api.ErrHistoryGone) || !strings.Contains(err.Error(), "keeps no history") {
		t.Fatalf("with history off: %v", err)
	}
}

// TestRestoreBigTreeFast: a forced restore of 5,000 files after they were
// all removed takes seconds (batched), not minutes.
func TestRestoreBigTreeFast(t *testing.T) {
	a := startHistory(t)
	// 20 distinct contents; 5,000 files in 50 directories name them.
	contents := map[string][]byte{}
	for i := range 20 {
		contents[fmt.Sprintf("c%d", i)] = randBytes(t, 1000+i)
	}
	putTree(t, a, "/src", contents)
	srcs, err := a.f.List(tctx(t), "/src")
	if err != nil {
		t.Fatal(err)
	}
	root, err := a.f.MkdirAll(tctx(t), "/big")
	if err != nil {
		t.Fatal(err)
	}
	var ops []api.BatchOp
	newNode := func(parent uint64, name string, attrs *meta.Attrs, typ string) uint64 {
		id, err := pathops.NewNodeID()
		if err != nil {
			t.Fatal(err)
		}
		var chunks []string
		for _, c := range attrs.Chunks {
			chunks = append(chunks, c.ID.String())
		}
		ops = append(ops, api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{
			Parent: parent, NameMAC: a.sealer.NameMAC(parent, []byte(name)),
			Name: a.sealer.SealName(parent, id, meta.KindOf(typ == api.TypeDir), []byte(name)),
			ID:   id, Type: typ, Attrs: a.sealer.SealAttrs(id, meta.NextRev(0), attrs), Chunks: chunks,
		}})
		return id
	}
	want := map[string][32]byte{}
	wantNode := map[string]*pathops.Node{}
	for d := range 50 {
		dir := newNode(root.ID(), fmt.Sprintf("d%02d", d), root.Attrs, api.TypeDir)
		for i := range 100 {
			s := srcs[(d+i)%len(srcs)]
			name := fmt.Sprintf("f%03d", i)
			newNode(dir, name, s.Attrs, api.TypeFile)
			want[fmt.Sprintf("/big/d%02d/%s", d, name)] = sha256.Sum256(contents[s.Name])
			wantNode[fmt.Sprintf("/big/d%02d/%s", d, name)] = s
		}
	}
	a.batch(t, "create", ops)
	before := time.Now().UnixNano()
	a.rmrf(t, "/big")
	if _, err := a.f.MkdirAll(tctx(t), "/big"); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	st, err := a.f.Restore(tctx(t), "/big", before, "", true, nil)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("forced restore of %d entries took %v: %+v", st.Entries, took, st)
	if st.Created != 5050 || st.Done != st.Entries {
		t.Fatalf("stats %+v", st)
	}
	if took > 30*time.Second {
		t.Fatalf("restore of 5,000 files took %v", took)
	}
	start = time.Now()
	if st, err = a.f.Restore(tctx(t), "/big", before, "", true, nil); err != nil || st.Skipped != st.Entries {
		t.Fatalf("again: %+v %v", st, err)
	}
	t.Logf("restore again (nothing to do) took %v", time.Since(start))
	// Every file names its content's chunks (ids are keyed hashes of the
	// content); one directory is read back byte by byte.
	n := 0
	for d := range 50 {
		kids, err := a.f.List(tctx(t), fmt.Sprintf("/big/d%02d", d))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kids {
			w := wantNode[k.Path]
			if w == nil || k.Size() != w.Size() || !slices.Equal(k.Attrs.Chunks, w.Attrs.Chunks) {
				t.Fatalf("%s: not as at the moment", k.Path)
			}
			n++
		}
	}
	if n != len(want) {
		t.Fatalf("%d files, want %d", n, len(want))
	}
	for p, sum := range remoteSums(t, a, "/big/d07") {
		if want[p] != sum {
			t.Fatalf("%s differs", p)
		}
	}
}

// TestRestoreDirOverFile: a directory whose name is now a file comes back
// as a conflict copy, once: running the restore again finds that copy.
func TestRestoreDirOverFile(t *testing.T) {
	a := startHistory(t)
	putTree(t, a, "/d", map[string][]byte{"x/y.txt": []byte("why")})
	before := time.Now().UnixNano()
	a.rmrf(t, "/d/x")
	lp := filepath.Join(t.TempDir(), "x")
	writeFile(t, lp, []byte("a file now"))
	if _, err := a.f.PutFile(tctx(t), lp, "/d/x", nil); err != nil {
		t.Fatal(err)
	}
	for run := range 2 {
		st, err := a.f.Restore(tctx(t), "/d", before, "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if run == 0 && (st.Created != 2 || st.Conflicts != 1) || run == 1 && (st.Created != 0 || st.Skipped != st.Entries) {
			t.Fatalf("run %d: %+v", run, st)
		}
	}
	got := remoteSums(t, a, "/d")
	if len(got) != 2 || got["/d/x"] != sha256.Sum256([]byte("a file now")) {
		t.Fatalf("after restore: %v", got)
	}
	for p, sum := range got {
		if p != "/d/x" && (!meta.IsConflictOf(path.Base(path.Dir(p)), "x") || sum != sha256.Sum256([]byte("why"))) {
			t.Fatalf("unexpected %s", p)
		}
	}
}

// batch sends ops in batches of the most one request takes; any refused op
// (what it was for, its index) fails the test.
func (a *histAccount) batch(t *testing.T, what string, ops []api.BatchOp) {
	t.Helper()
	for len(ops) > 0 {
		k := min(len(ops), api.MaxBatchOps)
		resp, err := a.c.Batch(tctx(t), api.BatchRequest{Ops: ops[:k]})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range resp.Results {
			if r.Error != nil {
				t.Fatalf("%s op %d: %v", what, i, r.Error)
			}
		}
		ops = ops[k:]
	}
}
