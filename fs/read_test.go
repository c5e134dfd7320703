package fs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/remote/client"
)

// inProcess is a client of c's server without a socket, as the embedded
// cloud of `kumo mount` has.
func (c *cloud) inProcess(t testing.TB) *client.Client {
	t.Helper()
	cl, err := client.New(client.Options{BaseURL: c.url, Logger: testLogger(t),
		HTTPClient: &http.Client{Transport: client.NewInProcess(c.srv.Handler())}})
	if err != nil {
		t.Fatal(err)
	}
	cl.SetToken(c.sess.Token)
	return cl
}

func (c *cloud) mountInProcess(t testing.TB, cacheDir string) *mounted {
	t.Helper()
	cl := c.inProcess(t)
	return c.mount(t, cacheDir, func(o *Options) { o.Client = cl })
}

// cachedChunkFiles lists the chunk cache's files.
func cachedChunkFiles(t testing.TB, cacheDir string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(cacheDir, "chunks"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestReadInProcessCloud reads a multi-chunk file back from an in-process
// cloud: sequentially (whole chunks with read-ahead, kept in memory and not
// copied into the chunk cache), at random (single segments, which are cached)
// and from several readers at once.
func TestReadInProcessCloud(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mountInProcess(t, t.TempDir())
	data := randBytes(2*chunk.Size + 300000) // 3 chunks, the last one short
	must(t, os.WriteFile(m.p("f"), data, 0o644))
	m.flush()
	m.unmount()

	cache := t.TempDir()
	m = c.mountInProcess(t, cache)
	checkFile(t, m.p("f"), data)
	if files := cachedChunkFiles(t, cache); len(files) != 0 {
		t.Errorf("a sequential read from the in-process cloud cached %d chunk files", len(files))
	}
	m.unmount()

	cache = t.TempDir()
	m = c.mountInProcess(t, cache)
	f, err := os.Open(m.p("f"))
	must(t, err)
	off := int64(chunk.Size + 5*chunk.SegmentSize + 1000)
	buf := make([]byte, 4096)
	_, err = f.ReadAt(buf, off)
	must(t, err)
	must(t, f.Close())
	if !bytes.Equal(buf, data[off:off+4096]) {
		t.Fatal("random read: wrong bytes")
	}
	// Nothing is copied from the in-process cloud into the chunk cache.
	time.Sleep(100 * time.Millisecond) // caching would happen after the answer
	if files := cachedChunkFiles(t, cache); len(files) != 0 {
		t.Fatalf("a random read from the in-process cloud cached chunk files %v", files)
	}
	m.unmount()

	// Readers at once, each on its own handle: two sequential (one from a
	// chunk's middle), random ones, all 1 MiB or odd-sized reads.
	m = c.mountInProcess(t, t.TempDir())
	var wg sync.WaitGroup
	for _, r := range []struct {
		start, step, size int64
	}{{0, 1 << 20, 1 << 20}, {chunk.Size + 12345, 1 << 20, 1 << 20}, {777, 1234567, 4096}, {3 * chunk.SegmentSize, 999999, 70000}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(m.p("f"))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			buf := make([]byte, r.size)
			for o := r.start; o < int64(len(data)); o += r.step {
				n, err := f.ReadAt(buf, o)
				if err != nil && !errors.Is(err, io.EOF) {
					t.Errorf("read at %d: %v", o, err)
					return
				}
				if !bytes.Equal(buf[:n], data[o:o+int64(n)]) {
					t.Errorf("read at %d: wrong bytes", o)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestReadTamperedInProcess: a chunk tampered on the cloud is EIO on every
// read path (sequential, whole chunk kept in memory; random, one segment),
// every time, and no bad segment is cached; the untouched segments still read.
func TestReadTamperedInProcess(t *testing.T) {
	dir := t.TempDir()
	c := startCloud(t, dir, 0)
	m := c.mountInProcess(t, t.TempDir())
	data := randBytes(chunk.Size + 100000)
	must(t, os.WriteFile(m.p("f"), data, 0o644))
	m.flush()
	m.unmount()

	// Flip a byte in segment 2 of the first (full) chunk's blob.
	var blob string
	filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil && fi.Size() == chunk.MaxSealedSize {
				blob = p
			}
		}
		return nil
	})
	if blob == "" {
		t.Fatal("no blob of a full chunk")
	}
	b, err := os.ReadFile(blob)
	must(t, err)
	b[2*chunk.SealedSegmentSize+500] ^= 0x10
	must(t, os.WriteFile(blob, b, 0o644))

	cache := t.TempDir()
	m = c.mountInProcess(t, cache)
	for i := 0; i < 2; i++ {
		if _, err := os.ReadFile(m.p("f")); !errors.Is(err, syscall.EIO) {
			t.Fatalf("sequential read %d of a tampered chunk: %v, want EIO", i, err)
		}
	}
	f, err := os.Open(m.p("f"))
	must(t, err)
	defer f.Close()
	buf := make([]byte, 100)
	for i := 0; i < 2; i++ {
		if _, err := f.ReadAt(buf, 2*chunk.SegmentSize+10); !errors.Is(err, syscall.EIO) {
			t.Fatalf("random read %d of the tampered segment: %v, want EIO", i, err)
		}
	}
	id := filepath.Base(blob)
	for _, files := range [][]string{cachedChunkFiles(t, cache)} {
		for _, name := range files {
			if m.d.store.HasSegment(name, 2) {
				t.Fatalf("tampered segment of %s cached (blob %s)", name, id)
			}
		}
	}
	for _, o := range []int64{10, 3*chunk.SegmentSize + 5, chunk.Size + 50} {
		if _, err := f.ReadAt(buf, o); err != nil || !bytes.Equal(buf, data[o:o+100]) {
			t.Fatalf("untouched data at %d: %v", o, err)
		}
	}
}

// TestReadManyChunksConcurrently reads a file of more chunks than are kept
// in memory with sequential and random readers at once, so kept chunks are
// evicted and their buffers reused while others read: every byte must match.
func TestReadManyChunksConcurrently(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mountInProcess(t, t.TempDir())
	n := keptChunks + 3
	data := randBytes(n*chunk.Size - 1000)
	must(t, os.WriteFile(m.p("f"), data, 0o644))
	m.flush()
	m.unmount()

	m = c.mountInProcess(t, t.TempDir())
	var wg sync.WaitGroup
	read := func(start, step, size int64) {
		defer wg.Done()
		f, err := os.Open(m.p("f"))
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		buf := make([]byte, size)
		for o := start; o < int64(len(data)); o += step {
			k, err := f.ReadAt(buf, o)
			if err != nil && !errors.Is(err, io.EOF) {
				t.Errorf("read at %d: %v", o, err)
				return
			}
			if !bytes.Equal(buf[:k], data[o:o+int64(k)]) {
				t.Errorf("read at %d: wrong bytes", o)
				return
			}
		}
	}
	wg.Add(4)
	go read(0, 1<<20, 1<<20)
	go read(3*chunk.Size+4096, 1<<20, 1<<20)
	go read(5*chunk.Size, 128<<10, 128<<10)
	go read(100, 3*chunk.Size/7, 8192)
	wg.Wait()
	m.d.fetch.mu.Lock()
	defer m.d.fetch.mu.Unlock()
	if len(m.d.fetch.kept) > keptChunks || len(m.d.fetch.free) > maxFreeChunkBufs {
		t.Errorf("%d chunks kept, %d buffers spare", len(m.d.fetch.kept), len(m.d.fetch.free))
	}
}
