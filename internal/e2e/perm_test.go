package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The permission test runs single file operations as user nobody by re-running
// this test binary with KUMO_E2E_PROBE="op path"; the probe exits with the errno
// the operation got (0 for success), so the test sees the exact errno.
const probeEnv = "KUMO_E2E_PROBE"

// runProbeIfAsked is called from TestMain before any test runs.
func runProbeIfAsked() {
	spec := os.Getenv(probeEnv)
	if spec == "" {
		return
	}
	op, path, _ := strings.Cut(spec, " ")
	var err error
	switch op {
	case "read":
		var f *os.File
		if f, err = os.Open(path); err == nil {
			_, err = io.ReadAll(f)
			f.Close()
		}
	case "write":
		var f *os.File
		if f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			_, err = f.Write([]byte("x"))
			f.Close()
		}
	case "create":
		err = openClose(path, unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL, 0o644)
	case "readdir":
		_, err = os.ReadDir(path)
	case "unlink":
		err = unix.Unlink(path)
	case "chmod":
		err = unix.Chmod(path, 0o777)
	case "ctl-serve", "ctl-send":
		err = ctlProbe(op, path) // mountcheck_test.go
	default:
		err = fmt.Errorf("unknown probe op %q", op)
	}
	if err == nil {
		os.Exit(0)
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		os.Exit(int(e))
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(250)
}

// asNobody runs one probe op as uid/gid 65534 and returns its errno.
func asNobody(t *testing.T, probe, op, path string) syscall.Errno {
	t.Helper()
	cmd := exec.Command(probe, "-test.run=^$")
	cmd.Env = append(os.Environ(), probeEnv+"="+op+" "+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 250 || ee.ExitCode() < 0 {
		t.Fatalf("probe %s %s as nobody: %v\n%s", op, path, err, out)
	}
	return syscall.Errno(ee.ExitCode())
}

// probeBinary copies this test binary where user nobody can execute it.
func probeBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	openUpPath(t, dir)
	p := filepath.Join(dir, "probe")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// openUpPath makes dir and its parents up to the temp root traversable by others
// (t.TempDir creates them 0700).
func openUpPath(t *testing.T, dir string) {
	t.Helper()
	root := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); d != root && d != "/" && strings.HasPrefix(d, root); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPermissionsAsNobody checks that modes are enforced for other users, which
// on kumo needs `-o allow_other,default_permissions`.
func TestPermissionsAsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFatal(t, "needs root to switch to user nobody")
	}
	probe := probeBinary(t)
	forEachTarget(t, []string{"-o", "allow_other,default_permissions"}, func(t *testing.T, tg *target) {
		openUpPath(t, filepath.Dir(tg.dir))
		if err := os.Chmod(tg.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(tg.dir, "perm")
		for _, err := range []error{
			os.Mkdir(d, 0o755),
			os.WriteFile(d+"/secret", []byte("root only"), 0o600),
			os.WriteFile(d+"/public", []byte("everyone reads"), 0o644),
			os.Mkdir(d+"/closed", 0o700),
			os.WriteFile(d+"/closed/inner", []byte("x"), 0o644),
			os.WriteFile(d+"/world-writable", []byte("w"), 0o666),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, err := range []error{os.Chmod(d+"/secret", 0o600), os.Chmod(d+"/public", 0o644),
			os.Chmod(d+"/closed", 0o700), os.Chmod(d+"/world-writable", 0o666)} {
			if err != nil {
				t.Fatal(err) // explicit chmod: the umask must not decide the modes
			}
		}
		cases := []struct {
			op, path string
			want     syscall.Errno
		}{
			{"read", d + "/public", 0}, // control: nobody can reach the mount at all
			{"readdir", d, 0},
			{"write", d + "/world-writable", 0},
			{"read", d + "/secret", unix.EACCES},
			{"write", d + "/public", unix.EACCES},
			{"create", d + "/new", unix.EACCES},
			{"unlink", d + "/public", unix.EACCES},
			{"chmod", d + "/public", unix.EPERM},
			{"readdir", d + "/closed", unix.EACCES},
			{"read", d + "/closed/inner", unix.EACCES},
		}
		for _, c := range cases {
			if got := asNobody(t, probe, c.op, c.path); got != c.want {
				t.Errorf("as nobody: %s %s = %v (%d), want %v (%d)", c.op, strings.TrimPrefix(c.path, tg.dir), got, got, c.want, c.want)
			}
		}
		wantContent(t, d+"/world-writable", "wx")
	})
}
