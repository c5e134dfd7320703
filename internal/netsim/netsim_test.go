package netsim

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

func echoServer(t *testing.T, l Link) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	sl := Listen(ln, l)
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// TestRoundTrip checks that a ping costs one simulated round trip.
func TestRoundTrip(t *testing.T) {
	addr := echoServer(t, Link{Latency: 20 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	start := time.Now()
	for i := 0; i < 5; i++ {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	rtt := time.Since(start) / 5
	if rtt < 40*time.Millisecond || rtt > 80*time.Millisecond {
		t.Fatalf("round trip %v, want about 40ms", rtt)
	}
}

// TestBandwidth checks that a bulk transfer is capped near the configured rate.
func TestBandwidth(t *testing.T) {
	const bps = 8 << 20 // 8 MiB/s each way
	addr := echoServer(t, Link{Latency: time.Millisecond, BytesPerS: bps})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 4 << 20
	go c.Write(make([]byte, n))
	start := time.Now()
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	got := float64(n) / time.Since(start).Seconds()
	if got > 1.3*bps || got < 0.5*bps {
		t.Fatalf("throughput %.1f MiB/s, want about %d MiB/s", got/(1<<20), bps>>20)
	}
}

// TestHTTP checks that net/http works through the link (its server aborts
// background reads with a past read deadline) and a request costs one round trip.
func TestHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(Listen(ln, Link{Latency: 10 * time.Millisecond, BytesPerS: 10 << 20}))
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String() + "/"
	get := func() {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "ok" {
			t.Fatalf("body %q, %v", b, err)
		}
	}
	get() // connect
	start := time.Now()
	const n = 5
	for i := 0; i < n; i++ {
		get() // reuses the keep-alive connection
	}
	rtt := time.Since(start) / n
	if rtt < 20*time.Millisecond || rtt > 60*time.Millisecond {
		t.Fatalf("request took %v, want about one 20ms round trip", rtt)
	}
}

// TestReadDeadline checks that a read deadline interrupts a blocked Read
// without breaking the connection.
func TestReadDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sl := Listen(ln, Link{Latency: 5 * time.Millisecond})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := sl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 4)
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v, want ErrDeadlineExceeded", err)
	}
	s.SetReadDeadline(time.Time{})
	c.Write([]byte("ping"))
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read after deadline reset: %q, %v", buf, err)
	}
}

// TestSharedCap checks that the bandwidth cap is one link shared by all connections.
func TestSharedCap(t *testing.T) {
	const bps = 8 << 20
	addr := echoServer(t, Link{Latency: time.Millisecond, BytesPerS: bps})
	const conns, n = 4, 1 << 20
	start := time.Now()
	errc := make(chan error, conns)
	for i := 0; i < conns; i++ {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			go c.Write(make([]byte, n))
			_, err = io.ReadFull(c, make([]byte, n))
			errc <- err
		}()
	}
	for i := 0; i < conns; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	got := float64(conns*n) / time.Since(start).Seconds()
	if got > 1.3*bps {
		t.Fatalf("aggregate throughput %.1f MiB/s over %d connections, want at most about %d MiB/s", got/(1<<20), conns, bps>>20)
	}
}
