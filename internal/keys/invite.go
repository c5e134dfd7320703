package keys

// Share invitations: one generation's share secret wrapped for one member
// with HPKE (RFC 9180, Go's crypto/hpke: DHKEM(X25519, HKDF-SHA256),
// HKDF-SHA256, ChaCha20-Poly1305) to the member's X25519 identity key, and
// signed by the owner's Ed25519 identity key so that the server cannot make
// up an invitation. Byte layout: docs/FORMAT.md §3g.

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// InviteVersion is the first byte of a wrapped share secret.
	InviteVersion = 0x02
	// inviteEncSize is the size of DHKEM(X25519)'s encapsulated key.
	inviteEncSize = 32
	// maxFolderName bounds the folder name in an invitation (a file name).
	maxFolderName = 255

	infoInvite     = "kumo/v2/share-invite"
	labelInviteSig = "kumo/v2/share-invite-sig"
)

// ErrInvite is returned for a wrapped share secret that does not open or
// whose owner signature does not verify. One error for every cause.
var ErrInvite = errors.New("keys: share invitation does not open or is not signed by the share's owner")

// Invite is what a wrapped share secret holds.
type Invite struct {
	Share      uint64
	Gen        uint32
	Secret     Key
	Root       uint64 // the share root's node id in the owner's tree
	OwnerEmail string
	Folder     string // the shared folder's name in the owner's tree, for display
}

func inviteSuite() (hpke.KDF, hpke.AEAD) { return hpke.HKDFSHA256(), hpke.ChaCha20Poly1305() }

func (inv *Invite) encode() ([]byte, error) {
	if err := checkEmail(inv.OwnerEmail); err != nil {
		return nil, fmt.Errorf("owner: %w", err)
	}
	if inv.Folder == "" || len(inv.Folder) > maxFolderName {
		return nil, fmt.Errorf("folder name of %d bytes (want 1..%d)", len(inv.Folder), maxFolderName)
	}
	if inv.Share == 0 || inv.Gen == 0 {
		return nil, fmt.Errorf("share id and generation must not be 0")
	}
	b := binary.BigEndian.AppendUint64(nil, inv.Share)
	b = binary.BigEndian.AppendUint32(b, inv.Gen)
	b = append(b, inv.Secret[:]...)
	b = binary.BigEndian.AppendUint64(b, inv.Root)
	b = append(b, byte(len(inv.OwnerEmail)))
	b = append(b, inv.OwnerEmail...)
	b = append(b, byte(len(inv.Folder)))
	return append(b, inv.Folder...), nil
}

func decodeInvite(b []byte) (*Invite, error) {
	d := &rosterReader{b: b}
	inv := &Invite{}
	inv.Share = binary.BigEndian.Uint64(d.take(8))
	inv.Gen = binary.BigEndian.Uint32(d.take(4))
	copy(inv.Secret[:], d.take(32))
	inv.Root = binary.BigEndian.Uint64(d.take(8))
	inv.OwnerEmail = d.str()
	inv.Folder = d.str()
	if d.bad || len(d.b) != 0 {
		return nil, fmt.Errorf("truncated or trailing bytes")
	}
	if _, err := inv.encode(); err != nil {
		return nil, err
	}
	return inv, nil
}

// inviteAAD binds the ciphertext to the member it is for.
func inviteAAD(memberEmail string) []byte { return []byte(infoInvite + "\x00" + memberEmail) }

// inviteMessage is what the owner signs: the member's e-mail and X25519 key,
// the encapsulated key and the ciphertext.
func inviteMessage(memberEmail string, memberBox [PublicKeySize]byte, enc, ct []byte) []byte {
	m := []byte(labelInviteSig + "\x00")
	m = append(m, byte(len(memberEmail)))
	m = append(m, memberEmail...)
	m = append(m, memberBox[:]...)
	m = append(m, enc...)
	return append(m, ct...)
}

// SealInvite wraps inv for the member (e-mail and public identity keys) and
// signs it with the owner's identity:
// 0x02 || signature[64] || enc[32] || HPKE ciphertext.
func SealInvite(owner *Identity, memberEmail string, member PublicIdentity, inv Invite) ([]byte, error) {
	if err := checkEmail(memberEmail); err != nil {
		return nil, fmt.Errorf("keys: invitation: member: %w", err)
	}
	pt, err := inv.encode()
	if err != nil {
		return nil, fmt.Errorf("keys: invitation: %w", err)
	}
	defer clear(pt)
	ek, err := ecdh.X25519().NewPublicKey(member.Box[:])
	if err != nil {
		return nil, fmt.Errorf("keys: invitation: member key: %w", err)
	}
	pk, err := hpke.NewDHKEMPublicKey(ek)
	if err != nil {
		return nil, fmt.Errorf("keys: invitation: member key: %w", err)
	}
	kdf, aead := inviteSuite()
	enc, s, err := hpke.NewSender(pk, kdf, aead, []byte(infoInvite))
	if err != nil {
		return nil, fmt.Errorf("keys: invitation: %w", err)
	}
	ct, err := s.Seal(inviteAAD(memberEmail), pt)
	if err != nil {
		return nil, fmt.Errorf("keys: invitation: %w", err)
	}
	sig := ed25519.Sign(owner.sign, inviteMessage(memberEmail, member.Box, enc, ct))
	out := make([]byte, 0, 1+len(sig)+len(enc)+len(ct))
	out = append(out, InviteVersion)
	out = append(out, sig...)
	out = append(out, enc...)
	return append(out, ct...), nil
}

// OpenInvite checks the owner's signature on a wrapped share secret (ownerSign
// is the owner's Ed25519 key as the member pinned it) and opens it with the
// member's identity. The caller checks Share and Gen against what it asked for.
func OpenInvite(me *Identity, memberEmail string, ownerSign [PublicKeySize]byte, blob []byte) (*Invite, error) {
	const head = 1 + ed25519.SignatureSize + inviteEncSize
	if len(blob) < head+16 || blob[0] != InviteVersion {
		return nil, ErrInvite
	}
	sig, enc, ct := blob[1:1+ed25519.SignatureSize], blob[1+ed25519.SignatureSize:head], blob[head:]
	if !ed25519.Verify(ownerSign[:], inviteMessage(memberEmail, me.Public.Box, enc, ct), sig) {
		return nil, ErrInvite
	}
	sk, err := hpke.NewDHKEMPrivateKey(me.box)
	if err != nil {
		return nil, ErrInvite
	}
	kdf, aead := inviteSuite()
	r, err := hpke.NewRecipient(enc, sk, kdf, aead, []byte(infoInvite))
	if err != nil {
		return nil, ErrInvite
	}
	pt, err := r.Open(inviteAAD(memberEmail), ct)
	if err != nil {
		return nil, ErrInvite
	}
	defer clear(pt)
	inv, err := decodeInvite(pt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvite, err)
	}
	return inv, nil
}

// OwnerShareSecret is the secret of generation gen of share, for its owner:
// derived from the master key, so that every device of the owner holds every
// share secret with nothing stored, and a re-run of an interrupted share
// (re-sealing a folder) finds the same keys. Members get it wrapped
// (SealInvite); they cannot derive it.
func OwnerShareSecret(master Key, share uint64, gen uint32) Key {
	return HKDF(master, fmt.Sprintf("kumo/v2/share-secret/%016x/%08x", share, gen))
}
