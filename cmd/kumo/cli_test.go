package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kumo/internal/keys"
	"kumo/remote/blob/s3/s3test"
	"kumo/remote/client"
	"kumo/remote/session"
)

// kumoBin is the binary built once for the tests of this package.
var kumoBin struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

func TestMain(m *testing.M) {
	code := m.Run()
	if kumoBin.path != "" {
		os.RemoveAll(filepath.Dir(kumoBin.path))
	}
	os.Exit(code)
}

// buildKumo compiles the binary into a temp dir (once).
func buildKumo(t *testing.T) string {
	t.Helper()
	kumoBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "kumo-cli-test-")
		if err != nil {
			kumoBin.err = err
			return
		}
		kumoBin.path = filepath.Join(dir, "kumo")
		kumoBin.out, kumoBin.err = exec.Command("go", "build", "-o", kumoBin.path, ".").CombinedOutput()
	})
	if kumoBin.err != nil {
		t.Fatalf("go build: %v\n%s", kumoBin.err, kumoBin.out)
	}
	return kumoBin.path
}

// startServe runs `kumo serve` on a free loopback port and returns its URL.
func startServe(t *testing.T, bin string, extra ...string) (string, *exec.Cmd) {
	t.Helper()
	p := serveAt(t, bin, t.TempDir(), "127.0.0.1:0", extra...)
	return p.url, p.cmd
}

// serveProc is a running `kumo serve` and what it logged at start.
type serveProc struct {
	url         string
	fingerprint string // TLS certificate, "" for plain HTTP
	metricsURL  string
	pprofURL    string
	stdout      *bytes.Buffer
	cmd         *exec.Cmd
	stop        func() // SIGTERM and wait (also run at cleanup)
}

// serveAt runs `kumo serve --data data --listen listen extra...` and waits
// until it logs its URL.
func serveAt(t *testing.T, bin, data, listen string, extra ...string) *serveProc {
	t.Helper()
	args := append([]string{"serve", "--data", data, "--listen", listen, "--log-format", "json"}, extra...)
	cmd := exec.Command(bin, args...)
	p := &serveProc{cmd: cmd, stdout: &bytes.Buffer{}}
	cmd.Stdout = p.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Error("serve did not stop within 10s of SIGTERM")
			}
		})
	}
	t.Cleanup(p.stop)
	type start struct{ url, fp, metrics, pprof string }
	startc := make(chan start, 1)
	go func() {
		var st start
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) != nil {
				continue
			}
			if v, ok := rec["fingerprint"].(string); ok {
				st.fp = v
			}
			if v, ok := rec["metrics_url"].(string); ok {
				st.metrics = v
			}
			if v, ok := rec["pprof_url"].(string); ok {
				st.pprof = v
			}
			if u, ok := rec["url"].(string); ok {
				st.url = u
				startc <- st
			}
		}
	}()
	select {
	case st := <-startc:
		p.url, p.fingerprint, p.metricsURL, p.pprofURL = st.url, st.fp, st.metrics, st.pprof
		return p
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not report its address")
	}
	return nil
}

type runner struct {
	t   *testing.T
	bin string
	env []string
}

func (r *runner) run(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, args...)
	// Never this machine's embedded cloud (commands fall back to it without
	// a login): a test names its own with XDG_DATA_HOME or --cloud-dir.
	cmd.Env = append(append(os.Environ(), "XDG_DATA_HOME="+r.t.TempDir()), r.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// fails runs a command that must fail with stderr containing want.
func (r *runner) fails(want string, args ...string) string {
	r.t.Helper()
	out, errs, err := r.run(args...)
	if err == nil || !strings.Contains(errs, want) {
		r.t.Fatalf("kumo %s: want failure with %q, got err=%v\nstdout: %s\nstderr: %s", strings.Join(args, " "), want, err, out, errs)
	}
	return errs
}

func (r *runner) ok(args ...string) string {
	r.t.Helper()
	out, errs, err := r.run(args...)
	if err != nil {
		r.t.Fatalf("kumo %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errs)
	}
	return out
}

func TestCLIEndToEnd(t *testing.T) {
	bin := buildKumo(t)
	url, _ := startServe(t, bin, "--quota", "100MiB")
	cfg := t.TempDir()
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=correct horse"}}

	// Not logged in: a clear error naming the fix.
	if _, errs, err := r.run("ls"); err == nil || !strings.Contains(errs, "not logged in: run kumo login") {
		t.Fatalf("ls before login: %v %s", err, errs)
	}
	out := r.ok("signup", "--server", url, "--email", "cli@example.com")
	if !strings.Contains(out, "signed up as cli@example.com") || !strings.Contains(out, "100 MiB") {
		t.Fatalf("signup said %q", out)
	}
	st, err := os.Stat(filepath.Join(cfg, "session.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v %v", st, err)
	}

	src := t.TempDir()
	data := make([]byte, 9<<20+7)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big.bin"), data, 0o644)
	os.WriteFile(filepath.Join(src, "note.txt"), []byte("hello\n"), 0o600)
	os.Mkdir(filepath.Join(src, "tree"), 0o755)
	os.WriteFile(filepath.Join(src, "tree", "t.txt"), []byte("tree file"), 0o644)

	r.ok("put", filepath.Join(src, "big.bin"), "/docs/big.bin")
	r.ok("put", filepath.Join(src, "note.txt"), "/docs")
	r.ok("put", "-r", filepath.Join(src, "tree"), "/docs")
	ls := r.ok("ls", "/docs")
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	if len(lines) != 3 {
		t.Fatalf("ls /docs:\n%s", ls)
	}
	for i, want := range []struct{ mode, size, name string }{
		{"-rw-r--r--", "9437191", "big.bin"}, {"-rw-------", "6", "note.txt"}, {"drwxr-xr-x", "", "tree"},
	} {
		f := strings.Fields(lines[i])
		if f[0] != want.mode || f[len(f)-1] != want.name || want.size != "" && f[2] != want.size {
			t.Fatalf("ls line %q, want %v", lines[i], want)
		}
	}
	if out := r.ok("ls", "-H", "/docs/big.bin"); !strings.Contains(out, "9 MiB") {
		t.Fatalf("ls -H: %q", out)
	}

	dst := t.TempDir()
	r.ok("get", "/docs/big.bin", filepath.Join(dst, "big.out"))
	got, err := os.ReadFile(filepath.Join(dst, "big.out"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get big.bin: %d bytes, %v", len(got), err)
	}
	r.ok("get", "-r", "/docs/tree", dst)
	if b, err := os.ReadFile(filepath.Join(dst, "tree", "t.txt")); err != nil || string(b) != "tree file" {
		t.Fatalf("get -r: %q %v", b, err)
	}
	if _, errs, err := r.run("get", "/docs/missing", dst); err == nil || !strings.Contains(errs, "not_found") {
		t.Fatalf("get missing: %v %s", err, errs)
	}

	// Change the password via files, log out, log back in with the new one.
	pwOld := filepath.Join(cfg, "old")
	pwNew := filepath.Join(cfg, "new")
	os.WriteFile(pwOld, []byte("correct horse\n"), 0o600)
	os.WriteFile(pwNew, []byte("battery staple\n"), 0o600)
	r.ok("passwd", "--password-file", pwOld, "--new-password-file", pwNew)
	r.ok("logout")
	if _, err := os.Stat(filepath.Join(cfg, "session.json")); !os.IsNotExist(err) {
		t.Fatalf("session file after logout: %v", err)
	}
	if _, errs, err := r.run("login", "--server", url, "--email", "cli@example.com"); err == nil || !strings.Contains(errs, "wrong e-mail or password") {
		t.Fatalf("login with the old password: %v %s", err, errs)
	}
	r.ok("login", "--server", url, "--email", "CLI@example.com", "--password-file", pwNew)
	r.ok("get", "/docs/note.txt", filepath.Join(dst, "note.txt"))
	if b, _ := os.ReadFile(filepath.Join(dst, "note.txt")); string(b) != "hello\n" {
		t.Fatalf("note after passwd: %q", b)
	}
}

func TestServeRefusesPlainHTTPOffLoopback(t *testing.T) {
	bin := buildKumo(t)
	out, err := exec.Command(bin, "serve", "--data", t.TempDir(), "--listen", "0.0.0.0:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing plain HTTP") {
		t.Fatalf("serve on 0.0.0.0 without TLS: %v %s", err, out)
	}
	if _, err := exec.Command(bin, "serve", "--data", t.TempDir(), "--quota", "lots").CombinedOutput(); err == nil {
		t.Fatal("bad --quota accepted")
	}
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	prog, end := newBar(&b, "file")
	prog(1<<20, 1<<20) // below the threshold: nothing
	if b.Len() != 0 {
		t.Fatalf("bar for a small file: %q", b.String())
	}
	prog(4<<20, 16<<20)
	prog(16<<20, 16<<20)
	end()
	s := b.String()
	if !strings.Contains(s, "100.0%") || !strings.Contains(s, "16 MiB / 16 MiB") || !strings.HasSuffix(s, "\n") {
		t.Fatalf("bar: %q", s)
	}
}

// SIGTERM stops serve promptly even with a change-feed long poll in flight.
func TestServeShutdownWithLongPoll(t *testing.T) {
	bin := buildKumo(t)
	url, cmd := startServe(t, bin)
	c, err := client.New(client.Options{BaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := session.Signup(ctx, c, url, "poll@example.com", []byte("pw"), keys.TestKDF()); err != nil {
		t.Fatal(err)
	}
	acct, err := c.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan error, 1)
	go func() {
		_, err := c.Changes(ctx, acct.Seq, 60*time.Second)
		polled <- err
	}()
	select {
	case err := <-polled:
		t.Fatalf("long poll returned at once: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-polled:
	case <-time.After(10 * time.Second):
		t.Fatal("long poll still open 10s after SIGTERM")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve still running 10s after SIGTERM")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

// serve --blob s3://... keeps chunks in a real S3 server (versitygw); the
// CLI round trip works and the chunks land in the bucket, not in DATA/blobs.
func TestServeS3Blob(t *testing.T) {
	v := s3test.Start(t)
	bin := buildKumo(t)
	data := t.TempDir()
	p := serveAt(t, bin, data, "127.0.0.1:0", "--blob", v.URL)
	r := userRunner(t, bin)
	r.ok("signup", "--server", p.url, "--email", "s3@example.com")
	src := filepath.Join(t.TempDir(), "big.bin")
	content := make([]byte, 5<<20+3)
	rand.Read(content)
	os.WriteFile(src, content, 0o644)
	r.ok("put", src, "/big.bin")
	dst := filepath.Join(t.TempDir(), "out.bin")
	r.ok("get", "/big.bin", dst)
	if b, _ := os.ReadFile(dst); !bytes.Equal(b, content) {
		t.Fatalf("get from s3-backed server: %d bytes", len(b))
	}
	var inBucket int
	filepath.WalkDir(v.Root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			inBucket++
		}
		return nil
	})
	if inBucket == 0 {
		t.Fatal("no objects in the bucket")
	}
	if ents, _ := os.ReadDir(filepath.Join(data, "blobs")); len(ents) != 0 {
		t.Fatalf("chunks in DATA/blobs with --blob s3: %d entries", len(ents))
	}
	out, err := exec.Command(bin, "serve", "--data", t.TempDir(), "--blob", "ftp://x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "s3://") {
		t.Fatalf("--blob ftp: %v %s", err, out)
	}
}
