package fs

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// TestFsyncFlushes counts device flushes (cache.Store.Flushes) of sqlite's
// commit pattern on a mount: an fsync after a small write into a big file
// costs one (the data goes into the store's redo log with the file's
// record; it was two: the segment file, then the log), and the directory's
// fsync after a file created in it was fsync'd costs none (it was one: a
// record of the directory written again and synced). A big write still
// syncs the file in place.
func TestFsyncFlushes(t *testing.T) {
	c := startCloud(t, t.TempDir(), 0)
	m := c.mount(t, t.TempDir(), func(o *Options) { o.QuietTime = time.Hour })
	db, err := os.Create(m.p("bench.db"))
	must(t, err)
	defer db.Close()
	_, err = db.Write(bytes.Repeat([]byte{'d'}, 2<<20)) // a segment file, not inline
	must(t, err)
	must(t, db.Sync())
	st := m.d.store
	// A background sync (the 5 s commit) may land in a window: least of 3.
	least := func(f func() int64) int64 {
		best := int64(-1)
		for range 3 {
			if n := f(); best < 0 || n < best {
				best = n
			}
		}
		return best
	}
	page := 0
	small := least(func() int64 {
		must(t, st.SyncAll())
		page++
		_, err := db.WriteAt(bytes.Repeat([]byte{byte(page)}, 4096), int64(page)*100<<10)
		must(t, err)
		before := st.Flushes()
		must(t, db.Sync())
		return st.Flushes() - before
	})
	if small != 1 {
		t.Errorf("fsync after a 4 KiB write made %d device flushes, want 1", small)
	}
	dirSync := least(func() int64 {
		j, err := os.Create(m.p("bench.db-journal"))
		must(t, err)
		_, err = j.Write(bytes.Repeat([]byte{'j'}, 9000))
		must(t, err)
		must(t, j.Sync())
		before := st.Flushes()
		d, err := os.Open(m.p(""))
		must(t, err)
		must(t, d.Sync())
		d.Close()
		n := st.Flushes() - before
		j.Close()
		must(t, os.Remove(m.p("bench.db-journal")))
		return n
	})
	if dirSync != 0 {
		t.Errorf("directory fsync right after its new file's fsync made %d device flushes, want 0", dirSync)
	}
	big := least(func() int64 {
		must(t, st.SyncAll())
		_, err := db.WriteAt(bytes.Repeat([]byte{'b'}, 2<<20), 0)
		must(t, err)
		before := st.Flushes()
		must(t, db.Sync())
		return st.Flushes() - before
	})
	if big < 2 {
		t.Errorf("fsync after a 2 MiB write made %d device flushes, want the file's own and the log's", big)
	}
	checkFile(t, m.p("bench.db"), bytes.Repeat([]byte{'b'}, 2<<20)) // the 4 KiB writes were under it
}
