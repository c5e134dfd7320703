package fs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestRandomReadFillsPageCache: a 4 KiB read at random hands the rest of its
// 64 KiB segment to the kernel, so the next reads in it need no request; and
// what it stores never goes stale: not after an overwrite, not past a
// truncate.
func TestRandomReadFillsPageCache(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mountInProcess(t, t.TempDir())
	const size = 4 << 20
	data := randBytes(size)
	p := m.p("big")
	must(t, os.WriteFile(p, data, 0o644))
	m.flush()
	m.unmount()
	m = c.mountInProcess(t, t.TempDir())
	p = m.p("big")

	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
	buf := make([]byte, 4096)
	const seg = 64 << 10
	off := int64(5*seg + 3*4096)
	_, err = f.ReadAt(buf, off)
	must(t, err)
	if !bytes.Equal(buf, data[off:off+4096]) {
		t.Fatal("random read: wrong data")
	}
	// The rest of the segment shows up in the page cache.
	waitFor(t, 5e9, func() bool { return residentPages(t, f, 5*seg, seg) == seg/4096 })
	got := make([]byte, seg)
	_, err = f.ReadAt(got, 5*seg)
	must(t, err)
	if !bytes.Equal(got, data[5*seg:6*seg]) {
		t.Fatal("segment read back from the page cache differs")
	}

	// Reads at random racing with overwrites and truncates never leave
	// old data or a wrong size in the kernel's cache.
	for round := range 40 {
		off := int64(round%60+2)*seg + 4096
		_, err := f.ReadAt(buf, off) // stores its segment in the background
		must(t, err)
		w, err := os.OpenFile(p, os.O_WRONLY, 0)
		must(t, err)
		fresh := bytes.Repeat([]byte{byte(round + 1)}, 4096)
		_, err = w.WriteAt(fresh, off+4096)
		must(t, err)
		must(t, w.Close())
		copy(data[off+4096:], fresh)
		_, err = f.ReadAt(buf, off+4096)
		must(t, err)
		if !bytes.Equal(buf, fresh) {
			t.Fatalf("round %d: read after an overwrite returned old data", round)
		}
	}
	m.flush()
	_, err = f.ReadAt(buf, 40*seg+4096)
	must(t, err)
	must(t, os.Truncate(p, 40*seg+100))
	for range 20 {
		fi, err := os.Stat(p)
		must(t, err)
		if fi.Size() != 40*seg+100 {
			t.Fatalf("size %d after truncate to %d", fi.Size(), 40*seg+100)
		}
	}
	whole, err := os.ReadFile(p)
	must(t, err)
	if !bytes.Equal(whole, data[:40*seg+100]) {
		t.Fatalf("content after truncate differs (%d bytes)", len(whole))
	}
}

// residentPages counts the pages of [off, off+n) of f in the page cache.
func residentPages(t *testing.T, f *os.File, off, n int64) int {
	t.Helper()
	fi, err := f.Stat()
	must(t, err)
	mm, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	must(t, err)
	defer unix.Munmap(mm)
	vec := make([]byte, (fi.Size()+4095)/4096)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mm[0])), uintptr(len(mm)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	count := 0
	for _, v := range vec[off/4096 : (off+n)/4096] {
		count += int(v & 1)
	}
	return count
}

// TestWrittenPagesStored: the pages writes covered only in part (tar writes
// in 10 KiB records) are stored whole in the kernel's cache once the last
// writer closes, so reading a file just written asks the drive for nothing;
// and a writer that opens right after a close and changes those pages is
// never undone by the store.
func TestWrittenPagesStored(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mountInProcess(t, t.TempDir())
	const record = 10 << 10
	writeRecords := func(p string, data []byte) {
		t.Helper()
		f, err := os.Create(p)
		must(t, err)
		for off := 0; off < len(data); off += record {
			_, err := f.Write(data[off:min(off+record, len(data))])
			must(t, err)
		}
		must(t, f.Close())
	}
	// Reads that reach the drive (the uploader's reads of the layers count too).
	reads := func() uint64 { return m.d.reads.hits.Load() + m.d.reads.misses.Load() }
	// Inline files, one segment of a segment file, several segments.
	for _, size := range []int{100, 5000, 30820, 200<<10 + 7} {
		data := randBytes(size)
		p := m.p(fmt.Sprintf("f%d", size))
		writeRecords(p, data)
		f, err := os.Open(p)
		must(t, err)
		defer f.Close() // a failing test must not exit with a file of its own mount open
		pages := int64(size+4095) / 4096
		waitFor(t, 5*time.Second, func() bool { return residentPages(t, f, 0, pages*4096) == int(pages) })
		m.flush() // the upload reads the layers too: done before counting
		before := reads()
		got, err := io.ReadAll(f)
		must(t, err)
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes written in records read back differently", size)
		}
		if n := reads() - before; n != 0 {
			t.Errorf("reading %d bytes just written asked the drive %d times, want 0 (pages not stored)", size, n)
		}
	}

	// Stores in flight racing with the next writer: the content read is
	// always the last written.
	p := m.p("race")
	data := randBytes(3*record + 100)
	for round := range 60 {
		writeRecords(p, data)
		w, err := os.OpenFile(p, os.O_WRONLY, 0)
		must(t, err)
		fresh := bytes.Repeat([]byte{byte(round + 1)}, 700)
		off := record - 300 + round%5*4096 // across a record's edge
		_, err = w.WriteAt(fresh, int64(off))
		must(t, err)
		must(t, w.Close())
		want := slices.Clone(data)
		copy(want[off:], fresh)
		time.Sleep(time.Duration(round%3) * time.Millisecond)
		got, err := os.ReadFile(p)
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d: read after a rewrite differs from what was written last", round)
		}
	}
}

// TestWrittenPagesStoreNotHeldUp: a file whose cacheMu is held when the
// store worker comes to it (a truncate waiting for the file's upload, say)
// does not hold up the stores of the files closed after it, and is stored
// itself once the lock is free.
func TestWrittenPagesStoreNotHeldUp(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mountInProcess(t, t.TempDir())
	const size, record = 30820, 10 << 10 // pages left partial by the records
	const pages = (size + 4095) / 4096
	written := func(name string, closeFirst func(fi os.FileInfo)) *os.File {
		t.Helper()
		f, err := os.Create(m.p(name))
		must(t, err)
		data := randBytes(size)
		for off := 0; off < size; off += record {
			_, err := f.Write(data[off:min(off+record, size)])
			must(t, err)
		}
		fi, err := f.Stat()
		must(t, err)
		closeFirst(fi)
		must(t, f.Close())
		r, err := os.Open(m.p(name))
		must(t, err)
		t.Cleanup(func() { r.Close() })
		return r
	}
	var held *nodeState
	a := written("a", func(fi os.FileInfo) {
		m.d.mu.Lock()
		held = m.d.states[fi.Sys().(*syscall.Stat_t).Ino]
		m.d.mu.Unlock()
		held.cacheMu.Lock()
	})
	released := false
	defer func() {
		if !released {
			held.cacheMu.Unlock()
		}
	}()
	b := written("b", func(os.FileInfo) {})
	waitFor(t, 5*time.Second, func() bool { return residentPages(t, b, 0, pages*4096) == pages })
	if n := residentPages(t, a, 0, pages*4096); n == pages {
		t.Fatal("test premise: a file was stored while its cacheMu was held")
	}
	held.cacheMu.Unlock()
	released = true
	waitFor(t, 5*time.Second, func() bool { return residentPages(t, a, 0, pages*4096) == pages })
}
