package meta

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"kumo/internal/keys"
)

// KeyID names the key set a v2 record is sealed with: a share root and one of
// its key generations. The home tree is share 0, generation 0, whose keys are
// the account's subkeys (the v1 keys), so moving records to v2 re-seals
// metadata only and never re-encrypts a chunk.
type KeyID struct {
	Share uint64
	Gen   uint32
}

// Home is the key id of the account's own tree.
var Home = KeyID{}

// Kind is the type of node an entry names, bound into its sealed name: the
// server cannot point a file's name at a directory or the reverse.
type Kind uint8

const (
	KindDir  Kind = 1
	KindFile Kind = 2 // every non-directory: regular file, symlink, device, fifo, socket
)

// KindOf returns KindDir for a directory, KindFile otherwise.
func KindOf(isDir bool) Kind {
	if isDir {
		return KindDir
	}
	return KindFile
}

// Header sizes of the v2 envelopes (see docs/FORMAT.md §2, §3).
const (
	attrsHeaderV2 = 1 + 8 + 4 + 8 // version, share, generation, revision
	nameHeaderV2  = 1 + 8 + 4     // version, share, generation
)

// keyset is one share generation's AEADs and name-MAC key.
type keyset struct {
	attrs  cipher.AEAD // XChaCha20-Poly1305 under the Attrs key
	names  cipher.AEAD // XChaCha20-Poly1305 under HKDF(Names, "kumo/v1/name-seal")
	macKey keys.Key    // Names key
}

func newKeyset(k keys.Subkeys) *keyset {
	return &keyset{attrs: newX(k.Attrs), names: newX(keys.HKDF(k.Names, infoNameSeal)), macKey: k.Names}
}

// Sealer seals attributes and names with an account's keys, and opens v1 and
// v2 records. Safe for concurrent use; immutable after construction.
type Sealer struct {
	home   *keyset
	shares map[KeyID]*keyset // other share generations this client holds
	// strict refuses v1 records: set once the account's tree is known to be
	// all v2 (RequireV2), so the server cannot replay a v1 record (bound to
	// less) in its place. Shared by the copies WithShare makes.
	strict *atomic.Bool
	// macs keeps HMAC states keyed with the home MAC key for reuse: a
	// directory listing computes one name MAC per entry, and a fresh HMAC
	// (key schedule, allocations) was a tenth of a cold find's CPU.
	macs *sync.Pool
}

// NewSealer returns a Sealer for the account's subkeys (the home tree).
func NewSealer(k keys.Subkeys) *Sealer {
	home := newKeyset(k)
	return &Sealer{home: home, strict: new(atomic.Bool), macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, home.macKey[:]) }}}
}

// WithShare returns a copy of s that can also open records of share generation id.
func (s *Sealer) WithShare(id KeyID, k keys.Subkeys) *Sealer {
	c := *s
	c.shares = make(map[KeyID]*keyset, len(s.shares)+1)
	for k, v := range s.shares {
		c.shares[k] = v
	}
	c.shares[id] = newKeyset(k)
	return &c
}

// FormatMark is the reserved attribute (in the root directory's sealed
// attributes, never shown as an xattr) that says the account's whole tree is
// v2: accounts created by v2 clients carry it from the start.
const (
	FormatMark   = "kumo:format"
	FormatMarkV2 = "2"
)

// HasFormatMarkV2 reports whether a (the root's attributes) marks an all-v2 account.
func HasFormatMarkV2(a *Attrs) bool { return string(a.Xattrs[FormatMark]) == FormatMarkV2 }

// RequireV2 makes s (and the copies sharing its state) refuse v1 records
// from now on (ErrAuth). It cannot be undone.
func (s *Sealer) RequireV2() { s.strict.Store(true) }

// RequiresV2 reports whether RequireV2 was called.
func (s *Sealer) RequiresV2() bool { return s.strict.Load() }

func (s *Sealer) keyset(id KeyID) (*keyset, error) {
	if id == Home {
		return s.home, nil
	}
	if ks := s.shares[id]; ks != nil {
		return ks, nil
	}
	return nil, fmt.Errorf("%w: sealed with share %d generation %d, whose key this client does not hold", ErrAuth, id.Share, id.Gen)
}

func newX(k keys.Key) cipher.AEAD {
	a, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		panic("meta: " + err.Error()) // key size is fixed
	}
	return a
}

func randomNonce() [nonceSize]byte {
	var n [nonceSize]byte
	rand.Read(n[:]) // never fails (Go ≥1.24 crashes instead)
	return n
}

// NextRev returns the revision to seal a node's next attributes with: above
// every revision this client has seen for the node, and at least the current
// time in nanoseconds, so revisions keep growing across restarts and devices
// even when the last one sealed here was never saved locally.
func NextRev(prev uint64) uint64 {
	now := uint64(time.Now().UnixNano())
	return max(prev+1, now)
}

// Rev returns the revision in the header of sealed attributes: 0 for a v1
// record or bytes too short to hold one. It does not authenticate: call it on
// bytes OpenAttrs has accepted.
func Rev(sealed []byte) uint64 {
	if len(sealed) < attrsHeaderV2 || sealed[0] != SealedV2 {
		return 0
	}
	return binary.BigEndian.Uint64(sealed[13:21])
}

func attrsADV1(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(adAttrs), id)
}

// SealAttrs encodes and seals a as revision rev of node id, with the home
// keys. It panics if a.Validate fails.
func (s *Sealer) SealAttrs(id, rev uint64, a *Attrs) []byte {
	return s.sealAttrsWithNonce(id, rev, a, randomNonce())
}

func (s *Sealer) sealAttrsWithNonce(id, rev uint64, a *Attrs, nonce [nonceSize]byte) []byte {
	return sealAttrs(s.home, Home, id, rev, a, nonce)
}

// sealAttrs seals under key set ks, whose key id kid goes in the header.
func sealAttrs(ks *keyset, kid KeyID, id, rev uint64, a *Attrs, nonce [nonceSize]byte) []byte {
	pt := a.Encode()
	out := make([]byte, 0, attrsHeaderV2+nonceSize+len(pt)+chacha20poly1305.Overhead)
	out = append(out, SealedV2)
	out = binary.BigEndian.AppendUint64(out, kid.Share)
	out = binary.BigEndian.AppendUint32(out, kid.Gen)
	out = binary.BigEndian.AppendUint64(out, rev)
	ad := binary.BigEndian.AppendUint64([]byte(adAttrsV2), id)
	ad = append(ad, out...)
	out = append(out, nonce[:]...)
	return ks.attrs.Seal(out, nonce[:], pt, ad)
}

// sealAttrsV1WithNonce produces the v1 envelope (test vectors and fixtures only).
func (s *Sealer) sealAttrsV1WithNonce(id uint64, a *Attrs, nonce [nonceSize]byte) []byte {
	pt := a.Encode()
	out := make([]byte, 0, sealOverhead+len(pt))
	out = append(out, SealedV1)
	out = append(out, nonce[:]...)
	return s.home.attrs.Seal(out, nonce[:], pt, attrsADV1(id))
}

// openV1 opens a 0x01 || nonce || ct envelope.
func (s *Sealer) openV1(a cipher.AEAD, sealed, ad []byte) ([]byte, error) {
	if s.strict.Load() {
		return nil, fmt.Errorf("%w: a v1 record in an account whose tree is all v2", ErrAuth)
	}
	if len(sealed) < sealOverhead {
		return nil, fmt.Errorf("%w: bad length", ErrAuth)
	}
	pt, err := a.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], ad)
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}

// OpenAttrs authenticates and decodes sealed attributes of node id (v1 or v2).
// The revision of a v2 record is Rev(sealed).
func (s *Sealer) OpenAttrs(id uint64, sealed []byte) (*Attrs, error) {
	pt, err := s.openAttrs(id, sealed)
	if err != nil {
		return nil, fmt.Errorf("attrs of node %d: %w", id, err)
	}
	a, err := DecodeAttrs(pt)
	if err != nil {
		return nil, fmt.Errorf("attrs of node %d: %w", id, err)
	}
	return a, nil
}

func (s *Sealer) openAttrs(id uint64, sealed []byte) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrAuth)
	}
	switch sealed[0] {
	case SealedV1:
		return s.openV1(s.home.attrs, sealed, attrsADV1(id))
	case SealedV2:
		if len(sealed) < attrsHeaderV2+nonceSize+chacha20poly1305.Overhead {
			return nil, fmt.Errorf("%w: bad length", ErrAuth)
		}
		hdr := sealed[:attrsHeaderV2]
		ks, err := s.keyset(KeyID{Share: binary.BigEndian.Uint64(hdr[1:9]), Gen: binary.BigEndian.Uint32(hdr[9:13])})
		if err != nil {
			return nil, err
		}
		ad := append(binary.BigEndian.AppendUint64([]byte(adAttrsV2), id), hdr...)
		body := sealed[attrsHeaderV2:]
		pt, err := ks.attrs.Open(nil, body[:nonceSize], body[nonceSize:], ad)
		if err != nil {
			return nil, ErrAuth
		}
		return pt, nil
	}
	return nil, fmt.Errorf("%w: unknown version %d", ErrAuth, sealed[0])
}

// NameMAC returns the hex keyed MAC of name under parent (64 lower-case hex
// chars), with the home keys. It is the same in v1 and v2.
func (s *Sealer) NameMAC(parent uint64, name []byte) string {
	return s.nameMAC(s.home, parent, name)
}

func (s *Sealer) nameMAC(ks *keyset, parent uint64, name []byte) string {
	var m hash.Hash
	if ks == s.home {
		m = s.macs.Get().(hash.Hash)
		defer s.macs.Put(m)
	} else {
		m = hmac.New(sha256.New, ks.macKey[:])
	}
	m.Reset()
	m.Write([]byte(macPrefix))
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], parent)
	m.Write(p[:])
	m.Write(name)
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))
}

func nameADV2(parent, child uint64, kind Kind, hdr []byte) []byte {
	ad := binary.BigEndian.AppendUint64([]byte(adNameV2), parent)
	ad = binary.BigEndian.AppendUint64(ad, child)
	ad = append(ad, byte(kind))
	return append(ad, hdr...)
}

// SealName seals the name of the entry under parent that names node child of
// the given kind, with the home keys. Callers check ValidName first.
func (s *Sealer) SealName(parent, child uint64, kind Kind, name []byte) []byte {
	return s.sealNameWithNonce(parent, child, kind, name, randomNonce())
}

func (s *Sealer) sealNameWithNonce(parent, child uint64, kind Kind, name []byte, nonce [nonceSize]byte) []byte {
	return sealName(s.home, Home, parent, child, kind, name, nonce)
}

// sealName seals under key set ks, whose key id kid goes in the header.
func sealName(ks *keyset, kid KeyID, parent, child uint64, kind Kind, name []byte, nonce [nonceSize]byte) []byte {
	out := make([]byte, 0, nameHeaderV2+nonceSize+len(name)+chacha20poly1305.Overhead)
	out = append(out, SealedV2)
	out = binary.BigEndian.AppendUint64(out, kid.Share)
	out = binary.BigEndian.AppendUint32(out, kid.Gen)
	ad := nameADV2(parent, child, kind, out)
	out = append(out, nonce[:]...)
	return ks.names.Seal(out, nonce[:], name, ad)
}

// sealNameV1WithNonce produces the v1 envelope (test vectors and fixtures only).
func (s *Sealer) sealNameV1WithNonce(parent uint64, name []byte, nonce [nonceSize]byte) []byte {
	out := make([]byte, 0, sealOverhead+len(name))
	out = append(out, SealedV1)
	out = append(out, nonce[:]...)
	return s.home.names.Seal(out, nonce[:], name, binary.BigEndian.AppendUint64(nil, parent))
}

// OpenName opens the sealed name of an entry under parent that the server
// says names node child of the given kind, and checks it against nameMAC. A
// v2 name sealed for another child or kind is ErrAuth; a v1 name is bound to
// its parent only.
func (s *Sealer) OpenName(parent, child uint64, kind Kind, nameMAC string, sealed []byte) ([]byte, error) {
	name, ks, err := s.openName(parent, child, kind, sealed)
	if err != nil {
		return nil, fmt.Errorf("name under %d: %w", parent, err)
	}
	want := s.nameMAC(ks, parent, name)
	if subtle.ConstantTimeCompare([]byte(want), []byte(nameMAC)) != 1 {
		return nil, fmt.Errorf("name under %d: %w: name MAC mismatch", parent, ErrAuth)
	}
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("name under %d: %w: %v", parent, ErrFormat, err)
	}
	return name, nil
}

// CheckName authenticates the sealed name of an entry found by the MAC of a
// name the caller holds (a lookup): it must open, under the same binding as
// OpenName, to exactly that name. Cheaper than OpenName: no MAC to recompute.
func (s *Sealer) CheckName(parent, child uint64, kind Kind, name, sealed []byte) error {
	got, _, err := s.openName(parent, child, kind, sealed)
	if err != nil {
		return fmt.Errorf("name under %d: %w", parent, err)
	}
	if subtle.ConstantTimeCompare(got, name) != 1 {
		return fmt.Errorf("name under %d: %w: sealed name is not the name looked up", parent, ErrAuth)
	}
	return nil
}

// openName returns the name and the key set it was sealed with (whose MAC
// key then checks the entry's MAC).
func (s *Sealer) openName(parent, child uint64, kind Kind, sealed []byte) ([]byte, *keyset, error) {
	if len(sealed) == 0 {
		return nil, nil, fmt.Errorf("%w: empty", ErrAuth)
	}
	switch sealed[0] {
	case SealedV1:
		pt, err := s.openV1(s.home.names, sealed, binary.BigEndian.AppendUint64(nil, parent))
		return pt, s.home, err
	case SealedV2:
		if len(sealed) < nameHeaderV2+nonceSize+chacha20poly1305.Overhead {
			return nil, nil, fmt.Errorf("%w: bad length", ErrAuth)
		}
		hdr := sealed[:nameHeaderV2]
		ks, err := s.keyset(KeyID{Share: binary.BigEndian.Uint64(hdr[1:9]), Gen: binary.BigEndian.Uint32(hdr[9:13])})
		if err != nil {
			return nil, nil, err
		}
		body := sealed[nameHeaderV2:]
		pt, err := ks.names.Open(nil, body[:nonceSize], body[nonceSize:], nameADV2(parent, child, kind, hdr))
		if err != nil {
			return nil, nil, ErrAuth
		}
		return pt, ks, nil
	}
	return nil, nil, fmt.Errorf("%w: unknown version %d", ErrAuth, sealed[0])
}
