package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/urfave/cli/v2"

	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/session"
)

// mountAccount is the account kumo mount mounts. With a server, the
// session keeps its id, so that a mount started while the server is
// unreachable finds its cache directory and works from it, catching up
// when the server answers (the shared folders too: the identity keys kept
// in the session, the shares the drive saved, fs/shareoffline.go).
func mountAccount(ctx context.Context, c *cli.Context, cl *client.Client, sess *session.Session, log *slog.Logger) (api.Account, error) {
	a, err := cl.Account(ctx)
	switch {
	case err == nil:
		if c.String("server") != "" && sess.AccountID != a.ID {
			sess.AccountID = a.ID
			if err := sess.Save(sessionPath(c)); err != nil {
				log.Warn("saving the session (the account's id, for a mount while the server is down)", "err", err)
			}
		}
		return a, nil
	case errors.Is(err, api.ErrUnavailable) && c.String("server") != "" && sess.AccountID != "":
		log.Warn("server unreachable: mounting from the local cache", "err", err)
		return api.Account{ID: sess.AccountID, Email: sess.Email}, nil
	}
	return a, err
}
