package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"kumo/internal/meta"
	"kumo/remote/api"
)

func coreTruncate(t *testing.T, d *Drive, st *nodeState, size uint64) {
	t.Helper()
	if e := d.truncate(context.Background(), st, size); e != 0 {
		t.Fatalf("truncate to %d: %v", size, e)
	}
}

// Truncate down inside an uploaded chunk and up again (the tail reads as
// zeros), a sparse file (a hole of 20 MiB: zeros, not stored), an
// overwrite in the middle of an uploaded file; the same after a flush, and
// on a device that reads it all from the cloud.
func TestCoreTruncateSparse(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	data := randBytes(5 << 20)
	f := coreWriteFile(t, d, "f", data)
	coreFlush(t, d)
	coreTruncate(t, d, f, 100000)
	coreTruncate(t, d, f, 6<<20)
	want := make([]byte, 6<<20)
	copy(want, data[:100000])
	coreCheckFile(t, d, f, want)
	coreFlush(t, d)
	coreCheckFile(t, d, f, want)

	sp, e := d.create(api.RootID, newNode{name: "sparse", mode: syscall.S_IFREG | 0o644})
	if e != 0 {
		t.Fatal(e)
	}
	coreWriteAt(t, d, sp, []byte("end"), 20<<20)
	if e := d.makeDurable(sp, true, false); e != 0 {
		t.Fatal(e)
	}
	wantS := make([]byte, 20<<20+3)
	copy(wantS[20<<20:], "end")
	coreCheckFile(t, d, sp, wantS)

	coreWriteAt(t, d, f, []byte("MIDDLE"), 3<<20)
	if e := d.makeDurable(f, true, false); e != 0 {
		t.Fatal(e)
	}
	copy(want[3<<20:], "MIDDLE")
	coreCheckFile(t, d, f, want)
	coreFlush(t, d)

	other := coreDrive(t, c) // an empty cache: everything comes from the cloud
	coreCheckFile(t, other, coreFileState(t, other, "f"), want)
	sp2 := coreFileState(t, other, "sparse")
	coreCheckFile(t, other, sp2, wantS)
	other.mu.Lock()
	blocks := other.blocks(sp2)
	other.mu.Unlock()
	if blocks*512 >= 20<<20 {
		t.Errorf("the sparse file uses %d blocks", blocks)
	}
}

// coreModelWriter writes to st and the same bytes to *model.
func coreModelWriter(t *testing.T, d *Drive, st *nodeState, model *[]byte) func(p []byte, off int) {
	return func(p []byte, off int) {
		t.Helper()
		coreWriteAt(t, d, st, p, int64(off))
		if end := off + len(p); end > len(*model) {
			*model = append(*model, make([]byte, end-len(*model))...)
		}
		copy((*model)[off:], p)
	}
}

// TestCoreSmallWrites: 4 KiB appends and odd-sized overwrites (partial
// segments patched in memory, in the file, and over an uploaded base), with
// pauses that let the uploader take a generation mid-way; the result must
// match a model after a restart on the same cache and from the cloud.
func TestCoreSmallWrites(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	cache := t.TempDir()
	quiet := func(o *Options) { o.QuietTime = 200 * time.Millisecond }
	d := coreDriveAt(t, c, cache, quiet, nil)
	r := rand.New(rand.NewPCG(1, 2))
	var model []byte
	st, e := d.create(api.RootID, newNode{name: "f", mode: syscall.S_IFREG | 0o644})
	if e != 0 {
		t.Fatal(e)
	}
	writeAt := coreModelWriter(t, d, st, &model)
	uploads := 0
	for round := 0; round < 3; round++ {
		for k := 0; k < 40; k++ { // 160 KiB of 4 KiB appends
			writeAt(randBytes(4096), len(model))
		}
		for k := 0; k < 20; k++ {
			n := 1 + r.IntN(100000)
			writeAt(randBytes(n), r.IntN(len(model)+70000))
		}
		if round == 1 {
			// Cut inside a segment, then write a little past the new end in
			// the same segment: the gap must read as zeros, not as the old
			// bytes.
			coreTruncate(t, d, st, uint64(len(model)-12345))
			model = model[:len(model)-12345]
			writeAt([]byte("after the gap"), len(model)+100)
		}
		time.Sleep(400 * time.Millisecond) // quiet time passes: the uploader takes this generation
		d.mu.Lock()
		if len(st.attrs.Chunks) > 0 {
			uploads++
		}
		d.mu.Unlock()
		coreCheckFile(t, d, st, model)
	}
	if uploads == 0 {
		t.Error("the uploader took no generation mid-way: the writes over an uploaded base were not tested")
	}
	if e := d.makeDurable(st, true, true); e != 0 { // fsync and close
		t.Fatal(e)
	}
	d.shutdown()

	d = coreDriveAt(t, c, cache, quiet, nil) // same cache: data from layers and cached chunks
	coreCheckFile(t, d, coreFileState(t, d, "f"), model)
	coreFlush(t, d)
	d.shutdown()

	d = coreDrive(t, c) // empty cache: data from the cloud
	coreCheckFile(t, d, coreFileState(t, d, "f"), model)
}

// TestCoreInlineAppends: a small file grown by appends (as git writes its
// objects, 4 KiB at a time) is extended in memory, in place: the appends
// copy each byte about once (a copy of the whole file per append allocated
// several times as much); the content matches a model through gaps,
// overwrites, a cut and a save; and a segment a reader holds, a reader's
// own append to it, and a snapshot being saved do not change under later
// writes.
func TestCoreInlineAppends(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)

	// Bytes allocated by 7 appends of 4 KiB to each of 50 new files, first,
	// while the drive has nothing else to do.
	const files, appends = 50, 7
	sts := make([]*nodeState, files)
	for i := range sts {
		var e syscall.Errno
		if sts[i], e = d.create(api.RootID, newNode{name: fmt.Sprintf("f%d", i), mode: syscall.S_IFREG | 0o644}); e != 0 {
			t.Fatal(e)
		}
	}
	p := randBytes(4096)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	for _, st := range sts {
		for k := range appends {
			if _, e := d.write(context.Background(), st, p, int64(k*len(p))); e != 0 {
				t.Fatal(e)
			}
		}
	}
	runtime.ReadMemStats(&ms)
	perFile := (ms.TotalAlloc - before) / files
	t.Logf("%d appends of 4 KiB allocated %d KiB a file", appends, perFile>>10)
	if limit := uint64(4 * appends * len(p)); perFile > limit {
		t.Errorf("%d appends of 4 KiB allocated %d KiB a file, want at most %d (about one copy of each byte, doubling)", appends, perFile>>10, limit>>10)
	}
	for _, st := range sts {
		coreCheckFile(t, d, st, bytes.Repeat(p, appends))
	}

	st, e := d.create(api.RootID, newNode{name: "obj", mode: syscall.S_IFREG | 0o644})
	if e != 0 {
		t.Fatal(e)
	}
	var model []byte
	writeAt := coreModelWriter(t, d, st, &model)
	writeAt(randBytes(1000), 0)
	writeAt(randBytes(777), len(model))
	writeAt(randBytes(500), len(model)+300) // a gap: zeros
	// What a reader and a save hold now must not change below, nor what a
	// reader appends to its copy (it must not land in the layer's spare room).
	st.dmu.RLock()
	held, err := d.segment(context.Background(), st, d.view(st), 0, false)
	il, ok := st.layers[len(st.layers)-1].f.(*inlineLayer)
	st.dmu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("the small file's top layer is not inline")
	}
	heldWant := append([]byte(nil), held...)
	ownTail := bytes.Repeat([]byte{0xEE}, 64)
	own := append(held, ownTail...)
	seg, _, _, _ := il.snapshot()
	segWant := append([]byte(nil), seg.Data...)
	writeAt(randBytes(10), len(model)+5) // in place, past what they hold
	writeAt(randBytes(40), 100)          // an overwrite: copied, not in place
	if !bytes.Equal(held, heldWant) {
		t.Error("a later write changed the segment a reader held")
	}
	if !bytes.Equal(own[len(heldWant):], ownTail) {
		t.Error("a later write changed what a reader appended to the segment it held")
	}
	if !bytes.Equal(seg.Data, segWant) {
		t.Error("a later write changed the snapshot being saved")
	}
	coreTruncate(t, d, st, uint64(len(model)-1000))
	model = model[:len(model)-1000]
	writeAt(randBytes(10), len(model)+20) // past the cut: the old bytes must read as zeros
	// Saved: the memory copy is dropped.
	if e := d.makeDurable(st, false, false); e != 0 {
		t.Fatal(e)
	}
	writeAt(randBytes(3000), len(model))
	writeAt(randBytes(2000), len(model))
	coreCheckFile(t, d, st, model)
	if e := d.makeDurable(st, true, true); e != 0 {
		t.Fatal(e)
	}
	coreCheckFile(t, d, st, model)
}

// TestCoreLocalNodeExtras: the local-only attributes (truncation mark, seen
// revision, preallocation, format mark) go into each node's local record and
// only its own: a node saved after one with all of them carries only its
// own (the map they are built in is reused), and neither node's own
// attributes map changes.
func TestCoreLocalNodeExtras(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	d := coreDrive(t, c)
	file := meta.Attrs{Mode: syscall.S_IFREG | 0o644, Size: 100}
	full := &nodeState{id: 1001, typ: api.TypeFile, rev: 5, seen: 3, trunc: 7, formatMark: true,
		prealloc: extent{4096, 8192}, attrs: file}
	plain := &nodeState{id: 1002, typ: api.TypeFile, rev: 5, seen: 5, trunc: noTrunc, formatMark: true, attrs: file}
	plain.attrs.Xattrs = map[string][]byte{"user.k": []byte("v")}
	d.mu.Lock()
	nFull, nPlain := d.localNode(full), d.localNode(plain)
	d.mu.Unlock()

	u64 := func(v ...uint64) string {
		var b []byte
		for _, x := range v {
			b = binary.LittleEndian.AppendUint64(b, x)
		}
		return string(b)
	}
	for _, tc := range []struct {
		st   *nodeState
		node api.Node
		want map[string]string
	}{
		{full, nFull, map[string]string{keyTrunc: u64(7), keySeen: u64(3), keyPrealloc: u64(4096, 8192), meta.FormatMark: meta.FormatMarkV2}},
		{plain, nPlain, map[string]string{"user.k": "v", meta.FormatMark: meta.FormatMarkV2}},
	} {
		a, _, err := d.openAttrs(tc.st.id, tc.node.Attrs)
		if err != nil {
			t.Fatalf("node %d: %v", tc.st.id, err)
		}
		got := map[string]string{}
		for k, v := range a.Xattrs {
			got[k] = string(v)
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("node %d's local record has attributes %q, want %q", tc.st.id, got, tc.want)
		}
	}
	if len(full.attrs.Xattrs) != 0 || len(plain.attrs.Xattrs) != 1 {
		t.Errorf("localNode changed the nodes' own attributes: %q, %q", full.attrs.Xattrs, plain.attrs.Xattrs)
	}
}
