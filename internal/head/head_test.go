package head

import (
	"encoding/hex"
	"errors"
	"testing"

	"kumo/internal/keys"
)

func testKey() keys.Key {
	var m keys.Key
	for i := range m {
		m[i] = 0x40 + byte(i)
	}
	return Key(m)
}

// chain returns n consecutive encoded heads.
func chain(k keys.Key, n int) [][]byte {
	var out [][]byte
	var known Known
	for i := 0; i < n; i++ {
		b := Next(known, uint64(10*(i+1)), int64(i)).Encode(k)
		out = append(out, b)
		known = Known{Counter: uint64(i + 1), Hash: HashOf(b), Seq: uint64(10 * (i + 1))}
	}
	return out
}

// TestVector pins the encoding of docs/FORMAT.md "Account head".
func TestVector(t *testing.T) {
	k := testKey()
	h := Head{Counter: 2, Seq: 7, Prev: Hash{0xaa}, Time: 1764955200000000000}
	got := hex.EncodeToString(h.Encode(k))
	// Computed independently (Python hmac) from docs/FORMAT.md, master 4041..5f.
	const want = "0100000000000000020000000000000007aa00000000000000000000000000000000000000000000000000000000000000187e61673c7a8000" +
		"f90a4c12da88519e37a8bb83b878068ba45eda448e04513d6768be0a9a10f160"
	if hex.EncodeToString(k[:]) != "1983cb528fc78b75543c3cc5f11dde83bed8738e9e6979c059282758a3048045" {
		t.Fatalf("head key %x", k)
	}
	if got != want {
		t.Fatalf("encoding\n got %s\nwant %s", got, want)
	}
	d, err := Decode(k, h.Encode(k))
	if err != nil || d != h {
		t.Fatalf("decode: %+v, %v", d, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	k := testKey()
	b := Head{Counter: 1, Seq: 1}.Encode(k)
	for i := range b {
		c := append([]byte{}, b...)
		c[i] ^= 1
		if _, err := Decode(k, c); !errors.Is(err, ErrAuth) {
			t.Fatalf("flipped byte %d accepted: %v", i, err)
		}
	}
	if _, err := Decode(k, b[:Size-1]); !errors.Is(err, ErrAuth) {
		t.Fatal("short head accepted")
	}
	other := k
	other[0] ^= 1
	if _, err := Decode(other, b); !errors.Is(err, ErrAuth) {
		t.Fatal("head of another account accepted")
	}
	if _, err := Decode(k, Head{Counter: 0}.Encode(k)); !errors.Is(err, ErrAuth) {
		t.Fatal("counter 0 accepted")
	}
}

func TestCheck(t *testing.T) {
	k := testKey()
	heads := chain(k, 5)
	at := func(i int) Known { // what a device that saw head i+1 knows
		h, _ := Decode(k, heads[i])
		return Known{Counter: h.Counter, Hash: HashOf(heads[i]), Seq: h.Seq}
	}
	// A new device takes what it is given; a device that saw head 2 accepts 2..5.
	if got, err := Check(k, Known{}, heads[2:]); err != nil || got != at(4) {
		t.Fatalf("new device: %+v, %v", got, err)
	}
	if got, err := Check(k, at(1), heads[1:]); err != nil || got != at(4) {
		t.Fatalf("continuation: %+v, %v", got, err)
	}
	if got, err := Check(k, at(4), heads[4:]); err != nil || got != at(4) {
		t.Fatalf("no change: %+v, %v", got, err)
	}
	// The other chain: same start, different head 3.
	forked := Next(at(1), 999, 0).Encode(k)
	cases := []struct {
		name  string
		known Known
		heads [][]byte
		want  error
	}{
		{"server lost every head", at(2), nil, ErrRollback},
		{"server back at head 2", at(3), heads[1:3], ErrRollback},
		{"server skips our head", at(1), heads[2:], ErrFork},
		{"another head at our counter", at(2), [][]byte{forked}, ErrFork},
		{"gap in the log", at(0), [][]byte{heads[0], heads[2]}, ErrFork},
		{"log reordered", at(0), [][]byte{heads[0], heads[2], heads[1]}, ErrFork},
		{"forged head", at(0), [][]byte{heads[0], append(append([]byte{}, heads[1][:Size-1]...), heads[1][Size-1]^1)}, ErrAuth},
		{"sequence goes back", at(0), [][]byte{heads[0], Head{Counter: 2, Seq: 1, Prev: HashOf(heads[0])}.Encode(k)}, ErrRollback},
	}
	for _, c := range cases {
		got, err := Check(k, c.known, c.heads)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if got != c.known {
			t.Errorf("%s: known changed on refusal", c.name)
		}
	}
}

func FuzzDecode(f *testing.F) {
	k := testKey()
	good := Head{Counter: 3, Seq: 4, Time: 5}.Encode(k)
	f.Add(good)
	f.Add([]byte{Version})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Decode(k, b)
		if err != nil {
			return
		}
		if string(h.Encode(k)) != string(b) {
			t.Fatalf("decoded head re-encodes differently")
		}
	})
}
