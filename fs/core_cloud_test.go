package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/remote/api"
)

// faultCloud stands in front of the drive's chunk traffic (chunkCloud) and
// refuses, delays or corrupts it as a test says; what it lets through goes
// to the real cloud.
type faultCloud struct {
	chunkCloud
	mu sync.Mutex
	// get, if set, decides a chunk read: an error fails it without asking
	// the cloud; else the cloud's answer goes through edit (if set).
	get  func(id string, off, length int64) error
	edit func(id string, off int64, b []byte) []byte
	// gate, if set, holds reads of the chunks it returns a channel for
	// until the channel is closed.
	gate func(id string) chan struct{}
	put  func(id string, sealed []byte) error // an error refuses the PUT
	// Counts, by chunk id.
	gets, waiting, puts, refused map[string]int
}

func newFaultCloud() *faultCloud {
	return &faultCloud{gets: map[string]int{}, waiting: map[string]int{}, puts: map[string]int{}, refused: map[string]int{}}
}

func (f *faultCloud) wrap(c chunkCloud) chunkCloud { f.chunkCloud = c; return f }

func (f *faultCloud) set(fn func(f *faultCloud)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func (f *faultCloud) count(m map[string]int, id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != "" {
		return m[id]
	}
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (f *faultCloud) GetChunkInto(ctx context.Context, id string, off, length int64, buf []byte) ([]byte, error) {
	f.mu.Lock()
	f.gets[id]++
	get, edit, gate := f.get, f.edit, f.gate
	var g chan struct{}
	if gate != nil {
		g = gate(id)
	}
	if g != nil {
		f.waiting[id]++
	}
	f.mu.Unlock()
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		f.mu.Lock()
		f.waiting[id]--
		f.mu.Unlock()
	}
	if get != nil {
		if err := get(id, off, length); err != nil {
			return nil, err
		}
	}
	b, err := f.chunkCloud.GetChunkInto(ctx, id, off, length, buf)
	if err == nil && edit != nil {
		b = edit(id, off, b)
	}
	return b, err
}

func (f *faultCloud) PutChunk(ctx context.Context, id string, sealed []byte) error {
	f.mu.Lock()
	f.puts[id]++
	put := f.put
	var err error
	if put != nil {
		err = put(id, sealed)
	}
	if err != nil {
		f.refused[id]++
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.chunkCloud.PutChunk(ctx, id, sealed)
}

// coreWriteFile writes data to a new file name under the root and closes it.
func coreWriteFile(t *testing.T, d *Drive, name string, data []byte) *nodeState {
	t.Helper()
	st, e := d.create(api.RootID, newNode{name: name, mode: syscall.S_IFREG | 0o644})
	if e != 0 {
		t.Fatalf("create %s: %v", name, e)
	}
	coreWriteAt(t, d, st, data, 0)
	if e := d.makeDurable(st, true, false); e != 0 {
		t.Fatalf("close %s: %v", name, e)
	}
	return st
}

func coreWriteAt(t *testing.T, d *Drive, st *nodeState, data []byte, off int64) {
	t.Helper()
	for len(data) > 0 { // in pieces of at most 128 KiB, as the kernel sends them
		n := min(len(data), 128<<10)
		if w, e := d.write(context.Background(), st, data[:n], off); e != 0 || w != n {
			t.Fatalf("write at %d: %d, %v", off, w, e)
		}
		data, off = data[n:], off+int64(n)
	}
}

// coreReadFile reads all of st sequentially (as cat does).
func coreReadFile(d *Drive, st *nodeState) ([]byte, error) {
	d.mu.Lock()
	size := st.attrs.Size
	d.mu.Unlock()
	out := make([]byte, size)
	for off := 0; off < len(out); {
		n, err := d.readAt(context.Background(), st, out[off:min(len(out), off+128<<10)], int64(off), true, nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("short read at %d of %d", off, len(out))
		}
		off += n
	}
	return out, nil
}

func coreCheckFile(t *testing.T, d *Drive, st *nodeState, want []byte) {
	t.Helper()
	got, err := coreReadFile(d, st)
	if err != nil {
		t.Fatalf("read node %d: %v", st.id, err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("node %d: %d bytes, want %d; first difference at %d", st.id, len(got), len(want), i)
	}
}

func coreFlush(t *testing.T, d *Drive) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// A chunk PUT the cloud refuses (here the last, partial chunk of a
// three-chunk file, while the two full ones go through) fails the upload:
// nothing of it is committed (no chunk list, no update queued, the data
// stays dirty and readable here), the uploader retries, and once the cloud
// takes it the file arrives whole.
func TestCoreUploadRefusedPutRetried(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	fc := newFaultCloud()
	fc.put = func(id string, sealed []byte) error {
		if len(sealed) != chunk.MaxSealedSize {
			return fmt.Errorf("put chunk %s: %w", id, api.ErrUnavailable)
		}
		return nil
	}
	d := coreDriveAt(t, c, t.TempDir(), nil, fc.wrap)
	data := randBytes(2*chunk.Size + 1<<20 + 123)
	st := coreWriteFile(t, d, "f", data)
	kick(d.uploadKick)
	// Refused, retried, refused (or, wrongly, committed).
	waitFor(t, 20*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return fc.count(fc.refused, "") >= 2 || d.dirty[st.id] == nil
	})
	d.mu.Lock()
	chunks, dirty, layers := len(st.attrs.Chunks), d.dirty[st.id] != nil, len(st.layers)
	d.mu.Unlock()
	if chunks != 0 || !dirty || layers == 0 {
		t.Fatalf("after refused PUTs: %d chunks committed, dirty %v, %d layers; want none, true, some", chunks, dirty, layers)
	}
	if n, err := d.store.GetNode(st.id); err != nil || len(n.Chunks) != 0 {
		t.Fatalf("the local record names chunks after refused PUTs: %v, %v", n.Chunks, err)
	}
	d.stat.Lock()
	uploaded := d.stat.uploadedB
	d.stat.Unlock()
	if uploaded != 0 {
		t.Fatalf("%d bytes counted as uploaded", uploaded)
	}
	coreCheckFile(t, d, st, data) // still served from the local layers

	fc.set(func(f *faultCloud) { f.put = nil })
	coreFlush(t, d)
	other := coreDrive(t, c)
	st2, e := other.lookupForTest(api.RootID, "f")
	if e != 0 {
		t.Fatal(e)
	}
	coreCheckFile(t, other, st2, data)
}

// A chunk read that fails, or whose answer is not the chunk asked for, is
// EIO to the reader, never other bytes; nothing of it is kept or cached, so
// the same read succeeds once the cloud answers right. Both kinds of fetch:
// a whole chunk (sequential reads) and one segment (random reads).
func TestCoreFetchFaults(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	w := coreDrive(t, c)
	data := randBytes(chunk.Size + 300<<10) // two chunks
	coreWriteFile(t, w, "f", data)
	coreFlush(t, w)
	var ids []string
	fst := coreFileState(t, w, "f")
	w.mu.Lock()
	for _, r := range fst.attrs.Chunks {
		ids = append(ids, r.ID.String())
	}
	w.mu.Unlock()
	if len(ids) != 2 {
		t.Fatalf("%d chunks", len(ids))
	}
	other := func(id string) string { // the file's other chunk
		if id == ids[0] {
			return ids[1]
		}
		return ids[0]
	}

	type fault struct {
		name string
		get  func(id string, off, length int64) error
		edit func(f *faultCloud, id string, off int64, b []byte) []byte
	}
	faults := []fault{
		{name: "refused, unauthorized", get: func(string, int64, int64) error {
			return fmt.Errorf("get chunk: %w", api.ErrUnauthorized)
		}},
		{name: "refused, forbidden", get: func(string, int64, int64) error { return api.ErrForbidden }},
		{name: "unavailable", get: func(string, int64, int64) error { return api.ErrUnavailable }},
		{name: "not found", get: func(string, int64, int64) error { return api.ErrNotFound }},
		{name: "one bit flipped", edit: func(_ *faultCloud, _ string, _ int64, b []byte) []byte {
			b[min(len(b)-1, 1000)] ^= 1 // in the first segment: the one read
			return b
		}},
		{name: "cut short", edit: func(_ *faultCloud, _ string, _ int64, b []byte) []byte { return b[:len(b)-1] }},
		{name: "another chunk's bytes", edit: func(f *faultCloud, id string, off int64, b []byte) []byte {
			o, err := f.chunkCloud.GetChunkInto(context.Background(), other(id), off, int64(len(b)), nil)
			if err != nil || len(o) < len(b) {
				return append(b[:0], make([]byte, len(b))...)
			}
			return append(b[:0], o[:len(b)]...)
		}},
	}
	reads := []struct {
		name string
		off  int64
		seq  bool
	}{
		{"sequential, first chunk", 0, true},
		{"sequential, second chunk", chunk.Size, true},
		{"random, a segment of the second chunk", chunk.Size + 3*segSize + 100, false},
	}
	for _, ft := range faults {
		for _, rd := range reads {
			t.Run(ft.name+"/"+rd.name, func(t *testing.T) {
				fc := newFaultCloud()
				fc.get = ft.get
				if ft.edit != nil {
					fc.edit = func(id string, off int64, b []byte) []byte { return ft.edit(fc, id, off, b) }
				}
				d := coreDriveAt(t, c, t.TempDir(), nil, fc.wrap)
				st := coreFileState(t, d, "f")
				want := data[rd.off : rd.off+1000]
				buf := make([]byte, 1000)
				n, err := d.readAt(context.Background(), st, buf, rd.off, rd.seq, nil)
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("read through the fault: %d bytes (right: %v), %v; want EIO", n, bytes.Equal(buf[:n], want), err)
				}
				if fc.count(fc.gets, "") == 0 {
					t.Fatal("the read did not ask the cloud: the fault was not tested")
				}
				fc.set(func(f *faultCloud) { f.get, f.edit = nil, nil })
				n, err = d.readAt(context.Background(), st, buf, rd.off, rd.seq, nil)
				if err != nil || !bytes.Equal(buf[:n], want) {
					t.Fatalf("read once the cloud answers right: %d bytes (right: %v), %v", n, bytes.Equal(buf[:n], want), err)
				}
			})
		}
	}
}

// A slow chunk fetch holds only the readers of that chunk: reads of another
// file from the cloud, of local data, and lookups go on meanwhile. Readers
// of the slow chunk share its one fetch.
func TestCoreSlowFetchBlocksOnlyItsReaders(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	w := coreDrive(t, c)
	slowData, fastData := randBytes(chunk.Size+1000), randBytes(chunk.Size+2000)
	coreWriteFile(t, w, "slow", slowData)
	coreWriteFile(t, w, "fast", fastData)
	coreFlush(t, w)
	sst := coreFileState(t, w, "slow")
	w.mu.Lock()
	slowID := sst.attrs.Chunks[0].ID.String()
	w.mu.Unlock()

	fc := newFaultCloud()
	release := make(chan struct{})
	fc.gate = func(id string) chan struct{} {
		if id == slowID {
			return release
		}
		return nil
	}
	d := coreDriveAt(t, c, t.TempDir(), nil, fc.wrap)
	local := coreWriteFile(t, d, "local", []byte("written here"))
	slow := coreFileState(t, d, "slow")
	type result struct {
		b   []byte
		err error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			b := make([]byte, 5000)
			n, err := d.readAt(context.Background(), slow, b, 0, true, nil)
			results <- result{b[:n], err}
		}()
	}
	waitFor(t, 5*time.Second, func() bool { return fc.count(fc.waiting, slowID) > 0 })

	done := make(chan error, 1)
	go func() {
		if _, e := d.lookupForTest(api.RootID, "fast"); e != 0 {
			done <- e
			return
		}
		got, err := coreReadFile(d, coreFileState(t, d, "fast"))
		if err == nil && !bytes.Equal(got, fastData) {
			err = errors.New("fast: wrong bytes")
		}
		if err == nil {
			got, err = coreReadFile(d, local)
			if err == nil && string(got) != "written here" {
				err = fmt.Errorf("local: %q", got)
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reads of other data waited for a slow fetch of an unrelated chunk")
	}
	select {
	case r := <-results:
		t.Fatalf("a read of the slow chunk returned before its fetch: %d bytes, %v", len(r.b), r.err)
	default:
	}
	close(release)
	for range 2 {
		r := <-results
		if r.err != nil || !bytes.Equal(r.b, slowData[:5000]) {
			t.Fatalf("read of the slow chunk: %d bytes, %v", len(r.b), r.err)
		}
	}
	if n := fc.count(fc.gets, slowID); n != 1 {
		t.Fatalf("the slow chunk was fetched %d times for two readers, want once", n)
	}
}

// A chunk PUT refused for quota does not fail writes (they are accepted
// against the quota the drive knows, which says yes): the data stays queued
// and readable here, the uploader pauses (no PUT after the refusal) and
// says why in the status, and resumes when asked (`sync` in .kumo) once the
// cloud takes it.
func TestCoreQuotaRefusalPauses(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	fc := newFaultCloud()
	fc.put = func(id string, _ []byte) error { return fmt.Errorf("put chunk %s: %w", id, api.ErrQuota) }
	d := coreDriveAt(t, c, t.TempDir(), nil, fc.wrap)
	st := coreWriteFile(t, d, "a", []byte("first file"))
	kick(d.uploadKick)
	waitFor(t, 10*time.Second, func() bool { return d.Status().QuotaBlocked })
	if r := fc.count(fc.refused, ""); r == 0 {
		t.Fatal("blocked without a refusal")
	}
	coreWriteFile(t, d, "b", []byte("second file")) // no EDQUOT: the known quota has room
	before := fc.count(fc.puts, "")
	kick(d.uploadKick)
	time.Sleep(2500 * time.Millisecond) // beyond the backoff of an ordinary failure (1 s, then 2 s)
	if n := fc.count(fc.puts, ""); n != before {
		t.Fatalf("%d PUTs while paused for quota", n-before)
	}
	if s := d.Status(); s.Queue.Files != 2 {
		t.Fatalf("queue while paused: %+v", s.Queue)
	}
	coreCheckFile(t, d, st, []byte("first file"))

	fc.set(func(f *faultCloud) { f.put = nil })
	if e := d.runCommand("sync"); e != 0 {
		t.Fatalf("sync: %v", e)
	}
	coreFlush(t, d)
	if d.Status().QuotaBlocked {
		t.Fatal("still blocked after the uploads went through")
	}
	other := coreDrive(t, c)
	coreCheckFile(t, other, coreFileState(t, other, "b"), []byte("second file"))
}

// A stored chunk with one byte flipped (in its first segment) is EIO to a
// reader of the file, while a random read of an untouched segment of the
// same chunk still works.
func TestCoreTamperedChunk(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	w := coreDrive(t, c)
	data := randBytes(300000)
	coreWriteFile(t, w, "f", data)
	coreFlush(t, w)
	fc := newFaultCloud()
	fc.edit = func(_ string, off int64, b []byte) []byte {
		if off <= 100 && 100 < off+int64(len(b)) {
			b[100-off] ^= 1 // as stored: every answer covering byte 100 has it flipped
		}
		return b
	}
	d := coreDriveAt(t, c, t.TempDir(), nil, fc.wrap)
	st := coreFileState(t, d, "f")
	if b, err := coreReadFile(d, st); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a tampered chunk: %d bytes, %v; want EIO", len(b), err)
	}
	buf := make([]byte, 100)
	if n, err := d.readAt(context.Background(), st, buf, 200000, false, nil); err != nil || !bytes.Equal(buf[:n], data[200000:200100]) {
		t.Fatalf("untouched segment: %d bytes, %v", n, err)
	}
}
