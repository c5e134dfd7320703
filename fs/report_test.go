package fs

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kumo/internal/control"
	"kumo/remote/client"
)

// dropPages makes the kernel forget the file's cached pages, so the next
// read reaches the drive.
func dropPages(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
}

// TestCacheReport: an empty drive shows no cached chunks (its local tree,
// with its preallocated log, is shown apart), and reads served by data not
// uploaded yet count as hits where the chunk cache alone saw nothing; the
// text says what is counted.
func TestCacheReport(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour }) // keep the data local
	r := m.report()
	if r.Cache.Bytes != 0 || r.Cache.TreeBytes == 0 || r.Cache.Hits+r.Cache.Misses != 0 {
		t.Fatalf("empty drive's cache: %+v", r.Cache)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: 16 segments
	must(t, os.WriteFile(m.p("f"), data, 0o644))
	dropPages(t, m.p("f"))
	got, err := os.ReadFile(m.p("f"))
	must(t, err)
	if !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	r = m.report()
	if r.Cache.Hits < 16 || r.Cache.Misses != 0 || r.Cache.HitRate != 1 {
		t.Fatalf("after re-reading 16 segments not uploaded yet: %+v", r.Cache)
	}
	text := string(control.Text(r))
	if !strings.Contains(text, "hit rate 100%") || !strings.Contains(text, "page cache") {
		t.Fatalf("report:\n%s", text)
	}
}

// TestLastErrorClearedOnline: while offline the report says when the last
// error happened; once the cloud answers again the error is gone (whether
// or not the file written offline is uploaded yet), and no unset time is
// written as 0001-01-01.
func TestLastErrorClearedOnline(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	px := newOfflineProxy(t, c.url)
	m := c.mount(t, t.TempDir(), func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: px.url, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
		o.QuietTime = time.Hour // the file may still be queued when the cloud is back
	})
	px.down.Store(true)
	must(t, os.WriteFile(m.p("queued"), []byte("while offline"), 0o644))
	var r control.Status
	waitFor(t, 10*time.Second, func() bool {
		r = m.report()
		return r.Connection.State == "offline"
	})
	if r.Connection.LastError == "" || r.Connection.LastErrorAt == nil || r.Connection.OfflineSince == nil {
		t.Fatalf("offline report: %+v", r.Connection)
	}
	if text := string(control.Text(r)); !strings.Contains(text, "(last error at "+r.Connection.LastErrorAt.UTC().Format(time.RFC3339)) {
		t.Fatalf("offline text report:\n%s", text)
	}
	px.down.Store(false)
	must(t, m.command("refresh")) // the cloud answers
	waitFor(t, 10*time.Second, func() bool {
		r = m.report()
		return r.Connection.State == "online"
	})
	if r.Connection.LastError != "" || r.Uploads.LastError != "" || r.Connection.LastErrorAt != nil {
		t.Fatalf("back online, the old error stays: %+v %+v", r.Connection, r.Uploads)
	}
	js, err := os.ReadFile(m.p(".kumo.json"))
	must(t, err)
	if bytes.Contains(js, []byte("0001-01-01")) || !bytes.Contains(js, []byte(`"offline_since": null`)) {
		t.Fatalf(".kumo.json:\n%s", js)
	}
	if text, _ := os.ReadFile(m.p(".kumo")); bytes.Contains(text, []byte("last error")) {
		t.Fatalf(".kumo back online:\n%s", text)
	}
}
