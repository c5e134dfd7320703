package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/urfave/cli/v2"

	kfs "kumo/fs"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/session"
)

// mountShares sets up o so the drive opens the shared folders of the
// account (docs/FORMAT.md §3g): its identity keys (checked against those the
// server publishes, as kumo share does) sign what the drive writes in them,
// and the shares with their rosters (checked against pinned keys) are
// loaded by the drive. Without identity keys the drive mounts anyway and
// shared folders read as EIO; the log says why.
// saved says the session is the one saved by kumo login (not the embedded
// cloud's), which then keeps the identity fingerprint. The shares other
// accounts shared with this one (and it accepted) appear in the drive under
// --shared-dir, one folder each (fs/sharemember.go); the invitations are
// listed in .kumo.
func mountShares(ctx context.Context, c *cli.Context, cl *client.Client, sess *session.Session, saved bool, a api.Account, o *kfs.Options, log *slog.Logger) {
	id, _, err := session.EnsureIdentity(ctx, cl, sess)
	if errors.Is(err, api.ErrUnavailable) {
		// The server unreachable at start: the keys kept at the last
		// mount; the drive shows the shares its last load saw.
		if id, err = session.SavedIdentity(sess); err == nil {
			log.Warn("server unreachable: shared folders as the drive saw them last, writes in them signed with the identity keys kept in the session")
		}
	}
	if err != nil {
		log.Warn("identity keys unavailable: shared folders read as EIO in this mount", "err", err)
		return
	}
	if saved {
		if err := sess.Save(sessionPath(c)); err != nil {
			log.Warn("saving the session", "err", err)
		}
	}
	contacts, err := pathops.LoadContacts(pathops.ContactsPath(sessionPath(c)))
	if err != nil {
		log.Warn("contacts unreadable: shared folders read as EIO in this mount", "err", err)
		return
	}
	acct := pathops.Account{ID: a.ID, Email: sess.Email, Master: sess.Master, Identity: id, Contacts: contacts}
	o.Identity = id
	// The invitations of the last load, for the control file (.kumo).
	var mu sync.Mutex
	var invitations []*pathops.Invitation
	// The contacts are read again at each use: kumo share accept (or kumo
	// contacts verify) pins an owner's keys in the file while the drive runs.
	current := func() (pathops.Account, error) {
		pinned, err := pathops.LoadContacts(pathops.ContactsPath(sessionPath(c)))
		a := acct
		a.Contacts = pinned
		return a, err
	}
	o.Shares = func(ctx context.Context) ([]*pathops.Share, error) {
		a, err := current()
		if err != nil {
			return nil, err
		}
		sh, err := pathops.LoadShares(ctx, cl, a)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		invitations = sh.Invitations
		mu.Unlock()
		return sh.All(), nil
	}
	o.Invitations = func() []*pathops.Invitation {
		mu.Lock()
		defer mu.Unlock()
		return invitations
	}
	// echo 'share accept NAME' > MNT/.kumo does what kumo share accept does.
	o.AcceptShare = func(ctx context.Context, which string) (*pathops.Share, error) {
		a, err := current()
		if err != nil {
			return nil, err
		}
		return pathops.AcceptShare(ctx, cl, a, which)
	}
	// Shares joined from other accounts appear in MNT/<--shared-dir>/NAME.
	o.SharedDir = c.String("shared-dir")
}
