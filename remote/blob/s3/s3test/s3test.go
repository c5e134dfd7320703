// Package s3test runs a real S3 server for tests: versitygw with its posix
// backend over a temporary directory, on a random loopback port. `make test`
// installs it once into the user cache ($KUMO_VERSITYGW); by hand:
// `go install github.com/versity/versitygw/cmd/versitygw@v1.8.0`. Without it,
// tests are skipped, except when CI=true or $KUMO_VERSITYGW is set (make
// test), where they fail.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The root credentials every test server uses. StartVersity puts them in the
// AWS environment variables so s3.Open (and a `kumo serve` child process) finds them.
const (
	AccessKey = "kumotestaccess"
	SecretKey = "kumotestsecret0123456789"
	Bucket    = "kumo-test"
	Prefix    = "chunks"
	Region    = "us-east-1"
)

// Versity is one running versitygw.
type Versity struct {
	URL  string // s3://kumo-test/chunks?endpoint=127.0.0.1:PORT&... for s3.Open
	Addr string // 127.0.0.1:PORT
	Root string // the posix backend's directory

	t       testing.TB
	bin     string
	logFile string
	mu      sync.Mutex
	cmd     *exec.Cmd
	waitErr chan error
}

// Version is the versitygw release the tests are written against.
const Version = "v1.8.0"

// Binary finds versitygw: $KUMO_VERSITYGW (set by make test), the user cache
// where make test installs it, PATH, or $(go env GOPATH)/bin; "" if absent.
func Binary() string {
	if p := os.Getenv("KUMO_VERSITYGW"); p != "" {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
		return ""
	}
	if c, err := os.UserCacheDir(); err == nil {
		p := filepath.Join(c, "kumo-test", "bin", "versitygw-"+Version)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var dirs []string
	if gp := os.Getenv("GOPATH"); gp != "" {
		dirs = append(dirs, filepath.SplitList(gp)...)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		dirs = append(dirs, filepath.SplitList(strings.TrimSpace(string(out)))...)
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "bin", "versitygw")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// StartVersity starts a server with an empty bucket and returns its blob URL,
// stop (kill the server, keeping its data) and restart (start it again on the
// same port and data). It is killed when the test ends.
func StartVersity(t testing.TB) (url string, stop func(), restart func()) {
	v := Start(t)
	return v.URL, v.Stop, v.Restart
}

// Start is StartVersity returning the whole handle.
func Start(t testing.TB) *Versity {
	t.Helper()
	bin := Binary()
	if bin == "" {
		msg := "versitygw not found (make test installs it into ~/.cache/kumo-test/bin; by hand: " +
			"go install github.com/versity/versitygw/cmd/versitygw@" + Version + ")"
		if p := os.Getenv("KUMO_VERSITYGW"); p != "" {
			msg = "versitygw not found at $KUMO_VERSITYGW=" + p + " (make test-servers installs it)"
		}
		if os.Getenv("CI") == "true" || os.Getenv("KUMO_VERSITYGW") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	// Process-wide, but every test server shares these values, so concurrent
	// tests agree (t.Setenv would forbid parallel tests).
	os.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	os.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)

	dir := t.TempDir()
	v := &Versity{t: t, bin: bin, Root: filepath.Join(dir, "root"), logFile: filepath.Join(dir, "versitygw.log")}
	if err := os.Mkdir(v.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Stop)
	var err error
	for try := 0; try < 3; try++ { // a freshly picked free port can be taken before we bind it
		if v.Addr, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if err = v.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start versitygw: %v\n%s", err, v.log())
	}
	if err := v.makeBucket(); err != nil {
		t.Fatalf("versitygw: create bucket: %v\n%s", err, v.log())
	}
	v.URL = fmt.Sprintf("s3://%s/%s?endpoint=%s&region=%s&insecure=1&path_style=1", Bucket, Prefix, v.Addr, Region)
	return v
}

// CommandLine is how the server is started (for docs and debugging).
func (v *Versity) CommandLine() []string {
	return []string{v.bin, "--port", v.Addr, "--access", AccessKey, "--secret", SecretKey,
		"--region", Region, "--quiet", "posix", v.Root}
}

func (v *Versity) start() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(v.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := v.CommandLine()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", v.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-waitErr:
			return fmt.Errorf("versitygw exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-waitErr
			return fmt.Errorf("versitygw did not listen on %s within 15s", v.Addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	v.cmd, v.waitErr = cmd, waitErr
	return nil
}

// Stop kills the server (like a crash); its data stays for Restart.
func (v *Versity) Stop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil {
		return
	}
	v.cmd.Process.Kill()
	<-v.waitErr
	v.cmd = nil
}

// Restart starts a stopped server again on the same address and data.
func (v *Versity) Restart() {
	v.t.Helper()
	var err error
	for try := 0; try < 50; try++ { // the port may linger briefly after a kill
		if err = v.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	v.t.Errorf("restart versitygw: %v\n%s", err, v.log())
}

// ObjectPath is the file holding a blob key on the posix backend, for tests that
// delete or corrupt a chunk behind the store's back.
func (v *Versity) ObjectPath(key string) string {
	return filepath.Join(v.Root, Bucket, Prefix, filepath.FromSlash(key))
}

// Client is a plain minio client for the server, for direct inspection.
func (v *Versity) Client() (*minio.Client, error) {
	return minio.New(v.Addr, &minio.Options{
		Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Region:       Region,
		BucketLookup: minio.BucketLookupPath,
	})
}

func (v *Versity) makeBucket() error {
	c, err := v.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.MakeBucket(ctx, Bucket, minio.MakeBucketOptions{Region: Region})
}

func (v *Versity) log() string {
	b, _ := os.ReadFile(v.logFile)
	return "versitygw log:\n" + string(bytes.TrimSpace(b))
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
