package fs

import (
	"net/http/httptest"
	"testing"
	"time"

	"kumo/internal/metrics"
)

// TestMetricsCountSharedQueues: a file written in a joined shared folder
// while the cloud is unreachable waits in the shared folder's own drive;
// the drive's /metrics queue gauges count it with the account's own queue,
// as `kumo unmount`'s progress does (Status().Pending). Before, they
// counted the account's own queue alone: the shared folder's file, bytes
// and ops were invisible to monitoring.
func TestMetricsCountSharedQueues(t *testing.T) {
	cd, md, px := carolOnDocs(t)
	reg := metrics.New()
	cd.RegisterMetrics(reg)
	scrape := func(name string) float64 {
		t.Helper()
		rec := httptest.NewRecorder()
		reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		v, ok := metricValue(rec.Body.Bytes(), name)
		if !ok {
			t.Fatalf("metric %s missing:\n%s", name, rec.Body.String())
		}
		return v
	}

	px.down.Store(true)
	shared := "from carol, in the shared folder\n"
	own := "carol's own\n"
	coreFile(t, md, md.rootID(), "new.txt", shared)
	coreFile(t, cd, cd.rootID(), "mine.txt", own)

	s := cd.Status()
	if s.Shared.Files != 1 || s.Queue.Files != 1 {
		t.Fatalf("queues before scraping: own %+v, shared %+v; want a file in each", s.Queue, s.Shared)
	}
	if v := scrape("kumo_drive_upload_queue_files"); v != 2 {
		t.Errorf("kumo_drive_upload_queue_files = %v, want 2 (the own file and the shared folder's)", v)
	}
	if v, want := scrape("kumo_drive_upload_queue_bytes"), float64(len(shared)+len(own)); v != want {
		t.Errorf("kumo_drive_upload_queue_bytes = %v, want %v", v, want)
	}
	if v, want := scrape("kumo_drive_upload_queue_ops"), float64(s.Queue.Ops+s.Shared.Ops); v != want || s.Shared.Ops == 0 {
		t.Errorf("kumo_drive_upload_queue_ops = %v, want %v (shared folder's ops %d)", v, want, s.Shared.Ops)
	}

	px.down.Store(false)
	coreFlush(t, cd)
	// The gauges read a Status at most 500 ms old.
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, b, o := scrape("kumo_drive_upload_queue_files"), scrape("kumo_drive_upload_queue_bytes"), scrape("kumo_drive_upload_queue_ops")
		if f+b+o == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the flush: queue files %v, bytes %v, ops %v; want 0", f, b, o)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
