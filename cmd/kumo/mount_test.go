package main

import "testing"

// TestParseMountOpts: allow_other always brings default_permissions (FUSE
// checks no modes without it), nonempty is ours, unknown options are refused.
func TestParseMountOpts(t *testing.T) {
	o, err := parseMountOpts([]string{"allow_other,uid=1000", "nonempty"})
	if err != nil || !o.allowOther || !o.defaultPerms || !o.nonempty || o.uid == nil || *o.uid != 1000 {
		t.Fatalf("allow_other,uid=1000,nonempty: %+v %v", o, err)
	}
	if o, err := parseMountOpts([]string{"ro,noatime"}); err != nil || o.defaultPerms || o.allowOther || !o.ro || o.nonempty {
		t.Fatalf("ro,noatime: %+v %v", o, err)
	}
	if _, err := parseMountOpts([]string{"allow_root"}); err == nil {
		t.Fatal("an unknown option was accepted")
	}
}

// TestEmbeddedReserve: the room kept free under the embedded cloud is 5 % of
// the disk, at least 64 MiB and at most 1 GiB (as the README says).
func TestEmbeddedReserve(t *testing.T) {
	for _, c := range []struct{ disk, want int64 }{
		{512 << 20, 64 << 20},
		{4 << 30, 4 << 30 / 20},
		{2 << 40, 1 << 30},
	} {
		if got := embeddedReserve(c.disk); got != c.want {
			t.Errorf("embeddedReserve(%d) = %d, want %d", c.disk, got, c.want)
		}
	}
}

// TestMemoryLimit: the soft limit leaves the live heap its headroom on top of
// the runtime's overhead (left out, the heap's goal fell below the live heap
// during an rm -rf and the collector ran back to back), at least the floor;
// the ceiling shrinks the headroom but never cuts into the live heap.
func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ live, overhead, want int64 }{
		{40 * mib, 10 * mib, 192 * mib},                  // small heap: the floor
		{120 * mib, 30 * mib, 120*mib + 30*mib + 48*mib}, // the least headroom, and the overhead
		{170 * mib, 0, 170*mib + 48*mib},                 // a quarter of 170 MiB is less than the least headroom
		{137 * mib, 60 * mib, 240 * mib},                 // the ceiling: 43 MiB of headroom left
		{200 * mib, 30 * mib, 200*mib + 30*mib + 24*mib}, // past the ceiling: half the least headroom
		{400 * mib, 20 * mib, 400*mib + 20*mib + 24*mib}, // a big heap keeps room above it
		{150 * mib, -5 * mib, 150*mib + 48*mib},          // a torn read of the metrics counts no overhead
	} {
		if got := memoryLimit(c.live, c.overhead, 192*mib, 240*mib); got != c.want {
			t.Errorf("memoryLimit(live %d MiB, overhead %d MiB) = %d MiB, want %d MiB", c.live/mib, c.overhead/mib, got/mib, c.want/mib)
		}
		if got := memoryLimit(c.live, c.overhead, 192*mib, 240*mib); got <= c.live+max(c.overhead, 0) {
			t.Errorf("memoryLimit(live %d MiB, overhead %d MiB) = %d MiB: no room above the live heap", c.live/mib, c.overhead/mib, got/mib)
		}
	}
}
