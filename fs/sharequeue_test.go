package fs

import (
	"context"
	"testing"
	"time"

	"kumo/internal/keys"
)

// TestShareQueueInStatus: work queued in a folder shared with the account
// (its member drive) is part of what the account drive's Flush, and so
// `kumo unmount`, waits for: Status().Pending() counts it (the unmount's
// progress is made from it, ctlsock.FromStatus), while Queue stays the
// account's own (.kumo lists each share's queue apart). Before, the
// progress counted the account's own queue alone: 0 here, so an unmount
// waiting for the shared folder's upload said nothing.
func TestShareQueueInStatus(t *testing.T) {
	cd, md, px := carolOnDocs(t)
	px.down.Store(true)
	coreFile(t, md, md.rootID(), "new.txt", "from carol\n")

	s := cd.Status()
	if s.Queue.Files+s.Queue.Ops != 0 || s.Queue.Bytes != 0 {
		t.Fatalf("the account's own queue holds the shared folder's work: %+v", s.Queue)
	}
	if s.Shared.Ops == 0 || s.Shared.Files != 1 || s.Shared.Bytes == 0 {
		t.Fatalf("the shared folder's queue: %+v, want the file and its create", s.Shared)
	}
	if p := s.Pending(); p.Ops != s.Shared.Ops || p.Files != 1 || p.Bytes != s.Shared.Bytes {
		t.Fatalf("what a flush waits for: %+v, want the shared folder's queue", p)
	}
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := cd.Flush(short); err == nil {
		t.Fatal("the account drive's flush did not wait for the shared folder's queue")
	}

	px.down.Store(false)
	coreFlush(t, cd)
	if p := cd.Status().Pending(); p.Files+p.Ops+p.Uploading != 0 || p.Bytes != 0 {
		t.Fatalf("after the flush: %+v pending", p)
	}
}

// carolOnDocs is carol's drive (cd) with the "Docs" folder alice shares
// with her as a writer joined (md, its member drive), reaching the cloud
// through px, which can cut it off.
func carolOnDocs(t *testing.T) (cd, md *Drive, px *offlineProxy) {
	t.Helper()
	c := startCloud(t, t.TempDir(), 0)
	owner, _ := sharedDocs(t, c)
	carol := joinDocs(t, c, owner, "carol@example.com", keys.RoleWriter)
	px = newOfflineProxy(t, c.url)
	cd = coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(carol)(o)
		o.Session, o.Client, o.SharedDir = carol.sess, proxyClient(t, px.url, carol.sess.Token), "Shared"
	})
	md, e := cd.memberByName(context.Background(), "Docs")
	if e != 0 {
		t.Fatalf("carol's drive of the joined share: %v", e)
	}
	return cd, md, px
}
