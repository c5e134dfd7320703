package main

// Shared folders between accounts: kumo share, kumo shares, kumo contacts.
// The crypto and the checks are in remote/pathops/share.go; this file only
// parses arguments and prints.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"kumo/internal/keys"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/session"
)

// shareSession is the logged-in account with what sharing needs: its
// identity keys (checked against the server's), its contacts, and its home
// tree opening the shares it owns or joined.
type shareSession struct {
	s      *session.Session
	cl     *client.Client
	acct   pathops.Account
	home   *pathops.FS
	shares *pathops.Shares
}

// withShares runs a share command: an interruptible context, the share
// session, and the command's error explained as every client command's is.
func withShares(c *cli.Context, do func(ctx context.Context, ss *shareSession) error) error {
	ctx, stop := interruptible(c)
	defer stop()
	ss, err := loadShareSession(ctx, c)
	if err != nil {
		return err
	}
	return explain(do(ctx, ss), ss.s)
}

func loadShareSession(ctx context.Context, c *cli.Context) (*shareSession, error) {
	s, cl, home, err := loadSession(c)
	if err != nil {
		return nil, err
	}
	id, _, err := session.EnsureIdentity(ctx, cl, s)
	if err != nil {
		return nil, explain(err, s)
	}
	if s.Token != "" { // a saved session (not the embedded cloud's)
		if err := s.Save(sessionPath(c)); err != nil {
			return nil, err
		}
	}
	a, err := cl.Account(ctx)
	if err != nil {
		return nil, explain(err, s)
	}
	contacts, err := pathops.LoadContacts(pathops.ContactsPath(sessionPath(c)))
	if err != nil {
		return nil, err
	}
	ss := &shareSession{s: s, cl: cl, home: home,
		acct: pathops.Account{ID: a.ID, Email: s.Email, Master: s.Master, Identity: id, Contacts: contacts}}
	if ss.shares, err = pathops.LoadShares(ctx, cl, ss.acct); err != nil {
		return nil, explain(err, s)
	}
	ss.home = home.WithShares(id, ss.shares.All()...)
	return ss, nil
}

// view returns the FS of the share named by the start of arg
// (OWNER_EMAIL/FOLDER or a share id) and the path inside it.
func (ss *shareSession) view(arg string) (*pathops.FS, string, error) {
	which, rest := arg, "/"
	if i := strings.Index(arg, "/"); i >= 0 && strings.Contains(arg[:i], "@") {
		if j := strings.Index(arg[i+1:], "/"); j >= 0 {
			which, rest = arg[:i+1+j], arg[i+1+j:]
		}
	} else if i >= 0 {
		which, rest = arg[:i], arg[i:]
	}
	sh, err := ss.shares.Find(which)
	if err != nil {
		return nil, "", fmt.Errorf("%w (kumo shares lists them)", err)
	}
	v, err := ss.home.View(sh)
	return v, rest, err
}

func shareCommand() *cli.Command {
	return &cli.Command{
		Name:  "share",
		Usage: "share a folder with another account as reader or writer",
		UsageText: "kumo share PATH --with EMAIL --role reader|writer\n" +
			"kumo share accept OWNER_EMAIL/NAME|ID\n" +
			"kumo share rm PATH --with EMAIL\n" +
			"kumo share ls|get|put ... (a share's files: OWNER_EMAIL/NAME/PATH)",
		Description: "The first share of a folder re-encrypts it under the share's own keys (run the command\n" +
			"again if it is interrupted). The other account sees the invitation in kumo shares, with your\n" +
			"fingerprint (kumo whoami) to compare, and accepts it. Every change in the folder is signed by\n" +
			"its writer and checked by every reader.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "with", Usage: "the account `EMAIL` to share with"},
			&cli.StringFlag{Name: "role", Value: "reader", Usage: "reader or writer"},
			configFlag(),
		},
		Action: func(c *cli.Context) error {
			args, err := positional(c)
			if err != nil {
				return err
			}
			if len(args) != 1 || c.String("with") == "" {
				return errors.New("usage: kumo share PATH --with EMAIL --role reader|writer")
			}
			role, err := keys.ParseRole(c.String("role"))
			if err != nil {
				return err
			}
			return withShares(c, func(ctx context.Context, ss *shareSession) error {
				sh, err := ss.home.ShareFolder(ctx, ss.acct, args[0], c.String("with"), role)
				if err != nil {
					return err
				}
				pub, _ := ss.acct.Contacts.Pinned(session.NormalizeEmail(c.String("with")))
				fmt.Printf("shared %s with %s as %s (share %016x, key generation %d)\n", args[0], session.NormalizeEmail(c.String("with")), role, sh.ID, sh.Gen())
				if sh.Roster.MinGen > 1 {
					fmt.Printf("the folder is re-sealed: records under key generations before %d are refused\n", sh.Roster.MinGen)
				}
				fmt.Printf("their fingerprint: %s (compare with what kumo whoami prints for them)\n", pub.Fingerprint())
				fmt.Printf("your fingerprint:  %s\n", ss.acct.Identity.Public.Fingerprint())
				return nil
			})
		},
		Subcommands: []*cli.Command{
			{
				Name:      "accept",
				Usage:     "accept an invitation (kumo shares lists them)",
				UsageText: "kumo share accept OWNER_EMAIL/NAME|ID",
				Flags:     []cli.Flag{configFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("usage: kumo share accept OWNER_EMAIL/NAME|ID")
					}
					return withShares(c, func(ctx context.Context, ss *shareSession) error {
						sh, err := pathops.AcceptShare(ctx, ss.cl, ss.acct, c.Args().First())
						if err != nil {
							return err
						}
						fmt.Printf("joined %s as %s; its files: kumo share ls %s\n", sh.Name(), sh.Role, sh.Name())
						return nil
					})
				},
			},
			{
				Name:      "rm",
				Usage:     "remove an account from a shared folder (the folder moves to new keys)",
				UsageText: "kumo share rm PATH --with EMAIL",
				Description: "What is written in the folder afterwards is sealed under keys the removed account never\n" +
					"gets. What it already downloaded (or could read before) cannot be recalled. Removing a writer\n" +
					"also re-seals the whole folder under the new keys (every file is downloaded and uploaded once),\n" +
					"after which records under older keys are refused; if interrupted, run the command again.",
				Flags: []cli.Flag{&cli.StringFlag{Name: "with", Usage: "the account `EMAIL` to remove"}, configFlag()},
				Action: func(c *cli.Context) error {
					args, err := positional(c)
					if err != nil {
						return err
					}
					if len(args) != 1 || c.String("with") == "" {
						return errors.New("usage: kumo share rm PATH --with EMAIL")
					}
					return withShares(c, func(ctx context.Context, ss *shareSession) error {
						sh, err := ss.home.RemoveMember(ctx, ss.acct, args[0], c.String("with"))
						if err != nil {
							return err
						}
						fmt.Printf("removed %s from %s; new writes use key generation %d\n", session.NormalizeEmail(c.String("with")), args[0], sh.Gen())
						if sh.Roster.MinGen > 1 {
							fmt.Printf("the folder is re-sealed: records under key generations before %d are refused\n", sh.Roster.MinGen)
						}
						return nil
					})
				},
			},
			{
				Name:      "ls",
				Usage:     "list a shared folder's files",
				UsageText: "kumo share ls OWNER_EMAIL/NAME[/PATH]",
				Flags:     []cli.Flag{configFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("usage: kumo share ls OWNER_EMAIL/NAME[/PATH]")
					}
					return withShares(c, func(ctx context.Context, ss *shareSession) error {
						v, p, err := ss.view(c.Args().First())
						if err != nil {
							return err
						}
						ns, err := v.List(ctx, p)
						if err != nil {
							return err
						}
						for _, n := range ns {
							fmt.Printf("%s %12d %s %s\n", n.Mode(), n.Size(), n.ModTime().Format("2006-01-02 15:04"), n.Name)
						}
						return nil
					})
				},
			},
			{
				Name:      "get",
				Usage:     "download a file of a shared folder",
				UsageText: "kumo share get OWNER_EMAIL/NAME/PATH LOCAL",
				Flags:     []cli.Flag{configFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return errors.New("usage: kumo share get OWNER_EMAIL/NAME/PATH LOCAL")
					}
					return withShares(c, func(ctx context.Context, ss *shareSession) error {
						v, p, err := ss.view(c.Args().Get(0))
						if err != nil {
							return err
						}
						prog, done := progressBar("get " + p)
						defer done()
						return v.GetFile(ctx, p, c.Args().Get(1), prog)
					})
				},
			},
			{
				Name:      "put",
				Usage:     "upload a file into a shared folder (writers and the owner)",
				UsageText: "kumo share put LOCAL OWNER_EMAIL/NAME/PATH",
				Flags:     []cli.Flag{configFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return errors.New("usage: kumo share put LOCAL OWNER_EMAIL/NAME/PATH")
					}
					return withShares(c, func(ctx context.Context, ss *shareSession) error {
						v, p, err := ss.view(c.Args().Get(1))
						if err != nil {
							return err
						}
						prog, done := progressBar("put " + p)
						defer done()
						_, err = v.PutFile(ctx, c.Args().Get(0), p, prog)
						return err
					})
				},
			},
		},
	}
}

func sharesCommand() *cli.Command {
	return &cli.Command{
		Name:  "shares",
		Usage: "list the folders you share, the ones shared with you, and invitations",
		Flags: []cli.Flag{configFlag()},
		Action: func(c *cli.Context) error {
			return withShares(c, func(ctx context.Context, ss *shareSession) error {
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KIND\tSHARE\tNAME\tROLE\tGEN\tMEMBERS / OWNER FINGERPRINT")
				for _, sh := range ss.shares.Owned {
					var ms []string
					for _, m := range sh.Roster.Members {
						if m.Role != keys.RoleRemoved {
							ms = append(ms, m.Email+" ("+m.Role.String()+")")
						}
					}
					if sh.Roster.NeedsReseal() || sh.Roster.NeedsRotation() {
						ms = append(ms, "re-seal pending: run kumo share rm (or the role change) again")
					}
					fmt.Fprintf(tw, "owned\t%016x\troot node %d\towner\t%d\t%s\n", sh.ID, sh.Root, sh.Gen(), strings.Join(ms, ", "))
				}
				for _, sh := range ss.shares.Joined {
					pub, _ := ss.acct.Contacts.Pinned(sh.OwnerEmail)
					fmt.Fprintf(tw, "joined\t%016x\t%s\t%s\t%d\t%s\n", sh.ID, sh.Name(), sh.Role, sh.Gen(), pub.Fingerprint())
				}
				for _, it := range ss.shares.Invitations {
					fp := it.Fingerprint
					if it.Changed != nil {
						fp += " (CHANGED since first seen: compare it with them, then kumo contacts verify " + it.Share.OwnerEmail + " FINGERPRINT)"
					}
					fmt.Fprintf(tw, "invited\t%016x\t%s\t%s\t%d\t%s\n", it.Share.ID, it.Share.Name(), it.Share.Role, it.Share.Gen(), fp)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(ss.shares.Invitations) > 0 {
					fmt.Println("accept with: kumo share accept OWNER_EMAIL/NAME (compare the fingerprint with the owner's kumo whoami first)")
				}
				return nil
			})
		},
	}
}

func contactsCommand() *cli.Command {
	return &cli.Command{
		Name:  "contacts",
		Usage: "the identity keys of accounts you share with, pinned on first use",
		Subcommands: []*cli.Command{{
			Name:      "verify",
			Usage:     "pin an account's current keys after comparing their fingerprint with them",
			UsageText: "kumo contacts verify EMAIL FINGERPRINT",
			Flags:     []cli.Flag{configFlag()},
			Action: func(c *cli.Context) error {
				args, err := positional(c)
				if err != nil {
					return err
				}
				if len(args) < 2 {
					return errors.New("usage: kumo contacts verify EMAIL FINGERPRINT")
				}
				s, cl, _, err := loadSession(c)
				if err != nil {
					return err
				}
				contacts, err := pathops.LoadContacts(pathops.ContactsPath(sessionPath(c)))
				if err != nil {
					return err
				}
				ctx, stop := interruptible(c)
				defer stop()
				// The fingerprint may be given as one argument or as its 8 groups.
				pub, err := pathops.VerifyContact(ctx, cl, contacts, args[0], strings.Join(args[1:], ""))
				if err != nil {
					return explain(err, s)
				}
				fmt.Printf("pinned %s: %s\n", session.NormalizeEmail(args[0]), pub.Fingerprint())
				return nil
			},
		}},
	}
}

// withOwnedShares returns home able to read the folders the account shares
// (their records are sealed under the shares' keys, which the owner derives
// from its master key), so that kumo ls and get see into them. It costs one
// request when the account owns no share. A server without shared folders
// (404) leaves home as it is; an owned share that fails its checks is an error.
func withOwnedShares(c *cli.Context, s *session.Session, cl *client.Client, home *pathops.FS) (*pathops.FS, error) {
	ctx := c.Context
	resp, err := cl.Shares(ctx)
	if errors.Is(err, api.ErrNotFound) || err == nil && len(resp.Owned) == 0 {
		return home, nil
	}
	if err != nil {
		return nil, explain(fmt.Errorf("list shared folders: %w", err), s)
	}
	id, _, err := session.EnsureIdentity(ctx, cl, s)
	if err != nil {
		return nil, explain(err, s)
	}
	a, err := cl.Account(ctx)
	if err != nil {
		return nil, explain(err, s)
	}
	contacts, err := pathops.LoadContacts(pathops.ContactsPath(sessionPath(c)))
	if err != nil {
		return nil, err
	}
	owned, err := pathops.OwnedShares(pathops.Account{ID: a.ID, Email: s.Email, Master: s.Master, Identity: id, Contacts: contacts}, resp.Owned)
	if err != nil {
		return nil, err
	}
	return home.WithShares(id, owned...), nil
}
