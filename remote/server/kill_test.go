package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kumo/remote/api"
)

const (
	killChildEnv   = "KUMO_SERVER_KILL_CHILD"
	killHistoryEnv = "KUMO_SERVER_KILL_HISTORY"
)

// TestKill9 runs the server in a child process (this test binary re-executed),
// kills it with SIGKILL in the middle of a workload, reopens the data
// directory and checks that every acknowledged operation is there.
func TestKill9(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		runKillChild(dir)
		return
	}
	dir := t.TempDir()
	cmd, e := startKillChild(t, "TestKill9", dir, false)
	u := e.signup("k@example.com")

	type acked struct {
		entry api.Entry
		chunk string
		data  []byte
	}
	var mu sync.Mutex
	var done []acked
	stop := make(chan struct{})
	var wg sync.WaitGroup
	send := killSender(t, e, u)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			size := 20000 // kept in the metadata store
			if w%2 == 1 {
				size = 100000 // a blob
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				data := randBytes(size)
				ch := randMAC()
				if !send("PUT", "/v1/chunks/"+ch, data, nil) {
					return
				}
				cr := api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(8), ID: randID(),
					Type: api.TypeFile, Attrs: randBytes(30), Chunks: []string{ch}}
				var ent api.Entry
				if !send("POST", "/v1/nodes", cr, &ent) {
					return
				}
				mu.Lock()
				done = append(done, acked{ent, ch, data})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	kill9(t, cmd, stop, &wg)
	if len(done) < 10 {
		t.Fatalf("only %d operations acknowledged before the kill", len(done))
	}

	e2 := newEnvAt(t, dir)
	u.e = e2
	sum := checkConsistent(t, e2.s, u.id)
	for _, a := range done {
		var got api.Entry
		if st, code := u.call("GET", fmt.Sprintf("/v1/nodes/1/entries/%s", a.entry.NameMAC), nil, &got); code != "" {
			t.Fatalf("acknowledged create lost: %d %s", st, code)
		}
		if got.Node.ID != a.entry.Node.ID || !bytes.Equal(got.Node.Attrs, a.entry.Node.Attrs) {
			t.Fatalf("acknowledged node differs")
		}
		var data []byte
		u.must("GET", "/v1/chunks/"+a.chunk, nil, &data)
		if !bytes.Equal(data, a.data) {
			t.Fatalf("acknowledged chunk %s differs", a.chunk)
		}
	}
	t.Logf("%d acknowledged creates survived kill -9; state %+v", len(done), sum)
}

// kill9 kills the child server, then stops the workload's goroutines (their
// requests now fail) and waits for them.
func kill9(t *testing.T, cmd *exec.Cmd, stop chan struct{}, wg *sync.WaitGroup) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	close(stop)
	wg.Wait()
}

// killSender sends u's requests to the server that is about to be killed:
// JSON (or raw []byte) in, JSON out; false for any failure (a refused or
// lost request is simply not acknowledged).
func killSender(t *testing.T, e *env, u *user) func(method, path string, in, out any) bool {
	client := &http.Client{Timeout: 5 * time.Second}
	return func(method, path string, in, out any) bool {
		body, ok := in.([]byte)
		if !ok {
			body, _ = jsonMarshal(in)
		}
		req, _ := http.NewRequest(method, e.url+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+u.token)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			b, _ := io.ReadAll(resp.Body)
			t.Logf("%s %s: %d %s", method, path, resp.StatusCode, b)
			return false
		}
		return out == nil || jsonDecode(resp.Body, out) == nil
	}
}

// startKillChild runs the server of dir in a child process (this test
// binary re-executed as test name), with history and a busy GC if asked.
func startKillChild(t *testing.T, name, dir string, history bool) (*exec.Cmd, *env) {
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$")
	cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
	if history {
		cmd.Env = append(cmd.Env, killHistoryEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(out)
	var addr string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("child did not report its address")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return cmd, &env{t: t, url: "http://" + addr}
}

func runKillChild(dir string) {
	cfg := Config{DataDir: dir, DefaultQuota: 1 << 40, Logger: slog.New(slog.DiscardHandler)}
	if os.Getenv(killHistoryEnv) != "" {
		// History on, and a GC that runs all the time and would free an
		// unreferenced chunk 300 ms after its upload or last use if history
		// did not keep it.
		cfg.HistoryDefault, cfg.GCGrace, cfg.GCInterval = 24*time.Hour, 300*time.Millisecond, 5*time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	http.Serve(ln, s.Handler())
	os.Exit(0)
}

// newEnvAt starts a server in-process over an existing data directory.
func newEnvAt(t *testing.T, dir string) *env {
	e := &env{t: t, cfg: Config{DataDir: dir, DefaultQuota: 1 << 40, GCGrace: time.Hour, GCInterval: time.Hour,
		LoginLimit: 1000, Logger: slog.New(slog.DiscardHandler)}}
	e.start()
	t.Cleanup(e.stop)
	return e
}

// TestKill9DuringHistoryGC kills the server while a GC runs every few
// milliseconds next to a workload that turns chunks into history (updates
// and deletes): after the restart nothing history keeps is gone, and the
// store is consistent.
func TestKill9DuringHistoryGC(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		runKillChild(dir)
		return
	}
	dir := t.TempDir()
	cmd, e := startKillChild(t, "TestKill9DuringHistoryGC", dir, true)
	u := e.signup("kh@example.com")
	type acked struct {
		chunk string
		data  []byte
	}
	var mu sync.Mutex
	var done []acked
	stop := make(chan struct{})
	var wg sync.WaitGroup
	send := killSender(t, e, u)
	put := func(size int) (string, []byte, bool) {
		data, id := randBytes(size), randMAC()
		return id, data, send("PUT", "/v1/chunks/"+id, data, nil)
	}
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			size := 20000 + w*40000 // metadata store and blobs
			for {
				select {
				case <-stop:
					return
				default:
				}
				c1, d1, ok := put(size)
				if !ok {
					return
				}
				var ent api.Entry
				if !send("POST", "/v1/nodes", api.CreateRequest{Parent: api.RootID, NameMAC: randMAC(), Name: randBytes(8), ID: randID(),
					Type: api.TypeFile, Attrs: randBytes(30), Chunks: []string{c1}}, &ent) {
					return
				}
				c2, d2, ok := put(size)
				if !ok {
					return
				}
				var n api.Node
				if !send("PUT", fmt.Sprintf("/v1/nodes/%d", ent.Node.ID), api.UpdateRequest{Version: ent.Node.Version, Attrs: randBytes(30), Chunks: []string{c2}}, &n) {
					return
				}
				mu.Lock()
				done = append(done, acked{c1, d1}) // history keeps c1 from here on
				mu.Unlock()
				if !send("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: ent.NameMAC}, nil) {
					return
				}
				mu.Lock()
				done = append(done, acked{c2, d2})
				mu.Unlock()
			}
		}()
	}
	// Many history chunks pass the GC's grace: at least 3 s and 30
	// acknowledged operations (a loaded machine is slow), at most 30 s.
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		n := len(done)
		mu.Unlock()
		if n >= 30 && time.Since(start) > 3*time.Second {
			break
		}
	}
	kill9(t, cmd, stop, &wg)
	if len(done) < 10 {
		t.Fatalf("only %d operations acknowledged before the kill", len(done))
	}
	e2 := newEnvAt(t, dir)
	e2.cfg.HistoryDefault = 24 * time.Hour
	e2.reopen()
	u.e = e2
	checkConsistent(t, e2.s, u.id)
	if _, _, err := e2.s.RunGC(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, a := range done {
		var data []byte
		u.must("GET", "/v1/chunks/"+a.chunk, nil, &data)
		if !bytes.Equal(data, a.data) {
			t.Fatalf("kept chunk %s differs", a.chunk)
		}
	}
	checkConsistent(t, e2.s, u.id)
	t.Logf("%d chunks kept by history survived kill -9 during GC", len(done))
}
