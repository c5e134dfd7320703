package keys

// Recovery key (format v2): a random 256-bit key the user writes down once. It
// wraps the master key a second time, and authenticates a password reset to
// the server, which stores only a hash of the recovery auth key. Byte layout
// and text form: docs/FORMAT.md, "Recovery key".

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	// RecoveryVersion is the first byte of a recovery-wrapped master key and part of its AD.
	RecoveryVersion = 0x02

	// RecoveryWrappedSize is the size of a recovery-wrapped master key: version, nonce, key, tag.
	RecoveryWrappedSize = 1 + chacha20poly1305.NonceSizeX + 32 + chacha20poly1305.Overhead

	// recoveryCheckSize is the checksum's size in the text form: 32+3 bytes are
	// exactly 56 base32 characters, 14 groups of 4.
	recoveryCheckSize = 3
	recoveryTextChars = (32 + recoveryCheckSize) * 8 / 5
	recoveryGroup     = 4

	infoRecoveryWrap   = "kumo/v2/recovery-wrap"
	infoRecoveryAuth   = "kumo/v2/recovery-auth"
	adRecoveryMaster   = "kumo/v2/recovery-master"
	labelRecoveryCheck = "kumo/v2/recovery-check"
)

// recoveryEncoding is RFC 4648 base32 (A-Z, 2-7), no padding: no 0/1/8 to
// confuse with O/I/B, and case does not matter when typed.
var recoveryEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// ErrRecoveryUnwrap is returned when a recovery-wrapped master key does not
// open: wrong recovery key, another account's blob, tampered bytes. One error
// for every cause.
var ErrRecoveryUnwrap = errors.New("keys: wrong recovery key or corrupted recovery-wrapped master key")

// ErrRecoveryKeyText is wrapped by every error of ParseRecoveryKey.
var ErrRecoveryKeyText = errors.New("not a valid recovery key")

// RecoveryKey is the 256-bit recovery key.
type RecoveryKey [32]byte

// NewRecoveryKey returns a fresh random recovery key.
func NewRecoveryKey() (RecoveryKey, error) {
	var k RecoveryKey
	if _, err := rand.Read(k[:]); err != nil {
		return RecoveryKey{}, fmt.Errorf("keys: recovery key: %w", err)
	}
	return k, nil
}

func recoveryChecksum(k RecoveryKey) []byte {
	h := sha256.New()
	h.Write([]byte(labelRecoveryCheck + "\x00"))
	h.Write(k[:])
	return h.Sum(nil)[:recoveryCheckSize]
}

// String is the typeable form: base32 of the key and a 3-byte checksum, in 14
// groups of 4 characters joined by "-". The last group holds only checksum bits.
func (k RecoveryKey) String() string {
	b := append(k[:len(k):len(k)], recoveryChecksum(k)...)
	s := recoveryEncoding.EncodeToString(b)
	var out strings.Builder
	for i := 0; i < len(s); i += recoveryGroup {
		if i > 0 {
			out.WriteByte('-')
		}
		out.WriteString(s[i : i+recoveryGroup])
	}
	return out.String()
}

// ParseRecoveryKey reads the text form. Case, spaces and dashes do not matter;
// a wrong length, a character outside the alphabet, or a checksum mismatch (a
// typo) is a clear error, all wrapping ErrRecoveryKeyText.
func ParseRecoveryKey(s string) (RecoveryKey, error) {
	var clean []byte
	pos := 0
	for _, r := range s {
		pos++
		switch {
		case r == ' ' || r == '-' || r == '\t' || r == '\n' || r == '\r':
			continue
		case r >= 'a' && r <= 'z':
			r -= 'a' - 'A'
		case r >= 'A' && r <= 'Z', r >= '2' && r <= '7':
		default:
			hint := ""
			switch r {
			case '0':
				hint = " (did you mean the letter O?)"
			case '1':
				hint = " (did you mean the letter I or L?)"
			case '8':
				hint = " (did you mean the letter B?)"
			}
			return RecoveryKey{}, fmt.Errorf("%w: %q at position %d is not a recovery-key character (A-Z, 2-7)%s",
				ErrRecoveryKeyText, r, pos, hint)
		}
		if len(clean) >= recoveryTextChars {
			return RecoveryKey{}, fmt.Errorf("%w: more than %d characters (without dashes)", ErrRecoveryKeyText, recoveryTextChars)
		}
		clean = append(clean, byte(r))
	}
	if len(clean) != recoveryTextChars {
		return RecoveryKey{}, fmt.Errorf("%w: %d characters (without dashes), want %d in %d groups of %d",
			ErrRecoveryKeyText, len(clean), recoveryTextChars, recoveryTextChars/recoveryGroup, recoveryGroup)
	}
	b, err := recoveryEncoding.DecodeString(string(clean))
	if err != nil || len(b) != 32+recoveryCheckSize {
		return RecoveryKey{}, fmt.Errorf("%w: %v", ErrRecoveryKeyText, err)
	}
	var k RecoveryKey
	copy(k[:], b)
	if string(recoveryChecksum(k)) != string(b[32:]) {
		return RecoveryKey{}, fmt.Errorf("%w: the checksum does not match: a character is mistyped or two groups are swapped; compare each group with the written-down key",
			ErrRecoveryKeyText)
	}
	return k, nil
}

// WrapKey is the key the master key is wrapped with a second time.
func (k RecoveryKey) WrapKey() Key { return HKDF(Key(k), infoRecoveryWrap) }

// AuthKey authenticates a recovery to the server (which stores only a hash of it).
func (k RecoveryKey) AuthKey() Key { return HKDF(Key(k), infoRecoveryAuth) }

func recoveryAD(email string) []byte {
	ad := make([]byte, 0, len(adRecoveryMaster)+2+len(email))
	ad = append(ad, adRecoveryMaster...)
	ad = append(ad, 0, RecoveryVersion)
	return append(ad, email...)
}

// WrapMasterRecovery seals the master key of account email (trimmed,
// lower-case) under the recovery key's wrap key.
func WrapMasterRecovery(rk RecoveryKey, email string, master Key) ([]byte, error) {
	var nonce [chacha20poly1305.NonceSizeX]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("keys: recovery wrap nonce: %w", err)
	}
	return wrapRecoveryWithNonce(rk, email, master, nonce), nil
}

func wrapRecoveryWithNonce(rk RecoveryKey, email string, master Key, nonce [chacha20poly1305.NonceSizeX]byte) []byte {
	wk := rk.WrapKey()
	defer clear(wk[:])
	aead, err := chacha20poly1305.NewX(wk[:])
	if err != nil {
		panic("keys: " + err.Error()) // key size is fixed
	}
	out := make([]byte, 0, RecoveryWrappedSize)
	out = append(out, RecoveryVersion)
	out = append(out, nonce[:]...)
	return aead.Seal(out, nonce[:], master[:], recoveryAD(email))
}

// UnwrapMasterRecovery opens a recovery-wrapped master key; ErrRecoveryUnwrap on any failure.
func UnwrapMasterRecovery(rk RecoveryKey, email string, wrapped []byte) (Key, error) {
	if len(wrapped) != RecoveryWrappedSize || wrapped[0] != RecoveryVersion {
		return Key{}, ErrRecoveryUnwrap
	}
	wk := rk.WrapKey()
	defer clear(wk[:])
	aead, err := chacha20poly1305.NewX(wk[:])
	if err != nil {
		panic("keys: " + err.Error())
	}
	nonce := wrapped[1 : 1+chacha20poly1305.NonceSizeX]
	var m Key
	pt, err := aead.Open(m[:0], nonce, wrapped[1+len(nonce):], recoveryAD(email))
	if err != nil || len(pt) != len(m) {
		return Key{}, ErrRecoveryUnwrap
	}
	return m, nil
}
