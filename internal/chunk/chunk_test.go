package chunk

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the current code")

func testCipher() *Cipher {
	var a, b [32]byte
	for i := range a {
		a[i], b[i] = byte(i), byte(100+i)
	}
	return NewCipher(a, b)
}

func randBytes(n int) []byte {
	p := make([]byte, n)
	rand.Read(p)
	return p
}

func TestSizes(t *testing.T) {
	tests := []struct{ n, segs, sealed int }{
		{1, 1, 17},
		{SegmentSize, 1, SegmentSize + 16},
		{SegmentSize + 1, 2, SegmentSize + 1 + 32},
		{Size, 64, Size + 64*16},
	}
	for _, tt := range tests {
		if s := Segments(tt.n); s != tt.segs {
			t.Errorf("Segments(%d)=%d want %d", tt.n, s, tt.segs)
		}
		if s := SealedSize(tt.n); s != tt.sealed {
			t.Errorf("SealedSize(%d)=%d want %d", tt.n, s, tt.sealed)
		}
		// The segment ranges tile the sealed chunk exactly.
		end := 0
		for i := 0; i < tt.segs; i++ {
			off, n := SegmentRange(tt.n, i)
			if off != end || n <= Overhead || (i < tt.segs-1 && n != SealedSegmentSize) {
				t.Errorf("SegmentRange(%d,%d)=(%d,%d)", tt.n, i, off, n)
			}
			end = off + n
		}
		if end != tt.sealed {
			t.Errorf("n=%d: ranges end at %d, sealed %d", tt.n, end, tt.sealed)
		}
	}
	if MaxSealedSize != SealedSize(Size) {
		t.Fatal("MaxSealedSize")
	}
}

func TestRoundTrip(t *testing.T) {
	c := testCipher()
	for _, n := range []int{1, 2, SegmentSize - 1, SegmentSize, SegmentSize + 1, 3*SegmentSize + 7, Size - 1, Size} {
		p := randBytes(n)
		id := c.ID(p)
		s := c.Seal(nil, id, p)
		if len(s) != SealedSize(n) {
			t.Fatalf("n=%d: sealed %d want %d", n, len(s), SealedSize(n))
		}
		if bytes.Contains(s, p[:min(n, 64)]) && n >= 16 {
			t.Fatalf("n=%d: plaintext visible in sealed chunk", n)
		}
		got, err := c.Open([]byte("pre"), id, s)
		if err != nil || !bytes.Equal(got[3:], p) || string(got[:3]) != "pre" {
			t.Fatalf("n=%d: open: %v", n, err)
		}
		var all []byte
		for i := 0; i < Segments(n); i++ {
			off, l := SegmentRange(n, i)
			all, err = c.OpenSegment(all, id, n, i, s[off:off+l])
			if err != nil {
				t.Fatalf("n=%d seg %d: %v", n, i, err)
			}
		}
		if !bytes.Equal(all, p) {
			t.Fatalf("n=%d: segments differ", n)
		}
		if !bytes.Equal(c.Seal(nil, id, p), s) {
			t.Fatalf("n=%d: Seal not deterministic (dedup needs it)", n)
		}
	}
}

func TestIDs(t *testing.T) {
	c := testCipher()
	p := []byte("same plaintext")
	if c.ID(p) != c.ID(bytes.Clone(p)) || c.ID(p) == c.ID([]byte("same plaintexT")) {
		t.Fatal("ID is not a function of the plaintext")
	}
	var other [32]byte
	if NewCipher(other, other).ID(p) == c.ID(p) {
		t.Fatal("ID not keyed")
	}
	if sum := sha256.Sum256(p); ID(sum) == c.ID(p) {
		t.Fatal("ID is a plain hash")
	}
}

func TestParseID(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	if id, err := ParseID(good); err != nil || id.String() != good {
		t.Fatalf("ParseID(%q)=%v,%v", good, id, err)
	}
	for _, s := range []string{"", good[:63], good + "0", strings.ToUpper(good), "g" + good[1:], " " + good[1:], good[:62] + "\x00a"} {
		if _, err := ParseID(s); !errors.Is(err, ErrBadID) {
			t.Errorf("ParseID(%q): got %v", s, err)
		}
	}
}

// sealedFixture is a 3-segment chunk with a short last segment.
func sealedFixture(c *Cipher) (ID, []byte, []byte) {
	p := randBytes(2*SegmentSize + 100)
	id := c.ID(p)
	return id, p, c.Seal(nil, id, p)
}

func mustFail(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("%s: got %v, want ErrAuth", what, err)
	}
}

func TestFlipBytes(t *testing.T) {
	c := testCipher()
	id, p, s := sealedFixture(c)
	// Dense sample: every byte near segment boundaries (nonce-less headers,
	// tags), and every 61st byte elsewhere.
	near := func(i int) bool {
		r := i % SealedSegmentSize
		return r < 64 || r >= SealedSegmentSize-64 || i >= len(s)-200
	}
	tried := 0
	for i := range s {
		if !near(i) && i%61 != 0 {
			continue
		}
		tried++
		b := bytes.Clone(s)
		b[i] ^= 1 << (i % 8)
		_, err := c.Open(nil, id, b)
		mustFail(t, "flipped byte", err)
		seg := i / SealedSegmentSize
		off, n := SegmentRange(len(p), seg)
		_, err = c.OpenSegment(nil, id, len(p), seg, b[off:off+n])
		mustFail(t, "flipped byte in segment", err)
	}
	t.Logf("flipped %d of %d bytes", tried, len(s))
}

func TestStructuralTamper(t *testing.T) {
	c := testCipher()
	id, p, s := sealedFixture(c)
	seg := func(b []byte, i int) []byte { return b[i*SealedSegmentSize : min(len(b), (i+1)*SealedSegmentSize)] }

	for _, n := range []int{0, 1, 16, 17, SealedSegmentSize - 1, SealedSegmentSize, SealedSegmentSize + 17, 2 * SealedSegmentSize, len(s) - 1} {
		_, err := c.Open(nil, id, s[:n])
		mustFail(t, "truncated", err)
	}
	_, err := c.Open(nil, id, append(bytes.Clone(s), 0))
	mustFail(t, "extended by a byte", err)

	// Dropping the last segment leaves a chunk whose last segment was sealed as non-final.
	_, err = c.Open(nil, id, s[:2*SealedSegmentSize])
	mustFail(t, "last segment dropped", err)
	_, err = c.OpenSegment(nil, id, 2*SegmentSize, 1, seg(s, 1))
	mustFail(t, "non-final segment opened as final", err)

	// A final segment opened as non-final (same length as a full one).
	q := randBytes(2 * SegmentSize)
	qid := c.ID(q)
	qs := c.Seal(nil, qid, q)
	_, err = c.OpenSegment(nil, qid, 3*SegmentSize, 1, seg(qs, 1))
	mustFail(t, "final segment opened as non-final", err)
	// Appending a full segment of another chunk to a chunk.
	_, err = c.Open(nil, qid, append(bytes.Clone(qs), seg(s, 0)...))
	mustFail(t, "segment appended", err)

	swapped := bytes.Clone(s)
	copy(swapped[:SealedSegmentSize], seg(s, 1))
	copy(swapped[SealedSegmentSize:], seg(s, 0))
	_, err = c.Open(nil, id, swapped)
	mustFail(t, "segments 0 and 1 swapped", err)
	_, err = c.OpenSegment(nil, id, len(p), 0, seg(s, 1))
	mustFail(t, "segment 1 read as 0", err)

	// Same-index segment of another chunk.
	oid, _, os := sealedFixture(c)
	mixed := bytes.Clone(s)
	copy(mixed, seg(os, 0))
	_, err = c.Open(nil, id, mixed)
	mustFail(t, "segment of another chunk", err)
	_, err = c.OpenSegment(nil, id, len(p), 0, seg(os, 0))
	mustFail(t, "segment of another chunk", err)
	_, err = c.Open(nil, oid, s)
	mustFail(t, "chunk under another id", err)

	// Wrong keys.
	var k1 [32]byte
	k1[0] = 1
	_, err = NewCipher(k1, k1).Open(nil, id, s)
	mustFail(t, "wrong content key", err)
	_, err = NewCipher(k1, k1).OpenSegment(nil, id, len(p), 0, seg(s, 0))
	mustFail(t, "wrong content key (segment)", err)
	_, err = NewCipher(k1, contentKeyForTest).Open(nil, id, s)
	mustFail(t, "wrong id key", err)

	// Sealed under an id that is not the plaintext's keyed hash.
	fake := id
	fake[0] ^= 1
	_, err = c.Open(nil, fake, c.Seal(nil, fake, p))
	mustFail(t, "id does not match plaintext", err)
}

var contentKeyForTest = func() (k [32]byte) {
	for i := range k {
		k[i] = byte(100 + i)
	}
	return
}()

func TestOpenSegmentRange(t *testing.T) {
	c := testCipher()
	id, p, s := sealedFixture(c)
	for _, tt := range []struct{ plainLen, i int }{{0, 0}, {-1, 0}, {Size + 1, 0}, {len(p), -1}, {len(p), 3}} {
		if _, err := c.OpenSegment(nil, id, tt.plainLen, tt.i, s[:SealedSegmentSize]); !errors.Is(err, ErrRange) {
			t.Errorf("OpenSegment(%d, %d): got %v", tt.plainLen, tt.i, err)
		}
	}
	_, err := c.OpenSegment(nil, id, len(p), 2, s[2*SealedSegmentSize:len(s)-1])
	mustFail(t, "short last segment", err)
}

// TestOpener checks the per-chunk opener: the same plaintext as OpenSegment,
// decrypted into spare capacity without allocating it, and every
// tampering (flipped byte, another chunk's or another position's segment,
// the last-segment flag) still ErrAuth.
func TestOpener(t *testing.T) {
	c := testCipher()
	id, p, s := sealedFixture(c)
	o, err := c.Opener(id, len(p))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, SegmentSize)
	for i := 0; i < Segments(len(p)); i++ {
		off, n := SegmentRange(len(p), i)
		got, err := o.OpenSegment(buf, i, s[off:off+n])
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if &got[:1][0] != &buf[:1][0] {
			t.Errorf("segment %d: not decrypted into dst", i)
		}
		if want := p[i*SegmentSize : min(len(p), (i+1)*SegmentSize)]; !bytes.Equal(got, want) {
			t.Fatalf("segment %d: wrong plaintext", i)
		}
		// At most the 12-byte nonce, which escapes through the AEAD interface:
		// never the 64 KiB of plaintext.
		if allocs := testing.AllocsPerRun(10, func() { o.OpenSegment(buf, i, s[off:off+n]) }); allocs > 1 {
			t.Errorf("segment %d: %v allocations per open", i, allocs)
		}
	}
	seg0 := s[:SealedSegmentSize]
	flipped := bytes.Clone(seg0)
	flipped[100] ^= 4
	_, err = o.OpenSegment(nil, 0, flipped)
	mustFail(t, "flipped byte", err)
	_, err = o.OpenSegment(nil, 1, seg0)
	mustFail(t, "segment 0 at position 1", err)
	other, err := c.Opener(c.ID(p[:len(p)-1]), len(p))
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.OpenSegment(nil, 0, seg0)
	mustFail(t, "segment of another chunk", err)
	whole, err := c.Opener(id, 3*SegmentSize) // claims the short last segment is a full middle one
	if err != nil {
		t.Fatal(err)
	}
	_, err = whole.OpenSegment(nil, 2, s[2*SealedSegmentSize:])
	mustFail(t, "length claimed longer", err)
	for _, n := range []int{0, -1, Size + 1} {
		if _, err := c.Opener(id, n); !errors.Is(err, ErrRange) {
			t.Errorf("Opener(%d): got %v", n, err)
		}
	}
	if _, err := o.OpenSegment(nil, 3, seg0); !errors.Is(err, ErrRange) {
		t.Errorf("segment 3 of 3: got %v", err)
	}
}

func TestSealPanicsOutOfRange(t *testing.T) {
	for _, n := range []int{0, Size + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Seal of %d bytes did not panic", n)
				}
			}()
			testCipher().Seal(nil, ID{}, make([]byte, n))
		}()
	}
}

// Test vectors, checked byte for byte. Plaintext i is pattern(n): byte j = j*7+3 mod 256.
type vector struct {
	IDKey        string `json:"id_key"`
	ContentKey   string `json:"content_key"`
	PlainLen     int    `json:"plain_len"`
	Plaintext    string `json:"plaintext,omitempty"` // hex, for short vectors
	ID           string `json:"id"`
	ChunkKey     string `json:"chunk_key"`
	Sealed       string `json:"sealed,omitempty"` // hex, for short vectors
	SealedSHA256 string `json:"sealed_sha256"`
	LastSegment  string `json:"last_segment_hex_prefix"` // first 48 bytes of the last sealed segment
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(j*7 + 3)
	}
	return b
}

func computeVectors() []vector {
	var out []vector
	for _, n := range []int{5, SegmentSize, SegmentSize + 3, Size} {
		var ik, ck [32]byte
		for i := range ik {
			ik[i], ck[i] = byte(0x20+i), byte(0x60+i)
		}
		c := NewCipher(ik, ck)
		p := pattern(n)
		id := c.ID(p)
		s := c.Seal(nil, id, p)
		key := c.chunkKey(id)
		sum := sha256.Sum256(s)
		off, _ := SegmentRange(n, Segments(n)-1)
		v := vector{
			IDKey: hex.EncodeToString(ik[:]), ContentKey: hex.EncodeToString(ck[:]),
			PlainLen: n, ID: id.String(), ChunkKey: hex.EncodeToString(key[:]),
			SealedSHA256: hex.EncodeToString(sum[:]), LastSegment: hex.EncodeToString(s[off:min(len(s), off+48)]),
		}
		if n < 64 {
			v.Plaintext, v.Sealed = hex.EncodeToString(p), hex.EncodeToString(s)
		}
		out = append(out, v)
	}
	return out
}

func TestVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	got := computeVectors()
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []vector
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("%d vectors, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("vector %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	c := testCipher()
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func() {
			var err error
			for k := 0; k < 20 && err == nil; k++ {
				p := randBytes(SegmentSize + k)
				id := c.ID(p)
				var out []byte
				if out, err = c.Open(nil, id, c.Seal(nil, id, p)); err == nil && !bytes.Equal(out, p) {
					err = errors.New("mismatch")
				}
			}
			done <- err
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
