package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPutChunk measures PUT /v1/chunks of one small file's chunk
// (4 KiB of plaintext sealed: 4112 bytes) and of a 1 MiB chunk, over loopback
// HTTP with SyncWrites on (as the embedded cloud of `kumo mount` runs), by 1
// and 4 concurrent uploaders. ns/op is wall time per chunk; µs/put and
// p50-µs are the latency of one request. Put the data directory on the disk
// to measure with KUMO_BENCH_DIR; KUMO_BENCH_DEV names that disk's block
// device (e.g. loop4) to also count its flushes and writes per chunk:
//
//	KUMO_BENCH_DIR=/mnt/ext4 KUMO_BENCH_DEV=loop4 go test -run '^$' -bench PutChunk -benchtime 2000x ./remote/server
func BenchmarkPutChunk(b *testing.B) {
	for _, size := range []int{4<<10 + 16, 1 << 20} {
		for _, conc := range []int{1, 4} {
			b.Run(fmt.Sprintf("size=%d/conc=%d", size, conc), func(b *testing.B) { benchPut(b, size, conc) })
		}
	}
}

func benchPut(b *testing.B, size, conc int) {
	dir := b.TempDir()
	if d := os.Getenv("KUMO_BENCH_DIR"); d != "" {
		var err error
		if dir, err = os.MkdirTemp(d, "putbench-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	s, err := New(Config{DataDir: dir, DefaultQuota: 1 << 40, SyncWrites: true, LoginLimit: 1000,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	defer func() {
		hs.Close()
		s.Close()
	}()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	token := benchSignup(b, client, hs.URL)

	ids := make([]string, b.N)
	bodies := make([][]byte, b.N)
	for i := range b.N {
		ids[i], bodies[i] = randMAC(), randBytes(size)
	}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(int64(size))
	dev := os.Getenv("KUMO_BENCH_DEV")
	before := diskStat(b, dev)
	b.ResetTimer()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				req, _ := http.NewRequest("PUT", hs.URL+"/v1/chunks/"+ids[i], bytes.NewReader(bodies[i]))
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("PUT: %s", resp.Status)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if dev != "" {
		after := diskStat(b, dev)
		b.ReportMetric(float64(after.flushes-before.flushes)/float64(b.N), "flushes/put")
		b.ReportMetric(float64(after.writes-before.writes)/float64(b.N), "writes/put")
	}
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	slices.Sort(lat)
	b.ReportMetric(float64(sum.Microseconds())/float64(b.N), "µs/put")
	b.ReportMetric(float64(lat[b.N/2].Microseconds()), "p50-µs")
}

func benchSignup(b *testing.B, client *http.Client, url string) string {
	req := signupReq("bench@example.com")
	body, _ := json.Marshal(req)
	resp, err := client.Post(url+"/v1/signup", "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b.Fatalf("signup: %s", resp.Status)
	}
	return req.Token
}

type diskStats struct{ writes, flushes int64 }

// diskStat reads the write and flush request counts of a block device
// (Documentation/block/stat.rst: fields 5 and 16).
func diskStat(b *testing.B, dev string) diskStats {
	if dev == "" {
		return diskStats{}
	}
	raw, err := os.ReadFile("/sys/block/" + dev + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw))
	if len(f) < 17 {
		b.Fatalf("%s: %d fields in stat, want 17", dev, len(f))
	}
	w, _ := strconv.ParseInt(f[4], 10, 64)
	fl, _ := strconv.ParseInt(f[15], 10, 64)
	return diskStats{writes: w, flushes: fl}
}
