package main

// kumo mount / kumo unmount, the mount.kumo helper for /etc/fstab, the
// embedded cloud, daemonizing, and the checks on a mount point (the control
// socket between the daemon and kumo unmount is fs/ctlsock).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
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
	"kumo/fs/ctlsock"
	"kumo/fs/mountpoint"
	"kumo/internal/chunk"
	"kumo/internal/metrics"
	"kumo/internal/procs"
	"kumo/internal/size"
	"kumo/remote/client"
	"kumo/remote/session"
)

// envDaemonFD names the descriptor a daemonized child reports readiness on.
const envDaemonFD = "KUMO_DAEMON_READY_FD"

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount the drive (the account of `kumo login`, or an embedded cloud on this machine), or a read-only link",
		ArgsUsage: "MOUNTPOINT | URL MOUNTPOINT",
		Description: "Without --server, kumo runs an embedded cloud in-process over --cloud-dir " +
			"(an account is created on first use). It daemonizes once the mount is ready unless --foreground.\n" +
			"kumo mount [--fingerprint HEX] https://SERVER/s/ID#SECRET MOUNTPOINT mounts a link's file or folder read-only, no account needed.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", Usage: "cloud URL; uses the session saved by `kumo login`", EnvVars: []string{"KUMO_SERVER"}},
			configFlag(),
			&cli.StringFlag{Name: "cloud-dir", Usage: "data directory of the embedded cloud (default $XDG_DATA_HOME/kumo/cloud); its keys stay in the config dir"},
			&cli.StringFlag{Name: "password-file", Usage: "embedded cloud: protect its account with the password on the first line of `FILE` (else $KUMO_PASSWORD; without either, a random password kept in the config dir); a link: its password (else $" + linkPasswordEnv + ", else a prompt)"},
			&cli.StringFlag{Name: "cache-dir", Usage: "local cache and write-back store (default $XDG_CACHE_HOME/kumo/ACCOUNT)"},
			&cli.StringFlag{Name: "cache-size", Value: "4GiB", Usage: "disk budget of the chunk cache"},
			&cli.StringFlag{Name: "shared-dir", Value: "Shared", Usage: "the folders other accounts shared with you (and you accepted) appear in MOUNTPOINT/`NAME`/FOLDER; \"\" to not show them"},
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay in the foreground (log to stderr)"},
			&cli.StringFlag{Name: "fsync", Value: "local", Usage: "local: fsync makes data durable on this disk; remote: fsync waits until it is in the cloud"},
			&cli.BoolFlag{Name: "durable-close", Usage: "close also makes the file's data durable on this disk, as fsync does (slower; default: close hands the data to the kernel, like ext4, and fsync or the 5 s commit makes it durable)"},
			&cli.StringSliceFlag{Name: "o", Usage: "mount options: allow_other (lets other users in; implies default_permissions, so the kernel checks file modes for them), " +
				"default_permissions, ro, uid=N, gid=N, umask=OOO, nonempty (mount over a directory that has files; they stay hidden until unmounted) (comma-separated)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "metrics", Usage: "serve the drive's Prometheus metrics on `ADDR`/metrics (loopback only, e.g. 127.0.0.1:9101)"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go profiling on `ADDR`/debug/pprof/ (loopback only, e.g. 127.0.0.1:6061)"},
			fingerprintFlag(), // a link's server, as kumo get URL (linkmount.go); the drive uses the pin of kumo login
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
			&cli.DurationFlag{Name: "timeout", Value: defaultUnmountTimeout, Usage: "give up waiting for uploads after this long, leaving the drive mounted (0: wait as long as it takes)"},
		},
		Action: runUnmount,
	}
}

// defaultUnmountTimeout bounds how long `kumo unmount` waits for uploads.
const defaultUnmountTimeout = 10 * time.Minute

// mountOpts are the parsed -o options.
type mountOpts struct {
	allowOther, defaultPerms, ro bool
	nonempty                     bool // mount over a directory that has files
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
			case "nonempty":
				o.nonempty = true
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
	// Without default_permissions FUSE checks no modes at all: with
	// allow_other alone every local user could read, write and chmod every
	// file. Other users get in only through the kernel's mode checks.
	if o.allowOther {
		o.defaultPerms = true
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
	args, err := positional(c) // flags may follow: kumo mount URL MNT --password-file F
	if err != nil {
		return err
	}
	var linkURL string // kumo mount URL MOUNTPOINT: a read-only link (linkmount.go)
	if len(args) == 2 && isLinkURL(args[0]) {
		linkURL, args = args[0], args[1:]
	}
	if len(args) != 1 {
		return errors.New("usage: kumo mount [flags] MOUNTPOINT, or kumo mount [flags] URL MOUNTPOINT for a link")
	}
	mnt, err := mountpoint.Resolve(args[0])
	if err != nil {
		return err
	}
	mo, err := parseMountOpts(c.StringSlice("o"))
	if err != nil {
		return err
	}
	if err := checkMountpoint(mnt, mo.nonempty); err != nil {
		return err
	}
	if !c.Bool("foreground") {
		if linkURL != "" {
			if err := askLinkPassword(c, linkURL); err != nil {
				return err
			}
		}
		return daemonize(mnt)
	}
	ready := func(uses string, err error) {}
	if fd := os.Getenv(envDaemonFD); fd != "" {
		n, _ := strconv.Atoi(fd)
		pipe := os.NewFile(uintptr(n), "ready")
		os.Unsetenv(envDaemonFD)
		ready = func(uses string, err error) {
			if pipe == nil {
				return
			}
			if err != nil {
				fmt.Fprintf(pipe, "ERR %v\n", err)
			} else {
				fmt.Fprintf(pipe, "OK %s\n", uses)
			}
			pipe.Close()
			pipe = nil
		}
	}
	if linkURL != "" {
		err = serveLinkMount(c, linkURL, mnt, ready)
	} else {
		err = serveMount(c, mnt, ready)
	}
	ready("", err)
	return err
}

// daemonMemoryLimit is the floor of the daemon's soft Go memory limit unless
// GOMEMLIMIT says otherwise (the garbage collector works harder near it; it is
// not a cap). followLiveHeap raises it with the live heap. 160 MiB made the
// collector run back to back once unpacking and committing a source tree had
// 150–160 MB live (600 collections in 80 s, a third of the daemon's CPU in
// rm -rf); at 192 MiB git's commit of the Go tree took 29 s instead of 36
// and the daemon peaked at 245 MiB RSS instead of 208–253 (docs/PERFORMANCE.md).
const daemonMemoryLimit = 192 << 20

// minHeapHeadroom is the least room above the live heap followLiveHeap
// leaves: a quarter of a small heap is too little for the runtime's own
// overhead and a burst of uploads.
const minHeapHeadroom = 48 << 20

// mappedFilesBudget is how much of the daemon's RSS the pages of its
// executable (about 20 MiB) and of badger's mapped files may take before
// badger's are handed back to the page cache (cache.KeepMappedUnder, checked
// every mappedFilesEvery): what the anonymous memory leaves of 256 MiB, at
// least 48 MiB. So the peak stays where the heap's peak puts it (the heap
// peaks while a tree is written, 200 MiB and more), and reads of a tree
// just written, when the heap is smaller, find badger's pages in memory
// instead of reading them from disk again.
var mappedFilesBudget = cache.MappedBudget{Floor: 48 << 20, Total: 256 << 20}

// mappedFilesEvery: a check reads /proc/self/status (microseconds); while
// small files' data is written to badger's value log at 100 MiB/s and more,
// half a second let its pages overshoot the budget by tens of MiB.
const mappedFilesEvery = 100 * time.Millisecond

// followLiveHeap keeps the soft memory limit at max(floor, live heap +
// max(a quarter of it, minHeapHeadroom) + the runtime's overhead), the
// headroom shrunk past ceiling (memoryLimit), until ctx ends. A fixed limit low enough to keep the daemon small
// would make the collector run back to back once the live heap nears it (a
// big tree looked up: ~800 B per inode); following the live heap leaves a
// quarter of it as headroom, like GOGC=25 would, while small heaps stay under
// the floor. (Half of it, as before 2026-12-05, put the anonymous peak of
// unpacking and committing a source tree at 230–240 MiB, most of it live
// badger table builders.)
//
// The limit counts all the runtime's memory, not only live objects: its
// metadata, stacks and the heap's fragmentation (40 MB and more once an
// rm -rf frees a tree's node states) leave the heap that much less room. Left
// out, the heap's goal fell below the live heap itself during an rm -rf
// after a grep (137 MB live, 131 MB goal): 40 collections back to back in 7 s,
// a third of the daemon's CPU. overhead is counted in, and checked every
// followEvery so a jump of the live heap is followed before it costs much.
func followLiveHeap(ctx context.Context, floor, ceiling int64) {
	s := []rtmetrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	t := time.NewTicker(followEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rtmetrics.Read(s)
		var v [5]int64
		for i := range s {
			if s[i].Value.Kind() != rtmetrics.KindUint64 {
				return
			}
			v[i] = int64(s[i].Value.Uint64())
		}
		debug.SetMemoryLimit(memoryLimit(v[0], v[1]-v[2]-v[3]-v[4], floor, ceiling))
	}
}

// followEvery is how often followLiveHeap looks (reading the runtime's
// metrics costs microseconds).
const followEvery = 250 * time.Millisecond

// daemonMemoryCeiling bounds the headroom followLiveHeap gives: with badger's
// mapped files (cache.KeepMappedUnder keeps them to what the anonymous memory
// leaves of 256 MiB, at least 48 MiB, checked every mappedFilesEvery, written
// pages overshooting it between checks) a daemon whose heap fits stays under
// 300 MiB RSS: at 240 MiB, TestMemoryPeak's 24,000 small files peaked at
// 284–317 MiB, at 224 MiB at 266–271 (the rm -rf of the tree sequence took
// as long). It never cuts into the live heap: past it the headroom shrinks to
// half of minHeapHeadroom, so a bigger heap (a 100,000-file tree looked up)
// makes the collector run more often, not back to back.
const daemonMemoryCeiling = 224 << 20

// memoryLimit is the soft limit for a live heap of live bytes when the
// runtime holds overhead bytes besides the heap's objects and free pages.
func memoryLimit(live, overhead, floor, ceiling int64) int64 {
	need := live + max(overhead, 0)
	limit := need + max(live/4, minHeapHeadroom)
	if limit > ceiling {
		limit = max(ceiling, need+minHeapHeadroom/2)
	}
	return max(floor, limit)
}

// serveMount is the daemon: mount, serve the control socket, wait.
func serveMount(c *cli.Context, mnt string, ready func(uses string, err error)) error {
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
		go followLiveHeap(gcctx, daemonMemoryLimit, daemonMemoryCeiling)
	}
	// Badger's mapped files would otherwise keep every page it touched
	// resident (cache/mapped.go).
	mapctx, stopMapped := context.WithCancel(context.Background())
	defer stopMapped()
	go cache.KeepMappedUnder(mapctx, mappedFilesBudget, mappedFilesEvery, log)
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
	// The control socket first: holding it makes this the only daemon of
	// mnt, and a second mount there fails here, before any work.
	ctl, err := listenControl(mnt, log)
	if err != nil {
		return err
	}
	defer ctl.Close()

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
		// The mutex profile shows who holds the drive's locks while
		// requests wait (one contention in 100 sampled; off without --pprof).
		runtime.SetMutexProfileFraction(100)
	}
	var (
		sess        *session.Session
		cl          *client.Client
		cleanup     = func() {}
		serverName  string
		cloudDir    string
		cloudWhat   string // what the ready message says the drive uses
		diskRoom    kfs.DiskRoomFunc
		releaseMark = func() {}
	)
	if srvURL := c.String("server"); srvURL != "" {
		sess, err = session.Load(sessionPath(c))
		if errors.Is(err, session.ErrNoSession) {
			return fmt.Errorf("not logged in to %s: no session saved in %s; run kumo login --server %s --email E first", srvURL, sessionPath(c), srvURL)
		}
		if err != nil {
			return fmt.Errorf("%w; run kumo login --server %s --email E again", err, srvURL)
		}
		if strings.TrimRight(sess.Server, "/") != strings.TrimRight(srvURL, "/") {
			return fmt.Errorf("the saved session is for %s, not %s: run kumo login --server %s", sess.Server, srvURL, srvURL)
		}
		if cl, err = sess.Client(); err != nil {
			return err
		}
		cloudWhat = "server " + sess.Server
	} else {
		cloudDir = c.String("cloud-dir")
		if cloudDir == "" {
			cloudDir = defaultCloudDir()
		}
		if cloudDir, err = filepath.Abs(cloudDir); err != nil {
			return err
		}
		pw, err := optionalPassword(c)
		if err != nil {
			return err
		}
		e, err := openEmbedded(ctx, cloudDir, configDir(c), pw, true, log)
		if err != nil {
			return err
		}
		sess, cl, cleanup = e.sess, e.cl, e.close
		releaseMark = markInUse(cloudDir, mnt)
		serverName = "embedded"
		cloudWhat = "embedded cloud in " + cloudDir
		diskRoom = kfs.DiskRoom(cloudDir, embeddedReserve)
	}
	defer cleanup()
	defer func() { releaseMark() }()

	a, err := mountAccount(ctx, c, cl, sess, log) // mountoffline.go: also with the server down
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
		if strings.Contains(err.Error(), "acquire directory lock") {
			return inUseError("the cache dir "+cacheDir+" (account "+a.Email+")", cacheDir)
		}
		return fmt.Errorf("cache %s: %w", cacheDir, err)
	}
	defer store.Close()
	defer markInUse(cacheDir, mnt)()

	o := kfs.Options{
		Client: cl, Session: sess, Cache: store, FsyncRemote: fsyncRemote, DurableClose: c.Bool("durable-close"), Logger: log,
		AllowOther: mo.allowOther, DefaultPermissions: mo.defaultPerms, ReadOnly: mo.ro,
		UID: mo.uid, GID: mo.gid, Umask: mo.umask, FsName: "kumo", ServerName: serverName,
		DiskRoom: diskRoom, EmbeddedDir: cloudDir,
	}
	mountShares(ctx, c, cl, sess, c.String("server") != "", a, &o, log) // shared folders (fs/share.go)
	o.SharedCacheDir, o.SharedCacheSize = filepath.Join(cacheDir, "shares"), budget/4
	d, err := kfs.Mount(ctx, mnt, o)
	if err != nil {
		return err
	}
	if reg != nil {
		d.RegisterMetrics(reg)
	}
	go ctl.Serve(mountedDrive{d, mnt})
	if n := runtime.GOMAXPROCS(0); os.Getenv("GOMAXPROCS") == "" && procs.Measured(n) {
		// One processor during bursts of small changes (internal/procs);
		// back to the runtime's own choice (which follows the CPU quota)
		// after them.
		pctx, stopProcs := context.WithCancel(ctx)
		defer stopProcs()
		go procs.Run(pctx, n, d.Load, func(n int) {
			if n == 1 {
				runtime.GOMAXPROCS(1)
			} else {
				runtime.SetDefaultGOMAXPROCS()
			}
			log.Debug("processors for Go code", "n", runtime.GOMAXPROCS(0))
		})
	}
	ready(cloudWhat, nil)
	log.Info("ready", "mountpoint", mnt, "account", a.Email, "cloud", cloudWhat, "cache", cacheDir)

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
		if err := (mountedDrive{d, mnt}).Unmount(); err != nil {
			log.Error("unmount failed; detaching lazily", "err", err)
			_ = exec.Command("fusermount3", "-uz", mnt).Run()
		}
		<-done
	}
	ctl.Close()
	log.Info("unmounted", "mountpoint", mnt)
	return nil
}

func isDaemonChild() bool { return os.Getenv("KUMO_DAEMON_CHILD") == "1" }

// embeddedURL is the base URL of the embedded cloud. It is never dialed: the
// embedded cloud's client talks to the server in-process.
const embeddedURL = "http://embedded.kumo.localhost"

// embeddedSmallChunkMax is one sealed 16 KiB segment (see openEmbedded).
const embeddedSmallChunkMax = 16<<10 + chunk.Overhead

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
	if uses, ok := strings.CutPrefix(line, "OK"); ok {
		if uses = strings.TrimSpace(uses); uses != "" {
			uses += ", "
		}
		fmt.Fprintf(os.Stderr, "kumo: mounted at %s (%sdaemon pid %d)\n", mnt, uses, cmd.Process.Pid)
		_ = cmd.Process.Release()
		return nil
	}
	_ = cmd.Wait()
	if line == "" {
		return errors.New("the daemon exited before the mount was ready (see kumo.log in the cache dir)")
	}
	return errors.New(strings.TrimPrefix(line, "ERR "))
}

// checkMountpoint refuses a mount point where the drive would stack on
// another mount or hide files (unless nonempty).
func checkMountpoint(mnt string, nonempty bool) error {
	m, mounted, err := mountpoint.Lookup(mnt)
	if err != nil {
		return err
	}
	if mounted {
		if !m.IsKumo() {
			return fmt.Errorf("%s is already a mount point (%s from %s); unmount it or choose another directory", mnt, m.Type, m.Source)
		}
		if cl, err := ctlsock.Dial(mnt); err == nil {
			pid := cl.PID
			cl.Close()
			return fmt.Errorf("%s is already a kumo drive (pid %d); unmount it first: kumo unmount %s", mnt, pid, mnt)
		}
		return fmt.Errorf("%s is already a kumo drive whose daemon does not answer; unmount it first: kumo unmount %s", mnt, mnt)
	}
	st, err := os.Stat(mnt)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist: create it first (mkdir -p %s)", mnt, mnt)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	case !st.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	if nonempty {
		return nil
	}
	names, err := mountpoint.Entries(mnt, 4)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	if len(names) > 0 {
		list := strings.Join(names[:min(len(names), 3)], ", ")
		if len(names) > 3 {
			list += ", …"
		}
		return fmt.Errorf("mountpoint %s is not empty (%s): the drive would hide those files until it is unmounted; choose an empty directory, or pass -o nonempty to mount over them", mnt, list)
	}
	return nil
}

// mountedDrive is the drive as the control socket drives it: an unmount
// that fails because the mount is busy names who keeps it busy.
type mountedDrive struct {
	*kfs.Drive
	mnt string
}

// Unmount: see unmountWhenFree; the drive's own unmount then retries for a
// few seconds more (the kernel may still be releasing a file closed a moment
// ago, which no process shows).
func (m mountedDrive) Unmount() error { return unmountWhenFree(m.mnt, m.Drive.Unmount) }

// unmountWhenFree waits up to 2 s for processes seen holding mnt to let go,
// and names them if they do not; then it unmounts.
func unmountWhenFree(mnt string, unmount func() error) error {
	for deadline := time.Now().Add(2 * time.Second); len(mountpoint.Holders(mnt)) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return busyError(mnt, fmt.Errorf("%s is busy", mnt))
		}
	}
	if err := unmount(); err != nil {
		return busyError(mnt, err)
	}
	return nil
}

// busyError names the processes holding mnt, if any, instead of err.
func busyError(mnt string, err error) error {
	hs := mountpoint.Holders(mnt)
	if len(hs) == 0 {
		return err
	}
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = h.String()
	}
	return fmt.Errorf("%s is busy, in use by: %s; close those files or leave that directory, then run kumo unmount %s again",
		mnt, strings.Join(names, "; "), mnt)
}

// unmountDirect unmounts a kumo mount whose daemon is gone (fusermount3,
// then umount(2) for root), retrying for a moment while it is busy.
func unmountDirect(mnt string, force bool) error {
	args := []string{"-u", mnt}
	if force {
		args = []string{"-uz", mnt}
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		out, err := exec.Command("fusermount3", args...).CombinedOutput()
		if err == nil {
			return nil
		}
		msg := strings.TrimSpace(string(out))
		busy := strings.Contains(msg, "busy")
		if busy && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if syscall.Unmount(mnt, 0) == nil {
			return nil
		}
		if busy {
			return busyError(mnt, fmt.Errorf("unmount %s: %s", mnt, msg))
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("unmount %s: %s", mnt, msg)
	}
}

func runUnmount(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("usage: kumo unmount [--force] [--timeout D] MOUNTPOINT")
	}
	mnt, err := mountpoint.Resolve(c.Args().First())
	if err != nil {
		return err
	}
	force := c.Bool("force")
	m, mounted, err := mountpoint.Lookup(mnt)
	if err != nil {
		return err
	}
	if !mounted {
		if _, err := os.Lstat(mnt); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s does not exist", mnt)
		}
		return fmt.Errorf("%s is not mounted", mnt)
	}
	if !m.IsKumo() {
		return fmt.Errorf("%s is not a kumo drive (%s from %s): use umount", mnt, m.Type, m.Source)
	}
	cl, err := ctlsock.Dial(mnt)
	if errors.Is(err, ctlsock.ErrNoDaemon) {
		// The daemon is gone (killed, crashed), or runs as another user:
		// nothing to push from here.
		fmt.Fprintf(os.Stderr, "kumo: no daemon serves %s for you (it has exited, or runs as another user); unmounting it directly (pending uploads resume at the next mount)\n", mnt)
		return unmountDirect(mnt, force)
	}
	if err != nil {
		return err
	}
	defer cl.Close()

	timeout := c.Duration("timeout")
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	pr := newProgressPrinter(os.Stderr, timeout, force)
	last, err := cl.Unmount(ctx, force, pr.show)
	pr.end()
	if errors.Is(err, ctlsock.ErrTimeout) {
		if last.Pending() {
			return fmt.Errorf("gave up after %v waiting for %s; the drive is still mounted. "+
				"Run kumo unmount again to keep waiting (--timeout 0: as long as it takes), or --force to unmount now (uploads resume at the next mount)",
				timeout, describeProgress(last))
		}
		return fmt.Errorf("gave up after %v waiting for the daemon (pid %d) to unmount %s; see kumo.log in its cache dir, or kumo unmount --force", timeout, cl.PID, mnt)
	}
	return err
}

// describeProgress says what an unmount waits for, in words.
func describeProgress(p ctlsock.Progress) string {
	var parts []string
	if p.Files > 0 || p.Bytes > 0 {
		parts = append(parts, fmt.Sprintf("%s in %s", size.Format(p.Bytes), plural(p.Files, "file")))
	}
	if p.Ops > 0 {
		parts = append(parts, plural(p.Ops, "tree change"))
	}
	s := "the last uploads"
	if len(parts) > 0 {
		s = strings.Join(parts, " and ")
	}
	s += " to reach the cloud (" + p.State
	if p.LastError != "" {
		s += ": " + p.LastError
	}
	s += ")"
	if p.Note != "" {
		s += "; " + p.Note
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// progressPrinter shows an unmount's progress: a line redrawn in place with a
// bar on a terminal, a line per change otherwise.
type progressPrinter struct {
	w       *os.File
	tty     bool
	first   bool
	last    string
	total   int64 // most bytes seen pending: the bar's 100 %
	timeout time.Duration
	force   bool
}

func newProgressPrinter(w *os.File, timeout time.Duration, force bool) *progressPrinter {
	return &progressPrinter{w: w, tty: isTerminal(w), first: true, timeout: timeout, force: force}
}

func (p *progressPrinter) show(pg ctlsock.Progress) {
	if !pg.Pending() && p.first {
		return // nothing to wait for: say nothing
	}
	if p.first {
		p.first = false
		limit := "no time limit"
		if p.timeout > 0 {
			limit = "up to " + p.timeout.String()
		}
		fmt.Fprintf(p.w, "kumo: pushing pending uploads before unmounting (%s; --force skips them, they resume at the next mount)\n", limit)
	}
	p.total = max(p.total, pg.Bytes)
	msg := "kumo: waiting for " + describeProgress(pg)
	if p.tty && p.total > 0 {
		const width = 20
		done := int((p.total - pg.Bytes) * width / p.total)
		msg = fmt.Sprintf("[%s%s] %3d%% %s", strings.Repeat("#", done), strings.Repeat("-", width-done),
			(p.total-pg.Bytes)*100/p.total, msg)
	}
	if msg == p.last {
		return
	}
	p.last = msg
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", msg)
	} else {
		fmt.Fprintln(p.w, msg)
	}
}

// end finishes the redrawn line.
func (p *progressPrinter) end() {
	if p.tty && p.last != "" {
		fmt.Fprintln(p.w)
	}
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

// listenControl opens the mount's control socket; holding it makes this the
// only daemon of mnt (a second one gets ctlsock's BusyError as it is).
func listenControl(mnt string, log *slog.Logger) (*ctlsock.Server, error) {
	ctl, err := ctlsock.Listen(mnt, log)
	if err != nil {
		var busy *ctlsock.BusyError
		if errors.As(err, &busy) {
			return nil, err
		}
		return nil, fmt.Errorf("control socket of %s: %w", mnt, err)
	}
	return ctl, nil
}
