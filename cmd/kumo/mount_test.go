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
