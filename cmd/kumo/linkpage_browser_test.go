package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"kumo/internal/hostile"
	"kumo/internal/link"
	"kumo/internal/link/linktest"
	"kumo/internal/linkpage/browsertest"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
)

var linkURL = regexp.MustCompile(`https?://[^\s]+/s/[A-Za-z0-9_-]{22}#[A-Za-z0-9_-]{43}`)

// makeLink runs `kumo link args...` and returns the URL it prints.
func makeLink(t *testing.T, r *runner, args ...string) string {
	t.Helper()
	out := r.ok(append([]string{"link"}, args...)...)
	u := linkURL.FindString(out)
	if u == "" {
		t.Fatalf("kumo link %s printed no link URL:\n%s", strings.Join(args, " "), out)
	}
	return u
}

// noPicker hides the File System Access API: headless chromium has no save
// dialog to drive, so the page streams through its service worker instead.
const noPicker = `delete Window.prototype.showSaveFilePicker; delete window.showSaveFilePicker;`

// TestLinkPageInBrowser is the link page end to end with the built binary:
// `kumo serve`, an account, files put, a folder link made by `kumo link`;
// chromium opens the page, lists the files and downloads one byte-exact; a
// wrong secret, a revoked link and an expired link each show their message.
func TestLinkPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a browser")
	}
	b := browsertest.Start(t)
	bin := buildKumo(t)
	url, _ := startServe(t, bin, "--quota", "200MiB")
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=correct horse"}}
	r.ok("signup", "--server", url, "--email", "page@example.com")

	src := filepath.Join(t.TempDir(), "share")
	os.Mkdir(src, 0o755)
	big := make([]byte, 9<<20+4321)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644)
	os.WriteFile(filepath.Join(src, "note.txt"), []byte("hello from a link\n"), 0o644)
	os.Mkdir(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "deep.txt"), []byte("deep"), 0o644)
	r.ok("put", "-r", src, "/") // the folder itself, as /share
	root := "/share"
	u := makeLink(t, r, root)

	p := b.Open(u, noPicker)
	if st := p.WaitState(30 * time.Second); st != "ready" {
		t.Fatalf("link page state %q: %s", st, p.Text("#error"))
	}
	var rows [][2]string
	p.Eval(`Array.from(document.querySelectorAll('#files tbody tr')).map(tr => [tr.dataset.path, tr.cells[1].dataset.bytes || ''])`, &rows)
	slices.SortFunc(rows, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	want := [][2]string{{"big.bin", fmt.Sprint(len(big))}, {"note.txt", "18"}, {"sub", ""}, {"sub/deep.txt", "4"}}
	if !slices.Equal(rows, want) {
		t.Fatalf("the page lists %v, want %v", rows, want)
	}
	path, name := p.Download(`tr[data-path="big.bin"] button`, 2*time.Minute)
	if got := fileSHA(t, path); got != sha256.Sum256(big) || name != "big.bin" {
		t.Fatalf("downloaded %q with another sha256 than the file put", name)
	}

	// A wrong secret: the same id, another 43-character secret.
	wrong := u[:len(u)-43] + strings.Repeat("A", 43)
	p = b.Open(wrong)
	if st := p.WaitState(30 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), "Wrong secret") {
		t.Errorf("wrong secret: state %q, message %q", st, p.Text("#error"))
	}

	// Another holder of the link, with the server's help (a proxy in front
	// of it here): a file list sealed under the link's key is refused, and
	// a chunk sealed under its content key (its segments decrypt) fails the
	// download.
	hp := hostile.Start(t, url)
	pu := hp.URL + u[len(url):]
	hp.On("GET", "/v1/s/*", hostile.EditJSON(func(pub *api.LinkPublic) {
		f, err := linktest.Reseal(pu, pub.Blob, func(m *link.Manifest) { m.Name = "forged" })
		if err != nil {
			t.Error(err)
		}
		pub.Blob = f
	}))
	p = b.Open(pu, noPicker)
	if st := p.WaitState(30 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), "altered on the server") {
		t.Errorf("forged manifest: state %q, message %q", st, p.Text("#error"))
	}
	hp.Honest()
	_, lid, sec, _ := link.ParseURL(u)
	cl, err := client.New(client.Options{BaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	m, err := pathops.OpenLink(context.Background(), cl, lid, sec, nil)
	if err != nil {
		t.Fatal(err)
	}
	var fc link.Chunk
	for _, e := range m.Entries {
		if e.Path == "big.bin" {
			fc = e.Chunks[1]
		}
	}
	forged := linktest.Forge(fc)
	hp.On("GET", "/v1/s/*/chunks", func(req *hostile.Request, next hostile.Forward) *hostile.Response {
		resp := next(req)
		q, _ := neturl.ParseQuery(req.Query)
		resp.Body = linktest.ReplaceFrame(resp.Body, strings.Split(q.Get("ids"), ","), fc.ID, forged)
		return resp
	})
	p = b.Open(pu, noPicker)
	if st := p.WaitState(30 * time.Second); st != "ready" {
		t.Fatalf("link page through the proxy: state %q: %s", st, p.Text("#error"))
	}
	if end := p.DownloadEnd(`tr[data-path="big.bin"] button`, time.Minute); end != "canceled" {
		t.Errorf("forged chunk: the download ended %q, want canceled", end)
	}
	if st := p.WaitState(30 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), "does not match the link") {
		t.Errorf("forged chunk: state %q, message %q", st, p.Text("#error"))
	}
	hp.Honest()

	// Revoked.
	id := u[strings.LastIndex(u, "/s/")+3 : strings.IndexByte(u, '#')]
	r.ok("link", "rm", id)
	p = b.Open(u)
	if st := p.WaitState(30 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), "revoked") {
		t.Errorf("revoked link: state %q, message %q", st, p.Text("#error"))
	}

	// Expired.
	short := makeLink(t, r, "--expires", "2s", root+"/note.txt")
	time.Sleep(3 * time.Second)
	p = b.Open(short)
	if st := p.WaitState(30 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), "expired") {
		t.Errorf("expired link: state %q, message %q", st, p.Text("#error"))
	}
}

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// TestLinkPageSpeed measures a 1 GiB file link downloaded in chromium against
// `kumo get URL` of the same link, 3 times each, and logs the medians
// (docs/BENCH.md, "Links in a browser"). Not part of make test:
// KUMO_LINK_BENCH=1 go test -run TestLinkPageSpeed -v -timeout 30m ./cmd/kumo
// With KUMO_LINK_SAVER=tempfile the page saves through a temporary file
// instead of its service worker's streamed download (hidden from it).
func TestLinkPageSpeed(t *testing.T) {
	if os.Getenv("KUMO_LINK_BENCH") == "" {
		t.Skip("set KUMO_LINK_BENCH=1 to measure the link page against kumo get (1 GiB, several minutes)")
	}
	size := 1 << 30
	b := browsertest.Start(t)
	bin := buildKumo(t)
	url, serve := startServe(t, bin, "--quota", "4GiB")
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=correct horse"}}
	r.ok("signup", "--server", url, "--email", "speed@example.com")
	src := filepath.Join(t.TempDir(), "big.bin")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, int64(size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var want [32]byte
	h.Sum(want[:0])
	r.ok("put", src, "/big.bin")
	u := makeLink(t, r, "/big.bin")
	scripts := []string{noPicker}
	if os.Getenv("KUMO_LINK_SAVER") == "tempfile" {
		scripts = append(scripts, `Object.defineProperty(Navigator.prototype, 'serviceWorker', {get() { return undefined; }});`)
	}

	median := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	mibs := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	var cli, page []time.Duration
	var p *browsertest.Page
	for i := range 3 {
		dst := filepath.Join(t.TempDir(), "got.bin")
		// Processor time too: kumo get's (a waited-for child of this test),
		// the server's, and all of chromium's processes'.
		getCPU, serveCPU := childrenCPU(), browsertest.ProcCPU(serve.Process.Pid)
		start := time.Now()
		r.ok("get", u, dst)
		cli = append(cli, time.Since(start))
		getCPU, serveCPU = childrenCPU()-getCPU, browsertest.ProcCPU(serve.Process.Pid)-serveCPU
		if fileSHA(t, dst) != want {
			t.Fatal("kumo get: sha256 differs")
		}
		os.Remove(dst)

		// One tab, reloaded for each run, as a person downloading from a
		// link would: the service worker stays in its process, where the
		// page's chunk workers feed it. (A new tab each run leaves it in
		// the first tab's process: the page then lets it fetch itself.)
		if p == nil {
			p = b.Open(u, scripts...)
		} else {
			p.Reload()
		}
		if st := p.WaitState(60 * time.Second); st != "ready" {
			t.Fatalf("page state %q: %s", st, p.Text("#error"))
		}
		pageCPU, pageServeCPU := b.CPU(), browsertest.ProcCPU(serve.Process.Pid)
		start = time.Now()
		path, _ := p.Download(`button.dl`, 10*time.Minute)
		page = append(page, time.Since(start))
		pageCPU, pageServeCPU = b.CPU()-pageCPU, browsertest.ProcCPU(serve.Process.Pid)-pageServeCPU
		if fileSHA(t, path) != want {
			t.Fatal("browser: sha256 differs")
		}
		os.Remove(path)
		var saver, written string
		p.Eval(`document.body.dataset.saver + (document.body.dataset.feed ? ', fed by ' + document.body.dataset.feed + ' (probe: trips of ' + document.body.dataset.probeTrips + ' ms, ' + document.body.dataset.probeTime + ' ms in all)' : '')`, &saver)
		p.Eval(`document.body.dataset.written || ''`, &written)
		if written != "" { // a temporary file: written, then copied by the browser
			written = "; fetched, decrypted and written in " + written + " ms, the rest the browser's copy into its downloads"
		}
		t.Logf("run %d: kumo get %.2fs (%.0f MiB/s; CPU: kumo get %.1fs, kumo serve %.1fs), browser %.2fs (%.0f MiB/s, saved through %s%s; "+
			"CPU: chromium %.1fs, kumo serve %.1fs)", i+1,
			cli[i].Seconds(), mibs(cli[i]), getCPU.Seconds(), serveCPU.Seconds(), page[i].Seconds(), mibs(page[i]), saver, written,
			pageCPU.Seconds(), pageServeCPU.Seconds())
	}
	mc, mp := median(cli), median(page)
	t.Logf("median of 3, 1 GiB: kumo get %.2fs (%.0f MiB/s), browser %.2fs (%.0f MiB/s), browser/get = %.2fx",
		mc.Seconds(), mibs(mc), mp.Seconds(), mibs(mp), mp.Seconds()/mc.Seconds())
	if mp > 2*mc {
		t.Errorf("the browser took %.2fx kumo get's time; the target is within 2x", mp.Seconds()/mc.Seconds())
	}
}

// childrenCPU is the processor time of this process's children that ended
// and were waited for (a kumo get run, say).
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestLinkPagePassword: a link made with `kumo link --password` opens in
// the page. The page asks for the password and derives its keys in the
// browser (Go's Argon2id compiled to WebAssembly, in a worker); a wrong
// password says so and the form stays; the right one lists the file and it
// downloads byte-exact; the server's rate limit (--login-limit) applies to
// the page's attempts and the page says to wait.
func TestLinkPagePassword(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a browser")
	}
	b := browsertest.Start(t)
	bin := buildKumo(t)
	url, _ := startServe(t, bin, "--quota", "100MiB", "--login-limit", "4")
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + t.TempDir(), "KUMO_PASSWORD=correct horse",
		"KUMO_LINK_PASSWORD=open sesame ü"}}
	r.ok("signup", "--server", url, "--email", "pwpage@example.com")
	src := filepath.Join(t.TempDir(), "secret.bin")
	data := make([]byte, 5<<20+77)
	rand.Read(data)
	os.WriteFile(src, data, 0o644)
	r.ok("put", src, "/secret.bin")
	u := makeLink(t, r, "--password", "/secret.bin")

	p := b.Open(u, noPicker)
	if st := p.WaitState(30 * time.Second); st != "password" {
		t.Fatalf("password link: state %q, want the password form (error %q)", st, p.Text("#error"))
	}
	try := func(pw string) string {
		t.Helper()
		var ok bool
		p.Eval(fmt.Sprintf(`(() => { document.getElementById('pw').value = %q; document.getElementById('pwform').requestSubmit(); return true; })()`, pw), &ok)
		time.Sleep(100 * time.Millisecond) // the state leaves "password" at once
		return p.WaitState(60 * time.Second)
	}
	if st := try("open sesame"); st != "password" || !strings.Contains(p.Text("#pwmsg"), "Wrong password") {
		t.Fatalf("wrong password: state %q, message %q %q", st, p.Text("#pwmsg"), p.Text("#error"))
	}
	if st := try("open sesame ü"); st != "ready" {
		t.Fatalf("right password: state %q, message %q %q", st, p.Text("#pwmsg"), p.Text("#error"))
	}
	path, name := p.Download(`button.dl`, 2*time.Minute)
	if fileSHA(t, path) != sha256.Sum256(data) || name != "secret.bin" {
		t.Fatalf("downloaded %q with another sha256 than the file put", name)
	}

	// Wrong guesses until the server's limit (4 a minute per address and
	// per link) refuses: the page says to wait, not "wrong password".
	p = b.Open(u, noPicker)
	if st := p.WaitState(30 * time.Second); st != "password" {
		t.Fatalf("reopened: state %q", st)
	}
	limited := false
	for i := 0; i < 6 && !limited; i++ {
		st := try(fmt.Sprintf("guess %d", i))
		msg := p.Text("#pwmsg")
		switch {
		case st == "password" && strings.Contains(msg, "Too many password attempts"):
			limited = true
		case st != "password" || !strings.Contains(msg, "Wrong password"):
			t.Fatalf("guess %d: state %q, message %q %q", i, st, msg, p.Text("#error"))
		}
	}
	if !limited {
		t.Fatal("six wrong passwords in a row and the page never said the server is limiting attempts")
	}
}
