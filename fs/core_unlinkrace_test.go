package fs

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/remote/api"
	"kumo/remote/client"
)

// An unlink of a file that another device replaced meanwhile (a new file
// renamed over the name, as editors save) is refused by the cloud as a
// conflict: the entry names another node now. That is an ordinary race,
// not a failure: the unlink is dropped quietly, the other device's new file
// shows under the name and .kumo lists no refusal (before, the unlink was
// reported refused for good).
func TestCoreUnlinkOfReplacedFileQuiet(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	px := newOfflineProxy(t, c.url)
	b := coreDrive(t, c)
	coreFile(t, b, api.RootID, "doc", "old")
	coreFlush(t, b)
	a := coreDriveAt(t, c, t.TempDir(), func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: px.url, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
	}, nil)
	if got := coreRead(t, a, api.RootID, "doc"); got != "old" {
		t.Fatalf("a reads %q", got)
	}
	px.down.Store(true)
	if e := a.unlink(api.RootID, "doc", false); e != 0 {
		t.Fatalf("unlink on a: %v", e)
	}
	waitFor(t, 5*time.Second, func() bool { return !a.Status().Online })

	// b replaces the file: a new node renamed over the name.
	coreFile(t, b, api.RootID, "doc.tmp", "new")
	if e := b.rename(api.RootID, "doc.tmp", api.RootID, "doc", 0); e != 0 {
		t.Fatalf("rename on b: %v", e)
	}
	coreFlush(t, b)

	px.down.Store(false)
	coreFlush(t, a)
	waitFor(t, 10*time.Second, func() bool {
		st, e := a.lookupForTest(api.RootID, "doc")
		return e == 0 && st != nil && coreRead(t, a, api.RootID, "doc") == "new"
	})
	if got := coreRead(t, b, api.RootID, "doc"); got != "new" {
		t.Fatalf("b reads %q, want the new file", got)
	}
	if n := a.ctl.refusedN; n != 0 {
		t.Fatalf("%d changes reported refused, want none: %+v", n, a.ctl.refused)
	}
	if txt := coreControlText(t, a); strings.Contains(txt, "will never accept") {
		t.Fatalf(".kumo shows a refusal:\n%s", txt)
	}
	if _, e := a.lookupForTest(api.RootID, "doc.tmp"); e != syscall.ENOENT {
		t.Fatalf("doc.tmp on a: %v, want ENOENT", e)
	}
}
