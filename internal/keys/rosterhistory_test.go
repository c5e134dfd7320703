package keys

import (
	"errors"
	"strings"
	"testing"
)

// TestRosterHistorySigner: in history views a record of a generation below
// the roster's lowest accepted one is accepted if the owner or a current
// writer signed it, and refused (saying the member was removed or demoted)
// if a former writer did; at or above MinGen the live rule holds.
func TestRosterHistorySigner(t *testing.T) {
	owner, w, r := testIdentity(t, 1, 2), testIdentity(t, 3, 4), testIdentity(t, 5, 6)
	removed := testIdentity(t, 7, 8)
	ro := testRosterMinGen(owner, w, r) // gen 3, MinGen 2; carol (r) a reader who wrote until 1
	ro.Members = append(ro.Members, RosterMember{Email: "dave@example.com", Keys: removed.Public, Role: RoleRemoved, WroteUntil: 1})
	b, err := ro.Sign(owner)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenRoster(b)
	if err != nil {
		t.Fatal(err)
	}
	stranger := testIdentity(t, 9, 10)
	for _, c := range []struct {
		id   *Identity
		gen  uint32
		want string // "" accepted, else part of the refusal
	}{
		{owner, 1, ""}, {w, 1, ""},
		{r, 1, "since made a reader"}, {removed, 1, "since removed"},
		{stranger, 1, "neither the owner nor a member"},
		{owner, 0, "not one of this share's"}, {owner, 4, "not one of this share's"},
		{owner, 2, ""}, {w, 3, ""}, {r, 2, "not a writer"}, {removed, 2, "not a writer"},
	} {
		pub, err := got.HistorySigner(SignerOf(c.id.Public.Sign), c.gen)
		switch {
		case c.want == "" && (err != nil || pub != c.id.Public.Sign):
			t.Errorf("signer %x gen %d: %v, want accepted", c.id.Public.Sign[:2], c.gen, err)
		case c.want != "" && (!errors.Is(err, ErrRecordSig) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("signer %x gen %d: %v, want ErrRecordSig saying %q", c.id.Public.Sign[:2], c.gen, err, c.want)
		}
		// The live rule is unchanged: nobody below MinGen.
		if _, ok := got.Signer(SignerOf(c.id.Public.Sign), c.gen); ok && c.gen < got.MinGen {
			t.Errorf("live rule accepts generation %d", c.gen)
		}
	}
}
