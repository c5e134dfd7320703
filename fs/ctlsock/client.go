package ctlsock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// ErrTimeout means the daemon did not finish before the caller's deadline.
var ErrTimeout = errors.New("timed out")

// WrongMountError says that the socket named after one mount point is
// answered by the daemon of another.
type WrongMountError struct {
	Path, Want, Got string
	PID             int
}

func (e *WrongMountError) Error() string {
	return fmt.Sprintf("the control socket %s of %s is answered by the daemon of %s (pid %d): refusing to send it a command meant for %s",
		e.Path, e.Want, e.Got, e.PID, e.Want)
}

// Client is one connection to a daemon's control socket.
type Client struct {
	PID        int    // the daemon's process id
	Mountpoint string // the mount point it serves
	conn       *net.UnixConn
	r          *bufio.Reader
}

// Dial connects to the daemon of mountpoint (absolute, resolved) and checks
// that it runs as us and serves that mount point. It fails with ErrNoDaemon
// when no daemon listens there.
func Dial(mountpoint string) (*Client, error) {
	dir := Dir()
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoDaemon
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	path := Path(mountpoint)
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (%s)", ErrNoDaemon, path)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	uid, pid, err := peer(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if uid != os.Geteuid() {
		conn.Close()
		return nil, fmt.Errorf("the control socket %s is served by uid %d, not by you (uid %d): refusing to trust it (another user may pose as your kumo daemon); remove it", path, uid, os.Geteuid())
	}
	c := &Client{conn: conn, r: bufio.NewReader(io.LimitReader(conn, 64<<20))}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.readLine()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("the daemon on %s (pid %d) did not say which mount it serves (%v); if it is an older kumo, "+
			"kill -TERM %d pushes pending uploads for up to 30 s and unmounts", path, pid, err, pid)
	}
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		conn.Close()
		return nil, fmt.Errorf("control socket %s: %s", path, msg)
	}
	pid, mnt, err := parseGreeting(line)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if mnt != mountpoint {
		conn.Close()
		return nil, &WrongMountError{Path: path, Want: mountpoint, Got: mnt, PID: pid}
	}
	conn.SetReadDeadline(time.Time{})
	c.PID, c.Mountpoint = pid, mnt
	return c, nil
}

// Close hangs up (which cancels a flush in progress).
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) readLine() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// Status asks for the daemon's upload queue.
func (c *Client) Status() (Progress, error) {
	if _, err := fmt.Fprintln(c.conn, "status"); err != nil {
		return Progress{}, err
	}
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.readLine()
	if err != nil {
		return Progress{}, err
	}
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return Progress{}, errors.New(msg)
	}
	rest, ok := strings.CutPrefix(line, "progress ")
	if !ok {
		return Progress{}, fmt.Errorf("unexpected answer %q", line)
	}
	return parseProgress(rest)
}

// Unmount asks the daemon to push what is pending (unless force) and to
// unmount, calling progress with each report, and waits until the daemon has
// exited. When ctx ends first it returns the last report and an error
// wrapping ErrTimeout; the drive stays mounted.
func (c *Client) Unmount(ctx context.Context, force bool, progress func(Progress)) (Progress, error) {
	cmd := "unmount"
	if force {
		cmd = "unmount force"
	}
	var last Progress
	if _, err := fmt.Fprintln(c.conn, cmd); err != nil {
		return last, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		line, err := c.readLine()
		if err != nil {
			var ne net.Error
			if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
				return last, fmt.Errorf("%w", ErrTimeout)
			}
			if errors.Is(err, io.EOF) {
				return last, errors.New("the daemon hung up before unmounting (see kumo.log in the cache dir)")
			}
			return last, err
		}
		switch {
		case line == "done":
			// The daemon closes the connection when it exits, after
			// closing its cache and cloud.
			c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			io.Copy(io.Discard, c.r)
			return last, nil
		case strings.HasPrefix(line, "error "):
			return last, errors.New(strings.TrimPrefix(line, "error "))
		case strings.HasPrefix(line, "progress "):
			p, err := parseProgress(strings.TrimPrefix(line, "progress "))
			if err != nil {
				return last, fmt.Errorf("daemon: %w", err)
			}
			last = p
			if progress != nil {
				progress(p)
			}
		}
	}
}
