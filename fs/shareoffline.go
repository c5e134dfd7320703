package fs

// The shares the account's drive loaded last (those it owns and those it
// joined: each one's verified roster, the secrets of the generations it
// holds, a joined share's owner and root) are saved in the drive's cache
// directory, sealed, so that a drive started while the cloud is unreachable
// still shows the shares it joined (MNT/Shared/NAME, each from its local
// tree and cache) and opens the records of the folders it shares, as it
// does the account's own tree offline. They are what the drive held when
// it last reached the cloud: the next load that reaches it replaces them
// (a share left or revoked meanwhile leaves the mount then, a raised
// lowest generation applies then). docs/FORMAT.md §6 has the file's format.

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/chacha20poly1305"

	"kumo/internal/atomicfile"
	"kumo/internal/keys"
	"kumo/remote/pathops"
)

const (
	// savedSharesFile is the saved shares' file in memberBase.
	savedSharesFile = "shares.sealed"
	// savedSharesLabel derives the file's key from the cache key and is
	// its associated data.
	savedSharesLabel = "kumo/v2/saved-shares"
	savedSharesV1    = 0x01
)

// savedSharesPath is where the account's drive keeps its shares ("" for a
// member drive, or without a cache directory).
func (d *Drive) savedSharesPath() string {
	base := d.memberBase()
	if base == "" || d.isMember() {
		return ""
	}
	return filepath.Join(base, savedSharesFile)
}

func (d *Drive) savedSharesAEAD() (cipher.AEAD, error) {
	k := keys.HKDF(d.o.Session.Subkeys().Cache, savedSharesLabel)
	return chacha20poly1305.NewX(k[:])
}

// saveShares saves list (a load's answer) if it differs from what was
// saved last. Under d.sh.loading.
func (d *Drive) saveShares(list []*pathops.Share) {
	path := d.savedSharesPath()
	if path == "" {
		return
	}
	if list == nil {
		list = []*pathops.Share{}
	}
	pt, err := json.Marshal(list)
	if err != nil {
		d.log.Warn("saving the shared folders for offline starts", "err", err)
		return
	}
	sum := sha256.Sum256(pt)
	if sum == d.sh.savedSum {
		return
	}
	if err := d.writeSavedShares(path, pt); err != nil {
		d.log.Warn("saving the shared folders for offline starts (a start without the cloud will not show them)", "err", err)
		return
	}
	d.sh.savedSum = sum
}

func (d *Drive) writeSavedShares(path string, pt []byte) error {
	aead, err := d.savedSharesAEAD()
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	b := append([]byte{savedSharesV1}, nonce...)
	b = aead.Seal(b, nonce, pt, []byte(savedSharesLabel))
	return atomicfile.WritePrivate(path, b)
}

// savedShares reads the shares saved by an earlier load (none: nil, nil).
func (d *Drive) savedShares() ([]*pathops.Share, error) {
	path := d.savedSharesPath()
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	aead, err := d.savedSharesAEAD()
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	if len(b) < 1+ns || b[0] != savedSharesV1 {
		return nil, fmt.Errorf("%s: not a saved shares file of this version", path)
	}
	pt, err := aead.Open(nil, b[1:1+ns], b[1+ns:], []byte(savedSharesLabel))
	if err != nil {
		return nil, fmt.Errorf("%s: does not authenticate under this account's cache key: %w", path, err)
	}
	var list []*pathops.Share
	dec := json.NewDecoder(bytes.NewReader(pt))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := list[:0]
	for _, sh := range list {
		// Sealed by this account's key, so written by one of its drives;
		// still, nothing without what opening records needs.
		if sh == nil || sh.Roster == nil || sh.ID == 0 || sh.Roster.Share != sh.ID || sh.Secrets == nil {
			continue
		}
		out = append(out, sh)
	}
	d.sh.savedSum = sha256.Sum256(pt)
	return out, nil
}

// useSavedShares installs the saved shares when the first load of this
// mount failed (the cloud unreachable at start): the folders this account
// shares open, and the joined ones show, from what the drive holds. Under
// d.sh.loading.
func (d *Drive) useSavedShares() {
	if d.isMember() || d.sh.cur.Load() != nil {
		return
	}
	list, err := d.savedShares()
	if err != nil {
		d.log.Warn("shared folders saved by the last load unreadable: none shown until the cloud answers", "err", err)
		return
	}
	if len(list) == 0 {
		return
	}
	if d.o.Identity == nil {
		d.log.Warn("shared folders saved by the last load not used: no identity keys to sign writes with")
		return
	}
	s := &shareSet{sealer: d.sealer}
	for _, sh := range list {
		s = s.with(sh, false)
	}
	d.sh.swap.Lock()
	if d.sh.cur.Load() != nil { // a load won meanwhile
		d.sh.swap.Unlock()
		return
	}
	d.sh.cur.Store(s)
	d.sh.swap.Unlock()
	d.log.Info("the cloud is unreachable: shared folders as the last load saw them", "shares", len(list))
	d.syncMembers(list)
}
