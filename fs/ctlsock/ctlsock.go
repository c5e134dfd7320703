// Package ctlsock is the control socket between a mounted drive's daemon
// (`kumo mount`) and `kumo unmount`: where it lives, who may use it, and the
// line protocol spoken on it.
//
// The socket of mount point MNT is DIR/kumo-UID/HASH.sock, DIR being
// $XDG_RUNTIME_DIR or else $TMPDIR, HASH a hash of MNT's resolved path. Both
// sides refuse a kumo-UID directory that is not ours, not a directory (a
// symlink), or open to group or others, and both check the peer's uid
// (SO_PEERCRED): another local user can neither pose as our daemon nor ask it
// to unmount. The daemon holds HASH.lock (flock) for its lifetime, so one
// mount point has at most one daemon, and every connection starts with the
// daemon saying which mount point it serves, which the client checks.
//
// Protocol, one command per connection: the daemon greets with
//
//	kumo-control 1 pid=N mountpoint="MNT"
//
// the client sends one of "status", "flush", "unmount", "unmount force"; the
// daemon answers "progress K=V..." lines, then "done" or "error MESSAGE".
package ctlsock

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNoDaemon means no daemon serves the mount point's control socket.
var ErrNoDaemon = errors.New("no kumo daemon answers on the control socket")

// Path returns the control socket of mountpoint (an absolute, resolved path).
func Path(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(Dir(), hex.EncodeToString(sum[:8])+".sock")
}

// Dir is the directory holding this user's control sockets.
func Dir() string {
	base := os.Getenv("XDG_RUNTIME_DIR")
	if base == "" {
		base = os.TempDir()
	}
	return filepath.Join(base, fmt.Sprintf("kumo-%d", os.Geteuid()))
}

// checkDir refuses a socket directory another user could have planted or
// can write into.
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("control socket directory %s: no owner information", dir)
	}
	const fix = "remove it (it may have been created by another user to intercept kumo) or set XDG_RUNTIME_DIR to a private directory"
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("control socket directory %s is a symlink, refusing to use it: %s", dir, fix)
	case !fi.IsDir():
		return fmt.Errorf("control socket directory %s is not a directory: %s", dir, fix)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("control socket directory %s belongs to uid %d, not to you (uid %d), refusing to use it: %s",
			dir, st.Uid, os.Geteuid(), fix)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("control socket directory %s has mode %04o, open to other users, refusing to use it: chmod 700 %s, or %s",
			dir, fi.Mode().Perm(), dir, fix)
	}
	return nil
}

// ensureDir creates the socket directory 0700 if it is absent, then checks
// it (whoever created it).
func ensureDir(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		// Mkdir, not MkdirAll: the parent must exist already; EEXIST means
		// someone created it just now, and the check below judges it.
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create the control socket directory: %w", err)
		}
	}
	return checkDir(dir)
}

// peer returns the uid and pid of the process at the other end of c.
func peer(c *net.UnixConn) (uid, pid int, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, 0, err
	}
	var (
		cred *unix.Ucred
		cerr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, 0, err
	}
	if cerr != nil {
		return -1, 0, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return int(cred.Uid), int(cred.Pid), nil
}
