package main

// kumo mount / kumo unmount, the mount.kumo helper for /etc/fstab, the
// embedded cloud, daemonizing, and the daemon's control socket.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"kumo/cache"
	kfs "kumo/fs"
	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/metrics"
	"kumo/internal/size"
	"kumo/remote/client"
	"kumo/remote/server"
	"kumo/remote/session"
)

// envDaemonFD names the descriptor a daemonized child reports readiness on.
const envDaemonFD = "KUMO_DAEMON_READY_FD"

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount the drive (the account of `kumo login`, or an embedded cloud on this machine)",
		ArgsUsage: "MOUNTPOINT",
		Description: "Without --server, kumo runs an embedded cloud in-process over --cloud-dir " +
			"(an account is created on first use). It daemonizes once the mount is ready unless --foreground.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", Usage: "cloud URL; uses the session saved by `kumo login`", EnvVars: []string{"KUMO_SERVER"}},
			configFlag(),
			&cli.StringFlag{Name: "cloud-dir", Usage: "data directory of the embedded cloud (default $XDG_DATA_HOME/kumo/cloud)"},
			&cli.StringFlag{Name: "cache-dir", Usage: "local cache and write-back store (default $XDG_CACHE_HOME/kumo/ACCOUNT)"},
			&cli.StringFlag{Name: "cache-size", Value: "4GiB", Usage: "disk budget of the chunk cache"},
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay in the foreground (log to stderr)"},
			&cli.StringFlag{Name: "fsync", Value: "local", Usage: "local: fsync makes data durable on this disk; remote: fsync waits until it is in the cloud"},
			&cli.StringSliceFlag{Name: "o", Usage: "mount options: allow_other, default_permissions, ro, uid=N, gid=N, umask=OOO (comma-separated)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "metrics", Usage: "serve the drive's Prometheus metrics on `ADDR`/metrics (loopback only, e.g. 127.0.0.1:9101)"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go profiling on `ADDR`/debug/pprof/ (loopback only, e.g. 127.0.0.1:6061)"},
		},
		Action: runMount,
	}
}

func unmountCommand() *cli.Command {
	return &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "push pending uploads, then unmount",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "unmount without waiting for uploads (they resume at the next mount)"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up waiting for uploads after this long (0: wait)"},
		},
		Action: runUnmount,
	}
}

// mountOpts are the parsed -o options.
type mountOpts struct {
	allowOther, defaultPerms, ro bool
	uid, gid, umask              *uint32
}

func parseMountOpts(list []string) (mountOpts, error) {
	var o mountOpts
	num := func(k, v string, base int) (*uint32, error) {
		n, err := strconv.ParseUint(v, base, 32)
		if err != nil {
			return nil, fmt.Errorf("-o %s=%s: %w", k, v, err)
		}
		u := uint32(n)
		return &u, nil
	}
	for _, item := range list {
		for _, opt := range strings.Split(item, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(opt), "=")
			var err error
			switch k {
			case "":
			case "allow_other":
				o.allowOther = true
			case "default_permissions":
				o.defaultPerms = true
			case "ro":
				o.ro = true
			case "rw":
				o.ro = false
			case "uid":
				o.uid, err = num(k, v, 10)
			case "gid":
				o.gid, err = num(k, v, 10)
			case "umask":
				o.umask, err = num(k, v, 8)
			case "defaults", "auto", "noauto", "user", "users", "nofail", "_netdev", "exec", "noexec",
				"suid", "nosuid", "dev", "nodev", "atime", "noatime", "relatime", "async":
			default:
				if !strings.HasPrefix(k, "x-") && !strings.HasPrefix(k, "comment=") {
					return o, fmt.Errorf("unknown mount option %q", opt)
				}
			}
			if err != nil {
				return o, err
			}
		}
	}
	return o, nil
}

func xdgDir(env, fallback string) string {
	if d := os.Getenv(env); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "kumo")
	}
	return filepath.Join(home, fallback)
}

func defaultCloudDir() string {
	return filepath.Join(xdgDir("XDG_DATA_HOME", ".local/share"), "kumo", "cloud")
}
func defaultCacheRoot() string { return filepath.Join(xdgDir("XDG_CACHE_HOME", ".cache"), "kumo") }

// controlSocket is where the daemon of mountpoint listens.
func controlSocket(mountpoint string) string {
	abs, err := filepath.Abs(mountpoint)
	if err == nil {
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			abs = r
		}
	}
	sum := sha256.Sum256([]byte(abs))
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	return filepath.Join(dir, fmt.Sprintf("kumo-%d", os.Getuid()), hex.EncodeToString(sum[:8])+".sock")
}

// switchWriter is the log destination: stderr first, the log file once known.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

func runMount(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("usage: kumo mount [flags] MOUNTPOINT")
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	if !c.Bool("foreground") {
		return daemonize(mnt)
	}
	ready := func(err error) {}
	if fd := os.Getenv(envDaemonFD); fd != "" {
		n, _ := strconv.Atoi(fd)
		pipe := os.NewFile(uintptr(n), "ready")
		os.Unsetenv(envDaemonFD)
		ready = func(err error) {
			if pipe == nil {
				return
			}
			if err != nil {
				fmt.Fprintf(pipe, "ERR %v\n", err)
			} else {
				fmt.Fprintln(pipe, "OK")
			}
			pipe.Close()
			pipe = nil
		}
	}
	err = serveMount(c, mnt, ready)
	ready(err)
	return err
}

// daemonMemoryLimit is the floor of the daemon's soft Go memory limit unless
// GOMEMLIMIT says otherwise (the garbage collector works harder near it; it is
// not a cap). followLiveHeap raises it with the live heap.
const daemonMemoryLimit = 160 << 20

// followLiveHeap keeps the soft memory limit at max(floor, 1.5 × live heap)
// until ctx ends. A fixed limit low enough to keep the daemon small would
// make the collector run back to back once the live heap nears it (a big
// tree looked up: ~800 B per inode); following the live heap leaves at least
// half of it as headroom, like GOGC=50 would, while small heaps stay under
// the floor.
func followLiveHeap(ctx context.Context, floor int64) {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rtmetrics.Read(s)
		if s[0].Value.Kind() != rtmetrics.KindUint64 {
			return
		}
		live := int64(s[0].Value.Uint64())
		debug.SetMemoryLimit(max(floor, live+live/2))
	}
}

// serveMount is the daemon: mount, serve the control socket, wait.
func serveMount(c *cli.Context, mnt string, ready func(error)) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	logw := &switchWriter{w: os.Stderr}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: lv}))
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft limit on the Go heap: without it the garbage collector lets
		// the heap double between collections, which on a long tree copy put
		// the daemon's anonymous memory at 340 MiB instead of 175 (measured).
		debug.SetMemoryLimit(daemonMemoryLimit)
		gcctx, stopGC := context.WithCancel(context.Background())
		defer stopGC()
		go followLiveHeap(gcctx, daemonMemoryLimit)
	}
	mo, err := parseMountOpts(c.StringSlice("o"))
	if err != nil {
		return err
	}
	var fsyncRemote bool
	switch c.String("fsync") {
	case "local":
	case "remote":
		fsyncRemote = true
	default:
		return fmt.Errorf("--fsync %q: want local or remote", c.String("fsync"))
	}
	budget, err := size.Parse(c.String("cache-size"))
	if err != nil {
		return fmt.Errorf("--cache-size: %w", err)
	}
	if st, err := os.Stat(mnt); err != nil || !st.IsDir() {
		return fmt.Errorf("mountpoint %s: not a directory", mnt)
	}

	ctx := context.Background()
	// Metrics and pprof listen before the mount so a bad address fails the
	// mount; the drive's gauges join the registry once it is mounted.
	lctx, stopListeners := context.WithCancel(ctx)
	defer stopListeners()
	var reg *metrics.Registry
	if a := c.String("metrics"); a != "" {
		reg = metrics.New()
		maddr, err := metrics.Serve(lctx, a, reg.Handler(), log)
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		log.Info("metrics listening", "metrics_url", "http://"+maddr.String()+"/metrics")
	}
	if a := c.String("pprof"); a != "" {
		paddr, err := metrics.Serve(lctx, a, metrics.PprofHandler(), log)
		if err != nil {
			return fmt.Errorf("--pprof: %w", err)
		}
		log.Info("pprof listening", "pprof_url", "http://"+paddr.String()+"/debug/pprof/")
	}
	var (
		sess       *session.Session
		cl         *client.Client
		cleanup    = func() {}
		serverName string
	)
	if srvURL := c.String("server"); srvURL != "" {
		sess, err = session.Load(sessionPath(c))
		if err != nil {
			return fmt.Errorf("no saved session (%w): run kumo login --server %s --email E", err, srvURL)
		}
		if strings.TrimRight(sess.Server, "/") != strings.TrimRight(srvURL, "/") {
			return fmt.Errorf("the saved session is for %s, not %s: run kumo login --server %s", sess.Server, srvURL, srvURL)
		}
		if cl, err = sess.Client(); err != nil {
			return err
		}
	} else {
		cloudDir := c.String("cloud-dir")
		if cloudDir == "" {
			cloudDir = defaultCloudDir()
		}
		sess, cl, cleanup, err = embeddedCloud(ctx, cloudDir, log)
		if err != nil {
			return err
		}
		serverName = "embedded"
	}
	defer cleanup()

	a, err := cl.Account(ctx)
	if err != nil {
		return explain(fmt.Errorf("account: %w", err), sess)
	}
	cacheDir := c.String("cache-dir")
	if cacheDir == "" {
		cacheDir = filepath.Join(defaultCacheRoot(), a.ID)
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return err
	}
	if !c.Bool("foreground") || os.Getenv("KUMO_LOG_FILE") != "" || isDaemonChild() {
		f, err := os.OpenFile(filepath.Join(cacheDir, "kumo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err == nil {
			logw.set(f)
			defer f.Close()
		}
	}
	store, err := cache.Open(cache.Options{Dir: cacheDir, Key: sess.Subkeys().Cache, Budget: budget, Logger: log})
	if err != nil {
		return fmt.Errorf("cache %s: %w", cacheDir, err)
	}
	defer store.Close()

	o := kfs.Options{
		Client: cl, Session: sess, Cache: store, FsyncRemote: fsyncRemote, Logger: log,
		AllowOther: mo.allowOther, DefaultPermissions: mo.defaultPerms, ReadOnly: mo.ro,
		UID: mo.uid, GID: mo.gid, Umask: mo.umask, FsName: "kumo", ServerName: serverName,
	}
	d, err := kfs.Mount(ctx, mnt, o)
	if err != nil {
		return err
	}
	if reg != nil {
		d.RegisterMetrics(reg)
	}
	// replying counts control connections writing their last answer: the
	// process must not exit under them.
	var replying sync.WaitGroup
	sock := controlSocket(mnt)
	ln, err := listenControl(sock)
	if err != nil {
		log.Warn("no control socket: kumo unmount will not flush first", "err", err)
	} else {
		defer os.Remove(sock)
		go serveControl(ln, d, log, &replying)
	}
	ready(nil)
	log.Info("ready", "mountpoint", mnt, "account", a.Email, "cache", cacheDir)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() { d.Wait(); close(done) }()
	select {
	case <-done:
	case s := <-sigs:
		log.Info("signal: pushing pending uploads, then unmounting", "signal", s.String())
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := d.Flush(fctx); err != nil {
			log.Warn("not everything was pushed; it resumes at the next mount", "err", err)
		}
		cancel()
		if err := d.Unmount(); err != nil {
			log.Error("unmount failed; detaching lazily", "err", err)
			_ = exec.Command("fusermount3", "-uz", mnt).Run()
		}
		<-done
	}
	if ln != nil {
		ln.Close()
	}
	waitDone := make(chan struct{})
	go func() { replying.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(5 * time.Second):
	}
	log.Info("unmounted", "mountpoint", mnt)
	return nil
}

func isDaemonChild() bool { return os.Getenv("KUMO_DAEMON_CHILD") == "1" }

// embeddedURL is the base URL of the embedded cloud. It is never dialed: the
// embedded cloud's client talks to the server in-process.
const embeddedURL = "http://embedded.kumo.localhost"

// embeddedSmallChunkMax is one sealed 16 KiB segment (see embeddedCloud).
const embeddedSmallChunkMax = 16<<10 + chunk.Overhead

// embeddedCloud runs the cloud in-process and logs in to the local account,
// creating it (random password kept 0600) on first use.
//
// The embedded cloud keeps chunks of files up to 16 KiB in its metadata
// store (the server's default is 64 KiB): badger maps its value log, so
// every small chunk written stays in the daemon's RSS as a file page until
// the process ends. Files of 16–64 KiB (a third of the bytes of a source
// tree) go to the blob store, written with write(), which RSS never counts.
func embeddedCloud(ctx context.Context, dir string, log *slog.Logger) (*session.Session, *client.Client, func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, err
	}
	var quota int64 = 1 << 40
	var sfs syscall.Statfs_t
	if syscall.Statfs(dir, &sfs) == nil {
		quota = int64(sfs.Blocks) * sfs.Bsize
	}
	srv, err := server.New(server.Config{DataDir: dir, DefaultQuota: quota, SyncWrites: true, SmallMemory: true, NoReadVerify: true,
		SmallChunkMax: embeddedSmallChunkMax, Logger: log.With("part", "cloud")})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("embedded cloud in %s: %w", dir, err)
	}
	// No socket: the client calls the server's handler directly (see
	// client.InProcess), which spares every chunk read a loopback TCP round
	// trip. The URL only names the cloud in requests and the saved session.
	url := embeddedURL
	cleanup := func() { srv.Close() }
	hc := &http.Client{Transport: client.NewInProcess(srv.Handler())}
	cl, err := client.New(client.Options{BaseURL: url, HTTPClient: hc, Logger: log})
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	const email = "local@kumo.localhost"
	pwPath := filepath.Join(dir, "local-password")
	sessPath := filepath.Join(dir, "local-session.json")
	pw, err := os.ReadFile(pwPath)
	var s *session.Session
	switch {
	case errors.Is(err, os.ErrNotExist):
		b := make([]byte, 24)
		rand.Read(b)
		pw = []byte(hex.EncodeToString(b))
		if err := os.WriteFile(pwPath, pw, 0o600); err != nil {
			cleanup()
			return nil, nil, nil, err
		}
		s, err = session.Signup(ctx, cl, url, email, pw, keys.DefaultKDF())
		if err != nil {
			cleanup()
			return nil, nil, nil, fmt.Errorf("create the local account: %w", err)
		}
		log.Info("created the local account of the embedded cloud", "dir", dir)
	case err != nil:
		cleanup()
		return nil, nil, nil, err
	default:
		pw = []byte(strings.TrimSpace(string(pw)))
		if old, err := session.Load(sessPath); err == nil && (old.Expires.IsZero() || time.Until(old.Expires) > 24*time.Hour) {
			cl.SetToken(old.Token)
			if _, err := cl.Account(ctx); err == nil {
				old.Server = url
				s = old
			}
		}
		if s == nil {
			s, err = session.Login(ctx, cl, url, email, pw)
			if err != nil {
				cleanup()
				return nil, nil, nil, fmt.Errorf("log in to the embedded cloud: %w", err)
			}
		}
	}
	if err := s.Save(sessPath); err != nil {
		log.Warn("saving the embedded cloud session", "err", err)
	}
	cl.SetToken(s.Token)
	return s, cl, cleanup, nil
}

// daemonize re-executes kumo in the foreground in a new session and waits
// until the child reports the mount ready (or failed).
func daemonize(mnt string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	args := append([]string{os.Args[0]}, os.Args[1:]...)
	// Insert --foreground right after "mount".
	for i, a := range args {
		if a == "mount" {
			args = append(args[:i+1], append([]string{"--foreground"}, args[i+1:]...)...)
			break
		}
	}
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	cmd := exec.Command(exe, args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.ExtraFiles = []*os.File{w}
	cmd.Env = append(os.Environ(), envDaemonFD+"=3", "KUMO_DAEMON_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	r.Close()
	line := strings.TrimSpace(string(msg))
	if line == "OK" {
		fmt.Fprintf(os.Stderr, "kumo: mounted at %s (daemon pid %d)\n", mnt, cmd.Process.Pid)
		_ = cmd.Process.Release()
		return nil
	}
	_ = cmd.Wait()
	if line == "" {
		return errors.New("the daemon exited before the mount was ready (see kumo.log in the cache dir)")
	}
	return errors.New(strings.TrimPrefix(line, "ERR "))
}

// --- control socket ---

func listenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if conn, err := net.Dial("unix", path); err == nil {
		conn.Close()
		return nil, fmt.Errorf("another daemon serves %s", path)
	}
	os.Remove(path)
	return net.Listen("unix", path)
}

// serveControl answers "flush", "unmount", "unmount force" and "status", one per connection.
func serveControl(ln net.Listener, d *kfs.Drive, log *slog.Logger, replying *sync.WaitGroup) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.TrimSpace(line)
			// The peer hanging up cancels a flush.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				b := make([]byte, 1)
				conn.Read(b)
				cancel()
			}()
			switch cmd {
			case "status":
				fmt.Fprintln(conn, progressLine(d.Status()))
			case "flush", "unmount", "unmount force":
				if cmd != "unmount force" {
					if err := flushWithProgress(ctx, d, conn); err != nil {
						fmt.Fprintf(conn, "error %v\n", err)
						return
					}
				}
				if cmd == "flush" {
					fmt.Fprintln(conn, "done")
					return
				}
				log.Info("unmount requested", "force", cmd == "unmount force")
				replying.Add(1)
				if err := d.Unmount(); err != nil {
					fmt.Fprintf(conn, "error %v\n", err)
					replying.Done()
					return
				}
				fmt.Fprintln(conn, "done")
				replying.Done()
				// Keep the connection open until the process exits (and has
				// closed the cache and the embedded cloud): kumo unmount
				// waits for that before returning.
				select {}
			default:
				fmt.Fprintf(conn, "error unknown command %q\n", cmd)
			}
		}()
	}
}

func progressLine(s kfs.Status) string {
	state := "online"
	if !s.Online {
		state = "offline since " + s.OfflineSince.Format(time.TimeOnly)
	}
	line := fmt.Sprintf("progress files=%d bytes=%d ops=%d uploading=%d state=%q", s.Queue.Files, s.Queue.Bytes, s.Queue.Ops, s.Queue.Uploading, state)
	if s.QuotaBlocked {
		line += ` note="quota exceeded: top up to continue"`
	}
	if s.LastError != "" && !s.Online {
		line += fmt.Sprintf(" last_error=%q", s.LastError)
	}
	return line
}

func flushWithProgress(ctx context.Context, d *kfs.Drive, w io.Writer) error {
	done := make(chan error, 1)
	go func() { done <- d.Flush(ctx) }()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			if _, err := fmt.Fprintln(w, progressLine(d.Status())); err != nil {
				return err
			}
		}
	}
}

func runUnmount(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("usage: kumo unmount [--force] MOUNTPOINT")
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	force := c.Bool("force")
	conn, err := net.Dial("unix", controlSocket(mnt))
	if err != nil {
		// No daemon to ask (it died, or another kind of mount): unmount directly.
		args := []string{"-u", mnt}
		if force {
			args = []string{"-uz", mnt}
		}
		out, ferr := exec.Command("fusermount3", args...).CombinedOutput()
		if ferr != nil {
			if uerr := syscall.Unmount(mnt, 0); uerr == nil {
				return nil
			}
			return fmt.Errorf("unmount %s: %s", mnt, strings.TrimSpace(string(out)))
		}
		return nil
	}
	defer conn.Close()
	if t := c.Duration("timeout"); t > 0 {
		conn.SetDeadline(time.Now().Add(t))
	}
	cmd := "unmount"
	if force {
		cmd = "unmount force"
	}
	if _, err := fmt.Fprintln(conn, cmd); err != nil {
		return err
	}
	tty := isTerminal(os.Stderr)
	sc := bufio.NewScanner(conn)
	last := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "done":
			if tty && last != "" {
				fmt.Fprintln(os.Stderr)
			}
			return waitGone(conn)
		case strings.HasPrefix(line, "error "):
			if tty && last != "" {
				fmt.Fprintln(os.Stderr)
			}
			return errors.New(strings.TrimPrefix(line, "error "))
		case strings.HasPrefix(line, "progress "):
			if line == last {
				continue
			}
			last = line
			msg := "kumo: waiting for uploads: " + strings.TrimPrefix(line, "progress ")
			if tty {
				fmt.Fprintf(os.Stderr, "\r\033[K%s", msg)
			} else {
				fmt.Fprintln(os.Stderr, msg)
			}
		}
	}
	if err := sc.Err(); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("uploads still pending after %v (kumo unmount --force skips them; they resume at the next mount)", c.Duration("timeout"))
		}
		return err
	}
	return errors.New("the daemon hung up before unmounting")
}

// waitGone waits for the daemon to close the connection (it exits after unmounting).
func waitGone(conn net.Conn) error {
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	io.Copy(io.Discard, conn)
	return nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// mountHelperMain makes kumo act as /sbin/mount.kumo for /etc/fstab:
// `mount.kumo SOURCE MOUNTPOINT [-o opts]`, SOURCE "kumo" (embedded cloud)
// or a server URL. kumo-specific options: server=, cloud_dir=, cache_dir=,
// cache_size=, fsync=, config=, log_level=, foreground.
func mountHelperMain(args []string) int {
	var pos, opts []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-o" && i+1 < len(args):
			opts = append(opts, args[i+1])
			i++
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, a[2:])
		case a == "-n" || a == "-s" || a == "-v" || a == "-f":
		case a == "-t" && i+1 < len(args):
			i++
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mount.kumo SOURCE MOUNTPOINT [-o options]")
		return 1
	}
	cmdArgs := []string{"kumo", "mount"}
	if src := pos[0]; strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		cmdArgs = append(cmdArgs, "--server", src)
	}
	var fuseOpts []string
	for _, o := range opts {
		for _, opt := range strings.Split(o, ",") {
			k, v, hasV := strings.Cut(opt, "=")
			flag := map[string]string{"server": "--server", "cloud_dir": "--cloud-dir", "cache_dir": "--cache-dir",
				"cache_size": "--cache-size", "fsync": "--fsync", "config": "--config", "log_level": "--log-level"}[k]
			switch {
			case flag != "" && hasV:
				cmdArgs = append(cmdArgs, flag, v)
			case k == "foreground":
				cmdArgs = append(cmdArgs, "--foreground")
			case opt != "":
				fuseOpts = append(fuseOpts, opt)
			}
		}
	}
	if len(fuseOpts) > 0 {
		cmdArgs = append(cmdArgs, "-o", strings.Join(fuseOpts, ","))
	}
	cmdArgs = append(cmdArgs, pos[1])
	os.Args = cmdArgs
	app := &cli.App{Name: "kumo", Commands: []*cli.Command{mountCommand()}}
	if err := app.Run(cmdArgs); err != nil {
		fmt.Fprintln(os.Stderr, "mount.kumo:", err)
		return 1
	}
	return 0
}
