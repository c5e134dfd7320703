package cache

import (
	"slices"
	"sync"
)

// newDirs knows the names of directories created empty in this session
// (Mutation.NewDirs), so a lookup of a name such a directory does not hold
// is answered without a badger read. An untar or a copy looks every name it
// creates up twice (the kernel's lookup, then the create's own check) and
// finds nothing each time, and a badger read first waits for the commit the
// write-behind applier has in flight (its read timestamp): that wait was
// the largest part of a create's time in BenchmarkCoreUntar.
//
// It only ever answers "absent": a name it holds is looked up as before. So
// a name recorded for a change that then failed costs a badger read, never
// a wrong answer; names are added before a mutation becomes visible and
// removed after. A directory whose names would pass the bounds is dropped
// (its lookups read badger again).
type newDirs struct {
	mu    sync.Mutex
	names map[uint64]map[string]struct{} // directory -> name MACs of its entries
	n     int                            // names held
}

// Bounds of the memory held: about 100 bytes a name.
const (
	newDirsMaxNames = 1 << 17
	newDirsMaxDirs  = 1 << 15
)

// absent reports that directory parent is known to have no entry nameMAC.
func (x *newDirs) absent(parent uint64, nameMAC string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	set, ok := x.names[parent]
	if !ok {
		return false
	}
	_, has := set[nameMAC]
	return !has
}

// adding records the directories m creates and the names it puts, before m
// is applied.
func (x *newDirs) adding(m *Mutation) {
	if len(m.NewDirs) == 0 && len(m.PutEntries) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, id := range m.NewDirs {
		x.dropLocked(id)
		if len(x.names) < newDirsMaxDirs {
			if x.names == nil {
				x.names = map[uint64]map[string]struct{}{}
			}
			x.names[id] = map[string]struct{}{}
		}
	}
	for _, e := range m.PutEntries {
		set, ok := x.names[e.Parent]
		if !ok {
			continue
		}
		if _, has := set[e.NameMAC]; has {
			continue
		}
		if x.n >= newDirsMaxNames {
			x.dropLocked(e.Parent)
			continue
		}
		set[e.NameMAC] = struct{}{}
		x.n++
	}
}

// applied forgets the names and directories m deleted, once it is applied.
// (A failed mutation keeps them: a name held only costs a badger read.)
func (x *newDirs) applied(m *Mutation) {
	if len(m.DeleteEntries) == 0 && len(m.DeleteNodes) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range m.DeleteEntries {
		if putsEntry(m, e) {
			continue // deleted and put again (deletes go first): it exists
		}
		if set, ok := x.names[e.Parent]; ok {
			if _, has := set[e.NameMAC]; has {
				delete(set, e.NameMAC)
				x.n--
			}
		}
	}
	for _, id := range m.DeleteNodes {
		if !slices.Contains(m.NewDirs, id) {
			x.dropLocked(id)
		}
	}
}

func putsEntry(m *Mutation, e Entry) bool {
	for _, p := range m.PutEntries {
		if p.Parent == e.Parent && p.NameMAC == e.NameMAC {
			return true
		}
	}
	return false
}

func (x *newDirs) dropLocked(id uint64) {
	if set, ok := x.names[id]; ok {
		x.n -= len(set)
		delete(x.names, id)
	}
}

// reset forgets everything (the tree was dropped).
func (x *newDirs) reset() {
	x.mu.Lock()
	x.names, x.n = nil, 0
	x.mu.Unlock()
}
