package server

// Chunk storage: records in badger transactions, blobs in the blob store,
// the per-chunk lock that orders an upload with the GC, and the quota refusals.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

func blobKey(acct, id string) string { return acct + "/" + id }

// chunkLock serializes a blob upload of a chunk with the GC of the same
// chunk, so the GC never deletes a blob that an upload is about to record.
// (Small chunks need no such lock: see putSmallChunk.)
func (s *Server) chunkLock(acct, id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(acct))
	h.Write([]byte(id))
	return &s.chunkMu[h.Sum32()%uint32(len(s.chunkMu))]
}

// readChunkAs reads a chunk record as T (chunkRec, or a part of it), or nil.
func readChunkAs[T any](tx *badger.Txn, acct, id string) (*T, error) {
	var c T
	if err := getJSON(tx, kChunk(acct, id), &c); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("read chunk: %w", err)
	}
	return &c, nil
}

func readChunk(tx *badger.Txn, acct, id string) (*chunkRec, error) {
	return readChunkAs[chunkRec](tx, acct, id)
}

// chunkServe is the part of a chunk record (chunkRec, same JSON names) that
// a GET needs: decoding the record's times cost more than the rest of the
// lookup on the random-read path.
type chunkServe struct {
	Size int64  `json:"size"`
	Sum  string `json:"sum,omitempty"`
	InDB bool   `json:"db,omitempty"`
}

// readChunkData returns a copy of the bytes of a chunk kept in the metadata
// store, or nil if they are missing.
func readChunkData(tx *badger.Txn, acct, id string) ([]byte, error) {
	it, err := tx.Get(kChunkData(acct, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read chunk %s/%s: %w", acct, id, err)
	}
	b, err := it.ValueCopy(nil)
	if err != nil { // e.g. a checksum mismatch: corrupted on disk
		return nil, fmt.Errorf("read chunk %s/%s: %w", acct, id, err)
	}
	return b, nil
}

func quotaErr() error {
	return apiErr(http.StatusInsufficientStorage, api.CodeQuota, "quota exceeded")
}

func readOnlyErr() error {
	return apiErr(http.StatusForbidden, api.CodeReadOnly, "account is read-only: usage exceeds quota")
}

// putChunk stores a chunk and its record, idempotently and within quota.
// A small chunk (≤ SmallChunkMax) is written with its record in one
// transaction (putSmallChunk). A bigger one goes to the blob store, written
// (durably) before the record commits, so a record always names a stored
// blob; a pending marker committed before the blob write names the blob
// until then, so a crash in between leaves nothing the GC cannot find
// (sweepPending).
func (s *Server) putChunk(ctx context.Context, acct, id string, data []byte) error {
	size := int64(len(data))
	if size <= s.cfg.SmallChunkMax {
		return s.putSmallChunk(ctx, acct, id, data)
	}
	mu := s.chunkLock(acct, id)
	mu.Lock()
	defer mu.Unlock()
	var have bool
	var a accountRec
	err := s.db.View(func(tx *badger.Txn) error {
		c, err := readChunk(tx, acct, id)
		have = c != nil
		if err != nil || have {
			return err
		}
		return getJSON(tx, kAcct(acct), &a)
	})
	if err != nil {
		return err
	}
	if have {
		return nil // already stored: uploads are idempotent
	}
	// Refuse early, before writing the blob; the transaction checks again.
	now := time.Now()
	if a.readOnly(now) {
		return readOnlyErr()
	}
	if a.live()+size > a.limit(now) {
		return quotaErr()
	}
	if err := s.db.Update(func(tx *badger.Txn) error { return setJSON(tx, kPend(acct, id), now) }); err != nil {
		return fmt.Errorf("mark pending chunk: %w", err)
	}
	sum := sha256.Sum256(data)
	err = s.blobs.Put(ctx, blobKey(acct, id), data)
	if err != nil {
		err = fmt.Errorf("store chunk %s/%s: %w", acct, id, err)
		s.log.Warn("chunk upload failed", "account", acct, "chunk", id, "err", err)
	} else {
		var inDB bool
		err = s.mutate(acct, false, func(m *mtx) error {
			c, err := readChunk(m.tx, acct, id)
			if inDB = c != nil && c.InDB; err != nil || inDB {
				return err
			}
			if err := m.recordChunk(id, chunkRec{Size: size, Sum: hex.EncodeToString(sum[:])}, nil); err != nil {
				return err
			}
			return m.tx.Delete(kPend(acct, id))
		})
		if err == nil && inDB {
			// A small upload of the same id (other bytes: a buggy client)
			// won meanwhile; it holds no chunk lock. Our blob is not needed.
			s.dropPending(context.WithoutCancel(ctx), acct, id)
			return nil
		}
	}
	if err != nil {
		// No record names the blob (we hold the chunk's lock): drop it, and
		// the marker once the blob is surely gone.
		s.dropPending(context.WithoutCancel(ctx), acct, id)
		return err
	}
	return nil
}

// recordChunk charges and records a new chunk (unreferenced so far), with
// its bytes when rec.InDB. A chunk already recorded is left alone (uploads
// are idempotent, also for a read-only account). A refusal (read-only,
// quota) writes nothing.
func (m *mtx) recordChunk(id string, rec chunkRec, data []byte) error {
	acct := m.acct.ID
	if ok, err := exists(m.tx, kChunk(acct, id)); err != nil || ok {
		return err
	}
	if m.acct.readOnly(m.now) {
		return readOnlyErr()
	}
	if err := m.charge(rec.Size); err != nil {
		return err
	}
	rec.Created, rec.Unref = m.now, m.now
	if err := setJSON(m.tx, kChunk(acct, id), rec); err != nil {
		return err
	}
	if rec.InDB {
		if err := m.tx.Set(kChunkData(acct, id), data); err != nil {
			return err
		}
	}
	return m.tx.Set(kZref(acct, id), nil)
}

// dropPending deletes an unrecorded blob and then its pending marker; on
// failure the marker stays for the next sweep. The caller holds the chunk lock.
func (s *Server) dropPending(ctx context.Context, acct, id string) {
	if err := s.blobs.Delete(ctx, blobKey(acct, id)); err != nil {
		s.log.Warn("dropping unrecorded chunk failed; the GC retries", "account", acct, "chunk", id, "err", err)
		return
	}
	if err := s.db.Update(func(tx *badger.Txn) error { return tx.Delete(kPend(acct, id)) }); err != nil {
		s.log.Warn("clearing pending chunk marker failed", "account", acct, "chunk", id, "err", err)
	}
}
