package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kumo/internal/control"
	"kumo/internal/hostile"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/pathops"
	"kumo/remote/server"
)

// moment names a snapshot directory.
func moment(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// TestHistoryView: MNT/.kumo-history/TIME/ shows the tree as it was at TIME,
// read-only, never listed in the root; every one of 20 versions of a file
// reads back; a deleted tree is still there in the past.
func TestHistoryView(t *testing.T) {
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	m := c.mount(t, t.TempDir(), nil)
	var times []time.Time
	for i := range 20 {
		if err := os.WriteFile(m.p("f.txt"), fmt.Appendf(nil, "version %d %s", i, strings.Repeat("x", i*1000)), 0o644); err != nil {
			t.Fatal(err)
		}
		m.flush()
		times = append(times, time.Now())
	}
	if err := os.MkdirAll(m.p("d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.p("d/e/g"), []byte("deep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("e/g", m.p("d/link")); err != nil {
		t.Fatal(err)
	}
	m.flush()
	beforeRm := time.Now()
	if err := os.RemoveAll(m.p("d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.p("f.txt")); err != nil {
		t.Fatal(err)
	}
	m.flush()

	h := m.p(HistoryDirName)
	for i, at := range times {
		got, err := os.ReadFile(filepath.Join(h, moment(at), "f.txt"))
		want := fmt.Appendf(nil, "version %d %s", i, strings.Repeat("x", i*1000))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("version %d at %s: %v, %d bytes, want %d", i, moment(at), err, len(got), len(want))
		}
	}
	snap := filepath.Join(h, moment(beforeRm))
	if got, err := os.ReadFile(filepath.Join(snap, "d/e/g")); err != nil || string(got) != "deep" {
		t.Fatalf("deleted file in the past: %q %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(snap, "d/e/g")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode in the past: %v %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(snap, "d/link")); err != nil || target != "e/g" {
		t.Fatalf("symlink in the past: %q %v", target, err)
	}
	// Now the tree is empty, and the view is not in the root's listing.
	if _, err := os.Stat(filepath.Join(h, moment(time.Now()), "f.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted file now: %v", err)
	}
	names, err := os.ReadDir(m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n.Name() == HistoryDirName {
			t.Fatal("the history view is listed in the root")
		}
	}
	// Its own listing names the changed hour(s).
	ents, err := os.ReadDir(h)
	if err != nil || len(ents) == 0 {
		t.Fatalf("history listing: %v %v", ents, err)
	}
	// Read-only.
	for what, err := range map[string]error{
		"create":  os.WriteFile(filepath.Join(snap, "new"), nil, 0o644),
		"write":   os.WriteFile(filepath.Join(snap, "d/e/g"), []byte("x"), 0o644),
		"mkdir":   os.Mkdir(filepath.Join(snap, "nd"), 0o755),
		"remove":  os.Remove(filepath.Join(snap, "d/e/g")),
		"rename":  os.Rename(filepath.Join(snap, "d/e/g"), filepath.Join(snap, "d/e/h")),
		"chmod":   os.Chmod(filepath.Join(snap, "d/e/g"), 0o644),
		"mkdir h": os.Mkdir(filepath.Join(h, "x"), 0o755),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s in a snapshot: %v, want EROFS", what, err)
		}
	}
	// A time before history began is not there; nor is nonsense.
	for _, name := range []string{moment(time.Now().Add(-48 * time.Hour)), "yesterday", moment(time.Now().Add(time.Hour))} {
		if _, err := os.Stat(filepath.Join(h, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want ENOENT", name, err)
		}
	}
	// The control file tells what history keeps.
	ctl, err := os.ReadFile(m.p(".kumo"))
	if err != nil || !strings.Contains(string(ctl), "kept for 1 days, back to") {
		t.Errorf(".kumo does not show history: %v\n%s", err, ctl)
	}
	// A name in the root cannot take the view's place.
	if err := os.Mkdir(m.p(HistoryDirName+"/../"+HistoryDirName), 0o755); err == nil {
		t.Error("mkdir of the reserved name succeeded")
	}
}

// TestRansomwareRestore: every file of a 5,000-file tree is overwritten
// with random bytes and renamed to NAME.locked, the damage syncs, and one
// command through the control file brings the tree back as it was; a
// second, freshly set-up device sees the same.
func TestRansomwareRestore(t *testing.T) {
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	m := c.mount(t, t.TempDir(), nil)
	const dirs, perDir = 50, 100
	want := map[string][32]byte{}
	for i := range dirs {
		dir := fmt.Sprintf("d%02d", i)
		if err := os.Mkdir(m.p(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range perDir {
			name := filepath.Join(dir, fmt.Sprintf("f%03d.txt", j))
			data := randomBytes(t, 200+(i*perDir+j)%3000)
			if err := os.WriteFile(m.p(name), data, 0o644); err != nil {
				t.Fatal(err)
			}
			want[name] = sha256.Sum256(data)
		}
	}
	m.flush()
	before := time.Now()
	time.Sleep(10 * time.Millisecond)
	for name := range want {
		if err := os.WriteFile(m.p(name), randomBytes(t, 512), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(m.p(name), m.p(name+".locked")); err != nil {
			t.Fatal(err)
		}
	}
	m.flush()
	if got := treeSums(t, m.mnt); len(got) != len(want) || got["d00/f000.txt.locked"] == ([32]byte{}) {
		t.Fatalf("the damage did not happen as planned: %d files", len(got))
	}

	start := time.Now()
	cmd := fmt.Sprintf("restore / %s force\n", moment(before))
	if err := os.WriteFile(m.p(".kumo"), []byte(cmd), 0o600); err != nil {
		t.Fatal(err)
	}
	waitCommand(t, m, "restore", 3*time.Minute)
	// The drive pulls the restored tree from the cloud.
	deadline := time.Now().Add(time.Minute)
	for {
		got := treeSums(t, m.mnt)
		if sameSums(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mounted tree is not as before: %d files, %s", len(got), diffSums(got, want))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("restored %d files in %v", len(want), time.Since(start).Round(time.Millisecond))

	m2 := c.mount(t, t.TempDir(), nil)
	if got := treeSums(t, m2.mnt); !sameSums(got, want) {
		t.Fatalf("a fresh device sees another tree: %s", diffSums(got, want))
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// treeSums hashes every regular file under root by its relative path.
func treeSums(t *testing.T, root string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return nil // removed while we walk (the drive pulling changes)
		}
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSums(a, b map[string][32]byte) bool { return diffSums(a, b) == "" }

func diffSums(got, want map[string][32]byte) string {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			d = append(d, "missing "+k)
		} else if g != w {
			d = append(d, "differs "+k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, "extra "+k)
		}
	}
	sort.Strings(d)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("and %d more", len(d)-5))
	}
	return strings.Join(d, ", ")
}

// waitCommand waits until the control file's last command (kind) is done,
// and fails the test unless it succeeded.
func waitCommand(t *testing.T, m *mounted, kind string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		b, err := os.ReadFile(m.p(".kumo.json"))
		if err != nil {
			t.Fatal(err)
		}
		var s control.Status
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		if c := s.LastCommand; c != nil && strings.HasPrefix(c.Command, kind) && !c.Running {
			if !c.OK {
				t.Fatalf("%s failed: %s", kind, c.Message)
			}
			t.Logf("%s: %s", kind, c.Message)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still not done after %v: %s", kind, limit, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTrashRestoreRmRf: rm -rf of a 10,000-file tree in the mount, then the
// trash brings every file back where it was, byte-exact, into the mount.
func TestTrashRestoreRmRf(t *testing.T) {
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	m := c.mount(t, t.TempDir(), nil)
	want := map[string][32]byte{}
	for i := range 100 {
		dir := filepath.Join("project", fmt.Sprintf("d%02d", i))
		if err := os.MkdirAll(m.p(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range 100 {
			name := filepath.Join(dir, fmt.Sprintf("f%03d", j))
			data := randomBytes(t, 100+(i+j)%500)
			if err := os.WriteFile(m.p(name), data, 0o644); err != nil {
				t.Fatal(err)
			}
			want[name] = sha256.Sum256(data)
		}
	}
	m.flush()
	if err := os.RemoveAll(m.p("project")); err != nil {
		t.Fatal(err)
	}
	m.flush()

	fsys := pathops.New(c.client(t), c.sess.Subkeys())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	items, err := fsys.Trash(ctx)
	if err != nil || len(items) != 1 || items[0].Node.Path != "/project" {
		t.Fatalf("trash: %v %+v", err, items)
	}
	start := time.Now()
	p, st, err := fsys.TrashRestore(ctx, "/project", nil)
	if err != nil || p != "/project" {
		t.Fatalf("trash restore: %q %+v %v", p, st, err)
	}
	t.Logf("trash restore of %d entries: %v", st.Entries, time.Since(start).Round(time.Millisecond))
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(300 * time.Millisecond) {
		got := treeSums(t, m.mnt)
		if sameSums(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mount after the trash restore: %s", diffSums(got, want))
		}
	}
}

// TestHostileServerHistory: history is read from the server like the live
// tree, and a server that forges it is refused. In a snapshot, an entry it
// points at another file and a record it alters read as EIO (never other
// bytes) and are counted; a restore through it fails and changes nothing.
func TestHostileServerHistory(t *testing.T) {
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: 24 * time.Hour})
	m := c.mount(t, t.TempDir(), nil)
	must(t, os.WriteFile(m.p("notes.txt"), []byte("my notes\n"), 0o644))
	must(t, os.WriteFile(m.p("secret.txt"), []byte("the secret\n"), 0o600))
	must(t, os.WriteFile(m.p("plain.txt"), []byte("plain\n"), 0o644))
	m.flush()
	then := time.Now()
	time.Sleep(10 * time.Millisecond)
	must(t, os.WriteFile(m.p("notes.txt"), []byte("newer notes\n"), 0o644))
	m.flush()
	m.unmount()

	sealer := meta.NewSealer(c.sess.Subkeys())
	macOf := func(name string) string { return sealer.NameMAC(api.RootID, []byte(name)) }
	secret, err := c.client(t).Lookup(context.Background(), api.RootID, macOf("secret.txt"))
	if err != nil {
		t.Fatal(err)
	}
	p := hostile.Start(t, c.url)
	p.On(http.MethodGet, "/v1/history/entries", hostile.EditJSON(func(r *api.HistoryListResponse) {
		for i := range r.Entries {
			switch r.Entries[i].NameMAC {
			case macOf("notes.txt"):
				r.Entries[i].Node = secret.Node // a name pointed at another file
			case macOf("plain.txt"):
				r.Entries[i].Node.Attrs[len(r.Entries[i].Node.Attrs)-1] ^= 1 // an altered record
			}
		}
	}))
	via := *c
	via.url = p.URL
	m2 := via.mount(t, t.TempDir(), nil)
	snap := filepath.Join(m2.p(HistoryDirName), moment(then))
	for _, name := range []string{"notes.txt", "plain.txt"} {
		if got, err := os.ReadFile(filepath.Join(snap, name)); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s in a forged snapshot: %q, %v; want EIO", name, got, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(snap, "secret.txt")); err != nil || string(got) != "the secret\n" {
		t.Errorf("secret.txt in the snapshot: %q %v", got, err)
	}
	names, err := os.ReadDir(snap)
	if err != nil || len(names) != 1 {
		t.Errorf("forged entries listed: %v %v", names, err)
	}
	if r := m2.d.Integrity(); r.AuthFailures == 0 {
		t.Errorf("integrity report counts no failure: %+v", r)
	}

	// A restore through the same server refuses and leaves the tree alone.
	fsys := pathops.New(via.client(t), c.sess.Subkeys())
	if _, err := fsys.Restore(context.Background(), "/", then.UnixNano(), "/", true, nil); err == nil {
		t.Fatal("a restore from a forged snapshot succeeded")
	}
	if got, err := os.ReadFile(m2.p("notes.txt")); err != nil || string(got) != "newer notes\n" {
		t.Fatalf("the live file after a refused restore: %q %v", got, err)
	}
}

// TestHistoryReadInterrupted: a signal to a process whose read of the
// history waits on the cloud interrupts its FUSE request (go-fuse cancels
// the request's context); the drive answers EINTR, so the call is retried
// and succeeds, not EIO. A Go program gets such signals all the time
// (SIGURG preempts its goroutines).
func TestHistoryReadInterrupted(t *testing.T) {
	c := startCloudConfig(t, server.Config{DataDir: t.TempDir(), DefaultQuota: 1 << 40, HistoryDefault: time.Hour})
	m := c.mount(t, t.TempDir(), nil)
	must(t, os.WriteFile(m.p("notes.txt"), []byte("my notes\n"), 0o644))
	m.flush()
	then := time.Now()
	m.unmount()

	p := hostile.Start(t, c.url)
	gate, arrived := make(chan struct{}), make(chan struct{}, 16)
	p.On(http.MethodGet, "/v1/history/entries", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		arrived <- struct{}{}
		select {
		case <-gate:
		case <-req.Context().Done():
			return nil
		}
		return next(req)
	})
	via := *c
	via.url = p.URL
	m2 := via.mount(t, t.TempDir(), nil)
	path := filepath.Join(m2.p(HistoryDirName), moment(then), "notes.txt")

	type result struct {
		data []byte
		err  error
	}
	tids, done := make(chan int, 1), make(chan result, 1)
	go func() {
		runtime.LockOSThread() // the thread the signal goes to
		tids <- unix.Gettid()
		b, err := os.ReadFile(path)
		done <- result{b, err}
	}()
	tid := <-tids
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the snapshot's listing never reached the cloud")
	}
	var r result
	gaveUp := false
	for range 3 { // the held listing's request, interrupted
		select {
		case r = <-done: // the read gave up (its thread may be gone)
			gaveUp = true
		default:
			must(t, unix.Tgkill(os.Getpid(), tid, unix.SIGURG))
			time.Sleep(50 * time.Millisecond)
			continue
		}
		break
	}
	close(gate)
	if !gaveUp {
		r = <-done
	}
	if r.err != nil || string(r.data) != "my notes\n" {
		t.Fatalf("read of the history interrupted by a signal: %q, %v; want the file", r.data, r.err)
	}
}
