// Package linktest makes, for tests of the link readers, what another
// holder of a link can make and a colluding server can serve: a manifest of
// its choosing sealed under the link's key (which every holder derives from
// the secret), and other bytes sealed under a chunk's content key (which the
// manifest gives every holder). A reader must refuse both.
package linktest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"kumo/internal/chunk"
	"kumo/internal/link"
)

func gcm(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return g
}

// Reseal opens blob, the sealed manifest of the (password-less) link at
// rawURL, lets edit change its manifest, and seals the result under the
// same key with the same r: every segment of the format checks out except
// the secret's commitment.
func Reseal(rawURL string, blob []byte, edit func(*link.Manifest)) ([]byte, error) {
	_, id, s, err := link.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	k := link.KeyNoPassword(id, s)
	if len(blob) < 1+12+link.CommitRandSize+16 || blob[0] != link.BlobVersion {
		return nil, errors.New("linktest: not a version 2 blob")
	}
	ad := []byte("kumo/v2/link/" + id.String())
	plain, err := gcm(k[:]).Open(nil, blob[1:13], blob[13:], ad)
	if err != nil {
		return nil, fmt.Errorf("linktest: open: %w", err)
	}
	m, err := link.DecodeManifest(plain[link.CommitRandSize:])
	if err != nil {
		return nil, err
	}
	edit(m)
	mj, err := link.EncodeManifest(m)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 12)
	rand.Read(nonce)
	out := append([]byte{link.BlobVersion}, nonce...)
	return gcm(k[:]).Seal(out, nonce, append(plain[:link.CommitRandSize:link.CommitRandSize], mj...), ad), nil
}

// SealChunk seals plain as a chunk under content key keyHex alone (STREAM,
// docs/FORMAT.md section 4): every segment authenticates under that key.
func SealChunk(keyHex string, plain []byte) []byte {
	key, err := hex.DecodeString(keyHex)
	if err != nil {
		panic(err)
	}
	g := gcm(key)
	var out []byte
	n := chunk.Segments(len(plain))
	for i := range n {
		var nonce [12]byte
		binary.BigEndian.PutUint64(nonce[3:11], uint64(i))
		if i == n-1 {
			nonce[11] = 1
		}
		out = g.Seal(out, nonce[:], plain[i*chunk.SegmentSize:min(len(plain), (i+1)*chunk.SegmentSize)], nil)
	}
	return out
}

// Forged is the plaintext Forge seals: "FORGED! " repeated, so that a test
// can look for it in what a reader wrote.
const Forged = "FORGED! "

// Forge is a forged chunk c of a link: c.N bytes of Forged repeated, sealed
// under c's content key, so that every segment authenticates.
func Forge(c link.Chunk) []byte {
	return SealChunk(c.Key, bytes.Repeat([]byte(Forged), c.N/len(Forged)+1)[:c.N])
}

// ReplaceFrame rewrites an answer of GET /v1/s/ID/chunks?ids=... (each
// chunk's length, 4 bytes big-endian, then its bytes, in the order of ids):
// the frame of chunk id gets forged instead. An answer it cannot parse is
// returned as it is.
func ReplaceFrame(body []byte, ids []string, id string, forged []byte) []byte {
	var out []byte
	for _, c := range ids {
		if len(body) < 4 {
			return body
		}
		n := int(binary.BigEndian.Uint32(body))
		if len(body) < 4+n {
			return body
		}
		frame := body[4 : 4+n]
		if c == id {
			frame = forged
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(frame)))
		out = append(out, frame...)
		body = body[4+n:]
	}
	return append(out, body...)
}
