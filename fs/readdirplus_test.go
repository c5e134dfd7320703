package fs

import (
	"fmt"
	"os"
	"syscall"
	"testing"
)

// TestReaddirPlusListing: readdirplus answers each listed name from the
// listing taken at the directory's first read (dirHandle.Lookup) only while
// the directory's entries are unchanged. Here, between two reads of one open
// directory, the last two names are moved (f299 to g, f298 to f299): the
// rest of the listing still names the old nodes, which both still exist,
// and the kernel must get what the names are now.
func TestReaddirPlusListing(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	cacheDir := t.TempDir()
	m := c.mount(t, cacheDir, nil)
	dir := m.p("d")
	must(t, os.Mkdir(dir, 0o755))
	const files = 300 // several readdirplus requests of a page each
	for i := range files {
		must(t, os.WriteFile(fmt.Sprintf("%s/f%03d", dir, i), make([]byte, i), 0o644))
	}
	var was syscall.Stat_t
	must(t, syscall.Lstat(fmt.Sprintf("%s/f%03d", dir, files-2), &was))

	// Mounted again, so no entry of d is in the kernel's caches.
	m.unmount()
	m = c.mount(t, cacheDir, nil)
	dir = m.p("d")
	last, prev := m.p(fmt.Sprintf("d/f%03d", files-1)), m.p(fmt.Sprintf("d/f%03d", files-2))
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	must(t, err)
	defer func() {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}()
	buf := make([]byte, 512) // a few entries: the first request only
	if n, err := syscall.Getdents(fd, buf); err != nil || n == 0 {
		t.Fatalf("first read of the directory: %d, %v", n, err)
	}
	must(t, os.Rename(last, m.p("d/g")))
	must(t, os.Rename(prev, last))
	names := 0
	for { // every read is a readdirplus (go-fuse does not offer the kernel's auto mode)
		n, err := syscall.Getdents(fd, buf)
		must(t, err)
		if n == 0 {
			break
		}
		names += n
	}
	if names == 0 {
		t.Fatal("the rest of the directory read nothing")
	}
	var st syscall.Stat_t
	must(t, syscall.Lstat(last, &st))
	if st.Size != files-2 || st.Ino != was.Ino {
		t.Fatalf("after the listing went on: %s has size %d, inode %d; want f%03d's %d, inode %d",
			last, st.Size, st.Ino, files-2, files-2, was.Ino)
	}
	if err := syscall.Lstat(prev, &st); err != syscall.ENOENT {
		t.Fatalf("%s, moved away, still stats: %v (size %d)", prev, err, st.Size)
	}
	must(t, syscall.Lstat(m.p("d/g"), &st))
	if st.Size != files-1 {
		t.Fatalf("g: size %d, want %d", st.Size, files-1)
	}
	// The names the listing still holds resolve as before.
	for _, i := range []int{0, 150, files - 3} {
		must(t, syscall.Lstat(fmt.Sprintf("%s/f%03d", dir, i), &st))
		if st.Size != int64(i) {
			t.Fatalf("f%03d: size %d, want %d", i, st.Size, i)
		}
	}

	// A directory read with nothing changing: the names come from the
	// listing, with their nodes' attributes.
	syscall.Close(fd)
	fd = -1
	m.unmount()
	m = c.mount(t, cacheDir, nil)
	before := m.d.listedLookups.Load()
	ents, err := os.ReadDir(m.p("d"))
	must(t, err)
	if len(ents) != files {
		t.Fatalf("%d names, want %d", len(ents), files)
	}
	if n := m.d.listedLookups.Load() - before; n < files/2 {
		t.Fatalf("%d of %d names answered from the listing", n, files)
	}
	for _, e := range ents {
		var i int
		if _, err := fmt.Sscanf(e.Name(), "f%03d", &i); err != nil {
			continue // g
		}
		want := int64(i)
		if i == files-1 { // f298 moved there
			want = files - 2
		}
		must(t, syscall.Lstat(m.p("d/"+e.Name()), &st))
		if st.Size != want || st.Mode&0o777 != 0o644 {
			t.Fatalf("%s: size %d mode %o, want %d and 644", e.Name(), st.Size, st.Mode&0o777, want)
		}
	}
}
