package ctlsock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	kfs "kumo/fs"
)

// Daemon is what the control socket drives.
type Daemon interface {
	Status() kfs.Status
	Flush(ctx context.Context) error
	Unmount() error
}

// BusyError says that another daemon already serves the mount point.
type BusyError struct {
	Mountpoint string
	PID        int // 0 when it did not answer
}

func (e *BusyError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("%s is already a kumo drive (pid %d); unmount it first: kumo unmount %s", e.Mountpoint, e.PID, e.Mountpoint)
	}
	return fmt.Sprintf("%s is already served by another kumo daemon; unmount it first: kumo unmount %s", e.Mountpoint, e.Mountpoint)
}

// Server is a daemon's control socket.
type Server struct {
	mountpoint, path string
	ln               *net.UnixListener
	lock             *os.File
	log              *slog.Logger
	// replying counts connections writing their last answer after an
	// unmount: the process must not exit under them.
	replying  sync.WaitGroup
	closeOnce sync.Once
}

// Listen takes the control socket of mountpoint (absolute, resolved) for
// this process. It fails with *BusyError while another daemon holds it.
func Listen(mountpoint string, log *slog.Logger) (*Server, error) {
	path := Path(mountpoint)
	if err := ensureDir(Dir()); err != nil {
		return nil, err
	}
	lockPath := strings.TrimSuffix(path, ".sock") + ".lock"
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("control socket lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			busy := &BusyError{Mountpoint: mountpoint}
			if c, err := Dial(mountpoint); err == nil {
				busy.PID = c.PID
				c.Close()
			}
			return nil, busy
		}
		return nil, fmt.Errorf("control socket lock %s: %w", lockPath, err)
	}
	// We hold the lock: a socket file left there is a dead daemon's.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		lock.Close()
		return nil, fmt.Errorf("remove the stale control socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		lock.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{mountpoint: mountpoint, path: path, ln: ln, lock: lock, log: log}, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops accepting, removes the socket, releases the lock, and waits
// (up to 5 s) for connections still writing their last answer.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.ln.Close()
		done := make(chan struct{})
		go func() { s.replying.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		s.lock.Close()
	})
}

// Serve answers connections until Close.
func (s *Server) Serve(d Daemon) {
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		go s.handle(conn, d)
	}
}

func (s *Server) handle(conn *net.UnixConn, d Daemon) {
	defer conn.Close()
	uid, _, err := peer(conn)
	if err != nil || uid != os.Geteuid() {
		// Only the user who mounted the drive may drive it.
		s.log.Warn("control socket: refused a connection from another user", "uid", uid, "err", err)
		fmt.Fprintf(conn, "error refused: the drive at %s belongs to uid %d, not to uid %d\n", s.mountpoint, os.Geteuid(), uid)
		return
	}
	fmt.Fprintln(conn, greeting(os.Getpid(), s.mountpoint))
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(conn, 256)).ReadString('\n')
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	cmd := strings.TrimSpace(line)
	// The peer hanging up cancels a flush.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		b := make([]byte, 1)
		conn.Read(b)
		cancel()
	}()
	switch cmd {
	case "status":
		fmt.Fprintln(conn, "progress "+FromStatus(d.Status()).encode())
	case "flush", "unmount", "unmount force":
		if cmd != "unmount force" {
			if err := flushWithProgress(ctx, d, conn); err != nil {
				fmt.Fprintf(conn, "error %s\n", oneLine(err.Error()))
				return
			}
		}
		if cmd == "flush" {
			fmt.Fprintln(conn, "done")
			return
		}
		s.log.Info("unmount requested", "force", cmd == "unmount force")
		s.replying.Add(1)
		if err := d.Unmount(); err != nil {
			fmt.Fprintf(conn, "error %s\n", oneLine(err.Error()))
			s.replying.Done()
			return
		}
		fmt.Fprintln(conn, "done")
		s.replying.Done()
		// Keep the connection open until the process exits (and has closed
		// the cache and the embedded cloud): kumo unmount waits for that
		// before returning.
		select {}
	default:
		fmt.Fprintf(conn, "error unknown command %q\n", cmd)
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func flushWithProgress(ctx context.Context, d Daemon, w io.Writer) error {
	done := make(chan error, 1)
	go func() { done <- d.Flush(ctx) }()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	if _, err := fmt.Fprintln(w, "progress "+FromStatus(d.Status()).encode()); err != nil {
		return err
	}
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			if _, err := fmt.Fprintln(w, "progress "+FromStatus(d.Status()).encode()); err != nil {
				return err
			}
		}
	}
}
