package payment

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Key layout, all under the "pay/" prefix owned by this package:
//
//	pay/next                      next unused address index (uint32 BE)
//	pay/cursor                    scan cursor: last scanned block (JSON)
//	pay/blk/<height BE>           hash of a scanned block, for reorg detection
//	pay/inv/<id>                  invoice (JSON)
//	pay/acct/<hex account>/<id>   invoices of an account
//	pay/addr/<hex script>         invoice id paid by an output script
//	pay/active/<id>               invoices still watched
//	pay/due/<id>                  settled invoices whose credit is not yet applied
//	pay/pmt/<txid>:<vout>         payment, unique by outpoint (JSON)
//	pay/ip/<id>/<txid>:<vout>     payments of an invoice
//	pay/ph/<height BE>/<outpoint> confirmed payments by block height
//	pay/vch/<hex sha256(code)>    voucher (JSON)
const (
	keyNext      = "pay/next"
	keyCursor    = "pay/cursor"
	prefixBlock  = "pay/blk/"
	prefixInv    = "pay/inv/"
	prefixAcct   = "pay/acct/"
	prefixAddr   = "pay/addr/"
	prefixActive = "pay/active/"
	prefixDue    = "pay/due/"
	prefixPmt    = "pay/pmt/"
	prefixInvPmt = "pay/ip/"
	prefixHeight = "pay/ph/"
	prefixVouch  = "pay/vch/"
)

func heightBytes(h int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(h))
	return b[:]
}

func blockKey(h int64) []byte { return append([]byte(prefixBlock), heightBytes(h)...) }
func invKey(id string) []byte { return []byte(prefixInv + id) }
func acctPrefix(account string) []byte {
	return []byte(prefixAcct + hex.EncodeToString([]byte(account)) + "/")
}
func acctKey(account, id string) []byte { return append(acctPrefix(account), id...) }
func addrKey(script []byte) []byte      { return []byte(prefixAddr + hex.EncodeToString(script)) }
func activeKey(id string) []byte        { return []byte(prefixActive + id) }
func dueKey(id string) []byte           { return []byte(prefixDue + id) }
func pmtKey(op string) []byte           { return []byte(prefixPmt + op) }
func invPmtPrefix(id string) []byte     { return []byte(prefixInvPmt + id + "/") }
func invPmtKey(id, op string) []byte    { return append(invPmtPrefix(id), op...) }
func heightPrefix(h int64) []byte {
	return append(append([]byte(prefixHeight), heightBytes(h)...), '/')
}
func heightKey(h int64, op string) []byte { return append(heightPrefix(h), op...) }

// cursor is the last block the watcher scanned.
type cursor struct {
	Height int64  `json:"height"`
	Hash   string `json:"hash"`
}

// paymentRec is one output paying an invoice address.
type paymentRec struct {
	InvoiceID string    `json:"invoice"`
	TxID      string    `json:"txid"`
	Vout      uint32    `json:"vout"`
	AmountSat int64     `json:"amount_sat"`
	Height    int64     `json:"height,omitempty"` // 0 while unconfirmed
	BlockHash string    `json:"block_hash,omitempty"`
	SeenAt    time.Time `json:"seen_at"`        // first seen (mempool) or block time
	Gone      bool      `json:"gone,omitempty"` // unconfirmed and no longer in the mempool
}

func (p *paymentRec) outpoint() string { return fmt.Sprintf("%s:%d", p.TxID, p.Vout) }

// live reports whether the payment still counts: confirmed, or in the mempool.
func (p *paymentRec) live() bool { return p.Height > 0 || !p.Gone }

func getJSON(txn *badger.Txn, key []byte, v any) (bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get %q: %w", key, err)
	}
	err = item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	if err != nil {
		return false, fmt.Errorf("decode %q: %w", key, err)
	}
	return true, nil
}

func putJSON(txn *badger.Txn, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %q: %w", key, err)
	}
	if err := txn.Set(key, b); err != nil {
		return fmt.Errorf("set %q: %w", key, err)
	}
	return nil
}

// keysWithPrefix lists the keys under prefix (without values).
func keysWithPrefix(txn *badger.Txn, prefix []byte) [][]byte {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	return keys
}

// update runs fn in a read-write transaction, retrying on conflicts with
// concurrent transactions (badger's optimistic concurrency).
func update(db *badger.DB, fn func(txn *badger.Txn) error) error {
	var err error
	for attempt := range 100 {
		err = db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		// Random backoff so contending writers (e.g. concurrent invoice
		// creations sharing the address counter) do not collide again.
		time.Sleep(time.Duration(mrand.Int64N(int64(min(attempt+1, 20)) * int64(time.Millisecond))))
	}
	return err
}

func jsonMarshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b, nil
}
