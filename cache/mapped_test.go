package cache

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestSharedFileMapping(t *testing.T) {
	for _, c := range []struct {
		line       string
		start, end uintptr
		path       string
		ok         bool
	}{
		{"7f48d5000000-7f48d7000000 rw-s 00000000 07:00 131916                     /x/meta/00006.mem", 0x7f48d5000000, 0x7f48d7000000, "/x/meta/00006.mem", true},
		{"7f48d4000000-7f48d4e3c000 r--s 00000000 07:00 131917 /x/meta/000015.sst (deleted)", 0x7f48d4000000, 0x7f48d4e3c000, "/x/meta/000015.sst (deleted)", true},
		{"00400000-01400000 r-xp 00000000 fd:01 123 /usr/bin/kumo", 0, 0, "", false},             // private: the executable
		{"7f0000000000-7f0000100000 rw-s 00000000 00:01 0 /dev/zero (deleted)", 0, 0, "", false}, // not a file (inode 0)
		{"7f0000000000-7f0000100000 rw-p 00000000 00:00 0", 0, 0, "", false},
		{"c000000000-c004000000 rw-p 00000000 00:00 0 ", 0, 0, "", false},
		{"zz-7f0000100000 rw-s 00000000 07:00 5 /f", 0, 0, "", false},
		{"7f0000100000-7f0000000000 rw-s 00000000 07:00 5 /f", 0, 0, "", false}, // end before start
		{"", 0, 0, "", false},
	} {
		s, e, p, ok := sharedFileMapping([]byte(c.line))
		if s != c.start || e != c.end || string(p) != c.path || ok != c.ok {
			t.Errorf("%q: got %#x-%#x %q %v, want %#x-%#x %q %v", c.line, s, e, p, ok, c.start, c.end, c.path, c.ok)
		}
	}
}

// TestKeepMappedUnder maps two files shared, as badger maps its files: a
// value log written through its mapping and a table written and synced
// before it is mapped and read. Once over budget both leave the resident set,
// nothing written through the mapping is lost, and the table's pages are back
// in the page cache (read again, not mapped), since lookups read them.
func TestKeepMappedUnder(t *testing.T) {
	const size = 32 << 20
	dir := t.TempDir()
	base, err := MappedRSS()
	if err != nil {
		t.Fatal(err)
	}

	vf, err := os.Create(filepath.Join(dir, "000001.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	defer vf.Close()
	if err := vf.Truncate(size); err != nil {
		t.Fatal(err)
	}
	vlog, err := unix.Mmap(int(vf.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(vlog)
	for i := 0; i < size; i += 4096 {
		vlog[i] = byte(i>>12) | 1
	}

	tp := filepath.Join(dir, "000002.sst")
	if err := os.WriteFile(tp, bytes.Repeat([]byte{7}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	tf, err := os.Open(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	if err := tf.Sync(); err != nil { // clean pages: MADV_PAGEOUT drops them from the page cache
		t.Fatal(err)
	}
	table, err := unix.Mmap(int(tf.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(table)
	sum := 0
	for i := 0; i < size; i += 4096 {
		sum += int(table[i])
	}

	before, err := MappedRSS()
	if err != nil {
		t.Fatal(err)
	}
	if before < base+2*size-size/4 {
		t.Fatalf("RssFile %d MiB after touching two %d MiB shared mappings (%d MiB before): the test does not measure what it should", before>>20, size>>20, base>>20)
	}
	budget := base + size/4
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		KeepMappedUnder(ctx, MappedBudget{Floor: budget}, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	deadline := time.Now().Add(10 * time.Second)
	var after int64
	for {
		if after, err = MappedRSS(); err != nil {
			t.Fatal(err)
		}
		if after <= budget || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	t.Logf("RssFile %d MiB → %d MiB (budget %d MiB)", before>>20, after>>20, budget>>20)
	if after > budget {
		t.Fatalf("RssFile %d MiB before, %d MiB after, budget %d MiB: the mapped files' pages stayed resident", before>>20, after>>20, budget>>20)
	}

	// The table's pages are read back into the page cache (mincore reports
	// the page cache for a file mapping) without being mapped again.
	vec := make([]byte, size/4096)
	cached := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&table[0])), uintptr(len(table)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
			t.Fatal(errno)
		}
		cached = 0
		for _, v := range vec {
			cached += int(v & 1)
		}
		if cached > len(vec)*3/4 {
			break
		}
	}
	if cached <= len(vec)*3/4 {
		t.Errorf("%d of the table's %d pages in the page cache after the page-out: it was not read again", cached, len(vec))
	}
	if now, _ := MappedRSS(); now > budget {
		t.Errorf("RssFile %d MiB after reading the table again: the read mapped it", now>>20)
	}

	// Nothing written through the mapping is lost.
	for i := 0; i < size; i += 4096 {
		if want := byte(i>>12) | 1; vlog[i] != want {
			t.Fatalf("byte %d of the value log mapping is %d after the page-out, want %d", i, vlog[i], want)
		}
	}
	b := make([]byte, 1)
	if _, err := vf.ReadAt(b, 4096*7); err != nil || b[0] != 7|1 {
		t.Fatalf("value log byte %d: %v %v, want %d", 4096*7, b, err, 7|1)
	}
	if sum != 7*size/4096 {
		t.Fatalf("table sum %d", sum)
	}
}

// TestPageOutSharedTables: the tables are left mapped unless asked for
// (KeepMappedUnder asks at most every tablesEvery: each time reads them all
// again), and paged out when asked.
func TestPageOutSharedTables(t *testing.T) {
	const size = 16 << 20
	p := filepath.Join(t.TempDir(), "000003.sst")
	if err := os.WriteFile(p, bytes.Repeat([]byte{3}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	sum := 0
	for i := 0; i < size; i += 4096 {
		sum += int(m[i])
	}
	before, err := MappedRSS()
	if err != nil {
		t.Fatal(err)
	}
	if _, tables, err := PageOutShared(0, false); err != nil || tables {
		t.Fatalf("PageOutShared(0, false) = %v, %v", tables, err)
	}
	kept, _ := MappedRSS()
	if kept < before-size/4 {
		t.Errorf("RssFile %d MiB → %d MiB: the table was paged out without being asked", before>>20, kept>>20)
	}
	if _, tables, err := PageOutShared(0, true); err != nil || !tables {
		t.Fatalf("PageOutShared(0, true) = %v, %v", tables, err)
	}
	after, _ := MappedRSS()
	if after > before-size/2 {
		t.Errorf("RssFile %d MiB → %d MiB: the table stayed resident", before>>20, after>>20)
	}
	if sum != 3*size/4096 {
		t.Fatalf("table sum %d", sum)
	}
}

// TestKeepMappedUnderHeapRoom: mapped pages may take the room the anonymous
// memory leaves of the budget's total, so they stay mapped (and in the page
// cache) while the process is under it, and go once the total is lower.
func TestKeepMappedUnderHeapRoom(t *testing.T) {
	const size = 32 << 20
	f, err := os.Create(filepath.Join(t.TempDir(), "000001.vlog"))
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
		m[i] = 1
	}
	anon, file, err := residentSet()
	if err != nil {
		t.Fatal(err)
	}
	run := func(b MappedBudget) int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		KeepMappedUnder(ctx, b, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
		now, err := MappedRSS()
		if err != nil {
			t.Fatal(err)
		}
		return now
	}
	floor := file - size*3/4 // under what is mapped now
	if now := run(MappedBudget{Floor: floor, Total: anon + file + 64<<20}); now < file-size/4 {
		t.Fatalf("RssFile %d → %d MiB with %d MiB of room left by the heap: paged out although under the total", file>>20, now>>20, 64)
	}
	if now := run(MappedBudget{Floor: floor, Total: anon}); now > floor {
		t.Fatalf("RssFile %d → %d MiB with a total the heap fills: not paged out to the floor (%d MiB)", file>>20, now>>20, floor>>20)
	}
}
