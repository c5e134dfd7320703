package cache

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Badger reads and writes every file it keeps (value logs, tables, memtable
// logs) through shared memory mappings, and every page it touches stays in
// the process's resident set until badger unmaps the file (for a value log,
// when the store closes or the value log GC deletes it). Small files' data
// goes to the value log, so the daemon's RSS grew with every small file
// written since the mount: after unpacking a source tree and committing it to
// git, 250 MiB of the drive's 470 MiB peak RSS were such pages of its own and
// the embedded cloud's badger stores (measured, docs/PERFORMANCE.md).
//
// KeepMappedUnder hands those pages back to the kernel's page cache when
// there are more of them than the budget allows (MappedBudget), as the backing files of a file
// system that uses read and write stay there: written pages stay in the page
// cache (dirty ones are written back as usual; badger's Sync still syncs
// them), read ones are read again when needed. It uses MADV_PAGEOUT, which
// never discards data: a mapping that badger replaced between reading
// /proc/self/maps and the call (with anything, even anonymous memory) keeps
// its contents.

// MappedRSS is the process's resident file-backed memory (RssFile of
// /proc/self/status) in bytes: its executable's pages and badger's mapped
// files.
func MappedRSS() (int64, error) {
	_, file, err := residentSet()
	return file, err
}

// residentSet is the process's resident anonymous and file-backed memory
// (RssAnon and RssFile of /proc/self/status) in bytes.
func residentSet() (anon, file int64, err error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, fmt.Errorf("reading the process's memory use: %w", err)
	}
	found := 0
	for line := range bytes.Lines(b) {
		for _, f := range []struct {
			name string
			v    *int64
		}{{"RssAnon:", &anon}, {"RssFile:", &file}} {
			v, ok := bytes.CutPrefix(line, []byte(f.name))
			if !ok {
				continue
			}
			fs := bytes.Fields(v)
			if len(fs) < 1 {
				continue
			}
			kb, err := strconv.ParseInt(string(fs[0]), 10, 64)
			if err != nil {
				continue
			}
			*f.v = kb << 10
			found++
		}
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("no RssAnon and RssFile in /proc/self/status (Linux 4.5 or later needed)")
	}
	return anon, file, nil
}

// MappedBudget is how much of the resident set badger's mapped files may
// take: what the anonymous memory leaves of Total, and at least Floor.
// Paging mapped files out drops their clean pages from the page cache too
// (MADV_PAGEOUT), so a read of them after that goes to the disk again: a
// fixed 48 MiB made a cold grep -r after a source tree's commit read the
// value logs 3 to 5 times over (1.36 GiB read from disk for 0.58 GiB that
// gocryptfs reads). Letting the mapped pages use the room the heap leaves
// keeps the peak where the heap's peak puts it.
type MappedBudget struct {
	Floor, Total int64
}

// of is the budget for mapped files while anon bytes are anonymous.
func (b MappedBudget) of(anon int64) int64 { return max(b.Floor, b.Total-anon) }

// PageOutShared asks the kernel to take the pages of the process's shared
// file mappings (badger's files: nothing else here maps files shared) out of
// its resident set: first of every file but badger's tables (.sst), then, if
// tables is set and the process still has more than budget bytes of
// file-backed memory, of the tables too, which are read again into the page
// cache right away (without mapping them) because every lookup reads them:
// MADV_PAGEOUT drops clean pages from the page cache as well. It returns how
// many mappings it advised and whether the tables were among them.
func PageOutShared(budget int64, tables bool) (n int, tablesOut bool, err error) {
	n, err = pageOut(func(path []byte) bool { return !bytes.HasSuffix(path, []byte(".sst")) })
	if err != nil || !tables {
		return n, false, err
	}
	if rss, err := MappedRSS(); err != nil || rss <= budget {
		return n, false, err
	}
	paths := map[string]bool{}
	m, err := pageOut(func(path []byte) bool {
		if bytes.HasSuffix(path, []byte(".sst")) {
			paths[string(path)] = true
			return true
		}
		return false
	})
	for p := range paths {
		readAgain(p)
	}
	return n + m, true, err
}

// readAgain starts reading file p into the page cache. The kernel reads
// ahead at most its read-ahead window per call, so it is asked per 128 KiB.
func readAgain(p string) {
	f, err := os.Open(p)
	if err != nil {
		return // a table deleted meanwhile
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return
	}
	const step = 128 << 10
	for off := int64(0); off < st.Size(); off += step {
		if unix.Fadvise(int(f.Fd()), off, step, unix.FADV_WILLNEED) != nil {
			return
		}
	}
}

// pageOut advises MADV_PAGEOUT on the shared file mappings whose path
// pick chooses.
func pageOut(pick func(path []byte) bool) (int, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("reading the process's mappings: %w", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, path, ok := sharedFileMapping(sc.Bytes())
		if !ok || !pick(path) {
			continue
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_PAGEOUT)
		switch errno {
		case 0:
			n++
		case unix.EINVAL:
			// MADV_PAGEOUT is Linux 5.4; before, nothing to do.
			return n, fmt.Errorf("madvise(MADV_PAGEOUT): %w (Linux 5.4 or later needed)", errno)
		default:
			// ENOMEM: badger unmapped the file meanwhile. Nothing lost.
		}
	}
	return n, sc.Err()
}

// sharedFileMapping parses a line of /proc/PID/maps ("start-end perms offset
// dev inode path") and reports the range and path of a shared mapping of a
// file (a deleted file's path ends in " (deleted)").
func sharedFileMapping(line []byte) (start, end uintptr, path []byte, ok bool) {
	f := bytes.Fields(line)
	if len(f) < 6 || len(f[1]) != 4 || f[1][3] != 's' || string(f[4]) == "0" {
		return 0, 0, nil, false
	}
	lo, hi, found := bytes.Cut(f[0], []byte("-"))
	if !found {
		return 0, 0, nil, false
	}
	a, err1 := strconv.ParseUint(string(lo), 16, 64)
	b, err2 := strconv.ParseUint(string(hi), 16, 64)
	if err1 != nil || err2 != nil || b <= a {
		return 0, 0, nil, false
	}
	return uintptr(a), uintptr(b), bytes.Join(f[5:], []byte(" ")), true
}

// tablesEvery is how often at most KeepMappedUnder pages out badger's
// tables (and reads them back into the page cache): when they alone are over
// the budget (a big tree), each time costs reading them all again.
const tablesEvery = 2 * time.Second

// KeepMappedUnder checks the process's resident memory every interval until
// ctx ends and pages out badger's mapped files whenever they take more than
// budget allows (see the comment at the top of this file).
func KeepMappedUnder(ctx context.Context, budget MappedBudget, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lastTables time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		anon, before, err := residentSet()
		if err != nil {
			log.Warn("not bounding the memory of mapped files", "err", err)
			return
		}
		limit := budget.of(anon)
		if before <= limit {
			continue
		}
		n, tables, err := PageOutShared(limit, time.Since(lastTables) >= tablesEvery)
		if err != nil {
			log.Warn("not bounding the memory of mapped files", "err", err)
			return
		}
		if tables {
			lastTables = time.Now()
		}
		after, _ := MappedRSS()
		log.Debug("paged out mapped files", "mappings", n, "tables", tables, "rss_file_before", before, "rss_file_after", after, "rss_file_limit", limit)
	}
}
