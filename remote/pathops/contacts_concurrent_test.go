package pathops

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"kumo/internal/keys"
)

// The CLI and a mount's daemon each hold the contacts file and save it
// (a share's rotation while the drive sees rosters): two holders saving at
// once neither fail (before, both wrote contacts.json.tmp and one renamed
// the other's away: "rename ...: no such file or directory", a CI failure
// of `kumo share rm`) nor lose what the other recorded.
func TestContactsTwoHoldersSaveConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contacts.json")
	a, err := LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i, c := range []*Contacts{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := uint64(1); v <= n; v++ {
				if err := c.SeeRoster(fmt.Sprintf("owner%d", i), v%7+1, v); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("save: %v", err)
	}
	r, err := LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		for share := uint64(1); share <= 7; share++ {
			key := fmt.Sprintf("owner%d/%016x", i, share)
			if v := r.f.Rosters[key]; v < n-7 {
				t.Errorf("roster %s: version %d on disk, want at least %d (one holder's saves lost)", key, v, n-7)
			}
		}
	}
}

// A verify run by one holder (`kumo contacts verify` while the drive runs)
// is not undone when the other, still holding the old pin, saves next.
func TestContactsVerifyElsewhereStands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contacts.json")
	old, _ := keys.NewIdentity()
	renewed, _ := keys.NewIdentity()
	daemon, err := LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Check("x@example.com", old.Public); err != nil {
		t.Fatal(err)
	}
	cli, err := LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Verify("x@example.com", renewed.Public.Fingerprint(), renewed.Public); err != nil {
		t.Fatal(err)
	}
	if err := daemon.SeeRoster("owner", 1, 3); err != nil {
		t.Fatal(err)
	}
	r, err := LoadContacts(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check("x@example.com", renewed.Public); err != nil {
		t.Fatalf("the verified keys after the other holder saved: %v", err)
	}
	if err := daemon.Check("x@example.com", renewed.Public); err != nil {
		t.Fatalf("the holder that saved took in the verify: %v", err)
	}
}
