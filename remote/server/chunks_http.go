package server

// HTTP handlers of chunks: PUT, GET (streamed, ranged, verified) and have.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
	"kumo/remote/blob"
)

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
