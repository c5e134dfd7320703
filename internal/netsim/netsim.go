// Package netsim makes a loopback listener behave like a real network link: it
// delays data by a one-way latency and caps bandwidth, in both directions, while
// keeping the pipe full (data in flight is not serialized behind the delay).
// The bandwidth cap is shared by all connections of a listener, per direction,
// like one access link. Deadlines apply to the delayed stream the caller sees
// (net/http aborts its background reads with a past read deadline).
// It is for tests and benchmarks only (this machine's kernel has no netem).
package netsim

import (
	"net"
	"os"
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
	return &listener{Listener: ln, link: l, up: limiter(l), down: limiter(l)}
}

type listener struct {
	net.Listener
	link     Link
	up, down *rate.Limiter // client→server and server→client, shared by all connections
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newConn(c, l.link, l.down, l.up), nil
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
	held    *packet // taken from in, not due yet when a deadline struck
	done    chan struct{}
	once    sync.Once
	readErr error
	errMu   sync.Mutex

	dlMu      sync.Mutex
	readDL    time.Time
	dlChanged chan struct{} // closed (and replaced) when the read deadline changes
}

const queueLen = 4096

func newConn(c net.Conn, l Link, sendLim, recvLim *rate.Limiter) *conn {
	k := &conn{Conn: c, link: l, out: make(chan packet, queueLen), in: make(chan packet, queueLen),
		done: make(chan struct{}), dlChanged: make(chan struct{})}
	go k.sender(sendLim)
	go k.receiver(recvLim)
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
	// One read buffer; each packet gets an exact-size copy, so a queue of
	// small packets does not pin a 32 KiB buffer apiece.
	buf := make([]byte, 32<<10)
	for {
		n, err := k.Conn.Read(buf)
		if n > 0 {
			wait(lim, n)
			data := append([]byte(nil), buf[:n]...)
			select {
			case k.in <- packet{data: data, due: time.Now().Add(k.link.Latency)}:
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
	for len(k.pending) == 0 {
		if err := k.next(); err != nil {
			return 0, err
		}
	}
	n := copy(b, k.pending)
	k.pending = k.pending[n:]
	return n, nil
}

// next waits for the next packet to be due, the read deadline or a deadline
// change (then it returns nil with nothing pending, and Read calls it again).
func (k *conn) next() error {
	dl, changed := k.deadline()
	var expired <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		expired = t.C
	}
	if k.held == nil {
		select {
		case p, ok := <-k.in:
			if !ok {
				k.errMu.Lock()
				defer k.errMu.Unlock()
				return k.readErr
			}
			k.held = &p
		case <-expired:
			return os.ErrDeadlineExceeded
		case <-changed:
			return nil
		}
	}
	due := time.NewTimer(time.Until(k.held.due))
	defer due.Stop()
	select {
	case <-due.C:
		k.pending, k.held = k.held.data, nil
		return nil
	case <-expired:
		return os.ErrDeadlineExceeded
	case <-changed:
		return nil
	}
}

func (k *conn) deadline() (time.Time, <-chan struct{}) {
	k.dlMu.Lock()
	defer k.dlMu.Unlock()
	return k.readDL, k.dlChanged
}

// SetReadDeadline applies to Read of the delayed stream; the underlying
// connection keeps no deadline (its reader goroutine must not fail).
func (k *conn) SetReadDeadline(t time.Time) error {
	k.dlMu.Lock()
	defer k.dlMu.Unlock()
	k.readDL = t
	close(k.dlChanged)
	k.dlChanged = make(chan struct{})
	return nil
}

// SetWriteDeadline is a no-op: Write only queues and never blocks on the peer.
func (k *conn) SetWriteDeadline(time.Time) error { return nil }

func (k *conn) SetDeadline(t time.Time) error { return k.SetReadDeadline(t) }

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
