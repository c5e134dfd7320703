package pathops

// Contacts: the identity keys of other accounts this client has shared with,
// pinned on first use (like a pinned TLS certificate), and the highest
// roster version seen per share. A changed key is refused until the user
// compares fingerprints out of band and runs `kumo contacts verify`.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"kumo/internal/keys"
)

// ErrContactChanged is returned when an account shows other identity keys
// than this client pinned for it.
var ErrContactChanged = errors.New("identity keys changed since this client first saw them (a new device of theirs, or a hostile server): compare fingerprints with them in person or by phone, then run `kumo contacts verify EMAIL FINGERPRINT`")

// ErrRosterRollback is returned for a share roster older than one seen before.
var ErrRosterRollback = errors.New("share roster is older than one this client saw (the server replays an old member list)")

// ContactsPath is the contacts file beside the session file at sessionPath.
func ContactsPath(sessionPath string) string {
	return filepath.Join(filepath.Dir(sessionPath), "contacts.json")
}

// Contacts is the pinned-keys file. Safe for concurrent use.
type Contacts struct {
	path string // "" keeps everything in memory (tests)
	mu   sync.Mutex
	f    contactsFile
}

type contactsFile struct {
	Keys    map[string]contactKeys `json:"keys"`    // by e-mail
	Rosters map[string]uint64      `json:"rosters"` // "OWNER_ID/SHARE" -> highest version seen
}

type contactKeys struct {
	Box         []byte `json:"box_public"`
	Sign        []byte `json:"sign_public"`
	Fingerprint string `json:"fingerprint"`
}

// LoadContacts reads the contacts file at path (none yet: empty). path ""
// keeps contacts in memory only.
func LoadContacts(path string) (*Contacts, error) {
	c := &Contacts{path: path}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("contacts: %w", err)
		default:
			if err := json.Unmarshal(b, &c.f); err != nil {
				return nil, fmt.Errorf("contacts %s: %w (move it away to start over; every contact is then trusted on first use again)", path, err)
			}
		}
	}
	if c.f.Keys == nil {
		c.f.Keys = map[string]contactKeys{}
	}
	if c.f.Rosters == nil {
		c.f.Rosters = map[string]uint64{}
	}
	return c, nil
}

// saveLocked writes the file after this process changed the pin of
// changed (an e-mail, or "" for a roster version). The CLI and a mount's
// daemon may both hold the file: under an flock of path+".lock" it first
// takes in what the file on disk holds (the other's pins and verifies, higher
// roster versions), keeps its own change on top, then writes a temporary
// file of its own and renames it over, so neither writer's changes are lost
// and neither renames the other's half-written file.
func (c *Contacts) saveLocked(changed string) error {
	if c.path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return fmt.Errorf("contacts: %w", err)
	}
	lock, err := os.OpenFile(c.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("contacts: %w", err)
	}
	defer lock.Close() // releases the flock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("contacts: lock %s: %w", lock.Name(), err)
	}
	if b, err := os.ReadFile(c.path); err == nil {
		var disk contactsFile
		if json.Unmarshal(b, &disk) == nil {
			c.mergeLocked(disk, changed)
		}
	}
	b, err := json.MarshalIndent(&c.f, "", "  ")
	if err != nil {
		return fmt.Errorf("contacts: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), filepath.Base(c.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("contacts: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), c.path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("contacts: %w", werr)
	}
	return nil
}

// mergeLocked takes in from disk every pin but that of changed (the one
// this process is saving) and every higher roster version.
func (c *Contacts) mergeLocked(disk contactsFile, changed string) {
	for email, k := range disk.Keys {
		if email != changed {
			c.f.Keys[email] = k
		}
	}
	for share, v := range disk.Rosters {
		c.f.Rosters[share] = max(c.f.Rosters[share], v)
	}
}

// Pinned returns the keys pinned for email.
func (c *Contacts) Pinned(email string) (keys.PublicIdentity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.f.Keys[email]
	if !ok {
		return keys.PublicIdentity{}, false
	}
	p, err := keys.PublicFromBytes(k.Box, k.Sign)
	return p, err == nil
}

// Check pins pub for email if email has none yet (trust on first use), and
// otherwise requires it to be the pinned keys (ErrContactChanged).
func (c *Contacts) Check(email string, pub keys.PublicIdentity) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.f.Keys[email]; ok {
		old, err := keys.PublicFromBytes(k.Box, k.Sign)
		if err == nil && old.Equal(pub) {
			return nil
		}
		return fmt.Errorf("%s: pinned fingerprint %s, now shown %s: %w", email, k.Fingerprint, pub.Fingerprint(), ErrContactChanged)
	}
	return c.pinLocked(email, pub)
}

func (c *Contacts) pinLocked(email string, pub keys.PublicIdentity) error {
	c.f.Keys[email] = contactKeys{Box: pub.Box[:], Sign: pub.Sign[:], Fingerprint: pub.Fingerprint()}
	return c.saveLocked(email)
}

// Verify pins pub for email after the user confirmed its fingerprint:
// fingerprint (as printed, spaces optional) must be pub's.
func (c *Contacts) Verify(email, fingerprint string, pub keys.PublicIdentity) error {
	if normFP(fingerprint) != normFP(pub.Fingerprint()) {
		return fmt.Errorf("%s: the server shows fingerprint %s, not %s: nothing pinned (if they told you %s, the server is not showing their keys)", email, pub.Fingerprint(), fingerprint, fingerprint)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pinLocked(email, pub)
}

func normFP(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch >= 'A' && ch <= 'F':
			out = append(out, ch+'a'-'A')
		case ch == ' ' || ch == '-' || ch == ':':
		default:
			out = append(out, ch)
		}
	}
	return string(out)
}

// SeeRoster records version of the roster of share of account owner, and
// refuses one lower than the highest seen (ErrRosterRollback).
func (c *Contacts) SeeRoster(owner string, share uint64, version uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := fmt.Sprintf("%s/%016x", owner, share)
	if seen := c.f.Rosters[key]; version < seen {
		return fmt.Errorf("share %016x: roster version %d, saw %d: %w", share, version, seen, ErrRosterRollback)
	} else if version == seen {
		return nil
	}
	c.f.Rosters[key] = version
	return c.saveLocked("")
}
