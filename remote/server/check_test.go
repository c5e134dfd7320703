package server

import (
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

type stateSummary struct {
	seq     uint64
	used    int64
	nodes   int
	entries int
	chunks  int
}

// checkConsistent verifies the invariants of one account's tree in badger:
// every entry names an existing node, file nlink = number of entries, each
// directory has exactly one entry whose parent is its Parent field, every
// node but the root is named, chunk refcounts match node chunk lists,
// zero-ref index matches, usage = sum of chunk sizes, sealed attributes,
// sealed names and name MACs, the node count is right, and the bytes of a
// chunk are in the metadata store iff its record says so, with its size.
func checkConsistent(t *testing.T, s *Server, acct string) stateSummary {
	t.Helper()
	var sum stateSummary
	err := s.db.View(func(tx *badger.Txn) error {
		var a accountRec
		if err := getJSON(tx, kAcct(acct), &a); err != nil {
			return err
		}
		sum.seq, sum.used = a.Seq, a.Used
		nodes := map[uint64]*api.Node{}
		forEach(t, tx, pNode(acct), func(k string, v []byte) {
			var n api.Node
			if err := jsonUnmarshal(v, &n); err != nil {
				t.Fatal(err)
			}
			nodes[n.ID] = &n
		})
		links := map[uint64]int{}
		parents := map[uint64]uint64{}
		forEach(t, tx, pEntAll(acct), func(k string, v []byte) {
			var e entryRec
			if err := jsonUnmarshal(v, &e); err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(k, "/")
			var parent uint64
			for _, c := range parts[0] {
				parent = parent*16 + uint64(strings.IndexRune("0123456789abcdef", c))
			}
			if _, ok := nodes[parent]; !ok {
				t.Errorf("entry under missing parent %d", parent)
			} else if nodes[parent].Type != api.TypeDir {
				t.Errorf("entry under non-directory %d", parent)
			}
			if _, ok := nodes[e.ID]; !ok {
				t.Errorf("entry %s names missing node %d", k, e.ID)
			}
			links[e.ID]++
			parents[e.ID] = parent
			sum.entries++
		})
		refs := map[string]int64{}
		for id, n := range nodes {
			if id == api.RootID {
				if links[id] != 0 {
					t.Errorf("root is named by an entry")
				}
				continue
			}
			switch n.Type {
			case api.TypeDir:
				if links[id] != 1 {
					t.Errorf("dir %d has %d entries", id, links[id])
				}
				if parents[id] != n.Parent {
					t.Errorf("dir %d Parent=%d but its entry is under %d", id, n.Parent, parents[id])
				}
			default:
				if int(n.Nlink) != links[id] || links[id] == 0 {
					t.Errorf("file %d nlink=%d but %d entries", id, n.Nlink, links[id])
				}
			}
			for c := range distinct(n.Chunks) {
				refs[c]++
			}
		}
		sum.nodes = len(nodes)
		var used, histChunks int64
		stored := map[string]bool{}
		forEach(t, tx, pChunk(acct), func(k string, v []byte) {
			var c chunkRec
			if err := jsonUnmarshal(v, &c); err != nil {
				t.Fatal(err)
			}
			if c.Refs != refs[k] {
				t.Errorf("chunk %s refs=%d, nodes reference it %d times", k, c.Refs, refs[k])
			}
			z, err := exists(tx, kZref(acct, k))
			if err != nil {
				t.Fatal(err)
			}
			if z != (c.Refs == 0) {
				t.Errorf("chunk %s refs=%d zref=%v", k, c.Refs, z)
			}
			data, err := readChunkData(tx, acct, k)
			if err != nil {
				t.Fatal(err)
			}
			if c.InDB != (data != nil) || c.InDB && int64(len(data)) != c.Size {
				t.Errorf("chunk %s inDB=%v size=%d, but %d bytes (present=%v) in the store", k, c.InDB, c.Size, len(data), data != nil)
			}
			if c.Hist {
				histChunks += c.Size
				if c.Refs != 0 {
					t.Errorf("chunk %s is referenced (%d) but counted as history", k, c.Refs)
				}
			}
			stored[k] = true
			delete(refs, k)
			used += c.Size
			sum.chunks++
		})
		// History: every chunk a kept version names is stored; kept record
		// bytes count in usage and history usage.
		var histRecords int64
		shareTrash := map[string]bool{} // the hs/ keys the kept deletions call for
		forEach(t, tx, []byte("hn/"+acct+"/"), func(k string, v []byte) {
			var h histNode
			if err := h.decode(v); err != nil {
				t.Fatal(err)
			}
			histRecords += int64(len(h.Node.Attrs))
			if h.Trash != nil {
				name, err := trashName(tx, acct, &h)
				if err != nil {
					t.Fatal(err)
				}
				if share, _, _ := api.RecordShare(h.Node.Attrs); nameInShare(name, share) {
					shareTrash[string(kHShareTrash(acct, share, h.Until, h.Node.ID))] = true
				}
			}
			for _, c := range h.Node.Chunks {
				if !stored[c] {
					t.Errorf("kept version %s names chunk %s, which is gone", k, c)
				}
			}
		})
		forEach(t, tx, []byte("he/"+acct+"/"), func(k string, v []byte) {
			var h histEntry
			if err := h.decode(v); err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(k, "/")
			histRecords += int64(len(h.Entry.Name) + len(parts[1])/2)
		})
		// The share trash index (history_share.go) holds exactly the kept
		// deletions of a share's nodes under the share's names.
		forEach(t, tx, []byte("hs/"+acct+"/"), func(k string, _ []byte) {
			full := "hs/" + acct + "/" + k
			if !shareTrash[full] {
				t.Errorf("share trash key %s without a kept deletion of that share", full)
			}
			delete(shareTrash, full)
		})
		for k := range shareTrash {
			t.Errorf("kept deletion of a share without its share trash key %s", k)
		}
		if a.UsageV == usageVersion && a.HistUsed != histChunks+histRecords {
			t.Errorf("history usage %d, kept chunks %d + kept records %d", a.HistUsed, histChunks, histRecords)
		}
		forEach(t, tx, []byte("cdata/"+acct+"/"), func(k string, v []byte) {
			if ok, err := exists(tx, kChunk(acct, k)); err != nil || !ok {
				t.Errorf("chunk bytes %s in the store without a record (%v)", k, err)
			}
		})
		for c := range refs {
			t.Errorf("nodes reference unstored chunk %s", c)
		}
		var meta int64
		for _, n := range nodes {
			meta += int64(len(n.Attrs))
		}
		forEach(t, tx, pEntAll(acct), func(k string, v []byte) {
			var e entryRec
			if err := jsonUnmarshal(v, &e); err != nil {
				t.Fatal(err)
			}
			meta += int64(len(e.Name) + len(k[strings.IndexByte(k, '/')+1:])/2)
		})
		// An account not mutated since signup is recounted at its first mutation.
		if a.UsageV == usageVersion && used+meta+histRecords != a.Used {
			t.Errorf("usage %d, sum of chunk sizes %d + sealed attributes and names %d + kept records %d = %d", a.Used, used, meta, histRecords, used+meta+histRecords)
		}
		if a.UsageV == usageVersion && a.Nodes != int64(len(nodes)) {
			t.Errorf("node count %d, %d nodes", a.Nodes, len(nodes))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// forEach calls f with each key (without prefix) and value under prefix.
func forEach(t *testing.T, tx *badger.Txn, prefix []byte, f func(k string, v []byte)) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			t.Fatal(err)
		}
		f(string(it.Item().Key()[len(prefix):]), v)
	}
}
