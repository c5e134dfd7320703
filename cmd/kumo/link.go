package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"kumo/internal/link"
	"kumo/internal/size"
	"kumo/internal/tlspin"
	"kumo/remote/client"
	"kumo/remote/pathops"
)

// linkPasswordEnv holds a link password for scripts and tests (else a prompt).
const linkPasswordEnv = "KUMO_LINK_PASSWORD"

func linkPasswordFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "link-password-file", Usage: "read the link's password from the first line of `FILE` (else $" + linkPasswordEnv + ", else a prompt)"}
}

func linkCommand() *cli.Command {
	return &cli.Command{
		Name:      "link",
		Usage:     "make a read-only link to a file or folder that anyone with the URL can download",
		UsageText: "kumo link PATH [--expires 7d] [--password]\nkumo link ls\nkumo link rm ID|URL",
		Description: "The link is a snapshot of PATH as it is now: later changes are not in it (run kumo link\n" +
			"again for a new one). The URL's secret (after #) never reaches the server and is not kept:\n" +
			"copy it now. Anyone with the URL downloads with kumo get URL, no account needed.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "expires", Usage: "the link stops working after `DURATION` (e.g. 7d, 12h, 30m)"},
			&cli.BoolFlag{Name: "password", Usage: "also protect the link with a password (asked for, or $" + linkPasswordEnv + ")"},
			linkPasswordFileFlag(),
			configFlag(),
		},
		Subcommands: []*cli.Command{
			{
				Name:  "ls",
				Usage: "list the account's links",
				Flags: []cli.Flag{configFlag()},
				Action: func(c *cli.Context) error {
					s, cl, _, err := loadSession(c)
					if err != nil {
						return err
					}
					links, err := cl.Links(c.Context)
					if err != nil {
						return explain(err, s)
					}
					tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tCREATED\tEXPIRES\tPASSWORD\tCHUNKS\tSIZE")
					for _, l := range links {
						exp := "never"
						if l.Expires != nil {
							exp = l.Expires.Local().Format(time.DateTime)
							if time.Now().After(*l.Expires) {
								exp += " (expired)"
							}
						}
						pw := "no"
						if l.HasPassword {
							pw = "yes"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", l.ID, l.Created.Local().Format(time.DateTime), exp, pw, l.Chunks, size.Format(l.Bytes))
					}
					return tw.Flush()
				},
			},
			{
				Name:      "rm",
				Usage:     "revoke a link (its URL stops working at once)",
				UsageText: "kumo link rm ID|URL",
				Flags:     []cli.Flag{configFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("usage: kumo link rm ID|URL")
					}
					id, err := linkIDArg(c.Args().First())
					if err != nil {
						return err
					}
					s, cl, _, err := loadSession(c)
					if err != nil {
						return err
					}
					if err := cl.DeleteLink(c.Context, id); err != nil {
						return explain(err, s)
					}
					fmt.Printf("link %s revoked\n", id)
					return nil
				},
			},
		},
		Action: func(c *cli.Context) error {
			args, err := positional(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return fmt.Errorf("usage: kumo link PATH [--expires 7d] [--password]")
			}
			var o pathops.LinkOptions
			if e := c.String("expires"); e != "" {
				d, err := parseExpiry(e)
				if err != nil {
					return err
				}
				o.Expires = time.Now().Add(d).UTC().Truncate(time.Second)
			}
			if c.Bool("password") {
				if o.Password, err = readPassword(c, "link-password-file", linkPasswordEnv, "Link password: ", true); err != nil {
					return err
				}
			}
			s, _, fsys, err := loadSession(c)
			if err != nil {
				return err
			}
			// Making a link reads and hashes every chunk once: a bar on a
			// terminal, for the bytes of its distinct chunks.
			prog, end := progressBar("link")
			if prog != nil {
				o.Progress = func(p pathops.LinkProgress) {
					if p.Chunks > 0 {
						prog(p.BytesDone, p.Bytes)
					}
				}
			}
			u, err := fsys.CreateLink(c.Context, args[0], o, func(p string) {
				fmt.Fprintf(os.Stderr, "kumo: left out of the link: %s (not a file, directory or symlink)\n", p)
			})
			end()
			if err != nil {
				return explain(err, s)
			}
			fmt.Println(u)
			if !o.Expires.IsZero() {
				fmt.Fprintf(os.Stderr, "kumo: the link expires on %s\n", o.Expires.Local().Format(time.DateTime))
			}
			return nil
		},
	}
}

// parseExpiry reads a positive span: 7d, 36h, 90m (parseSpan).
func parseExpiry(v string) (time.Duration, error) {
	d, err := parseSpan(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--expires %q: want a positive duration such as 7d, 12h or 30m", v)
	}
	return d, nil
}

// linkIDArg is the link id of an argument that is an id or a link URL.
func linkIDArg(a string) (string, error) {
	if strings.Contains(a, "://") {
		_, id, _, err := link.ParseURL(a)
		if err != nil {
			return "", err
		}
		return id.String(), nil
	}
	id, err := link.ParseID(a)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// isLinkURL reports whether a get argument is a link address rather than a
// remote path (remote paths start with / or are relative names, never a scheme).
func isLinkURL(a string) bool {
	return strings.HasPrefix(a, "https://") || strings.HasPrefix(a, "http://")
}

// getLink is kumo get URL [DEST]: a link's file or folder, no account needed.
func getLink(c *cli.Context, rawURL, dest string) error {
	base, _, _, err := link.ParseURL(rawURL)
	if err != nil {
		return err
	}
	cl, err := linkClient(c, base)
	if err != nil {
		return err
	}
	ctx, stop := interruptible(c)
	defer stop()
	prog, end := progressBar("link")
	defer end()
	err = pathops.GetLink(ctx, cl, rawURL, dest, pathops.GetLinkOptions{
		Parallel: c.Int("parallel"),
		Progress: prog,
		Password: func() ([]byte, error) {
			return readPassword(c, "link-password-file", linkPasswordEnv, "Link password: ", false)
		},
	})
	return explainPin(c, err) // a certificate other than --fingerprint's: said so
}

// linkClient is a client of a link's server with no account. An https server
// is checked as login checks it (resolvePin): --fingerprint pins its
// certificate (a self-signed one, say), else a pin kept by an earlier login or
// get, else the system CAs, else the fingerprint is asked on a terminal.
func linkClient(c *cli.Context, base string) (*client.Client, error) {
	pin, err := resolvePin(c.Context, base, c.String("fingerprint"), pinsPath(c), terminalPrompt)
	if err != nil {
		return nil, err
	}
	hc := client.NewHTTPClient()
	hc.Transport.(*http.Transport).TLSClientConfig = tlspin.ClientConfig(pin)
	return client.New(client.Options{BaseURL: base, HTTPClient: hc})
}
