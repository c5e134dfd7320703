package hostile

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// backend answers {"path": P, "n": N, "body": B} and records the order of arrival.
type backend struct {
	mu    sync.Mutex
	order []string
}

func startBackend(t *testing.T) (*backend, string) {
	b := &backend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.order = append(b.order, r.URL.Path)
		n := len(b.order)
		b.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(answer{Path: r.URL.Path, N: n, Body: string(body)})
	}))
	t.Cleanup(srv.Close)
	return b, srv.URL
}

type answer struct {
	Path string `json:"path"`
	N    int    `json:"n"`
	Body string `json:"body"`
}

func call(t *testing.T, base, path, body string) (answer, error) {
	t.Helper()
	resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	var a answer
	err = json.NewDecoder(resp.Body).Decode(&a)
	return a, err
}

func TestProxy(t *testing.T) {
	be, url := startBackend(t)
	p := Start(t, url)

	// Honest: forwarded as is, recorded with the real answer.
	if a, err := call(t, p.URL, "/v1/a", "hello"); err != nil || a.Path != "/v1/a" || a.Body != "hello" {
		t.Fatalf("honest: %+v %v", a, err)
	}
	// EditJSON changes a field; the real answer is still what is recorded.
	p.On("POST", "/v1/a", EditJSON(func(a *answer) { a.Body = "forged" }))
	if a, err := call(t, p.URL, "/v1/a", "x"); err != nil || a.Body != "forged" {
		t.Fatalf("edited: %+v %v", a, err)
	}
	ex := p.Exchanges("POST", "/v1/a")
	if len(ex) != 2 || string(ex[1].Request.Body) != "x" || ex[1].Upstream == nil || !strings.Contains(string(ex[1].Upstream.Body), `"body":"x"`) {
		t.Fatalf("exchanges: %+v", ex)
	}
	// Reply replays the first answer without asking the server.
	p.Honest()
	p.On("", "/v1/*", Reply(ex[0].Upstream))
	if a, err := call(t, p.URL, "/v1/b", "y"); err != nil || a.Path != "/v1/a" || a.N != 1 {
		t.Fatalf("replayed: %+v %v", a, err)
	}
	// Drop: the client gets a network error and the server sees nothing.
	p.Honest()
	p.On("POST", "/v1/drop", Drop())
	if _, err := call(t, p.URL, "/v1/drop", ""); err == nil {
		t.Fatal("dropped request answered")
	}
	// Route: answered about another path.
	p.On("POST", "/v1/c", Route("/v1/d"))
	if a, err := call(t, p.URL, "/v1/c", ""); err != nil || a.Path != "/v1/d" {
		t.Fatalf("routed: %+v %v", a, err)
	}
	// Delay.
	p.On("POST", "/v1/slow", Delay(200*time.Millisecond))
	start := time.Now()
	if _, err := call(t, p.URL, "/v1/slow", ""); err != nil || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("delayed: %v after %v", err, time.Since(start))
	}
	// Gate: two requests released last-first reach the server reordered.
	g := NewGate()
	p.On("POST", "/v1/q*", g.Rule())
	var wg sync.WaitGroup
	for _, path := range []string{"/v1/q1", "/v1/q2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call(t, p.URL, path, "")
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := g.Wait(ctx, map[string]int{"/v1/q1": 1, "/v1/q2": 2}[path]); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	g.Release(1)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		be.mu.Lock()
		last := be.order[len(be.order)-1]
		be.mu.Unlock()
		if last == "/v1/q2" {
			break // q2 reached the server first
		}
		if time.Now().After(deadline) {
			t.Fatal("released request never reached the server")
		}
	}
	g.Release(0)
	wg.Wait()
	be.mu.Lock()
	got := strings.Join(be.order, " ")
	be.mu.Unlock()
	if !strings.HasSuffix(got, "/v1/q2 /v1/q1") || strings.Contains(got, "drop") || strings.Contains(got, "/v1/b") {
		t.Fatalf("server saw %s", got)
	}
	if n := p.Count("", "*"); n != 8 {
		t.Fatalf("recorded %d requests, want 8", n)
	}
	if n := p.Count("POST", "/v1/drop"); n != 1 {
		t.Fatalf("dropped request recorded %d times", n)
	}
}
