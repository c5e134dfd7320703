package fs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kumo/remote/api"
)

// Deleted files' segment files (written data not yet uploaded) are removed
// in the background, a batch at a time, and what was deleted just before
// the drive stops is removed before its store closes, not left behind.
func TestCoreDeletedFilesDataRemoved(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	cacheDir := t.TempDir()
	// No upload starts meanwhile: the files keep their segment files until
	// they are deleted.
	d := coreDriveAt(t, c, cacheDir, func(o *Options) { o.QuietTime = time.Hour }, nil)
	big := string(bytes.Repeat([]byte("x"), 100<<10)) // past inline data: a segment file
	segFiles := func() int {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(cacheDir, "dirty"))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	const n = 30
	mk := func(round int) {
		for i := range n {
			coreFile(t, d, api.RootID, fmt.Sprintf("r%d-%02d", round, i), big)
		}
		if got := segFiles(); got < n {
			t.Fatalf("%d files written: %d segment files, want at least %d", n, got, n)
		}
	}
	rm := func(round int) {
		for i := range n {
			if e := d.unlink(api.RootID, fmt.Sprintf("r%d-%02d", round, i), false); e != 0 {
				t.Fatal(e)
			}
		}
	}

	mk(0)
	rm(0)
	waitFor(t, 10*time.Second, func() bool { return segFiles() == 0 })

	mk(1)
	rm(1)
	d.shutdown()
	if got := segFiles(); got != 0 {
		t.Fatalf("%d segment files of deleted files left after the drive stopped", got)
	}
	if names := coreNames(t, coreDriveAt(t, c, cacheDir, nil, nil), api.RootID); len(names) != 0 {
		t.Fatalf("after a remount the root lists %q, want nothing", names)
	}
}
