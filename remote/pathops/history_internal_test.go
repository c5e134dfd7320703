package pathops

import (
	"testing"
	"time"

	"kumo/remote/api"
)

// TestRemovalStart: the snapshot for a trash restore of a directory is taken
// before the first deletion of its removal, not before a descendant deleted
// on its own long before (which would undo that deletion and lose the edits
// made since).
func TestRemovalStart(t *testing.T) {
	s := int64(time.Second)
	item := func(node, parent uint64, deleted int64, dir bool) api.TrashItem {
		typ := api.TypeFile
		if dir {
			typ = api.TypeDir
		}
		return api.TrashItem{Deleted: deleted, Parent: parent, Node: api.Node{ID: node, Type: typ}}
	}
	const day = int64(24 * time.Hour)
	raw := []api.TrashItem{
		item(7, 10, 5*day, false),        // deleted on its own, days before
		item(8, 99, 5*day+s, false),      // elsewhere
		item(11, 12, 10*day-30*s, false), // rm -rf: the deepest first
		item(12, 10, 10*day-20*s, true),
		item(13, 10, 10*day-10*s, false),
		item(10, 1, 10*day, true), // the directory itself, last
	}
	if got := removalStart(raw, 10, 10*day); got != 10*day-30*s {
		t.Fatalf("removal of 10 began at %v, want 30 s before its deletion", time.Duration(10*day-got))
	}
	if got := removalStart(raw, 12, 10*day-20*s); got != 10*day-30*s {
		t.Fatalf("removal of 12: %v", got)
	}
	if got := removalStart(raw, 13, 10*day-10*s); got != 10*day-10*s {
		t.Fatalf("a file: %v", got)
	}
}
