package netsim

import (
	"io"
	"net"
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
