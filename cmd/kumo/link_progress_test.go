package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: the master side for the test to read,
// the terminal side to give a command as its stderr.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no pseudo-terminal: %v", err)
		}
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// kumo link shows a progress bar on stderr while it reads and hashes the
// linked chunks when stderr is a terminal, and none when it is not. Before,
// it showed nothing either way.
func TestCLILinkProgress(t *testing.T) {
	bin := buildKumo(t)
	url, _ := startServe(t, bin)
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=account pw", "HOME=" + t.TempDir()}}
	r.ok("signup", "--server", url, "--email", "progress@example.com")
	src := filepath.Join(t.TempDir(), "big.bin")
	b := make([]byte, 9<<20) // above the bar's 8 MiB threshold
	rand.Read(b)
	if err := os.WriteFile(src, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r.ok("put", src, "/big.bin")

	// Not a terminal: the URL on stdout, no bar.
	out, errs, err := r.run("link", "/big.bin")
	if err != nil || !strings.HasPrefix(out, url+"/s/") || strings.Contains(errs, "%") {
		t.Fatalf("kumo link, stderr not a terminal: %v\nstdout: %s\nstderr: %q", err, out, errs)
	}

	// A terminal: a bar that reaches 100 % of the 9 MiB, then the URL.
	master, tty := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "link", "/big.bin")
	cmd.Env = append(append(os.Environ(), "XDG_DATA_HOME="+t.TempDir()), r.env...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the command holds it now; the master reads EIO once it exits
	got := make(chan []byte, 1)
	go func() {
		var all bytes.Buffer
		_, err := io.Copy(&all, master)
		if err != nil && !errors.Is(err, syscall.EIO) {
			t.Logf("reading the terminal: %v", err)
		}
		got <- all.Bytes()
	}()
	err = cmd.Wait()
	bar := string(<-got)
	if err != nil || !strings.HasPrefix(stdout.String(), url+"/s/") {
		t.Fatalf("kumo link on a terminal: %v\nstdout: %s\nstderr: %q", err, stdout.String(), bar)
	}
	if !strings.Contains(bar, "link") || !strings.Contains(bar, "100.0%") || !strings.Contains(bar, "9 MiB / 9 MiB") {
		t.Fatalf("kumo link on a terminal showed no progress bar on stderr: %q", bar)
	}
}
