package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
	"kumo/remote/blob"
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

func (s *Server) handlePutChunk(w http.ResponseWriter, r *http.Request, acct string) error {
	id := r.PathValue("id")
	if !api.ValidHexID(id) {
		return badRequest("invalid chunk id")
	}
	if r.ContentLength > api.MaxChunkBody {
		return apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "chunk too large")
	}
	data, err := readBody(http.MaxBytesReader(w, r.Body, api.MaxChunkBody), r.ContentLength)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "chunk too large")
		}
		return badRequest("reading body: %v", err)
	}
	if len(data) == 0 {
		return badRequest("empty chunk")
	}
	if err := s.putChunk(r.Context(), acct, id, data); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, okBody)
}

// readBody reads a request body of announced length n (-1: unknown) into
// one buffer of that size: io.ReadAll grows its buffer by doubling, which
// for a 4 MiB chunk allocated and copied about twice the chunk.
func readBody(body io.Reader, n int64) ([]byte, error) {
	if n <= 0 {
		return io.ReadAll(body)
	}
	buf := bytes.NewBuffer(make([]byte, 0, n+bytes.MinRead))
	_, err := buf.ReadFrom(body)
	return buf.Bytes(), err
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
	if a.Used+size > a.limit(now) {
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
	if m.acct.Used+rec.Size > m.acct.limit(m.now) {
		return quotaErr()
	}
	m.acct.Used += rec.Size
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

// sweepPending deletes blobs that were written but never recorded (a crash
// or a failure between the blob write and the record's commit). A marker
// still present while we hold the chunk's lock belongs to no running upload.
func (s *Server) sweepPending(ctx context.Context) (int, error) {
	type cand struct{ acct, id string }
	var cands []cand
	cutoff := time.Now().Add(-s.cfg.GCGrace)
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte("pend/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(cands) < 100000; it.Next() {
			acct, id, ok := strings.Cut(string(it.Item().Key()[len(prefix):]), "/")
			if !ok {
				continue
			}
			var at time.Time
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &at) }); err != nil {
				return err
			}
			if at.Before(cutoff) {
				cands = append(cands, cand{acct, id})
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep pending: %w", err)
	}
	n := 0
	for _, c := range cands {
		if ctx.Err() != nil {
			break
		}
		swept, err := s.sweepOne(ctx, c.acct, c.id)
		if err != nil {
			return n, err
		}
		if swept {
			n++
		}
	}
	return n, nil
}

func (s *Server) sweepOne(ctx context.Context, acct, id string) (bool, error) {
	mu := s.chunkLock(acct, id)
	mu.Lock()
	defer mu.Unlock()
	var pending bool
	var rec *chunkRec
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		if pending, err = exists(tx, kPend(acct, id)); err != nil || !pending {
			return err
		}
		rec, err = readChunk(tx, acct, id)
		return err
	})
	if err != nil || !pending {
		return false, err
	}
	if rec != nil && !rec.InDB {
		// Cannot happen (the record's transaction deletes the marker), but
		// never delete a recorded blob.
		return false, s.db.Update(func(tx *badger.Txn) error { return tx.Delete(kPend(acct, id)) })
	}
	// No record, or one whose bytes are in the metadata store (the id was
	// uploaded again as a small chunk after a failed big upload): the blob
	// is named by nothing.
	s.log.Info("gc: deleting unrecorded chunk", "account", acct, "chunk", id)
	s.dropPending(ctx, acct, id)
	return true, nil
}

func (s *Server) handleGetChunk(w http.ResponseWriter, r *http.Request, acct string) error {
	id := r.PathValue("id")
	if !api.ValidHexID(id) {
		return badRequest("invalid chunk id")
	}
	var c *chunkServe
	var inDB []byte // the bytes of a chunk kept in the metadata store
	err := s.db.View(func(tx *badger.Txn) (err error) {
		if c, err = readChunkAs[chunkServe](tx, acct, id); err != nil || c == nil || !c.InDB {
			return err
		}
		inDB, err = readChunkData(tx, acct, id)
		return err
	})
	if err != nil {
		return err
	}
	if c == nil {
		return notFound("chunk")
	}
	off, length, partial, err := parseRange(r.Header.Get("Range"), c.Size)
	if err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(c.Size, 10))
		return err
	}
	if c.InDB {
		if inDB == nil {
			s.log.Error("chunk recorded in the metadata store but its bytes are missing", "req", info(r).id, "account", acct, "chunk", id)
			return apiErr(http.StatusNotFound, api.CodeNotFound, "chunk lost by the metadata store")
		}
		data := inDB[min(off, int64(len(inDB))):min(off+length, int64(len(inDB)))]
		if int64(len(data)) != length {
			s.log.Error("chunk in the metadata store has the wrong size", "req", info(r).id, "account", acct, "chunk", id,
				"want", length, "got", len(data))
		}
		writeChunkHeader(w, off, int64(len(data)), c.Size, partial)
		w.Write(data)
		return nil
	}
	return s.serveBlob(w, r, acct, id, c, off, length, partial)
}

// serveBlob streams a range of a blob-store chunk into the answer: no buffer
// of its own (in-process, the blob is read straight into the client's
// buffer). A whole chunk is hashed on the way unless NoReadVerify: the
// server cannot open a chunk, but it can tell that the blob is not what was
// uploaded (and log it, before the answer's last byte goes out); the bytes
// still go out, the client's AEAD refuses them. A read failure after the header was sent cuts the answer, so the
// client sees a short body (a connection failure, retried), never bytes it
// could mistake for the chunk.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, acct, id string, c *chunkServe, off, length int64, partial bool) error {
	body, n, err := s.openBlob(r.Context(), blobKey(acct, id), off, length)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			// Lost on the storage backend: say so (the client turns it into
			// EIO), and tell the operator which chunk.
			s.log.Error("chunk recorded but its blob is missing", "req", info(r).id, "account", acct, "chunk", id)
			return apiErr(http.StatusNotFound, api.CodeNotFound, "chunk lost by the storage backend")
		}
		return fmt.Errorf("read chunk %s/%s: %w", acct, id, err)
	}
	defer body.Close()
	var src io.Reader = body
	var sum hash.Hash
	if n != length {
		s.log.Error("chunk blob has the wrong size", "req", info(r).id, "account", acct, "chunk", id,
			"want", length, "got", n)
	} else if !partial && c.Sum != "" && !s.cfg.NoReadVerify {
		sum = sha256.New()
		src = io.TeeReader(body, sum)
	}
	writeChunkHeader(w, off, n, c.Size, partial)
	var sent int64
	if sum == nil {
		sent, err = io.Copy(w, src)
	} else {
		// Hold back the last byte until the sum is checked, so that the
		// log names a corrupted chunk before the client has all of it.
		sent, err = io.CopyN(w, src, max(n-1, 0))
		var last [1]byte
		if err == nil && n > 0 {
			if _, err = io.ReadFull(src, last[:]); err == nil {
				s.checkSum(r, acct, id, c, sum)
				var m int
				m, err = w.Write(last[:])
				sent += int64(m)
			}
		} else if err == nil {
			s.checkSum(r, acct, id, c, sum)
		}
	}
	if err == nil && sent != n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		if r.Context().Err() == nil { // not just a client that went away
			s.log.Error("reading chunk blob failed mid-answer; answer cut", "req", info(r).id, "account", acct, "chunk", id,
				"sent", sent, "of", n, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// checkSum logs a chunk whose blob does not hash to its record's sum.
func (s *Server) checkSum(r *http.Request, acct, id string, c *chunkServe, sum hash.Hash) {
	if hex.EncodeToString(sum.Sum(nil)) != c.Sum {
		s.log.Error("chunk blob is corrupted (checksum mismatch)", "req", info(r).id, "account", acct, "chunk", id)
	}
}

// openBlob opens a range of a blob for streaming; a store that cannot stream
// reads it into memory.
func (s *Server) openBlob(ctx context.Context, key string, off, length int64) (io.ReadCloser, int64, error) {
	if rs, ok := s.blobs.(blob.Ranger); ok {
		return rs.OpenRange(ctx, key, off, length)
	}
	data, err := s.blobs.Get(ctx, key, off, length)
	if err != nil {
		return nil, 0, err
	}
	return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
}

// writeChunkHeader sends the header of a chunk answer of n bytes at off.
func writeChunkHeader(w http.ResponseWriter, off, n, size int64, partial bool) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	status := http.StatusOK
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
}

// parseRange parses a single-range header "bytes=a-b", "bytes=a-" or
// "bytes=-n" against a blob of size bytes. An empty header means the whole blob.
func parseRange(h string, size int64) (off, length int64, partial bool, err error) {
	if h == "" {
		return 0, size, false, nil
	}
	bad := apiErr(http.StatusRequestedRangeNotSatisfiable, api.CodeBadRequest, "invalid or unsatisfiable range")
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false, bad
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false, bad
	}
	num := func(s string) (int64, bool) {
		if s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if first == "" { // suffix: the last n bytes
		n, ok := num(last)
		if !ok || n == 0 || size == 0 {
			return 0, 0, false, bad
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	a, ok := num(first)
	if !ok || a >= size {
		return 0, 0, false, bad
	}
	if last == "" {
		return a, size - a, true, nil
	}
	b, ok := num(last)
	if !ok || b < a {
		return 0, 0, false, bad
	}
	b = min(b, size-1)
	return a, b - a + 1, true, nil
}

func validateHave(r *api.HaveRequest) error {
	if len(r.IDs) > api.MaxHaveBatch {
		return badRequest("at most %d ids", api.MaxHaveBatch)
	}
	for _, id := range r.IDs {
		if !api.ValidHexID(id) {
			return badRequest("invalid chunk id")
		}
	}
	return nil
}

func (s *Server) handleHave(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.HaveRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := validateHave(&req); err != nil {
		return err
	}
	resp := api.HaveResponse{Have: make([]bool, len(req.IDs))}
	err := s.db.View(func(tx *badger.Txn) error {
		for i, id := range req.IDs {
			ok, err := exists(tx, kChunk(acct, id))
			if err != nil {
				return err
			}
			resp.Have[i] = ok
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

// RunGC deletes chunks that have had no references for GCGrace: first the
// record (in a transaction that re-checks the reference count, so an update
// that referenced the chunk meanwhile wins, and one that comes later fails
// cleanly with "chunk not stored"), with the bytes of a small chunk, then
// the blob of a big one. It returns the number of chunks and bytes freed.
// The GC loop calls it every GCInterval.
func (s *Server) RunGC(ctx context.Context) (int, int64, error) {
	type cand struct{ acct, id string }
	var cands []cand
	cutoff := time.Now().Add(-s.cfg.GCGrace)
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte("zref/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(cands) < 100000; it.Next() {
			acct, id, ok := strings.Cut(string(it.Item().Key()[len(prefix):]), "/")
			if !ok {
				continue
			}
			c, err := readChunk(tx, acct, id)
			if err != nil {
				return err
			}
			if c == nil || (c.Refs == 0 && c.Unref.Before(cutoff)) {
				cands = append(cands, cand{acct, id})
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("gc scan: %w", err)
	}
	var n int
	var freed int64
	touched := map[string]bool{}
	defer func() {
		// Announce the usage the GC left behind, once per account.
		for acct := range touched {
			if err := s.mutate(acct, false, func(m *mtx) error { return m.announceUsage(true) }); err != nil {
				s.log.Warn("gc: announce usage", "account", acct, "err", err)
			}
		}
	}()
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			return n, freed, nil
		}
		size, err := s.collect(ctx, c.acct, c.id)
		if err != nil {
			return n, freed, err
		}
		if size >= 0 {
			n++
			freed += size
			touched[c.acct] = true
		}
	}
	if swept, err := s.sweepPending(ctx); err != nil {
		return n, freed, err
	} else if swept > 0 {
		s.log.Info("gc: unrecorded chunks deleted", "chunks", swept)
	}
	return n, freed, nil
}

// collect deletes one unreferenced chunk; it returns -1 if the chunk was kept.
func (s *Server) collect(ctx context.Context, acct, id string) (int64, error) {
	mu := s.chunkLock(acct, id)
	mu.Lock()
	defer mu.Unlock()
	size := int64(-1)
	inDB := false
	cutoff := time.Now().Add(-s.cfg.GCGrace)
	err := s.mutate(acct, false, func(m *mtx) error {
		size = -1
		c, err := readChunk(m.tx, acct, id)
		if err != nil {
			return err
		}
		if c == nil {
			return m.tx.Delete(kZref(acct, id))
		}
		if c.Refs > 0 || !c.Unref.Before(cutoff) {
			return nil
		}
		size, inDB = c.Size, c.InDB
		m.acct.Used -= c.Size
		if c.InDB {
			// Its value log space comes back with valueLogGC.
			if err := m.tx.Delete(kChunkData(acct, id)); err != nil {
				return err
			}
		}
		if err := m.tx.Delete(kChunk(acct, id)); err != nil {
			return err
		}
		return m.tx.Delete(kZref(acct, id))
	})
	if err != nil {
		return -1, fmt.Errorf("gc %s/%s: %w", acct, id, err)
	}
	if size >= 0 && !inDB {
		// The record is gone; a failed delete leaves an orphan blob (no quota
		// is charged for it, and a new upload of the id overwrites it).
		if err := s.blobs.Delete(context.WithoutCancel(ctx), blobKey(acct, id)); err != nil {
			s.log.Warn("gc: delete blob failed", "account", acct, "chunk", id, "err", err)
		}
	}
	return size, nil
}
