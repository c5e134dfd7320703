package keys

import (
	"encoding/hex"
	"testing"
)

// TestShareSubkeysVector pins the share key derivation of docs/FORMAT.md.
func TestShareSubkeysVector(t *testing.T) {
	var secret Key
	for i := range secret {
		secret[i] = 0x60 + byte(i)
	}
	k := ShareSubkeys(secret, 7, 2)
	// Computed independently (Python hmac: HKDF-SHA256, empty salt) from the labels in docs/FORMAT.md.
	for _, c := range []struct {
		name string
		got  Key
		want string
	}{
		{"attrs", k.Attrs, "6c5d95949920714478867df8275da1b496415035b199de5c486de9e3dddf7a31"},
		{"names", k.Names, "3a00e339d0bd03fa33e19d43f8ca27ca688f812593839ab3d4a85f0c85faea53"},
		{"chunk-id", k.ChunkID, "84b013c40ef28c3047b0a752c85d25b2abb21bf75eb179a6a68e5c473fd9e686"},
		{"chunks", k.Chunks, "8475db0135d13378ea2938df8bda58f479203f3b64769a752d5c984f28dde34c"},
	} {
		if hex.EncodeToString(c.got[:]) != c.want {
			t.Errorf("share 7 generation 2 %s key = %x, want %s", c.name, c.got, c.want)
		}
	}
	// Another share or generation shares no key.
	for _, o := range []Subkeys{ShareSubkeys(secret, 7, 3), ShareSubkeys(secret, 8, 2), Derive(secret)} {
		if o.Attrs == k.Attrs || o.Names == k.Names || o.ChunkID == k.ChunkID || o.Chunks == k.Chunks {
			t.Fatal("share generations share a key")
		}
	}
}
