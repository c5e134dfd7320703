// Package netsim makes a loopback listener behave like a real network link: it
// delays data by a one-way latency and caps bandwidth, in both directions, while
// keeping the pipe full (data in flight is not serialized behind the delay).
// It is for tests and benchmarks only (this machine's kernel has no netem).
package netsim

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Link describes one direction of a simulated link.
type Link struct {
	Latency   time.Duration // one-way delay (round trip = 2×)
	BytesPerS int64         // bandwidth cap; 0 = unlimited
}

// Listen wraps ln so every accepted connection goes through the link in both directions.
func Listen(ln net.Listener, l Link) net.Listener {
	if l.Latency == 0 && l.BytesPerS == 0 {
		return ln
	}
	return &listener{Listener: ln, link: l}
}

type listener struct {
	net.Listener
	link Link
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newConn(c, l.link), nil
}

type packet struct {
	data []byte
	due  time.Time
}

// conn delays both directions: written data is queued and sent by a goroutine
// when due; read data is pulled by a goroutine and released when due.
type conn struct {
	net.Conn
	link Link

	out     chan packet
	in      chan packet
	pending []byte
	done    chan struct{}
	once    sync.Once
	readErr error
	errMu   sync.Mutex
}

const queueLen = 4096

func newConn(c net.Conn, l Link) *conn {
	k := &conn{Conn: c, link: l, out: make(chan packet, queueLen), in: make(chan packet, queueLen), done: make(chan struct{})}
	go k.sender(limiter(l))
	go k.receiver(limiter(l))
	return k
}

func limiter(l Link) *rate.Limiter {
	if l.BytesPerS <= 0 {
		return nil
	}
	// A burst of 64 KiB keeps the cap accurate at the granularity of TCP segments.
	return rate.NewLimiter(rate.Limit(l.BytesPerS), 64<<10)
}

func wait(lim *rate.Limiter, n int) {
	if lim == nil {
		return
	}
	for n > 0 {
		m := min(n, lim.Burst())
		r := lim.ReserveN(time.Now(), m)
		time.Sleep(r.Delay())
		n -= m
	}
}

func (k *conn) sender(lim *rate.Limiter) {
	for {
		select {
		case p := <-k.out:
			time.Sleep(time.Until(p.due))
			wait(lim, len(p.data))
			if _, err := k.Conn.Write(p.data); err != nil {
				k.Close()
				return
			}
		case <-k.done:
			return
		}
	}
}

func (k *conn) receiver(lim *rate.Limiter) {
	defer close(k.in)
	for {
		buf := make([]byte, 32<<10)
		n, err := k.Conn.Read(buf)
		if n > 0 {
			wait(lim, n)
			select {
			case k.in <- packet{data: buf[:n], due: time.Now().Add(k.link.Latency)}:
			case <-k.done:
				return
			}
		}
		if err != nil {
			k.errMu.Lock()
			k.readErr = err
			k.errMu.Unlock()
			return
		}
	}
}

func (k *conn) Read(b []byte) (int, error) {
	if len(k.pending) == 0 {
		p, ok := <-k.in
		if !ok {
			k.errMu.Lock()
			defer k.errMu.Unlock()
			return 0, k.readErr
		}
		time.Sleep(time.Until(p.due))
		k.pending = p.data
	}
	n := copy(b, k.pending)
	k.pending = k.pending[n:]
	return n, nil
}

func (k *conn) Write(b []byte) (int, error) {
	data := append([]byte(nil), b...)
	select {
	case k.out <- packet{data: data, due: time.Now().Add(k.link.Latency)}:
		return len(b), nil
	case <-k.done:
		return 0, net.ErrClosed
	}
}

func (k *conn) Close() error {
	k.once.Do(func() { close(k.done) })
	return k.Conn.Close()
}
