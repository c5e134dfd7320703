package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// testIdentity is a fixed identity (seeds a, a+1, ...).
func testIdentity(t testing.TB, a, b byte) *Identity {
	id, err := identityFromSeeds(seq(32, a), seq(32, b))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func testRoster(owner, w, r *Identity) *Roster {
	return &Roster{Share: 7, Gen: 2, Version: 5, OwnerEmail: "alice@example.com", Owner: owner.Public,
		Members: []RosterMember{
			{Email: "bob@example.com", Keys: w.Public, Role: RoleWriter},
			{Email: "carol@example.com", Keys: r.Public, Role: RoleReader, WroteUntil: 1},
		}}
}

// testRosterMinGen is testRoster after a re-seal: generation 3, records of
// generations below 2 refused (encoded with version 0x03).
func testRosterMinGen(owner, w, r *Identity) *Roster {
	ro := testRoster(owner, w, r)
	ro.Gen, ro.MinGen, ro.Version = 3, 2, 6
	return ro
}

// TestRosterMinGen: a roster's lowest accepted generation is signed, has one
// encoding (0x02 when it is 0 or 1, 0x03 with the field otherwise), and no
// signer at all, not even the owner, may sign below it; NeedsReseal and
// NeedsRotation say when a former writer's signatures still count.
func TestRosterMinGen(t *testing.T) {
	owner, w, r := testIdentity(t, 1, 2), testIdentity(t, 3, 4), testIdentity(t, 5, 6)
	ro := testRosterMinGen(owner, w, r)
	b, err := ro.Sign(owner)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != RosterVersionMinGen {
		t.Fatalf("roster with MinGen 2 encoded as version %#x", b[0])
	}
	got, err := OpenRoster(b)
	if err != nil || got.MinGen != 2 || got.Gen != 3 {
		t.Fatalf("open: %v %+v", err, got)
	}
	for _, c := range []struct {
		id   *Identity
		gen  uint32
		want bool
	}{{owner, 1, false}, {w, 1, false}, {r, 1, false}, {owner, 2, true}, {w, 2, true}, {w, 3, true}, {r, 2, false}} {
		if _, ok := got.Signer(SignerOf(c.id.Public.Sign), c.gen); ok != c.want {
			t.Errorf("signer %x gen %d: %v, want %v", c.id.Public.Sign[:2], c.gen, ok, c.want)
		}
	}
	// MinGen 0 and 1 encode as version 0x02, alike.
	for _, m := range []uint32{0, 1} {
		ro := testRoster(owner, w, r)
		ro.MinGen = m
		b1, err := ro.Sign(owner)
		if err != nil || b1[0] != RosterVersion {
			t.Fatalf("MinGen %d: %v, version %#x", m, err, b1[0])
		}
	}
	// A 0x03 roster whose MinGen is 1 is not canonical, even if signed.
	low := testRoster(owner, w, r)
	body := low.body()
	body = append(append([]byte{RosterVersionMinGen}, body[1:13]...), append([]byte{0, 0, 0, 1}, body[13:]...)...)
	forged := append(body, ed25519.Sign(owner.sign, rosterMessage(body))...)
	if _, err := OpenRoster(forged); !errors.Is(err, ErrRoster) {
		t.Fatalf("0x03 roster with MinGen 1: %v, want ErrRoster", err)
	}
	bad := testRosterMinGen(owner, w, r)
	bad.MinGen = 4
	if _, err := bad.Sign(owner); err == nil {
		t.Fatal("MinGen after the current generation signed")
	}

	// carol wrote until 1: with MinGen 2 her signatures are gone.
	if got.NeedsReseal() || got.NeedsRotation() {
		t.Fatal("re-sealed roster still needs a re-seal")
	}
	old := testRoster(owner, w, r) // gen 2, carol wrote until 1, no floor
	if !old.NeedsReseal() || old.NeedsRotation() {
		t.Fatal("a former writer's generation-1 signatures count: a re-seal is needed, no rotation")
	}
	old.Members[0].Role, old.Members[0].WroteUntil = RoleReader, 2 // bob demoted in generation 2
	if !old.NeedsRotation() {
		t.Fatal("bob wrote in the current generation: a rotation is needed")
	}
}

func TestRecordSignature(t *testing.T) {
	w := testIdentity(t, 1, 2)
	sealed := []byte("\x02sealed record bytes")
	mac := seq(32, 9)
	signed, err := SignRecord(w, RecordName, 42, mac, sealed)
	if err != nil {
		t.Fatal(err)
	}
	got, signer, sig, err := SplitRecord(signed)
	if err != nil || !bytes.Equal(got, sealed) || signer != SignerOf(w.Public.Sign) {
		t.Fatalf("split: %v", err)
	}
	if err := VerifyRecord(w.Public.Sign, RecordName, 42, mac, got, sig); err != nil {
		t.Fatal(err)
	}
	// Every bound field changes the message.
	other := testIdentity(t, 3, 4)
	for name, err := range map[string]error{
		"kind":   VerifyRecord(w.Public.Sign, RecordAttrs, 42, nil, got, sig),
		"id":     VerifyRecord(w.Public.Sign, RecordName, 43, mac, got, sig),
		"mac":    VerifyRecord(w.Public.Sign, RecordName, 42, seq(32, 10), got, sig),
		"sealed": VerifyRecord(w.Public.Sign, RecordName, 42, mac, append(bytes.Clone(got), 0), sig),
		"key":    VerifyRecord(other.Public.Sign, RecordName, 42, mac, got, sig),
	} {
		if !errors.Is(err, ErrRecordSig) {
			t.Errorf("%s changed: %v, want ErrRecordSig", name, err)
		}
	}
	if _, _, _, err := SplitRecord(sealed); !errors.Is(err, ErrRecordSig) {
		t.Fatalf("unsigned record split: %v", err)
	}
}

func TestRosterSignOpen(t *testing.T) {
	owner, w, r := testIdentity(t, 1, 2), testIdentity(t, 3, 4), testIdentity(t, 5, 6)
	ro := testRoster(owner, w, r)
	b, err := ro.Sign(owner)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenRoster(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 5 || len(got.Members) != 2 || got.Members[1].WroteUntil != 1 || !got.Owner.Equal(owner.Public) {
		t.Fatalf("roster round trip: %+v", got)
	}
	// Signers: the owner and the writer sign any generation; the reader only
	// generation 1 (it wrote until then); nobody generation 3 (not yet).
	for _, c := range []struct {
		id   *Identity
		gen  uint32
		want bool
	}{{owner, 2, true}, {w, 1, true}, {w, 2, true}, {r, 1, true}, {r, 2, false}, {w, 3, false}, {testIdentity(t, 7, 8), 1, false}} {
		if _, ok := got.Signer(SignerOf(c.id.Public.Sign), c.gen); ok != c.want {
			t.Errorf("signer %x gen %d: %v, want %v", c.id.Public.Sign[:2], c.gen, ok, c.want)
		}
	}
	// Signed by another key than the owner it names; one byte changed; not canonical.
	if _, err := ro.Sign(w); err == nil {
		t.Fatal("signed by a non-owner")
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 1
		if _, err := OpenRoster(c); !errors.Is(err, ErrRoster) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	unsorted := testRoster(owner, w, r)
	unsorted.Members[0], unsorted.Members[1] = unsorted.Members[1], unsorted.Members[0]
	if _, err := unsorted.Sign(owner); err == nil {
		t.Fatal("unsorted roster signed")
	}
}

func TestInviteSealOpen(t *testing.T) {
	owner, m := testIdentity(t, 1, 2), testIdentity(t, 3, 4)
	inv := Invite{Share: 7, Gen: 2, Root: 99, OwnerEmail: "alice@example.com", Folder: "Photos"}
	copy(inv.Secret[:], seq(32, 0x60))
	blob, err := SealInvite(owner, "bob@example.com", m.Public, inv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenInvite(m, "bob@example.com", owner.Public.Sign, blob)
	if err != nil || *got != inv {
		t.Fatalf("open: %v %+v", err, got)
	}
	other := testIdentity(t, 5, 6)
	if _, err := OpenInvite(other, "bob@example.com", owner.Public.Sign, blob); !errors.Is(err, ErrInvite) {
		t.Fatalf("another member opened it: %v", err)
	}
	if _, err := OpenInvite(m, "eve@example.com", owner.Public.Sign, blob); !errors.Is(err, ErrInvite) {
		t.Fatalf("opened as another e-mail: %v", err)
	}
	if _, err := OpenInvite(m, "bob@example.com", other.Public.Sign, blob); !errors.Is(err, ErrInvite) {
		t.Fatalf("accepted with another owner key: %v", err)
	}
	// The server re-wraps a secret of its choice for the member: the owner's signature fails.
	forged, _ := SealInvite(other, "bob@example.com", m.Public, inv)
	if _, err := OpenInvite(m, "bob@example.com", owner.Public.Sign, forged); !errors.Is(err, ErrInvite) {
		t.Fatalf("forged invitation accepted: %v", err)
	}
	if OwnerShareSecret(Key{1}, 7, 1) == OwnerShareSecret(Key{1}, 7, 2) || OwnerShareSecret(Key{1}, 7, 1) == OwnerShareSecret(Key{1}, 8, 1) {
		t.Fatal("owner share secrets repeat")
	}
}

// sharingVectors is testdata/sharing_vectors.json (docs/FORMAT.md §3g).
type sharingVectors struct {
	OwnerBoxPrivate, OwnerSignSeed   string
	MemberBoxPrivate, MemberSignSeed string
	Roster                           string // hex, signed
	RosterMinGen                     string // hex, signed: testRosterMinGen (version 0x03)
	RecordSealed                     string // hex
	RecordMAC                        string
	RecordSigned                     string // name record of parent 42
	Invite                           string // hex, opens with the member key
	InviteSecret                     string
	OwnerSecretMaster                string
	OwnerSecret                      string // OwnerShareSecret(master, 7, 2)
}

// TestSharingVectors checks the committed vectors byte for byte (rosters and
// signatures are deterministic; the invitation, whose HPKE encapsulation is
// random, must open to the recorded secret). KUMO_WRITE_VECTORS=1 rewrites them.
func TestSharingVectors(t *testing.T) {
	owner, w, r := testIdentity(t, 1, 2), testIdentity(t, 3, 4), testIdentity(t, 5, 6)
	roster, err := testRoster(owner, w, r).Sign(owner)
	if err != nil {
		t.Fatal(err)
	}
	rosterMin, err := testRosterMinGen(owner, w, r).Sign(owner)
	if err != nil {
		t.Fatal(err)
	}
	sealed, mac := seq(60, 0x80), seq(32, 9)
	signed, err := SignRecord(w, RecordName, 42, mac, sealed)
	if err != nil {
		t.Fatal(err)
	}
	var master Key
	copy(master[:], seq(32, 0x40))
	path := filepath.Join("testdata", "sharing_vectors.json")
	if os.Getenv("KUMO_WRITE_VECTORS") == "1" {
		inv := Invite{Share: 7, Gen: 2, Root: 99, OwnerEmail: "alice@example.com", Folder: "Photos"}
		copy(inv.Secret[:], seq(32, 0x60))
		blob, err := SealInvite(owner, "bob@example.com", w.Public, inv)
		if err != nil {
			t.Fatal(err)
		}
		v := sharingVectors{hex.EncodeToString(seq(32, 1)), hex.EncodeToString(seq(32, 2)), hex.EncodeToString(seq(32, 3)), hex.EncodeToString(seq(32, 4)),
			hex.EncodeToString(roster), hex.EncodeToString(rosterMin), hex.EncodeToString(sealed), hex.EncodeToString(mac), hex.EncodeToString(signed),
			hex.EncodeToString(blob), hex.EncodeToString(inv.Secret[:]), hex.EncodeToString(master[:]),
			hex.EncodeToString(func() []byte { k := OwnerShareSecret(master, 7, 2); return k[:] }())}
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v sharingVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.Roster != hex.EncodeToString(roster) {
		t.Errorf("roster encoding or signature differs from the vector")
	}
	if v.RosterMinGen != hex.EncodeToString(rosterMin) {
		t.Errorf("roster (version 0x03, MinGen) encoding or signature differs from the vector")
	}
	if v.RecordSigned != hex.EncodeToString(signed) {
		t.Errorf("record signature differs from the vector")
	}
	secret := OwnerShareSecret(master, 7, 2)
	if v.OwnerSecret != hex.EncodeToString(secret[:]) {
		t.Errorf("owner share secret differs from the vector")
	}
	blob, _ := hex.DecodeString(v.Invite)
	inv, err := OpenInvite(w, "bob@example.com", owner.Public.Sign, blob)
	if err != nil || hex.EncodeToString(inv.Secret[:]) != v.InviteSecret || inv.Share != 7 || inv.Gen != 2 || inv.Root != 99 || inv.Folder != "Photos" {
		t.Errorf("invitation vector: %v %+v", err, inv)
	}
}
