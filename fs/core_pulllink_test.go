package fs

import (
	"syscall"
	"testing"
	"time"

	"kumo/remote/api"
)

// Another device hard-links a file and removes the link again while this
// drive holds an edit of the file not uploaded yet: the puller takes in the
// link (one more link here) and then its removal, and the file and the
// edit stay. Before, the link was taken in without counting it, so its
// removal dropped the file's last link here: the file vanished and its
// edit was thrown away (the same happened to an earlier try of our own
// create that went through under another name, renamed since).
func TestCorePullLinkElsewhereKeepsUnsentData(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	a := coreDriveAt(t, c, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour }, nil)
	x := coreFile(t, a, api.RootID, "x", "v1")
	coreFlush(t, a)
	coreWriteAt(t, a, x, []byte("v2"), 0) // waits for an hour of quiet to upload
	if e := a.makeDurable(x, true, false); e != 0 {
		t.Fatalf("a: close x: %v", e)
	}

	b := coreDrive(t, c)
	bx, e := b.lookupForTest(api.RootID, "x")
	if e != 0 {
		t.Fatalf("b: lookup x: %v", e)
	}
	if _, e := b.link(bx.id, api.RootID, "L"); e != 0 {
		t.Fatalf("b: link x L: %v", e)
	}
	coreFlush(t, b)

	waitFor(t, 15*time.Second, func() bool { _, e := a.lookupForTest(api.RootID, "L"); return e == 0 })

	if e := b.unlink(api.RootID, "L", false); e != 0 {
		t.Fatalf("b: unlink L: %v", e)
	}
	coreFlush(t, b)
	waitFor(t, 15*time.Second, func() bool { _, e := a.lookupForTest(api.RootID, "L"); return e == syscall.ENOENT })

	if got := coreRead(t, a, api.RootID, "x"); got != "v2" {
		t.Fatalf("a reads x as %q, want its edit", got)
	}
	coreFlush(t, a)
	if got := coreRead(t, coreDrive(t, c), api.RootID, "x"); got != "v2" {
		t.Fatalf("another device reads x as %q", got)
	}
}
