package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildDir holds the kumo binary built once for the whole package run.
var buildDir string

func TestMain(m *testing.M) {
	runProbeIfAsked()
	d, err := os.MkdirTemp("", "kumo-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	buildDir = d
	// The embedded clouds' keys go to the config dir: a private one, not
	// the user's, unless a test names its own.
	if os.Getenv("KUMO_CONFIG_DIR") == "" {
		os.Setenv("KUMO_CONFIG_DIR", filepath.Join(d, "config"))
	}
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

var kumoBin struct {
	once sync.Once
	path string
	err  error
}

// skipOrFatal skips the test on a laptop but fails it in CI, where everything a
// test needs is installed (COMMON.md rule 6).
func skipOrFatal(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but: "+format, args...)
	}
	t.Skipf(format, args...)
}

// needKumo returns the path of a kumo binary whose `mount` works here, or skips.
func needKumo(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		skipOrFatal(t, "no /dev/fuse: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		skipOrFatal(t, "no fusermount3: %v", err)
	}
	kumoBin.once.Do(func() {
		if p := os.Getenv("KUMO_E2E_BIN"); p != "" {
			kumoBin.path = p
		} else {
			kumoBin.path = filepath.Join(buildDir, "kumo")
			cmd := exec.Command("go", "build", "-o", kumoBin.path, "kumo/cmd/kumo")
			if out, err := cmd.CombinedOutput(); err != nil {
				kumoBin.err = fmt.Errorf("go build kumo/cmd/kumo: %v\n%s", err, out)
				return
			}
		}
		// Until the drive lands, `mount` is a placeholder without its flags.
		out, _ := exec.Command(kumoBin.path, "mount", "--help").CombinedOutput()
		if !bytes.Contains(out, []byte("cloud-dir")) {
			kumoBin.err = fmt.Errorf("%s mount has no --cloud-dir flag (drive not implemented yet?)", kumoBin.path)
		}
	})
	if kumoBin.err != nil {
		skipOrFatal(t, "kumo binary unavailable: %v", kumoBin.err)
	}
	return kumoBin.path
}

// kumoMount is one `kumo mount --foreground` daemon started by a test.
type kumoMount struct {
	bin, cloud, cache, dir string
	server                 string     // when set, mount this server instead of an embedded cloud
	env                    []string   // added to the environment
	extra                  []string   // flags placed before the mountpoint
	owner                  testing.TB // cleanup runs when this test ends (default: the starting test)
	cmd                    *exec.Cmd
	done                   chan struct{}
	waitErr                error
	logPath                string
}

// again mounts the same cloud at the same place with another cache dir.
func (m *kumoMount) again(t testing.TB, cache string) *kumoMount {
	t.Helper()
	n := &kumoMount{bin: m.bin, cloud: m.cloud, server: m.server, env: m.env, cache: cache, dir: m.dir, extra: m.extra, owner: m.owner}
	n.start(t)
	return n
}

func (m *kumoMount) start(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.CreateTemp(filepath.Dir(m.cache), "kumo-log-*.txt")
	if err != nil {
		t.Fatal(err)
	}
	m.logPath = logf.Name()
	args := []string{"mount", "--foreground", "--cloud-dir", m.cloud, "--cache-dir", m.cache}
	if m.server != "" {
		args = []string{"mount", "--foreground", "--server", m.server, "--cache-dir", m.cache}
	}
	args = append(args, m.extra...)
	args = append(args, m.dir)
	m.cmd = exec.Command(m.bin, args...)
	m.cmd.Env = append(os.Environ(), m.env...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start kumo mount: %v", err)
	}
	logf.Close() // the child keeps its own descriptor
	m.done = make(chan struct{})
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
	// A remount inside a subtest must outlive that subtest: clean up with the owner.
	owner := m.owner
	if owner == nil {
		owner = t
	}
	owner.Cleanup(func() { m.cleanup(owner) })
	t.Logf("kumo mount %s (pid %d): %s", m.dir, m.cmd.Process.Pid, strings.Join(args, " "))

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if isMountpoint(m.dir) {
			return
		}
		select {
		case <-m.done:
			t.Fatalf("kumo mount exited before the mount was ready: %v\nlog:\n%s", m.waitErr, m.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("kumo mount not ready after 20 s\nlog:\n%s", m.logTail())
}

func (m *kumoMount) pid() int { return m.cmd.Process.Pid }

func (m *kumoMount) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// unmount runs `kumo unmount` (which flushes pending uploads) and waits for the
// daemon to exit cleanly.
func (m *kumoMount) unmount(t testing.TB) {
	t.Helper()
	timeout := 4 * time.Minute
	if v, err := time.ParseDuration(os.Getenv("KUMO_E2E_UNMOUNT_TIMEOUT")); err == nil {
		timeout = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, m.bin, "unmount", m.dir)
	cmd.Env = append(os.Environ(), m.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if len(out) > 3000 {
			out = append([]byte("...\n"), out[len(out)-3000:]...)
		}
		t.Fatalf("kumo unmount %s after %v: %v\n%s\ndaemon log:\n%s", m.dir, time.Since(start).Round(time.Millisecond), err, out, m.logTail())
	}
	select {
	case <-m.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("kumo daemon still running 60 s after unmount returned\nlog:\n%s", m.logTail())
	}
	if m.waitErr != nil {
		t.Errorf("kumo daemon exited with %v after unmount\nlog:\n%s", m.waitErr, m.logTail())
	}
	if isMountpoint(m.dir) {
		t.Fatalf("%s still mounted after kumo unmount", m.dir)
	}
	t.Logf("kumo unmount %s took %v", m.dir, time.Since(start).Round(time.Millisecond))
}

// kill9 kills the daemon with SIGKILL and lazily detaches the dead mount.
func (m *kumoMount) kill9(t testing.TB) {
	t.Helper()
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", m.pid(), err)
	}
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon %d still alive 30 s after SIGKILL", m.pid())
	}
	if out, err := exec.Command("fusermount3", "-uz", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -uz %s: %v\n%s", m.dir, err, out)
	}
}

// cleanup is the last resort: force-unmount, detach, kill.
func (m *kumoMount) cleanup(t testing.TB) {
	if t.Failed() {
		t.Logf("daemon log tail (%s):\n%s", m.dir, m.logTail())
	}
	if m.exited() && !isMountpoint(m.dir) {
		return
	}
	if !m.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		exec.CommandContext(ctx, m.bin, "unmount", "--force", m.dir).Run()
		cancel()
	}
	if isMountpoint(m.dir) {
		exec.Command("fusermount3", "-uz", m.dir).Run()
	}
	if !m.exited() {
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			m.cmd.Process.Kill()
			<-m.done
		}
	}
}

func (m *kumoMount) logTail() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return err.Error()
	}
	const max = 6000
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return string(b)
}

// isMountpoint reports whether dir is on another device than its parent.
func isMountpoint(dir string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(dir, &a) != nil || syscall.Stat(filepath.Dir(dir), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// vmHWM returns the peak resident set size of pid in bytes (0 if unknown).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// target is a directory a suite runs in: a plain local directory, or the root of
// a kumo mount.
type target struct {
	name string
	dir  string
	// kumo-only state; nil for the local target
	m     *kumoMount
	base  string   // holds cloud/, cacheN/, mnt/
	extra []string // mount flags
	gen   int
}

// remount makes the next reads come from storage: for kumo, unmount (which
// flushes uploads) and mount again with a fresh, empty cache dir on the same
// cloud. The local target has nothing to do.
func (tg *target) remount(t testing.TB) {
	t.Helper()
	if tg.m == nil {
		return
	}
	tg.m.unmount(t)
	tg.m = tg.m.again(t, tg.nextCache())
}

func (tg *target) nextCache() string {
	tg.gen++
	return filepath.Join(tg.base, fmt.Sprintf("cache%d", tg.gen))
}

// newKumoTarget mounts a fresh kumo (empty cloud, empty cache) for t.
func newKumoTarget(t testing.TB, extra ...string) *target {
	t.Helper()
	bin := needKumo(t)
	tg := &target{name: "kumo", base: t.TempDir(), extra: extra}
	tg.dir = filepath.Join(tg.base, "mnt")
	tg.m = &kumoMount{bin: bin, cloud: filepath.Join(tg.base, "cloud"), cache: tg.nextCache(), dir: tg.dir, extra: extra, owner: t}
	tg.m.start(t)
	return tg
}

// newServedKumoTarget mounts a fresh kumo on its own `kumo serve` (over TCP,
// as a remote cloud is reached) with an empty cache.
func newServedKumoTarget(t testing.TB, extra ...string) *target {
	t.Helper()
	bin := needKumo(t)
	tg := &target{name: "kumo", base: t.TempDir(), extra: extra}
	srv, env := startServedAccount(t, bin, tg.base)
	tg.dir = filepath.Join(tg.base, "mnt")
	tg.m = &kumoMount{bin: bin, server: srv.url(), env: env, cache: tg.nextCache(), dir: tg.dir, extra: extra, owner: t}
	tg.m.start(t)
	return tg
}

// forEachTarget runs fn as subtest "local" on a temp dir and as subtest "kumo"
// on a fresh kumo mount created with the extra mount flags.
func forEachTarget(t *testing.T, extra []string, fn func(t *testing.T, tg *target)) {
	t.Run("local", func(t *testing.T) {
		fn(t, &target{name: "local", dir: t.TempDir()})
	})
	t.Run("kumo", func(t *testing.T) {
		fn(t, newKumoTarget(t, extra...))
	})
}

// run executes a command with a timeout and fails the test with its output on error.
func run(t testing.TB, dir string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(dir string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out: %w", err)
	}
	return string(out), err
}

// needTool skips (or fails in CI) when a command-line tool is missing.
func needTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			skipOrFatal(t, "%s not installed", n)
		}
	}
}

// errnoOf extracts the errno from an error (0 for nil, -1 for a non-errno error).
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.Errno(^uintptr(0))
}
