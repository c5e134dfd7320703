package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/pathops"
)

// sharedFile shares /Docs holding one file name of content b and returns a
// fresh drive of the owner (of the embedded cloud with inProc, which does
// not use the chunk cache) and the file.
func sharedFile(t *testing.T, name string, b []byte, inProc bool) (*Drive, *nodeState) {
	t.Helper()
	c := startCloud(t, t.TempDir(), 0)
	owner := newShareAcct(t, c, c.sess)
	bob := signupShareAcct(t, c, "bob@example.com")
	owner.put(t, owner.home, "/Docs/"+name, b)
	f, _ := owner.load(t)
	if _, err := f.ShareFolder(context.Background(), owner.acct, "/Docs", "bob@example.com", keys.RoleWriter); err != nil {
		t.Fatal(err)
	}
	if _, err := pathops.AcceptShare(context.Background(), bob.c, bob.acct, owner.acct.Email+"/Docs"); err != nil {
		t.Fatal(err)
	}
	d := coreDriveWith(t, c, func(o *Options) {
		driveShareOptions(owner)(o)
		if inProc {
			o.Client = c.inProcess(t)
		}
	})
	if d.cachesChunks() == inProc {
		t.Fatalf("drive caches chunks: %v, want %v", d.cachesChunks(), !inProc)
	}
	docs := lookupDir(t, d, api.RootID, "Docs")
	return d, lookupDir(t, d, docs.id, name)
}

// patterned returns n bytes with no repeated chunk (no dedup).
func patterned(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

// TestShareForgedChunkAtOffset: a shared chunk of several segments that the
// cloud replaces by other bytes sealed under the chunk's id and keys (each
// segment authenticates; only the id check tells) reads as EIO at an offset
// inside it, by a random and by a sequential reader, and nothing of it stays
// in memory or in the chunk cache: once the cloud serves the real chunk, the
// same reads return it.
func TestShareForgedChunkAtOffset(t *testing.T) {
	for _, inProc := range []bool{false, true} {
		t.Run(fmt.Sprintf("inProcess=%v", inProc), func(t *testing.T) { testShareForgedChunkAtOffset(t, inProc) })
	}
}

func testShareForgedChunkAtOffset(t *testing.T, inProc bool) {
	want := patterned(5*chunk.SegmentSize + 100)
	d, st := sharedFile(t, "f.bin", want, inProc)
	d.mu.Lock()
	ref := st.attrs.Chunks[0]
	d.mu.Unlock()
	if d.chunkKID(ref.ID) == meta.Home {
		t.Fatal("the file's chunk is not under the share's keys")
	}
	forge := &forgeCloud{}
	forge.chunkCloud, d.chunks = d.chunks, forge
	other := bytes.Clone(want)
	other[3*chunk.SegmentSize+10] ^= 1
	forge.set(ref.ID.String(), d.chunkCipher(ref.ID).Seal(nil, ref.ID, other))

	off := int64(3*chunk.SegmentSize + 5)
	buf := make([]byte, 4096)
	for _, seq := range []bool{false, true} {
		if n, err := d.readAt(context.Background(), st, buf, off, seq, nil); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read (seq %v) at %d of a forged shared chunk: %d bytes, %v; want EIO", seq, off, n, err)
		}
	}
	id := ref.ID.String()
	if d.fetch.known(ref.ID, id) {
		t.Error("the forged chunk is kept or in flight after the failed read")
	}
	for k := range chunk.Segments(int(ref.Len)) {
		if d.store.HasSegment(id, k) {
			t.Errorf("segment %d of the forged chunk is in the chunk cache", k)
		}
	}
	forge.set("", nil)
	for _, seq := range []bool{false, true} {
		n, err := d.readAt(context.Background(), st, buf, off, seq, nil)
		if err != nil || !bytes.Equal(buf[:n], want[off:off+int64(len(buf))]) {
			t.Fatalf("read (seq %v) once the cloud serves the chunk: %d bytes, %v", seq, n, err)
		}
	}
	checkCachedSealed(t, d, ref)
}

// checkCachedSealed checks that the chunk cache holds chunk ref as the cloud
// has it, sealed (not the plaintext the drive checked it with), once the
// cache writer is done; nothing if the drive does not cache chunks.
func checkCachedSealed(t *testing.T, d *Drive, ref meta.ChunkRef) {
	t.Helper()
	id, segs := ref.ID.String(), chunk.Segments(int(ref.Len))
	if !d.cachesChunks() {
		for k := range segs {
			if d.store.HasSegment(id, k) {
				t.Errorf("segment %d cached by a drive that does not cache chunks", k)
			}
		}
		return
	}
	for end := time.Now().Add(10 * time.Second); !d.store.HasSegment(id, segs-1); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("chunk %s not cached after its read", id)
		}
	}
	for k := range segs {
		off, n := chunk.SegmentRange(int(ref.Len), k)
		cloud, err := d.chunks.GetChunkInto(context.Background(), id, int64(off), int64(n), nil)
		if err != nil {
			t.Fatal(err)
		}
		if cached, ok := d.store.AppendSegment(nil, id, k); !ok || !bytes.Equal(cached, cloud) {
			t.Fatalf("segment %d in the chunk cache (%v, %d bytes) is not the cloud's sealed one (%d bytes)", k, ok, len(cached), len(cloud))
		}
	}
}

// TestShareReadBigFile reads a shared file of several chunks in 128 KiB
// steps, sequentially, and logs the time (KUMO_SHARE_MIB sets its size,
// default 12 MiB).
func TestShareReadBigFile(t *testing.T) {
	mib := 12
	if s := os.Getenv("KUMO_SHARE_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	for _, inProc := range []bool{false, true} {
		t.Run(fmt.Sprintf("inProcess=%v", inProc), func(t *testing.T) { testShareReadBigFile(t, mib, inProc) })
	}
}

func testShareReadBigFile(t *testing.T, mib int, inProc bool) {
	want := patterned(mib << 20)
	d, st := sharedFile(t, "big.bin", want, inProc)
	counter := &countCloud{chunkCloud: d.chunks}
	d.chunks = counter
	buf := make([]byte, 128<<10)
	got := make([]byte, 0, len(want))
	cpu0 := cpuTime(t)
	start := time.Now()
	for off := int64(0); off < int64(len(want)); {
		n, err := d.readAt(context.Background(), st, buf, off, true, nil)
		if err != nil || n == 0 {
			t.Fatalf("read at %d: %d bytes, %v", off, n, err)
		}
		got = append(got, buf[:n]...)
		off += int64(n)
	}
	el, cpu, fetches := time.Since(start), cpuTime(t)-cpu0, counter.n.Load()
	if !bytes.Equal(got, want) {
		t.Fatal("the shared file reads back other bytes")
	}
	d.mu.Lock()
	ref := st.attrs.Chunks[len(st.attrs.Chunks)-1]
	d.mu.Unlock()
	checkCachedSealed(t, d, ref)
	t.Logf("read %d MiB of a shared file in %v (%.0f MiB/s), process CPU %v, %d chunk fetches", mib, el, float64(mib)/el.Seconds(), cpu, fetches)
}

// countCloud counts the fetches from the cloud.
type countCloud struct {
	chunkCloud
	n atomic.Int64
}

func (c *countCloud) GetChunkInto(ctx context.Context, id string, off, length int64, buf []byte) ([]byte, error) {
	c.n.Add(1)
	return c.chunkCloud.GetChunkInto(ctx, id, off, length, buf)
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
