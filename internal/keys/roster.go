package keys

// The roster of a shared folder: who may read and who may write, signed by
// the owner. Clients verify every record of a share against it (a record is
// valid only if signed by the owner or a writer), and pin the highest
// version they have seen, so the server can neither add a writer nor roll
// the list back. A roster also names the lowest key generation whose
// records are accepted (MinGen): once the owner has re-sealed a folder after
// removing or demoting a writer, nothing signed in an older generation, by
// anyone, is data. Byte layout: docs/FORMAT.md §3g.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Role is a member's right in a share.
type Role uint8

const (
	// RoleRemoved is a former member kept in the roster only so that the
	// records it signed while a writer stay valid (WroteUntil).
	RoleRemoved Role = 0
	RoleReader  Role = 1
	RoleWriter  Role = 2
)

// String is the role's name as the API and the CLI spell it.
func (r Role) String() string {
	switch r {
	case RoleReader:
		return "reader"
	case RoleWriter:
		return "writer"
	case RoleRemoved:
		return "removed"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// ParseRole reads "reader" or "writer".
func ParseRole(s string) (Role, error) {
	switch s {
	case "reader":
		return RoleReader, nil
	case "writer":
		return RoleWriter, nil
	}
	return 0, fmt.Errorf("role %q: want reader or writer", s)
}

const (
	// RosterVersion is the first byte of an encoded roster with no lowest
	// accepted generation (MinGen 0 or 1: every generation is accepted).
	RosterVersion = 0x02
	// RosterVersionMinGen is the first byte of an encoded roster with a
	// lowest accepted generation of 2 or more, which follows the
	// generation. A roster has one encoding: MinGen <= 1 is always 0x02.
	RosterVersionMinGen = 0x03
	// MaxEmailSize bounds the e-mails in rosters and invitations.
	MaxEmailSize = 254
	// MaxRosterMembers bounds a roster's member count.
	MaxRosterMembers = 1000

	labelRoster = "kumo/v2/share-roster"
)

// ErrRoster is returned for a roster that does not decode or whose owner
// signature does not verify.
var ErrRoster = errors.New("keys: share roster is malformed or not signed by the share's owner")

// RosterMember is one account in a roster.
type RosterMember struct {
	Email string
	Keys  PublicIdentity
	Role  Role
	// WroteUntil is the last key generation whose records this member
	// signed as a writer (0: never a writer before). A member demoted or
	// removed keeps its past records valid up to this generation; a current
	// writer signs any generation.
	WroteUntil uint32
}

// Roster is a share's owner-signed member list at one version.
type Roster struct {
	Share uint64
	Gen   uint32 // the share's current key generation
	// MinGen is the lowest generation whose records are accepted (0 or 1:
	// all). The owner raises it to Gen once every record of the share is
	// re-sealed under Gen, after a writer was removed or demoted
	// (NeedsReseal): the former writer's old signatures stop counting.
	MinGen     uint32
	Version    uint64 // +1 on every change; clients refuse a lower one
	OwnerEmail string
	Owner      PublicIdentity
	Members    []RosterMember // sorted by e-mail, unique
}

// canonical checks what Encode and Decode both require.
func (r *Roster) canonical() error {
	if r.Share == 0 || r.Gen == 0 {
		return fmt.Errorf("share id and generation must not be 0")
	}
	if r.MinGen > r.Gen {
		return fmt.Errorf("lowest accepted generation %d is after the current %d", r.MinGen, r.Gen)
	}
	if err := checkEmail(r.OwnerEmail); err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	if len(r.Members) > MaxRosterMembers {
		return fmt.Errorf("%d members, at most %d", len(r.Members), MaxRosterMembers)
	}
	for i, m := range r.Members {
		if err := checkEmail(m.Email); err != nil {
			return fmt.Errorf("member %d: %w", i, err)
		}
		if m.Email == r.OwnerEmail {
			return fmt.Errorf("the owner %s is not a member", m.Email)
		}
		if i > 0 && r.Members[i-1].Email >= m.Email {
			return fmt.Errorf("members not sorted by e-mail or repeated at %s", m.Email)
		}
		if m.Role > RoleWriter {
			return fmt.Errorf("member %s: unknown role %d", m.Email, m.Role)
		}
		if m.WroteUntil > r.Gen {
			return fmt.Errorf("member %s: wrote until generation %d, after the current %d", m.Email, m.WroteUntil, r.Gen)
		}
	}
	return nil
}

// checkEmail accepts what the server keys accounts by: trimmed, lower-case,
// 1..254 bytes, no control characters.
func checkEmail(e string) error {
	if e == "" || len(e) > MaxEmailSize {
		return fmt.Errorf("e-mail of %d bytes (want 1..%d)", len(e), MaxEmailSize)
	}
	if e != strings.ToLower(strings.TrimSpace(e)) {
		return fmt.Errorf("e-mail %q is not trimmed and lower-case", e)
	}
	for i := 0; i < len(e); i++ {
		if e[i] < 0x20 || e[i] == 0x7f {
			return fmt.Errorf("e-mail has a control character")
		}
	}
	return nil
}

// SortMembers puts members in the canonical order (by e-mail).
func (r *Roster) SortMembers() {
	slices.SortFunc(r.Members, func(a, b RosterMember) int { return strings.Compare(a.Email, b.Email) })
}

func (r *Roster) body() []byte {
	b := []byte{RosterVersion}
	if r.MinGen > 1 {
		b[0] = RosterVersionMinGen
	}
	b = binary.BigEndian.AppendUint64(b, r.Share)
	b = binary.BigEndian.AppendUint32(b, r.Gen)
	if r.MinGen > 1 {
		b = binary.BigEndian.AppendUint32(b, r.MinGen)
	}
	b = binary.BigEndian.AppendUint64(b, r.Version)
	b = append(b, byte(len(r.OwnerEmail)))
	b = append(b, r.OwnerEmail...)
	b = append(b, r.Owner.Box[:]...)
	b = append(b, r.Owner.Sign[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Members)))
	for _, m := range r.Members {
		b = append(b, byte(len(m.Email)))
		b = append(b, m.Email...)
		b = append(b, m.Keys.Box[:]...)
		b = append(b, m.Keys.Sign[:]...)
		b = append(b, byte(m.Role))
		b = binary.BigEndian.AppendUint32(b, m.WroteUntil)
	}
	return b
}

func rosterMessage(body []byte) []byte {
	return append([]byte(labelRoster+"\x00"), body...)
}

// Sign encodes the roster and signs it with the owner's identity, which must
// be r.Owner.
func (r *Roster) Sign(owner *Identity) ([]byte, error) {
	if !owner.Public.Equal(r.Owner) {
		return nil, fmt.Errorf("keys: roster: signing identity is not the roster's owner")
	}
	if err := r.canonical(); err != nil {
		return nil, fmt.Errorf("keys: roster: %w", err)
	}
	body := r.body()
	return append(body, ed25519.Sign(owner.sign, rosterMessage(body))...), nil
}

// OpenRoster decodes a roster and verifies its signature by the owner key it
// names. The caller must still check r.Owner against the owner's pinned keys
// and r.Version against the highest version it saw.
func OpenRoster(b []byte) (*Roster, error) {
	r, body, sig, err := decodeRoster(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRoster, err)
	}
	if !ed25519.Verify(r.Owner.Sign[:], rosterMessage(body), sig) {
		return nil, fmt.Errorf("%w: bad signature", ErrRoster)
	}
	return r, nil
}

// rosterReader reads the fixed fields of an encoded roster, remembering
// the first failure.
type rosterReader struct {
	b   []byte
	bad bool
}

func (d *rosterReader) take(n int) []byte {
	if d.bad || len(d.b) < n {
		d.bad = true
		return make([]byte, n)
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *rosterReader) key() (k [PublicKeySize]byte) { copy(k[:], d.take(PublicKeySize)); return }
func (d *rosterReader) str() string                  { return string(d.take(int(d.take(1)[0]))) }

func decodeRoster(b []byte) (*Roster, []byte, []byte, error) {
	if len(b) < 1+ed25519.SignatureSize || b[0] != RosterVersion && b[0] != RosterVersionMinGen {
		return nil, nil, nil, fmt.Errorf("unknown version or too short")
	}
	body, sig := b[:len(b)-ed25519.SignatureSize], b[len(b)-ed25519.SignatureSize:]
	d := &rosterReader{b: body[1:]}
	r := &Roster{}
	r.Share = binary.BigEndian.Uint64(d.take(8))
	r.Gen = binary.BigEndian.Uint32(d.take(4))
	if b[0] == RosterVersionMinGen {
		// 0 or 1 here re-encodes as 0x02: refused below as not canonical.
		r.MinGen = binary.BigEndian.Uint32(d.take(4))
	}
	r.Version = binary.BigEndian.Uint64(d.take(8))
	r.OwnerEmail = d.str()
	r.Owner.Box = d.key()
	r.Owner.Sign = d.key()
	n := int(binary.BigEndian.Uint16(d.take(2)))
	if n > MaxRosterMembers {
		return nil, nil, nil, fmt.Errorf("%d members, at most %d", n, MaxRosterMembers)
	}
	for i := 0; i < n && !d.bad; i++ {
		var m RosterMember
		m.Email = d.str()
		m.Keys.Box = d.key()
		m.Keys.Sign = d.key()
		m.Role = Role(d.take(1)[0])
		m.WroteUntil = binary.BigEndian.Uint32(d.take(4))
		r.Members = append(r.Members, m)
	}
	if d.bad || len(d.b) != 0 {
		return nil, nil, nil, fmt.Errorf("truncated or trailing bytes")
	}
	if err := r.canonical(); err != nil {
		return nil, nil, nil, err
	}
	// Canonical: one encoding per roster, so equal rosters are equal bytes.
	if !bytes.Equal(r.body(), body) {
		return nil, nil, nil, fmt.Errorf("not canonical")
	}
	return r, body, sig, nil
}

// Member returns the member with the given e-mail.
func (r *Roster) Member(email string) (RosterMember, bool) {
	for _, m := range r.Members {
		if m.Email == email {
			return m, true
		}
	}
	return RosterMember{}, false
}

// Signer returns the public key of signer if it may sign records of key
// generation gen: the owner; a current writer (any generation up to the
// roster's); a member who was a writer up to WroteUntil >= gen. Nobody
// signs a generation below MinGen.
func (r *Roster) Signer(signer SignerID, gen uint32) ([PublicKeySize]byte, bool) {
	if gen == 0 || gen > r.Gen || gen < r.MinGen {
		return [PublicKeySize]byte{}, false
	}
	if SignerOf(r.Owner.Sign) == signer {
		return r.Owner.Sign, true
	}
	for _, m := range r.Members {
		if SignerOf(m.Keys.Sign) != signer {
			continue
		}
		if m.Role == RoleWriter || m.WroteUntil >= gen {
			return m.Keys.Sign, true
		}
		return [PublicKeySize]byte{}, false
	}
	return [PublicKeySize]byte{}, false
}

// HistorySigner returns the public key of signer if it may have signed a
// kept version (history, trash) of key generation gen. At or above MinGen
// the rule is Signer's. Below it, where Signer accepts nobody, it accepts
// the owner and a member who is a writer in this roster: a removed or
// demoted writer kept the old generations' keys and its signing key, so
// with the server it could make a record of an old generation now, but it
// cannot sign as the owner or as a current writer. (Whether a current
// writer was one at gen is not in the roster; a current writer may write
// the folder anyway, and the server chooses which kept version it shows,
// so accepting its signature on an old generation gives nobody a record
// they could not make already.) A refusal wraps ErrRecordSig and says why.
func (r *Roster) HistorySigner(signer SignerID, gen uint32) ([PublicKeySize]byte, error) {
	if gen == 0 || gen > r.Gen {
		return [PublicKeySize]byte{}, fmt.Errorf("%w: generation %d is not one of this share's", ErrRecordSig, gen)
	}
	if gen >= r.MinGen {
		if pub, ok := r.Signer(signer, gen); ok {
			return pub, nil
		}
		return [PublicKeySize]byte{}, fmt.Errorf("%w: signed by %x, not a writer of generation %d", ErrRecordSig, signer[:4], gen)
	}
	if SignerOf(r.Owner.Sign) == signer {
		return r.Owner.Sign, nil
	}
	for _, m := range r.Members {
		if SignerOf(m.Keys.Sign) != signer {
			continue
		}
		if m.Role == RoleWriter {
			return m.Keys.Sign, nil
		}
		what := "since removed"
		if m.Role == RoleReader {
			what = "since made a reader"
		}
		return [PublicKeySize]byte{}, fmt.Errorf("%w: this version (key generation %d, before the folder was re-sealed at %d) was written by %s, a member %s: "+
			"versions signed by a former writer are refused, since it could still make them", ErrRecordSig, gen, r.MinGen, m.Email, what)
	}
	return [PublicKeySize]byte{}, fmt.Errorf("%w: version of key generation %d signed by %x, neither the owner nor a member", ErrRecordSig, gen, signer[:4])
}

// NeedsReseal says whether a former writer (removed, or demoted to reader)
// may still sign records of an accepted generation: the owner then re-seals
// the folder under the current generation and raises MinGen to it. If the
// former writer wrote in the current generation itself (a demotion not yet
// rotated), the share must first move to a new generation (NeedsRotation).
func (r *Roster) NeedsReseal() bool {
	floor := max(r.MinGen, 1)
	for _, m := range r.Members {
		if m.Role != RoleWriter && m.WroteUntil >= floor {
			return true
		}
	}
	return false
}

// NeedsRotation says whether a former writer wrote in the current
// generation: it keeps that generation's secret, so the re-seal must go to
// the next one.
func (r *Roster) NeedsRotation() bool {
	for _, m := range r.Members {
		if m.Role != RoleWriter && m.WroteUntil >= r.Gen {
			return true
		}
	}
	return false
}
