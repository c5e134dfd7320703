package cache

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"kumo/internal/chunk"
)

// TestSyncDataDirOnlyAfterRemove: a data sync (SyncAll's, or the one a
// closed file's record waits for) fsyncs the segment files' directory only
// when a file was removed since; a new file's first sync syncs the
// directory itself. So a data sync with nothing new costs no device flush
// (it cost one, the directory, every time).
func TestSyncDataDirOnlyAfterRemove(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	defer s.Close()
	f, err := s.OpenSegmentFile(7, 1)
	must(err)
	defer f.Close()
	must(f.WriteSegment(0, segPattern(7, 0, chunk.SegmentSize)))
	must(s.SyncAll())
	// A background sync (the 5 s commit) may land in a window: least of 3.
	least := int64(-1)
	for range 3 {
		before := s.Flushes()
		must(s.syncData())
		if n := s.Flushes() - before; least < 0 || n < least {
			least = n
		}
	}
	if least != 0 {
		t.Fatalf("a data sync with nothing written or removed made %d device flushes, want 0", least)
	}

	g, err := s.OpenSegmentFile(8, 1)
	must(err)
	must(g.WriteSegment(0, segPattern(8, 0, chunk.SegmentSize)))
	must(g.Flush()) // as a close does before its record
	before := s.Flushes()
	must(s.syncData())
	if n := s.Flushes() - before; n < 2 || g.dirSync.Load() {
		t.Fatalf("a data sync after a new file's write made %d device flushes (directory still to sync: %v), want its data's and its directory's",
			n, g.dirSync.Load())
	}

	must(g.Remove())
	if !s.dirtyRemoved.Load() {
		t.Fatal("a removal did not mark the directory for the next data sync")
	}
	before = s.Flushes()
	must(s.syncData())
	if n := s.Flushes() - before; n < 1 || s.dirtyRemoved.Load() {
		t.Fatalf("the data sync after a removal made %d device flushes (still marked: %v), want the directory's", n, s.dirtyRemoved.Load())
	}
}

// TestSyncDataOneDirSyncForNewFiles: a data sync over many files created
// since the last one (an untar's closed files, at the 5 s commit) fsyncs
// their directory once, not once per file, and every file's entry is then
// durable: a crash image taken after it keeps them all.
func TestSyncDataOneDirSyncForNewFiles(t *testing.T) {
	dir := t.TempDir()
	// No 5 s commit: it would sync some of the files first.
	s, err := Open(Options{Dir: dir, Key: testKey(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), commitInterval: time.Hour})
	must(err)
	defer s.Close()
	const n = 20
	var files []*SegmentFile
	for i := range n {
		f, err := s.OpenSegmentFile(uint64(100+i), 1)
		must(err)
		defer f.Close()
		must(f.WriteSegment(0, segPattern(uint64(100+i), 0, chunk.SegmentSize)))
		must(f.Flush()) // as a close does before its record
		if !f.dirSync.Load() {
			t.Fatalf("test premise: new file %d's entry is not waiting for a directory sync", i)
		}
		files = append(files, f)
	}
	before := s.Flushes()
	must(s.syncData())
	if got := s.Flushes() - before; got != n+1 {
		t.Fatalf("a data sync of %d new files made %d device flushes, want %d (each file's data, their directory once)", n, got, n+1)
	}
	for i, f := range files {
		if f.dirSync.Load() {
			t.Fatalf("file %d still waits for its directory's sync after the data sync", i)
		}
	}
	img := t.TempDir()
	must(s.CrashImage(img))
	r := openTest(t, img, 0)
	defer r.Close()
	for i := range n {
		rf, err := r.OpenSegmentFile(uint64(100+i), 1)
		must(err)
		p, ok, err := rf.ReadSegment(0)
		rf.Close()
		if err != nil || !ok || !bytes.Equal(p, segPattern(uint64(100+i), 0, chunk.SegmentSize)) {
			t.Fatalf("file %d after a power loss following the data sync: ok %v, err %v", i, ok, err)
		}
	}

	// A removal and a new file: one directory fsync covers both.
	must(files[0].Remove())
	g, err := s.OpenSegmentFile(200, 1)
	must(err)
	defer g.Close()
	must(g.WriteSegment(0, segPattern(200, 0, chunk.SegmentSize)))
	must(g.Flush())
	before = s.Flushes()
	must(s.syncData())
	if got := s.Flushes() - before; got != 2 || g.dirSync.Load() || s.dirtyRemoved.Load() {
		t.Fatalf("a data sync after a removal and a new file made %d device flushes (new file waiting: %v, removal waiting: %v), want 2: its data, the directory once",
			got, g.dirSync.Load(), s.dirtyRemoved.Load())
	}
}
