package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kumo/remote/api"
)

// TestXattrQuota: xattrs count against the quota. A setxattr the known
// quota cannot hold fails with EDQUOT at the call and changes nothing; the
// ones accepted reach the cloud, which charges them. (Before, 18.8 MiB of
// user.* xattrs went into a small quota and left the usage unchanged.)
func TestXattrQuota(t *testing.T) {
	const quota = 2 << 20
	c := startCloud(t, t.TempDir(), quota)
	m := c.mount(t, t.TempDir(), nil)
	for i := range 4 {
		must(t, os.WriteFile(m.p(fmt.Sprintf("f%d", i)), nil, 0o644))
	}
	m.flush()
	must(t, m.command("refresh")) // the drive knows what the files cost
	before := cloudUsage(t, c)
	value := bytes.Repeat([]byte("v"), 32<<10)
	var accepted int64
	var refused error
	for i := range 4 * quota / len(value) {
		p, name := m.p(fmt.Sprintf("f%d", i%4)), fmt.Sprintf("user.x%03d", i)
		if err := unix.Setxattr(p, name, value, 0); err != nil {
			refused = err
			if _, err := unix.Getxattr(p, name, nil); !errors.Is(err, syscall.ENODATA) {
				t.Fatalf("the refused xattr %s is there: %v", name, err)
			}
			break
		}
		accepted += int64(1 + len(name) + 4 + len(value))
	}
	if !errors.Is(refused, syscall.EDQUOT) {
		t.Fatalf("after %d bytes of xattrs in a %d-byte quota: %v, want EDQUOT", accepted, quota, refused)
	}
	if accepted < quota/2 {
		t.Fatalf("EDQUOT after only %d bytes of xattrs in a %d-byte quota", accepted, quota)
	}
	m.flush() // every accepted xattr fits in the cloud
	after := cloudUsage(t, c)
	if after-before != accepted || after > quota {
		t.Fatalf("cloud usage %d -> %d (+%d) after %d bytes of xattrs; quota %d", before, after, after-before, accepted, quota)
	}
	if r := m.report(); r.Quota.Full || r.Uploads.Ops != 0 {
		t.Fatalf("after the flush: %+v", r)
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

// TestPushOversized: changes whose batch is over the cloud's 4 MiB request
// limit are sent in smaller batches, and one change no request can carry
// (3.5 MB of xattrs on one file) is refused for good: shown in .kumo and
// .kumo.json with its path and the reason, kept on this machine, and the
// changes queued behind it (a normal file) reach the cloud. (Before, the
// pusher sent the same oversized batch forever and nothing after it synced.)
func TestPushOversized(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	const files = 6
	for i := range files {
		must(t, os.WriteFile(m.p(fmt.Sprintf("big%d", i)), []byte("data"), 0o644))
	}
	must(t, os.WriteFile(m.p("huge"), []byte("data"), 0o644))
	m.flush()
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 64000) }
	// 6 files of 1 MB of xattrs: 8 MB of JSON in one batch, fine one by one.
	for i := range files {
		for j := range 16 {
			must(t, unix.Setxattr(m.p(fmt.Sprintf("big%d", i)), fmt.Sprintf("user.x%02d", j), value(j), 0))
		}
	}
	// One file of 3.5 MB of xattrs: no request can carry its update.
	for j := range 56 {
		must(t, unix.Setxattr(m.p("huge"), fmt.Sprintf("user.x%02d", j), value(j), 0))
	}
	must(t, os.WriteFile(m.p("normal.txt"), []byte("hello"), 0o644))
	m.flush()

	// The refusal is reported, with the path and the reason.
	// On a loaded machine the pusher may also have sent (and had refused)
	// the file's update while the setxattr loop was past 4 MiB but not done.
	r := m.report()
	if r.Uploads.Refused < 1 || len(r.Uploads.RefusedOps) != int(r.Uploads.Refused) {
		t.Fatalf("refused changes in .kumo.json: %d %+v, want 1 or 2", r.Uploads.Refused, r.Uploads.RefusedOps)
	}
	for _, op := range r.Uploads.RefusedOps {
		if op.Op != api.OpUpdate || op.Path != "/huge" || !strings.Contains(op.Reason, api.CodeTooLarge) || op.Kept == "" {
			t.Fatalf("refused change: %+v", op)
		}
	}
	text, err := os.ReadFile(m.p(".kumo"))
	must(t, err)
	if !strings.Contains(string(text), fmt.Sprintf("refused     %d change", r.Uploads.Refused)) || !strings.Contains(string(text), "update /huge: too_large") {
		t.Fatalf(".kumo does not show the refused change:\n%s", text)
	}
	// Kept here.
	buf := make([]byte, 64000)
	if n, err := unix.Getxattr(m.p("huge"), "user.x55", buf); err != nil || !bytes.Equal(buf[:n], value(55)) {
		t.Fatalf("the refused xattrs are gone here: %d %v", n, err)
	}

	// Another machine sees everything but the refused change.
	m2 := c.mount(t, t.TempDir(), nil)
	checkFile(t, m2.p("normal.txt"), []byte("hello"))
	for i := range files {
		n, err := unix.Getxattr(m2.p(fmt.Sprintf("big%d", i)), "user.x15", buf)
		if err != nil || !bytes.Equal(buf[:n], value(15)) {
			t.Fatalf("big%d's xattrs did not reach the cloud: %v", i, err)
		}
	}
	checkFile(t, m2.p("huge"), []byte("data"))
	if _, err := unix.Getxattr(m2.p("huge"), "user.x00", buf); !errors.Is(err, syscall.ENODATA) {
		t.Fatalf("the refused change reached the cloud: %v", err)
	}
}

// TestPushSplitsOn413: behind a proxy that takes less than the cloud (1
// MiB bodies), a batch refused with 413 is halved until it passes, and
// nothing is refused for good: every change reaches the cloud.
func TestPushSplitsOn413(t *testing.T) {
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
	via := *c
	via.url = "http://" + ln.Addr().String()
	m := via.mount(t, t.TempDir(), nil)
	const files = 8
	for i := range files {
		must(t, os.WriteFile(m.p(fmt.Sprintf("f%d", i)), nil, 0o644))
	}
	m.flush()
	value := bytes.Repeat([]byte("z"), 60000)
	for i := range files {
		for j := range 5 { // 300 kB each: 400 kB of JSON, 3.2 MB together
			must(t, unix.Setxattr(m.p(fmt.Sprintf("f%d", i)), fmt.Sprintf("user.x%d", j), value, 0))
		}
	}
	m.flush()
	if tooLarge.Load() == 0 {
		t.Fatal("the proxy refused no batch: the split was not tested")
	}
	if r := m.report(); r.Uploads.Refused != 0 {
		t.Fatalf("changes refused for good: %+v", r.Uploads.RefusedOps)
	}
	m2 := c.mount(t, t.TempDir(), nil)
	buf := make([]byte, len(value))
	for i := range files {
		if n, err := unix.Getxattr(m2.p(fmt.Sprintf("f%d", i)), "user.x4", buf); err != nil || n != len(value) {
			t.Fatalf("f%d's xattrs did not reach the cloud: %v", i, err)
		}
	}
}
