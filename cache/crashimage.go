package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CrashImage writes to dst (an empty or new directory) what a power loss at
// this instant could leave of the store's directory, for crash tests (there
// is no device-mapper here to drop a disk's unflushed writes, so the store,
// which knows what it synced, drops them itself):
//
//   - the redo log: what follows the last offset a sync covered, up to the
//     write position, is zeroed (the unsynced records never reached the
//     disk); past the write position the file is kept as it is. The log is
//     a preallocated file overwritten in place from its start at every
//     epoch, so the disk still holds there the records of older epochs
//     (the replay must refuse them: their CRC covers their epoch). What the
//     unsynced records overwrote is not known here (an older epoch's
//     records, or zeros); zeros stand for it, which ends the replay at the
//     synced end;
//   - a segment file created since its directory was last synced is absent;
//     in the others, the slots written since their last fdatasync are
//     zeroed (never written), and a truncation since then is undone only as
//     far as the file's current size (the dropped bytes are gone either way);
//   - badger's files are copied as the kernel holds them now, i.e. with
//     every change applied: the worst case for replay, since badger may then
//     be ahead of the synced log (see keyRedoPos);
//   - the chunk cache is copied as is (a torn slot there is a miss).
//
// Badger keeps working meanwhile; the write-behind applier is held so that
// badger's files do not change under the copy because of it.
func (s *Store) CrashImage(dst string) error {
	// One instant, as a power cut is: no sync may run while the files are
	// copied, or the image could hold a redo log synced after a segment file
	// was copied unsynced — a state the store never leaves on disk (it syncs
	// data before the log that describes it).
	s.dataOrder.Lock() // no redo-log sync
	defer s.dataOrder.Unlock()
	s.dataMu.Lock() // no data sync
	defer s.dataMu.Unlock()
	s.behind.applying.Lock()
	defer s.behind.applying.Unlock()
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // badger removed it meanwhile
			}
			return err
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		redo := filepath.Dir(rel) == metaDir && d.Name() == redoFile
		if redo {
			// Records (segment data ones too) are appended without the
			// locks held above: the file and its write position are read
			// together.
			s.redo.appendMu.Lock()
		}
		b, err := os.ReadFile(p)
		if redo {
			if end := min(s.redo.off, int64(len(b))); err == nil {
				if off := s.redo.durable.Load(); off > 0 && off < end {
					clear(b[off:end])
				}
			}
			s.redo.appendMu.Unlock()
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		switch filepath.Dir(rel) {
		case dirtyDir:
			node, gen, ok := parseSegFileName(d.Name())
			if !ok {
				break
			}
			s.segMu.Lock()
			f := s.segOpen[[2]uint64{node, gen}]
			s.segMu.Unlock()
			if f == nil {
				break // closed: synced at close
			}
			if f.dirSync.Load() {
				return nil // its directory entry was never synced
			}
			f.sinceMu.Lock()
			for i := range f.since {
				if i >= 0 && i*slotStride < int64(len(b)) {
					clear(b[i*slotStride : min(int64(len(b)), (i+1)*slotStride)])
				}
			}
			f.sinceMu.Unlock()
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		return fmt.Errorf("cache: crash image: %w", err)
	}
	return nil
}
