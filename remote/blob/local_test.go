package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"kumo/remote/blob"
	"kumo/remote/blob/blobtest"
)

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	blobtest.Run(t, s)

	// No temp files are left behind and every blob sits inside its account dir.
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(info.Name(), ".tmp-") {
			t.Errorf("leftover temp file %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLocalLayout(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := blobtest.RandomKey()
	if err := s.Put(context.Background(), k, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	acct, chunk, _ := strings.Cut(k, "/")
	b, err := os.ReadFile(filepath.Join(dir, acct, chunk[:2], chunk))
	if err != nil || string(b) != "hello" {
		t.Fatalf("layout: %q %v", b, err)
	}
}

func FuzzValidKey(f *testing.F) {
	f.Add(blobtest.RandomKey())
	f.Add("../x")
	f.Fuzz(func(t *testing.T, k string) {
		if blob.ValidKey(k) && (strings.Contains(k, "..") || strings.Count(k, "/") != 1 || strings.ContainsAny(k, "\\\x00")) {
			t.Fatalf("accepted %q", k)
		}
	})
}

// TestLocalOpenRange: a streamed range delivers what Get would, a missing
// blob is ErrNotFound, an offset past the end is an error, and a file that
// shrank after it was opened is a read error, not a short answer.
func TestLocalOpenRange(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := blobtest.RandomKey()
	data := make([]byte, 100000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := s.Put(ctx, k, data); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ off, length, want int64 }{{0, -1, 100000}, {1000, 50, 50}, {99990, 100, 10}, {100000, -1, 0}} {
		r, n, err := s.OpenRange(ctx, k, c.off, c.length)
		if err != nil || n != c.want {
			t.Fatalf("OpenRange(%d, %d): n %d, %v", c.off, c.length, n, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data[c.off:c.off+c.want]) {
			t.Fatalf("OpenRange(%d, %d): read %d bytes, %v", c.off, c.length, len(got), err)
		}
	}
	if _, _, err := s.OpenRange(ctx, k, 100001, 1); err == nil {
		t.Fatal("offset past the end accepted")
	}
	if _, _, err := s.OpenRange(ctx, blobtest.RandomKey(), 0, -1); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing blob: %v", err)
	}
	r, _, err := s.OpenRange(ctx, k, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	acct, chunk, _ := strings.Cut(k, "/")
	if err := os.Truncate(filepath.Join(dir, acct, chunk[:2], chunk), 5000); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err == nil {
		t.Fatalf("blob shrunk under the reader: %d bytes, no error", len(got))
	}
}

// TestLocalOpenFiles: blob files kept open between reads never serve a
// replaced or deleted blob, also with more blobs than are kept open and with
// readers racing with replacements.
func TestLocalOpenFiles(t *testing.T) {
	s, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = blobtest.RandomKey()
		if err := s.Put(ctx, keys[i], bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		for i, k := range keys {
			got, err := s.Get(ctx, k, 0, -1)
			if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 1000)) {
				t.Fatalf("round %d, blob %d: %v", round, i, err)
			}
		}
	}
	k := keys[0]
	if err := s.Put(ctx, k, []byte("replaced")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, k, 0, -1); err != nil || string(got) != "replaced" {
		t.Fatalf("after replacing: %q %v", got, err)
	}
	r, _, err := s.OpenRange(ctx, k, 0, -1) // a reader open across the delete
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, k, 0, -1); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if got, err := io.ReadAll(r); err != nil || string(got) != "replaced" {
		t.Fatalf("reader open across the delete: %q %v", got, err)
	}
	r.Close()

	// Readers racing with replacements see one whole version or the other,
	// and once the replacements are done, the last one.
	k = keys[1]
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := s.Get(ctx, k, 0, -1)
				if err != nil || len(got) != 1000 || !bytes.Equal(got, bytes.Repeat(got[:1], 1000)) {
					t.Errorf("racing read: %d bytes, %v", len(got), err)
					return
				}
			}
		}()
	}
	for v := range 50 {
		if err := s.Put(ctx, k, bytes.Repeat([]byte{byte(200 + v%50)}, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if got, err := s.Get(ctx, k, 0, 1); err != nil || got[0] != 200+49 {
		t.Fatalf("after the replacements: %v %v", got, err)
	}
}

// TestLocalOpenFilesPrune: kept blob files are closed after two idle prune
// periods (white-box: the prune is called by hand).
// oneKeptOpen returns a local store holding blob k ("x"), read once so its
// file is kept open.
func oneKeptOpen(t *testing.T) (*blob.Local, string) {
	t.Helper()
	s, err := blob.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := blobtest.RandomKey()
	if err := s.Put(ctx, k, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, k, 0, -1); err != nil {
		t.Fatal(err)
	}
	if n := blob.KeptOpen(s); n != 1 {
		t.Fatalf("%d files kept open, want 1", n)
	}
	return s, k
}

func TestLocalOpenFilesPrune(t *testing.T) {
	s, k := oneKeptOpen(t)
	ctx := context.Background()
	blob.PruneIdle(s) // used since the last prune: kept
	if n := blob.KeptOpen(s); n != 1 {
		t.Fatalf("after one prune: %d files kept open, want 1", n)
	}
	blob.PruneIdle(s)
	if n := blob.KeptOpen(s); n != 0 {
		t.Fatalf("after two idle prunes: %d files kept open, want 0", n)
	}
	if got, err := s.Get(ctx, k, 0, -1); err != nil || string(got) != "x" {
		t.Fatalf("after pruning: %q %v", got, err)
	}
}

func TestLocalClose(t *testing.T) {
	s, k := oneKeptOpen(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := blob.KeptOpen(s); n != 0 {
		t.Fatalf("after Close: %d files kept open", n)
	}
	if got, err := s.Get(context.Background(), k, 0, -1); err != nil || string(got) != "x" {
		t.Fatalf("after Close: %q %v", got, err)
	}
}
