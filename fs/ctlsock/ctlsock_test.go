package ctlsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kfs "kumo/fs"
)

// privateTemp points the socket directory at a fresh temp dir (no
// XDG_RUNTIME_DIR) and returns the kumo-UID directory that Dir will use.
func privateTemp(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", base)
	return Dir()
}

type fakeDaemon struct {
	pending   atomic.Int64
	unmounted atomic.Bool
}

func (f *fakeDaemon) Status() kfs.Status {
	var s kfs.Status
	s.Online = true
	s.Queue.Files = int(f.pending.Load())
	s.Queue.Bytes = f.pending.Load() * 100
	return s
}

func (f *fakeDaemon) Flush(ctx context.Context) error {
	for f.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
			f.pending.Add(-1)
		}
	}
	return nil
}

func (f *fakeDaemon) Unmount() error { f.unmounted.Store(true); return nil }

func TestListenCreatesPrivateDir(t *testing.T) {
	dir := privateTemp(t)
	s, err := Listen("/mnt/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir %s: %v %v, want a 0700 directory", dir, fi.Mode(), err)
	}
	if fi, err := os.Stat(s.Path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v %v, want 0600", s.Path(), fi.Mode(), err)
	}
}

// TestRefusesUnsafeDir: a directory open to others, a symlink or a file
// where the socket directory should be is refused by both sides, and
// nothing is changed.
func TestRefusesUnsafeDir(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"mode 0777", func(t *testing.T, dir string) {
			must(t, os.Mkdir(dir, 0o700))
			must(t, os.Chmod(dir, 0o777))
		}, "mode 0777"},
		{"mode 0710", func(t *testing.T, dir string) {
			must(t, os.Mkdir(dir, 0o700))
			must(t, os.Chmod(dir, 0o710))
		}, "mode 0710"},
		{"symlink", func(t *testing.T, dir string) {
			target := filepath.Join(filepath.Dir(dir), "elsewhere")
			must(t, os.Mkdir(target, 0o700))
			must(t, os.Symlink(target, dir))
		}, "is a symlink"},
		{"file", func(t *testing.T, dir string) {
			must(t, os.WriteFile(dir, nil, 0o600))
		}, "not a directory"},
		{"another owner", func(t *testing.T, dir string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to chown")
			}
			must(t, os.Mkdir(dir, 0o700))
			must(t, os.Chown(dir, 65534, 65534))
		}, "belongs to uid 65534"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := privateTemp(t)
			c.setup(t, dir)
			before, _ := os.Lstat(dir)
			if s, err := Listen("/mnt/x", nil); err == nil || !strings.Contains(err.Error(), c.want) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Listen: %v, want an error saying %q", err, c.want)
			}
			if _, err := Dial("/mnt/x"); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Dial: %v, want an error saying %q", err, c.want)
			}
			after, _ := os.Lstat(dir)
			if before.Mode() != after.Mode() {
				t.Fatalf("mode changed: %v -> %v", before.Mode(), after.Mode())
			}
		})
	}
}

func TestUnmountRoundTrip(t *testing.T) {
	privateTemp(t)
	const mnt = "/mnt/drive"
	s, err := Listen(mnt, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDaemon{}
	d.pending.Store(5)
	go s.Serve(d)

	c, err := Dial(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if c.PID != os.Getpid() || c.Mountpoint != mnt {
		t.Fatalf("greeting: pid %d mount %q", c.PID, c.Mountpoint)
	}
	p, err := c.Status()
	if err != nil || p.Files != 5 || p.Bytes != 500 || p.State != "online" {
		t.Fatalf("status: %+v %v", p, err)
	}
	c.Close()

	c, err = Dial(mnt)
	if err != nil {
		t.Fatal(err)
	}
	var reports int
	done := make(chan error, 1)
	go func() {
		_, err := c.Unmount(context.Background(), false, func(Progress) { reports++ })
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); !d.unmounted.Load() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	s.Close()
	c.conn.Close() // as the daemon's exit would: the client stops waiting
	if err := <-done; err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if !d.unmounted.Load() || reports == 0 {
		t.Fatalf("unmounted %v after %d reports", d.unmounted.Load(), reports)
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

// TestOneDaemonPerMountpoint: a second Listen for the same mount point says
// which daemon holds it; after Close the socket can be taken again.
func TestOneDaemonPerMountpoint(t *testing.T) {
	privateTemp(t)
	s, err := Listen("/mnt/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(&fakeDaemon{})
	_, err = Listen("/mnt/a", nil)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.PID != os.Getpid() || !strings.Contains(err.Error(), "/mnt/a is already a kumo drive (pid") {
		t.Fatalf("second Listen: %v", err)
	}
	s.Close()
	s2, err := Listen("/mnt/a", nil)
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	s2.Close()
}

// TestSocketBelongsToItsMount: a socket named after one mount point but
// answered by the daemon of another (here: linked into place) is refused.
func TestSocketBelongsToItsMount(t *testing.T) {
	privateTemp(t)
	s, err := Listen("/mnt/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := &fakeDaemon{}
	go s.Serve(d)
	must(t, os.Link(s.Path(), Path("/mnt/b")))
	_, err = Dial("/mnt/b")
	var wrong *WrongMountError
	if !errors.As(err, &wrong) || wrong.Got != "/mnt/a" {
		t.Fatalf("Dial /mnt/b reached the daemon of /mnt/a: %v", err)
	}
	if d.unmounted.Load() {
		t.Fatal("the daemon of /mnt/a was unmounted")
	}
}

func TestNoDaemon(t *testing.T) {
	dir := privateTemp(t)
	if _, err := Dial("/mnt/none"); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("no dir: %v", err)
	}
	must(t, os.Mkdir(dir, 0o700))
	if _, err := Dial("/mnt/none"); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("no socket: %v", err)
	}
	// A dead daemon's socket file: refused connection, still no daemon.
	s, err := Listen("/mnt/none", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.ln.SetUnlinkOnClose(false)
	s.Close()
	if _, err := Dial("/mnt/none"); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("stale socket: %v", err)
	}
	s, err = Listen("/mnt/none", nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	s.Close()
}

// An unmount's progress counts the shared folders' queues (member drives)
// with the account's own: the flush waits for both.
func TestProgressCountsSharedQueues(t *testing.T) {
	s := kfs.Status{Online: true,
		Queue:  kfs.QueueStatus{Files: 1, Bytes: 100, Ops: 2},
		Shared: kfs.QueueStatus{Files: 2, Bytes: 50, Ops: 3, Uploading: 1}}
	got := FromStatus(s)
	want := Progress{Files: 3, Bytes: 150, Ops: 5, Uploading: 1, State: "online"}
	if got != want {
		t.Fatalf("progress %+v, want %+v", got, want)
	}
	if p := FromStatus(kfs.Status{Online: true, Shared: kfs.QueueStatus{Ops: 1}}); !p.Pending() {
		t.Fatalf("only a shared folder's tree change queued: %+v is not pending", p)
	}
}

func TestProgressLine(t *testing.T) {
	p := Progress{Files: 3, Bytes: 12345, Ops: 7, Uploading: 1, State: "offline since 10:00:00", Note: "quota exceeded", LastError: "dial tcp: refused\nagain"}
	got, err := parseProgress(p.encode())
	p.LastError = "dial tcp: refused again"
	if err != nil || got != p {
		t.Fatalf("round trip: %+v %v, want %+v", got, err, p)
	}
	for _, bad := range []string{"files=x", `state="open`, "=1", "files"} {
		if _, err := parseProgress(bad); err == nil {
			t.Errorf("parseProgress(%q) accepted", bad)
		}
	}
	pid, mnt, err := parseGreeting(greeting(42, `/home/a b/"K"`))
	if err != nil || pid != 42 || mnt != `/home/a b/"K"` {
		t.Fatalf("greeting: %d %q %v", pid, mnt, err)
	}
	for _, bad := range []string{"", "kumo-control 1 pid=0 mountpoint=\"/x\"", "kumo-control 1 pid=3", "hello"} {
		if _, _, err := parseGreeting(bad); err == nil {
			t.Errorf("parseGreeting(%q) accepted", bad)
		}
	}
}

func FuzzParseLines(f *testing.F) {
	f.Add(greeting(7, "/mnt/x"))
	f.Add(Progress{Files: 1, State: "online", LastError: "x"}.encode())
	f.Add(`a="\x00" b=`)
	f.Fuzz(func(t *testing.T, s string) {
		if pid, mnt, err := parseGreeting(s); err == nil {
			if pid <= 0 || mnt == "" {
				t.Fatalf("accepted pid %d mount %q", pid, mnt)
			}
		}
		if p, err := parseProgress(s); err == nil {
			// What parses re-encodes to the same values.
			q, err := parseProgress(p.encode())
			if err != nil || (q != p && p.LastError == oneLine(p.LastError)) {
				t.Fatalf("re-encode of %+v: %+v %v", p, q, err)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSilentDaemon: a daemon that does not greet (an older kumo) is named
// by pid, with how to stop it.
func TestSilentDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 5 s greeting timeout")
	}
	dir := privateTemp(t)
	must(t, os.Mkdir(dir, 0o700))
	ln, err := net.Listen("unix", Path("/mnt/old"))
	must(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(10 * time.Second)
		}
	}()
	_, err = Dial("/mnt/old")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d) did not say which mount it serves", os.Getpid())) {
		t.Fatalf("Dial of a silent daemon: %v", err)
	}
}
