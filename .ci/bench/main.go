// Command bench runs the same file-system workloads on the plain local disk, on a
// kumo mount (embedded cloud) and optionally on peers (gocryptfs, rclone crypt), in
// rotation, and prints medians, min–max and kumo's ratio to each. `make bench` runs it.
//
// With -net "40ms,200Mbit" it adds a kumo mount on a separate `kumo serve` behind a
// simulated link (round-trip time, bandwidth cap) and reports cold sequential read
// against the cap, random-read latency against the round trip, and the HTTP
// requests a warm `ls -lR` costs. With -scale it runs the scale test instead
// (scale.go): a big tree, remount from the local tree cache, a huge file.
//
// It needs root (loop-mounted journaled ext4 for every target's backing store,
// drop_caches for cold reads) and fio. Results are printed as Markdown.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	kumo     string
	rounds   int
	sizeMiB  int
	files    int
	fioSecs  int
	peers    bool
	tree     string
	work     string
	out      string
	imageGiB int
	net      string // "RTT,RATE", e.g. "40ms,200Mbit"; empty = no simulated-network target
	targets  string // comma-separated subset of local,kumo,net,gocryptfs,rclone
	pprof    string // kumo mounts serve pprof here (loopback)

	scale      bool
	scaleFiles string // stages of the tree, e.g. "20000,100000"
	scaleDirs  int
	bigGiB     int

	smoke   bool   // a tiny run of every workload, to check they work (not a measurement)
	only    string // "tree": only the everyday tree workloads (tar, git, grep, rm, sqlite)
	tarball string // the tree as a tar archive (made by run)
}

func main() {
	var c config
	flag.StringVar(&c.kumo, "kumo", "bin/kumo", "kumo binary")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds (targets run in rotation each round)")
	flag.IntVar(&c.sizeMiB, "size", 1024, "MiB of the sequential file")
	flag.IntVar(&c.files, "files", 10000, "small files (in 100 directories)")
	flag.IntVar(&c.fioSecs, "fio-secs", 20, "seconds of fio random reads")
	flag.BoolVar(&c.peers, "peers", os.Getenv("PEERS") == "1", "also run gocryptfs and rclone crypt")
	flag.StringVar(&c.tree, "tree", "", "source tree to copy (default: GOROOT/src)")
	flag.StringVar(&c.work, "work", "", "work directory (default: a new dir under /var/tmp)")
	flag.StringVar(&c.out, "out", "", "also write the Markdown report to this file")
	flag.IntVar(&c.imageGiB, "image-gib", 0, "size of the ext4 image (default: from -size)")
	flag.StringVar(&c.net, "net", "", `also run kumo against "kumo serve" behind a simulated link: "RTT,RATE" (e.g. "40ms,200Mbit")`)
	flag.StringVar(&c.targets, "targets", "", "only these targets (comma-separated: local,kumo,net,gocryptfs,rclone; default all enabled)")
	flag.StringVar(&c.pprof, "pprof", "", "kumo mounts serve Go profiling on this loopback ADDR (one mount at a time)")
	flag.BoolVar(&c.scale, "scale", false, "run the scale test (big tree, remount, huge file) instead of the workloads")
	flag.StringVar(&c.scaleFiles, "scale-files", "20000,100000", "scale: tree sizes measured in turn (the tree grows to each)")
	flag.IntVar(&c.scaleDirs, "scale-dirs", 1000, "scale: directories of the tree")
	flag.IntVar(&c.bigGiB, "big-gib", 10, "scale: GiB of the huge file (0 = skip)")
	flag.StringVar(&c.only, "only", "", `"tree": run only the everyday tree workloads (tar, git, grep, rm -rf, sqlite) and the daemon's peak RSS`)
	flag.BoolVar(&c.smoke, "smoke", false, "one tiny round of every workload (16 MiB file, 200 files, a small tree): checks they run, measures nothing")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(c); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

// target is one file system under test.
type target interface {
	name() string
	setup(base string) (dir string, err error) // mount; return the directory to use
	cold() error                               // drop every cache between the data and the reader
	pid() int                                  // daemon pid, 0 if none
	teardown() error
}

type result struct {
	target, workload string
	value            float64
}

type workload struct {
	name         string
	unit         string
	higherBetter bool
}

var workloads = []workload{
	{"seq write + fsync", "MiB/s", true},
	{"warm seq read", "MiB/s", true},
	{"cold seq read", "MiB/s", true},
	{"4 KiB random read (mean)", "µs", false},
	{"create small files", "files/s", true},
	{"stat small files", "files/s", true},
	{"read small files (cold)", "files/s", true},
	{"delete small files", "files/s", true},
	{"cp -a source tree", "s", false},
	{"ls -lR tree (warm)", "s", false},
	{"find tree (warm)", "s", false},
	{"tar -xf source tree", "s", false},
	{"git init + add -A + commit", "s", false},
	{"grep -r (cold, uploads draining)", "s", false},
	{"rm -rf tree", "s", false},
	{"sqlite 200 txns × 100 inserts", "s", false},
	{"daemon peak RSS", "MiB", false},
	{"HTTP requests in warm ls -lR", "requests", false},
}

// selectTargets keeps the targets named in list (keys as in -targets).
func selectTargets(all []target, list string) ([]target, error) {
	if list == "" {
		return all, nil
	}
	key := func(t target) string {
		switch t.(type) {
		case *localTarget:
			return "local"
		case *kumoTarget:
			return "kumo"
		case *netKumoTarget:
			return "net"
		case *gocryptfsTarget:
			return "gocryptfs"
		case *rcloneTarget:
			return "rclone"
		}
		return t.name()
	}
	want := map[string]bool{}
	for _, k := range strings.Split(list, ",") {
		want[strings.TrimSpace(k)] = true
	}
	var out []target
	for _, t := range all {
		if want[key(t)] {
			out = append(out, t)
			delete(want, key(t))
		}
	}
	if len(want) > 0 || len(out) == 0 {
		return nil, fmt.Errorf("-targets %q: unknown or not enabled (-net and -peers enable net, gocryptfs, rclone)", list)
	}
	return out, nil
}

func run(c config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (loop-mounted ext4, drop_caches, FUSE)")
	}
	if c.scale {
		return runScale(c)
	}
	if c.only != "" && c.only != "tree" {
		return fmt.Errorf("-only %q: the only subset is \"tree\"", c.only)
	}
	if _, err := exec.LookPath("fio"); err != nil {
		return errors.New("fio not found: apt-get install fio")
	}
	if c.smoke {
		c.rounds, c.sizeMiB, c.files, c.fioSecs = 1, 16, 200, 1
		if c.tree == "" {
			c.tree = filepath.Join(runtime.GOROOT(), "src", "net", "http")
		}
	}
	if c.tree == "" {
		c.tree = filepath.Join(runtime.GOROOT(), "src")
	}
	for _, tool := range []string{"tar", "git", "grep", "sqlite3"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install %s", tool, tool)
		}
	}
	c.tarball = filepath.Join("/dev/shm", fmt.Sprintf("kumo-bench-tree-%d.tar", os.Getpid()))
	if err := sh("tar", "-cf", c.tarball, "-C", filepath.Dir(c.tree), filepath.Base(c.tree)); err != nil {
		return err
	}
	defer os.Remove(c.tarball)
	// One journaled ext4 image holds every target's backing store, so all compete on equal terms.
	gib := c.imageGiB
	if gib == 0 {
		gib = 6 + 4*c.sizeMiB/1024
	}
	disk, undo, err := prepareDisk(&c, "kumo-bench-", gib)
	if err != nil {
		return err
	}
	defer undo()

	src := filepath.Join("/dev/shm", fmt.Sprintf("kumo-bench-src-%d", os.Getpid()))
	if err := randomFile(src, int64(c.sizeMiB)<<20); err != nil {
		return err
	}
	defer os.Remove(src)

	targets := []target{&localTarget{}, &kumoTarget{bin: c.kumo, pprof: c.pprof}}
	if c.net != "" {
		nt, err := newNetKumo(c.kumo, c.net, c.pprof)
		if err != nil {
			return err
		}
		targets = append(targets, nt)
	}
	if c.peers {
		targets = append(targets, &gocryptfsTarget{}, &rcloneTarget{})
	}
	if targets, err = selectTargets(targets, c.targets); err != nil {
		return err
	}
	var results []result
	var stolen []string // rounds the hypervisor took CPU from
	runStart, runSteal := time.Now(), hostSteal()
	for r := 1; r <= c.rounds; r++ {
		for i, t := range targets {
			base := filepath.Join(disk, fmt.Sprintf("r%d-%d-%s", r, i, t.name()))
			log.Printf("round %d/%d: %s", r, c.rounds, t.name())
			start, steal := time.Now(), hostSteal()
			res, err := runTarget(c, t, base, src)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", t.name(), r, err)
			}
			if st, took := hostSteal()-steal, time.Since(start); st > took/50 {
				log.Printf("round %d %s: the hypervisor took %s of CPU time (steal) in %s: its times are not reliable; rerun on a quieter machine",
					r, t.name(), st.Round(10*time.Millisecond), took.Round(time.Second))
				stolen = append(stolen, fmt.Sprintf("%s round %d: %s in %s", t.name(), r, st.Round(10*time.Millisecond), took.Round(time.Second)))
			}
			results = append(results, res...)
			os.RemoveAll(base)
			// The next target starts with nothing of this one left to write
			// back: its writeback would land in the next one's times.
			if err := dropCaches(); err != nil {
				return err
			}
		}
	}
	report := render(c, targets, results)
	report += fmt.Sprintf("\nHost steal (CPU time the hypervisor took from this machine, /proc/stat): %s in the run's %s",
		(hostSteal() - runSteal).Round(10*time.Millisecond), time.Since(runStart).Round(time.Second))
	if len(stolen) > 0 {
		report += "; over 2 % of a round in " + strings.Join(stolen, ", ") + ": those rounds' times are not reliable"
	}
	report += ".\n"
	fmt.Print(report)
	if c.out != "" {
		return os.WriteFile(c.out, []byte(report), 0o644)
	}
	return nil
}

func runTarget(c config, t target, base, src string) (res []result, err error) {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	dir, err := t.setup(base)
	if err != nil {
		return nil, err
	}
	defer func() {
		if terr := t.teardown(); terr != nil && err == nil {
			err = terr
		}
	}()
	add := func(w string, v float64) {
		log.Printf("  %-26s %10.1f", w, v)
		res = append(res, result{t.name(), w, v})
	}
	peak := 0
	sampleRSS := func() {
		if p := t.pid(); p > 0 {
			if kb := vmHWM(p); kb > peak {
				peak = kb
			}
		}
	}
	if c.only == "tree" {
		err := treeWorkloads(dir, c.tarball, add)
		sampleRSS()
		if peak > 0 {
			add("daemon peak RSS", float64(peak)/1024)
		}
		return res, err
	}
	size := float64(c.sizeMiB)
	big := filepath.Join(dir, "big")

	d, err := timed(func() error { return copyFile(src, big, true) })
	if err != nil {
		return nil, err
	}
	add("seq write + fsync", size/d.Seconds())
	sampleRSS()

	if _, err := timed(func() error { return readAll(big) }); err != nil {
		return nil, err
	}
	d, err = timed(func() error { return readAll(big) })
	if err != nil {
		return nil, err
	}
	add("warm seq read", size/d.Seconds())

	if err := t.cold(); err != nil {
		return nil, err
	}
	d, err = timed(func() error { return readAll(big) })
	if err != nil {
		return nil, err
	}
	add("cold seq read", size/d.Seconds())
	sampleRSS()

	if err := t.cold(); err != nil {
		return nil, err
	}
	lat, err := fioRandRead(big, c.fioSecs)
	if err != nil {
		return nil, err
	}
	add("4 KiB random read (mean)", lat)
	sampleRSS()
	if err := os.Remove(big); err != nil {
		return nil, err
	}

	small := filepath.Join(dir, "small")
	n := float64(c.files)
	d, err = timed(func() error { return smallFiles(small, c.files, "create") })
	if err != nil {
		return nil, err
	}
	add("create small files", n/d.Seconds())
	d, err = timed(func() error { return smallFiles(small, c.files, "stat") })
	if err != nil {
		return nil, err
	}
	add("stat small files", n/d.Seconds())
	if err := t.cold(); err != nil {
		return nil, err
	}
	d, err = timed(func() error { return smallFiles(small, c.files, "read") })
	if err != nil {
		return nil, err
	}
	add("read small files (cold)", n/d.Seconds())
	d, err = timed(func() error { return smallFiles(small, c.files, "delete") })
	if err != nil {
		return nil, err
	}
	add("delete small files", n/d.Seconds())
	sampleRSS()

	tree := filepath.Join(dir, "tree")
	d, err = timed(func() error { return sh("cp", "-a", c.tree, tree) })
	if err != nil && t.name() == "rclone crypt" {
		// rclone's crypt mount cannot chmod: cp copies every file but fails on
		// each mode; the time still counts, as the reference table does.
		log.Printf("  (rclone: cp -a reported errors, as expected: %.200s)", err)
		err = nil
	}
	if err != nil {
		return nil, err
	}
	add("cp -a source tree", d.Seconds())
	sampleRSS()
	sh("ls", "-lR", tree) // warm the caches once
	rc, counts := t.(requestCounter)
	var before map[string]float64
	if counts {
		// Count only what the listing costs: let the uploads of the copy finish first.
		if err := rc.quiesce(); err != nil {
			return nil, err
		}
		sh("ls", "-lR", tree) // the kernel's entries may have expired while waiting
		if before, err = rc.routes(); err != nil {
			return nil, err
		}
	}
	d, err = timed(func() error { return sh("ls", "-lR", tree) })
	if err != nil {
		return nil, err
	}
	add("ls -lR tree (warm)", d.Seconds())
	if counts {
		after, err := rc.routes()
		if err != nil {
			return nil, err
		}
		var n float64
		for k, v := range after {
			n += v - before[k]
		}
		if n > 0 {
			log.Printf("  requests during ls -lR: %s", requestDiff(before, after))
		}
		add("HTTP requests in warm ls -lR", n)
	}
	d, err = timed(func() error { return sh("find", tree) })
	if err != nil {
		return nil, err
	}
	add("find tree (warm)", d.Seconds())
	sampleRSS()
	if err := treeWorkloads(dir, c.tarball, add); err != nil {
		return nil, err
	}
	sampleRSS()
	if peak > 0 {
		add("daemon peak RSS", float64(peak)/1024)
	}
	return res, nil
}

// treeWorkloads are everyday work on many small files right after writing
// them, while the uploads of what was just written run (issue 16): unpack a
// source tree, commit it to git (automatic gc off, so no background gc runs
// into the next step), grep it after dropping the page cache (no remount:
// the uploads keep draining), remove it, and sqlite transactions.
func treeWorkloads(dir, tarball string, add func(string, float64)) error {
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"tar -xf source tree", func() error { return sh("tar", "-xf", tarball, "-C", work) }},
		{"git init + add -A + commit", func() error {
			return sh("sh", "-c", `cd "$1" && git init -q && git -c gc.auto=0 add -A && `+
				`git -c gc.auto=0 -c user.name=bench -c user.email=bench@example.com commit -q -m tree`, "sh", work)
		}},
		{"grep -r (cold, uploads draining)", func() error {
			if err := dropCaches(); err != nil {
				return err
			}
			// No match expected: grep reads every file; status 1 is "none found".
			return sh("sh", "-c", `grep -r -e kumo-bench-no-such-text "$1" >/dev/null; test $? -le 1`, "sh", work)
		}},
		{"rm -rf tree", func() error { return sh("rm", "-rf", work) }},
		{"sqlite 200 txns × 100 inserts", func() error { return sqliteTxns(filepath.Join(dir, "bench.db"), 200, 100) }},
	}
	for _, s := range steps {
		d, err := timed(s.run)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		add(s.name, d.Seconds())
	}
	return os.Remove(filepath.Join(dir, "bench.db"))
}

// sqliteTxns runs txns transactions of rows inserts each in one sqlite3
// process (default journal mode and synchronous=FULL: each commit fsyncs).
func sqliteTxns(db string, txns, rows int) error {
	var b strings.Builder
	b.WriteString("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);\n")
	for i := 0; i < txns; i++ {
		b.WriteString("BEGIN;\n")
		for j := 0; j < rows; j++ {
			fmt.Fprintf(&b, "INSERT INTO t (v) VALUES ('row %d of transaction %d, some text to make it a real row');\n", j, i)
		}
		b.WriteString("COMMIT;\n")
	}
	cmd := exec.Command("sqlite3", db)
	cmd.Stdin = strings.NewReader(b.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("sqlite3: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// --- targets ---

type localTarget struct{}

func (*localTarget) name() string                      { return "local disk" }
func (*localTarget) setup(base string) (string, error) { return base, nil }
func (*localTarget) cold() error                       { return dropCaches() }
func (*localTarget) pid() int                          { return 0 }
func (*localTarget) teardown() error                   { return nil }

type kumoTarget struct {
	bin, base, mnt string
	pprof          string
	gen            int
	cmd            *exec.Cmd
}

func (*kumoTarget) name() string { return "kumo" }

func (k *kumoTarget) setup(base string) (string, error) {
	k.base, k.mnt, k.gen = base, filepath.Join(base, "mnt"), 0
	return k.mnt, k.mount()
}

func (k *kumoTarget) mount() error {
	k.gen++
	os.MkdirAll(k.mnt, 0o755)
	cache := filepath.Join(k.base, fmt.Sprintf("cache%d", k.gen))
	args := []string{"mount", "--foreground", "--log-level", "warn",
		"--cloud-dir", filepath.Join(k.base, "cloud"), "--cache-dir", cache}
	if k.pprof != "" {
		args = append(args, "--pprof", k.pprof)
	}
	k.cmd = exec.Command(k.bin, append(args, k.mnt)...)
	// The embedded cloud's keys go to the config dir: the run's own.
	k.cmd.Env = append(os.Environ(), "KUMO_CONFIG_DIR="+filepath.Join(k.base, "config"))
	k.cmd.Stdout, k.cmd.Stderr = os.Stderr, os.Stderr
	if err := k.cmd.Start(); err != nil {
		return err
	}
	return waitMounted(k.mnt, k.cmd)
}

// cold unmounts (after the uploads are flushed), drops the page cache and
// remounts with an empty cache directory, so reads come from the cloud.
func (k *kumoTarget) cold() error {
	if err := k.unmount(); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	return k.mount()
}

func (k *kumoTarget) unmount() error {
	if err := sh(k.bin, "unmount", k.mnt); err != nil {
		return err
	}
	return waitExit(k.cmd, 10*time.Minute)
}

func (k *kumoTarget) pid() int {
	if k.cmd == nil || k.cmd.Process == nil {
		return 0
	}
	return k.cmd.Process.Pid
}

func (k *kumoTarget) teardown() error { return k.unmount() }

type gocryptfsTarget struct {
	base, mnt string
	cmd       *exec.Cmd
}

func (*gocryptfsTarget) name() string { return "gocryptfs" }

func (g *gocryptfsTarget) setup(base string) (string, error) {
	if err := ensureTool("gocryptfs", "gocryptfs"); err != nil {
		return "", err
	}
	g.base, g.mnt = base, filepath.Join(base, "mnt")
	os.MkdirAll(filepath.Join(base, "cipher"), 0o755)
	os.MkdirAll(g.mnt, 0o755)
	if err := sh("gocryptfs", "-q", "-init", "-extpass", "echo benchpass", "-scryptn", "10", filepath.Join(base, "cipher")); err != nil {
		return "", err
	}
	return g.mnt, g.mount()
}

func (g *gocryptfsTarget) mount() error {
	g.cmd = exec.Command("gocryptfs", "-fg", "-q", "-extpass", "echo benchpass", filepath.Join(g.base, "cipher"), g.mnt)
	g.cmd.Stderr = os.Stderr
	if err := g.cmd.Start(); err != nil {
		return err
	}
	return waitMounted(g.mnt, g.cmd)
}

func (g *gocryptfsTarget) cold() error {
	if err := g.teardown(); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	return g.mount()
}

func (g *gocryptfsTarget) pid() int { return g.cmd.Process.Pid }

func (g *gocryptfsTarget) teardown() error {
	sh("fusermount3", "-u", g.mnt)
	g.cmd.Wait()
	return nil
}

// rcloneTarget is rclone's crypt remote over a local directory, mounted with
// --vfs-cache-mode full and rclone's default --vfs-write-back (5 s): a file is
// uploaded 5 s after its last close, in the background while the workloads go
// on, as kumo's uploads drain during them.
//
// Not --vfs-write-back 0s: rclone (1.60.1 here; later versions keep this
// path) then uploads inside the FUSE release, which the kernel does not wait
// for, and an unlink or rename of the file meanwhile (git's lock and
// temporary files) races the upload: the finished upload puts the deleted
// file back in the directory though the remote object is gone, and the
// `rm -rf` of the tree later fails with EIO on it (docs/BENCH.md, 2026-12-06).
type rcloneTarget struct {
	base, mnt string
	rc        string // rclone's remote control (loopback host:port): upload counts
	gen       int
	cmd       *exec.Cmd
}

func (*rcloneTarget) name() string { return "rclone crypt" }

func (r *rcloneTarget) setup(base string) (string, error) {
	if err := ensureTool("rclone", "rclone"); err != nil {
		return "", err
	}
	r.base, r.mnt, r.gen = base, filepath.Join(base, "mnt"), 0
	os.MkdirAll(filepath.Join(base, "remote"), 0o755)
	os.MkdirAll(r.mnt, 0o755)
	return r.mnt, r.mount()
}

func (r *rcloneTarget) mount() error {
	r.gen++
	pw, err := exec.Command("rclone", "obscure", "benchpass").Output()
	if err != nil {
		return err
	}
	if r.rc, err = freeLoopbackAddr(); err != nil {
		return err
	}
	r.cmd = exec.Command("rclone", "mount", "benchcrypt:", r.mnt, "--vfs-cache-mode", "full",
		"--cache-dir", filepath.Join(r.base, fmt.Sprintf("cache%d", r.gen)), "--vfs-write-back", "5s",
		"--rc", "--rc-addr", r.rc, "--rc-no-auth")
	r.cmd.Env = append(os.Environ(),
		"RCLONE_CONFIG_BENCHCRYPT_TYPE=crypt",
		"RCLONE_CONFIG_BENCHCRYPT_REMOTE="+filepath.Join(r.base, "remote"),
		"RCLONE_CONFIG_BENCHCRYPT_PASSWORD="+strings.TrimSpace(string(pw)))
	r.cmd.Stderr = os.Stderr
	if err := r.cmd.Start(); err != nil {
		return err
	}
	return waitMounted(r.mnt, r.cmd)
}

// cold waits until rclone has uploaded every written file (as kumo's cold
// waits in its unmount: files still queued would be lost with the cache
// directory), unmounts, drops the page cache and remounts with an empty cache
// directory, so reads come from the remote.
func (r *rcloneTarget) cold() error {
	if err := r.waitUploads(10 * time.Minute); err != nil {
		return err
	}
	if err := r.teardown(); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	return r.mount()
}

func (r *rcloneTarget) pid() int { return r.cmd.Process.Pid }

func (r *rcloneTarget) teardown() error {
	sh("fusermount3", "-u", r.mnt)
	r.cmd.Wait()
	return nil
}

// --- workloads ---

// hostSteal is the CPU time the hypervisor has taken from this machine's
// CPUs since boot (/proc/stat's steal column, in USER_HZ ticks of 10 ms);
// 0 where it is not reported. On a shared host it swung identical runs by a
// third (docs/PERFORMANCE.md).
func hostSteal() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	ticks, err := strconv.ParseInt(f[8], 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func timed(f func() error) (time.Duration, error) {
	t := time.Now()
	err := f()
	return time.Since(t), err
}

func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(f, rand.Reader, size)
	return err
}

func copyFile(src, dst string, fsync bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 1<<20)); err != nil {
		out.Close()
		return err
	}
	if fsync {
		if err := out.Sync(); err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}

func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
	return err
}

func smallFiles(dir string, n int, op string) error {
	perDir := (n + 99) / 100
	buf := make([]byte, 4096)
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i/perDir))
		p := filepath.Join(d, fmt.Sprintf("f%05d", i))
		var err error
		switch op {
		case "create":
			if i%perDir == 0 {
				if err = os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			rand.Read(buf)
			err = os.WriteFile(p, buf, 0o644)
		case "stat":
			_, err = os.Lstat(p)
		case "read":
			var b []byte
			b, err = os.ReadFile(p)
			if err == nil && len(b) != len(buf) {
				err = fmt.Errorf("%s: read %d bytes, want %d", p, len(b), len(buf))
			}
		case "delete":
			err = os.Remove(p)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func fioRandRead(file string, secs int) (meanMicros float64, err error) {
	out, err := exec.Command("fio", "--name=randread", "--filename="+file, "--rw=randread", "--bs=4k",
		"--ioengine=psync", "--runtime="+strconv.Itoa(secs), "--time_based", "--invalidate=1",
		"--output-format=json").Output()
	if err != nil {
		return 0, fmt.Errorf("fio: %w", err)
	}
	var v struct {
		Jobs []struct {
			Read struct {
				LatNs struct {
					Mean float64 `json:"mean"`
				} `json:"lat_ns"`
			} `json:"read"`
		} `json:"jobs"`
	}
	// fio may print warnings before the JSON.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &v); err != nil || len(v.Jobs) == 0 {
		return 0, fmt.Errorf("fio output: %v", err)
	}
	return v.Jobs[0].Read.LatNs.Mean / 1000, nil
}

// --- helpers ---

func sh(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func ensureTool(cmd, pkg string) error {
	if _, err := exec.LookPath(cmd); err == nil {
		return nil
	}
	log.Printf("installing %s", pkg)
	c := exec.Command("apt-get", "install", "-y", "-qq", pkg)
	c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	return c.Run()
}

func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// prepareDisk makes the work directory (a new one under /var/tmp unless
// -work is given) and c.kumo absolute, and loop-mounts a fresh ext4 image of
// gib GiB at work/disk; undo unmounts it and removes a temporary work dir.
func prepareDisk(c *config, prefix string, gib int) (disk string, undo func(), err error) {
	var rm func()
	if c.work == "" {
		w, err := os.MkdirTemp("/var/tmp", prefix)
		if err != nil {
			return "", nil, err
		}
		c.work = w
		rm = func() { os.RemoveAll(w) }
	} else {
		rm = func() {}
	}
	kumo, err := filepath.Abs(c.kumo)
	if err != nil {
		rm()
		return "", nil, err
	}
	c.kumo = kumo
	disk = filepath.Join(c.work, "disk")
	if err := mkExt4(filepath.Join(c.work, "ext4.img"), disk, gib); err != nil {
		rm()
		return "", nil, err
	}
	return disk, func() {
		exec.Command("umount", "-l", disk).Run()
		rm()
	}, nil
}

func mkExt4(img, dir string, gib int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(gib) << 30); err != nil {
		return err
	}
	f.Close()
	if err := sh("mkfs.ext4", "-q", "-F", "-O", "has_journal", img); err != nil {
		return err
	}
	return sh("mount", "-o", "loop", img, dir)
}

func waitMounted(dir string, cmd *exec.Cmd) error {
	parent := filepath.Dir(dir)
	for i := 0; i < 300; i++ {
		var a, b syscall.Stat_t
		if syscall.Stat(dir, &a) == nil && syscall.Stat(parent, &b) == nil && a.Dev != b.Dev {
			return nil
		}
		if cmd.ProcessState != nil {
			return fmt.Errorf("%s exited before mounting", cmd.Path)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not mount within 30 s", dir)
}

func vmHWM(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.Atoi(f[1])
				return kb
			}
		}
	}
	return 0
}

// --- report ---

func render(c config, targets []target, results []result) string {
	values := map[string]map[string][]float64{}
	for _, r := range results {
		if values[r.target] == nil {
			values[r.target] = map[string][]float64{}
		}
		values[r.target][r.workload] = append(values[r.target][r.workload], r.value)
	}
	median := func(v []float64) float64 {
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		if len(s) == 0 {
			return 0
		}
		if len(s)%2 == 1 {
			return s[len(s)/2]
		}
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	host, _ := os.Hostname()
	kver, _ := exec.Command("uname", "-r").Output()
	var b strings.Builder
	sizes := fmt.Sprintf("%d MiB file, %d small files, fio %d s", c.sizeMiB, c.files, c.fioSecs)
	if c.only == "tree" {
		sizes = "the tree workloads only"
	}
	fmt.Fprintf(&b, "# kumo benchmark\n\n%s on %s (%d CPUs, kernel %s), %s, %d rounds in rotation, %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), strings.TrimSpace(string(kver)), runtime.Version(), c.rounds, sizes)
	fmt.Fprintf(&b, "All backing stores on one fresh journaled ext4 loop image. Median (min–max).\n\n")
	fmt.Fprintf(&b, "| workload | unit |")
	for _, t := range targets {
		fmt.Fprintf(&b, " %s |", t.name())
	}
	var peers []target
	for _, t := range targets {
		if !strings.HasPrefix(t.name(), "kumo") {
			peers = append(peers, t)
			fmt.Fprintf(&b, " kumo vs %s |", t.name())
		}
	}
	b.WriteString("\n|---|---|")
	for range targets {
		b.WriteString("---|")
	}
	for range peers {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, w := range workloads {
		measured := false
		for _, t := range targets {
			measured = measured || len(values[t.name()][w.name]) > 0
		}
		if !measured {
			continue // not run (-only)
		}
		fmt.Fprintf(&b, "| %s | %s |", w.name, w.unit)
		for _, t := range targets {
			v := values[t.name()][w.name]
			if len(v) == 0 {
				b.WriteString(" — |")
				continue
			}
			s := append([]float64(nil), v...)
			sort.Float64s(s)
			fmt.Fprintf(&b, " %s (%s–%s) |", num(median(v)), num(s[0]), num(s[len(s)-1]))
		}
		k := median(values["kumo"][w.name])
		for _, t := range peers {
			p := median(values[t.name()][w.name])
			if p == 0 || k == 0 {
				b.WriteString(" — |")
				continue
			}
			ratio := k / p
			if !w.higherBetter {
				ratio = p / k
			}
			fmt.Fprintf(&b, " %.2f× |", ratio)
		}
		b.WriteString("\n")
	}
	b.WriteString("\nRatios are \"how many times better kumo is\" (>1 = kumo faster or smaller).\n")
	for _, t := range targets {
		if nt, ok := t.(*netKumoTarget); ok {
			nt.summary(&b, values[t.name()], median)
		}
	}
	return b.String()
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
