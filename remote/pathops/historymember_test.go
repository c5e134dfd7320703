package pathops_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/pathops"
)

// memberView returns s's view of its joined or owned share which.
func memberView(t *testing.T, s *sharer, which string) *pathops.FS {
	t.Helper()
	f, shs := s.load(t)
	sh, err := shs.Find(which)
	if err != nil {
		t.Fatal(err)
	}
	v, err := f.View(sh)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// rmInView removes the entry at p of a view through the share's scope,
// as a member's rm does (the directory's entries first for a directory).
func rmInView(t *testing.T, s *sharer, v *pathops.FS, p string) {
	t.Helper()
	n, err := v.Resolve(tctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if n.IsDir() {
		kids, err := v.ListNode(tctx(t), n)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kids {
			rmInView(t, s, v, k.Path)
		}
	}
	c := s.c.ForShare(v.Scope().OwnerID, v.Scope().ID)
	if err := c.Unlink(tctx(t), api.UnlinkRequest{Parent: n.Parent, NameMAC: n.NameMAC, Dir: n.IsDir()}); err != nil {
		t.Fatalf("rm %s: %v", p, err)
	}
}

// TestShareMemberHistory: a writer member of alice's folder deletes a
// folder of it (rm -rf) and overwrites a file, and gets both back from
// the folder's history through its own account: trash, trash restore,
// versions and restore at a moment, byte for byte, the records verified
// against the roster. The reader lists the same history but cannot
// restore. Fails on the old code: the cloud refused history reads with
// the share header.
func TestShareMemberHistory(t *testing.T) {
	e := startServer(t)
	fx := newRevokeFixture(t, e.url, e.url)
	if _, err := fx.alice.home.SetRetention(tctx(t), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	bv := memberView(t, fx.bob, "alice@example.com/Docs")
	if bv.Scope().Role != keys.RoleWriter {
		t.Fatalf("bob's role %v", bv.Scope().Role)
	}
	// The owner's own file outside the folder: never in the member's history.
	if err := putBytes(t, fx.alice.home, "/private.txt", []byte("alice only\n")); err != nil {
		t.Fatal(err)
	}
	old := []byte("alice's a\n")
	time.Sleep(20 * time.Millisecond)
	at := time.Now().UnixNano()
	time.Sleep(20 * time.Millisecond)
	if err := putBytes(t, bv, "/a.txt", []byte("bob overwrote it\n")); err != nil {
		t.Fatal(err)
	}
	rmInView(t, fx.bob, bv, "/sub")
	if _, err := bv.Resolve(tctx(t), "/sub/b.txt"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("/sub after rm -rf: %v", err)
	}

	// Versions of a.txt: bob's and alice's, newest first.
	vs, err := bv.Versions(tctx(t), "/a.txt")
	if err != nil || len(vs) < 2 {
		t.Fatalf("bob's versions of a.txt: %d, %v", len(vs), err)
	}
	// The trash: /sub and what was in it come back with it.
	items, err := bv.Trash(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, it := range items {
		if it.Refused != nil {
			t.Fatalf("trash item refused: %v", it.Refused)
		}
		paths = append(paths, it.Node.Path)
	}
	if fmt.Sprint(paths) != "[/sub]" {
		t.Fatalf("bob's trash: %v, want [/sub]", paths)
	}
	// The reader sees the same history and cannot restore.
	cv := memberView(t, fx.carol, "alice@example.com/Docs")
	if items, err := cv.Trash(tctx(t)); err != nil || len(items) != 1 {
		t.Fatalf("carol's trash: %d, %v", len(items), err)
	}
	if got, err := getAt(t, cv, "/a.txt", at); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("carol reads a.txt at the moment: %q, %v", got, err)
	}
	if _, _, err := cv.TrashRestore(tctx(t), "/sub", nil); err == nil {
		t.Fatal("the reader restored /sub")
	}
	if _, err := cv.Resolve(tctx(t), "/sub"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("/sub after the reader's refused restore: %v", err)
	}

	// The writer brings both back.
	if p, _, err := bv.TrashRestore(tctx(t), "/sub", nil); err != nil || p != "/sub" {
		t.Fatalf("bob's trash restore of /sub: %q, %v", p, err)
	}
	if _, err := bv.Restore(tctx(t), "/a.txt", at, "", true, nil); err != nil {
		t.Fatalf("bob's restore of a.txt: %v", err)
	}
	// Byte for byte, for every member and the owner.
	for who, v := range map[string]*pathops.FS{"bob": bv, "carol": cv, "alice": fx.alice.view(t)} {
		fx.readsAll(t, who, v)
	}
	// Nothing of the owner's own tree: the owner's private file is in no
	// member's trash even after alice deletes it.
	n, err := fx.alice.home.Resolve(tctx(t), "/private.txt")
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.alice.c.Unlink(tctx(t), api.UnlinkRequest{Parent: n.Parent, NameMAC: n.NameMAC}); err != nil {
		t.Fatal(err)
	}
	items, err = bv.Trash(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Node == nil || strings.Contains(it.Node.Path, "private") || it.Node.ID() == n.ID() {
			t.Fatalf("bob's trash holds %+v", it)
		}
	}
	// Asked directly, the cloud does not answer bob's share with the
	// owner's root at that moment, nor with the private file's versions.
	sc := fx.bob.c.ForShare(bv.Scope().OwnerID, bv.Scope().ID)
	if _, err := sc.NodeAt(tctx(t), api.RootID, at); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("the owner's root at a moment through bob's share: %v", err)
	}
	if _, err := sc.Versions(tctx(t), n.ID()); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("the owner's private file's versions through bob's share: %v", err)
	}
}

// TestShareMemberHistoryOtherShare: bob is a member of two of alice's
// folders; a hostile server answers the versions of a file of the first
// with the versions of a file of the second (records bob can open and
// alice signed). The first folder's view refuses them: a view opens its own
// share's records only, and versions of the node asked for.
func TestShareMemberHistoryOtherShare(t *testing.T) {
	e := startServer(t)
	p := hostile.Start(t, e.url)
	fx := newRevokeFixture(t, e.url, p.URL)
	if _, err := fx.alice.home.SetRetention(tctx(t), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := putBytes(t, fx.alice.home, "/Other/o.txt", []byte("other folder\n")); err != nil {
		t.Fatal(err)
	}
	af, _ := fx.alice.load(t)
	if _, err := af.ShareFolder(tctx(t), fx.alice.acct, "/Other", "bob@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	fx.bob.accept(t, "alice@example.com/Other")
	docs := memberView(t, fx.bob, "alice@example.com/Docs")
	other := memberView(t, fx.bob, "alice@example.com/Other")
	if err := putBytes(t, other, "/o.txt", []byte("other folder, second\n")); err != nil {
		t.Fatal(err)
	}
	a, err := docs.Resolve(tctx(t), "/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	o, err := other.Resolve(tctx(t), "/o.txt")
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := other.Versions(tctx(t), "/o.txt"); err != nil || len(vs) != 2 {
		t.Fatalf("honest versions of o.txt in its own folder: %d, %v", len(vs), err)
	}
	otherScope := api.FormatShareScope(other.Scope().OwnerID, other.Scope().ID)
	p.On("GET", fmt.Sprintf("/v1/history/versions/%d", a.ID()), func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		r := *req
		r.Header = req.Header.Clone()
		r.Header.Set(api.ShareHeader, otherScope)
		r.Path = fmt.Sprintf("/v1/history/versions/%d", o.ID())
		return next(&r)
	})
	vs, err := docs.Versions(tctx(t), "/a.txt")
	if err == nil || !(errors.Is(err, pathops.ErrShare) || errors.Is(err, pathops.ErrMismatch)) {
		t.Fatalf("versions of a.txt answered with another folder's file: %d versions, %v; want ErrShare/ErrMismatch", len(vs), err)
	}
	// The same under a.txt's node id: the node check passes, and the view's
	// scope check refuses Other's records (before their signature, which
	// binds o.txt's id, is checked).
	p.Honest()
	p.On("GET", fmt.Sprintf("/v1/history/versions/%d", a.ID()), func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		r := *req
		r.Header = req.Header.Clone()
		r.Header.Set(api.ShareHeader, otherScope)
		r.Path = fmt.Sprintf("/v1/history/versions/%d", o.ID())
		return hostile.EditJSON(func(vr *api.VersionsResponse) {
			for i := range vr.Versions {
				vr.Versions[i].Node.ID = a.ID()
			}
		})(&r, next)
	})
	vs, err = docs.Versions(tctx(t), "/a.txt")
	if !errors.Is(err, pathops.ErrShare) || !strings.Contains(err.Error(), "is sealed for share") {
		t.Fatalf("versions of a.txt answered with another folder's file under a.txt's id: %d versions, %v; want the view's scope refusal", len(vs), err)
	}
}
