package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/internal/keys"
	"kumo/internal/meta"
)

// TestShareMinGenRefusedDropsKernelCacheMount: files open with
// FOPEN_KEEP_CACHE, so the kernel answers reads of pages it holds without
// asking the drive. The owner's mount reads Docs/sub/b.txt through a handle
// it keeps open (pages cached); with its change feed held, the owner
// removes a writer (re-seal under generation 2, lowest accepted generation
// 2) while the cloud serves for b.txt only a generation-1 record signed by
// the removed writer.
//
// adopt: the cloud is cut off before the drive adopts the new roster, the
// sweep is off, and nothing opens or stats b.txt: the adoption itself
// drops the kernel's pages and attributes of b.txt (its state, decoded
// under generation 1, is refused now), so a read through the handle kept
// open reaches the drive and is EIO, and so is its fstat. The drive before
// dropBelowFloor left the pages: the handle read the old bytes for as long
// as it stayed open offline.
//
// handler and sweep test the other two drops alone (the adoption's off:
// keepCache). handler: before any refusal the held handle still reads the
// old bytes from the kernel's pages (the drive would refuse them: the test
// tests the cache). Then a new open of b.txt is refused (EIO), and that
// refusal drops the kernel's pages and attributes: a read through the
// handle kept open, a stat and a cat are EIO too. The old drive left the
// pages: the handle kept reading the old bytes and stat answered from the
// cached attributes. sweep: no open is needed: the sweep's refusal of the
// cloud's record drops the pages.
func TestShareMinGenRefusedDropsKernelCacheMount(t *testing.T) {
	t.Run("adopt", func(t *testing.T) { testRefusedDropsKernelCache(t, "adopt") })
	t.Run("handler", func(t *testing.T) { testRefusedDropsKernelCache(t, "handler") })
	t.Run("sweep", func(t *testing.T) { testRefusedDropsKernelCache(t, "sweep") })
}

func testRefusedDropsKernelCache(t *testing.T, mode string) {
	ctx := context.Background()
	c := startCloud(t, t.TempDir(), 0)
	owner, bob := sharedDocs(t, c)
	_, bs := bob.load(t)
	bobGen1 := bs.Joined[0].Secrets[1]
	p, hold := heldFeed(t, c)
	m := c.mount(t, t.TempDir(), func(o *Options) {
		driveShareOptions(owner)(o)
		o.Client = proxyClient(t, p.URL, owner.sess.Token)
	})
	const opWait = 20 * time.Second
	const old = "shared b\n"
	b := m.p("Docs/sub/b.txt")
	f, pread := openCachedB(t, m, b, old)

	hold.Store(true)
	if sh := removeBob(t, owner); sh.Roster.MinGen != 2 {
		t.Fatalf("lowest accepted generation after removing a writer: %d, want 2", sh.Roster.MinGen)
	}
	n, sealed := sealShareAttrsAt(t, owner, "/Docs/sub/b.txt", 100, 1, bobGen1, func(a *meta.Attrs) {})
	rec, err := keys.SignRecord(bob.acct.Identity, keys.RecordAttrs, n.ID(), nil, sealed)
	must(t, err)
	serveAttrs(p, n.ID(), rec)
	if mode != "sweep" {
		m.d.sh.stale.sweep.Store(true) // no sweep: the refusal comes from elsewhere
	}
	if mode != "adopt" {
		m.d.sh.stale.keepCache.Store(true) // only the handler's or the sweep's refusal drops
	} else {
		// The cloud cut off (the feed released into the cut): the drive
		// cannot fetch b.txt's record again, and the sweep would not run.
		p.On("", "*", hostile.Drop())
		hold.Store(false)
		waitUntil(t, 10*time.Second, "the drive offline", func() error {
			if m.d.online() {
				return errors.New("online")
			}
			return nil
		})
		kernelOp(t, m.mnt, opWait, "read sub/b.txt through the open handle offline, old roster", func() error {
			if got, err := pread(); err != nil || got != old {
				return fmt.Errorf("%q, %v", got, err)
			}
			return nil
		})
	}
	// The roster comes through the owner's own client, not the proxy.
	must(t, m.d.loadShares(ctx, 0))
	if !m.d.staleNode(n.ID()) {
		t.Fatal("b.txt's local record is not below the new lowest generation: the test tests nothing")
	}
	if mode == "adopt" {
		// No open, no stat by path: only the adoption can drop the pages.
		heldRefusedAfterAdoption(t, m, f, pread)
		if m.d.online() {
			t.Fatal("the drive was online: the test tests the offline adoption")
		}
		if !m.d.staleNode(n.ID()) {
			t.Fatal("b.txt's planted record was taken")
		}
		return
	}
	if mode == "sweep" {
		// No open: the sweep refuses the cloud's record.
		waitUntil(t, 10*time.Second, "a read through the handle kept open refused after the sweep", func() error {
			if got, err := pread(); !errors.Is(err, syscall.EIO) {
				return fmt.Errorf("read %q, %v, want EIO: the kernel still serves the pages read before the refusal", got, err)
			}
			return nil
		})
		if !m.d.staleNode(n.ID()) {
			t.Fatal("b.txt's planted record was taken")
		}
		return
	}

	// The kernel's pages answer without the drive, which would refuse.
	kernelOp(t, m.mnt, opWait, "read sub/b.txt through the open handle, no refusal yet", func() error {
		if got, err := pread(); err != nil || got != old {
			return fmt.Errorf("%q, %v: the kernel did not keep the pages, the test tests nothing", got, err)
		}
		return nil
	})

	kernelOp(t, m.mnt, opWait, "open sub/b.txt after the new roster", func() error {
		g, err := os.Open(b)
		if err == nil {
			g.Close()
			return errors.New("opened: want EIO (the cloud's record is the removed writer's, generation 1)")
		}
		if !errors.Is(err, syscall.EIO) {
			return fmt.Errorf("%v, want EIO", err)
		}
		return nil
	})

	// The pages are dropped from another goroutine once the open answered.
	waitUntil(t, 5*time.Second, "a read through the handle kept open refused", func() error {
		got, err := pread()
		if !errors.Is(err, syscall.EIO) {
			return fmt.Errorf("read %q, %v, want EIO: the kernel still serves the pages read before the refusal", got, err)
		}
		return nil
	})
	kernelOp(t, m.mnt, opWait, "stat and cat sub/b.txt after the refusal", func() error {
		if fi, err := os.Stat(b); !errors.Is(err, syscall.EIO) {
			return fmt.Errorf("stat: %v, want EIO (cached attributes answered: %v)", err, fi != nil)
		}
		if got, err := os.ReadFile(b); !errors.Is(err, syscall.EIO) {
			return fmt.Errorf("cat: %q, %v, want EIO", got, err)
		}
		return nil
	})
	m.d.mu.Lock()
	gen := m.d.states[n.ID()].kid.Gen
	m.d.mu.Unlock()
	if gen != 1 {
		t.Fatalf("b.txt's state is of generation %d: the planted record was taken", gen)
	}
	if !hold.Load() || p.Count("GET", "/v1/changes") == 0 {
		t.Fatal("the change feed was not held")
	}
}

// openCachedB opens sub/b.txt at path b on m, reads it once (want) so the
// kernel caches its pages, and returns the handle (closed at cleanup) and
// a read of it from the start.
func openCachedB(t *testing.T, m *mounted, b, want string) (*os.File, func() (string, error)) {
	t.Helper()
	const opWait = 20 * time.Second
	var f *os.File
	kernelOp(t, m.mnt, opWait, "open sub/b.txt", func() (err error) {
		f, err = os.Open(b)
		return err
	})
	t.Cleanup(func() { f.Close() })
	pread := func() (string, error) {
		buf := make([]byte, 4096)
		n, err := f.ReadAt(buf, 0)
		if n > 0 {
			return string(buf[:n]), nil // io.EOF after the short file's bytes
		}
		return "", err
	}
	kernelOp(t, m.mnt, opWait, "read sub/b.txt (its pages cached)", func() error {
		if got, err := pread(); err != nil || got != want {
			return fmt.Errorf("%q, %v", got, err)
		}
		return nil
	})
	return f, pread
}

// heldRefusedAfterAdoption waits until a read through f, a handle kept open
// on a shared file whose state a roster's adoption refused, is EIO (the
// kernel's pages of it dropped), then checks its fstat is EIO too (its
// attributes dropped).
func heldRefusedAfterAdoption(t *testing.T, m *mounted, f *os.File, pread func() (string, error)) {
	t.Helper()
	waitUntil(t, 10*time.Second, "a read through the handle kept open refused after the roster's adoption", func() error {
		if got, err := pread(); !errors.Is(err, syscall.EIO) {
			return fmt.Errorf("read %q, %v, want EIO: the kernel still serves the pages read under the old roster", got, err)
		}
		return nil
	})
	kernelOp(t, m.mnt, 20*time.Second, "fstat of the handle kept open", func() error {
		if fi, err := f.Stat(); !errors.Is(err, syscall.EIO) {
			return fmt.Errorf("%v, want EIO (cached attributes answered: %v)", err, fi != nil)
		}
		return nil
	})
}
