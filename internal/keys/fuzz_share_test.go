package keys

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpenRoster: no byte string but the owner-signed one opens, none panics,
// and whatever opens re-encodes to the same bytes (one encoding per roster).
func FuzzOpenRoster(f *testing.F) {
	owner, w, r := testIdentity(f, 1, 2), testIdentity(f, 3, 4), testIdentity(f, 5, 6)
	good, err := testRoster(owner, w, r).Sign(owner)
	if err != nil {
		f.Fatal(err)
	}
	goodMin, err := testRosterMinGen(owner, w, r).Sign(owner)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(goodMin)
	f.Add([]byte{})
	f.Add(good[:len(good)-1])
	f.Add(append([]byte{RosterVersion}, make([]byte, 200)...))
	f.Add(append([]byte{RosterVersionMinGen}, make([]byte, 200)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenRoster(b)
		if err != nil {
			if !errors.Is(err, ErrRoster) {
				t.Fatalf("error %v is not ErrRoster", err)
			}
			return
		}
		if !bytes.Equal(b, good) && !bytes.Equal(b, goodMin) && got.Owner.Equal(owner.Public) {
			t.Fatalf("forged roster accepted: %x", b)
		}
		if !bytes.Equal(append(got.body(), b[len(b)-64:]...), b) {
			t.Fatalf("roster not canonical: %x", b)
		}
	})
}

// FuzzOpenInvite: only the owner-signed invitation opens; nothing panics.
func FuzzOpenInvite(f *testing.F) {
	owner, m := testIdentity(f, 1, 2), testIdentity(f, 3, 4)
	inv := Invite{Share: 7, Gen: 2, Root: 99, OwnerEmail: "alice@example.com", Folder: "Photos"}
	good, err := SealInvite(owner, "bob@example.com", m.Public, inv)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)-1])
	f.Add([]byte{InviteVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenInvite(m, "bob@example.com", owner.Public.Sign, b)
		if err != nil {
			if !errors.Is(err, ErrInvite) {
				t.Fatalf("error %v is not ErrInvite", err)
			}
			return
		}
		if *got != inv {
			t.Fatalf("forged invitation accepted: %x", b)
		}
	})
}

// FuzzVerifyRecord: a signed share record verifies only as signed (the
// signer id only picks the key to verify with, so it is not authenticated
// itself); nothing panics.
func FuzzVerifyRecord(f *testing.F) {
	w := testIdentity(f, 1, 2)
	mac := seq(32, 9)
	good, _ := SignRecord(w, RecordName, 42, mac, []byte("\x02sealed"))
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:RecordSigSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		sealed, _, sig, err := SplitRecord(b)
		if err != nil {
			if !errors.Is(err, ErrRecordSig) {
				t.Fatalf("error %v is not ErrRecordSig", err)
			}
			return
		}
		if VerifyRecord(w.Public.Sign, RecordName, 42, mac, sealed, sig) == nil &&
			(!bytes.Equal(sealed, good[:len(good)-RecordSigSize]) || !bytes.Equal(sig, good[len(good)-64:])) {
			t.Fatalf("forged record verifies: %x", b)
		}
	})
}
