package meta

import (
	"encoding/binary"
)

// Sealing under a share's key id (docs/FORMAT.md §3a, §3g): the records of a
// shared folder are sealed with that share generation's keys, which the
// Sealer must hold (WithShare). Signing them is the caller's (keys.SignRecord).

// SealAttrsAs seals a as revision rev of node id under key id kid.
func (s *Sealer) SealAttrsAs(kid KeyID, id, rev uint64, a *Attrs) ([]byte, error) {
	ks, err := s.keyset(kid)
	if err != nil {
		return nil, err
	}
	return sealAttrs(ks, kid, id, rev, a, randomNonce()), nil
}

// SealNameAs seals the name of an entry under parent naming child under key id kid.
func (s *Sealer) SealNameAs(kid KeyID, parent, child uint64, kind Kind, name []byte) ([]byte, error) {
	ks, err := s.keyset(kid)
	if err != nil {
		return nil, err
	}
	return sealName(ks, kid, parent, child, kind, name, randomNonce()), nil
}

// NameMACAs returns the name MAC of name under parent with key id kid's Names key.
func (s *Sealer) NameMACAs(kid KeyID, parent uint64, name []byte) (string, error) {
	ks, err := s.keyset(kid)
	if err != nil {
		return "", err
	}
	return s.nameMAC(ks, parent, name), nil
}

// RecordKeyID returns the key id in the clear header of a sealed record
// (attributes or name): Home for a v1 record; ok false for bytes too short
// to hold a v2 header. It authenticates nothing.
func RecordKeyID(sealed []byte) (kid KeyID, ok bool) {
	if len(sealed) == 0 {
		return KeyID{}, false
	}
	if sealed[0] != SealedV2 {
		return Home, true
	}
	if len(sealed) < nameHeaderV2 {
		return KeyID{}, false
	}
	return KeyID{Share: binary.BigEndian.Uint64(sealed[1:9]), Gen: binary.BigEndian.Uint32(sealed[9:13])}, true
}
