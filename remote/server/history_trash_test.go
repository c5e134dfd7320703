package server

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// damageRecord overwrites the kept version at key with bytes no decoder
// reads, as a damaged metadata store would hold.
func damageRecord(t *testing.T, db *badger.DB, key []byte) {
	t.Helper()
	err := db.Update(func(tx *badger.Txn) error {
		if _, err := tx.Get(key); err != nil {
			return err // damage only a record that is there
		}
		return tx.Set(key, []byte{0xff, 0x01})
	})
	if err != nil {
		t.Fatalf("damage %q: %v", key, err)
	}
}

// TestTrashUnreadableRecordFails: a deleted node whose kept version cannot
// be decoded makes the trash listing fail (500, the cause in the log), not
// answer without the item as if it had been purged; the record stays.
func TestTrashUnreadableRecordFails(t *testing.T) {
	var log logBuffer
	e, u := historyEnv(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&log, nil)) })
	f := u.create(api.RootID, api.TypeFile)
	g := u.create(api.RootID, api.TypeFile)
	for _, x := range []api.Entry{f, g} {
		u.must("POST", "/v1/unlink", api.UnlinkRequest{Parent: api.RootID, NameMAC: x.NameMAC}, nil)
	}
	var tr api.TrashResponse
	u.must("GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 2 {
		t.Fatalf("trash before: %+v", tr)
	}
	var deleted int64
	for _, it := range tr.Items {
		if it.Node.ID == f.Node.ID {
			deleted = it.Deleted
		}
	}
	key := kHNode(u.id, f.Node.ID, deleted)
	damageRecord(t, e.s.db, key)

	tr = api.TrashResponse{}
	st, code := u.call("GET", "/v1/history/trash", nil, &tr)
	expect(t, "trash with a damaged kept version", st, code, 500, api.CodeInternal)
	if len(tr.Items) != 0 {
		t.Errorf("trash answered items with a damaged kept version: %+v", tr)
	}
	if l := log.String(); !strings.Contains(l, "kept version of node") || !strings.Contains(l, errHistRecord.Error()) {
		t.Errorf("the log does not say which record is damaged:\n%s", l)
	}
	// Nothing changed: the damaged record is still there to repair.
	err := e.s.db.View(func(tx *badger.Txn) error {
		ok, err := exists(tx, key)
		if err == nil && !ok {
			err = errors.New("gone")
		}
		return err
	})
	if err != nil {
		t.Fatalf("damaged record after the listing: %v", err)
	}
}

// TestShareTrashUnreadableRecordFails: the same for a member's listing of
// a share's trash, and for the start-up pass that indexes the share trash
// of older data directories: it fails, naming the record, and writes
// neither index keys nor its done-mark, where it used to skip the node (so
// the share's trash lost it for good).
func TestShareTrashUnreadableRecordFails(t *testing.T) {
	fx := newShareFixture(t, func(c *Config) { c.HistoryDefault = 24 * time.Hour })
	w := fx.w
	fx.accept(w)
	w.scopedMustJSON(fx.scope, "POST", "/v1/unlink", api.UnlinkRequest{Parent: fx.d.Node.ID, NameMAC: fx.f.NameMAC}, nil)
	var tr api.TrashResponse
	w.scopedMustJSON(fx.scope, "GET", "/v1/history/trash", nil, &tr)
	if len(tr.Items) != 1 || tr.Items[0].Node.ID != fx.f.Node.ID {
		t.Fatalf("share trash before: %+v", tr)
	}
	s := fx.e.s
	damageRecord(t, s.db, kHNode(fx.a.id, fx.f.Node.ID, tr.Items[0].Deleted))

	st, code := w.scoped(fx.scope, "GET", "/v1/history/trash", nil, nil)
	expect(t, "share trash with a damaged kept version", st, code, 500, api.CodeInternal)

	// An older data directory: no share trash index yet.
	old := append(keysWithPrefix(t, s.db, []byte("hs/")), string(kShareTrashIndexed()))
	err := s.db.Update(func(tx *badger.Txn) error {
		for _, k := range old {
			if err := tx.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.indexShareTrash()
	if !errors.Is(err, errHistRecord) || !strings.Contains(err.Error(), "kept version of node") {
		t.Fatalf("indexing the share trash over a damaged record: %v", err)
	}
	if ks := keysWithPrefix(t, s.db, []byte("hs/")); len(ks) != 0 {
		t.Errorf("share trash keys written by the failed pass: %q", ks)
	}
	err = s.db.View(func(tx *badger.Txn) error {
		ok, err := exists(tx, kShareTrashIndexed())
		if err == nil && ok {
			err = errors.New("the failed pass marked the index done")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzTrashCursor: what parseTrashCursor accepts (a query's cursor, a share
// trash key's tail) is exactly what trashCursor writes, and every cursor
// trashCursor writes for a time since 1970 reads back.
func FuzzTrashCursor(f *testing.F) {
	for _, s := range []string{trashCursor(1733400000000000000, 0xab), trashCursor(0, 0), "ffffffffffffffff/0000000000000000",
		"0000000000000001/00000000000000AB", "+000000000000001/0000000000000001", "x"} {
		f.Add(s, int64(1733400000000000000), uint64(7))
	}
	f.Fuzz(func(t *testing.T, c string, until int64, id uint64) {
		if u, i, ok := parseTrashCursor(c); ok && trashCursor(u, i) != c {
			t.Fatalf("parseTrashCursor accepted %q as %d/%d", c, u, i)
		}
		if until < 0 {
			return
		}
		if u, i, ok := parseTrashCursor(trashCursor(until, id)); !ok || u != until || i != id {
			t.Fatalf("trashCursor(%d, %d) = %q reads back as %d, %d, %v", until, id, trashCursor(until, id), u, i, ok)
		}
	})
}
