package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/fs/mountpoint"
	"kumo/internal/hostile"
	"kumo/internal/link"
	"kumo/internal/link/linktest"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
)

// serveLogged runs kumo serve with its (debug, JSON) log in a file and
// returns its URL, metrics URL and the log's path.
func serveLogged(t *testing.T, bin, data string) (url, metrics, logPath string) {
	t.Helper()
	logPath = filepath.Join(t.TempDir(), "serve.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--log-format", "json",
		"--log-level", "debug", "--metrics", "127.0.0.1:0", "--quota", "1GiB")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		lf.Close()
	})
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		for _, line := range bytes.Split(b, []byte("\n")) {
			var rec map[string]any
			if json.Unmarshal(line, &rec) != nil {
				continue
			}
			if v, ok := rec["metrics_url"].(string); ok {
				metrics = v
			}
			if v, ok := rec["url"].(string); ok {
				url = v
			}
		}
		if url != "" && metrics != "" {
			return url, metrics, logPath
		}
	}
	t.Fatal("serve did not report its address")
	return
}

// sameTree fails unless got holds exactly the files of want, byte for byte.
func sameTree(t *testing.T, want, got string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		gp := filepath.Join(got, rel)
		if d.IsDir() {
			if st, err := os.Stat(gp); err != nil || !st.IsDir() {
				return fmt.Errorf("%s: not a directory: %v", gp, err)
			}
			return nil
		}
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(gp)
		if err != nil || !bytes.Equal(a, b) {
			return fmt.Errorf("%s: %d bytes, want %d (%v)", rel, len(b), len(a), err)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var count int
	filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			count++
		}
		return nil
	})
	if count != n {
		t.Fatalf("%s holds %d files, want %d", got, count, n)
	}
	return n
}

func emptyDir(t *testing.T, dir string) {
	t.Helper()
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("%s after a failed get: %v %v", dir, ents, err)
	}
}

// TestCLILinks: kumo link makes links to a file and to a folder of 1,000
// files; kumo get with no account downloads them byte exact; expired,
// revoked, wrong-secret and wrong-password links fail clearly and write
// nothing; the links' secrets and the password are nowhere in the server's
// data directory, log or metrics.
func TestCLILinks(t *testing.T) {
	bin := buildKumo(t)
	data := t.TempDir()
	url, metricsURL, logPath := serveLogged(t, bin, data)
	const linkPW = "canary-link-password-7f3a"
	owner := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=account pw", "HOME=" + t.TempDir()}}
	owner.ok("signup", "--server", url, "--email", "owner@example.com")

	src := filepath.Join(t.TempDir(), "folder")
	for i := 0; i < 1000; i++ {
		b := make([]byte, i*7%3000)
		rand.Read(b)
		p := filepath.Join(src, fmt.Sprintf("d%02d", i%10), fmt.Sprintf("f%04d.txt", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 5<<20+11)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big.bin"), big, 0o600)
	owner.ok("put", "-r", src, "/")

	folderURL := strings.TrimSpace(owner.ok("link", "/folder"))
	fileURL := strings.TrimSpace(owner.ok("link", "/folder/big.bin", "--expires", "7d"))
	pwRunner := &runner{t: t, bin: bin, env: append(append([]string{}, owner.env...), "KUMO_LINK_PASSWORD="+linkPW)}
	pwURL := strings.TrimSpace(pwRunner.ok("link", "/folder/big.bin", "--password"))
	for _, u := range []string{folderURL, fileURL, pwURL} {
		if _, _, _, err := link.ParseURL(u); err != nil || !strings.HasPrefix(u, url+"/s/") {
			t.Fatalf("kumo link printed %q: %v", u, err)
		}
	}
	if ls := owner.ok("link", "ls"); strings.Count(ls, "\n") != 4 || !strings.Contains(ls, "yes") {
		t.Fatalf("link ls:\n%s", ls)
	}

	// A reader with no account at all.
	reader := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "HOME=" + t.TempDir()}}
	dst := t.TempDir()
	start := time.Now()
	reader.ok("get", folderURL, dst)
	t.Logf("kumo get of a 1,001-file folder link: %v", time.Since(start))
	if n := sameTree(t, src, filepath.Join(dst, "folder")); n != 1001 {
		t.Fatalf("%d files", n)
	}
	reader.ok("get", fileURL, filepath.Join(dst, "copy.bin"))
	if b, _ := os.ReadFile(filepath.Join(dst, "copy.bin")); !bytes.Equal(b, big) {
		t.Fatal("file link: bytes differ")
	}
	pwReader := &runner{t: t, bin: bin, env: append(append([]string{}, reader.env...), "KUMO_LINK_PASSWORD="+linkPW)}
	pwReader.ok("get", pwURL, filepath.Join(dst, "pw.bin"))
	if b, _ := os.ReadFile(filepath.Join(dst, "pw.bin")); !bytes.Equal(b, big) {
		t.Fatal("password link: bytes differ")
	}

	// Failures: a clear message, nothing written.
	empty := t.TempDir()
	wrongPW := &runner{t: t, bin: bin, env: append(append([]string{}, reader.env...), "KUMO_LINK_PASSWORD=nope")}
	wrongPW.fails("wrong password", "get", pwURL, empty)
	reader.fails("no password", "get", pwURL, empty) // stdin is not a terminal
	var other link.Secret
	rand.Read(other[:])
	wrongSecret := folderURL[:strings.Index(folderURL, "#")+1] + other.String()
	reader.fails("does not open with its secret", "get", wrongSecret, empty)
	reader.fails("no #SECRET part", "get", folderURL[:strings.Index(folderURL, "#")], empty)
	// Long enough that a loaded machine makes the link before it expires
	// (1 s failed once in CI: "the expiry is in the past").
	made := time.Now()
	expURL := strings.TrimSpace(owner.ok("link", "/folder/big.bin", "--expires", "5s"))
	time.Sleep(time.Until(made.Add(5100 * time.Millisecond)))
	reader.fails("expired", "get", expURL, empty)
	owner.ok("link", "rm", folderURL)
	reader.fails("revoked", "get", folderURL, empty)
	emptyDir(t, empty)
	owner.fails("usage", "link", "rm")

	// The canary: no secret, no password in the server's files, log or metrics.
	var canaries [][]byte
	for _, u := range []string{folderURL, fileURL, pwURL, expURL} {
		_, _, s, _ := link.ParseURL(u)
		canaries = append(canaries, []byte(s.String()), s[:], []byte(base64.StdEncoding.EncodeToString(s[:])))
	}
	canaries = append(canaries, []byte(linkPW))
	check := func(what string, b []byte) {
		for _, c := range canaries {
			if bytes.Contains(b, c) {
				t.Errorf("%s holds a link secret or password (%q)", what, c)
			}
		}
	}
	check("metrics", []byte(scrape(t, metricsURL)))
	logb, _ := os.ReadFile(logPath)
	if !bytes.Contains(logb, []byte("/v1/s/")) {
		t.Fatal("the debug log has no link requests: the canary would prove nothing")
	}
	check("log", logb)
	files := 0
	filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			check(p, b)
			files++
		}
		return nil
	})
	if files < 3 {
		t.Fatalf("only %d files in the data dir", files)
	}
}

// TestCLILinkForgeries: another holder of a link, with the server's help,
// serves a manifest sealed under the link's key, or a chunk sealed under
// its content key with other bytes (every segment authenticates). kumo get
// refuses both and writes nothing; kumo mount URL does not mount the forged
// manifest, and a read of the forged chunk is EIO.
func TestCLILinkForgeries(t *testing.T) {
	bin := buildKumo(t)
	url, _, _ := serveLogged(t, bin, t.TempDir())
	owner := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=account pw", "HOME=" + t.TempDir()}}
	owner.ok("signup", "--server", url, "--email", "owner@example.com")
	src := filepath.Join(t.TempDir(), "folder")
	os.MkdirAll(src, 0o755)
	big := make([]byte, 6<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644)
	os.WriteFile(filepath.Join(src, "note.txt"), []byte("note"), 0o644)
	owner.ok("put", "-r", src, "/")
	realURL := strings.TrimSpace(owner.ok("link", "/folder"))

	p := hostile.Start(t, url)
	u := p.URL + realURL[len(url):]
	_, id, s, err := link.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Options{BaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	m, err := pathops.OpenLink(context.Background(), cl, id, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	var c link.Chunk
	for _, e := range m.Entries {
		if e.Path == "big.bin" {
			c = e.Chunks[1]
		}
	}
	forged := linktest.Forge(c)

	reader, mnt, mounted := linkReader(t, bin)
	empty := t.TempDir()
	// (a) The manifest.
	p.On("GET", "/v1/s/*", hostile.EditJSON(func(pub *api.LinkPublic) {
		f, err := linktest.Reseal(u, pub.Blob, func(m *link.Manifest) { m.Name = "forged" })
		if err != nil {
			t.Error(err)
		}
		pub.Blob = f
	}))
	reader.fails("does not open with its secret", "get", u, empty)
	needFUSE(t)
	reader.fails("does not open with its secret", "mount", u, mnt)
	if _, ok, _ := mountpoint.Lookup(mnt); ok {
		t.Fatal("a forged manifest mounted")
	}
	p.Honest()

	// (b) A chunk, on both chunk routes (kumo get asks several a request,
	// a mount one).
	p.On("GET", "/v1/s/*/chunks", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		resp := next(req)
		q, _ := neturl.ParseQuery(req.Query)
		resp.Body = linktest.ReplaceFrame(resp.Body, strings.Split(q.Get("ids"), ","), c.ID, forged)
		return resp
	})
	p.On("GET", "/v1/s/*/chunks/"+c.ID, func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		resp := next(req)
		if resp.Status == 200 {
			resp.Body = forged
		}
		return resp
	})
	reader.fails("does not match the link", "get", u, empty)
	emptyDir(t, empty)
	reader.ok("mount", u, mnt)
	*mounted = true
	fh, err := os.Open(filepath.Join(mnt, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := fh.ReadAt(buf, 5<<20); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a forged chunk in a mounted link: %v, want EIO", err)
	}
	if _, err := fh.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, big[:4096]) {
		t.Errorf("read of an honest chunk: %v", err)
	}
	fh.Close()
	reader.ok("unmount", mnt)
	*mounted = false
	p.Honest()
	reader.ok("get", u, empty)
	if b, _ := os.ReadFile(filepath.Join(empty, "folder", "big.bin")); !bytes.Equal(b, big) {
		t.Fatal("big.bin differs once the server is honest")
	}
}
