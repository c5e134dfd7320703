package server

// Shared folders, the owner's and the member's endpoints: a share is a
// directory subtree of its owner's tree (docs/API.md "Shared folders"). The
// server stores, per share, its root, its current key generation and the
// owner-signed roster (opaque), and per member a role, a state and the
// wrapped share secrets (opaque). Which records belong to a share it learns
// from their clear headers (api.RecordShare); shares_access.go serves the
// tree, chunk and feed requests that carry the Kumo-Share header.
//
//	share/OWNER/SHARE            shareRec (JSON); SHARE is 16 hex digits
//	sroot/OWNER/NODEID           share id (16 hex); the one share rooted at a directory
//	smem/OWNER/SHARE/MEMBER      memberRec (JSON); MEMBER is an account id
//	sjoin/MEMBER/OWNER/SHARE     empty; index of the shares an account was invited to

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kumo/remote/api"
)

func kShare(owner string, share uint64) []byte {
	return fmt.Appendf(nil, "share/%s/%016x", owner, share)
}
func pShare(owner string) []byte { return []byte("share/" + owner + "/") }
func kShareRoot(owner string, node uint64) []byte {
	return fmt.Appendf(nil, "sroot/%s/%016x", owner, node)
}
func kShareMember(owner string, share uint64, member string) []byte {
	return fmt.Appendf(nil, "smem/%s/%016x/%s", owner, share, member)
}
func pShareMember(owner string, share uint64) []byte {
	return fmt.Appendf(nil, "smem/%s/%016x/", owner, share)
}
func kShareJoin(member, owner string, share uint64) []byte {
	return fmt.Appendf(nil, "sjoin/%s/%s/%016x", member, owner, share)
}
func pShareJoin(member string) []byte { return []byte("sjoin/" + member + "/") }

type shareRec struct {
	Root       uint64    `json:"root"`
	Generation uint32    `json:"generation"`
	Roster     []byte    `json:"roster"`
	Created    time.Time `json:"created"`
}

type memberRec struct {
	Email   string             `json:"email"`
	Role    string             `json:"role"`
	State   string             `json:"state"`
	Wrapped []api.ShareWrapped `json:"wrapped,omitempty"`
	// Accepted is when the member accepted (Unix ns): its history reads
	// start there (history_share.go). Records from before the field got
	// the time stampMemberAccepted first ran.
	Accepted int64 `json:"accepted,omitempty"`
}

func forbidden(msg string) *api.Error { return apiErr(http.StatusForbidden, api.CodeForbidden, msg) }

// dbUpdate runs fn in a transaction, again on a conflict with a concurrent one.
func (s *Server) dbUpdate(fn func(tx *badger.Txn) error) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = s.db.Update(fn); !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return err
}

func validRole(role string) error {
	if role != api.RoleReader && role != api.RoleWriter {
		return badRequest("role must be %q or %q", api.RoleReader, api.RoleWriter)
	}
	return nil
}

func validRoster(roster []byte) error {
	if len(roster) == 0 || len(roster) > api.MaxRosterSize {
		return badRequest("roster must be 1..%d bytes", api.MaxRosterSize)
	}
	return nil
}

// validWrapped checks wrapped secrets of generations 1..gen.
func validWrapped(ws []api.ShareWrapped, gen uint32) error {
	if len(ws) > api.MaxShareGens {
		return badRequest("too many wrapped secrets")
	}
	for _, w := range ws {
		if w.Generation == 0 || w.Generation > gen {
			return badRequest("wrapped secret of generation %d: the share is at generation %d", w.Generation, gen)
		}
		if len(w.Blob) == 0 || len(w.Blob) > api.MaxWrappedSize {
			return badRequest("a wrapped secret must be 1..%d bytes", api.MaxWrappedSize)
		}
	}
	return nil
}

// mergeWrapped adds add to have, a newer blob replacing one of the same generation.
func mergeWrapped(have, add []api.ShareWrapped) []api.ShareWrapped {
	for _, w := range add {
		replaced := false
		for i := range have {
			if have[i].Generation == w.Generation {
				have[i], replaced = w, true
			}
		}
		if !replaced {
			have = append(have, w)
		}
	}
	return have
}

func shareFromPath(r *http.Request) (uint64, error) {
	share, err := api.ParseShareID(r.PathValue("share"))
	if err != nil {
		return 0, badRequest("%v", err)
	}
	return share, nil
}

// readShare returns the share of owner, or not_found.
func readShare(tx *badger.Txn, owner string, share uint64) (*shareRec, error) {
	var sh shareRec
	if err := getJSON(tx, kShare(owner, share), &sh); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, notFound("share")
		}
		return nil, fmt.Errorf("read share: %w", err)
	}
	return &sh, nil
}

// readMember returns nil, nil if account is not a member of the share.
func readMember(tx *badger.Txn, owner string, share uint64, member string) (*memberRec, error) {
	var m memberRec
	if err := getJSON(tx, kShareMember(owner, share, member), &m); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("read share member: %w", err)
	}
	return &m, nil
}

// handleShareCreate: POST /v1/shares. The root's records are not checked
// here: members reach only nodes whose attributes are sealed for the share,
// so a root not yet re-sealed exposes nothing.
func (s *Server) handleShareCreate(w http.ResponseWriter, r *http.Request, acct string) error {
	var req api.CreateShareRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := validateShareCreate(&req); err != nil {
		return err
	}
	err := s.dbUpdate(func(tx *badger.Txn) error {
		if ok, err := exists(tx, kShare(acct, req.Share)); err != nil || ok {
			if ok {
				return conflict(api.CodeExists, "share id in use")
			}
			return err
		}
		if _, err := readDir(tx, acct, req.Root); err != nil {
			return err
		}
		if ok, err := exists(tx, kShareRoot(acct, req.Root)); err != nil || ok {
			if ok {
				return conflict(api.CodeExists, "the directory is already the root of a share")
			}
			return err
		}
		if err := tx.Set(kShareRoot(acct, req.Root), []byte(api.FormatShareID(req.Share))); err != nil {
			return err
		}
		return setJSON(tx, kShare(acct, req.Share), shareRec{
			Root: req.Root, Generation: req.Generation, Roster: req.Roster, Created: time.Now().UTC(),
		})
	})
	if err != nil {
		return err
	}
	s.log.Info("share created", "req", info(r).id, "account", acct, "share", api.FormatShareID(req.Share))
	return writeJSON(w, http.StatusCreated, okBody)
}

func validateShareCreate(req *api.CreateShareRequest) error {
	if req.Share == 0 {
		return badRequest("share id 0 is the home tree")
	}
	if req.Root <= api.RootID {
		return badRequest("the account's root cannot be shared: share a directory in it")
	}
	if req.Generation == 0 {
		return badRequest("key generations start at 1")
	}
	return validRoster(req.Roster)
}

func (s *Server) handleShareList(w http.ResponseWriter, r *http.Request, acct string) error {
	resp := api.SharesResponse{Owned: []api.OwnedShare{}, Joined: []api.JoinedShare{}, Invitations: []api.ShareInvitation{}}
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := pShare(acct)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			share, err := api.ParseShareID(string(it.Item().Key()[len(prefix):]))
			if err != nil {
				return fmt.Errorf("share key %q: %w", it.Item().Key(), err)
			}
			var sh shareRec
			if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &sh) }); err != nil {
				return err
			}
			o := api.OwnedShare{Share: share, Root: sh.Root, Generation: sh.Generation, Roster: sh.Roster, Members: []api.ShareMember{}}
			if err := eachMember(tx, acct, share, func(_ string, m *memberRec) error {
				o.Members = append(o.Members, api.ShareMember{Email: m.Email, Role: m.Role, State: m.State})
				return nil
			}); err != nil {
				return err
			}
			resp.Owned = append(resp.Owned, o)
		}
		return s.listJoined(tx, acct, &resp)
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

// listJoined adds the shares acct accepted or was invited to.
func (s *Server) listJoined(tx *badger.Txn, acct string, resp *api.SharesResponse) error {
	prefix := pShareJoin(acct)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		owner, hexShare, _ := strings.Cut(string(it.Item().Key()[len(prefix):]), "/")
		share, err := api.ParseShareID(hexShare)
		if err != nil {
			return fmt.Errorf("share index key %q: %w", it.Item().Key(), err)
		}
		sh, err := readShare(tx, owner, share)
		if err != nil {
			return err
		}
		m, err := readMember(tx, owner, share, acct)
		if err != nil || m == nil {
			return cmpErr(err, fmt.Errorf("share index %q without its member record", it.Item().Key()))
		}
		var o accountRec
		if err := getJSON(tx, kAcct(owner), &o); err != nil {
			return fmt.Errorf("owner of share %016x: %w", share, err)
		}
		if m.State == api.MemberAccepted {
			resp.Joined = append(resp.Joined, api.JoinedShare{OwnerID: owner, OwnerEmail: o.Email, Share: share,
				Root: sh.Root, Generation: sh.Generation, Role: m.Role, Roster: sh.Roster, Wrapped: m.Wrapped})
		} else {
			resp.Invitations = append(resp.Invitations, api.ShareInvitation{OwnerID: owner, OwnerEmail: o.Email,
				Share: share, Root: sh.Root, Generation: sh.Generation, Role: m.Role, Roster: sh.Roster, Wrapped: m.Wrapped})
		}
	}
	return nil
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// eachMember calls fn with every member of a share.
func eachMember(tx *badger.Txn, owner string, share uint64, fn func(id string, m *memberRec) error) error {
	prefix := pShareMember(owner, share)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var m memberRec
		if err := it.Item().Value(func(b []byte) error { return jsonUnmarshal(b, &m) }); err != nil {
			return err
		}
		if err := fn(string(it.Item().Key()[len(prefix):]), &m); err != nil {
			return err
		}
	}
	return nil
}

// handleShareMember: POST /v1/shares/{share}/members invites an account or
// changes a member's role (and adds wrapped secrets).
func (s *Server) handleShareMember(w http.ResponseWriter, r *http.Request, acct string) error {
	share, err := shareFromPath(r)
	if err != nil {
		return err
	}
	var req api.ShareMemberRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	email, err := validateShareMember(&req)
	if err != nil {
		return err
	}
	// An unknown e-mail is told apart (404), as by GET /v1/keys: such
	// answers draw on the same bucket, checked before the lookup, so that
	// this is no cheaper way to list the server's accounts.
	if err := s.limits.check(w, "keys:"+acct); err != nil {
		return err
	}
	unknown := false
	err = s.dbUpdate(func(tx *badger.Txn) error {
		sh, err := readShare(tx, acct, share)
		if err != nil {
			return err
		}
		if err := validWrapped(req.Wrapped, sh.Generation); err != nil {
			return err
		}
		who, err := s.accountByEmail(tx, email)
		if err != nil {
			return err
		}
		if unknown = who == nil; unknown {
			return notFound("account with that e-mail")
		}
		if who.ID == acct {
			return badRequest("the owner of a share is not one of its members")
		}
		m, err := readMember(tx, acct, share, who.ID)
		if err != nil {
			return err
		}
		if m == nil {
			n := 0
			if err := eachMember(tx, acct, share, func(string, *memberRec) error { n++; return nil }); err != nil {
				return err
			}
			if n >= api.MaxShareMembers {
				return badRequest("a share has at most %d members", api.MaxShareMembers)
			}
			if !hasGen(req.Wrapped, sh.Generation) {
				return badRequest("a new member needs the secret of the current generation %d", sh.Generation)
			}
			m = &memberRec{Email: email, State: api.MemberInvited}
			if err := tx.Set(kShareJoin(who.ID, acct, share), nil); err != nil {
				return err
			}
		}
		m.Role, m.Wrapped = req.Role, mergeWrapped(m.Wrapped, req.Wrapped)
		sh.Roster = req.Roster
		if err := setJSON(tx, kShare(acct, share), sh); err != nil {
			return err
		}
		return setJSON(tx, kShareMember(acct, share, who.ID), m)
	})
	if unknown {
		s.limits.charge("keys:" + acct)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, okBody)
}

// validateShareMember checks what it can without the share (the wrapped
// secrets' generations are checked against it) and returns the e-mail.
func validateShareMember(req *api.ShareMemberRequest) (string, error) {
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return "", err
	}
	if err := validRole(req.Role); err != nil {
		return "", err
	}
	if err := validWrapped(req.Wrapped, math.MaxUint32); err != nil {
		return "", err
	}
	return email, validRoster(req.Roster)
}

func hasGen(ws []api.ShareWrapped, gen uint32) bool {
	for _, w := range ws {
		if w.Generation == gen {
			return true
		}
	}
	return false
}

// handleShareRotate: POST /v1/shares/{share}/rotate moves the share to the
// next key generation and removes members, in one transaction: the next
// request of a removed member is refused, and a write in flight is retried
// against the new state (shareTxn reads the member in its transaction).
// With the current generation, no removal and no secret, it replaces the
// roster only (the owner's re-seal raising its lowest accepted generation).
func (s *Server) handleShareRotate(w http.ResponseWriter, r *http.Request, acct string) error {
	share, err := shareFromPath(r)
	if err != nil {
		return err
	}
	var req api.ShareRotateRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	remove, wrapped, err := validateShareRotate(&req)
	if err != nil {
		return err
	}
	err = s.dbUpdate(func(tx *badger.Txn) error {
		sh, err := readShare(tx, acct, share)
		if err != nil {
			return err
		}
		// The current generation with nobody removed and no secret given
		// replaces the roster alone: the owner raising the lowest accepted
		// generation once it re-sealed the folder (FORMAT §3g).
		rosterOnly := req.Generation == sh.Generation && len(remove) == 0 && len(wrapped) == 0
		if req.Generation != sh.Generation+1 && !rosterOnly {
			return conflict(api.CodeConflict, fmt.Sprintf("the share is at generation %d: rotate to %d", sh.Generation, sh.Generation+1))
		}
		type member struct {
			id string
			m  *memberRec
		}
		var members []member // collected first: no writes under the iterator
		if err := eachMember(tx, acct, share, func(id string, m *memberRec) error {
			members = append(members, member{id, m})
			return nil
		}); err != nil {
			return err
		}
		removed, given := 0, 0
		for _, mb := range members {
			if remove[mb.m.Email] {
				removed++
				if err := tx.Delete(kShareJoin(mb.id, acct, share)); err != nil {
					return err
				}
				if err := tx.Delete(kShareMember(acct, share, mb.id)); err != nil {
					return err
				}
				continue
			}
			if ws, ok := wrapped[mb.m.Email]; ok {
				given++
				mb.m.Wrapped = mergeWrapped(mb.m.Wrapped, ws)
				if err := setJSON(tx, kShareMember(acct, share, mb.id), mb.m); err != nil {
					return err
				}
			}
		}
		if removed != len(remove) || given != len(wrapped) {
			return badRequest("remove and wrapped must name members of the share only")
		}
		sh.Generation, sh.Roster = req.Generation, req.Roster
		return setJSON(tx, kShare(acct, share), sh)
	})
	if err != nil {
		return err
	}
	s.log.Info("share rotated", "req", info(r).id, "account", acct, "share", api.FormatShareID(share),
		"generation", req.Generation, "removed", len(remove))
	return writeJSON(w, http.StatusOK, okBody)
}

// validateShareRotate checks a rotation and returns the e-mails to remove
// and the new secrets by e-mail, normalized.
func validateShareRotate(req *api.ShareRotateRequest) (map[string]bool, map[string][]api.ShareWrapped, error) {
	if req.Generation < 2 {
		return nil, nil, badRequest("a rotation moves to generation 2 or later")
	}
	if err := validRoster(req.Roster); err != nil {
		return nil, nil, err
	}
	if len(req.Remove) > api.MaxShareMembers || len(req.Wrapped) > api.MaxShareMembers {
		return nil, nil, badRequest("a share has at most %d members", api.MaxShareMembers)
	}
	remove := map[string]bool{}
	for _, e := range req.Remove {
		email, err := normalizeEmail(e)
		if err != nil {
			return nil, nil, err
		}
		remove[email] = true
	}
	wrapped := map[string][]api.ShareWrapped{}
	for e, ws := range req.Wrapped {
		email, err := normalizeEmail(e)
		if err != nil {
			return nil, nil, err
		}
		if remove[email] {
			return nil, nil, badRequest("%s is both removed and given the new secret", email)
		}
		if _, dup := wrapped[email]; dup {
			return nil, nil, badRequest("%s is given the new secret twice", email)
		}
		if err := validWrapped(ws, req.Generation); err != nil {
			return nil, nil, err
		}
		wrapped[email] = ws
	}
	return remove, wrapped, nil
}

// handleShareDelete: DELETE /v1/shares/{share} stops sharing; the records
// stay in the owner's tree.
func (s *Server) handleShareDelete(w http.ResponseWriter, r *http.Request, acct string) error {
	share, err := shareFromPath(r)
	if err != nil {
		return err
	}
	err = s.dbUpdate(func(tx *badger.Txn) error {
		sh, err := readShare(tx, acct, share)
		if err != nil {
			return err
		}
		var members []string
		if err := eachMember(tx, acct, share, func(id string, _ *memberRec) error { members = append(members, id); return nil }); err != nil {
			return err
		}
		for _, id := range members {
			if err := tx.Delete(kShareJoin(id, acct, share)); err != nil {
				return err
			}
			if err := tx.Delete(kShareMember(acct, share, id)); err != nil {
				return err
			}
		}
		if err := tx.Delete(kShareRoot(acct, sh.Root)); err != nil {
			return err
		}
		return tx.Delete(kShare(acct, share))
	})
	if err != nil {
		return err
	}
	s.log.Info("share deleted", "req", info(r).id, "account", acct, "share", api.FormatShareID(share))
	return writeJSON(w, http.StatusOK, okBody)
}

func (s *Server) handleShareAccept(w http.ResponseWriter, r *http.Request, acct string) error {
	return s.shareJoin(w, r, acct, true)
}

func (s *Server) handleShareLeave(w http.ResponseWriter, r *http.Request, acct string) error {
	return s.shareJoin(w, r, acct, false)
}

// shareJoin accepts an invitation (accept) or leaves a share (or declines
// an invitation).
func (s *Server) shareJoin(w http.ResponseWriter, r *http.Request, acct string, accept bool) error {
	var req api.ShareAcceptRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := validateShareJoin(&req); err != nil {
		return err
	}
	err := s.dbUpdate(func(tx *badger.Txn) error {
		m, err := readMember(tx, req.OwnerID, req.Share, acct)
		if err != nil {
			return err
		}
		if m == nil {
			return notFound("invitation")
		}
		if !accept {
			if err := tx.Delete(kShareJoin(acct, req.OwnerID, req.Share)); err != nil {
				return err
			}
			return tx.Delete(kShareMember(req.OwnerID, req.Share, acct))
		}
		if m.State != api.MemberAccepted {
			m.State, m.Accepted = api.MemberAccepted, time.Now().UnixNano()
		}
		return setJSON(tx, kShareMember(req.OwnerID, req.Share, acct), m)
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, okBody)
}

func validateShareJoin(req *api.ShareAcceptRequest) error {
	if req.Share == 0 {
		return badRequest("share id 0 is the home tree")
	}
	if _, _, err := api.ParseShareScope(api.FormatShareScope(req.OwnerID, req.Share)); err != nil {
		return badRequest("invalid owner_id: an account id is 32 lower-case hex characters")
	}
	return nil
}
