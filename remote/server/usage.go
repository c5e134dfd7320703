package server

// What an account's usage counts (accountRec.Used): the sealed bytes of
// every stored chunk (from upload until the GC deletes it), the sealed
// attributes of every node, and the sealed name plus the name MAC of every
// entry. Metadata is charged as it is written (create, update, rename,
// link) and credited as it goes (unlink, rename over a name, update to
// smaller attributes), in the transaction of the change, so a refusal
// changes nothing. accountRec.Nodes counts the account's nodes, capped by
// Config.MaxNodes.
//
// Accounts written before metadata was charged (and new accounts, whose
// signup writes the root node without charging it) carry UsageV <
// usageVersion: the first mutation of the account recounts its usage from
// its records (recount), and the server recounts every such account when it
// opens its data directory (migrateUsage).

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// usageVersion is the accounting Used follows: 1 = chunks + metadata, Nodes kept.
const usageVersion = 1

// DefaultMaxNodes is Config.MaxNodes when unset: files and directories per account.
const DefaultMaxNodes = 10_000_000

// attrsCharge is what a node's sealed attributes cost.
func attrsCharge(attrs []byte) int64 { return int64(len(attrs)) }

// entryCharge is what an entry costs: its sealed name and its name MAC
// (32 bytes, kept as 64 hex characters).
func entryCharge(mac string, name []byte) int64 { return int64(len(name) + len(mac)/2) }

// charge adds delta bytes to the account's usage; growth the quota cannot
// hold is refused with the quota error (the caller's transaction is then
// discarded, so nothing changes). Shrinking is always allowed.
//
// History gives way: only live data (accountRec.live) must fit; what it
// takes beyond the quota from history is freed after the commit (m.room).
func (m *mtx) charge(delta int64) error {
	limit := m.acct.limit(m.now)
	if delta > 0 && m.acct.live()+delta > limit {
		return quotaErr()
	}
	m.acct.Used += delta
	if delta > 0 && m.acct.Used > limit {
		m.room = max(m.room, m.acct.Used-limit)
	}
	return nil
}

// addNode counts a new node against Config.MaxNodes.
func (m *mtx) addNode() error {
	if m.acct.Nodes >= m.s.maxNodes() {
		return apiErr(http.StatusInsufficientStorage, api.CodeNodeLimit,
			fmt.Sprintf("the account has %d files and directories, the most this server allows: delete some to create more", m.acct.Nodes))
	}
	m.acct.Nodes++
	return nil
}

func (s *Server) maxNodes() int64 {
	if s.cfg.MaxNodes > 0 {
		return s.cfg.MaxNodes
	}
	return DefaultMaxNodes
}

// usageCount is an account's usage counted from its records.
type usageCount struct {
	chunks, attrs, names int64
	nodes                int64
	// hist: bytes kept only for history (kept records and unreferenced
	// chunks kept for history), part of the sums above and of history.
	hist, histRecords int64
}

func (u usageCount) used() int64 { return u.chunks + u.attrs + u.names + u.histRecords }

// countUsage sums an account's chunk, attribute and name bytes and counts
// its nodes from the records in tx.
func countUsage(tx *badger.Txn, acct string) (usageCount, error) {
	var u usageCount
	each := func(prefix []byte, f func(key, val []byte) error) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error { return f(item.Key()[len(prefix):], v) }); err != nil {
				return err
			}
		}
		return nil
	}
	err := each(pChunk(acct), func(_, v []byte) error {
		var c struct {
			Size int64 `json:"size"`
			Hist bool  `json:"hist"`
		}
		if err := jsonUnmarshal(v, &c); err != nil {
			return err
		}
		u.chunks += c.Size
		if c.Hist {
			u.hist += c.Size
		}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("count chunks: %w", err)
	}
	err = each(pNode(acct), func(_, v []byte) error {
		var n struct {
			Attrs []byte `json:"attrs"`
		}
		if err := jsonUnmarshal(v, &n); err != nil {
			return err
		}
		u.attrs += attrsCharge(n.Attrs)
		u.nodes++
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("count nodes: %w", err)
	}
	err = each(pEntAll(acct), func(k, v []byte) error {
		var e entryRec
		if err := jsonUnmarshal(v, &e); err != nil {
			return err
		}
		// The key is PARENTID/NAMEMAC.
		_, mac, _ := strings.Cut(string(k), "/")
		u.names += entryCharge(mac, e.Name)
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("count entries: %w", err)
	}
	err = each([]byte("hn/"+acct+"/"), func(_, v []byte) error {
		var h histNode
		if err := h.decode(v); err != nil {
			return err
		}
		u.histRecords += attrsCharge(h.Node.Attrs)
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("count kept versions: %w", err)
	}
	err = each([]byte("he/"+acct+"/"), func(k, v []byte) error {
		var h histEntry
		if err := h.decode(v); err != nil {
			return err
		}
		// The key is PARENTID/NAMEMAC/UNTIL.
		parts := strings.Split(string(k), "/")
		u.histRecords += entryCharge(parts[1], h.Entry.Name)
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("count kept entries: %w", err)
	}
	u.hist += u.histRecords
	return u, nil
}

// recount sets the account's usage and node count from its records, once
// (UsageV < usageVersion): it runs inside the account's first mutation
// under this accounting. It never refuses: an account whose metadata puts it
// over quota becomes read-only, as after any other overrun.
func (m *mtx) recount() error {
	u, err := countUsage(m.tx, m.acct.ID)
	if err != nil {
		return fmt.Errorf("recount usage of account %s: %w", m.acct.ID, err)
	}
	if m.acct.Used != u.used() || m.acct.Nodes != u.nodes {
		m.s.log.Info("account usage recounted", "account", m.acct.ID,
			"used_before", m.acct.Used, "used", u.used(), "chunk_bytes", u.chunks,
			"attr_bytes", u.attrs, "name_bytes", u.names, "nodes", u.nodes)
	}
	m.acct.Used, m.acct.Nodes, m.acct.UsageV, m.acct.HistUsed = u.used(), u.nodes, usageVersion, u.hist
	return nil
}

// migrateUsage recounts every account still on an older accounting, so
// the usage each shows is right from the first start after an upgrade.
func (s *Server) migrateUsage() error {
	var ids []string
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := kAcct("")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var a struct {
				UsageV int `json:"usage_v"`
			}
			if err := it.Item().Value(func(v []byte) error { return jsonUnmarshal(v, &a) }); err != nil {
				return err
			}
			if a.UsageV < usageVersion {
				ids = append(ids, string(it.Item().Key()[len(prefix):]))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("server: list accounts to recount: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	s.log.Info("recounting account usage (metadata is now charged)", "accounts", len(ids))
	for _, id := range ids {
		// mutateTxn recounts an account on an older accounting.
		if err := s.mutate(id, false, func(*mtx) error { return nil }); err != nil {
			return fmt.Errorf("server: recount usage of account %s: %w", id, err)
		}
	}
	s.log.Info("account usage recounted", "accounts", len(ids))
	return nil
}
