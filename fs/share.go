package fs

// Shared folders in the owner's drive (docs/FORMAT.md §3g). A folder the
// account shares stays in its tree, but every record under its root (the
// root's attributes, every node's attributes and every entry's name under
// it) is sealed under the share's key id (share, generation) and signed by
// its writer. The drive opens such records with the share's keys after
// checking the signature against the owner-signed roster (pathops.Share,
// loaded through Options.Shares): a missing or bad signature, a signer who
// may not write that generation, or a record outside the tree it claims is
// EIO, never data. What the drive writes under a share root is sealed under
// the share's key id and signed with Options.Identity; a rename or a hard
// link across a share's boundary is EXDEV (the chunks and names would need
// other keys).
//
// A node's chunks are encrypted with the chunk keys of the key id of the
// attributes that name them (a chunk has no key id of its own), so each
// nodeState keeps its key id (kid), and updates of an existing node stay
// under it. New nodes get the share's current generation.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"kumo/cache"
	"kumo/internal/chunk"
	"kumo/internal/keys"
	"kumo/internal/meta"
	"kumo/remote/api"
	"kumo/remote/pathops"
)

// errShareRecord is a record of a share the drive must refuse.
var errShareRecord = errors.New("shared folder record refused")

// shareSet is one immutable snapshot of the shares the drive holds.
type shareSet struct {
	sealer  *meta.Sealer // the home keys and every share generation held
	byID    map[uint64]*pathops.Share
	ciphers map[meta.KeyID]*chunk.Cipher
	// provisional are shares of this account the server does not list
	// (yet): kumo share re-seals a folder before it creates the share, and
	// this drive sees the records meanwhile. The owner derives their keys
	// (FORMAT §3g) and their roster has the owner alone, so only records
	// the account signed itself open.
	provisional map[uint64]bool
}

// with returns a copy of s holding sh (replacing a share of its id).
func (s *shareSet) with(sh *pathops.Share, provisional bool) *shareSet {
	c := &shareSet{sealer: s.sealer, byID: maps.Clone(s.byID), ciphers: maps.Clone(s.ciphers), provisional: maps.Clone(s.provisional)}
	if c.byID == nil {
		c.byID = map[uint64]*pathops.Share{}
	}
	if c.ciphers == nil {
		c.ciphers = map[meta.KeyID]*chunk.Cipher{}
	}
	if c.provisional == nil {
		c.provisional = map[uint64]bool{}
	}
	c.byID[sh.ID] = sh
	c.provisional[sh.ID] = provisional
	for g, secret := range sh.Secrets {
		k := keys.ShareSubkeys(secret, sh.ID, g)
		kid := meta.KeyID{Share: sh.ID, Gen: g}
		c.sealer = c.sealer.WithShare(kid, k)
		c.ciphers[kid] = chunk.NewCipher(k.ChunkID, k.Chunks)
	}
	return c
}

// driveShares is the drive's share state; the snapshot is replaced whole
// when the shares are loaded again.
type driveShares struct {
	cur      atomic.Pointer[shareSet]
	swap     sync.Mutex // held to replace cur; never across a request
	loading  sync.Mutex // one load at a time
	lastLoad time.Time  // under loading
	// lastNeed is the key id ensureShareKeys last loaded at once for
	// (under loading): the first record of a generation newer than the
	// drive holds reloads even right after a load, which may have been
	// just before the rotation (a re-seal then sends the new generation's
	// records within the second); the next ones wait the usual second.
	lastNeed meta.KeyID
	// chunkKeys maps the id of a chunk named by a share record to that
	// record's key id (meta.KeyID), whose chunk keys open it: the fetcher
	// and the cache know chunks by id only. Ids are keyed hashes, so an id
	// made under one key set never names a chunk of another.
	chunkKeys sync.Map
	// stale are local records refused under a roster that raised the
	// lowest accepted generation, to be fetched again (sharestale.go).
	stale staleRecords
	// savedSum is the SHA-256 of the shares saved last for offline
	// starts (under loading; shareoffline.go).
	savedSum [32]byte
	// gens are queued records re-sealed under their share's current
	// generation after the cloud refused an older one (sharegen.go).
	gens staleGens
}

// shares returns the current snapshot (only the home keys before the first load).
func (d *Drive) shares() *shareSet {
	if s := d.sh.cur.Load(); s != nil {
		return s
	}
	return &shareSet{sealer: d.sealer}
}

// loadShares (re)loads the account's shares through Options.Shares. It does
// nothing without that option, nor if the last load is younger than minAge.
func (d *Drive) loadShares(ctx context.Context, minAge time.Duration) error {
	if d.o.Shares == nil {
		return nil
	}
	d.sh.loading.Lock()
	defer d.sh.loading.Unlock()
	if time.Since(d.sh.lastLoad) < minAge {
		return nil
	}
	d.sh.lastLoad = time.Now()
	list, err := d.o.Shares(ctx)
	if err != nil {
		if errors.Is(err, api.ErrUnavailable) {
			// The cloud unreachable at start: the shares the last load
			// saw (shareoffline.go). Not for a refusal (a roster or key
			// check failed): then no share shows, as before.
			d.useSavedShares()
		}
		return fmt.Errorf("shared folders: %w", err)
	}
	if len(list) > 0 && d.o.Identity == nil {
		return errors.New("shared folders: no identity keys to sign writes with (kumo whoami makes them)")
	}
	s := &shareSet{sealer: d.sealer}
	for _, sh := range list {
		s = s.with(sh, false)
	}
	// Keep the provisional shares the server does not list yet.
	d.sh.swap.Lock()
	defer d.sh.swap.Unlock()
	old := d.shares()
	for id, p := range old.provisional {
		if p && s.byID[id] == nil {
			s = s.with(old.byID[id], true)
		}
	}
	d.sh.cur.Store(s)
	d.minGenRaised(old, s) // sharestale.go
	if len(list) > 0 {
		d.log.Info("shared folders loaded", "shares", len(list))
	}
	d.syncMembers(list) // joined shares in MNT/<SharedDir> (sharemember.go)
	d.saveShares(list)  // for a start without the cloud (shareoffline.go)
	return nil
}

// unknownShare asks for the shares again in the background: a record of a
// share this drive does not know arrived (shared since the mount, say).
func (d *Drive) unknownShare(id uint64) {
	if d.o.Shares == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
		defer cancel()
		if err := d.loadShares(ctx, 10*time.Second); err != nil {
			d.log.Warn("loading shared folders failed", "share", fmt.Sprintf("%016x", id), "err", err)
		}
	}()
}

// provisionalShare returns a share of this account with key id kid that
// the server does not list, its keys derived from the master key (see
// shareSet.provisional); nil without identity keys.
func (d *Drive) provisionalShare(kid meta.KeyID) *pathops.Share {
	if d.o.Identity == nil || kid.Share == 0 || kid.Gen == 0 || kid.Gen > 1<<10 {
		return nil
	}
	d.sh.swap.Lock()
	defer d.sh.swap.Unlock()
	s := d.shares()
	if sh := s.byID[kid.Share]; sh != nil && (!s.provisional[kid.Share] || sh.Gen() >= kid.Gen) {
		return sh
	}
	r := &keys.Roster{Share: kid.Share, Gen: kid.Gen, OwnerEmail: d.o.Session.Email, Owner: d.o.Identity.Public}
	sh := &pathops.Share{ID: kid.Share, OwnerEmail: d.o.Session.Email, Folder: fmt.Sprintf("%016x", kid.Share), Owned: true,
		Role: keys.RoleWriter, Roster: r, Secrets: map[uint32]keys.Key{}}
	for g := uint32(1); g <= kid.Gen; g++ {
		sh.Secrets[g] = keys.OwnerShareSecret(d.o.Session.Master, kid.Share, g)
	}
	d.sh.cur.Store(s.with(sh, true))
	return sh
}

// ensureShareKeys loads the shares again, at once, if record b is of a
// share or a generation this drive does not hold: the puller calls it
// before applying a record, which it would skip otherwise.
func (d *Drive) ensureShareKeys(ctx context.Context, b []byte) {
	kid, ok := meta.RecordKeyID(b)
	if !ok || kid.Share == 0 || d.o.Shares == nil {
		return
	}
	s := d.shares()
	if sh := s.byID[kid.Share]; sh != nil && !s.provisional[kid.Share] && sh.Gen() >= kid.Gen {
		return
	}
	minAge := time.Second
	d.sh.loading.Lock()
	if d.sh.lastNeed != kid {
		d.sh.lastNeed, minAge = kid, 0
	}
	d.sh.loading.Unlock()
	if err := d.loadShares(ctx, minAge); err != nil {
		d.log.Warn("loading shared folders failed", "err", err)
	}
}

// verifyRecord checks a share record's signature and returns the sealed
// record without it (a home record as it is), and the snapshot to open it with.
func (d *Drive) verifyRecord(kind keys.RecordKind, id uint64, nameMAC string, b []byte) ([]byte, *shareSet, error) {
	s := d.shares()
	kid, ok := meta.RecordKeyID(b)
	if !ok || kid.Share == 0 {
		return b, s, nil // the opener refuses what is too short
	}
	sh := s.byID[kid.Share]
	if sh == nil || s.provisional[kid.Share] && kid.Gen > sh.Gen() {
		d.unknownShare(kid.Share)
		// Maybe a folder this account is sharing right now: its own
		// records open with keys it derives (provisionalShare).
		if sh = d.provisionalShare(kid); sh == nil {
			return nil, nil, fmt.Errorf("%w: sealed for shared folder %016x, which this drive does not hold", errShareRecord, kid.Share)
		}
		s = d.shares()
	}
	if kid.Gen > sh.Gen() {
		d.unknownShare(kid.Share) // rotated since the drive loaded it
	}
	if kid.Gen < sh.Roster.MinGen {
		// Refused below (whoever signed it); the operation that met it
		// asks the cloud for the re-sealed record (sharestale.go).
		d.sh.stale.note(kind, id)
	}
	if d.o.Identity != nil {
		// The drive's own local records (a reader's too) are signed by
		// this account (pathops.Share.VerifyOwn).
		sealed, err := sh.VerifyOwn(d.o.Identity.Public.Sign, kind, id, nameMAC, b)
		return sealed, s, err
	}
	sealed, err := sh.Verify(kind, id, nameMAC, b)
	return sealed, s, err
}

// recordVerifier checks a record and returns it without its signature, and
// the share set whose keys open it: verifyRecord for the live tree,
// verifyPast for kept versions (history.go).
type recordVerifier func(kind keys.RecordKind, id uint64, nameMAC string, b []byte) ([]byte, *shareSet, error)

// openAttrs checks and opens the attributes of node id; it returns their key id.
func (d *Drive) openAttrs(id uint64, b []byte) (*meta.Attrs, meta.KeyID, error) {
	return d.openAttrsBy(d.verifyRecord, id, b)
}

// openAttrsBy is openAttrs with the records checked by verify.
func (d *Drive) openAttrsBy(verify recordVerifier, id uint64, b []byte) (*meta.Attrs, meta.KeyID, error) {
	sealed, s, err := verify(keys.RecordAttrs, id, "", b)
	if err != nil {
		return nil, meta.KeyID{}, err
	}
	a, err := s.sealer.OpenAttrs(id, sealed)
	if err != nil {
		return nil, meta.KeyID{}, err
	}
	kid, _ := meta.RecordKeyID(sealed)
	for _, r := range a.Chunks {
		d.noteChunkKeys(kid, r.ID)
	}
	return a, kid, nil
}

// sealAttrs seals attributes of node id under kid, signed if kid is a share's.
func (d *Drive) sealAttrs(kid meta.KeyID, id, rev uint64, a *meta.Attrs) []byte {
	if kid == meta.Home {
		return d.sealer.SealAttrs(id, rev, a)
	}
	sealed, err := d.shares().sealer.SealAttrsAs(kid, id, rev, a)
	if err == nil {
		sealed, err = keys.SignRecord(d.o.Identity, keys.RecordAttrs, id, nil, sealed)
	}
	if err != nil {
		// Not reached: a node gets a share key id only from a record this
		// drive opened or from its parent, so it holds the keys.
		d.log.Error("sealing attributes in a shared folder failed", "node", id, "err", err)
		return nil
	}
	return sealed
}

// writeKID is the key id new records under a directory of key id dir get:
// the share's current generation, or home.
func (d *Drive) writeKID(dir meta.KeyID) meta.KeyID {
	if dir.Share == 0 {
		return meta.Home
	}
	if sh := d.shares().byID[dir.Share]; sh != nil {
		return meta.KeyID{Share: dir.Share, Gen: sh.Gen()}
	}
	return dir
}

// nameMACs returns the MACs name may have under parent (of key id dir):
// one per generation held, newest first, in a share.
func (d *Drive) nameMACs(dir meta.KeyID, parent uint64, name string) []string {
	if dir.Share == 0 {
		return []string{d.sealer.NameMAC(parent, []byte(name))}
	}
	s := d.shares()
	sh := s.byID[dir.Share]
	if sh == nil {
		return nil
	}
	var out []string
	for g := sh.Gen(); g > 0; g-- {
		if mac, err := s.sealer.NameMACAs(meta.KeyID{Share: sh.ID, Gen: g}, parent, []byte(name)); err == nil {
			out = append(out, mac)
		}
	}
	return out
}

// sealName returns the MAC and the sealed (in a share: signed) name of an
// entry under parent naming child, under key id kid.
func (d *Drive) sealName(kid meta.KeyID, parent, child uint64, kind meta.Kind, name string) (string, []byte) {
	if kid == meta.Home {
		return d.sealer.NameMAC(parent, []byte(name)), d.sealer.SealName(parent, child, kind, []byte(name))
	}
	s := d.shares()
	mac, err := s.sealer.NameMACAs(kid, parent, []byte(name))
	var sealed []byte
	if err == nil {
		sealed, err = s.sealer.SealNameAs(kid, parent, child, kind, []byte(name))
	}
	if err == nil {
		raw, _ := hex.DecodeString(mac)
		sealed, err = keys.SignRecord(d.o.Identity, keys.RecordName, parent, raw, sealed)
	}
	if err != nil {
		d.log.Error("sealing a name in a shared folder failed", "parent", parent, "err", err)
		return mac, nil
	}
	return mac, sealed
}

// openName checks and opens an entry's name.
func (d *Drive) openName(parent, child uint64, kind meta.Kind, nameMAC string, b []byte) ([]byte, error) {
	return d.openNameBy(d.verifyRecord, parent, child, kind, nameMAC, b)
}

// openNameBy is openName with the record checked by verify.
func (d *Drive) openNameBy(verify recordVerifier, parent, child uint64, kind meta.Kind, nameMAC string, b []byte) ([]byte, error) {
	sealed, s, err := verify(keys.RecordName, parent, nameMAC, b)
	if err != nil {
		return nil, err
	}
	return s.sealer.OpenName(parent, child, kind, nameMAC, sealed)
}

// checkNameBy checks an entry's name found by the MAC of name (a lookup),
// the record checked by verify.
func (d *Drive) checkNameBy(verify recordVerifier, parent, child uint64, kind meta.Kind, nameMAC string, name string, b []byte) error {
	sealed, s, err := verify(keys.RecordName, parent, nameMAC, b)
	if err != nil {
		return err
	}
	return s.sealer.CheckName(parent, child, kind, []byte(name), sealed)
}

// checkPlacement refuses an entry that leaves the tree it is in: under a
// directory of a share, the name and the child's attributes must be that
// share's; under a home directory, the name must be home and a child of a
// share must be the root of a share this account owns.
func (d *Drive) checkPlacement(dir meta.KeyID, name []byte, child uint64, ck meta.KeyID) error {
	nk, _ := meta.RecordKeyID(name)
	switch {
	case dir.Share != 0 && (nk.Share != dir.Share || ck.Share != dir.Share):
		return fmt.Errorf("%w: entry of node %d under a directory of share %016x is sealed for %016x/%016x", errShareRecord, child, dir.Share, nk.Share, ck.Share)
	case dir.Share == 0 && nk.Share != 0:
		return fmt.Errorf("%w: entry of node %d in the home tree is sealed for share %016x", errShareRecord, child, nk.Share)
	case dir.Share == 0 && ck.Share != 0:
		// A provisional share's root is not known yet; the name sealed
		// for this parent and child (by this account) places it anyway.
		s := d.shares()
		if sh := s.byID[ck.Share]; sh == nil || !sh.Owned || sh.Root != child && !s.provisional[ck.Share] {
			return fmt.Errorf("%w: node %d in the home tree is sealed for share %016x but is not the root of a share this account owns", errShareRecord, child, ck.Share)
		}
	}
	return nil
}

// findEntryLocked finds name in directory p of the local tree: in a share,
// under the name MAC of each generation held, newest first. Under d.mu.
func (d *Drive) findEntryLocked(p *nodeState, name string) (cache.Entry, error) {
	err := cache.ErrNotFound
	for _, mac := range d.nameMACs(p.kid, p.id, name) {
		var e cache.Entry
		if e, err = d.store.Lookup(p.id, mac); !errors.Is(err, cache.ErrNotFound) {
			return e, err
		}
	}
	return cache.Entry{}, err
}

// dirKID returns the key id of directory id's attributes (home if unknown).
func (d *Drive) dirKID(id uint64) meta.KeyID {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, err := d.stateLocked(id); err == nil {
		return st.kid
	}
	return meta.Home
}

// crossShare says whether moving or linking a node from a directory of key
// id from into one of key id to crosses a share's boundary (EXDEV).
func crossShare(from, to meta.KeyID) syscall.Errno {
	if from.Share != to.Share {
		return syscall.EXDEV
	}
	return 0
}

// orphanParent is where a node whose directory (from) is gone in the cloud
// is kept: the root of the shared folder its attributes are sealed for (it
// would not open anywhere else), else the account's root.
func (d *Drive) orphanParent(attrs []byte, from uint64) uint64 {
	kid, _ := meta.RecordKeyID(attrs)
	if sh := d.shares().byID[kid.Share]; kid.Share != 0 && sh != nil && sh.Owned && sh.Root != 0 && sh.Root != from {
		return sh.Root
	}
	return d.rootID() // a member drive: the share's root
}

// cipherOf returns the chunk keys of key id kid (the home keys for home).
func (d *Drive) cipherOf(kid meta.KeyID) *chunk.Cipher {
	if kid != meta.Home {
		if c := d.shares().ciphers[kid]; c != nil {
			return c
		}
	}
	return d.cipher
}

// chunkKID returns the key id whose chunk keys open chunk id: that of the
// share record that named it, else home.
func (d *Drive) chunkKID(id chunk.ID) meta.KeyID {
	if k, ok := d.sh.chunkKeys.Load(id); ok {
		return k.(meta.KeyID)
	}
	return meta.Home
}

// chunkCipher returns the chunk keys of chunk id (see chunkKID).
func (d *Drive) chunkCipher(id chunk.ID) *chunk.Cipher { return d.cipherOf(d.chunkKID(id)) }

// noteChunkKeys records that chunk id is encrypted with kid's chunk keys.
func (d *Drive) noteChunkKeys(kid meta.KeyID, id chunk.ID) {
	if kid != meta.Home && !id.IsZero() {
		d.sh.chunkKeys.Store(id, kid)
	}
}
