package fs

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/remote/client"
	"kumo/remote/pathops"
)

// TestShareMemberOfflineStart: bob's drive showed the share he joined
// (Shared/Docs) and read its files; started again while the cloud is
// unreachable, it shows the share from what it saved (the shares of its
// last load, sealed under the cache key) and its local tree: the files
// read, the folder lists. When the cloud answers again the share is live:
// a file the owner added meanwhile arrives. With the old drive the share
// was missing (ENOENT) until the cloud answered. A saved file that does
// not authenticate is not used.
func TestShareMemberOfflineStart(t *testing.T) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	p := hostile.Start(t, c.url)
	var down atomic.Bool
	p.On("", "*", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		if down.Load() {
			return &hostile.Response{Status: http.StatusServiceUnavailable, Header: http.Header{}, Body: []byte("offline")}
		}
		return next(req)
	})
	pc, err := client.New(client.Options{BaseURL: p.URL, Token: bob.sess.Token, MaxRetries: -1, Logger: testLogger(t)})
	must(t, err)
	cacheDir := t.TempDir()
	opts := func(o *Options) {
		o.Session, o.Client, o.SharedDir, o.Identity = bob.sess, pc, "Shared", bob.acct.Identity
		o.Shares = func(ctx context.Context) ([]*pathops.Share, error) {
			sh, err := pathops.LoadShares(ctx, pc, bob.acct)
			if err != nil {
				return nil, err
			}
			return sh.All(), nil
		}
	}
	readShare := func(d *Drive) {
		t.Helper()
		md, e := d.memberByName(ctx, "Docs")
		if e != 0 {
			t.Fatalf("Shared/Docs: %v", e)
		}
		root := md.rootID()
		a, e := md.lookupFresh(root, "a.txt")
		if e != 0 {
			t.Fatalf("Shared/Docs/a.txt: %v", e)
		}
		if got := readAll(t, md, a); got != "shared a\n" {
			t.Fatalf("Shared/Docs/a.txt: %q", got)
		}
		sub, e := md.lookupFresh(root, "sub")
		if e != 0 {
			t.Fatalf("Shared/Docs/sub: %v", e)
		}
		b, e := md.lookupFresh(sub.id, "b.txt")
		if e != 0 {
			t.Fatalf("Shared/Docs/sub/b.txt: %v", e)
		}
		if got := readAll(t, md, b); got != "shared b\n" {
			t.Fatalf("Shared/Docs/sub/b.txt: %q", got)
		}
		ls, _, e := md.listFresh(root)
		var names []string
		for _, x := range ls {
			names = append(names, x.name)
		}
		slices.Sort(names)
		if e != 0 || !slices.Equal(names, []string{"a.txt", "sub"}) {
			t.Fatalf("ls Shared/Docs: %q %v", names, e)
		}
	}

	d := coreDriveAt(t, c, cacheDir, opts, nil)
	readShare(d)
	d.shutdown()

	down.Store(true)
	d = coreDriveAt(t, c, cacheDir, opts, nil)
	if d.online() {
		t.Fatal("the drive started through a proxy answering 503 says it is online")
	}
	readShare(d)

	// The cloud answers again: the share's drive follows its feed.
	owner.put(t, owner.view(t), "/new.txt", []byte("written during the outage\n"))
	down.Store(false)
	must(t, d.loadShares(ctx, 0)) // as the drive does every 30 s
	md, e := d.memberByName(ctx, "Docs")
	if e != 0 {
		t.Fatal(e)
	}
	kick(md.pullKick)
	waitFor(t, 30*time.Second, func() bool {
		_, e := md.lookupFresh(md.rootID(), "new.txt")
		return e == 0
	})
	d.shutdown()

	// A saved file that does not authenticate is refused, not used.
	path := filepath.Join(cacheDir, "shares", savedSharesFile)
	b, err := os.ReadFile(path)
	must(t, err)
	b[len(b)-1] ^= 1
	must(t, os.WriteFile(path, b, 0o600))
	down.Store(true)
	d = coreDriveAt(t, c, cacheDir, opts, nil)
	if list, err := d.savedShares(); err == nil || list != nil {
		t.Fatalf("a damaged saved file: %d shares, %v; want an error", len(list), err)
	}
	if _, e := d.memberByName(ctx, "Docs"); e == 0 {
		t.Fatal("the share shows from a saved file that does not authenticate")
	}
}
