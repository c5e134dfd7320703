package fs

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"kumo/remote/api"
)

// coreSetxattr and coreGetxattr call the drive's xattr operations as the
// kernel would for the file name under the root.
func coreSetxattr(t *testing.T, d *Drive, name, attr string, value []byte) syscall.Errno {
	t.Helper()
	return (&fnode{d: d, id: coreFileState(t, d, name).id}).Setxattr(context.Background(), attr, value, 0)
}

func coreGetxattr(t *testing.T, d *Drive, name, attr string) ([]byte, syscall.Errno) {
	t.Helper()
	buf := make([]byte, xattrMax)
	n, e := (&fnode{d: d, id: coreFileState(t, d, name).id}).Getxattr(context.Background(), attr, buf)
	return buf[:n], e
}

// Xattrs count against the quota. A setxattr the known quota cannot hold
// fails with EDQUOT at the call and changes nothing; the ones accepted
// reach the cloud, which charges them. (Before, 18.8 MiB of user.* xattrs
// went into a small quota and left the usage unchanged.)
func TestCoreXattrQuota(t *testing.T) {
	const quota = 2 << 20
	c := startCloud(t, t.TempDir(), quota)
	d := coreDrive(t, c)
	for i := range 4 {
		coreFile(t, d, api.RootID, fmt.Sprintf("f%d", i), "")
	}
	coreFlush(t, d)
	if e := d.runCommand("refresh"); e != 0 { // the drive knows what the files cost
		t.Fatal(e)
	}
	before := cloudUsage(t, c)
	value := bytes.Repeat([]byte("v"), 32<<10)
	var accepted int64
	refused := syscall.Errno(0)
	for i := range 4 * quota / len(value) {
		file, name := fmt.Sprintf("f%d", i%4), fmt.Sprintf("user.x%03d", i)
		if e := coreSetxattr(t, d, file, name, value); e != 0 {
			refused = e
			if _, e := coreGetxattr(t, d, file, name); e != syscall.ENODATA {
				t.Fatalf("the refused xattr %s is there: %v", name, e)
			}
			break
		}
		accepted += int64(1 + len(name) + 4 + len(value))
	}
	if refused != syscall.EDQUOT {
		t.Fatalf("after %d bytes of xattrs in a %d-byte quota: %v, want EDQUOT", accepted, quota, refused)
	}
	if accepted < quota/2 {
		t.Fatalf("EDQUOT after only %d bytes of xattrs in a %d-byte quota", accepted, quota)
	}
	coreFlush(t, d) // every accepted xattr fits in the cloud
	after := cloudUsage(t, c)
	if after-before != accepted || after > quota {
		t.Fatalf("cloud usage %d -> %d (+%d) after %d bytes of xattrs; quota %d", before, after, after-before, accepted, quota)
	}
	if r := d.ControlStatus(context.Background(), false); r.Quota.Full || r.Uploads.Ops != 0 {
		t.Fatalf("after the flush: %+v", r)
	}
}

// Changes whose batch is over the cloud's 4 MiB request limit are sent in
// smaller batches, and one change no request can carry (3.5 MB of xattrs
// on one file) is refused for good: shown in .kumo and .kumo.json with its
// path and the reason, kept on this machine, and the changes queued behind
// it (a normal file) reach the cloud. (Before, the pusher sent the same
// oversized batch forever and nothing after it synced.)
func TestCorePushOversized(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	const files = 6
	for i := range files {
		coreFile(t, d, api.RootID, fmt.Sprintf("big%d", i), "data")
	}
	coreFile(t, d, api.RootID, "huge", "data")
	coreFlush(t, d)
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 64000) }
	set := func(file, attr string, v []byte) {
		t.Helper()
		if e := coreSetxattr(t, d, file, attr, v); e != 0 {
			t.Fatalf("setxattr %s %s: %v", file, attr, e)
		}
	}
	// 6 files of 1 MB of xattrs: 8 MB of JSON in one batch, fine one by one.
	for i := range files {
		for j := range 16 {
			set(fmt.Sprintf("big%d", i), fmt.Sprintf("user.x%02d", j), value(j))
		}
	}
	// One file of 3.5 MB of xattrs: no request can carry its update.
	for j := range 56 {
		set("huge", fmt.Sprintf("user.x%02d", j), value(j))
	}
	coreFile(t, d, api.RootID, "normal.txt", "hello")
	coreFlush(t, d)

	// The refusal is reported, with the path and the reason. On a loaded
	// machine the pusher may also have sent (and had refused) the file's
	// update while the setxattr loop was not done: past 4 MiB (too large a
	// request), or past the 2 MiB the cloud takes of a node's attributes
	// (bad_request).
	r := d.ControlStatus(context.Background(), false)
	if r.Uploads.Refused < 1 || len(r.Uploads.RefusedOps) != int(r.Uploads.Refused) {
		t.Fatalf("refused changes in .kumo.json: %d %+v, want 1 or 2", r.Uploads.Refused, r.Uploads.RefusedOps)
	}
	for _, op := range r.Uploads.RefusedOps {
		tooBig := strings.Contains(op.Reason, api.CodeTooLarge) || strings.Contains(op.Reason, "sealed attributes must be")
		if op.Op != api.OpUpdate || op.Path != "/huge" || !tooBig || op.Kept == "" {
			t.Fatalf("refused change: %+v", op)
		}
	}
	text := coreControlText(t, d)
	if !strings.Contains(text, fmt.Sprintf("refused     %d change", r.Uploads.Refused)) || !strings.Contains(text, "update /huge: too_large") {
		t.Fatalf(".kumo does not show the refused change:\n%s", text)
	}
	if v, e := coreGetxattr(t, d, "huge", "user.x55"); e != 0 || !bytes.Equal(v, value(55)) {
		t.Fatalf("the refused xattrs are gone here: %d bytes, %v", len(v), e)
	}

	// Another device sees everything but the refused change.
	other := coreDrive(t, c)
	if got := coreRead(t, other, api.RootID, "normal.txt"); got != "hello" {
		t.Fatalf("normal.txt: %q", got)
	}
	for i := range files {
		if v, e := coreGetxattr(t, other, fmt.Sprintf("big%d", i), "user.x15"); e != 0 || !bytes.Equal(v, value(15)) {
			t.Fatalf("big%d's xattrs did not reach the cloud: %v", i, e)
		}
	}
	if got := coreRead(t, other, api.RootID, "huge"); got != "data" {
		t.Fatalf("huge: %q", got)
	}
	if _, e := coreGetxattr(t, other, "huge", "user.x00"); e != syscall.ENODATA {
		t.Fatalf("the refused change reached the cloud: %v", e)
	}
}

// Behind a proxy that takes less than the cloud (1 MiB bodies), a batch
// refused with 413 is halved until it passes, and nothing is refused for
// good: every change reaches the cloud.
func TestCorePushSplitsOn413(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	target, err := url.Parse(c.url)
	must(t, err)
	var tooLarge atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	ps := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 1<<20 {
			tooLarge.Add(1)
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			fmt.Fprint(w, "<html>413 Request Entity Too Large</html>")
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go ps.Serve(ln)
	t.Cleanup(func() { ps.Close() })
	d := coreDriveAt(t, c, t.TempDir(), viaURL(t, c, "http://"+ln.Addr().String()), nil)
	const files = 8
	for i := range files {
		coreFile(t, d, api.RootID, fmt.Sprintf("f%d", i), "")
	}
	coreFlush(t, d)
	value := bytes.Repeat([]byte("z"), 60000)
	for i := range files {
		for j := range 5 { // 300 kB each: 400 kB of JSON, 3.2 MB together
			if e := coreSetxattr(t, d, fmt.Sprintf("f%d", i), fmt.Sprintf("user.x%d", j), value); e != 0 {
				t.Fatal(e)
			}
		}
	}
	coreFlush(t, d)
	if tooLarge.Load() == 0 {
		t.Fatal("the proxy refused no batch: the split was not tested")
	}
	if r := d.ControlStatus(context.Background(), false); r.Uploads.Refused != 0 {
		t.Fatalf("changes refused for good: %+v", r.Uploads.RefusedOps)
	}
	other := coreDrive(t, c)
	for i := range files {
		if v, e := coreGetxattr(t, other, fmt.Sprintf("f%d", i), "user.x4"); e != 0 || len(v) != len(value) {
			t.Fatalf("f%d's xattrs did not reach the cloud: %v", i, e)
		}
	}
}

func cloudUsage(t *testing.T, c *cloud) int64 {
	t.Helper()
	a, err := c.client(t).Account(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return a.QuotaUsed
}
