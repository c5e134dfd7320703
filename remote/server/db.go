package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"kumo/remote/api"
)

// Badger key layout (see docs/API.md). Account ids are 32 hex characters,
// node ids and sequence numbers are 16 hex digits (big-endian order), chunk
// ids and name MACs are 64 hex characters.
//
//	sys/secret                        32 random bytes, the server secret
//	email/EMAIL                       account id
//	acct/ACCT                         accountRec (JSON)
//	sess/TOKENHASH                    sessionRec (JSON), badger TTL = expiry
//	asess/ACCT/TOKENHASH              empty, TTL; index of an account's sessions
//	node/ACCT/NODEID                  api.Node (JSON)
//	ent/ACCT/PARENTID/NAMEMAC         entryRec (JSON)
//	chunk/ACCT/CHUNKID                chunkRec (JSON)
//	cdata/ACCT/CHUNKID                the sealed bytes of a chunk kept in the metadata store (chunkRec.InDB)
//	zref/ACCT/CHUNKID                 empty; present while the chunk has no references
//	feed/ACCT/SEQ                     api.Change (JSON)
//	pend/ACCT/CHUNKID                 upload time (JSON); blob being written, not yet recorded
//	hn/, he/, hx/, hh/, hs/, hsh/     history (history.go, history_share.go)
//	share/, sroot/, smem/, sjoin/     shared folders (shares.go)
func kSecret() []byte                  { return []byte("sys/secret") }
func kEmail(email string) []byte       { return []byte("email/" + email) }
func kAcct(id string) []byte           { return []byte("acct/" + id) }
func kSess(hash string) []byte         { return []byte("sess/" + hash) }
func kAcctSess(a, hash string) []byte  { return []byte("asess/" + a + "/" + hash) }
func pAcctSess(a string) []byte        { return []byte("asess/" + a + "/") }
func kNode(a string, id uint64) []byte { return fmt.Appendf(nil, "node/%s/%016x", a, id) }
func pNode(a string) []byte            { return []byte("node/" + a + "/") }
func kEnt(a string, parent uint64, mac string) []byte {
	return fmt.Appendf(nil, "ent/%s/%016x/%s", a, parent, mac)
}
func pEnt(a string, parent uint64) []byte { return fmt.Appendf(nil, "ent/%s/%016x/", a, parent) }
func pEntAll(a string) []byte             { return []byte("ent/" + a + "/") }
func kChunk(a, id string) []byte          { return []byte("chunk/" + a + "/" + id) }
func pChunk(a string) []byte              { return []byte("chunk/" + a + "/") }
func kChunkData(a, id string) []byte      { return []byte("cdata/" + a + "/" + id) }
func kZref(a, id string) []byte           { return []byte("zref/" + a + "/" + id) }
func kFeed(a string, seq uint64) []byte   { return fmt.Appendf(nil, "feed/%s/%016x", a, seq) }
func kPend(a, id string) []byte           { return []byte("pend/" + a + "/" + id) }

type grant struct {
	Bytes int64     `json:"bytes"`
	Until time.Time `json:"until"`
}

type accountRec struct {
	ID            string        `json:"id"`
	Email         string        `json:"email"`
	Salt          []byte        `json:"salt"`
	KDF           api.KDFParams `json:"kdf"`
	AuthHash      []byte        `json:"auth_hash"` // SHA-256(pepper || auth key)
	WrappedMaster []byte        `json:"wrapped_master"`
	Created       time.Time     `json:"created"`
	Quota         int64         `json:"quota"` // base limit; grants add to it
	Grants        []grant       `json:"grants,omitempty"`
	Used          int64         `json:"used"`
	Seq           uint64        `json:"seq"`
	FeedMin       uint64        `json:"feed_min"` // oldest change still on the feed
	Disabled      bool          `json:"disabled,omitempty"`
	FeedUsed      int64         `json:"feed_used,omitempty"` // usage last announced on the feed
	// Nodes counts the account's nodes (Config.MaxNodes caps it); UsageV is
	// the accounting Used and Nodes follow (usage.go).
	Nodes  int64 `json:"nodes,omitempty"`
	UsageV int   `json:"usage_v,omitempty"`
	// Format v2 (identity.go): identity keys, published once; the recovery
	// key's auth hash (SHA-256(pepper || recovery auth key)) and master wrapping.
	Identity     *api.Identity `json:"identity,omitempty"`
	RecoveryHash []byte        `json:"recovery_hash,omitempty"`
	RecoveryWrap []byte        `json:"recovery_wrap,omitempty"`
	// History (history.go): the account's retention window in seconds (nil:
	// the server's default), bytes kept only for history (part of Used), the
	// floor below which history was freed early, when it was last freed to
	// make room, when history began, and the last change time and hour
	// (Unix ns) that keep change times increasing and index the hours.
	Retention *int64    `json:"retention,omitempty"`
	HistUsed  int64     `json:"hist_used,omitempty"`
	HistFloor int64     `json:"hist_floor,omitempty"`
	HistFreed time.Time `json:"hist_freed,omitempty"`
	HistStart int64     `json:"hist_start,omitempty"`
	LastT     int64     `json:"last_t,omitempty"`
	LastHour  int64     `json:"last_hour,omitempty"`
}

// limit is the effective quota at now: base plus unexpired grants, at most
// MaxQuota (each term is at most MaxQuota too, so a sum never wraps).
func (a *accountRec) limit(now time.Time) int64 {
	l := min(a.Quota, MaxQuota)
	for _, g := range a.Grants {
		if g.Until.After(now) {
			l = min(l+min(g.Bytes, MaxQuota), MaxQuota)
		}
	}
	return l
}

// live is the usage of what the tree holds now: history gives way to it.
func (a *accountRec) live() int64 { return a.Used - a.HistUsed }

func (a *accountRec) readOnly(now time.Time) bool { return a.live() > a.limit(now) }

func (a *accountRec) view(now time.Time) api.Account {
	v := api.Account{
		ID: a.ID, Email: a.Email, QuotaUsed: a.Used, QuotaLimit: a.limit(now),
		Plan: "free", ReadOnly: a.readOnly(now), Seq: a.Seq,
	}
	for _, g := range a.Grants {
		if g.Until.After(now) {
			v.Plan = "paid"
			if g.Until.After(v.PlanExpires) {
				v.PlanExpires = g.Until
			}
		}
	}
	return v
}

type sessionRec struct {
	Account string    `json:"account"`
	Expires time.Time `json:"expires"`
}

type entryRec struct {
	ID    uint64 `json:"id"`
	Name  []byte `json:"name"`
	Since int64  `json:"since,omitempty"` // when this version became current (history.go)
}

type chunkRec struct {
	Size    int64     `json:"size"`
	Refs    int64     `json:"refs"` // nodes whose chunk list holds this chunk
	Created time.Time `json:"created"`
	Unref   time.Time `json:"unref"`         // when Refs last became 0 (or creation)
	Sum     string    `json:"sum,omitempty"` // hex SHA-256 of the sealed bytes, to spot corruption in storage
	// InDB: the bytes are in this store (kChunkData), written in the
	// record's transaction, not in the blob store. Such chunks have no Sum
	// and GET does not re-hash them: badger's checksums (verified on every
	// read, see badgerOptions) and the client's AEAD cover them.
	InDB bool `json:"db,omitempty"`
	// Hist: unreferenced but kept for history (counted in accountRec.HistUsed,
	// found through zref/, like every unreferenced chunk).
	Hist bool `json:"hist,omitempty"`
}

func jsonBytes(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b, nil
}

// smallMemoryOptions size the metadata store for Config.SmallMemory (the
// embedded cloud, in the drive's process). Memtables are arenas on the heap,
// up to NumMemtables of them while flushes run behind: 2 × 8 MiB instead of
// 5 × 32 MiB at worst; a flush builds its level-0 table in memory (buffers
// growing by doubling past the memtable's size). An 8 MiB memtable still
// takes transactions of 1.2 MB of keys and values under 1 KiB (chunk bytes
// over 1 KiB count as a pointer), twice a 300-op batch. Table indexes stay in
// the mapped files (no index cache). Tables are not compressed: a table
// builder holds every block twice while it compresses (raw and compressed),
// which during a compaction after 100,000 small files was about 60 MB of the
// drive's heap, to save little (keys and sealed records). The small block
// cache keeps parsed, checksum-verified blocks (and decompresses tables
// written compressed by an earlier version). Value
// log files are mapped: chunk bytes written stay in the process's RSS as
// clean file pages until it ends; no option changes that
// (Config.SmallChunkMax does).
func smallMemoryOptions(o badger.Options) badger.Options {
	return o.WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithCompression(options.None).
		WithBlockCacheSize(4 << 20).
		WithIndexCacheSize(0).
		WithValueLogFileSize(16 << 20).
		WithNumCompactors(2)
}

func getJSON(tx *badger.Txn, key []byte, v any) error {
	it, err := tx.Get(key)
	if err != nil {
		return err
	}
	return it.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

func setJSON(tx *badger.Txn, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return tx.Set(key, b)
}

func exists(tx *badger.Txn, key []byte) (bool, error) {
	_, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// loadSecret reads the server secret, creating it on first start.
func (s *Server) loadSecret() error {
	err := s.db.Update(func(tx *badger.Txn) error {
		it, err := tx.Get(kSecret())
		if err == nil {
			s.secret, err = it.ValueCopy(nil)
			return err
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		s.secret = make([]byte, 32)
		rand.Read(s.secret)
		return tx.Set(kSecret(), s.secret)
	})
	if err != nil {
		return fmt.Errorf("server: load secret: %w", err)
	}
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("kumo/server/pepper"))
	s.pepper = m.Sum(nil)
	return nil
}

// accountLocks serialize the mutations of one account: every mutation writes
// the account record (sequence number, usage), so they would conflict anyway.
type accountLocks struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

func (l *accountLocks) get(id string) *sync.Mutex {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.m[id]
	if m == nil {
		m = &sync.Mutex{}
		l.m[id] = m
	}
	return m
}

// mtx is one mutation of one account in progress.
type mtx struct {
	s       *Server
	tx      *badger.Txn
	acct    *accountRec
	now     time.Time
	changes int
	t       int64  // change time of this mutation (when), 0 until needed
	err     error  // a failed write of a helper that cannot return one (when)
	hidx    []byte // versions this mutation ended: the expiry index (history_codec.go)
	// lastEntry is the entry version kept last, if nothing was kept after it.
	lastEntry *histRef
	// shareHours: the shares whose hour index this mutation wrote (history_share.go).
	shareHours map[uint64]bool
	// shareGens: share -> generation read by this transaction (sharegen.go;
	// 0: no such share), so a batch reads each share's record once.
	shareGens map[uint64]uint32
	// room is what live data took beyond the quota that history held:
	// history is freed by that much after the commit (freeRoom).
	room int64
}

// change appends c to the account's feed and returns its sequence number.
func (m *mtx) change(c api.Change) (uint64, error) {
	m.acct.Seq++
	c.Seq = m.acct.Seq
	if m.acct.FeedMin == 0 {
		m.acct.FeedMin = c.Seq
	}
	m.changes++
	return c.Seq, setJSON(m.tx, kFeed(m.acct.ID, c.Seq), c)
}

// mutate runs fn in one badger transaction on the account's record, retrying
// on conflicts, then saves the record, trims the feed and wakes long-polls.
// With write set, a read-only account is refused.
func (s *Server) mutate(acctID string, write bool, fn func(m *mtx) error) error {
	mu := s.locks.get(acctID)
	mu.Lock()
	var changed bool
	var err error
	var room int64
	for attempt := 0; attempt < 20; attempt++ {
		err = s.db.Update(func(tx *badger.Txn) error {
			var err error
			changed, err = s.mutateTxn(tx, acctID, write, func(m *mtx) error {
				err := fn(m)
				room = m.room
				return err
			})
			return err
		})
		if !errors.Is(err, badger.ErrConflict) {
			break
		}
	}
	mu.Unlock()
	if err == nil && changed {
		s.feed.notify(acctID)
	}
	if err == nil {
		s.makeRoom(acctID, room)
	}
	return err
}

// makeRoom frees history after a commit in which live data took room that
// history held (mtx.room). A failure is logged: the write itself succeeded.
func (s *Server) makeRoom(acct string, room int64) {
	if room <= 0 {
		return
	}
	if _, err := s.freeRoom(context.Background(), acct, room); err != nil {
		s.log.Warn("history: could not free room", "account", acct, "err", err)
	}
}

// mutateTxn is the body of mutate inside a given transaction (the payment
// service's, for credits): it loads the account, runs fn, announces a usage
// change if it is large enough, trims the feed and saves the record. It
// reports whether changes were appended; the caller wakes long-polls after
// the commit.
func (s *Server) mutateTxn(tx *badger.Txn, acctID string, write bool, fn func(m *mtx) error) (bool, error) {
	var a accountRec
	if err := getJSON(tx, kAcct(acctID), &a); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return false, apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "no such account")
		}
		return false, fmt.Errorf("load account: %w", err)
	}
	m := &mtx{s: s, tx: tx, acct: &a, now: time.Now()}
	if a.UsageV < usageVersion {
		if err := m.recount(); err != nil {
			return false, err
		}
	}
	if write && a.readOnly(m.now) {
		return false, readOnlyErr()
	}
	if err := fn(m); err != nil {
		return false, err
	}
	if m.err != nil {
		return false, m.err
	}
	if err := m.writeIndex(); err != nil {
		return false, err
	}
	if err := m.announceUsage(false); err != nil {
		return false, err
	}
	// Trim the feed to the newest feedKeep changes.
	for a.FeedMin != 0 && a.Seq >= a.FeedMin && a.Seq-a.FeedMin >= s.feedKeep {
		if err := tx.Delete(kFeed(a.ID, a.FeedMin)); err != nil {
			return false, err
		}
		a.FeedMin++
	}
	return m.changes > 0, setJSON(tx, kAcct(acctID), &a)
}

// usageStep is how far usage may drift from the last announced value before
// an account change goes on the feed: chunk uploads and GC would otherwise
// add a change per chunk. 1% of the limit, between 1 and 64 MiB.
func usageStep(limit int64) int64 { return min(max(limit/100, 1<<20), 64<<20) }

// announceUsage appends an account change when usage moved by usageStep
// since the last announcement, or (force) by any amount.
func (m *mtx) announceUsage(force bool) error {
	d := m.acct.Used - m.acct.FeedUsed
	if d == 0 || (!force && d < usageStep(m.acct.limit(m.now)) && -d < usageStep(m.acct.limit(m.now))) {
		return nil
	}
	return m.accountChange()
}

// accountChange appends an account change (quota, plan, usage or invoices).
func (m *mtx) accountChange() error {
	m.acct.FeedUsed = m.acct.Used
	_, err := m.change(api.Change{Kind: api.ChangeAccount})
	return err
}

// loadAccount reads the account record in a read-only transaction.
func (s *Server) loadAccount(id string) (*accountRec, error) {
	var a accountRec
	err := s.db.View(func(tx *badger.Txn) error { return getJSON(tx, kAcct(id), &a) })
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// Errors.

func apiErr(status int, code, msg string) *api.Error {
	return &api.Error{Status: status, Code: code, Message: msg}
}

func badRequest(format string, a ...any) *api.Error {
	return apiErr(http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf(format, a...))
}

func notFound(what string) *api.Error {
	return apiErr(http.StatusNotFound, api.CodeNotFound, what+" not found")
}

func conflict(code, msg string) *api.Error { return apiErr(http.StatusConflict, code, msg) }

func jsonUnmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode record: %w", err)
	}
	return nil
}
