// Package head is the account head of format v2: a short record, MAC'd with a
// key only the account's clients hold, that a client advances after it pushes
// changes. Each head names its predecessor's hash, so the heads form a chain; a
// client that remembers the last head it saw refuses a server that goes back
// (rollback) or shows another chain (fork). See docs/FORMAT.md "Account head".
package head

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"kumo/internal/keys"
)

// Version is the first byte of an encoded head.
const Version = 0x01

// Size is the length of an encoded head: version, counter, seq, prev, time, MAC.
const Size = 1 + 8 + 8 + 32 + 8 + 32

const (
	bodySize = Size - 32
	macLabel = "kumo/v2/head"
	keyLabel = "kumo/v2/head"
)

// ErrAuth is returned for a head that fails its MAC, has a bad length or version.
var ErrAuth = errors.New("head: authentication failed")

// Hash identifies a head (SHA-256 of its encoding); the next head names it.
type Hash [32]byte

// Head is one link of the account's chain.
type Head struct {
	Counter uint64 // 1 for the first head, +1 for each next
	Seq     uint64 // the account's change-feed sequence number the writer had reached
	Prev    Hash   // hash of head Counter-1 (zero for the first)
	Time    int64  // unix nanoseconds when it was written (informational)
}

// Key is the head MAC key of an account: HKDF(master, "kumo/v2/head").
func Key(master keys.Key) keys.Key { return keys.HKDF(master, keyLabel) }

// Encode returns h's encoding, MAC'd with k.
func (h Head) Encode(k keys.Key) []byte {
	b := make([]byte, 0, Size)
	b = append(b, Version)
	b = binary.BigEndian.AppendUint64(b, h.Counter)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = append(b, h.Prev[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Time))
	return append(b, mac(k, b)...)
}

func mac(k keys.Key, body []byte) []byte {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(macLabel))
	m.Write(body)
	return m.Sum(nil)
}

// Decode authenticates and parses an encoded head.
func Decode(k keys.Key, b []byte) (Head, error) {
	if len(b) != Size || b[0] != Version {
		return Head{}, fmt.Errorf("%w: %d bytes, version %d", ErrAuth, len(b), firstByte(b))
	}
	if !hmac.Equal(mac(k, b[:bodySize]), b[bodySize:]) {
		return Head{}, fmt.Errorf("%w: bad MAC", ErrAuth)
	}
	h := Head{
		Counter: binary.BigEndian.Uint64(b[1:9]),
		Seq:     binary.BigEndian.Uint64(b[9:17]),
		Time:    int64(binary.BigEndian.Uint64(b[49:57])),
	}
	copy(h.Prev[:], b[17:49])
	if h.Counter == 0 {
		return Head{}, fmt.Errorf("%w: counter 0", ErrAuth)
	}
	return h, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// HashOf returns the hash of an encoded head.
func HashOf(encoded []byte) Hash { return sha256.Sum256(encoded) }

// Known is what a client remembers of the chain: the last head it saw or wrote.
// The zero Known has seen nothing (a new device).
type Known struct {
	Counter uint64
	Hash    Hash
	Seq     uint64
}

// ErrRollback and ErrFork are the two ways a server's chain can contradict
// what a client has seen.
var (
	ErrRollback = errors.New("head: the cloud's account went back to an older state (rollback)")
	ErrFork     = errors.New("head: the cloud shows a history that does not contain what this device saw (fork)")
)

// Check verifies the server's log of heads against what this device has
// seen: heads (encoded, consecutive) must start at known's head itself (the
// same bytes) and chain from it, each naming the previous one's hash, with
// change sequences that never go down. It returns the new Known (the last
// head). A new device (zero known) takes the first head as it is: it has
// nothing to compare with. No heads at all is a rollback for a device that has
// seen one.
func Check(k keys.Key, known Known, heads [][]byte) (Known, error) {
	if len(heads) == 0 {
		if known.Counter == 0 {
			return known, nil
		}
		return known, fmt.Errorf("%w: the cloud has no head %d, which this device saw", ErrRollback, known.Counter)
	}
	first, err := Decode(k, heads[0])
	if err != nil {
		return known, err
	}
	if known.Counter > 0 {
		switch {
		case first.Counter < known.Counter:
			return known, fmt.Errorf("%w: the cloud's log starts at head %d, this device saw %d", ErrRollback, first.Counter, known.Counter)
		case first.Counter > known.Counter:
			return known, fmt.Errorf("%w: the cloud's log skips head %d, which this device saw", ErrFork, known.Counter)
		case HashOf(heads[0]) != known.Hash:
			return known, fmt.Errorf("%w: the cloud's head %d is not the one this device saw", ErrFork, known.Counter)
		}
	}
	cur := Known{Counter: first.Counter, Hash: HashOf(heads[0]), Seq: first.Seq}
	for _, b := range heads[1:] {
		h, err := Decode(k, b)
		if err != nil {
			return known, err
		}
		switch {
		case h.Counter != cur.Counter+1 || h.Prev != cur.Hash:
			return known, fmt.Errorf("%w: head %d does not follow head %d", ErrFork, h.Counter, cur.Counter)
		case h.Seq < cur.Seq:
			return known, fmt.Errorf("%w: head %d's change sequence %d is below %d", ErrRollback, h.Counter, h.Seq, cur.Seq)
		}
		cur = Known{Counter: h.Counter, Hash: HashOf(b), Seq: h.Seq}
	}
	return cur, nil
}

// Next returns the head that follows known, for a writer that has reached
// change sequence seq at time now.
func Next(known Known, seq uint64, now int64) Head {
	return Head{Counter: known.Counter + 1, Seq: max(seq, known.Seq), Prev: known.Hash, Time: now}
}
