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
