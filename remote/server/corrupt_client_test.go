package server_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/remote/blob/s3"
	"kumo/remote/blob/s3/s3test"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/server"
	"kumo/remote/session"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestS3CorruptChunkClient: a chunk corrupted on the S3 side reaches the
// client as an authentication failure (the drive's EIO), never as wrong
// data, and the server log names the chunk.
func TestS3CorruptChunkClient(t *testing.T) {
	v := s3test.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := s3.Open(ctx, v.URL, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv, err := server.New(server.Config{DataDir: t.TempDir(), Blobs: store, DefaultQuota: 1 << 30,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer func() { hs.Close(); srv.Close() }()
	c, err := client.New(client.Options{BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := session.Signup(ctx, c, hs.URL, "corrupt@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		t.Fatal(err)
	}
	f := pathops.New(c, sess.Subkeys())
	dir := t.TempDir()
	data := bytes.Repeat([]byte("kumo corrupt test "), 20000)
	in := filepath.Join(dir, "in")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PutFile(ctx, in, "/f", nil); err != nil {
		t.Fatal(err)
	}
	if err := f.GetFile(ctx, "/f", filepath.Join(dir, "ok"), nil); err != nil {
		t.Fatalf("get before corruption: %v", err)
	}
	// Flip one byte in the middle of every stored object.
	n := 0
	err = filepath.WalkDir(filepath.Join(v.Root, s3test.Bucket, s3test.Prefix), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)/2] ^= 1
		n++
		return os.WriteFile(p, b, 0o644)
	})
	if err != nil || n == 0 {
		t.Fatalf("corrupting objects: %d, %v", n, err)
	}
	err = f.GetFile(ctx, "/f", filepath.Join(dir, "bad"), nil)
	if !errors.Is(err, chunk.ErrAuth) {
		t.Fatalf("get of a corrupted chunk: %v, want chunk.ErrAuth", err)
	}
	if !strings.Contains(logs.String(), "corrupted") {
		t.Fatalf("corruption not logged:\n%s", logs)
	}
}
