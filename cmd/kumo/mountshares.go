package main

import (
	"context"
	"log/slog"

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
// cloud's), which then keeps the identity fingerprint.
func mountShares(ctx context.Context, c *cli.Context, cl *client.Client, sess *session.Session, saved bool, a api.Account, o *kfs.Options, log *slog.Logger) {
	id, _, err := session.EnsureIdentity(ctx, cl, sess)
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
	o.Shares = func(ctx context.Context) ([]*pathops.Share, error) {
		sh, err := pathops.LoadShares(ctx, cl, acct)
		if err != nil {
			return nil, err
		}
		return sh.All(), nil
	}
}
