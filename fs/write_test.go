package fs

import (
	"errors"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSmallWrites: 4 KiB appends and odd-sized overwrites (partial segments
// patched in memory, in the file, and over an uploaded base), with pauses
// that let the uploader take a generation mid-way; the result must match a
// model after a remount on the same cache and from the cloud.
func TestSmallWrites(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	cache := t.TempDir()
	m := c.mount(t, cache, nil)
	r := rand.New(rand.NewPCG(1, 2))
	var model []byte
	f, err := os.OpenFile(m.p("f"), os.O_RDWR|os.O_CREATE, 0o644)
	must(t, err)
	writeAt := func(p []byte, off int) {
		t.Helper()
		if _, err := f.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
		if end := off + len(p); end > len(model) {
			model = append(model, make([]byte, end-len(model))...)
		}
		copy(model[off:], p)
	}
	for round := 0; round < 3; round++ {
		for k := 0; k < 40; k++ { // 160 KiB of 4 KiB appends
			writeAt(randBytes(4096), len(model))
		}
		for k := 0; k < 20; k++ {
			n := 1 + r.IntN(100000)
			writeAt(randBytes(n), r.IntN(len(model)+70000))
		}
		if round == 1 {
			// Cut inside a segment, then write a little past the new end in
			// the same segment: the gap must read as zeros, not as the old
			// bytes.
			must(t, f.Truncate(int64(len(model)-12345)))
			model = model[:len(model)-12345]
			writeAt([]byte("after the gap"), len(model)+100)
		}
		time.Sleep(400 * time.Millisecond) // quiet time passes: the uploader takes this generation
	}
	must(t, f.Sync())
	must(t, f.Close())
	m.unmount()

	m = c.mount(t, cache, nil) // same cache: data from layers and cached chunks
	checkFile(t, m.p("f"), model)
	m.flush()
	m.unmount()

	m = c.mount(t, t.TempDir(), nil) // empty cache: data from the cloud
	checkFile(t, m.p("f"), model)
}

// TestQuotaAfterDelete: bytes of a file deleted before its upload stop
// counting against the quota (the running total is recounted when it says
// no), and real growth is still refused.
func TestQuotaAfterDelete(t *testing.T) {
	c := startCloud(t, t.TempDir(), 4<<20)
	m := c.mount(t, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour })
	f, err := os.Create(m.p("gone"))
	must(t, err)
	_, err = f.Write(randBytes(3 << 20))
	must(t, err)
	must(t, os.Remove(m.p("gone")))
	must(t, f.Close())

	// The kernel sends the release of "gone" after close returns: until it
	// arrives the file is still open, and its bytes still count.
	kept := randBytes(3 << 20)
	err = os.WriteFile(m.p("kept"), kept, 0o644)
	for deadline := time.Now().Add(5 * time.Second); errors.Is(err, syscall.EDQUOT) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		err = os.WriteFile(m.p("kept"), kept, 0o644)
	}
	must(t, err)
	err = os.WriteFile(m.p("more"), randBytes(2<<20), 0o644)
	if !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("growth beyond the quota: %v, want EDQUOT", err)
	}
}
