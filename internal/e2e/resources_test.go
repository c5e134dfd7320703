package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// duApparent is `du -s -B1 dir`: the bytes the cache really occupies on disk
// (allocated blocks). Badger preallocates its memtable and value-log files as
// sparse files (tens of MiB apparent, kilobytes allocated); the budget is about
// the disk space kumo takes from the user, so allocated blocks are what counts.
func duApparent(t testing.TB, dir string) int64 {
	t.Helper()
	n, err := duBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func duBytes(dir string) (int64, error) {
	out, err := runErr("", "du", "-s", "-B1", dir)
	if err != nil {
		return 0, fmt.Errorf("du -s -B1 %s: %v\n%s", dir, err, out)
	}
	return strconv.ParseInt(strings.Fields(out)[0], 10, 64)
}

// duSample is `du -s -B1` done in Go for a sampler goroutine: it must not fail
// the test, and files vanish under it (badger compactions) which makes du exit 1.
// Like du it counts the allocated blocks of every file and directory, hard
// links once.
func duSample(dir string) int64 {
	var total int64
	seen := map[uint64]bool{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total
}

// largestFiles describes the biggest files below dir (apparent and allocated).
func largestFiles(dir string, n int) string {
	type f struct {
		p           string
		size, alloc int64
	}
	var fs_ []f
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		var alloc int64
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			alloc = st.Blocks * 512
		}
		rel, _ := filepath.Rel(dir, p)
		fs_ = append(fs_, f{rel, info.Size(), alloc})
		return nil
	})
	sort.Slice(fs_, func(i, j int) bool { return fs_[i].size > fs_[j].size })
	var b strings.Builder
	type tot struct{ n, size, alloc int64 }
	tops := map[string]*tot{}
	for _, x := range fs_ {
		top, _, _ := strings.Cut(x.p, "/")
		if tops[top] == nil {
			tops[top] = &tot{}
		}
		tops[top].n++
		tops[top].size += x.size
		tops[top].alloc += x.alloc
	}
	for top, x := range tops {
		fmt.Fprintf(&b, "  total %-34s %12d bytes (%d allocated) in %d files\n", top+"/", x.size, x.alloc, x.n)
	}
	for i, x := range fs_ {
		if i == n {
			fmt.Fprintf(&b, "  ... %d more files\n", len(fs_)-n)
			break
		}
		fmt.Fprintf(&b, "  %-40s %12d bytes (%d allocated)\n", x.p, x.size, x.alloc)
	}
	return b.String()
}

// sampler calls fn every interval until stopped, keeping the maximum it returned.
type sampler struct {
	mu   sync.Mutex
	max  int64
	stop chan struct{}
	done chan struct{}
}

func startSampler(interval time.Duration, fn func() int64) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			v := fn()
			s.mu.Lock()
			s.max = max(s.max, v)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	return s
}

func (s *sampler) finish() int64 {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max
}

// writePattern writes size deterministic bytes to p and returns their sha256.
func writePattern(t testing.TB, p string, seed uint64, size int64) [32]byte {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), newPatternReader(seed, size), make([]byte, 1<<20)); err != nil {
		f.Close()
		t.Fatalf("write %s: %v", p, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", p, err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func checkHash(t testing.TB, p string, want [32]byte) {
	t.Helper()
	got, err := hashFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:], want[:]) {
		t.Fatalf("%s: content differs from what was written", p)
	}
}

// TestCacheBudget writes and then reads three times the cache budget and checks
// that the cache directory stays within it on disk.
func TestCacheBudget(t *testing.T) {
	const budget = 64 << 20
	const fileSize = 32 << 20
	const files = 6 // 3 × budget
	// Allowance for badger's fixed files beyond the budget: none until measured.
	const allowance = 0
	limit := int64(budget+budget/10) + allowance

	// A served cloud: from the embedded one nothing is copied into the
	// chunk cache (its chunks are on this disk already).
	tg := newServedKumoTarget(t, "--cache-size", "64MiB")
	sums := make([][32]byte, files)
	writeCache := tg.m.cache
	s := startSampler(500*time.Millisecond, func() int64 { return duSample(writeCache) })
	for i := range files {
		sums[i] = writePattern(t, filepath.Join(tg.dir, fmt.Sprintf("big-%d", i)), uint64(i), fileSize)
	}
	t.Logf("write phase: cache peak %d MiB while writing %d MiB (dirty data may exceed the budget)", s.finish()>>20, files*fileSize>>20)

	tg.remount(t) // flushes: after the upload nothing is dirty any more
	if got := duApparent(t, writeCache); got > limit {
		t.Errorf("after writing %d MiB and a flushing unmount, du -s of the cache is %d bytes (%.1f MiB), budget %d MiB + 10%%:\n%s",
			files*fileSize>>20, got, float64(got)/(1<<20), budget>>20, largestFiles(writeCache, 12))
	}

	readCache := tg.m.cache
	s = startSampler(300*time.Millisecond, func() int64 { return duSample(readCache) })
	for pass := range 2 {
		for i := range files {
			checkHash(t, filepath.Join(tg.dir, fmt.Sprintf("big-%d", i)), sums[i])
		}
		t.Logf("read pass %d done", pass+1)
	}
	// Sequential reads cache whole chunks; random reads the segments they
	// fetch. One 4 KiB read per 64 KiB segment of every file is 1.5× the
	// budget of segments: the cache must fill up and evict.
	buf := make([]byte, 4096)
	for i := range files {
		f, err := os.Open(filepath.Join(tg.dir, fmt.Sprintf("big-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		// The sequential passes left the file in the kernel's page cache.
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		for off := int64(fileSize) - 64<<10; off >= 0; off -= 64 << 10 { // backwards: no read-ahead
			if _, err := f.ReadAt(buf, off); err != nil {
				t.Fatalf("random read at %d: %v", off, err)
			}
		}
		f.Close()
	}
	peak := s.finish()
	if peak < budget/2 {
		t.Errorf("reading %d MiB at random, the cache peaked at %.1f MiB: the reads were not cached, so the budget was not tested",
			files*fileSize>>20, float64(peak)/(1<<20))
	}
	t.Logf("read phase (cold cache, %d MiB read twice, then one 4 KiB read per segment): cache peak %d bytes (%.1f MiB), limit %d", files*fileSize>>20, peak, float64(peak)/(1<<20), limit)
	if peak > limit {
		t.Errorf("reading from the cloud, du -s of the cache peaked at %d bytes (%.1f MiB), budget %d MiB + 10%%:\n%s",
			peak, float64(peak)/(1<<20), budget>>20, largestFiles(readCache, 12))
	}
	tg.m.unmount(t)
	if got := duApparent(t, readCache); got > limit {
		t.Errorf("after unmount, du -s of the cache is %d bytes (%.1f MiB):\n%s", got, float64(got)/(1<<20), largestFiles(readCache, 12))
	}
}

// TestMemoryPeak copies a 1 GiB file (4 GiB with KUMO_E2E_BIG=1) into the mount
// and checks the daemon's peak RSS (VmHWM) through write, read and flush; then,
// on a new mount, the same through writing 240 MiB of small files and
// uploading them (their data goes through badger's memory-mapped value logs,
// whose pages once stayed resident: 400+ MiB).
func TestMemoryPeak(t *testing.T) {
	if testing.Short() {
		t.Skip("copies 1 GiB")
	}
	size := int64(1 << 30)
	if os.Getenv("KUMO_E2E_BIG") == "1" {
		size = 4 << 30
	}
	const limit = 300 << 20
	tg := newKumoTarget(t)
	pid := tg.m.pid()
	s := startSampler(100*time.Millisecond, func() int64 { return vmHWM(pid) })
	p := filepath.Join(tg.dir, "huge")
	start := time.Now()
	sum := writePattern(t, p, 42, size)
	wrote := time.Since(start)
	start = time.Now()
	checkHash(t, p, sum)
	read := time.Since(start)
	start = time.Now()
	tg.m.unmount(t)
	flushed := time.Since(start)
	peak := s.finish()
	t.Logf("%d MiB: write %v (%.0f MiB/s), read back %v, flushing unmount %v; daemon VmHWM %d MiB",
		size>>20, wrote.Round(time.Millisecond), float64(size>>20)/wrote.Seconds(), read.Round(time.Millisecond),
		flushed.Round(time.Millisecond), peak>>20)
	if peak == 0 {
		t.Fatal("could not read the daemon's VmHWM")
	}
	if peak > limit {
		t.Errorf("daemon peak RSS %d MiB, want < %d MiB", peak>>20, limit>>20)
	}

	tg.m = tg.m.again(t, tg.nextCache())
	pid = tg.m.pid()
	s = startSampler(100*time.Millisecond, func() int64 { return vmHWM(pid) })
	const dirs, perDir, smallSize = 240, 100, 10 << 10
	start = time.Now()
	buf := make([]byte, smallSize)
	for d := range dirs {
		dir := filepath.Join(tg.dir, "small", strconv.Itoa(d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range perDir {
			if _, err := io.ReadFull(newPatternReader(uint64(d*perDir+i), smallSize), buf); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), buf, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	wrote = time.Since(start)
	start = time.Now()
	tg.m.unmount(t)
	flushed = time.Since(start)
	peak = s.finish()
	t.Logf("%d small files (%d MiB): write %v, flushing unmount %v; daemon VmHWM %d MiB",
		dirs*perDir, dirs*perDir*smallSize>>20, wrote.Round(time.Millisecond), flushed.Round(time.Millisecond), peak>>20)
	if peak == 0 {
		t.Fatal("could not read the daemon's VmHWM")
	}
	if peak > limit {
		t.Errorf("small files: daemon peak RSS %d MiB, want < %d MiB", peak>>20, limit>>20)
	}
}
