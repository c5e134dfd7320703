package linkpage_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/link"
	"kumo/internal/linkpage/browsertest"
)

// goRead downloads a file link's entry as a Go reader does (4 chunks in
// flight, chunk.OpenWithKey, WriteAt): the page's speed reference where
// the CLI is not at hand.
func goRead(base, linkID string, e link.Entry, dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i, c := range e.Chunks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := func() error {
				res, err := http.Get(base + "/v1/s/" + linkID + "/chunks/" + c.ID)
				if err != nil {
					return err
				}
				defer res.Body.Close()
				sealed, err := io.ReadAll(res.Body)
				if err != nil {
					return err
				}
				var key [32]byte
				hex.Decode(key[:], []byte(c.Key))
				p, err := chunk.OpenWithKey(nil, key, sealed)
				if err != nil {
					return err
				}
				_, err = f.WriteAt(p, int64(i)*chunk.Size)
				return err
			}()
			if err != nil {
				mu.Lock()
				first = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// TestPageSpeed measures the page downloading a 1 GiB file in chromium
// against a Go reader of the same link over the same HTTP server, medians of
// 3. KUMO_LINK_BENCH=1 go test -run TestPageSpeed -v ./internal/linkpage
func TestPageSpeed(t *testing.T) {
	if os.Getenv("KUMO_LINK_BENCH") == "" {
		t.Skip("set KUMO_LINK_BENCH=1 to measure the page's download speed (1 GiB)")
	}
	size := 1 << 30
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	gl := newGoLink(t, map[string][]byte{"big.bin": data})
	gl.files = nil
	data = nil
	hs := gl.serve(t)
	k := link.KeyNoPassword(gl.id, gl.secret)
	m, err := link.Open(k, gl.id, gl.blob)
	if err != nil {
		t.Fatal(err)
	}
	b := browsertest.Start(t)
	url := hs.URL + "/s/" + gl.id.String() + "#" + gl.secret.String()
	median := func(d []time.Duration) time.Duration { d = slices.Clone(d); slices.Sort(d); return d[len(d)/2] }
	mibs := func(d time.Duration) string { return fmt.Sprintf("%.0f MiB/s", float64(size)/(1<<20)/d.Seconds()) }
	var goT, pageT []time.Duration
	for i := range 3 {
		dst := filepath.Join(t.TempDir(), "go.bin")
		start := time.Now()
		if err := goRead(hs.URL, gl.id.String(), m.Entries[0], dst); err != nil {
			t.Fatal(err)
		}
		goT = append(goT, time.Since(start))
		if fileSum(t, dst) != want {
			t.Fatal("Go reader: sha256 differs")
		}
		os.Remove(dst)
		p := b.Open(url, `delete Window.prototype.showSaveFilePicker; delete window.showSaveFilePicker;`)
		if st := p.WaitState(60 * time.Second); st != "ready" {
			t.Fatalf("page state %q: %s", st, p.Text("#error"))
		}
		start = time.Now()
		path, _ := p.Download(`button.dl`, 10*time.Minute)
		pageT = append(pageT, time.Since(start))
		if fileSum(t, path) != want {
			t.Fatal("browser: sha256 differs")
		}
		os.Remove(path)
		t.Logf("run %d: Go reader %.2fs (%s), browser %.2fs (%s)", i+1, goT[i].Seconds(), mibs(goT[i]), pageT[i].Seconds(), mibs(pageT[i]))
	}
	mg, mp := median(goT), median(pageT)
	t.Logf("median of 3, 1 GiB: Go reader %.2fs (%s), browser %.2fs (%s), browser/Go = %.2fx",
		mg.Seconds(), mibs(mg), mp.Seconds(), mibs(mp), mp.Seconds()/mg.Seconds())
}

func fileSum(t *testing.T, path string) [32]byte {
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
