package linkpage_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/link"
	"kumo/internal/link/linktest"
	"kumo/internal/linkpage"
	"kumo/internal/linkpage/browsertest"
)

// goLink is a link sealed by the Go code (internal/link, internal/chunk),
// answered by a minimal stand-in of the public link API, so the page's
// JavaScript is checked byte for byte against the Go reader's format, with
// damage the real server would never serve. The real server, CLI and page
// together are tested in cmd/kumo (TestLinkPageInBrowser).
type goLink struct {
	id       link.ID
	secret   link.Secret
	blob     []byte
	manifest *link.Manifest
	chunks   map[string][]byte
	files    map[string][]byte
	status   int // answer for the link, 0: 200

	mu     sync.Mutex
	single int                          // requests of one chunk
	batch  int                          // requests of several (GET /v1/s/{id}/chunks?ids=...)
	tamper func(frames [][]byte) []byte // a hostile server's batch answer, from the true frames
}

func newGoLink(t *testing.T, files map[string][]byte, dirs ...string) *goLink {
	t.Helper()
	var idKey, contentKey [32]byte
	rand.Read(idKey[:])
	rand.Read(contentKey[:])
	c := chunk.NewCipher(idKey, contentKey)
	gl := &goLink{chunks: map[string][]byte{}, files: files}
	var err error
	if gl.id, err = link.NewID(); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	m := &link.Manifest{V: link.ManifestVersion, Kind: "dir", Name: "shared", Created: now}
	for _, d := range dirs {
		m.Entries = append(m.Entries, link.Entry{Path: d, Type: "dir", Mode: 0o755, Mtime: now})
	}
	for _, p := range sortedKeys(files) {
		data := files[p]
		e := link.Entry{Path: p, Type: "file", Mode: 0o644, Mtime: now, Size: int64(len(data))}
		for off := 0; off < len(data); off += chunk.Size {
			piece := data[off:min(off+chunk.Size, len(data))]
			if bytes.Count(piece, []byte{0}) == len(piece) {
				e.Chunks = append(e.Chunks, link.Chunk{N: len(piece)}) // a hole
				continue
			}
			id := c.ID(piece)
			key := c.ContentKey(id)
			sealed := c.Seal(nil, id, piece)
			gl.chunks[id.String()] = sealed
			e.Chunks = append(e.Chunks, link.Chunk{ID: id.String(), Key: hex.EncodeToString(key[:]), Sum: link.ChunkSum(sealed), N: len(piece)})
		}
		m.Entries = append(m.Entries, e)
	}
	if gl.secret, gl.blob, err = link.Seal(gl.id, m, func(s link.Secret) (link.Key, error) { return link.KeyNoPassword(gl.id, s), nil }); err != nil {
		t.Fatal(err)
	}
	gl.manifest = m
	return gl
}

func sortedKeys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks { // few keys: insertion sort keeps the test free of helpers
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

// Scripts run before a page's own: headless chromium has no save dialog to
// drive (noPicker hides it), and noWorker makes the page save without its
// service worker.
const (
	noPicker = `delete Window.prototype.showSaveFilePicker; delete window.showSaveFilePicker;`
	noWorker = `Object.defineProperty(Navigator.prototype, 'serviceWorker', {get() { return undefined; }});`
)

// open serves gl and opens its page, with the secret, in a new browser with
// the picker hidden, once the page is ready.
func (gl *goLink) open(t *testing.T) (*httptest.Server, *browsertest.Browser, string, *browsertest.Page) {
	t.Helper()
	hs := gl.serve(t)
	b := browsertest.Start(t)
	url := hs.URL + "/s/" + gl.id.String() + "#" + gl.secret.String()
	p := b.Open(url, noPicker)
	if st := p.WaitState(20 * time.Second); st != "ready" {
		t.Fatalf("page state %q: %s", st, p.Text("#error"))
	}
	return hs, b, url, p
}

func (gl *goLink) serve(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("/s/", linkpage.Handler())
	apiErr := func(w http.ResponseWriter) bool {
		if gl.status == 0 {
			return false
		}
		code := map[int]string{404: "link_not_found", 410: "link_expired"}[gl.status]
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(gl.status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": code}})
		return true
	}
	mux.HandleFunc("GET /v1/s/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != gl.id.String() {
			http.NotFound(w, r)
			return
		}
		if !apiErr(w) {
			json.NewEncoder(w).Encode(map[string]any{"blob": gl.blob})
		}
	})
	mux.HandleFunc("GET /v1/s/{id}/chunks/{chunk}", func(w http.ResponseWriter, r *http.Request) {
		b, ok := gl.chunks[r.PathValue("chunk")]
		if r.PathValue("id") != gl.id.String() || !ok {
			http.NotFound(w, r)
			return
		}
		if !apiErr(w) {
			gl.mu.Lock()
			gl.single++
			gl.mu.Unlock()
			w.Write(b)
		}
	})
	// Several chunks in one answer, as remote/server frames them: each
	// chunk's length (4 bytes, big-endian), then its bytes.
	mux.HandleFunc("GET /v1/s/{id}/chunks", func(w http.ResponseWriter, r *http.Request) {
		var frames [][]byte
		for _, c := range strings.Split(r.URL.Query().Get("ids"), ",") {
			b, ok := gl.chunks[c]
			if r.PathValue("id") != gl.id.String() || !ok {
				http.NotFound(w, r)
				return
			}
			frames = append(frames, binary.BigEndian.AppendUint32(nil, uint32(len(b))), b)
		}
		if apiErr(w) {
			return
		}
		gl.mu.Lock()
		gl.batch++
		tamper := gl.tamper
		gl.mu.Unlock()
		body := bytes.Join(frames, nil)
		if tamper != nil {
			body = tamper(frames)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestPageAgainstGoSealer opens Go-sealed links in chromium: the folder is
// listed, a multi-chunk file with a hole downloads byte-exact through the
// service worker and through the Blob fallback, and a damaged chunk, a wrong,
// missing or malformed secret and an expired or revoked link each show
// their message.
func TestPageAgainstGoSealer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	big := randBytes(2*chunk.Size + 12345)
	clear(big[chunk.Size : 2*chunk.Size]) // the middle chunk is a hole
	files := map[string][]byte{"a.txt": []byte("hello\n"), "sub/big.bin": big}
	gl := newGoLink(t, files, "sub")
	hs, b, url, p := gl.open(t)
	var rows [][2]string
	p.Eval(`Array.from(document.querySelectorAll('#files tbody tr')).map(tr => [tr.dataset.path, tr.cells[1].dataset.bytes || ''])`, &rows)
	want := [][2]string{{"sub", ""}, {"a.txt", "6"}, {"sub/big.bin", "8400953"}}
	if len(rows) != len(want) {
		t.Fatalf("listed %v, want %v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Fatalf("listed %v, want %v", rows, want)
		}
	}
	// The page saves through its service worker's streamed download where
	// it can; hide it to test the temporary file of the origin's private
	// file system, and that too for the Blob.
	noTempFile := `delete StorageManager.prototype.getDirectory;`
	for _, saver := range []string{"worker", "tempfile", "blob"} {
		scripts := []string{noPicker}
		if saver != "worker" {
			scripts = append(scripts, noWorker)
		}
		if saver == "blob" {
			scripts = append(scripts, noTempFile)
		}
		p := b.Open(url, scripts...)
		if st := p.WaitState(20 * time.Second); st != "ready" {
			t.Fatalf("%s: page state %q: %s", saver, st, p.Text("#error"))
		}
		path, name := p.Download(`tr[data-path="sub/big.bin"] button`, 60*time.Second)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(big) || name != "big.bin" {
			t.Fatalf("%s: downloaded %q, %d bytes, sha256 differs: %v", saver, name, len(got), sha256.Sum256(got) != sha256.Sum256(big))
		}
		var used string
		p.Eval(`document.body.dataset.saver`, &used)
		if st := p.WaitState(10 * time.Second); used != saver || st != "saved" {
			t.Fatalf("saved with %q (state %q), want %q", used, st, saver)
		}
	}

	// Messages, not a blank page.
	var wrong link.Secret
	rand.Read(wrong[:])
	for _, tc := range []struct{ name, url, want string }{
		{"wrong secret", hs.URL + "/s/" + gl.id.String() + "#" + wrong.String(), "Wrong secret"},
		{"no secret", hs.URL + "/s/" + gl.id.String(), "has no secret"},
		{"malformed secret", hs.URL + "/s/" + gl.id.String() + "#abc!", "malformed"},
		{"unknown link", hs.URL + "/s/AAAAAAAAAAAAAAAAAAAAAA#" + gl.secret.String(), "does not exist or was revoked"},
	} {
		p := b.Open(tc.url)
		if st := p.WaitState(20 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), tc.want) {
			t.Errorf("%s: state %q, message %q, want %q", tc.name, st, p.Text("#error"), tc.want)
		}
	}
	gl.status = 410
	p = b.Open(url)
	if st := p.WaitState(20 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), "expired") {
		t.Errorf("expired: state %q, message %q", st, p.Text("#error"))
	}
	gl.status = 0

	// A damaged chunk: the download stops with a message, never a wrong file.
	for id, sealed := range gl.chunks {
		if len(sealed) > 1000 {
			sealed[len(sealed)/2] ^= 1
			gl.chunks[id] = sealed
			break
		}
	}
	temps := func(p *browsertest.Page) (names []string) {
		p.Eval(`(async () => { const n = []; for await (const k of (await navigator.storage.getDirectory()).keys()) n.push(k); return n; })()`, &names)
		return names
	}
	for _, scripts := range [][]string{{noPicker}, {noPicker, noWorker}} {
		p = b.Open(url, scripts...)
		if st := p.WaitState(20 * time.Second); st != "ready" {
			t.Fatalf("page state %q: %s", st, p.Text("#error"))
		}
		var kept []string
		if len(scripts) == 2 {
			kept = temps(p) // the good save's temporary file, kept for the browser's copy
		}
		sel := `tr[data-path="sub/big.bin"] button`
		if len(scripts) == 1 { // the streamed download started must end failed
			if end := p.DownloadEnd(sel, 30*time.Second); end != "canceled" {
				t.Errorf("damaged chunk: the service worker's download ended %q", end)
			}
		} else {
			p.Eval(`document.querySelector('`+sel+`').click(), true`, new(bool))
		}
		if st := p.WaitState(30 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), "failed to decrypt") {
			t.Errorf("damaged chunk (%d scripts): state %q, message %q", len(scripts), st, p.Text("#error"))
		}
		if len(scripts) == 2 {
			if left := temps(p); len(left) != 1 || len(kept) != 1 {
				t.Errorf("temporary files %v before the failed save, %v after; want the good save's one, both times", kept, left)
			}
		}
	}
}

// checkProbe checks how the page decided where its service worker runs
// (page.js, nearby): one 16 MiB round trip decides unless the best so far
// is between probeNear and probeFar ms, then at most 3; it logs the trips
// and the whole probe's time. The old probe always made 3 trips, 0.35-0.53
// s each when the service worker ran in another process.
func checkProbe(t *testing.T, p *browsertest.Page, what string) {
	t.Helper()
	const probeNear, probeFar = 60, 180 // page.js: NEAR, FAR
	var trips, total string
	p.Eval(`document.body.dataset.probeTrips || ''`, &trips)
	p.Eval(`document.body.dataset.probeTime || ''`, &total)
	f := strings.Fields(trips)
	if len(f) == 0 || len(f) > 3 {
		t.Errorf("%s: probe trips %q, want 1 to 3", what, trips)
		return
	}
	best := 1e9
	for i, s := range f {
		ms, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Errorf("%s: probe trips %q: %v", what, trips, err)
			return
		}
		best = min(best, ms)
		near := best >= probeNear && best <= probeFar
		if i < len(f)-1 && !near {
			t.Errorf("%s: probe trips %q: went on after a best of %.1f ms, which decides", what, trips, best)
		}
		if i == len(f)-1 && len(f) < 3 && near {
			t.Errorf("%s: probe trips %q: stopped at a best of %.1f ms, which does not decide", what, trips, best)
		}
	}
	t.Logf("%s: probe %s ms in all, trips of 16 MiB: %s ms", what, total, trips)
}

// TestPageBatchTampering: the page fetches a file's chunks several a request
// (GET /v1/s/{id}/chunks?ids=...), and whatever a hostile server does to
// such an answer (chunks swapped, an answer cut short or too long, a frame's
// length wrong) the download stops with the page's message: the service
// worker's streamed download ends failed, the temporary file is removed;
// never wrong bytes in a complete-looking file.
func TestPageBatchTampering(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	data := randBytes(3*chunk.Size + 777) // 4 distinct chunks, one request
	gl := newGoLink(t, map[string][]byte{"f.bin": data})
	_, b, url, p := gl.open(t)
	path, _ := p.Download(`tr[data-path="f.bin"] button`, 60*time.Second)
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes (%v), not the file's", len(got), err)
	}
	gl.mu.Lock()
	single, batch := gl.single, gl.batch
	gl.mu.Unlock()
	if single != 0 || batch != 1 {
		t.Fatalf("the page made %d one-chunk and %d batch requests for 4 chunks, want 0 and 1", single, batch)
	}
	os.Remove(path)
	// The first tab: the service worker started in its process, and the
	// page's chunk workers fed it the plaintext.
	var feed string
	p.Eval(`document.body.dataset.feed || ''`, &feed)
	if feed != "workers" {
		t.Fatalf("the first tab's download was fed by %q, want the page's chunk workers", feed)
	}
	checkProbe(t, p, "first tab")
	// The service worker answers a probe's buffers until the page says
	// 'end', then closes its end of the port: nothing comes back after.
	var echoed []bool
	p.Eval(`(async () => {
		const sw = (await navigator.serviceWorker.getRegistration('/s/_/dl/')).active;
		const ch = new MessageChannel();
		sw.postMessage({ type: 'probe' }, [ch.port2]);
		const trip = () => new Promise((resolve) => {
			const t = setTimeout(() => resolve(false), 2000);
			ch.port1.onmessage = () => { clearTimeout(t); resolve(true); };
			const b = new ArrayBuffer(8);
			ch.port1.postMessage(b, [b]);
		});
		const before = await trip();
		ch.port1.postMessage('end');
		const after = await trip();
		ch.port1.close();
		return [before, after];
	})()`, &echoed)
	if len(echoed) != 2 || !echoed[0] || echoed[1] {
		t.Errorf("a probe's buffer echoed before and after 'end': %v, want [true false]", echoed)
	}
	first := p

	temps := func(p *browsertest.Page) (names []string) {
		p.Eval(`(async () => { const n = []; for await (const k of (await navigator.storage.getDirectory()).keys()) n.push(k); return n; })()`, &names)
		return names
	}
	for _, tc := range []struct {
		name, want string
		tamper     func(f [][]byte) []byte
	}{
		{"swapped chunks", "failed to decrypt", func(f [][]byte) []byte { // same lengths, each other's bytes
			f[1], f[3] = f[3], f[1]
			return bytes.Join(f, nil)
		}},
		{"a chunk's bytes in another's frame", "failed to decrypt", func(f [][]byte) []byte {
			f[3] = f[1]
			return bytes.Join(f, nil)
		}},
		{"a chunk forged under its content key", "does not match the link", func(f [][]byte) []byte {
			// What another holder of the link can seal: every segment
			// authenticates, the sum in the manifest does not match.
			f[3] = linktest.Forge(gl.manifest.Entries[0].Chunks[1])
			return bytes.Join(f, nil)
		}},
		{"cut short", "wrong size", func(f [][]byte) []byte { b := bytes.Join(f, nil); return b[:len(b)-1000] }},
		{"cut at a frame", "wrong size", func(f [][]byte) []byte { return bytes.Join(f[:6], nil) }},
		{"a byte too many", "wrong size", func(f [][]byte) []byte { return append(bytes.Join(f, nil), 0) }},
		{"a frame's length", "wrong size", func(f [][]byte) []byte {
			f[2] = binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(f[2])-16)
			return bytes.Join(f, nil)
		}},
	} {
		gl.mu.Lock()
		gl.tamper = tc.tamper
		gl.mu.Unlock()
		// Through the service worker (the download it started ends failed,
		// never complete), fed by the page's chunk workers (the first tab,
		// reloaded) or fetching itself (a new tab: it stays in the first
		// tab's process), and through a temporary file (none is left).
		for _, saver := range []string{"fed", "worker", "tempfile"} {
			scripts := []string{noPicker}
			if saver == "tempfile" {
				scripts = append(scripts, noWorker)
			}
			var p *browsertest.Page
			if saver == "fed" {
				p = first
				p.Reload()
			} else {
				p = b.Open(url, scripts...)
			}
			if st := p.WaitState(20 * time.Second); st != "ready" {
				t.Fatalf("%s, %s: page state %q: %s", tc.name, saver, st, p.Text("#error"))
			}
			sel := `tr[data-path="f.bin"] button`
			if saver != "tempfile" {
				if end := p.DownloadEnd(sel, 30*time.Second); end != "canceled" {
					t.Errorf("%s, %s: the service worker's download ended %q", tc.name, saver, end)
				}
				var feed string
				p.Eval(`document.body.dataset.feed || ''`, &feed)
				// A new tab's page lets the service worker fetch unless it
				// had stopped meanwhile and started beside the new tab:
				// chromium's choice, so only the first tab's is checked.
				if saver == "fed" && feed != "workers" {
					t.Errorf("%s, %s: the download was fed by %q, want the page's chunk workers", tc.name, saver, feed)
				}
				t.Logf("%s, %s: fed by %s", tc.name, saver, feed)
				checkProbe(t, p, tc.name+", "+saver)
			} else {
				p.Eval(`document.querySelector('`+sel+`').click(), true`, new(bool))
			}
			if st := p.WaitState(30 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), tc.want) {
				t.Errorf("%s, %s: state %q, message %q, want %q", tc.name, saver, st, p.Text("#error"), tc.want)
			}
			if saver == "tempfile" {
				if left := temps(p); len(left) != 0 {
					t.Errorf("%s: temporary files %v left, want none", tc.name, left)
				}
			}
		}
	}
}

// TestPageForgedManifest: another holder of the link can seal another file
// list under the link's key (every holder derives it from the secret), and
// a colluding server serve it: the page refuses it, as the secret does not
// commit to it, and lists nothing. A blob of the old format (0x01) is
// refused with what to do.
func TestPageForgedManifest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	gl := newGoLink(t, map[string][]byte{"a.txt": []byte("hello\n"), "b.bin": randBytes(100000)})
	hs := gl.serve(t)
	b := browsertest.Start(t)
	url := hs.URL + "/s/" + gl.id.String() + "#" + gl.secret.String()
	good := gl.blob
	forged, err := linktest.Reseal(url, good, func(m *link.Manifest) {
		m.Entries[0].Path = "a-forged.txt"
		m.Entries[1].Chunks[0].Key = strings.Repeat("ab", 32) // the forger's own key for it
	})
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Clone(good)
	old[0] = 1
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"forged manifest", forged, "altered on the server"},
		{"old format", old, "Ask its owner to make it again"},
	} {
		gl.blob = tc.blob
		p := b.Open(url, noPicker)
		if st := p.WaitState(20 * time.Second); st != "error" || !strings.Contains(p.Text("#error"), tc.want) {
			t.Errorf("%s: state %q, message %q, want %q", tc.name, st, p.Text("#error"), tc.want)
		}
		var rows int
		p.Eval(`document.querySelectorAll('#files tbody tr').length`, &rows)
		if rows != 0 {
			t.Errorf("%s: %d files listed", tc.name, rows)
		}
	}
	gl.blob = good
	if p := b.Open(url, noPicker); p.WaitState(20*time.Second) != "ready" {
		t.Fatalf("the true blob: %s", p.Text("#error"))
	}
}
