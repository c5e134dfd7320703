package fs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kumo/remote/client"
	"kumo/remote/session"
)

// crashChild is run by TestKill9 in a child process: it only mounts (a
// daemon), the test writes through the mount and then kills it.
func crashChild() {
	cloudURL := os.Getenv("KUMO_CRASH_URL")
	sessPath := os.Getenv("KUMO_CRASH_SESSION")
	cacheDir := os.Getenv("KUMO_CRASH_CACHE")
	mnt := os.Getenv("KUMO_CRASH_MNT")
	s, err := session.Load(sessPath)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	cl, _ := client.New(client.Options{BaseURL: cloudURL, Token: s.Token})
	// A long quiet time: most data is still only local when the kill comes.
	d, err := Mount(context.Background(), mnt, Options{Client: cl, Session: s, CacheDir: cacheDir, QuietTime: time.Hour})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("READY")
	d.Wait()
}

func crashData(i int) []byte {
	b := bytes.Repeat([]byte(fmt.Sprintf("file %d data ", i)), 1000*(i%7+1))
	if i%5 == 0 {
		b = append(b, make([]byte, 5<<20)...) // some span two chunks
		copy(b[len(b)-10:], "last bytes")
	}
	return b
}

func TestMain(m *testing.M) {
	if os.Getenv("KUMO_CRASH_CHILD") == "1" {
		crashChild()
		return
	}
	os.Exit(m.Run())
}

func TestKill9(t *testing.T) {
	needFUSE(t)
	c := startCloud(t, t.TempDir(), 0)
	cacheDir := t.TempDir()
	mnt := t.TempDir()
	sp := filepath.Join(t.TempDir(), "s.json")
	must(t, c.sess.Save(sp))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KUMO_CRASH_CHILD=1", "KUMO_CRASH_URL="+c.url, "KUMO_CRASH_SESSION="+sp,
		"KUMO_CRASH_CACHE="+cacheDir, "KUMO_CRASH_MNT="+mnt)
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "READY" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q", sc.Text())
	}
	synced := -1
	var open []*os.File
	for i := 0; i <= 20; i++ {
		p := filepath.Join(mnt, fmt.Sprintf("f%03d", i))
		f, err := os.Create(p)
		must(t, err)
		_, err = f.Write(crashData(i))
		must(t, err)
		must(t, f.Sync())
		synced = i
		// Unsynced data after the fsync'd part may or may not survive.
		_, err = f.Write([]byte("unsynced tail"))
		must(t, err)
		open = append(open, f)
		if i == 5 {
			must(t, os.Rename(filepath.Join(mnt, "f000"), filepath.Join(mnt, "renamed")))
		}
	}
	// Mode and times set while the file is open for writing (as cp -a and
	// rsync do) are saved by the fsync or close that follows them.
	stamp := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, name := range []string{"attrs-fsynced", "attrs-closed", "attrs-empty"} {
		p := filepath.Join(mnt, name)
		f, err := os.Create(p)
		must(t, err)
		if name != "attrs-empty" {
			_, err = f.Write([]byte(name))
			must(t, err)
		}
		must(t, os.Chtimes(p, stamp, stamp))
		must(t, f.Chmod(0o640))
		if name == "attrs-fsynced" {
			must(t, f.Sync())
			open = append(open, f)
		} else {
			must(t, f.Close())
		}
	}
	// Written and closed, never fsync'd: close hands the data to the
	// daemon's store files, so a kill -9 of the daemon loses none of it
	// (inline small files, segment files, a file spanning chunks).
	for i := 0; i < 6; i++ {
		must(t, os.WriteFile(filepath.Join(mnt, fmt.Sprintf("closed%d", i)), crashData(i), 0o644))
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	for _, f := range open {
		f.Close()
	}
	exec.Command("fusermount3", "-uz", mnt).Run()
	t.Logf("killed after %d fsync'd files", synced+1)

	// Remount the same cache: everything fsync'd is there, then reaches the cloud.
	m := c.mount(t, cacheDir, nil)
	check := func(m *mounted) {
		t.Helper()
		for i := 0; i <= synced; i++ {
			name := fmt.Sprintf("f%03d", i)
			if i == 0 {
				name = "renamed" // the rename happened before later fsyncs
			}
			got, err := os.ReadFile(m.p(name))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want := crashData(i)
			if len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
				t.Fatalf("%s: %d bytes, fsync'd part differs (want %d)", name, len(got), len(want))
			}
		}
		for i := 0; i < 6; i++ {
			checkFile(t, m.p(fmt.Sprintf("closed%d", i)), crashData(i))
		}
		for _, name := range []string{"attrs-fsynced", "attrs-closed", "attrs-empty"} {
			fi, err := os.Stat(m.p(name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(stamp) {
				t.Fatalf("%s: mode %v mtime %v, want -rw-r----- and %v", name, fi.Mode(), fi.ModTime(), stamp)
			}
		}
	}
	check(m)
	m.flush()
	m.unmount()
	m2 := c.mount(t, t.TempDir(), nil)
	check(m2)
}

// TestCloseDoesNotFlush: close hands a written file to the store without a
// device flush (the contract of ext4 and gocryptfs); fsync flushes; with
// DurableClose, close flushes as fsync does. Counted with the store's
// Flushes (every fdatasync/fsync it makes).
func TestCloseDoesNotFlush(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	hour := func(o *Options) { o.QuietTime = time.Hour } // no upload commits meanwhile
	m := c.mount(t, t.TempDir(), hour)
	sizes := []int{100, 4 << 10, 200 << 10, 5 << 20} // inline, inline, segment file, two chunks
	flushesOf := func(m *mounted, name string, size int, fsync bool) int64 {
		t.Helper()
		f, err := os.Create(m.p(name))
		must(t, err)
		_, err = f.Write(bytes.Repeat([]byte{'x'}, size))
		must(t, err)
		// Nothing left for the background to sync during the close (the
		// store syncs closed files' data 100 ms later, before badger gets
		// their records).
		must(t, m.d.store.SyncAll())
		before := m.d.store.Flushes()
		if fsync {
			must(t, f.Sync())
		}
		must(t, f.Close())
		return m.d.store.Flushes() - before
	}
	for i, n := range sizes {
		// A background sync (the first listing's, the 5 s commit) may land
		// in the window: the least of three tries must be 0.
		least := int64(-1)
		for try := range 3 {
			name := fmt.Sprintf("c%d-%d", i, try)
			got := flushesOf(m, name, n, false)
			if least < 0 || got < least {
				least = got
			}
			checkFile(t, m.p(name), bytes.Repeat([]byte{'x'}, n))
		}
		if least != 0 {
			t.Errorf("close of a %d-byte file made %d device flushes (least of 3 tries), want 0", n, least)
		}
	}
	for i, n := range sizes {
		if got := flushesOf(m, fmt.Sprintf("s%d", i), n, true); got == 0 {
			t.Errorf("fsync + close of a %d-byte file made no device flush", n)
		}
	}
	d := c.mount(t, t.TempDir(), func(o *Options) { hour(o); o.DurableClose = true })
	for i, n := range sizes {
		if got := flushesOf(d, fmt.Sprintf("d%d", i), n, false); got == 0 {
			t.Errorf("DurableClose: close of a %d-byte file made no device flush", n)
		}
	}
}

// TestPowerLossAfterFsync simulates a power loss of the cache's disk
// (cache.Store.CrashImage: everything written after the last sync dropped —
// the redo log's tail, segment slots, segment files whose directory entry
// was not synced — with badger as the kernel holds it; this machine's kernel
// has no device-mapper, so dm-flakey/dm-log-writes are not used). Files
// fsync'd before are all there, byte for byte, and reach the cloud; a file
// only closed may be lost or partly zero, but the tree opens as one state:
// every name stats and reads without an error.
func TestPowerLossAfterFsync(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	px := newOfflineProxy(t, c.url)
	m := c.mount(t, t.TempDir(), func(o *Options) {
		cl, err := client.New(client.Options{BaseURL: px.url, Token: c.sess.Token, MaxRetries: -1})
		must(t, err)
		o.Client = cl
		o.QuietTime = time.Hour
	})
	px.down.Store(true) // nothing reaches the cloud: the cache alone must hold it
	must(t, os.Mkdir(m.p("dir"), 0o755))
	writeSync := func(name string, data []byte) {
		f, err := os.Create(m.p(name))
		must(t, err)
		_, err = f.Write(data)
		must(t, err)
		must(t, f.Sync())
		must(t, f.Close())
	}
	for i := 0; i < 8; i++ {
		writeSync(fmt.Sprintf("dir/synced%d", i), crashData(i))
	}
	// Save by rename, made durable by the directory's fsync.
	writeSync("dir/doc.tmp", []byte("saved by rename"))
	must(t, os.Rename(m.p("dir/doc.tmp"), m.p("dir/doc")))
	dir, err := os.Open(m.p("dir"))
	must(t, err)
	must(t, dir.Sync())
	dir.Close()
	// After the last sync: closed only, renamed, deleted, rewritten.
	for i := 0; i < 6; i++ {
		must(t, os.WriteFile(m.p(fmt.Sprintf("dir/closed%d", i)), crashData(i+10), 0o644))
	}
	must(t, os.Rename(m.p("dir/synced1"), m.p("dir/moved1")))
	must(t, os.Remove(m.p("dir/synced2")))
	// Rewritten in place (O_TRUNC), not synced; another replaced by rename.
	must(t, os.WriteFile(m.p("dir/synced3"), []byte("rewritten, not synced"), 0o644))
	must(t, os.WriteFile(m.p("dir/new4"), []byte("rewritten, not synced"), 0o644))
	must(t, os.Rename(m.p("dir/new4"), m.p("dir/synced4")))
	img := t.TempDir()
	must(t, m.d.store.CrashImage(img))
	m.unmount()
	px.down.Store(false)

	r := c.mount(t, img, nil)
	for i := 0; i < 8; i++ {
		name := fmt.Sprintf("dir/synced%d", i)
		switch i {
		case 1: // renamed after the sync: under one of the two names
			if _, err := os.Stat(r.p(name)); err != nil {
				name = "dir/moved1"
			}
		case 2: // deleted after the sync: gone or intact
			if _, err := os.Stat(r.p(name)); errors.Is(err, fs.ErrNotExist) {
				continue
			}
		case 3, 4: // rewritten after the sync: old or new, whole
			got, err := os.ReadFile(r.p(name))
			must(t, err)
			if !bytes.Equal(got, crashData(i)) && string(got) != "rewritten, not synced" {
				t.Errorf("%s after the power loss: %d bytes, neither the synced nor the new content", name, len(got))
			}
			continue
		}
		checkFile(t, r.p(name), crashData(i))
	}
	checkFile(t, r.p("dir/doc"), []byte("saved by rename"))
	// One state: every name the tree shows stats and reads.
	walkRead := func(root string) int {
		n := 0
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := os.Stat(p); err != nil {
				return err
			}
			if d.Type().IsRegular() {
				if _, err := os.ReadFile(p); err != nil {
					return err
				}
			}
			n++
			return nil
		})
		must(t, err)
		return n
	}
	n := walkRead(r.mnt)
	r.flush()
	r.unmount()
	// What the recovered drive uploaded is what a new device sees.
	fresh := c.mount(t, t.TempDir(), nil)
	for _, i := range []int{0, 5, 6, 7} {
		checkFile(t, fresh.p(fmt.Sprintf("dir/synced%d", i)), crashData(i))
	}
	checkFile(t, fresh.p("dir/doc"), []byte("saved by rename"))
	if got := walkRead(fresh.mnt); got != n {
		t.Errorf("a new device sees %d names, the recovered drive %d", got, n)
	}
}

// TestTwoMounts: changes of one mount show up in another within seconds.
func TestTwoMounts(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	a := c.mount(t, t.TempDir(), nil)
	b := c.mount(t, t.TempDir(), nil)
	names := func(dir string) string {
		es, err := os.ReadDir(dir)
		must(t, err)
		var ns []string
		for _, e := range es {
			ns = append(ns, e.Name())
		}
		return strings.Join(ns, ",")
	}
	names(b.mnt) // the kernel caches b's listing of the root now
	must(t, os.WriteFile(a.p("from-a"), []byte("one"), 0o644))
	must(t, os.Mkdir(a.p("dir"), 0o755))
	must(t, os.WriteFile(a.p("dir/inner"), []byte("inner"), 0o644))
	a.flush()
	waitFor(t, 5*time.Second, func() bool {
		got, err := os.ReadFile(b.p("dir/inner"))
		return err == nil && string(got) == "inner"
	})
	checkFile(t, b.p("from-a"), []byte("one"))
	if got := names(b.mnt); got != "dir,from-a" {
		t.Fatalf("b lists the root as %q after a's changes: a stale cached listing", got)
	}
	names(b.p("dir"))
	// Change content and delete.
	must(t, os.WriteFile(a.p("from-a"), []byte("two two"), 0o644))
	must(t, os.Remove(a.p("dir/inner")))
	a.flush()
	waitFor(t, 5*time.Second, func() bool {
		got, err := os.ReadFile(b.p("from-a"))
		_, err2 := os.Stat(b.p("dir/inner"))
		return err == nil && string(got) == "two two" && errors.Is(err2, os.ErrNotExist)
	})
	if got := names(b.p("dir")); got != "" {
		t.Fatalf("b lists dir as %q after a removed its only file", got)
	}
}

// offlineProxy forwards to the cloud unless down (then 503, as a dead link).
type offlineProxy struct {
	down atomic.Bool
	url  string
}

func newOfflineProxy(t *testing.T, target string) *offlineProxy {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &offlineProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "offline", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if ok() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v", d)
}

// TestTruncateWhileClosing: a truncate that cuts unuploaded segment data
// syncs the store while it holds the file, and a close of the same file
// holds the store's data order while it saves: they must not wait for each
// other (lock order: the file, then the data order). Many rounds of both at
// once must finish.
func TestTruncateWhileClosing(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour })
	p := m.p("f")
	must(t, os.WriteFile(p, nil, 0o644))
	data := bytes.Repeat([]byte{'y'}, 300<<10) // segment file, not inline
	done := make(chan error, 2)
	const rounds = 150
	go func() {
		for range rounds {
			if err := os.WriteFile(p, data, 0o644); err != nil { // O_TRUNC, write, close
				done <- err
				return
			}
		}
		done <- nil
	}()
	go func() {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		for i := range rounds {
			if _, err := f.WriteAt(data[:100<<10], 0); err != nil {
				done <- err
				return
			}
			if err := f.Truncate(int64(i % 7 * 1000)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range 2 {
		select {
		case err := <-done:
			must(t, err)
		case <-time.After(60 * time.Second):
			t.Fatal("truncate and close of one file are stuck waiting for each other")
		}
	}
}
