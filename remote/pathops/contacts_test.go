package pathops_test

import (
	"errors"
	"path/filepath"
	"testing"

	"kumo/internal/keys"
	"kumo/remote/pathops"
)

// TestContacts: keys are pinned on first use and kept on disk; other keys are
// refused until verified with their fingerprint; roster versions only grow.
func TestContacts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kumo", "contacts.json")
	c, err := pathops.LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := keys.NewIdentity()
	b, _ := keys.NewIdentity()
	if err := c.Check("x@example.com", a.Public); err != nil {
		t.Fatal(err)
	}
	c, err = pathops.LoadContacts(path) // survives a restart
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check("x@example.com", a.Public); err != nil {
		t.Fatal(err)
	}
	if err := c.Check("x@example.com", b.Public); !errors.Is(err, pathops.ErrContactChanged) {
		t.Fatalf("changed keys: %v", err)
	}
	if err := c.Verify("x@example.com", a.Public.Fingerprint(), b.Public); err == nil {
		t.Fatal("verify pinned keys whose fingerprint is not the one given")
	}
	if err := c.Verify("x@example.com", b.Public.Fingerprint(), b.Public); err != nil {
		t.Fatal(err)
	}
	if p, ok := c.Pinned("x@example.com"); !ok || !p.Equal(b.Public) {
		t.Fatal("verified keys not pinned")
	}
	if err := c.SeeRoster("o", 7, 3); err != nil {
		t.Fatal(err)
	}
	c, _ = pathops.LoadContacts(path)
	if err := c.SeeRoster("o", 7, 2); !errors.Is(err, pathops.ErrRosterRollback) {
		t.Fatalf("older roster: %v", err)
	}
	if err := c.SeeRoster("o", 7, 3); err != nil {
		t.Fatal(err)
	}
	if err := c.SeeRoster("o", 8, 1); err != nil {
		t.Fatal(err)
	}
}
