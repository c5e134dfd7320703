package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kumo/remote/api"
	"kumo/remote/blob"
	"kumo/remote/blob/s3"
	"kumo/remote/blob/s3/s3test"
)

// TestServerS3 runs the whole server suite on the S3 blob store, against a
// real versitygw on loopback (one server; each test gets its own key
// prefix), with every chunk in the store (none in the metadata store).
func TestServerS3(t *testing.T) {
	v := s3test.Start(t)
	var n atomic.Int64
	runServerSuite(t, allInBlobs(func(t *testing.T) blob.Store {
		return openS3(t, v, fmt.Sprintf("suite-%d", n.Add(1)), "")
	}))
}

// blobsOnly keeps every chunk in the blob store: the S3 tests below use
// small chunks to test the store.
func blobsOnly(c *Config) { c.SmallChunkMax = -1 }

// openS3 opens a store on v under prefix; extra is appended to the URL query.
func openS3(t *testing.T, v *s3test.Versity, prefix, extra string) *s3.Store {
	t.Helper()
	url := strings.Replace(v.URL, "/"+s3test.Prefix+"?", "/"+prefix+"?", 1) + extra
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s3.Open(ctx, url, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// logBuffer collects log lines for checks ("the server logs which chunk").
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestS3Outage: the S3 server dies mid-upload. Uploads in flight are retried
// and complete once it is back; nothing acknowledged is lost; /healthz
// reports the outage.
func TestS3Outage(t *testing.T) {
	v := s3test.Start(t)
	store := openS3(t, v, "outage", "&retry_for=60s")
	e := newEnv(t, func(t *testing.T) blob.Store { return store }, blobsOnly)
	u := e.signup("s3@example.com")
	before := map[string][]byte{}
	for i := 0; i < 5; i++ {
		data := randBytes(64 << 10)
		id := randMAC()
		u.must("PUT", "/v1/chunks/"+id, data, nil)
		before[id] = data
	}

	v.Stop()
	st, code := e.call("GET", "/healthz", "", nil, nil)
	expect(t, "healthz while S3 is down", st, code, 503, api.CodeUnavailable)

	// Uploads while the store is down: they wait (retrying) instead of failing.
	type result struct {
		id   string
		data []byte
		st   int
		code string
	}
	results := make(chan result, 4)
	for i := 0; i < 4; i++ {
		go func() {
			data := randBytes(256 << 10)
			id := randMAC()
			st, code := e.callNoFatal("PUT", "/v1/chunks/"+id, u.token, rawBody(data))
			results <- result{id, data, st, code}
		}()
	}
	time.Sleep(2 * time.Second)
	select {
	case r := <-results:
		t.Fatalf("upload finished while S3 was down: %d %s", r.st, r.code)
	default:
	}
	v.Restart()
	after := map[string][]byte{}
	for i := 0; i < 4; i++ {
		select {
		case r := <-results:
			if r.st != 200 {
				t.Fatalf("upload across the outage: %d %s", r.st, r.code)
			}
			after[r.id] = r.data
		case <-time.After(60 * time.Second):
			t.Fatal("uploads did not complete after S3 came back")
		}
	}
	var body []byte
	if st, code := e.call("GET", "/healthz", "", nil, &body); code != "" {
		t.Fatalf("healthz after restart: %d %s", st, code)
	}
	for _, m := range []map[string][]byte{before, after} {
		for id, data := range m {
			var got []byte
			u.must("GET", "/v1/chunks/"+id, nil, &got)
			if !bytes.Equal(got, data) {
				t.Fatalf("chunk %s changed across the outage", id)
			}
		}
	}
	if a := u.chunkAccount(); a.QuotaUsed != 5*(64<<10)+4*(256<<10) {
		t.Fatalf("usage %d", a.QuotaUsed)
	}
	checkConsistent(t, e.s, u.id)
}

// TestS3OutageShortRetry: with a short retry budget the upload fails with a
// retryable 5xx instead of hanging, and leaves nothing charged or recorded;
// the client's retry after the store returns succeeds.
func TestS3OutageShortRetry(t *testing.T) {
	v := s3test.Start(t)
	store := openS3(t, v, "short", "&retry_for=1s")
	e := newEnv(t, func(t *testing.T) blob.Store { return store }, blobsOnly)
	u := e.signup("s3b@example.com")
	v.Stop()
	id, data := randMAC(), randBytes(100<<10)
	st, code := e.callNoFatal("PUT", "/v1/chunks/"+id, u.token, rawBody(data))
	if st < 500 {
		t.Fatalf("upload with S3 down: %d %s, want a retryable 5xx", st, code)
	}
	v.Restart()
	if a := u.chunkAccount(); a.QuotaUsed != 0 {
		t.Fatalf("failed upload charged %d bytes", a.QuotaUsed)
	}
	var have api.HaveResponse
	u.must("POST", "/v1/chunks/have", api.HaveRequest{IDs: []string{id}}, &have)
	if have.Have[0] {
		t.Fatal("failed upload recorded")
	}
	u.must("PUT", "/v1/chunks/"+id, data, nil)
	var got []byte
	u.must("GET", "/v1/chunks/"+id, nil, &got)
	if !bytes.Equal(got, data) {
		t.Fatal("retried upload reads back different bytes")
	}
	checkConsistent(t, e.s, u.id)
}

// TestS3LostAndCorrupt: a chunk deleted behind the server's back answers 404
// and a corrupted one gives back the stored bytes; both are logged by chunk.
func TestS3LostAndCorrupt(t *testing.T) {
	v := s3test.Start(t)
	store := openS3(t, v, s3test.Prefix, "")
	logs := &logBuffer{}
	e := newEnv(t, func(t *testing.T) blob.Store { return store }, func(c *Config) {
		blobsOnly(c)
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	u := e.signup("s3c@example.com")
	lost, corrupt := randMAC(), randMAC()
	u.must("PUT", "/v1/chunks/"+lost, randBytes(10000), nil)
	data := randBytes(10000)
	u.must("PUT", "/v1/chunks/"+corrupt, data, nil)

	if err := os.Remove(v.ObjectPath(blobKey(u.id, lost))); err != nil {
		t.Fatal(err)
	}
	st, code := u.call("GET", "/v1/chunks/"+lost, nil, nil)
	expect(t, "lost chunk", st, code, 404, api.CodeNotFound)
	if !strings.Contains(logs.String(), lost) {
		t.Fatalf("lost chunk not named in the log:\n%s", logs)
	}

	bad := bytes.Clone(data)
	bad[5000] ^= 0x40
	if err := os.WriteFile(v.ObjectPath(blobKey(u.id, corrupt)), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	var got []byte
	u.must("GET", "/v1/chunks/"+corrupt, nil, &got)
	if !bytes.Equal(got, bad) {
		t.Fatal("corrupted chunk: did not get the stored bytes")
	}
	if !strings.Contains(logs.String(), "corrupted") || strings.Count(logs.String(), corrupt) == 0 {
		t.Fatalf("corrupted chunk not named in the log:\n%s", logs)
	}
}

// rawBody marks a body to send as is (callNoFatal marshals anything else).
type rawBody []byte
