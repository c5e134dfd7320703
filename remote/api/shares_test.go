package api

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/http"
	"testing"
)

func TestRecordShare(t *testing.T) {
	v2 := []byte{0x02}
	v2 = binary.BigEndian.AppendUint64(v2, 0x0123456789abcdef)
	v2 = binary.BigEndian.AppendUint32(v2, 7)
	for _, c := range []struct {
		name  string
		b     []byte
		share uint64
		gen   uint32
		ok    bool
	}{
		{"empty", nil, 0, 0, false},
		{"v1", []byte{0x01, 0xff, 0xff}, 0, 0, true},
		{"v2 header only", v2, 0x0123456789abcdef, 7, true},
		{"v2 sealed", append(bytes.Clone(v2), 1, 2, 3), 0x0123456789abcdef, 7, true},
		{"v2 cut short", v2[:12], 0, 0, false},
		{"v2 one byte", []byte{0x02}, 0, 0, false},
	} {
		share, gen, ok := RecordShare(c.b)
		if share != c.share || gen != c.gen || ok != c.ok {
			t.Errorf("%s: RecordShare = %x, %d, %v; want %x, %d, %v", c.name, share, gen, ok, c.share, c.gen, c.ok)
		}
	}
}

func TestShareScope(t *testing.T) {
	owner := "0123456789abcdef0123456789abcdef"
	h := FormatShareScope(owner, 0xabc)
	if h != owner+"/0000000000000abc" {
		t.Fatalf("FormatShareScope = %q", h)
	}
	o, s, err := ParseShareScope(h)
	if err != nil || o != owner || s != 0xabc {
		t.Fatalf("ParseShareScope(%q) = %q, %x, %v", h, o, s, err)
	}
	for _, bad := range []string{"", "/", owner, owner + "/", owner + "/0000000000000000",
		owner + "/0000000000000ABC", owner + "/abc", owner + "/0000000000000abc/", "0123/0000000000000abc",
		"0123456789ABCDEF0123456789abcdef/0000000000000abc", owner + "/+000000000000abc"} {
		if _, _, err := ParseShareScope(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseShareScope(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
	if HTTPStatus(CodeCrossShare) != http.StatusConflict {
		t.Errorf("cross_share status %d", HTTPStatus(CodeCrossShare))
	}
}

// FuzzRecordShare: any bytes give a key id or !ok, never a panic, and a v2
// header round-trips.
func FuzzRecordShare(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x01, 2, 3})
	f.Add([]byte{0x02, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1, 0xaa})
	f.Fuzz(func(t *testing.T, b []byte) {
		share, gen, ok := RecordShare(b)
		if !ok && (share != 0 || gen != 0) {
			t.Fatalf("!ok with key id %x/%d", share, gen)
		}
		if ok && len(b) > 0 && b[0] == 0x02 {
			h := []byte{0x02}
			h = binary.BigEndian.AppendUint64(h, share)
			h = binary.BigEndian.AppendUint32(h, gen)
			if !bytes.Equal(h, b[:13]) {
				t.Fatalf("header %x read as %x/%d", b[:13], share, gen)
			}
		}
		if ok && len(b) > 0 && b[0] != 0x02 && (share != 0 || gen != 0) {
			t.Fatalf("v1 record read as share %x", share)
		}
	})
}

// FuzzParseShareScope: any header value parses to a scope that formats back
// to the same value, or is refused.
func FuzzParseShareScope(f *testing.F) {
	f.Add("0123456789abcdef0123456789abcdef/0000000000000abc")
	f.Add("x/y")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		owner, share, err := ParseShareScope(s)
		if err != nil {
			return
		}
		if share == 0 || FormatShareScope(owner, share) != s {
			t.Fatalf("%q parsed as %q/%x", s, owner, share)
		}
	})
}
