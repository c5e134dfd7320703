package fs

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"kumo/internal/keys"
	"kumo/remote/client"
	"kumo/remote/server"
	"kumo/remote/session"
)

// cloud is an in-process kumo server on a loopback port with one account.
type cloud struct {
	dir  string
	url  string
	srv  *server.Server
	http *http.Server
	sess *session.Session
}

func needFUSE(t testing.TB) {
	t.Helper()
	if testing.Short() && os.Getenv("CI") != "true" {
		// make test-short: the drive's logic through coreDrive, no mounts.
		t.Skip("mount test (-short runs the drive core without mounting)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no /dev/fuse: %v", err)
		}
		t.Skip("no /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil && os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no fusermount3 and not root")
		}
		t.Skip("no fusermount3")
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("KUMO_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// startCloud runs a server over dir (created if new) and signs up (or logs in).
func startCloud(t testing.TB, dir string, quota int64) *cloud {
	t.Helper()
	if quota == 0 {
		quota = 1 << 40
	}
	return startCloudConfig(t, server.Config{DataDir: dir, DefaultQuota: quota})
}

// startCloudConfig is startCloud with the server configured by cfg.
func startCloudConfig(t testing.TB, cfg server.Config) *cloud {
	t.Helper()
	dir := cfg.DataDir
	c := serveCloud(t, cfg)
	cl := c.client(t)
	ctx := context.Background()
	sp := filepath.Join(dir, "test-session.json")
	if s, err := session.Load(sp); err == nil {
		// The account was made with keys.TestKDF, below the client's floor.
		s2, err := session.LoginWith(ctx, cl, c.url, s.Email, []byte("pw"), session.Options{Floor: keys.TestKDF()})
		if err != nil {
			t.Fatal(err)
		}
		c.sess = s2
	} else {
		s, err := session.Signup(ctx, cl, c.url, "t@example.com", []byte("pw"), keys.TestKDF())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Save(sp); err != nil {
			t.Fatal(err)
		}
		c.sess = s
	}
	return c
}

// serveCloud runs a server with cfg (its logger set here) on a loopback port
// until the test ends; no account yet.
func serveCloud(t testing.TB, cfg server.Config) *cloud {
	t.Helper()
	cfg.Logger = testLogger(t)
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	c := &cloud{dir: cfg.DataDir, url: "http://" + ln.Addr().String(), srv: srv, http: hs}
	t.Cleanup(c.stop)
	return c
}

func (c *cloud) stop() {
	if c.http != nil {
		c.http.Close()
		c.srv.Close()
		c.http = nil
	}
}

func (c *cloud) client(t testing.TB) *client.Client {
	cl, err := client.New(client.Options{BaseURL: c.url, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if c.sess != nil {
		cl.SetToken(c.sess.Token)
	}
	return cl
}

type mounted struct {
	t   testing.TB
	d   *Drive
	mnt string
}

func (c *cloud) mount(t testing.TB, cacheDir string, mod func(*Options)) *mounted {
	t.Helper()
	needFUSE(t)
	mnt := t.TempDir()
	o := Options{Client: c.client(t), Session: c.sess, CacheDir: cacheDir, Logger: testLogger(t),
		QuietTime: 200 * time.Millisecond, PollWait: 2 * time.Second}
	if mod != nil {
		mod(&o)
	}
	d, err := Mount(context.Background(), mnt, o)
	if err != nil {
		t.Fatal(err)
	}
	m := &mounted{t: t, d: d, mnt: mnt}
	t.Cleanup(func() { m.unmount() })
	return m
}

func (m *mounted) p(name string) string { return filepath.Join(m.mnt, name) }

func (m *mounted) flush() {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.d.Flush(ctx); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mounted) unmount() {
	if m.d == nil {
		return
	}
	if err := m.d.Unmount(); err != nil {
		m.t.Errorf("unmount: %v", err)
		exec.Command("fusermount3", "-uz", m.mnt).Run()
	}
	m.d = nil
}
