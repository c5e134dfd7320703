package server

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"kumo/remote/api"
)

func TestHistCodecRoundTrip(t *testing.T) {
	mac := strings.Repeat("ab", 32)
	nodes := []histNode{
		{Node: api.Node{ID: 7, Type: api.TypeFile, Version: 3, Nlink: 2, Attrs: []byte("sealed"), Chunks: []string{mac, strings.Repeat("01", 32)}, Seq: 99, Since: 5}, Until: 11},
		{Node: api.Node{ID: 1<<63 + 5, Type: api.TypeDir, Version: 1, Nlink: 1, Parent: 1, Seq: 1}, Until: 2,
			Trash: &trashRec{Parent: 1, NameMAC: mac, Name: []byte("sealed name")}},
		{Node: api.Node{ID: 8, Type: api.TypeFile, Version: 2, Nlink: 1, Attrs: []byte("a")}, Until: 3,
			Trash: &trashRec{Parent: 5, NameMAC: mac, NameInEntry: true}},
	}
	for _, h := range nodes {
		var got histNode
		if err := got.decode(h.encode()); err != nil || !reflect.DeepEqual(got, h) {
			t.Fatalf("node round trip: %+v %v, want %+v", got, err, h)
		}
	}
	e := histEntry{Entry: entryRec{ID: 9, Name: []byte("n"), Since: -1}, Until: 4}
	var got histEntry
	if err := got.decode(e.encode()); err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("entry round trip: %+v %v", got, err)
	}
	refs := []histRef{{kind: refNode, id: 7}, {kind: refEntry, id: 1, mac: mac}, {kind: refTrash, id: 1<<64 - 1}}
	var idx []byte
	for _, r := range refs {
		idx = appendRef(idx, r)
	}
	if len(idx) != 9+41+9 {
		t.Errorf("index of 3 refs: %d bytes, want 59", len(idx))
	}
	if got, err := parseRefs(idx); err != nil || !reflect.DeepEqual(got, refs) {
		t.Fatalf("index round trip: %+v %v", got, err)
	}
	for _, bad := range [][]byte{{'x', 0, 0, 0, 0, 0, 0, 0, 0}, idx[:8], idx[:20]} {
		if _, err := parseRefs(bad); err == nil {
			t.Errorf("parseRefs(%x) accepted", bad)
		}
	}
	// JSON would have taken about twice the bytes.
	j, _ := jsonBytes(nodes[1])
	if b := nodes[1].encode(); len(b)*3 > len(j)*2 {
		t.Errorf("encoded %d bytes, JSON %d", len(b), len(j))
	}
}

// FuzzHistRecord: a kept version that decodes re-encodes to one that decodes
// the same; nothing panics.
func FuzzHistRecord(f *testing.F) {
	f.Add(histNode{Node: api.Node{ID: 7, Type: api.TypeFile, Attrs: []byte("a"), Chunks: []string{strings.Repeat("ab", 32)}}, Until: 1}.encode())
	f.Add(histEntry{Entry: entryRec{ID: 9, Name: []byte("n")}, Until: 4}.encode())
	f.Add([]byte{1, 0xff, 0xff})
	f.Add(appendRef(appendRef(nil, histRef{kind: refTrash, id: 3}), histRef{kind: refEntry, id: 1, mac: strings.Repeat("cd", 32)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if refs, err := parseRefs(b); err == nil {
			var again []byte
			for _, r := range refs {
				again = appendRef(again, r)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("index does not round-trip: %x -> %x", b, again)
			}
		}
		var h histNode
		if h.decode(b) == nil {
			var again histNode
			if err := again.decode(h.encode()); err != nil || !reflect.DeepEqual(again, h) {
				t.Fatalf("node does not round-trip: %+v", h)
			}
		}
		var e histEntry
		if e.decode(b) == nil {
			var again histEntry
			if err := again.decode(e.encode()); err != nil || !reflect.DeepEqual(again, e) {
				t.Fatalf("entry does not round-trip: %+v", e)
			}
		}
	})
}
