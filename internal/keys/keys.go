// Package keys turns a password into the keys of an account: Argon2id to an auth
// key and a key-encryption key, the wrapped master key, and HKDF subkeys per purpose.
// The byte-level construction is specified in docs/FORMAT.md.
package keys

import "errors"

// Key is a 256-bit symmetric key.
type Key [32]byte

// KDFParams are the Argon2id cost parameters (see api.KDFParams, same fields).
type KDFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF returns the parameters new accounts use.
func DefaultKDF() KDFParams { panic("TODO") }

// TestKDF returns cheap parameters for tests only.
func TestKDF() KDFParams { panic("TODO") }

// ErrBadKDF is returned for parameters outside the accepted range (too weak or absurdly costly).
var ErrBadKDF = errors.New("keys: KDF parameters out of range")

// ErrUnwrap is returned when the master key cannot be unwrapped (wrong password or tampered data).
var ErrUnwrap = errors.New("keys: wrong password or corrupted wrapped master key")

// NewSalt returns a fresh random 16-byte salt.
func NewSalt() ([]byte, error) { panic("TODO") }

// FromPassword derives the auth key (sent to the server) and the key-encryption
// key (never leaves the client) from a password and the account's salt.
func FromPassword(password, salt []byte, p KDFParams) (authKey, kek Key, err error) {
	panic("TODO")
}

// NewMasterKey returns a fresh random master key.
func NewMasterKey() (Key, error) { panic("TODO") }

// WrapMaster seals the master key with the key-encryption key.
func WrapMaster(kek, master Key) ([]byte, error) { panic("TODO") }

// UnwrapMaster opens a wrapped master key; ErrUnwrap on any failure.
func UnwrapMaster(kek Key, wrapped []byte) (Key, error) { panic("TODO") }

// Subkeys are the per-purpose keys derived from the master key with HKDF-SHA256.
type Subkeys struct {
	Attrs   Key // seals node attributes
	Names   Key // MACs and seals entry names
	ChunkID Key // keyed hash of chunk plaintext
	Chunks  Key // derives per-chunk content keys
	Cache   Key // seals the drive's local cache and write-back data
}

// Derive returns the subkeys of a master key.
func Derive(master Key) Subkeys { panic("TODO") }
