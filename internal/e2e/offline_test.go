package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// kumoServer is one `kumo serve` process on a fixed loopback port, so it can be
// stopped and started again at the same URL.
type kumoServer struct {
	bin, data, addr string
	cmd             *exec.Cmd
	done            chan struct{}
	log             *bytes.Buffer
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func (s *kumoServer) url() string { return "http://" + s.addr }

func (s *kumoServer) start(t testing.TB) {
	t.Helper()
	s.log = &bytes.Buffer{}
	s.cmd = exec.Command(s.bin, "serve", "--data", s.data, "--listen", s.addr)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("kumo serve: %v", err)
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("kumo serve exited: %s", s.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("kumo serve not listening on %s after 20 s: %s", s.addr, s.log)
}

func (s *kumoServer) stop(t testing.TB) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("kumo serve did not stop on SIGTERM: %s", s.log)
	}
}

// startServedAccount starts `kumo serve` with its data under base and signs
// up an account; env (password, config dir) lets kumo commands use it.
func startServedAccount(t testing.TB, bin, base string) (*kumoServer, []string) {
	t.Helper()
	srv := &kumoServer{bin: bin, data: filepath.Join(base, "server"), addr: freePort(t)}
	srv.start(t)
	env := []string{"KUMO_PASSWORD=correct horse battery staple e2e", "KUMO_CONFIG_DIR=" + filepath.Join(base, "config")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	signup := exec.CommandContext(ctx, bin, "signup", "--server", srv.url(), "--email", "e2e@kumo.invalid")
	signup.Env = append(os.Environ(), env...)
	if out, err := signup.CombinedOutput(); err != nil {
		t.Fatalf("kumo signup: %v\n%s", err, out)
	}
	return srv, env
}

// TestOffline stops the server under a mounted drive: cached files still read,
// new writes are accepted and queued, and they reach the server once it is back.
func TestOffline(t *testing.T) {
	bin := needKumo(t)
	out, _ := exec.Command(bin, "serve", "--help").CombinedOutput()
	if !bytes.Contains(out, []byte("--data")) {
		skipOrFatal(t, "kumo serve not implemented")
	}
	base := t.TempDir()
	srv, env := startServedAccount(t, bin, base)

	mnt := filepath.Join(base, "mnt")
	m := &kumoMount{bin: bin, server: srv.url(), env: env, cache: filepath.Join(base, "cache1"), dir: mnt}
	m.start(t)
	a, b := pattern(1, 3<<20), pattern(2, 1000)
	for name, data := range map[string][]byte{"a": a, "b": b} {
		if err := os.WriteFile(filepath.Join(mnt, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.unmount(t)

	// Read everything once with a fresh cache, so it is cached, then go offline.
	m = m.again(t, filepath.Join(base, "cache2"))
	mustEqualFile(t, filepath.Join(mnt, "a"), a)
	mustEqualFile(t, filepath.Join(mnt, "b"), b)
	srv.stop(t)
	t.Log("server stopped")

	mustEqualFile(t, filepath.Join(mnt, "a"), a)
	mustEqualFile(t, filepath.Join(mnt, "b"), b)
	if names := readDirNames(t, mnt); strings.Join(names, ",") != "a,b" {
		t.Fatalf("offline readdir: %q", names)
	}
	c := pattern(3, 2<<20+77)
	if err := writeFileSync(filepath.Join(mnt, "c"), c, 0o644); err != nil {
		t.Fatalf("offline write: %v", err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatalf("offline mkdir: %v", err)
	}
	if err := os.Rename(filepath.Join(mnt, "b"), filepath.Join(mnt, "d", "b2")); err != nil {
		t.Fatalf("offline rename: %v", err)
	}
	mustEqualFile(t, filepath.Join(mnt, "c"), c)
	status, err := os.ReadFile(filepath.Join(mnt, ".kumo"))
	if err != nil {
		t.Errorf("read .kumo offline: %v", err)
	} else if !bytes.Contains(bytes.ToLower(status), []byte("offline")) {
		t.Errorf("the control file does not say the drive is offline:\n%s", status)
	}
	t.Logf("control file while offline:\n%s", status)

	srv.start(t)
	t.Log("server restarted")
	m.unmount(t) // flushes the queued writes

	m = m.again(t, filepath.Join(base, "cache3"))
	mustEqualFile(t, filepath.Join(mnt, "a"), a)
	mustEqualFile(t, filepath.Join(mnt, "c"), c)
	mustEqualFile(t, filepath.Join(mnt, "d", "b2"), b)
	if names := readDirNames(t, mnt); fmt.Sprint(names) != "[a c d]" {
		t.Fatalf("after reconnect and flush: readdir %q, want [a c d]", names)
	}
	m.unmount(t)
}
