package keys

import (
	"bytes"
	"testing"
)

func FuzzUnwrapMaster(f *testing.F) {
	var kek, master Key
	kek[0], master[1] = 7, 9
	w := wrapWithNonce(kek, master, [24]byte{1})
	f.Add(w)
	f.Add([]byte{})
	f.Add(w[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := UnwrapMaster(kek, b)
		if err == nil && (m != master || !bytes.Equal(b, w)) {
			t.Fatalf("forged wrapped key accepted: %x", b)
		}
	})
}
