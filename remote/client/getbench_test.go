package client_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"testing"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/remote/client"
	"kumo/remote/server"
	"kumo/remote/session"
)

// BenchmarkGetChunkInProcess measures a chunk read from the embedded cloud
// as the drive does it: one sealed 64 KiB segment (a random read's miss) and
// a whole 4 MiB chunk (sequential reads), each into a reused buffer, with
// the server set up as `kumo mount` sets it (NoReadVerify). The blobs are in
// the page cache: this is the CPU and allocation cost, not the disk's.
//
//	go test -run '^$' -bench GetChunkInProcess -benchmem ./remote/client
func BenchmarkGetChunkInProcess(b *testing.B) {
	srv, err := server.New(server.Config{DataDir: b.TempDir(), DefaultQuota: 1 << 30, SyncWrites: false,
		SmallMemory: true, NoReadVerify: true, LoginLimit: 1000, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c, err := client.New(client.Options{BaseURL: "http://inproc.test",
		HTTPClient: &http.Client{Transport: client.NewInProcess(srv.Handler())}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	s, err := session.Signup(ctx, c, "http://inproc.test", "bench@example.com", []byte("pw"), keys.TestKDF())
	if err != nil {
		b.Fatal(err)
	}
	c.SetToken(s.Token)
	k := s.Subkeys()
	ci := chunk.NewCipher(k.ChunkID, k.Chunks)
	plain := make([]byte, chunk.Size)
	rand.Read(plain)
	id := ci.ID(plain)
	sealed := ci.Seal(nil, id, plain)
	if err := c.PutChunk(ctx, id.String(), sealed); err != nil {
		b.Fatal(err)
	}
	b.Run("segment", func(b *testing.B) {
		buf := make([]byte, 0, chunk.SealedSegmentSize)
		off, n := chunk.SegmentRange(len(plain), 5)
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.GetChunkInto(ctx, id.String(), int64(off), int64(n), buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		buf := make([]byte, 0, chunk.MaxSealedSize)
		b.SetBytes(int64(len(sealed)))
		b.ReportAllocs()
		for b.Loop() {
			got, err := c.GetChunkInto(ctx, id.String(), 0, -1, buf)
			if err != nil || len(got) != len(sealed) {
				b.Fatal(err)
			}
		}
	})
}
