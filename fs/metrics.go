package fs

import (
	"sync"
	"time"

	"kumo/internal/metrics"
)

// RegisterMetrics adds the drive's gauges (read from Status at scrape time)
// to r: cache, upload queue, quota and connection.
func (d *Drive) RegisterMetrics(r *metrics.Registry) {
	// One Status per scrape, not one per gauge.
	var (
		mu   sync.Mutex
		last Status
		at   time.Time
	)
	snap := func() Status {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) > 500*time.Millisecond {
			last, at = d.Status(), time.Now()
		}
		return last
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	g := func(name, help string, f func(s Status) float64) {
		r.GaugeFunc(name, help, func() float64 { return f(snap()) })
	}
	g("kumo_drive_cache_bytes", "Bytes the local chunk cache uses on disk.", func(s Status) float64 { return float64(s.Cache.Bytes) })
	g("kumo_drive_cache_budget_bytes", "Disk budget of the chunk cache (--cache-size).", func(s Status) float64 { return float64(s.Cache.Budget) })
	r.CounterFunc("kumo_drive_cache_hits_total", "Segment reads served on this machine: data not uploaded yet, chunks in memory, the chunk cache (page-cache reads are not counted).", func() float64 { return float64(snap().Cache.Hits) })
	r.CounterFunc("kumo_drive_upload_scans_total", "Passes of the uploader over the files waiting for upload, each under the drive's lock (at most one a second while a burst of changes holds closed files).", func() float64 { return float64(d.up.scans.Load()) })
	r.CounterFunc("kumo_drive_readdir_listed_lookups_total", "Names readdirplus answered from the directory's listing, not looking each up again.", func() float64 { return float64(d.listedLookups.Load()) })
	r.CounterFunc("kumo_drive_cache_misses_total", "Segment reads that asked the cloud.", func() float64 { return float64(snap().Cache.Misses) })
	// The queue gauges count the joined shared folders' queues too
	// (Pending, as `kumo unmount` waits for and shows): work stuck in a
	// shared folder is work this mount has not uploaded. Totals, not a
	// series per share: a share's name is a plaintext folder name, which
	// stays out of what a monitoring system stores; .kumo lists each
	// share's queue.
	g("kumo_drive_upload_queue_files", "Files with data not uploaded yet, in the drive and its joined shared folders.", func(s Status) float64 { return float64(s.Pending().Files) })
	g("kumo_drive_upload_queue_bytes", "Bytes written and not uploaded yet, in the drive and its joined shared folders.", func(s Status) float64 { return float64(s.Pending().Bytes) })
	g("kumo_drive_upload_queue_ops", "Tree operations not pushed to the cloud yet, in the drive and its joined shared folders.", func(s Status) float64 { return float64(s.Pending().Ops) })
	g("kumo_drive_uploads_running", "File uploads running now, in the drive and its joined shared folders.", func(s Status) float64 { return float64(s.Pending().Uploading) })
	g("kumo_drive_quota_used_bytes", "Quota used: stored in the cloud plus queued uploads.", func(s Status) float64 { return float64(s.QuotaUsed) })
	g("kumo_drive_quota_limit_bytes", "Quota of the account.", func(s Status) float64 { return float64(s.QuotaLimit) })
	g("kumo_drive_quota_full", "1 while the cloud refuses uploads for quota (top up to continue).", func(s Status) float64 { return b(s.QuotaBlocked) })
	g("kumo_drive_read_only", "1 while the account is read-only (plan expired over quota).", func(s Status) float64 { return b(s.Account.ReadOnly) })
	g("kumo_drive_online", "1 while the cloud is reachable.", func(s Status) float64 { return b(s.Online) })
}
