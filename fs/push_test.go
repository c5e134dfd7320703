package fs

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeleteWhileUpdateQueued deletes files whose upload is committed locally
// but whose update is still queued for the cloud: the update must be
// dropped, not turned into a "recovered" conflict copy of a file the user
// deleted.
func TestDeleteWhileUpdateQueued(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), nil)
	const n = 40
	for i := range n {
		must(t, os.WriteFile(m.p(fmt.Sprintf("f%02d", i)), []byte("first"), 0o644))
	}
	m.flush()
	for i := range n {
		must(t, os.WriteFile(m.p(fmt.Sprintf("f%02d", i)), []byte(fmt.Sprintf("second %d", i)), 0o644))
	}
	// Keep changing another file so the pusher holds its queue while the
	// uploads commit (each queues an update) and the files are deleted.
	keep := m.p("keep")
	must(t, os.WriteFile(keep, nil, 0o644))
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			os.Chmod(keep, os.FileMode(0o600|i%2*0o44))
		}
	}()
	waitFor(t, 20*time.Second, func() bool { return m.d.Status().Queue.Files == 0 })
	// More ops than one batch holds, so the deletes reach the cloud in a
	// later batch than the updates.
	for i := range pushBatch + 20 {
		must(t, os.Mkdir(m.p(fmt.Sprintf("dir%03d", i)), 0o755))
	}
	var ids []uint64
	for i := range n {
		var st syscall.Stat_t
		must(t, syscall.Stat(m.p(fmt.Sprintf("f%02d", i)), &st))
		ids = append(ids, st.Ino)
		must(t, os.Remove(m.p(fmt.Sprintf("f%02d", i))))
	}
	// The kernel forgets the deleted inodes, so the drive drops their state:
	// the queued updates then name nodes it no longer has.
	waitFor(t, 10*time.Second, func() bool {
		m.d.mu.Lock()
		defer m.d.mu.Unlock()
		for _, id := range ids {
			if m.d.states[id] != nil {
				return false
			}
		}
		return true
	})
	close(stop)
	<-stopped
	m.flush()
	check := func(m *mounted) {
		t.Helper()
		names := readDirNames(t, m.mnt)
		var left []string
		for _, name := range names {
			if name != "keep" && !strings.HasPrefix(name, "dir") {
				left = append(left, name)
			}
		}
		if len(left) > 0 {
			t.Fatalf("deleted files came back: %d names, first %q", len(left), left[0])
		}
	}
	check(m)
	m.unmount()
	check(c.mount(t, t.TempDir(), nil))
}
