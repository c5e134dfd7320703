package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kumo/remote/blob"
	"kumo/remote/client"
)

// getRaw GETs a chunk over TCP and in-process and returns both answers'
// bodies (nil and the error when the answer failed).
func getRaw(t *testing.T, e *env, tok, id, rng string) (tcp, mem []byte, tcpErr, memErr error) {
	t.Helper()
	do := func(rt http.RoundTripper, base string) ([]byte, error) {
		req, _ := http.NewRequest("GET", base+"/v1/chunks/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode/100 != 2 {
			return nil, errors.New(resp.Status)
		}
		return b, nil
	}
	tcp, tcpErr = do(http.DefaultTransport, e.url)
	mem, memErr = do(client.NewInProcess(e.s.Handler()), "http://inproc.test")
	return
}

// TestStreamedChunkVerified: a blob-store chunk is streamed, over TCP and
// in-process alike; a whole-chunk GET of a blob corrupted on disk still hands
// out the stored bytes (the client's AEAD refuses them) and is logged as
// corrupted unless NoReadVerify; a range is served without hashing.
func TestStreamedChunkVerified(t *testing.T) {
	for _, noVerify := range []bool{false, true} {
		logs := &logBuffer{}
		dir := t.TempDir()
		e := newEnv(t, func(t *testing.T) blob.Store {
			l, err := blob.NewLocal(dir)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}, func(c *Config) {
			blobsOnly(c)
			c.NoReadVerify = noVerify
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		})
		u := e.signup("stream@example.com")
		id := randMAC()
		data := randBytes(300000)
		u.must("PUT", "/v1/chunks/"+id, data, nil)

		tcp, mem, tcpErr, memErr := getRaw(t, e, u.token, id, "")
		if tcpErr != nil || memErr != nil || !bytes.Equal(tcp, data) || !bytes.Equal(mem, data) {
			t.Fatalf("whole chunk: tcp %v, in-process %v", tcpErr, memErr)
		}
		tcp, mem, tcpErr, memErr = getRaw(t, e, u.token, id, "bytes=1000-70999")
		if tcpErr != nil || memErr != nil || !bytes.Equal(tcp, data[1000:71000]) || !bytes.Equal(mem, data[1000:71000]) {
			t.Fatalf("range: tcp %v, in-process %v", tcpErr, memErr)
		}
		if strings.Contains(logs.String(), "corrupted") {
			t.Fatalf("intact chunk logged as corrupted:\n%s", logs)
		}

		bad := bytes.Clone(data)
		bad[200000] ^= 0x40
		p := filepath.Join(dir, u.id, id[:2], id)
		if err := os.WriteFile(p, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		tcp, mem, tcpErr, memErr = getRaw(t, e, u.token, id, "")
		if tcpErr != nil || memErr != nil || !bytes.Equal(tcp, bad) || !bytes.Equal(mem, bad) {
			t.Fatalf("corrupted chunk: want the stored bytes; tcp %v, in-process %v", tcpErr, memErr)
		}
		if n := strings.Count(logs.String(), "corrupted"); noVerify && n != 0 || !noVerify && n != 2 {
			t.Fatalf("NoReadVerify %v: %d corruption logs, want %d:\n%s", noVerify, n, map[bool]int{false: 2, true: 0}[noVerify], logs)
		}
		e.stop()
	}
}

// failingStore streams blobs that fail to read half-way, as a disk error
// would.
type failingStore struct{ *blob.Local }

func (f failingStore) OpenRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, int64, error) {
	r, n, err := f.Local.OpenRange(ctx, key, off, length)
	if err != nil {
		return nil, 0, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(r, n/2), failReader{}), r}, n, nil
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("injected read error") }

// TestStreamedChunkReadError: a read error after the header went out cuts the
// answer, so that neither a TCP client nor the in-process one takes a
// short or partial body for the chunk.
func TestStreamedChunkReadError(t *testing.T) {
	e := newEnv(t, func(t *testing.T) blob.Store { return failingStore{localBlobs(t).(*blob.Local)} }, blobsOnly)
	u := e.signup("fail@example.com")
	id := randMAC()
	u.must("PUT", "/v1/chunks/"+id, randBytes(200000), nil)
	for _, rng := range []string{"", "bytes=0-65551"} {
		tcp, mem, tcpErr, memErr := getRaw(t, e, u.token, id, rng)
		if tcpErr == nil || memErr == nil {
			t.Fatalf("range %q: a failed read was answered: tcp %d bytes (%v), in-process %d bytes (%v)",
				rng, len(tcp), tcpErr, len(mem), memErr)
		}
		if !errors.Is(memErr, io.ErrUnexpectedEOF) {
			t.Fatalf("in-process: %v, want a connection failure", memErr)
		}
	}
}

// TestChunkServeMatchesRecord: chunkServe decodes the fields a GET needs
// from a stored chunkRec (they share JSON names).
func TestChunkServeMatchesRecord(t *testing.T) {
	for _, rec := range []chunkRec{
		{Size: 4195328, Refs: 3, Created: time.Now(), Unref: time.Now(), Sum: randMAC()},
		{Size: 4112, InDB: true},
	} {
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		var c chunkServe
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		if c != (chunkServe{Size: rec.Size, Sum: rec.Sum, InDB: rec.InDB}) {
			t.Fatalf("chunkServe %+v from record %s", c, b)
		}
	}
}
