package link

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kumo/internal/chunk"
	"kumo/internal/keys"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the current code")

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func sampleManifest() *Manifest {
	mt := time.Date(2026, 12, 5, 10, 30, 0, 123456789, time.UTC)
	h := func(b byte) string { return strings.Repeat(hex.EncodeToString([]byte{b}), 32) }
	return &Manifest{
		V: 2, Kind: KindDir, Name: "photos", Created: time.Date(2026, 12, 5, 11, 0, 0, 0, time.UTC),
		Entries: []Entry{
			{Path: "a", Type: TypeDir, Mode: 0o755, Mtime: mt},
			{Path: "a/b.txt", Type: TypeFile, Mode: 0o644, Mtime: mt, Size: ChunkSize + 5,
				Chunks: []Chunk{{ID: h(0x11), Key: h(0x22), Sum: h(0x55), N: ChunkSize}, {ID: h(0x33), Key: h(0x44), Sum: h(0x66), N: 5}}},
			{Path: "a/hole", Type: TypeFile, Mode: 0o600, Mtime: mt, Size: 10, Chunks: []Chunk{{N: 10}}},
			{Path: "empty", Type: TypeFile, Mode: 0o644, Mtime: mt},
			{Path: "ln", Type: TypeSymlink, Mode: 0o777, Mtime: mt, Target: "a/b.txt"},
		},
	}
}

// vector is one fixed input and what the format makes of it.
type vector struct {
	ID       string          `json:"id"`
	R        string          `json:"r"`      // the commitment's random part
	Secret   string          `json:"secret"` // SHA-256("kumo/v2/link/commit" || id || r || manifest)
	URL      string          `json:"url"`
	Password string          `json:"password,omitempty"`
	Salt     string          `json:"salt,omitempty"`
	KDF      *keys.KDFParams `json:"kdf,omitempty"`
	AuthKey  string          `json:"auth_key,omitempty"`
	AuthHash string          `json:"auth_hash,omitempty"`
	Key      string          `json:"key"`
	Nonce    string          `json:"nonce"`
	Manifest string          `json:"manifest"` // the exact JSON bytes sealed
	Blob     string          `json:"blob"`
}

func computeVectors(t *testing.T) []vector {
	var out []vector
	for i, pw := range []string{"", "correct horse battery staple"} {
		var id ID
		var r [CommitRandSize]byte
		var nonce [nonceSize]byte
		copy(id[:], seq(IDSize, byte(0x10*i)))
		copy(r[:], seq(CommitRandSize, 0x80+byte(i)))
		copy(nonce[:], seq(nonceSize, 0xe0))
		v := vector{ID: id.String(), R: hex.EncodeToString(r[:]), Nonce: hex.EncodeToString(nonce[:])}
		var k Key
		key := func(s Secret) (Key, error) {
			k = KeyNoPassword(id, s)
			if pw != "" {
				p := Password{Salt: seq(SaltSize, 0x40), KDF: keys.DefaultKDF()}
				var auth [32]byte
				var err error
				k, auth, err = KeysWithPassword(id, s, []byte(pw), p)
				if err != nil {
					return Key{}, err
				}
				ah := AuthHash(auth[:])
				v.Password, v.Salt, v.KDF = pw, hex.EncodeToString(p.Salt), &p.KDF
				v.AuthKey, v.AuthHash = hex.EncodeToString(auth[:]), hex.EncodeToString(ah[:])
			}
			return k, nil
		}
		m := sampleManifest()
		mj, err := EncodeManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		s, blob, err := sealWith(id, m, &r, nonce, key)
		if err != nil {
			t.Fatal(err)
		}
		v.Secret, v.URL = s.String(), FormatURL("https://kumo.example.com", id, s)
		v.Key, v.Manifest, v.Blob = hex.EncodeToString(k[:]), string(mj), hex.EncodeToString(blob)
		out = append(out, v)
	}
	return out
}

// TestVectors: the fixed inputs give the committed keys and blobs (rewrite
// with go test -run TestVectors -update only with a format version bump),
// and each committed blob opens to its manifest.
func TestVectors(t *testing.T) {
	got := computeVectors(t)
	file := filepath.Join("testdata", "vectors.json")
	gb, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	gb = append(gb, '\n')
	if *update {
		if err := os.WriteFile(file, gb, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wb, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (generate with -update)", err)
	}
	if !bytes.Equal(gb, wb) {
		t.Fatalf("vectors differ from %s:\n%s", file, gb)
	}
	var want []vector
	if err := json.Unmarshal(wb, &want); err != nil {
		t.Fatal(err)
	}
	for i, v := range want {
		base, id, s, err := ParseURL(v.URL)
		if err != nil || base != "https://kumo.example.com" || id.String() != v.ID || s.String() != v.Secret {
			t.Fatalf("vector %d: ParseURL: %v %s", i, err, base)
		}
		var k Key
		hex.Decode(k[:], []byte(v.Key))
		blob, _ := hex.DecodeString(v.Blob)
		m, err := Open(k, id, s, blob)
		if err != nil {
			t.Fatalf("vector %d: open: %v", i, err)
		}
		mj, _ := EncodeManifest(m)
		if string(mj) != v.Manifest {
			t.Fatalf("vector %d: manifest %s, want %s", i, mj, v.Manifest)
		}
	}
}

func noPassword(id ID) KeyFunc {
	return func(s Secret) (Key, error) { return KeyNoPassword(id, s), nil }
}

func randomSecret(t testing.TB) Secret {
	var s Secret
	if _, err := rand.Read(s[:]); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpen(t *testing.T) {
	id, _ := NewID()
	m := sampleManifest()
	s, blob, err := Seal(id, m, noPassword(id))
	if err != nil {
		t.Fatal(err)
	}
	k := KeyNoPassword(id, s)
	got, err := Open(k, id, s, blob)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := EncodeManifest(m)
	b, _ := EncodeManifest(got)
	if !bytes.Equal(a, b) {
		t.Fatalf("round trip: %s != %s", b, a)
	}
	if ids := got.ChunkIDs(); len(ids) != 2 {
		t.Fatalf("ChunkIDs: %v", ids)
	}
	// The same manifest sealed again has another secret (r is random).
	if s2, _, _ := Seal(id, m, noPassword(id)); s2 == s {
		t.Fatal("two links of one manifest have the same secret")
	}
	// Another secret, another link's id, any flipped byte: ErrOpen.
	s2 := randomSecret(t)
	if _, err := Open(KeyNoPassword(id, s2), id, s2, blob); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong secret: %v", err)
	}
	id2, _ := NewID()
	if _, err := Open(k, id2, s, blob); !errors.Is(err, ErrOpen) {
		t.Fatalf("other link id: %v", err)
	}
	for _, i := range []int{1, 13, len(blob) / 2, len(blob) - 1} {
		bad := bytes.Clone(blob)
		bad[i] ^= 1
		if _, err := Open(k, id, s, bad); !errors.Is(err, ErrOpen) {
			t.Fatalf("flip at %d: %v", i, err)
		}
	}
	bad := bytes.Clone(blob)
	bad[0] = 3
	if _, err := Open(k, id, s, bad); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("version 3: %v", err)
	}
	if _, err := Open(k, id, s, blob[:20]); !errors.Is(err, ErrOpen) {
		t.Fatalf("short: %v", err)
	}
}

// sealForged is what another holder of a link can make: any r and manifest,
// sealed under the link's K (which every holder derives from S).
func sealForged(k Key, id ID, r []byte, m []byte) []byte {
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	blob := append([]byte{BlobVersion}, nonce...)
	return aead(k).Seal(blob, nonce, append(bytes.Clone(r), m...), blobAD(id))
}

// TestForgedManifestRefused: a holder of the link knows S and K and can seal
// another manifest under K (the server would serve it). It authenticates
// under K, but S does not commit to it: ErrOpen, no manifest.
func TestForgedManifestRefused(t *testing.T) {
	id, _ := NewID()
	s, blob, err := Seal(id, sampleManifest(), noPassword(id))
	if err != nil {
		t.Fatal(err)
	}
	k := KeyNoPassword(id, s)
	plain, err := aead(k).Open(nil, blob[1:1+nonceSize], blob[1+nonceSize:], blobAD(id))
	if err != nil {
		t.Fatal(err)
	}
	r, mj := plain[:CommitRandSize], plain[CommitRandSize:]
	forged := sampleManifest()
	forged.Entries[1].Chunks[1].Key = strings.Repeat("99", 32) // the holder's own bytes
	fj, _ := EncodeManifest(forged)
	otherR := bytes.Clone(r)
	otherR[0] ^= 1
	for name, f := range map[string][]byte{
		"other manifest, same r":  sealForged(k, id, r, fj),
		"same manifest, other r":  sealForged(k, id, otherR, mj),
		"manifest only, no r":     sealForged(k, id, nil, mj),
		"same bytes, new nonce":   sealForged(k, id, r, mj), // control: must open
		"manifest with a trailer": sealForged(k, id, r, append(bytes.Clone(mj), ' ')),
	} {
		m, err := Open(k, id, s, f)
		if name == "same bytes, new nonce" {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrOpen) || m != nil {
			t.Errorf("%s: %v (want ErrOpen, no manifest)", name, err)
		}
	}
	// With a password too: K comes from S and P, the check is the same.
	p := Password{Salt: seq(SaltSize, 1), KDF: keys.FloorKDF()}
	var pk Key
	s, blob, err = Seal(id, sampleManifest(), func(s Secret) (Key, error) {
		k, _, err := KeysWithPassword(id, s, []byte("pw"), p)
		pk = k
		return k, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(pk, id, s, blob); err != nil {
		t.Fatal(err)
	}
	plain, _ = aead(pk).Open(nil, blob[1:1+nonceSize], blob[1+nonceSize:], blobAD(id))
	if _, err := Open(pk, id, s, sealForged(pk, id, plain[:CommitRandSize], fj)); !errors.Is(err, ErrOpen) {
		t.Fatalf("password link, forged manifest: %v", err)
	}
}

// TestOldBlobRefused: a version 0x01 blob (K from a random S, the manifest
// alone under it: what links were before the commitment) is refused with
// ErrOldLink, which tells the user to have the link made again, even when
// it would authenticate.
func TestOldBlobRefused(t *testing.T) {
	id, _ := NewID()
	s := randomSecret(t)
	k := KeyNoPassword(id, s)
	mj, _ := EncodeManifest(sampleManifest())
	nonce := make([]byte, nonceSize)
	old := aead(k).Seal(append([]byte{0x01}, nonce...), nonce, mj, blobAD(id))
	m, err := Open(k, id, s, old)
	if !errors.Is(err, ErrOldLink) || m != nil {
		t.Fatalf("old blob: %v", err)
	}
	if !strings.Contains(err.Error(), "kumo link") || !strings.Contains(err.Error(), "owner") {
		t.Fatalf("the error does not say what to do: %v", err)
	}
	if _, err := Open(k, id, s, []byte{0x01}); !errors.Is(err, ErrOldLink) {
		t.Fatalf("one byte 0x01: %v", err)
	}
}

// TestChunkOpen: a chunk opens only if its sealed bytes have the manifest's
// hash; bytes another holder sealed under the same content key (every
// segment's AEAD passes) are ErrChunk, and no plaintext comes back.
func TestChunkOpen(t *testing.T) {
	ck := chunk.NewCipher([32]byte(seq(32, 1)), [32]byte(seq(32, 2)))
	plain := bytes.Repeat([]byte("kumo link "), 20000) // 200 KB: 4 segments
	id := ck.ID(plain)
	sealed := ck.Seal(nil, id, plain)
	key := ck.ContentKey(id)
	c := Chunk{ID: id.String(), Key: hex.EncodeToString(key[:]), Sum: ChunkSum(sealed), N: len(plain)}
	got, err := c.Open(nil, sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v", err)
	}
	// Forged: other plaintext of the same length sealed with the content key.
	other := bytes.Clone(plain)
	other[100000] ^= 1
	forged := sealWithKey(t, key, other)
	if _, err := chunk.OpenWithKey(nil, key, forged); err != nil {
		t.Fatalf("the forgery does not even pass the AEAD: %v", err)
	}
	if got, err := c.Open(nil, forged); !errors.Is(err, ErrChunk) || got != nil {
		t.Fatalf("forged chunk: %v", err)
	}
	if _, err := c.Open(nil, sealed[:len(sealed)-1]); !errors.Is(err, ErrChunk) {
		t.Fatalf("short chunk: %v", err)
	}
	bad := c
	bad.N--
	if _, err := bad.Open(nil, sealed); !errors.Is(err, ErrChunk) {
		t.Fatalf("wrong length: %v", err)
	}
	if ChunkSum(sealed) != c.Sum || len(c.Sum) != 64 {
		t.Fatal("ChunkSum")
	}
}

// sealWithKey seals plain as one chunk under a content key alone, as a
// holder of a link can (STREAM, docs/FORMAT.md section 4), with WebCrypto's
// primitives: AES-GCM, nonce = 11-byte index || final flag.
func sealWithKey(t *testing.T, key [32]byte, plain []byte) []byte {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		t.Fatal(err)
	}
	g, _ := cipher.NewGCM(block)
	var out []byte
	n := chunk.Segments(len(plain))
	for i := 0; i < n; i++ {
		var nonce [12]byte
		binary.BigEndian.PutUint64(nonce[3:11], uint64(i))
		if i == n-1 {
			nonce[11] = 1
		}
		out = g.Seal(out, nonce[:], plain[i*chunk.SegmentSize:min(len(plain), (i+1)*chunk.SegmentSize)], nil)
	}
	return out
}

func TestPassword(t *testing.T) {
	id, _ := NewID()
	s := randomSecret(t)
	p, err := NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	k1, a1, err := KeysWithPassword(id, s, []byte("pw"), p)
	if err != nil {
		t.Fatal(err)
	}
	k2, a2, _ := KeysWithPassword(id, s, []byte("pw2"), p)
	if k1 == k2 || a1 == a2 || k1 == KeyNoPassword(id, s) {
		t.Fatal("password does not change the keys")
	}
	// The auth key does not depend on the secret (the server checks it
	// without the secret), the key does.
	s2 := randomSecret(t)
	k3, a3, _ := KeysWithPassword(id, s2, []byte("pw"), p)
	if a3 != a1 || k3 == k1 {
		t.Fatal("auth key depends on the secret, or the key does not")
	}
	// A server that lowers the cost is refused before any derivation.
	weak := p
	weak.KDF = keys.TestKDF()
	if _, _, err := KeysWithPassword(id, s, []byte("pw"), weak); err == nil || !strings.Contains(err.Error(), "weaker") {
		t.Fatalf("weak parameters: %v", err)
	}
	short := p
	short.Salt = p.Salt[:8]
	if _, _, err := KeysWithPassword(id, s, []byte("pw"), short); err == nil {
		t.Fatal("short salt accepted")
	}
}

func TestParseURL(t *testing.T) {
	id, _ := NewID()
	s := randomSecret(t)
	for _, base := range []string{"https://kumo.example.com", "http://127.0.0.1:8080", "https://h.example/prefix/x"} {
		u := FormatURL(base, id, s)
		b, gid, gs, err := ParseURL(u)
		if err != nil || b != base || gid != id || gs != s {
			t.Fatalf("%s: %v %s", u, err, b)
		}
	}
	good := FormatURL("https://h", id, s)
	for _, bad := range []string{
		"", "h/s/" + id.String() + "#" + s.String(), "ftp://h/s/" + id.String() + "#" + s.String(),
		"https://h/s/" + id.String(), // no secret
		"https://h/s/" + id.String() + "#" + s.String()[1:],
		"https://h/s/" + id.String() + "#" + s.String() + "A",
		"https://h/s/" + id.String()[1:] + "#" + s.String(),
		"https://h/x/" + id.String() + "#" + s.String(),
		"https://h/s/" + id.String() + "/x#" + s.String(),
		"https://h/s/" + id.String() + "?a=b#" + s.String(),
		"https://u:p@h/s/" + id.String() + "#" + s.String(),
		"https:///s/" + id.String() + "#" + s.String(),
		"https://h/s/" + id.String() + "#" + strings.ReplaceAll(s.String(), s.String()[:1], "+"),
		"https://h/s/" + id.String() + "#" + s.String()[:42] + "B", // non-canonical last character
		strings.Replace(good, "/s/", "/s%2F", 1),
	} {
		if _, _, _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		}
	}
}

func TestManifestRules(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for name, mut := range map[string]func(m *Manifest){
		"version 1":      func(m *Manifest) { m.V = 1 },
		"version 3":      func(m *Manifest) { m.V = 3 },
		"no sum":         func(m *Manifest) { m.Entries[1].Chunks[0].Sum = "" },
		"short sum":      func(m *Manifest) { m.Entries[1].Chunks[0].Sum = h[:62] },
		"upper-case sum": func(m *Manifest) { m.Entries[1].Chunks[1].Sum = strings.ToUpper(h) },
		"hole with sum":  func(m *Manifest) { m.Entries[2].Chunks[0].Sum = h },
		"id twice, other sum": func(m *Manifest) {
			m.Entries[3].Size, m.Entries[3].Chunks = 5, []Chunk{m.Entries[1].Chunks[1]}
			m.Entries[3].Chunks[0].Sum = h
		},
		"kind":              func(m *Manifest) { m.Kind = "x" },
		"name empty":        func(m *Manifest) { m.Name = "" },
		"name slash":        func(m *Manifest) { m.Name = "a/b" },
		"name dotdot":       func(m *Manifest) { m.Name = ".." },
		"no created":        func(m *Manifest) { m.Created = time.Time{} },
		"dotdot":            func(m *Manifest) { m.Entries[1].Path = "a/../b" },
		"dot":               func(m *Manifest) { m.Entries[1].Path = "a/./b" },
		"leading slash":     func(m *Manifest) { m.Entries[0].Path = "/a" },
		"empty element":     func(m *Manifest) { m.Entries[1].Path = "a//b.txt" },
		"trailing slash":    func(m *Manifest) { m.Entries[0].Path = "a/" },
		"empty path":        func(m *Manifest) { m.Entries[3].Path = "" },
		"nul":               func(m *Manifest) { m.Entries[3].Path = "e\x00" },
		"duplicate":         func(m *Manifest) { m.Entries[3].Path = "ln" },
		"child first":       func(m *Manifest) { m.Entries[0], m.Entries[1] = m.Entries[1], m.Entries[0] },
		"parent is a file":  func(m *Manifest) { m.Entries[4].Path = "empty/x" },
		"type":              func(m *Manifest) { m.Entries[3].Type = "fifo" },
		"mode":              func(m *Manifest) { m.Entries[3].Mode = 0o100644 },
		"dir with size":     func(m *Manifest) { m.Entries[0].Size = 1 },
		"symlink no target": func(m *Manifest) { m.Entries[4].Target = "" },
		"file with target":  func(m *Manifest) { m.Entries[3].Target = "x" },
		"size too big":      func(m *Manifest) { m.Entries[1].Size++ },
		"size too small":    func(m *Manifest) { m.Entries[2].Size-- },
		"n zero":            func(m *Manifest) { m.Entries[2].Chunks[0].N = 0 },
		"n too big": func(m *Manifest) {
			m.Entries[1].Chunks[0].N = ChunkSize + 1
			m.Entries[1].Size++
		},
		"short middle chunk": func(m *Manifest) {
			m.Entries[1].Chunks[0].N = 5
			m.Entries[1].Size = 10
		},
		"extra chunk": func(m *Manifest) {
			m.Entries[3].Chunks = []Chunk{{N: 1}}
		},
		"hole with key":  func(m *Manifest) { m.Entries[2].Chunks[0].Key = h },
		"upper-case id":  func(m *Manifest) { m.Entries[1].Chunks[0].ID = strings.ToUpper(h) },
		"no key":         func(m *Manifest) { m.Entries[1].Chunks[0].Key = "" },
		"short id":       func(m *Manifest) { m.Entries[1].Chunks[0].ID = h[:62] },
		"negative size":  func(m *Manifest) { m.Entries[3].Size = -1 },
		"file link path": func(m *Manifest) { m.Kind = KindFile; m.Entries = m.Entries[3:4] },
		"file link two": func(m *Manifest) {
			m.Kind = KindFile
			m.Entries = []Entry{m.Entries[3], m.Entries[3]}
			m.Entries[0].Path, m.Entries[1].Path = "", ""
		},
	} {
		m := sampleManifest()
		mut(m)
		if err := m.Validate(); !errors.Is(err, ErrManifest) {
			t.Errorf("%s: %v", name, err)
		}
		// The decoder applies the same rules to what it reads.
		b, _ := json.Marshal(m)
		if _, err := DecodeManifest(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	m := sampleManifest()
	m.Kind = KindFile
	m.Entries = m.Entries[1:2]
	m.Entries[0].Path = ""
	if err := m.Validate(); err != nil {
		t.Fatalf("file link: %v", err)
	}
	// One chunk in two files, alike in both: valid.
	m = sampleManifest()
	m.Entries[3].Size, m.Entries[3].Chunks = 5, []Chunk{m.Entries[1].Chunks[1]}
	if err := m.Validate(); err != nil {
		t.Fatalf("a chunk in two files: %v", err)
	}
	good, _ := EncodeManifest(sampleManifest())
	for _, bad := range []string{
		string(good) + "{}",
		strings.Replace(string(good), `"v":2`, `"v":2,"extra":1`, 1),
		strings.Replace(string(good), `"v":2`, `"v":"2"`, 1),
		strings.Replace(string(good), `"v":2`, `"v":1`, 1),
		strings.Replace(string(good), `"sum":"`, `"sum":null,"x":"`, 1),
		strings.Replace(string(good), `,"sum":"5555555555555555555555555555555555555555555555555555555555555555"`, ``, 1),
		strings.Replace(string(good), `"sum":"5555`, `"sum":"55`, 1),
		"\xff",
	} {
		if _, err := DecodeManifest([]byte(bad)); err == nil {
			t.Errorf("decoded %.60q", bad)
		}
	}
}

// FuzzOpenManifest: any blob and any manifest bytes give a manifest that
// passes Validate and re-encodes, or an error; never a panic.
func FuzzOpenManifest(f *testing.F) {
	id := ID{1}
	good, _ := EncodeManifest(sampleManifest())
	s, blob, _ := sealWith(id, sampleManifest(), &[CommitRandSize]byte{2}, [nonceSize]byte{3}, noPassword(id))
	k := KeyNoPassword(id, s)
	f.Add(good, false)
	f.Add(blob, true)
	f.Add(append([]byte{0x01}, blob[1:]...), true)
	f.Add([]byte(`{"v":2,"kind":"file","name":"x","created":"2026-01-01T00:00:00Z","entries":[{"path":"","type":"file","mode":420,"mtime":"2026-01-01T00:00:00Z","size":0}]}`), false)
	f.Add([]byte(`{"v":2,"kind":"file","name":"x","created":"2026-01-01T00:00:00Z","entries":[{"path":"","type":"file","mode":420,"mtime":"2026-01-01T00:00:00Z","size":3,"chunks":[{"id":"`+strings.Repeat("a", 64)+`","key":"`+strings.Repeat("b", 64)+`","sum":"`+strings.Repeat("c", 64)+`","n":3}]}]}`), false)
	f.Fuzz(func(t *testing.T, b []byte, sealed bool) {
		var m *Manifest
		var err error
		if sealed {
			m, err = Open(k, id, s, b)
		} else {
			m, err = DecodeManifest(b)
		}
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded an invalid manifest: %v", err)
		}
		if _, err := EncodeManifest(m); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseURL: a parsed URL formats back to a URL that parses the same.
func FuzzParseURL(f *testing.F) {
	f.Add(FormatURL("https://kumo.example.com", ID{1}, Secret{2}))
	f.Add("http://[::1]:8080/p/s/AAAAAAAAAAAAAAAAAAAAAA#" + strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, u string) {
		base, id, s, err := ParseURL(u)
		if err != nil {
			return
		}
		b2, id2, s2, err := ParseURL(FormatURL(base, id, s))
		if err != nil || b2 != base || id2 != id || s2 != s {
			t.Fatalf("%q: reparse %v %q", u, err, b2)
		}
		if _, err := ParseID(id.String()); err != nil {
			t.Fatal(err)
		}
	})
}

// A link id is typed on command lines (`kumo link rm ID`), where a leading '-'
// reads as a flag; one random id in 64 would start with it.
func TestNewIDNeverLooksLikeAFlag(t *testing.T) {
	for i := 0; i < 5000; i++ {
		id, err := NewID()
		if err != nil {
			t.Fatal(err)
		}
		if s := id.String(); strings.HasPrefix(s, "-") {
			t.Fatalf("NewID gave %q", s)
		}
	}
}
