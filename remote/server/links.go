package server

// Read-only links (docs/API.md "Links"): an account stores a link's sealed
// manifest under a client-chosen id; anyone with the id reads the blob (or,
// for a password-protected link, gets it against the password's auth key)
// and the chunks the link pins. The secret that opens the blob lives in the
// URL's fragment and never reaches the server. A link pins its chunks like a
// file does (a reference each, m.setRefs), so the GC keeps them until the
// link is revoked or its expiry is swept.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

// Links' keys (see docs/API.md "Storage layout"). Link ids are 22 base64url
// characters, so they hold no "/".
//
//	link/ID                 linkRec (JSON)
//	lblob/ID                the sealed manifest
//	lchunk/ID/CHUNKID       empty; the link pins the chunk
//	alink/ACCT/ID           linkIdx (JSON); index of an account's links
//	lexp/UNIXSEC/ID         empty; expiry index (16 hex digits, big-endian order)
func kLink(id string) []byte                 { return []byte("link/" + id) }
func kLinkBlob(id string) []byte             { return []byte("lblob/" + id) }
func kLinkChunk(id, chunk string) []byte     { return []byte("lchunk/" + id + "/" + chunk) }
func kAcctLink(acct, id string) []byte       { return []byte("alink/" + acct + "/" + id) }
func pAcctLink(acct string) []byte           { return []byte("alink/" + acct + "/") }
func kLinkExp(t time.Time, id string) []byte { return fmt.Appendf(nil, "lexp/%016x/%s", t.Unix(), id) }

// Per-account bounds: a link's blob costs the server space that the quota
// (chunks and tree metadata) does not count, so their number and total size
// are capped.
const (
	maxLinksPerAccount = 1000
	maxLinkBlobBytes   = 64 << 20 // sum of an account's link blobs
)

type linkRec struct {
	Account  string            `json:"account"`
	Created  time.Time         `json:"created"`
	Expires  time.Time         `json:"expires,omitzero"`
	Password *api.LinkPassword `json:"password,omitempty"` // AuthHash: SHA-256 of the auth key
	Chunks   int               `json:"chunks"`
	Bytes    int64             `json:"bytes"` // sealed bytes of the pinned chunks when made
	BlobSize int               `json:"blob_size"`
}

// linkIdx is the account index's value: what the listing and the caps need.
type linkIdx struct {
	BlobSize int `json:"blob_size"`
}

func (l *linkRec) expired(now time.Time) bool { return !l.Expires.IsZero() && !now.Before(l.Expires) }

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// validLinkID: 22 base64url characters (16 bytes, no padding).
func validLinkID(id string) bool {
	if len(id) != 22 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	// The last character carries 2 bits of the 16th byte and 4 zero bits:
	// only A, Q, g, w are canonical.
	return strings.IndexByte("AQgw", id[21]) >= 0
}

func validateLinkCreate(r *api.LinkCreateRequest, now time.Time) error {
	if !validLinkID(r.ID) {
		return badRequest("invalid link id (want 22 base64url characters)")
	}
	if len(r.Blob) == 0 || len(r.Blob) > api.MaxLinkBlob {
		return badRequest("link blob of %d bytes (want 1..%d)", len(r.Blob), api.MaxLinkBlob)
	}
	if len(r.Chunks) > api.MaxLinkChunks {
		return badRequest("a link pins at most %d chunks, not %d", api.MaxLinkChunks, len(r.Chunks))
	}
	seen := make(map[string]bool, len(r.Chunks))
	for _, c := range r.Chunks {
		if !api.ValidHexID(c) {
			return badRequest("invalid chunk id")
		}
		if seen[c] {
			return badRequest("chunk %s listed twice", c)
		}
		seen[c] = true
	}
	if r.Expires != nil && !r.Expires.After(now) {
		return badRequest("the expiry is in the past")
	}
	if p := r.Password; p != nil {
		if len(p.Salt) != 16 || len(p.AuthHash) != sha256.Size {
			return badRequest("link password: salt must be 16 bytes and auth_hash 32")
		}
		if err := validKDF(p.KDF); err != nil {
			return err
		}
	}
	return nil
}

// readLinkBody is readJSON with the larger bound a link's blob and chunk
// list need.
func readLinkBody(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > api.MaxLinkBody {
		return apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body too large")
	}
	err := decodeJSON(http.MaxBytesReader(w, r.Body, api.MaxLinkBody), v)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body too large")
	}
	return err
}

func (s *Server) handleLinkCreate(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.LinkCreateRequest
	if err := readLinkBody(w, r, &req); err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := validateLinkCreate(&req, now); err != nil {
		return err
	}
	rec := linkRec{Account: acct, Created: now, Password: req.Password, Chunks: len(req.Chunks), BlobSize: len(req.Blob)}
	if req.Expires != nil {
		rec.Expires = req.Expires.UTC()
	}
	err := s.mutate(acct, true, func(m *mtx) error {
		if ok, err := exists(m.tx, kLink(req.ID)); err != nil || ok {
			if ok {
				return conflict(api.CodeExists, "a link with this id exists")
			}
			return err
		}
		n, total, err := accountLinks(m.tx, acct)
		if err != nil {
			return err
		}
		if n >= maxLinksPerAccount || total+len(req.Blob) > maxLinkBlobBytes {
			return apiErr(http.StatusInsufficientStorage, api.CodeQuota,
				fmt.Sprintf("the account has %d links (%d bytes of manifests), the most this server keeps (%d, %d bytes): remove some with kumo link rm",
					n, total, maxLinksPerAccount, maxLinkBlobBytes))
		}
		// A reference per chunk; a chunk not stored for this account
		// (another account's, or never uploaded) is refused here (400).
		if err := m.setRefs(nil, req.Chunks); err != nil {
			return err
		}
		rec.Bytes = 0
		for _, c := range req.Chunks {
			cr, err := readChunk(m.tx, acct, c)
			if err != nil {
				return err
			}
			if cr != nil {
				rec.Bytes += cr.Size
			}
			if err := m.tx.Set(kLinkChunk(req.ID, c), nil); err != nil {
				return err
			}
		}
		if err := setJSON(m.tx, kLink(req.ID), &rec); err != nil {
			return err
		}
		if err := m.tx.Set(kLinkBlob(req.ID), req.Blob); err != nil {
			return err
		}
		if !rec.Expires.IsZero() {
			if err := m.tx.Set(kLinkExp(rec.Expires, req.ID), nil); err != nil {
				return err
			}
		}
		return setJSON(m.tx, kAcctLink(acct, req.ID), linkIdx{BlobSize: len(req.Blob)})
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, api.LinkCreateResponse{ID: req.ID, Created: rec.Created, Expires: timePtr(rec.Expires)})
}

// accountLinks counts an account's links and the bytes of their blobs.
func accountLinks(tx *badger.Txn, acct string) (n, blobBytes int, err error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: pAcctLink(acct), PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var x linkIdx
		if err := it.Item().Value(func(v []byte) error { return jsonUnmarshal(v, &x) }); err != nil {
			return 0, 0, err
		}
		n++
		blobBytes += x.BlobSize
	}
	return n, blobBytes, nil
}

func (s *Server) handleLinkList(w http.ResponseWriter, r *http.Request, acct string) error {
	resp := api.LinksResponse{Links: []api.LinkInfo{}}
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := pAcctLink(acct)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id := string(it.Item().Key()[len(prefix):])
			var l linkRec
			if err := getJSON(tx, kLink(id), &l); err != nil {
				return fmt.Errorf("read link %s: %w", id, err)
			}
			resp.Links = append(resp.Links, api.LinkInfo{ID: id, Created: l.Created, Expires: timePtr(l.Expires),
				HasPassword: l.Password != nil, Chunks: l.Chunks, Bytes: l.Bytes})
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortStableFunc(resp.Links, func(a, b api.LinkInfo) int { return a.Created.Compare(b.Created) })
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleLinkDelete(w http.ResponseWriter, r *http.Request, acct string) error {
	id := r.PathValue("id")
	if !validLinkID(id) {
		return badRequest("invalid link id")
	}
	found, err := s.deleteLink(acct, id, time.Time{})
	if err != nil {
		return err
	}
	if !found {
		return apiErr(http.StatusNotFound, api.CodeLinkNotFound, "no such link")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteLink removes link id of acct and unpins its chunks, in one
// mutation. With expiredBy set, only a link that has expired by then is
// removed (the sweep). It reports whether a link was removed.
func (s *Server) deleteLink(acct, id string, expiredBy time.Time) (bool, error) {
	var found bool
	err := s.mutate(acct, false, func(m *mtx) error {
		found = false
		var l linkRec
		if err := getJSON(m.tx, kLink(id), &l); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil
			}
			return fmt.Errorf("read link: %w", err)
		}
		if l.Account != acct || (!expiredBy.IsZero() && !l.expired(expiredBy)) {
			return nil // another account's link answers as unknown
		}
		var chunks []string
		prefix := kLinkChunk(id, "")
		it := m.tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Rewind(); it.Valid(); it.Next() {
			chunks = append(chunks, string(it.Item().Key()[len(prefix):]))
		}
		it.Close()
		if err := m.setRefs(chunks, nil); err != nil {
			return err
		}
		for _, c := range chunks {
			if err := m.tx.Delete(kLinkChunk(id, c)); err != nil {
				return err
			}
		}
		for _, k := range [][]byte{kLink(id), kLinkBlob(id), kAcctLink(acct, id)} {
			if err := m.tx.Delete(k); err != nil {
				return err
			}
		}
		if !l.Expires.IsZero() {
			if err := m.tx.Delete(kLinkExp(l.Expires, id)); err != nil {
				return err
			}
		}
		found = true
		return nil
	})
	return found, err
}

// sweepLinks deletes the links whose expiry has passed, unpinning their
// chunks (the GC then frees those no file holds after GCGrace). The GC loop
// runs it before RunGC.
func (s *Server) sweepLinks(ctx context.Context) (int, error) {
	type cand struct{ acct, id string }
	var cands []cand
	now := time.Now()
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := []byte("lexp/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		stop := fmt.Appendf(nil, "lexp/%016x/", now.Unix()+1)
		for it.Rewind(); it.Valid() && len(cands) < 100000; it.Next() {
			k := it.Item().Key()
			if string(k) >= string(stop) {
				break
			}
			_, id, ok := strings.Cut(string(k[len(prefix):]), "/")
			if !ok {
				continue
			}
			var l linkRec
			if err := getJSON(tx, kLink(id), &l); err != nil {
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				return err
			}
			if l.expired(now) {
				cands = append(cands, cand{l.Account, id})
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep links: %w", err)
	}
	n := 0
	for _, c := range cands {
		if ctx.Err() != nil {
			break
		}
		found, err := s.deleteLink(c.acct, c.id, now)
		if err != nil {
			return n, fmt.Errorf("sweep link %s: %w", c.id, err)
		}
		if found {
			n++
		}
	}
	return n, nil
}

// publicLink reads a link for an anonymous reader: 404 link_not_found for an
// unknown or revoked id, 410 link_expired after its expiry.
func publicLink(tx *badger.Txn, id string, now time.Time) (*linkRec, error) {
	if !validLinkID(id) {
		return nil, apiErr(http.StatusNotFound, api.CodeLinkNotFound, "no such link: it was revoked, or the address is wrong")
	}
	var l linkRec
	if err := getJSON(tx, kLink(id), &l); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, apiErr(http.StatusNotFound, api.CodeLinkNotFound, "no such link: it was revoked, or the address is wrong")
		}
		return nil, fmt.Errorf("read link: %w", err)
	}
	if l.expired(now) {
		return nil, apiErr(http.StatusGone, api.CodeLinkExpired, "the link expired on "+l.Expires.Format(time.RFC3339))
	}
	// The operator's disabling of an account stops its links too.
	var a struct {
		Disabled bool `json:"disabled"`
	}
	if err := getJSON(tx, kAcct(l.Account), &a); err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("read link owner: %w", err)
	}
	if a.Disabled {
		return nil, apiErr(http.StatusForbidden, api.CodeForbidden, "the link's owner account is disabled")
	}
	return &l, nil
}

func readBlob(tx *badger.Txn, id string) ([]byte, error) {
	it, err := tx.Get(kLinkBlob(id))
	if err != nil {
		return nil, fmt.Errorf("read link blob: %w", err)
	}
	return it.ValueCopy(nil)
}

func (s *Server) handleLinkGet(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var resp api.LinkPublic
	err := s.db.View(func(tx *badger.Txn) error {
		l, err := publicLink(tx, id, time.Now())
		if err != nil {
			return err
		}
		resp.Expires = timePtr(l.Expires)
		if l.Password != nil {
			resp.Password = &api.LinkPassword{Salt: l.Password.Salt, KDF: l.Password.KDF}
			return nil
		}
		resp.Blob, err = readBlob(tx, id)
		return err
	})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleLinkOpen(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var req api.LinkOpenRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Auth) != 32 {
		return badRequest("auth must be 32 bytes")
	}
	var l *linkRec
	err := s.db.View(func(tx *badger.Txn) (err error) { l, err = publicLink(tx, id, time.Now()); return err })
	if err != nil {
		return err
	}
	if l.Password == nil {
		return badRequest("the link has no password: GET /v1/s/%s gives its blob", id)
	}
	// Like a login: every attempt takes a token per client address and per link.
	if err := s.limits.allow(w, "ip:"+clientNet(r), "link:"+id); err != nil {
		s.log.Warn("link password rate limited", "req", info(r).id, "ip", clientIP(r))
		return err
	}
	got := sha256.Sum256(req.Auth)
	if subtle.ConstantTimeCompare(got[:], l.Password.AuthHash) != 1 {
		return apiErr(http.StatusForbidden, api.CodeWrongPassword, "wrong password for this link")
	}
	var resp api.LinkOpenResponse
	err = s.db.View(func(tx *badger.Txn) (err error) {
		if _, err = publicLink(tx, id, time.Now()); err != nil { // revoked meanwhile
			return err
		}
		resp.Blob, err = readBlob(tx, id)
		return err
	})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, resp)
}

// handleLinkChunk serves a chunk the link pins, from its owner's storage, as
// GET /v1/chunks/{id} does (Range included).
func (s *Server) handleLinkChunk(w http.ResponseWriter, r *http.Request) error {
	id, cid := r.PathValue("id"), r.PathValue("chunkid")
	if !api.ValidHexID(cid) {
		return badRequest("invalid chunk id")
	}
	var owner string
	err := s.db.View(func(tx *badger.Txn) error {
		l, err := publicLink(tx, id, time.Now())
		if err != nil {
			return err
		}
		ok, err := exists(tx, kLinkChunk(id, cid))
		if err != nil {
			return err
		}
		if !ok {
			return notFound("chunk (not in this link)")
		}
		owner = l.Account
		return nil
	})
	if err != nil {
		return err
	}
	r.SetPathValue("id", cid)
	return s.handleGetChunk(w, r, owner)
}

// parseLinkChunkIDs reads the query of GET /v1/s/{id}/chunks: one "ids"
// parameter, 1..MaxLinkBatchChunks distinct chunk ids separated by commas.
// Nothing else is accepted, so an answer's frames map one to one, in order,
// onto the ids asked for.
func parseLinkChunkIDs(rawQuery string) ([]string, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, badRequest("malformed query: %v", err)
	}
	if len(q) != 1 || len(q["ids"]) != 1 {
		return nil, badRequest("want exactly one parameter, ids=ID,ID,... (chunk ids of the link, comma-separated)")
	}
	s := q["ids"][0]
	if n := strings.Count(s, ",") + 1; n > api.MaxLinkBatchChunks {
		return nil, badRequest("%d chunk ids asked for, at most %d an answer: ask for fewer at a time", n, api.MaxLinkBatchChunks)
	}
	ids := strings.Split(s, ",")
	seen := make(map[string]bool, len(ids))
	for _, c := range ids {
		if !api.ValidHexID(c) {
			return nil, badRequest("invalid chunk id %.70q (want %d lowercase hex digits)", c, api.HexIDLen)
		}
		if seen[c] {
			return nil, badRequest("chunk %s asked for twice", c)
		}
		seen[c] = true
	}
	return ids, nil
}

// linkBatchFrame is the length prefix of each chunk in a batch answer.
const linkBatchFrame = 4

// handleLinkChunks serves several chunks the link pins in one answer
// (docs/API.md "Links"): for each id asked for, in order, its sealed length
// (4 bytes, big-endian) and its bytes. Fewer, larger requests are what a
// browser needs: each response costs chromium's page about as much CPU as
// its bytes (docs/BENCH.md). Every id is checked before the answer starts;
// the blobs are streamed one after another, none held whole. A blob that
// fails or has another size than recorded once the answer has started cuts
// it (the client sees a short body, never a frame it could misread).
func (s *Server) handleLinkChunks(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ids, err := parseLinkChunkIDs(r.URL.RawQuery)
	if err != nil {
		return err
	}
	var owner string
	recs := make([]*chunkServe, len(ids))
	inDB := make([][]byte, len(ids)) // small chunks kept in the metadata store
	var total int64
	err = s.db.View(func(tx *badger.Txn) error {
		l, err := publicLink(tx, id, time.Now())
		if err != nil {
			return err
		}
		owner = l.Account
		for i, c := range ids {
			ok, err := exists(tx, kLinkChunk(id, c))
			if err != nil {
				return err
			}
			if !ok {
				return apiErr(http.StatusNotFound, api.CodeNotFound, "chunk "+c+" is not in this link")
			}
			if recs[i], err = readChunkAs[chunkServe](tx, owner, c); err != nil {
				return err
			}
			if recs[i] == nil {
				return apiErr(http.StatusNotFound, api.CodeNotFound, "chunk "+c+" of this link is not stored")
			}
			total += recs[i].Size
			if total > api.MaxLinkBatchBytes {
				return badRequest("the chunks asked for hold more than %d bytes: ask for fewer at a time", api.MaxLinkBatchBytes)
			}
			if recs[i].InDB {
				if inDB[i], err = readChunkData(tx, owner, c); err != nil {
					return err
				}
				if int64(len(inDB[i])) != recs[i].Size {
					s.log.Error("chunk in the metadata store is missing or has the wrong size", "req", info(r).id, "account", owner, "chunk", c,
						"want", recs[i].Size, "got", len(inDB[i]))
					return apiErr(http.StatusNotFound, api.CodeNotFound, "chunk "+c+" lost by the metadata store")
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(total+int64(linkBatchFrame*len(ids)), 10))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	for i, c := range ids {
		var frame [linkBatchFrame]byte
		binary.BigEndian.PutUint32(frame[:], uint32(recs[i].Size))
		if _, err := w.Write(frame[:]); err != nil {
			panic(http.ErrAbortHandler) // the client went away
		}
		if inDB[i] != nil {
			if _, err := w.Write(inDB[i]); err != nil {
				panic(http.ErrAbortHandler)
			}
			continue
		}
		if err := s.copyLinkBlob(w, r, owner, c, recs[i]); err != nil {
			if r.Context().Err() == nil { // not just a client that went away
				s.log.Error("reading a link's chunk blob failed mid-answer; answer cut", "req", info(r).id, "account", owner, "chunk", c, "err", err)
			}
			panic(http.ErrAbortHandler)
		}
	}
	return nil
}

// copyLinkBlob streams chunk c's whole blob into a batch answer, checking
// its sum on the way unless NoReadVerify (as serveBlob does: the server
// cannot open a chunk but logs one whose blob is not what was uploaded; the
// client's AEAD refuses its bytes).
func (s *Server) copyLinkBlob(w io.Writer, r *http.Request, owner, c string, rec *chunkServe) error {
	body, n, err := s.openBlob(r.Context(), blobKey(owner, c), 0, rec.Size)
	if err != nil {
		return err
	}
	defer body.Close()
	if n != rec.Size {
		return fmt.Errorf("blob of %d bytes, recorded %d", n, rec.Size)
	}
	var src io.Reader = body
	var sum hash.Hash
	if rec.Sum != "" && !s.cfg.NoReadVerify {
		sum = sha256.New()
		src = io.TeeReader(body, sum)
	}
	sent, err := io.Copy(w, io.LimitReader(src, n))
	if err == nil && sent != n {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && sum != nil {
		s.checkSum(r, owner, c, rec, sum)
	}
	return err
}
