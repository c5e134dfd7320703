package cache

import (
	"slices"
	"sync"
	"sync/atomic"
)

// listedDirs remembers the entries of the directories listed last, so a
// Lookup of a name one of those listings held is answered from memory: an
// rm -rf unlinks the names readdir has just listed, and each unlink's
// badger read of its entry was a tenth of the daemon's CPU in it.
//
// A remembered directory holds while its EntriesGen is the one it was
// remembered at (even, read before the listing; see EntriesGen). Entries
// change only in ApplySeq, under applyMu, which moves the counters of the
// directories it changes before and after the change: it carries each
// remembered directory whose counter it moves forward through its own
// change (carry), so a directory emptied name by name stays remembered.
// Reset moves every counter and so forgets them all.
//
// A directory the kernel lists from its own cache (FOPEN_CACHE_DIR) never
// reaches List, so its names are looked up one by one: the second Lookup in
// a row that finds its name only in the store, in the same directory, lists
// it (listAfterMiss). That is an rm -rf of a tree some tool listed before,
// or a stat of every name.
type listedDirs struct {
	mu       sync.Mutex
	dirs     [listedMax]*listedDir
	next     int       // ring position of the next directory to remember
	closed   bool      // the store closed: lookups go to it (and fail as closed)
	lastMiss uint64    // directory of the last lookup found only in the store (listAfterMiss)
	big      [4]uint64 // directories last found too big to remember
}

// close forgets every directory, for good.
func (l *listedDirs) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dirs, l.closed = [listedMax]*listedDir{}, true
}

type listedDir struct {
	dir   uint64
	gen   uint64 // EntriesGen(dir) the entries hold at
	byMAC map[string]Entry
}

const (
	listedMax = 16 // directories: rm -rf descends (lists) before it unlinks in the parent
	// listedMaxEntries: a bigger directory is not remembered (memory).
	listedMaxEntries = 4096
)

// remember keeps the entries of dir listed at gen, if the directory's
// counter still says gen (no change began since).
func (l *listedDirs) remember(dir, gen uint64, slot *atomic.Uint64, es []Entry) {
	if len(es) > listedMaxEntries {
		l.tooBig(dir)
		return
	}
	if gen%2 != 0 {
		return
	}
	byMAC := make(map[string]Entry, len(es))
	for _, e := range es {
		e.Name = slices.Clone(e.Name) // the caller's to keep or change
		byMAC[e.NameMAC] = e
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || slot.Load() != gen {
		return
	}
	d := &listedDir{dir: dir, gen: gen, byMAC: byMAC}
	for i, o := range l.dirs {
		if o != nil && o.dir == dir {
			l.dirs[i] = d
			return
		}
	}
	l.dirs[l.next] = d
	l.next = (l.next + 1) % listedMax
}

// tooBig notes dir as too big to remember, so missed lookups in it do not
// list it again and again.
func (l *listedDirs) tooBig(dir uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.big[:], dir) {
		copy(l.big[:], l.big[1:])
		l.big[len(l.big)-1] = dir
	}
}

// listAfterMiss says whether a Lookup that found its name in dir, but in
// no remembered listing, should list dir: when the miss before it was in dir
// too, and dir is not one found too big to remember.
func (l *listedDirs) listAfterMiss(dir uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || slices.Contains(l.big[:], dir) {
		return false
	}
	if l.lastMiss != dir {
		l.lastMiss = dir
		return false
	}
	l.lastMiss = 0
	return true
}

// lookup answers (dir, nameMAC) from a remembered listing that still holds:
// hit says whether it could, found whether the name is there.
func (l *listedDirs) lookup(dir uint64, nameMAC string, slot *atomic.Uint64) (e Entry, found, hit bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.dirs {
		if d != nil && d.dir == dir {
			if d.gen != slot.Load() {
				return Entry{}, false, false
			}
			e, found = d.byMAC[nameMAC]
			e.Name = slices.Clone(e.Name) // the caller's to keep or change
			return e, found, true
		}
	}
	return Entry{}, false, false
}

// carrying are the remembered directories a mutation carries forward, with
// the counters they held at before it.
type carrying []*listedDir

// carry picks, before m's first move of the counters, the remembered
// directories whose counter m moves and that still hold; it forgets those
// that no longer do. Under applyMu.
func (l *listedDirs) carry(m *Mutation, g *entryGens) carrying {
	if len(m.DeleteEntries)+len(m.PutEntries) == 0 {
		return nil // a node-only change (a write, a close): no counter moves
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out carrying
	for i, d := range l.dirs {
		if d == nil || !m.movesSlotOf(d.dir, g) {
			continue
		}
		if d.gen != g.slot(d.dir).Load() {
			l.dirs[i] = nil
			continue
		}
		out = append(out, d)
	}
	return out
}

// carried applies m's entry changes (deletes, then puts, as Apply does) to
// the directories carry picked and moves them to their counters' new value,
// after m's second move; when m failed (nothing of it applied), it forgets
// them. Under applyMu.
func (l *listedDirs) carried(ds carrying, m *Mutation, g *entryGens, ok bool) {
	if len(ds) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range ds {
		i := slices.Index(l.dirs[:], d)
		if i < 0 {
			// Replaced or evicted meanwhile. A listing that replaced it read
			// the counter before this change (it holds the older state at
			// the older gen: never carried, it just stops matching) or after.
			continue
		}
		if !ok {
			l.dirs[i] = nil
			continue
		}
		for _, e := range m.DeleteEntries {
			if e.Parent == d.dir {
				delete(d.byMAC, e.NameMAC)
			}
		}
		for _, e := range m.PutEntries {
			if e.Parent == d.dir {
				e.Name = slices.Clone(e.Name)
				d.byMAC[e.NameMAC] = e
			}
		}
		if len(d.byMAC) > listedMaxEntries {
			l.dirs[i] = nil
			continue
		}
		d.gen = g.slot(d.dir).Load()
	}
}

// movesSlotOf says whether applying m moves dir's EntriesGen counter.
func (m *Mutation) movesSlotOf(dir uint64, g *entryGens) bool {
	c := g.slot(dir)
	for _, es := range [2][]Entry{m.DeleteEntries, m.PutEntries} {
		for _, e := range es {
			if g.slot(e.Parent) == c {
				return true
			}
		}
	}
	return false
}
