package fs

import (
	"bytes"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
)

// flushCounter counts the FLUSH requests in go-fuse's debug log (one
// record a Write), but for go-fuse's own probe at mount (its node id is
// the largest).
type flushCounter struct{ n atomic.Int64 }

func (c *flushCounter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(": FLUSH n")) && !bytes.Contains(p, []byte(": FLUSH n18446744073709551615 ")) {
		c.n.Add(1)
	}
	return len(p), nil
}

// TestReadOnlyCloseSendsNoFlush: a handle that cannot write is opened with
// FOPEN_NOFLUSH, so closing it costs no round trip (git add and grep close
// every file they read); a handle that can write still gets its FLUSH, which
// is where a close saves what was written.
func TestReadOnlyCloseSendsNoFlush(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	var flushes flushCounter
	m := c.mount(t, t.TempDir(), func(o *Options) {
		o.Debug = true
		o.Logger = slog.New(slog.NewTextHandler(&flushes, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	p := m.p("f")
	want := []byte("read me, close me")
	must(t, os.WriteFile(p, want, 0o644))
	if n := flushes.n.Load(); n != 1 {
		t.Fatalf("writing a file and closing it sent %d FLUSH requests, want 1 (is the debug log still counted?)", n)
	}

	flushes.n.Store(0)
	for range 20 {
		got, err := os.ReadFile(p)
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	if n := flushes.n.Load(); n != 0 {
		t.Errorf("20 read-only opens and closes sent %d FLUSH requests, want 0", n)
	}

	// Open for writing, write nothing: the kernel still asks, as it must
	// for any handle that could have written.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	must(t, f.Close())
	if n := flushes.n.Load(); n != 1 {
		t.Errorf("an O_RDWR open and close sent %d FLUSH requests, want 1", n)
	}
}
