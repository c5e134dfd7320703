package fs

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestDirAhead: after a fresh mount, reading one small file of a directory
// fetches the directory's other small files in the background (from a
// remote cloud they land in the chunk cache), but not its big files or what
// is in its subdirectories; and every file still reads back right.
func TestDirAhead(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	must(t, os.MkdirAll(m.p("d/sub"), 0o755))
	want := map[string][]byte{}
	for i := range 12 {
		name := fmt.Sprintf("d/f%02d", i)
		want[name] = randBytes(1000 + 300*i)
	}
	want["d/big"] = randBytes(3 * segSize)
	want["d/sub/g"] = randBytes(2000)
	for name, data := range want {
		must(t, os.WriteFile(m.p(name), data, 0o644))
	}
	m.flush()
	m.unmount()

	m = c.mount(t, t.TempDir(), nil)
	ino := func(name string) uint64 {
		fi, err := os.Stat(m.p(name))
		must(t, err)
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	cached := func(name string) bool {
		n, err := m.d.store.GetNode(ino(name))
		must(t, err)
		a, err := m.d.sealer.OpenAttrs(n.ID, n.Attrs)
		must(t, err)
		return len(a.Chunks) > 0 && m.d.store.HasSegment(a.Chunks[0].ID.String(), 0)
	}
	got, err := os.ReadFile(m.p("d/f00"))
	must(t, err)
	if !bytes.Equal(got, want["d/f00"]) {
		t.Fatal("d/f00: wrong bytes")
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 1; i < 12; i++ {
		name := fmt.Sprintf("d/f%02d", i)
		for !cached(name) {
			if time.Now().After(deadline) {
				t.Fatalf("%s was not fetched ahead", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if cached("d/big") || cached("d/sub/g") {
		t.Error("a big file or a subdirectory's file was fetched ahead")
	}
	for name, data := range want {
		got, err := os.ReadFile(m.p(name))
		must(t, err)
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: wrong bytes", name)
		}
	}
}
