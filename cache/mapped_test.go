package cache

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSharedFileMapping(t *testing.T) {
	for _, c := range []struct {
		line       string
		start, end uintptr
		ok         bool
	}{
		{"7f48d5000000-7f48d7000000 rw-s 00000000 07:00 131916                     /x/meta/00006.mem", 0x7f48d5000000, 0x7f48d7000000, true},
		{"7f48d4000000-7f48d4e3c000 r--s 00000000 07:00 131917 /x/meta/000015.sst (deleted)", 0x7f48d4000000, 0x7f48d4e3c000, true},
		{"00400000-01400000 r-xp 00000000 fd:01 123 /usr/bin/kumo", 0, 0, false},             // private: the executable
		{"7f0000000000-7f0000100000 rw-s 00000000 00:01 0 /dev/zero (deleted)", 0, 0, false}, // not a file (inode 0)
		{"7f0000000000-7f0000100000 rw-p 00000000 00:00 0", 0, 0, false},
		{"c000000000-c004000000 rw-p 00000000 00:00 0 ", 0, 0, false},
		{"zz-7f0000100000 rw-s 00000000 07:00 5 /f", 0, 0, false},
		{"7f0000100000-7f0000000000 rw-s 00000000 07:00 5 /f", 0, 0, false}, // end before start
		{"", 0, 0, false},
	} {
		s, e, ok := sharedFileMapping([]byte(c.line))
		if s != c.start || e != c.end || ok != c.ok {
			t.Errorf("%q: got %#x-%#x %v, want %#x-%#x %v", c.line, s, e, ok, c.start, c.end, c.ok)
		}
	}
}

// TestKeepMappedUnder maps a file shared, as badger maps its files, touches
// every page, and checks the pages leave the resident set once over budget
// while the file keeps what was written through the mapping.
func TestKeepMappedUnder(t *testing.T) {
	const size = 64 << 20
	p := filepath.Join(t.TempDir(), "000001.vlog")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	for i := 0; i < size; i += 4096 {
		m[i] = byte(i>>12) | 1
	}
	before, err := MappedRSS()
	if err != nil {
		t.Fatal(err)
	}
	if before < size {
		t.Fatalf("RssFile %d MiB after touching a %d MiB shared mapping: the test does not measure what it should", before>>20, size>>20)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		KeepMappedUnder(ctx, size/2, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	deadline := time.Now().Add(10 * time.Second)
	var after int64
	for {
		if after, err = MappedRSS(); err != nil {
			t.Fatal(err)
		}
		if after < before-size/2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if after >= before-size/2 {
		t.Fatalf("RssFile %d MiB before, %d MiB after: the mapped file's pages stayed resident", before>>20, after>>20)
	}
	// Nothing written through the mapping is lost: the pages are read back
	// from the page cache (or the disk) when touched again.
	for i := 0; i < size; i += 4096 {
		if want := byte(i>>12) | 1; m[i] != want {
			t.Fatalf("byte %d of the mapping is %d after the page-out, want %d", i, m[i], want)
		}
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 4096*7); err != nil || b[0] != 7|1 {
		t.Fatalf("file byte %d: %v %v, want %d", 4096*7, b, err, 7|1)
	}
	t.Logf("RssFile %d MiB → %d MiB", before>>20, after>>20)
}
