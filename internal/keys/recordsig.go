package keys

// Record signatures of shared folders: every record of a share (node
// attributes and entry names) carries the Ed25519 signature of the account
// that wrote it, so that a reader holding the share key, or the server,
// cannot forge a write. Byte layout: docs/FORMAT.md §3g.

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// RecordKind says what a signed record is; it is part of the signed message,
// so an attribute record's signature never passes for a name's.
type RecordKind uint8

const (
	RecordAttrs RecordKind = 1 // node attributes, bound to the node id
	RecordName  RecordKind = 2 // an entry's sealed name, bound to its parent and name MAC
)

const (
	// SignerIDSize is the size of a signer id: the first bytes of SHA-256 of the Ed25519 public key.
	SignerIDSize = 16
	// RecordSigSize is what a signature adds to a share record: signer id, Ed25519 signature.
	RecordSigSize = SignerIDSize + ed25519.SignatureSize
	// NameMACSize is the size of a raw name MAC (the API carries it as 64 hex characters).
	NameMACSize = 32

	labelRecordSig = "kumo/v2/share-record"
)

// ErrRecordSig is returned for a share record whose signature is missing,
// malformed or invalid, or whose signer may not write it.
var ErrRecordSig = errors.New("keys: share record is not signed by a writer of the share")

// SignerID names a signing key in a record: the first 16 bytes of SHA-256 of
// the Ed25519 public key.
type SignerID [SignerIDSize]byte

// SignerOf returns the signer id of an Ed25519 public key.
func SignerOf(pub [PublicKeySize]byte) SignerID {
	sum := sha256.Sum256(pub[:])
	var id SignerID
	copy(id[:], sum[:SignerIDSize])
	return id
}

// recordMessage is what a record signature covers: a domain label, the kind,
// the node (attributes) or parent (names) id, the raw name MAC (names only)
// and the sealed record, header included.
func recordMessage(kind RecordKind, id uint64, nameMAC, sealed []byte) ([]byte, error) {
	switch kind {
	case RecordAttrs:
		if len(nameMAC) != 0 {
			return nil, fmt.Errorf("keys: an attribute record has no name MAC")
		}
	case RecordName:
		if len(nameMAC) != NameMACSize {
			return nil, fmt.Errorf("keys: a name MAC is %d bytes, got %d", NameMACSize, len(nameMAC))
		}
	default:
		return nil, fmt.Errorf("keys: unknown record kind %d", kind)
	}
	m := make([]byte, 0, len(labelRecordSig)+2+8+len(nameMAC)+len(sealed))
	m = append(m, labelRecordSig...)
	m = append(m, 0, byte(kind))
	m = binary.BigEndian.AppendUint64(m, id)
	m = append(m, nameMAC...)
	return append(m, sealed...), nil
}

// SignRecord returns sealed || signer id || signature: the record as stored in
// a share. id is the node id (attributes) or the parent id (names); nameMAC is
// the raw 32-byte name MAC for a name, nil for attributes.
func SignRecord(signer *Identity, kind RecordKind, id uint64, nameMAC, sealed []byte) ([]byte, error) {
	m, err := recordMessage(kind, id, nameMAC, sealed)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(signer.sign, m)
	who := SignerOf(signer.Public.Sign)
	out := make([]byte, 0, len(sealed)+RecordSigSize)
	out = append(out, sealed...)
	out = append(out, who[:]...)
	return append(out, sig...), nil
}

// SplitRecord cuts a signed share record into the sealed record, the signer
// id and the signature. It checks lengths only: VerifyRecord authenticates.
func SplitRecord(b []byte) (sealed []byte, signer SignerID, sig []byte, err error) {
	if len(b) <= RecordSigSize {
		return nil, SignerID{}, nil, fmt.Errorf("%w: record of %d bytes has no room for a signature", ErrRecordSig, len(b))
	}
	n := len(b) - RecordSigSize
	copy(signer[:], b[n:n+SignerIDSize])
	return b[:n], signer, b[n+SignerIDSize:], nil
}

// VerifyRecord checks sig over a sealed record with the signer's public key.
func VerifyRecord(pub [PublicKeySize]byte, kind RecordKind, id uint64, nameMAC, sealed, sig []byte) error {
	m, err := recordMessage(kind, id, nameMAC, sealed)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRecordSig, err)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub[:], m, sig) {
		return fmt.Errorf("%w: bad signature", ErrRecordSig)
	}
	return nil
}
