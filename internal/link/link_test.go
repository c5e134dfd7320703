package link

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
		V: 1, Kind: KindDir, Name: "photos", Created: time.Date(2026, 12, 5, 11, 0, 0, 0, time.UTC),
		Entries: []Entry{
			{Path: "a", Type: TypeDir, Mode: 0o755, Mtime: mt},
			{Path: "a/b.txt", Type: TypeFile, Mode: 0o644, Mtime: mt, Size: ChunkSize + 5,
				Chunks: []Chunk{{ID: h(0x11), Key: h(0x22), N: ChunkSize}, {ID: h(0x33), Key: h(0x44), N: 5}}},
			{Path: "a/hole", Type: TypeFile, Mode: 0o600, Mtime: mt, Size: 10, Chunks: []Chunk{{N: 10}}},
			{Path: "empty", Type: TypeFile, Mode: 0o644, Mtime: mt},
			{Path: "ln", Type: TypeSymlink, Mode: 0o777, Mtime: mt, Target: "a/b.txt"},
		},
	}
}

// vector is one fixed input and what the format makes of it.
type vector struct {
	ID       string          `json:"id"`
	Secret   string          `json:"secret"`
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
		var s Secret
		var nonce [nonceSize]byte
		copy(id[:], seq(IDSize, byte(0x10*i)))
		copy(s[:], seq(SecretSize, 0x80+byte(i)))
		copy(nonce[:], seq(nonceSize, 0xe0))
		v := vector{ID: id.String(), Secret: s.String(), URL: FormatURL("https://kumo.example.com", id, s), Nonce: hex.EncodeToString(nonce[:])}
		k := KeyNoPassword(id, s)
		if pw != "" {
			p := Password{Salt: seq(SaltSize, 0x40), KDF: keys.DefaultKDF()}
			var auth [32]byte
			var err error
			k, auth, err = KeysWithPassword(id, s, []byte(pw), p)
			if err != nil {
				t.Fatal(err)
			}
			ah := AuthHash(auth[:])
			v.Password, v.Salt, v.KDF = pw, hex.EncodeToString(p.Salt), &p.KDF
			v.AuthKey, v.AuthHash = hex.EncodeToString(auth[:]), hex.EncodeToString(ah[:])
		}
		m := sampleManifest()
		mj, err := EncodeManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := sealWithNonce(k, id, m, nonce)
		if err != nil {
			t.Fatal(err)
		}
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
		m, err := Open(k, id, blob)
		if err != nil {
			t.Fatalf("vector %d: open: %v", i, err)
		}
		mj, _ := EncodeManifest(m)
		if string(mj) != v.Manifest {
			t.Fatalf("vector %d: manifest %s, want %s", i, mj, v.Manifest)
		}
	}
}

func TestSealOpen(t *testing.T) {
	id, _ := NewID()
	s, _ := NewSecret()
	k := KeyNoPassword(id, s)
	m := sampleManifest()
	blob, err := Seal(k, id, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(k, id, blob)
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
	// Another secret, another link's id, any flipped byte: ErrOpen.
	s2, _ := NewSecret()
	if _, err := Open(KeyNoPassword(id, s2), id, blob); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong secret: %v", err)
	}
	id2, _ := NewID()
	if _, err := Open(k, id2, blob); !errors.Is(err, ErrOpen) {
		t.Fatalf("other link id: %v", err)
	}
	for _, i := range []int{1, 13, len(blob) / 2, len(blob) - 1} {
		bad := bytes.Clone(blob)
		bad[i] ^= 1
		if _, err := Open(k, id, bad); !errors.Is(err, ErrOpen) {
			t.Fatalf("flip at %d: %v", i, err)
		}
	}
	bad := bytes.Clone(blob)
	bad[0] = 2
	if _, err := Open(k, id, bad); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("version 2: %v", err)
	}
	if _, err := Open(k, id, blob[:20]); !errors.Is(err, ErrOpen) {
		t.Fatalf("short: %v", err)
	}
}

func TestPassword(t *testing.T) {
	id, _ := NewID()
	s, _ := NewSecret()
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
	s2, _ := NewSecret()
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
	s, _ := NewSecret()
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
		"version":           func(m *Manifest) { m.V = 2 },
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
	good, _ := EncodeManifest(sampleManifest())
	for _, bad := range []string{
		string(good) + "{}",
		strings.Replace(string(good), `"v":1`, `"v":1,"extra":1`, 1),
		strings.Replace(string(good), `"v":1`, `"v":"1"`, 1),
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
	id, s := ID{1}, Secret{2}
	k := KeyNoPassword(id, s)
	good, _ := EncodeManifest(sampleManifest())
	blob, _ := sealWithNonce(k, id, sampleManifest(), [nonceSize]byte{3})
	f.Add(good, false)
	f.Add(blob, true)
	f.Add([]byte(`{"v":1,"kind":"file","name":"x","created":"2026-01-01T00:00:00Z","entries":[{"path":"","type":"file","mode":420,"mtime":"2026-01-01T00:00:00Z","size":0}]}`), false)
	f.Fuzz(func(t *testing.T, b []byte, sealed bool) {
		var m *Manifest
		var err error
		if sealed {
			m, err = Open(k, id, b)
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
