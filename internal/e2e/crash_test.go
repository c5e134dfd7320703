package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// crashWorkload writes files in a loop, each made durable with fsync before it
// is counted as completed. Every fifth file uses the atomic-save pattern (write a
// temp file, fsync, rename into place, fsync the directory). With closeOnly,
// a file counts once close returned (no fsync anywhere): what a kill -9 of
// the daemon must not lose either, since close hands the data to it (a power
// loss may; that is tested with a simulated one in fs.TestPowerLossAfterFsync).
type crashWorkload struct {
	dir       string
	round     int
	closeOnly bool

	mu        sync.Mutex
	completed []int
	err       error
	stop      chan struct{}
	done      chan struct{}
}

func crashFileName(round, i int) string { return fmt.Sprintf("r%d-f%05d", round, i) }

func crashFileData(round, i int) []byte {
	n := 1 + (i*7919)%(256<<10) + i%1000
	return pattern(uint64(round)<<32|uint64(i), n)
}

func startCrashWorkload(dir string, round int) *crashWorkload {
	return startWorkload(&crashWorkload{dir: dir, round: round})
}

func startWorkload(w *crashWorkload) *crashWorkload {
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go w.loop()
	return w
}

func (w *crashWorkload) loop() {
	defer close(w.done)
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		if err := w.writeOne(i); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		w.completed = append(w.completed, i)
		w.mu.Unlock()
	}
}

func (w *crashWorkload) writeOne(i int) error {
	final := filepath.Join(w.dir, crashFileName(w.round, i))
	data := crashFileData(w.round, i)
	if w.closeOnly {
		if i%5 != 4 {
			return os.WriteFile(final, data, 0o644)
		}
		if err := os.WriteFile(final+".tmp", data, 0o644); err != nil {
			return err
		}
		return os.Rename(final+".tmp", final)
	}
	if i%5 != 4 {
		return writeFileSync(final, data, 0o644)
	}
	tmp := final + ".tmp"
	if err := writeFileSync(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	d, err := os.Open(w.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (w *crashWorkload) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.completed)
}

// waitFor lets the workload run at least min and until n files are completed.
func (w *crashWorkload) waitFor(t *testing.T, n int, min time.Duration) {
	t.Helper()
	start := time.Now()
	for w.count() < n || time.Since(start) < min {
		select {
		case <-w.done:
			t.Fatalf("workload stopped early after %d files: %v", w.count(), w.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("workload completed only %d files in 2 min", w.count())
		}
	}
}

// halt stops the workload (after a crash it stops by itself on the first error).
func (w *crashWorkload) halt() []int {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int(nil), w.completed...)
}

// verifyCrashFiles checks every completed (fsync'd or closed) file of the rounds has its exact bytes.
func verifyCrashFiles(t *testing.T, dir string, completed map[int][]int) {
	t.Helper()
	n := 0
	for round, is := range completed {
		for _, i := range is {
			p := filepath.Join(dir, crashFileName(round, i))
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("completed file %s: %v", filepath.Base(p), err)
			}
			if want := crashFileData(round, i); string(got) != string(want) {
				t.Fatalf("completed file %s: %d bytes, want %d (first difference at %d)", filepath.Base(p), len(got), len(want), firstDiff(got, want))
			}
			n++
		}
	}
	t.Logf("verified %d completed files", n)
}

// TestCrashKill9 kills the daemon with SIGKILL three times: in the middle of a
// write+fsync workload, again right after the restart while uploads resume,
// and in the middle of a workload that only closes its files. Every file
// whose fsync (or, in the last round, close) returned must survive, and then
// reach the cloud.
func TestCrashKill9(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		// No daemon to kill: this checks the workload and its checker.
		dir := t.TempDir()
		w := startCrashWorkload(dir, 1)
		w.waitFor(t, 30, 300*time.Millisecond)
		verifyCrashFiles(t, dir, map[int][]int{1: w.halt()})
	})
	t.Run("kumo", func(t *testing.T) {
		tg := newKumoTarget(t)
		cache := tg.m.cache
		dir := filepath.Join(tg.dir, "crash")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		completed := map[int][]int{}

		// Round 1: kill during the workload.
		w := startCrashWorkload(dir, 1)
		w.waitFor(t, 40, time.Second)
		tg.m.kill9(t)
		completed[1] = w.halt()
		t.Logf("round 1: killed after %d completed files (workload error: %v)", len(completed[1]), w.err)

		// Round 2: restart on the same cache, write more, kill again at once.
		tg.m = tg.m.again(t, cache)
		verifyCrashFiles(t, dir, completed)
		w = startCrashWorkload(dir, 2)
		w.waitFor(t, 20, 500*time.Millisecond)
		tg.m.kill9(t)
		completed[2] = w.halt()
		t.Logf("round 2: killed after %d completed files", len(completed[2]))

		// Restart on the same cache: everything fsync'd is there.
		tg.m = tg.m.again(t, cache)
		verifyCrashFiles(t, dir, completed)

		// Round 3: files only closed (no fsync), kill at once: close handed
		// them to the daemon's store files, so none is lost.
		w = startWorkload(&crashWorkload{dir: dir, round: 3, closeOnly: true})
		w.waitFor(t, 40, 500*time.Millisecond)
		tg.m.kill9(t)
		completed[3] = w.halt()
		t.Logf("round 3: killed after %d closed files", len(completed[3]))
		tg.m = tg.m.again(t, cache)
		verifyCrashFiles(t, dir, completed)

		// And it reaches the cloud: unmount (flush), mount with an empty cache.
		tg.remount(t)
		verifyCrashFiles(t, dir, completed)
	})
}
