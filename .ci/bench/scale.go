package main

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The scale test (-scale): a tree grown in stages on the embedded cloud, each
// stage flushed, unmounted and remounted with the same cache (mount ready time,
// find, daemon memory); memory per open handle; then one huge file written from
// a PRNG stream and read back cold with the daemon's RSS sampled every second.

type scaleStage struct {
	files                          int
	create, flush, ready, find1    time.Duration
	find2                          time.Duration
	entries                        int
	rssIdle, rssFind, hwm          int // KiB
	rssReadHandles, rssWriteHandle int // KiB after opening the handles
}

func runScale(c config) error {
	var stages []int
	for _, f := range strings.Split(c.scaleFiles, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(stages) > 0 && n <= stages[len(stages)-1]) {
			return fmt.Errorf("-scale-files %q: want increasing counts", c.scaleFiles)
		}
		stages = append(stages, n)
	}
	gib := c.imageGiB
	if gib == 0 {
		gib = 12 + 2*c.bigGiB
	}
	disk, undo, err := prepareDisk(&c, "kumo-scale-", gib)
	if err != nil {
		return err
	}
	defer undo()

	k := &kumoTarget{bin: c.kumo, pprof: c.pprof}
	if _, err := k.setup(disk); err != nil {
		return err
	}
	mounted := true
	defer func() {
		if mounted {
			k.unmount()
		}
	}()
	tree := filepath.Join(k.mnt, "tree")
	var results []scaleStage
	have := 0
	for _, n := range stages {
		st := scaleStage{files: n}
		log.Printf("scale: growing the tree to %d files in %d dirs", n, c.scaleDirs)
		st.create, err = timed(func() error { return growTree(tree, have, n, c.scaleDirs) })
		if err != nil {
			return err
		}
		have = n
		log.Printf("scale: created in %v; unmounting (flush)", st.create)
		if st.flush, err = timed(k.unmount); err != nil {
			return err
		}
		// Same cache directory: the mount starts from the local tree cache.
		k.gen--
		start := time.Now()
		if err := k.mountFast(); err != nil {
			return err
		}
		st.ready = time.Since(start)
		st.rssIdle = procKiB(k.pid(), "VmRSS")
		for i, d := range []*time.Duration{&st.find1, &st.find2} {
			var out []byte
			*d, err = timed(func() error {
				var e error
				out, e = exec.Command("find", k.mnt).Output()
				return e
			})
			if err != nil {
				return fmt.Errorf("find: %w", err)
			}
			if i == 0 {
				st.entries = bytes.Count(out, []byte("\n"))
			}
		}
		st.rssFind, st.hwm = procKiB(k.pid(), "VmRSS"), procKiB(k.pid(), "VmHWM")
		log.Printf("scale: %d files: ready %v, find %v / %v (%d entries), RSS %d MiB, HWM %d MiB",
			n, st.ready, st.find1, st.find2, st.entries, st.rssFind>>10, st.hwm>>10)
		results = append(results, st)
	}
	last := &results[len(results)-1]
	if last.rssReadHandles, last.rssWriteHandle, err = handleMemory(k); err != nil {
		return err
	}

	var big bigResult
	if c.bigGiB > 0 {
		big, err = bigFile(c, k, disk)
		if err != nil {
			return err
		}
	}
	mounted = false
	if err := k.unmount(); err != nil {
		return err
	}
	report := renderScale(c, results, big)
	fmt.Print(report)
	if c.out != "" {
		return os.WriteFile(c.out, []byte(report), 0o644)
	}
	return nil
}

// mountFast is mount with a 10 ms poll, to time mount readiness.
func (k *kumoTarget) mountFast() error {
	k.gen++
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
	parent := filepath.Dir(k.mnt)
	for i := 0; i < 30000; i++ {
		var a, b syscall.Stat_t
		if syscall.Stat(k.mnt, &a) == nil && syscall.Stat(parent, &b) == nil && a.Dev != b.Dev {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s did not mount within 300 s", k.mnt)
}

// growTree creates files from..to-1 of 1 KiB each, file i in directory i%dirs.
func growTree(root string, from, to, dirs int) error {
	buf := make([]byte, 1024)
	rng := rand.NewChaCha8([32]byte{1})
	for i := from; i < to; i++ {
		d := filepath.Join(root, fmt.Sprintf("d%04d", i%dirs))
		if i < dirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		rng.Read(buf)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%06d", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// handleMemory opens 1000 read handles on tree files (4 KiB read from each),
// then 100 write handles with one 64 KiB write each, and returns the daemon's
// RSS after each step (KiB).
func handleMemory(k *kumoTarget) (afterRead, afterWrite int, err error) {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	paths, _ := filepath.Glob(filepath.Join(k.mnt, "tree", "d000*", "f*"))
	if len(paths) > 1000 {
		paths = paths[:1000]
	}
	buf := make([]byte, 64<<10)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return 0, 0, err
		}
		files = append(files, f)
		f.Read(buf[:4096])
	}
	time.Sleep(time.Second)
	afterRead = procKiB(k.pid(), "VmRSS")
	os.MkdirAll(filepath.Join(k.mnt, "open"), 0o755)
	for i := 0; i < 100; i++ {
		f, err := os.Create(filepath.Join(k.mnt, "open", fmt.Sprintf("w%03d", i)))
		if err != nil {
			return 0, 0, err
		}
		files = append(files, f)
		if _, err := f.Write(buf); err != nil {
			return 0, 0, err
		}
	}
	time.Sleep(time.Second)
	afterWrite = procKiB(k.pid(), "VmRSS")
	return afterRead, afterWrite, nil
}

type bigResult struct {
	gib                       int
	write, flush, ready, read time.Duration
	rssWrite, rssFlush        []int // KiB, one sample per second
	rssRead                   []int
	hwm                       int
}

// sampler records a process's VmRSS every second until stopped.
type sampler struct {
	mu   sync.Mutex
	kib  []int
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pid func() int) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if v := procKiB(pid(), "VmRSS"); v > 0 {
					s.mu.Lock()
					s.kib = append(s.kib, v)
					s.mu.Unlock()
				}
			}
		}
	}()
	return s
}

func (s *sampler) end() []int {
	close(s.stop)
	<-s.done
	return s.kib
}

func bigFile(c config, k *kumoTarget, disk string) (bigResult, error) {
	r := bigResult{gib: c.bigGiB}
	size := int64(c.bigGiB) << 30
	path := filepath.Join(k.mnt, "big")
	seed := [32]byte{7}
	log.Printf("scale: writing %d GiB", c.bigGiB)
	s := sampleRSS(k.pid)
	var err error
	r.write, err = timed(func() error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if _, err := io.CopyBuffer(f, io.LimitReader(rand.NewChaCha8(seed), size), make([]byte, 1<<20)); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	r.rssWrite = s.end()
	if err != nil {
		return r, fmt.Errorf("write big file: %w", err)
	}
	log.Printf("scale: written in %v; unmounting (upload)", r.write)
	s = sampleRSS(k.pid)
	r.flush, err = timed(k.unmount)
	r.rssFlush = s.end()
	if err != nil {
		return r, err
	}
	if err := dropCaches(); err != nil {
		return r, err
	}
	// A new, empty cache: the tree is listed from the cloud, the data fetched.
	k.gen = 100
	start := time.Now()
	if err := k.mountFast(); err != nil {
		return r, err
	}
	r.ready = time.Since(start)
	log.Printf("scale: remounted with an empty cache in %v; reading back", r.ready)
	s = sampleRSS(k.pid)
	r.read, err = timed(func() error { return compareStream(path, rand.NewChaCha8(seed), size) })
	r.rssRead = s.end()
	r.hwm = procKiB(k.pid(), "VmHWM")
	return r, err
}

// compareStream reads path and checks it equals the first size bytes of want.
func compareStream(path string, want io.Reader, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	got, exp := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for off < size {
		n, err := io.ReadFull(f, got)
		if n > 0 {
			if _, err := io.ReadFull(want, exp[:n]); err != nil {
				return err
			}
			if !bytes.Equal(got[:n], exp[:n]) {
				return fmt.Errorf("%s: content differs in the MiB at %d", path, off)
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if off != size {
		return fmt.Errorf("%s: read %d bytes, want %d", path, off, size)
	}
	return nil
}

func procKiB(pid int, field string) int {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			if f := strings.Fields(line); len(f) >= 2 {
				kb, _ := strconv.Atoi(f[1])
				return kb
			}
		}
	}
	return 0
}

func renderScale(c config, st []scaleStage, big bigResult) string {
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "# kumo scale test\n\n%s on %s (%d CPUs), load %s, kumo on its embedded cloud, backing store on a journaled ext4 loop image.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&b, "Tree: files of 1 KiB in %d directories, grown stage by stage; after each stage `kumo unmount` (flush), remount with the same cache.\n\n", c.scaleDirs)
	b.WriteString("| files | create (files/s) | unmount+flush | mount ready (target ≤ 2 s) | find, 1st | find, 2nd (target ≤ 2 s) | entries | RSS after mount | RSS after find | VmHWM (target ≤ 400 MiB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range st {
		fmt.Fprintf(&b, "| %d | %.1f s (%.0f) | %.1f s | %.2f s | %.2f s | %.2f s | %d | %d MiB | %d MiB | %d MiB |\n",
			s.files, s.create.Seconds(), float64(s.files-prevFiles(st, s))/s.create.Seconds(), s.flush.Seconds(),
			s.ready.Seconds(), s.find1.Seconds(), s.find2.Seconds(), s.entries, s.rssIdle>>10, s.rssFind>>10, s.hwm>>10)
	}
	if len(st) >= 2 {
		a, z := st[0], st[len(st)-1]
		per := float64(z.rssFind-a.rssFind) * 1024 / float64(z.entries-a.entries)
		idle := float64(z.rssIdle-a.rssIdle) * 1024 / float64(z.entries-a.entries)
		fmt.Fprintf(&b, "\nMemory per inode (RSS difference between %d and %d files over the entries): %.0f bytes after find has looked every entry up, %.0f bytes right after mount.\n",
			a.files, z.files, per, idle)
	}
	z := st[len(st)-1]
	if z.rssReadHandles > 0 {
		fmt.Fprintf(&b, "Open handles: 1000 read handles (4 KiB read each) %+.1f KiB each; 100 write handles (64 KiB written each, not closed) %+.1f KiB each (RSS deltas).\n",
			float64(z.rssReadHandles-z.rssFind)/1000, float64(z.rssWriteHandle-z.rssReadHandles)/100)
	}
	if big.gib > 0 {
		mib := float64(big.gib) * 1024
		fmt.Fprintf(&b, "\n## One %d GiB file\n\n| phase | time | MiB/s | daemon RSS min / median / max (1 s samples) |\n|---|---|---|---|\n", big.gib)
		row := func(name string, d time.Duration, v []int, rate bool) {
			r := "—"
			if rate {
				r = fmt.Sprintf("%.0f", mib/d.Seconds())
			}
			fmt.Fprintf(&b, "| %s | %.1f s | %s | %s |\n", name, d.Seconds(), r, rssStats(v))
		}
		row("write (PRNG stream) + fsync + close", big.write, big.rssWrite, true)
		row("unmount: upload to the cloud", big.flush, big.rssFlush, true)
		fmt.Fprintf(&b, "| remount with an empty cache (tree listed from the cloud) | %.2f s | — | — |\n", big.ready.Seconds())
		row("cold read back, compared with the stream", big.read, big.rssRead, true)
		fmt.Fprintf(&b, "\nVmHWM after the read: %d MiB. RSS over the read, every 10 s (MiB): %s\n", big.hwm>>10, series(big.rssRead))
	}
	return b.String()
}

func prevFiles(st []scaleStage, s scaleStage) int {
	prev := 0
	for _, x := range st {
		if x.files == s.files {
			return prev
		}
		prev = x.files
	}
	return prev
}

func rssStats(v []int) string {
	if len(v) == 0 {
		return "—"
	}
	s := append([]int(nil), v...)
	sort.Ints(s)
	return fmt.Sprintf("%d / %d / %d MiB", s[0]>>10, s[len(s)/2]>>10, s[len(s)-1]>>10)
}

func series(v []int) string {
	var parts []string
	for i := 0; i < len(v); i += 10 {
		parts = append(parts, strconv.Itoa(v[i]>>10))
	}
	return strings.Join(parts, " ")
}
