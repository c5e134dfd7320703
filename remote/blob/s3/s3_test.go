package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"kumo/remote/blob"
	"kumo/remote/blob/blobtest"
	"kumo/remote/blob/s3/s3test"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter sends log lines to t.Log and counts them.
type testWriter struct {
	t     testing.TB
	mu    sync.Mutex
	lines []string
}

func (w *testWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	w.t.Log(line)
	w.mu.Lock()
	w.lines = append(w.lines, line)
	w.mu.Unlock()
	return len(p), nil
}

func (w *testWriter) count(substr string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func key(acct, i int) string {
	return fmt.Sprintf("%08x/%064x", acct, i)
}

func openTest(t testing.TB, params string) (*Store, *s3test.Versity) {
	t.Helper()
	v := s3test.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, v.URL+params, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func TestParseURL(t *testing.T) {
	c, err := ParseURL("s3://bkt/a/b/?endpoint=127.0.0.1:9000&region=eu-1&insecure=1&path_style=true&max_parallel=3&retry_for=5s")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Bucket: "bkt", Prefix: "a/b/", Endpoint: "127.0.0.1:9000", Secure: false, Region: "eu-1",
		PathStyle: true, MaxParallel: 3, RetryFor: 5 * time.Second}
	if fmt.Sprintf("%+v", c) != fmt.Sprintf("%+v", want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	c, err = ParseURL("s3://bkt")
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefix != "" || c.Endpoint != DefaultEndpoint || !c.Secure || c.MaxParallel != DefaultMaxParallel || c.RetryFor != DefaultRetryFor {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = ParseURL("s3://bkt/p?endpoint=https://rgw.example:7480")
	if err != nil || c.Endpoint != "rgw.example:7480" || !c.Secure || c.Prefix != "p/" {
		t.Fatalf("endpoint URL: %+v, %v", c, err)
	}
	c, err = ParseURL("s3://bkt/p?endpoint=http://rgw.example:7480")
	if err != nil || c.Secure {
		t.Fatalf("http endpoint URL: %+v, %v", c, err)
	}
	for _, bad := range []string{
		"http://bkt/p", "s3:///p", "s3://bkt/p?endpont=x", "s3://bkt?max_parallel=0",
		"s3://bkt?max_parallel=x", "s3://bkt?insecure=maybe", "s3://bkt?retry_for=-1s",
		"s3://key:secret@bkt/p", "s3://bkt?endpoint=ftp://x", "s3://bkt?endpoint=",
	} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	f.Add("s3://bkt/a?endpoint=127.0.0.1:9000&insecure=1&max_parallel=4")
	f.Add("s3://b/%2e%2e/x?retry_for=1m")
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := ParseURL(raw)
		if err != nil {
			return
		}
		if c.Bucket == "" || c.MaxParallel < 1 || c.RetryFor < 0 || (c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/")) {
			t.Fatalf("ParseURL(%q) = %+v", raw, c)
		}
	})
}

// The conformance suite every blob.Store passes.
func TestConformance(t *testing.T) {
	s, _ := openTest(t, "")
	blobtest.Run(t, s)
}

func TestRoundTrip(t *testing.T) {
	s, _ := openTest(t, "")
	ctx := context.Background()
	k := key(1, 1)
	data := randBytes(t, 3<<20+17)
	if err := s.Put(ctx, k, data); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, k, 0, -1)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v", len(got), err)
	}
	if n, err := s.Size(ctx, k); err != nil || n != int64(len(data)) {
		t.Fatalf("Size = %d, %v", n, err)
	}
	// Same key, other account: a different object.
	if _, err := s.Get(ctx, key(2, 1), 0, -1); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("other account's key: %v", err)
	}
	// Empty blob.
	if err := s.Put(ctx, key(1, 2), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, key(1, 2), 0, -1); err != nil || len(got) != 0 {
		t.Fatalf("empty blob: %q, %v", got, err)
	}
	if err := s.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, k, 0, -1); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, err := s.Get(ctx, k, 10, 10); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("ranged Get after Delete: %v", err)
	}
	if _, err := s.Size(ctx, k); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Size after Delete: %v", err)
	}
	if err := s.Delete(ctx, k); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := s.Delete(ctx, key(9, 9)); err != nil {
		t.Fatalf("Delete of a never-stored key: %v", err)
	}
}

func TestRangeReads(t *testing.T) {
	s, _ := openTest(t, "")
	ctx := context.Background()
	const size = 1<<20 + 333
	data := randBytes(t, size)
	k := key(7, 7)
	if err := s.Put(ctx, k, data); err != nil {
		t.Fatal(err)
	}
	ok := []struct{ off, n int64 }{
		{0, 1}, {0, -1}, {1, -1}, {size - 1, 1}, {size - 1, -1}, {size, -1}, {0, size},
		{12345, 65536}, {65536, 65536}, {size - 4096, 4096}, {0, 0}, {size, 0}, {500, 0},
		// Past the end: the bytes that exist, like the local store.
		{size - 10, 11}, {size - 1, 1 << 30}, {0, size + 1}, {size, 1},
	}
	for _, c := range ok {
		got, err := s.Get(ctx, k, c.off, c.n)
		end := int64(size)
		if c.n >= 0 {
			end = min(c.off+c.n, size)
		}
		if err != nil || !bytes.Equal(got, data[c.off:end]) {
			t.Errorf("Get(%d, %d): %d bytes, %v", c.off, c.n, len(got), err)
		}
	}
	bad := []struct{ off, n int64 }{{size + 1, -1}, {size + 1, 0}, {size + 1, 1}, {1 << 40, 5}}
	for _, c := range bad {
		if got, err := s.Get(ctx, k, c.off, c.n); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Get(%d, %d) past the end: %d bytes, %v; want ErrUnexpectedEOF", c.off, c.n, len(got), err)
		}
	}
	if _, err := s.Get(ctx, k, -1, 5); err == nil {
		t.Error("negative offset accepted")
	}
	if _, err := s.Get(ctx, key(7, 8), 0, 0); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("zero-length Get of a missing key: %v", err)
	}
}

func TestBadKeys(t *testing.T) {
	s, v := openTest(t, "")
	ctx := context.Background()
	for _, k := range []string{"", "../../etc/passwd", "ABC/def", "a/b/c", "a", "a/", "/a", "0/x", "0/0?x=1", "0/0#"} {
		if err := s.Put(ctx, k, []byte("x")); !errors.Is(err, blob.ErrBadKey) {
			t.Errorf("Put(%q): %v", k, err)
		}
		if _, err := s.Get(ctx, k, 0, -1); !errors.Is(err, blob.ErrBadKey) {
			t.Errorf("Get(%q): %v", k, err)
		}
		if err := s.Delete(ctx, k); !errors.Is(err, blob.ErrBadKey) {
			t.Errorf("Delete(%q): %v", k, err)
		}
		if _, err := s.Size(ctx, k); !errors.Is(err, blob.ErrBadKey) {
			t.Errorf("Size(%q): %v", k, err)
		}
	}
	// Nothing reached the store.
	entries, err := os.ReadDir(filepath.Join(v.Root, s3test.Bucket))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("bad keys left objects: %v", entries)
	}
}

// countingTransport records the most requests it ever had in flight at once.
type countingTransport struct {
	next          http.RoundTripper
	mu            sync.Mutex
	inflight, max int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.inflight++
	c.max = max(c.max, c.inflight)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inflight--
		c.mu.Unlock()
	}()
	return c.next.RoundTrip(r)
}

func TestConcurrency(t *testing.T) {
	v := s3test.Start(t)
	ctx := context.Background()
	cfg, err := ParseURL(v.URL + "&max_parallel=4")
	if err != nil {
		t.Fatal(err)
	}
	counter := &countingTransport{}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter }
	s, err := OpenConfig(ctx, cfg, DefaultCredentials(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 48
	blobs := make([][]byte, n)
	for i := range blobs {
		blobs[i] = randBytes(t, 64<<10+i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := key(3, i)
			if err := s.Put(ctx, k, blobs[i]); err != nil {
				errs <- err
				return
			}
			got, err := s.Get(ctx, k, int64(i), -1)
			if err != nil || !bytes.Equal(got, blobs[i][i:]) {
				errs <- fmt.Errorf("key %d: %d bytes, %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("at most %d requests in flight", counter.max)
	if counter.max > 4 || counter.max < 2 {
		t.Errorf("%d requests in flight at once; want 2..4 with max_parallel=4", counter.max)
	}
}

// The S3 server dies while uploads are in flight and comes back: every Put
// eventually succeeds and the data is intact.
func TestServerRestartDuringUploads(t *testing.T) {
	v := s3test.Start(t)
	ctx := context.Background()
	logs := &testWriter{t: t}
	s, err := Open(ctx, v.URL+"&retry_for=90s", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const n = 24
	blobs := make([][]byte, n)
	for i := range blobs {
		blobs[i] = randBytes(t, 1<<20)
	}
	before := randBytes(t, 4096) // stored before the outage, read during it
	if err := s.Put(ctx, key(4, 1000), before); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, n)
	started := make(chan struct{}, n)
	for i := range n {
		go func() {
			started <- struct{}{}
			errs <- s.Put(ctx, key(4, i), blobs[i])
		}()
	}
	for range n {
		<-started
	}
	time.Sleep(5 * time.Millisecond) // let some requests reach the wire
	v.Stop()
	time.Sleep(2 * time.Second)
	// Reads fail over the same outage and recover too.
	getErr := make(chan error, 1)
	go func() {
		got, err := s.Get(ctx, key(4, 1000), 10, 100)
		if err == nil && !bytes.Equal(got, before[10:110]) {
			err = errors.New("wrong bytes")
		}
		getErr <- err
	}()
	time.Sleep(500 * time.Millisecond)
	v.Restart()
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Put across a restart: %v", err)
		}
	}
	if err := <-getErr; err != nil {
		t.Errorf("Get across a restart: %v", err)
	}
	for i := range n {
		got, err := s.Get(ctx, key(4, i), 0, -1)
		if err != nil || !bytes.Equal(got, blobs[i]) {
			t.Errorf("blob %d after restart: %d bytes, %v", i, len(got), err)
		}
	}
	t.Logf("%d failed attempts retried; %d requests succeeded after retries",
		logs.count("s3 request failed, retrying"), logs.count("succeeded after retries"))
	if logs.count("s3 request failed, retrying") == 0 || logs.count("succeeded after retries") == 0 {
		t.Error("the outage did not hit any request: the test proved nothing")
	}
}

func TestRetryBounded(t *testing.T) {
	s, v := openTest(t, "&retry_for=1s")
	v.Stop()
	start := time.Now()
	err := s.Put(context.Background(), key(5, 1), []byte("x"))
	if err == nil {
		t.Fatal("Put to a stopped server succeeded")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("gave up after %v, want about retry_for", d)
	}
	// A context deadline ends retries early even with a long retry_for.
	s.retryFor = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = s.Get(ctx, key(5, 1), 0, -1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get with an expired context: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("context deadline honoured only after %v", d)
	}
}

// Chunks deleted or changed on the S3 side are reported as such: nothing is cached.
func TestTamperedBehindTheStore(t *testing.T) {
	s, v := openTest(t, "")
	ctx := context.Background()
	k := key(6, 1)
	data := randBytes(t, 200<<10)
	if err := s.Put(ctx, k, data); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, k, 0, -1); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %v", err)
	}
	path := v.ObjectPath(k)
	stored, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(stored, data) {
		t.Fatalf("object file %s: %v", path, err)
	}
	// Corrupt one byte in place.
	bad := bytes.Clone(data)
	bad[100<<10] ^= 0xff
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, k, 0, -1); err != nil || !bytes.Equal(got, bad) {
		t.Errorf("Get after corruption: %d bytes, %v; want the corrupted bytes as stored", len(got), err)
	}
	if got, err := s.Get(ctx, k, 100<<10, 1); err != nil || got[0] != bad[100<<10] {
		t.Errorf("ranged Get after corruption: %v, %v", got, err)
	}
	// Truncated behind our back: what is there now, not what was there.
	if err := os.Truncate(path, 1000); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, k, 900, 200); err != nil || !bytes.Equal(got, bad[900:1000]) {
		t.Errorf("read across a truncated end: %d bytes, %v", len(got), err)
	}
	if n, err := s.Size(ctx, k); err != nil || n != 1000 {
		t.Errorf("Size after truncation: %d, %v", n, err)
	}
	// Deleted.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, k, 0, -1); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Get after removal: %v", err)
	}
	if _, err := s.Size(ctx, k); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Size after removal: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	v := s3test.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := ParseURL(v.URL)
	if err != nil {
		t.Fatal(err)
	}
	missing := cfg
	missing.Bucket = "no-such-bucket"
	if _, err := OpenConfig(ctx, missing, credentials.NewStaticV4(s3test.AccessKey, s3test.SecretKey, ""), testLogger(t)); err == nil ||
		!strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing bucket: %v", err)
	}
	start := time.Now()
	if _, err := OpenConfig(ctx, cfg, credentials.NewStaticV4(s3test.AccessKey, "wrong-secret", ""), testLogger(t)); err == nil {
		t.Error("wrong secret accepted")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("wrong credentials retried for %v; they are not transient", d)
	}
	if _, err := OpenConfig(ctx, cfg, credentials.NewStaticV4("", "", ""), testLogger(t)); err == nil ||
		!strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Errorf("no credentials: %v", err)
	}
}

// Credentials come from the shared credentials file when the environment has none.
func TestCredentialsFile(t *testing.T) {
	v := s3test.Start(t)
	file := filepath.Join(t.TempDir(), "credentials")
	content := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3test.AccessKey, s3test.SecretKey)
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, v.URL, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, key(8, 1), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	// And with neither, Open says what is missing.
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	if _, err := Open(ctx, v.URL, testLogger(t)); err == nil {
		t.Error("Open without credentials succeeded")
	}
}

func benchStore(b *testing.B) *Store {
	s, _ := openTest(b, "")
	return s
}

// go test -run - -bench . -benchtime 64x ./remote/blob/s3
func BenchmarkPut4MiB(b *testing.B) {
	s := benchStore(b)
	data := randBytes(b, 4<<20)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Put(context.Background(), key(1, i), data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPut4MiBParallel(b *testing.B) {
	s := benchStore(b)
	data := randBytes(b, 4<<20)
	b.SetBytes(int64(len(data)))
	var mu sync.Mutex
	next := 0
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			if err := s.Put(context.Background(), key(1, i), data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkGet4MiB(b *testing.B) {
	s := benchStore(b)
	data := randBytes(b, 4<<20)
	if err := s.Put(context.Background(), key(1, 0), data); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Get(context.Background(), key(1, 0), 0, -1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet4MiBParallel(b *testing.B) {
	s := benchStore(b)
	data := randBytes(b, 4<<20)
	if err := s.Put(context.Background(), key(1, 0), data); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Get(context.Background(), key(1, 0), 0, -1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkGet64KiBRange(b *testing.B) {
	s := benchStore(b)
	data := randBytes(b, 4<<20)
	if err := s.Put(context.Background(), key(1, 0), data); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(64 << 10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := int64(i%63) * 64 << 10
		if _, err := s.Get(context.Background(), key(1, 0), off, 64<<10); err != nil {
			b.Fatal(err)
		}
	}
}
