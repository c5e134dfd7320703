package e2e

// Mount points and the control socket, tried as a careless user and as
// another local user would: a mount stacked on a mount, a mount over files,
// unmount of what is not mounted or is busy, a squatted or misdirected
// control socket, allow_other without default_permissions.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ctlProbe runs as user nobody (see runProbeIfAsked): "ctl-serve PATH"
// serves a fake daemon that answers "done" to anything; "ctl-send PATH"
// asks the daemon at PATH to unmount and prints its answers.
func ctlProbe(op, path string) error {
	switch op {
	case "ctl-serve":
		if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
			return err
		}
		os.Chmod(filepath.Dir(path), 0o777)
		os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			return err
		}
		os.Chmod(path, 0o777)
		for {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			go func() {
				defer c.Close()
				fmt.Fprintln(c, `kumo-control 1 pid=1 mountpoint="/"`)
				bufio.NewReader(c).ReadString('\n')
				fmt.Fprintln(c, "done")
			}()
		}
	case "ctl-send":
		c, err := net.Dial("unix", path)
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintln(c, "unmount")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			fmt.Println(sc.Text())
		}
		return nil
	}
	return fmt.Errorf("unknown op %s", op)
}

// socketName is the control socket's file name for mountpoint mnt.
func socketName(t *testing.T, mnt string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(mnt)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(r))
	return hex.EncodeToString(sum[:8]) + ".sock"
}

// mountCount is how many mounts are stacked at dir.
func mountCount(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			n++
		}
	}
	return n
}

// kumoCmd runs the kumo binary with extra environment and returns its output.
func kumoCmd(t *testing.T, bin string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// privateSockets gives a mount its own socket directory ($TMPDIR, no
// XDG_RUNTIME_DIR) and returns the environment and the kumo-UID directory.
func privateSockets(t *testing.T) ([]string, string) {
	tmp := t.TempDir()
	return []string{"TMPDIR=" + tmp, "XDG_RUNTIME_DIR="}, filepath.Join(tmp, fmt.Sprintf("kumo-%d", os.Geteuid()))
}

// TestMountRefusesAMountedDir: a second mount on a kumo drive, or on any
// mount point, is refused with who is there; nothing is stacked.
func TestMountRefusesAMountedDir(t *testing.T) {
	env, _ := privateSockets(t)
	tg := newKumoTargetEnv(t, env)
	base := t.TempDir()
	out, err := kumoCmd(t, tg.m.bin, env, "mount", "--cloud-dir", filepath.Join(base, "cloud2"), "--cache-dir", filepath.Join(base, "cache2"), tg.dir)
	if n := mountCount(t, tg.dir); n != 1 {
		exec.Command("fusermount3", "-u", tg.dir).Run() // the stacked one
		t.Fatalf("%d mounts stacked at %s after a second kumo mount (err %v): %s", n, tg.dir, err, out)
	}
	want := fmt.Sprintf("%s is already a kumo drive (pid %d); unmount it first", tg.dir, tg.m.pid())
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("second kumo mount: err %v, output %q, want %q", err, out, want)
	}
	// The first drive still works and unmounts normally.
	if err := os.WriteFile(filepath.Join(tg.dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	if os.Geteuid() == 0 {
		other := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "none", other).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		defer exec.Command("umount", other).Run()
		out, err := kumoCmd(t, tg.m.bin, env, "mount", "--cloud-dir", filepath.Join(base, "cloud3"), "--cache-dir", filepath.Join(base, "cache3"), other)
		if n := mountCount(t, other); n != 1 {
			exec.Command("fusermount3", "-u", other).Run()
			t.Fatalf("%d mounts at %s after kumo mount on a tmpfs (err %v): %s", n, other, err, out)
		}
		if err == nil || !strings.Contains(out, other+" is already a mount point (tmpfs") {
			t.Fatalf("kumo mount on a tmpfs: err %v, output %q", err, out)
		}
	}
	tg.m.unmount(t)
}

// newKumoTargetEnv is newKumoTarget with extra environment for the daemon.
func newKumoTargetEnv(t *testing.T, env []string, extra ...string) *target {
	t.Helper()
	bin := needKumo(t)
	tg := &target{name: "kumo", base: t.TempDir(), extra: extra}
	tg.dir = filepath.Join(tg.base, "mnt")
	tg.m = &kumoMount{bin: bin, cloud: filepath.Join(tg.base, "cloud"), cache: tg.nextCache(), dir: tg.dir, env: env, extra: extra, owner: t}
	tg.m.start(t)
	return tg
}

// TestMountRefusesANonEmptyDir: mounting over files would hide them; it
// takes -o nonempty.
func TestMountRefusesANonEmptyDir(t *testing.T) {
	bin := needKumo(t)
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "mine.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := kumoCmd(t, bin, nil, "mount", "--cloud-dir", filepath.Join(base, "cloud"), "--cache-dir", filepath.Join(base, "c0"), mnt)
	if isMountpoint(mnt) {
		exec.Command(bin, "unmount", mnt).Run()
		t.Fatalf("kumo mount over a non-empty directory mounted it: %s", out)
	}
	if err == nil || !strings.Contains(out, "is not empty (mine.txt)") || !strings.Contains(out, "-o nonempty") {
		t.Fatalf("kumo mount over a non-empty directory: err %v, output %q", err, out)
	}
	m := &kumoMount{bin: bin, cloud: filepath.Join(base, "cloud"), cache: filepath.Join(base, "c1"), dir: mnt, extra: []string{"-o", "nonempty"}}
	m.start(t)
	if _, err := os.Stat(filepath.Join(mnt, "mine.txt")); err == nil {
		t.Errorf("the drive shows the directory's own file")
	}
	m.unmount(t)
	wantContent(t, filepath.Join(mnt, "mine.txt"), "mine")
}

// TestUnmountNotMounted: plain words, not fusermount3's "Invalid argument".
func TestUnmountNotMounted(t *testing.T) {
	bin := needKumo(t)
	dir := t.TempDir()
	for _, c := range []struct{ path, want string }{
		{dir, dir + " is not mounted"},
		{filepath.Join(dir, "nope"), filepath.Join(dir, "nope") + " does not exist"},
	} {
		out, err := kumoCmd(t, bin, nil, "unmount", c.path)
		if err == nil || !strings.Contains(out, c.want) || strings.Contains(out, "Invalid argument") {
			t.Errorf("kumo unmount %s: err %v, output %q, want %q", c.path, err, out, c.want)
		}
	}
}

// holdCwd starts a process whose working directory is dir.
func holdCwd(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "120")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestUnmountBusyNamesHolders: a busy drive is not unmounted, and the
// error names the process that keeps it busy; once it is gone, unmount works.
func TestUnmountBusyNamesHolders(t *testing.T) {
	tg := newKumoTarget(t)
	sub := filepath.Join(tg.dir, "work")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	h := holdCwd(t, sub)
	out, err := kumoCmd(t, tg.m.bin, nil, "unmount", tg.dir)
	want := fmt.Sprintf("sleep (pid %d: cwd)", h.Process.Pid)
	if err == nil || !strings.Contains(out, want) || !strings.Contains(out, "is busy") {
		t.Fatalf("kumo unmount of a busy drive: err %v, output %q, want it to name %q", err, out, want)
	}
	if !isMountpoint(tg.dir) || tg.m.exited() {
		t.Fatal("the busy drive went away")
	}
	h.Process.Kill()
	h.Wait()
	// A holder that lets go within a moment (a file just closed) does not
	// fail the unmount.
	h = holdCwd(t, sub)
	go func() {
		time.Sleep(500 * time.Millisecond)
		h.Process.Kill()
	}()
	tg.m.unmount(t)
}

// TestUnmountDeadDaemonRetriesBusy: with the daemon gone, kumo unmount
// detaches the dead mount itself, retrying while the last holder goes away
// (as the kernel releases a file closed a moment ago).
func TestUnmountDeadDaemonRetriesBusy(t *testing.T) {
	tg := newKumoTarget(t)
	h := holdCwd(t, tg.dir)
	if err := tg.m.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-tg.m.done
	go func() {
		time.Sleep(500 * time.Millisecond)
		h.Process.Kill()
	}()
	out, err := kumoCmd(t, tg.m.bin, nil, "unmount", tg.dir)
	if n := mountCount(t, tg.dir); err != nil || n != 0 {
		exec.Command("fusermount3", "-uz", tg.dir).Run()
		t.Fatalf("kumo unmount after the daemon died, holder gone after 0.5 s: err %v, %d mounts left: %s", err, n, out)
	}
	if !strings.Contains(out, "no daemon serves") {
		t.Errorf("kumo unmount did not say the daemon was gone: %q", out)
	}
}

// TestUnmountTimeoutSaysWhatItWaitsFor: offline with a pending file, an
// unmount that runs out of time says what is pending and leaves the drive
// mounted; the default timeout is bounded.
func TestUnmountTimeoutSaysWhatItWaitsFor(t *testing.T) {
	bin := needKumo(t)
	if help, _ := kumoCmd(t, bin, nil, "unmount", "--help"); !strings.Contains(help, "(default: 10m0s)") {
		t.Errorf("kumo unmount has no default timeout:\n%s", help)
	}
	base := t.TempDir()
	srv, env := startServedAccount(t, bin, base)
	m := &kumoMount{bin: bin, server: srv.url(), env: env, cache: filepath.Join(base, "cache"), dir: filepath.Join(base, "mnt")}
	m.start(t)
	srv.stop(t)
	if err := os.WriteFile(filepath.Join(m.dir, "pending"), pattern(5, 3000), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := kumoCmd(t, bin, env, "unmount", "--timeout", "3s", m.dir)
	for _, want := range []string{"gave up after 3s waiting for", "1 file", "offline since", "still mounted", "--force"} {
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("kumo unmount --timeout 3s while offline: err %v, output lacks %q:\n%s", err, want, out)
		}
	}
	if !isMountpoint(m.dir) || m.exited() {
		t.Fatal("the drive went away after a timed-out unmount")
	}
	srv.start(t)
	m.unmount(t)
}

// TestControlSocketBelongsToItsMount: a socket named after one mount point
// but answered by another drive's daemon is refused; neither drive is
// unmounted.
func TestControlSocketBelongsToItsMount(t *testing.T) {
	env, dir := privateSockets(t)
	a := newKumoTargetEnv(t, env)
	b := newKumoTargetEnv(t, env)
	sockA, sockB := filepath.Join(dir, socketName(t, a.dir)), filepath.Join(dir, socketName(t, b.dir))
	if err := os.Remove(sockB); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(sockA, sockB); err != nil {
		t.Fatal(err)
	}
	out, err := kumoCmd(t, b.m.bin, env, "unmount", b.dir)
	if !isMountpoint(a.dir) {
		t.Fatalf("kumo unmount %s unmounted %s: %s", b.dir, a.dir, out)
	}
	if err == nil || !strings.Contains(out, "answered by the daemon of "+a.dir) {
		t.Fatalf("kumo unmount through a misdirected socket: err %v, output %q", err, out)
	}
	if !isMountpoint(b.dir) {
		t.Fatal("b went away")
	}
	a.m.unmount(t)
	os.Remove(sockB)
	// b has no socket left: kumo unmount still detaches it (no flush).
	if out, err := kumoCmd(t, b.m.bin, env, "unmount", b.dir); err != nil || isMountpoint(b.dir) {
		t.Fatalf("kumo unmount of b without its socket: %v %s", err, out)
	}
}

// startNobody runs a probe op as user nobody in the background.
func startNobody(t *testing.T, probe, op, path string) {
	t.Helper()
	cmd := exec.Command(probe, "-test.run=^$")
	cmd.Env = append(os.Environ(), probeEnv+"="+op+" "+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Lstat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s as nobody: %s did not appear", op, path)
}

// TestControlSocketSquatted: another local user who plants the socket
// directory, or serves the socket, is not believed by kumo unmount; one who
// reaches the daemon's socket cannot make it unmount.
func TestControlSocketSquatted(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFatal(t, "needs root to act as another user")
	}
	probe := probeBinary(t)
	env, ownDir := privateSockets(t)
	tg := newKumoTargetEnv(t, env)
	name := socketName(t, tg.dir)
	unmountWith := func(t *testing.T, tmp string) string {
		t.Helper()
		out, err := kumoCmd(t, tg.m.bin, []string{"TMPDIR=" + tmp, "XDG_RUNTIME_DIR="}, "unmount", tg.dir)
		if !isMountpoint(tg.dir) || tg.m.exited() {
			t.Fatalf("kumo unmount believed a socket served by nobody: the drive went away (err %v): %s", err, out)
		}
		if err == nil {
			t.Fatalf("kumo unmount succeeded without unmounting: %s", out)
		}
		return out
	}

	t.Run("planted directory", func(t *testing.T) {
		tmp := t.TempDir()
		openUpPath(t, tmp)
		if err := os.Chmod(tmp, 0o1777); err != nil {
			t.Fatal(err)
		}
		startNobody(t, probe, "ctl-serve", filepath.Join(tmp, "kumo-0", name))
		if out := unmountWith(t, tmp); !strings.Contains(out, "belongs to uid 65534") {
			t.Errorf("kumo unmount with a planted socket directory: %q", out)
		}
	})
	t.Run("foreign server in our directory", func(t *testing.T) {
		tmp, open := t.TempDir(), t.TempDir()
		openUpPath(t, open)
		if err := os.Chmod(open, 0o1777); err != nil {
			t.Fatal(err)
		}
		fake := filepath.Join(open, "squat", "s.sock")
		startNobody(t, probe, "ctl-serve", fake)
		if err := os.Mkdir(filepath.Join(tmp, "kumo-0"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(fake, filepath.Join(tmp, "kumo-0", name)); err != nil {
			t.Fatal(err)
		}
		if out := unmountWith(t, tmp); !strings.Contains(out, "served by uid 65534") {
			t.Errorf("kumo unmount with a socket served by nobody: %q", out)
		}
	})
	t.Run("daemon refuses another user", func(t *testing.T) {
		// Open the way to the real daemon's socket, as a careless chmod would.
		openUpPath(t, ownDir)
		defer os.Chmod(ownDir, 0o700)
		sock := filepath.Join(ownDir, name)
		if err := os.Chmod(sock, 0o777); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(probe, "-test.run=^$")
		cmd.Env = append(os.Environ(), probeEnv+"=ctl-send "+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		if !isMountpoint(tg.dir) || tg.m.exited() {
			t.Fatalf("user nobody unmounted root's drive through its control socket: %v %s", err, out)
		}
		if !strings.HasPrefix(string(out), "error refused") {
			t.Errorf("the daemon answered nobody: %v %q", err, out)
		}
	})
	tg.m.unmount(t)
}

// TestAllowOtherImpliesPermissions: with -o allow_other alone, another user
// cannot read, write or chmod a 0600 file of someone else.
func TestAllowOtherImpliesPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFatal(t, "needs root to switch to user nobody")
	}
	probe := probeBinary(t)
	tg := newKumoTarget(t, "-o", "allow_other")
	openUpPath(t, filepath.Dir(tg.dir))
	if err := os.Chmod(tg.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret, public := filepath.Join(tg.dir, "secret"), filepath.Join(tg.dir, "public")
	for _, err := range []error{
		os.WriteFile(secret, []byte("alice only"), 0o600), os.Chmod(secret, 0o600), os.Chown(secret, 1000, 1000),
		os.WriteFile(public, []byte("everyone"), 0o644), os.Chmod(public, 0o644),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		op, path string
		want     syscall.Errno
	}{
		{"read", public, 0}, // control: nobody reaches the mount
		{"read", secret, unix.EACCES},
		{"write", secret, unix.EACCES},
		{"chmod", secret, unix.EPERM},
	} {
		if got := asNobody(t, probe, c.op, c.path); got != c.want {
			t.Errorf("-o allow_other, as nobody: %s %s = %v (%d), want %v (%d)", c.op, filepath.Base(c.path), got, int(got), c.want, int(c.want))
		}
	}
	wantContent(t, secret, "alice only")
	var st unix.Stat_t
	if err := unix.Stat(secret, &st); err != nil || st.Mode&0o7777 != 0o600 {
		t.Errorf("secret: mode %o after nobody's chmod (%v)", st.Mode&0o7777, err)
	}
}
