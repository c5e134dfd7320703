package main

// kumo admin: the operator's commands. Each works in two modes: --data DIR
// opens the server's data directory directly (the server must be stopped;
// badger's directory lock refuses a second opener), or --server URL with the
// admin token (DATA/admin-token) talks to the running server.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"kumo/internal/payment"
	"kumo/internal/size"
	"kumo/internal/tlspin"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/server"
	"kumo/remote/session"
)

// adminBackend is one of the two ways to administer a server.
type adminBackend interface {
	Accounts(ctx context.Context) ([]api.AdminAccount, error)
	SetQuota(ctx context.Context, email string, limit int64) error
	SetDisabled(ctx context.Context, email string, disabled bool) error
	Vouchers(ctx context.Context, bytes int64, days, count int) ([]string, error)
	Backup(ctx context.Context, w io.Writer) (int64, error)
	Attention(ctx context.Context) ([]api.Invoice, error)
	Close() error
}

func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "data", Usage: "the server's data `DIR` (only while the server is stopped)", EnvVars: []string{"KUMO_DATA"}},
		&cli.StringFlag{Name: "server", Usage: "URL of the running server", EnvVars: []string{"KUMO_SERVER"}},
		&cli.StringFlag{Name: "admin-token-file", Usage: "`FILE` holding the admin token (the server writes DATA/admin-token); else $KUMO_ADMIN_TOKEN"},
		fingerprintFlag(),
		insecureFlag(),
	}
}

func withAdminFlags(cmd *cli.Command) *cli.Command {
	cmd.Flags = append(cmd.Flags, adminFlags()...)
	return cmd
}

// openAdmin returns the backend the flags ask for.
func openAdmin(c *cli.Context) (adminBackend, error) {
	data, srv := c.String("data"), c.String("server")
	switch {
	case data != "" && srv != "":
		return nil, errors.New("give --data DIR (server stopped) or --server URL (server running), not both")
	case data != "":
		return openDataAdmin(data)
	case srv != "":
		return openHTTPAdmin(c, strings.TrimRight(srv, "/"))
	}
	return nil, errors.New("kumo admin needs --data DIR (server stopped) or --server URL --admin-token-file DATA/admin-token (server running)")
}

func readAdminToken(c *cli.Context) (string, error) {
	if f := c.String("admin-token-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("admin token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("admin token file %s is empty", f)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(os.Getenv("KUMO_ADMIN_TOKEN")); tok != "" {
		return tok, nil
	}
	return "", errors.New("--server needs the admin token: --admin-token-file DATA/admin-token (as the server wrote it) or $KUMO_ADMIN_TOKEN")
}

// httpAdmin administers a running server through /v1/admin.
type httpAdmin struct{ cl *client.Client }

func openHTTPAdmin(c *cli.Context, server string) (*httpAdmin, error) {
	tok, err := readAdminToken(c)
	if err != nil {
		return nil, err
	}
	if err := tlspin.RequireTLS(server, c.Bool("insecure")); err != nil {
		return nil, err
	}
	// The operator's pin: --fingerprint, else the pin file, else the system
	// CAs; an operator is never asked to trust on first use.
	pin, err := resolvePin(c.Context, server, c.String("fingerprint"), pinsPath(c), func(string, string) (bool, error) {
		return false, errNoTerminal
	})
	if err != nil {
		return nil, err
	}
	cl, err := session.NewClient(server, pin, c.Bool("insecure"))
	if err != nil {
		return nil, err
	}
	cl.SetAdminToken(tok)
	return &httpAdmin{cl: cl}, nil
}

func (h *httpAdmin) Accounts(ctx context.Context) ([]api.AdminAccount, error) {
	return h.cl.AdminAccounts(ctx)
}
func (h *httpAdmin) SetQuota(ctx context.Context, email string, limit int64) error {
	return h.cl.AdminSetQuota(ctx, email, limit)
}
func (h *httpAdmin) SetDisabled(ctx context.Context, email string, disabled bool) error {
	return h.cl.AdminDisable(ctx, email, disabled)
}
func (h *httpAdmin) Vouchers(ctx context.Context, bytes int64, days, count int) ([]string, error) {
	return h.cl.AdminVouchers(ctx, api.AdminVoucherRequest{Bytes: bytes, Days: days, Count: count})
}
func (h *httpAdmin) Backup(ctx context.Context, w io.Writer) (int64, error) {
	return h.cl.AdminBackup(ctx, w)
}
func (h *httpAdmin) Attention(ctx context.Context) ([]api.Invoice, error) {
	return h.cl.AdminAttention(ctx)
}
func (h *httpAdmin) Close() error { return nil }

// dataAdmin administers a stopped server through its data directory.
type dataAdmin struct {
	dir string
	srv *server.Server
}

func openDataAdmin(dir string) (*dataAdmin, error) {
	if _, err := os.Stat(filepath.Join(dir, "meta")); err != nil {
		return nil, fmt.Errorf("%s is not a kumo data directory (no meta/): %w", dir, err)
	}
	srv, err := server.New(server.Config{
		DataDir: dir,
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		// No GC or payment watching while the operator works: the server does
		// them when it runs.
		NoBackground: true,
	})
	if err != nil {
		if strings.Contains(err.Error(), "lock") {
			return nil, fmt.Errorf("%w\nis the server running? stop it, or use --server URL --admin-token-file %s", err,
				filepath.Join(dir, server.AdminTokenFile))
		}
		return nil, err
	}
	return &dataAdmin{dir: dir, srv: srv}, nil
}

func (d *dataAdmin) Accounts(ctx context.Context) ([]api.AdminAccount, error) {
	return d.srv.AdminAccounts()
}
func (d *dataAdmin) SetQuota(ctx context.Context, email string, limit int64) error {
	return d.srv.SetQuota(email, limit)
}
func (d *dataAdmin) SetDisabled(ctx context.Context, email string, disabled bool) error {
	return d.srv.SetDisabled(email, disabled)
}
func (d *dataAdmin) Vouchers(ctx context.Context, bytes int64, days, count int) ([]string, error) {
	return d.srv.CreateVouchers(bytes, days, count)
}
func (d *dataAdmin) Backup(ctx context.Context, w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	err := d.srv.Backup(cw)
	return cw.n, err
}
func (d *dataAdmin) Attention(ctx context.Context) ([]api.Invoice, error) {
	return d.srv.AttentionInvoices()
}
func (d *dataAdmin) Close() error { return d.srv.Close() }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func adminCommand() *cli.Command {
	return &cli.Command{
		Name:  "admin",
		Usage: "operator commands: accounts, quota, disable, vouchers, backup, restore",
		Description: "Each command works on a stopped server's data directory (--data DIR) or on a\n" +
			"running server (--server URL --admin-token-file DATA/admin-token).",
		Subcommands: []*cli.Command{
			withAdminFlags(&cli.Command{
				Name:  "accounts",
				Usage: "list accounts: e-mail, usage, quota, state",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					return withAdmin(c, func(ctx context.Context, b adminBackend) error {
						accts, err := b.Accounts(ctx)
						if err != nil {
							return err
						}
						if c.Bool("json") {
							if accts == nil {
								accts = []api.AdminAccount{}
							}
							enc := json.NewEncoder(os.Stdout)
							enc.SetIndent("", "  ")
							return enc.Encode(accts)
						}
						tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "EMAIL\tUSED\tQUOTA\tSTATE\tCREATED")
						for _, a := range accts {
							state := "active"
							if a.Disabled {
								state = "disabled"
							}
							created := "-"
							if !a.Created.IsZero() {
								created = a.Created.UTC().Format("2006-01-02")
							}
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Email, size.Format(a.QuotaUsed), size.Format(a.QuotaLimit), state, created)
						}
						return tw.Flush()
					})
				},
			}),
			withAdminFlags(&cli.Command{
				Name:      "quota",
				Usage:     "set an account's base quota (purchases and vouchers come on top)",
				UsageText: "kumo admin quota --email E --limit SIZE (--data DIR | --server URL --admin-token-file F)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "email", Required: true},
					&cli.StringFlag{Name: "limit", Required: true, Usage: "e.g. 50GiB"},
				},
				Action: func(c *cli.Context) error {
					limit, err := size.Parse(c.String("limit"))
					if err != nil {
						return fmt.Errorf("--limit: %w", err)
					}
					return withAdmin(c, func(ctx context.Context, b adminBackend) error {
						if err := b.SetQuota(ctx, c.String("email"), limit); err != nil {
							return err
						}
						fmt.Printf("base quota of %s set to %s\n", c.String("email"), size.Format(limit))
						return nil
					})
				},
			}),
			withAdminFlags(&cli.Command{
				Name:      "disable",
				Usage:     "disable an account (logins and requests refused; nothing deleted), or --enable it again",
				UsageText: "kumo admin disable --email E [--enable] (--data DIR | --server URL --admin-token-file F)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "email", Required: true},
					&cli.BoolFlag{Name: "enable", Usage: "enable the account again"},
				},
				Action: func(c *cli.Context) error {
					return withAdmin(c, func(ctx context.Context, b adminBackend) error {
						dis := !c.Bool("enable")
						if err := b.SetDisabled(ctx, c.String("email"), dis); err != nil {
							return err
						}
						what := "disabled"
						if !dis {
							what = "enabled"
						}
						fmt.Printf("%s %s\n", c.String("email"), what)
						return nil
					})
				},
			}),
			{
				Name:  "voucher",
				Usage: "single-use voucher codes",
				Subcommands: []*cli.Command{withAdminFlags(&cli.Command{
					Name:      "create",
					Usage:     "print N new single-use codes, each worth --quota for --days",
					UsageText: "kumo admin voucher create --quota 50GiB --days 30 [--count N] (--data DIR | --server URL --admin-token-file F)",
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "quota", Required: true, Usage: "quota each code adds, e.g. 50GiB"},
						&cli.IntFlag{Name: "days", Value: 30, Usage: "how long the added quota lasts"},
						&cli.IntFlag{Name: "count", Value: 1, Usage: "how many codes"},
					},
					Action: func(c *cli.Context) error {
						q, err := size.Parse(c.String("quota"))
						if err != nil || q <= 0 {
							return fmt.Errorf("--quota: bad size %q", c.String("quota"))
						}
						if c.Int("days") < 1 || c.Int("count") < 1 {
							return errors.New("--days and --count must be at least 1")
						}
						return withAdmin(c, func(ctx context.Context, b adminBackend) error {
							codes, err := b.Vouchers(ctx, q, c.Int("days"), c.Int("count"))
							if err != nil {
								return err
							}
							for _, code := range codes {
								fmt.Println(code)
							}
							return nil
						})
					},
				})},
			},
			withAdminFlags(&cli.Command{
				Name:  "invoices",
				Usage: "list top-up invoices that need the operator (paid late, or a credited payment lost to a reorg)",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					return withAdmin(c, func(ctx context.Context, b adminBackend) error {
						invs, err := b.Attention(ctx)
						if err != nil {
							return err
						}
						if c.Bool("json") {
							if invs == nil {
								invs = []api.Invoice{}
							}
							enc := json.NewEncoder(os.Stdout)
							enc.SetIndent("", "  ")
							return enc.Encode(invs)
						}
						if len(invs) == 0 {
							fmt.Println("no invoices need attention")
							return nil
						}
						tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "INVOICE\tACCOUNT\tSIZE\tAMOUNT BTC\tPAID BTC\tSTATE\tATTENTION")
						for _, i := range invs {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, i.AccountID, size.Format(i.Bytes), i.AmountBTC,
								payment.FormatBTC(i.PaidSat), i.State, i.Attention)
						}
						return tw.Flush()
					})
				},
			}),
			withAdminFlags(&cli.Command{
				Name:      "backup",
				Usage:     "write a consistent backup of the metadata (accounts, tree, invoices, vouchers); chunks are not in it",
				UsageText: "kumo admin backup [--out] FILE|DIR (--data DIR | --server URL --admin-token-file F)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "backup `FILE`, or a directory to create kumo-meta-TIMESTAMP.backup in (or give it as the argument)"},
				},
				Action: runAdminBackup,
			}),
			{
				Name:      "restore",
				Usage:     "load a backup into a new data directory (server stopped)",
				UsageText: "kumo admin restore --in FILE --data NEWDIR",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "in", Required: true, Usage: "backup `FILE` written by kumo admin backup"},
					&cli.StringFlag{Name: "data", Required: true, Usage: "new, empty data `DIR` of the server"},
				},
				Action: func(c *cli.Context) error {
					f, err := os.Open(c.String("in"))
					if err != nil {
						return err
					}
					defer f.Close()
					if err := server.Restore(c.String("data"), f); err != nil {
						return err
					}
					fmt.Printf("metadata restored into %s\n"+
						"chunks over 64 KiB are not in the backup: copy the old DATA/blobs there (local store) or serve with the same --blob bucket\n",
						c.String("data"))
					return nil
				},
			},
		},
	}
}

func withAdmin(c *cli.Context, f func(ctx context.Context, b adminBackend) error) error {
	b, err := openAdmin(c)
	if err != nil {
		return err
	}
	ctx, stop := interruptible(c)
	defer stop()
	err = f(ctx, b)
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	switch {
	case errors.Is(err, api.ErrUnauthorized):
		return fmt.Errorf("%w\nthe admin token was refused: use the one in the server's DATA/admin-token", err)
	case errors.Is(err, api.ErrNotFound):
		return fmt.Errorf("%w\nno such account: kumo admin accounts lists them", err)
	}
	return err
}

func runAdminBackup(c *cli.Context) error {
	args, err := positional(c)
	if err != nil {
		return err
	}
	out := c.String("out")
	switch {
	case out == "" && len(args) == 1:
		out = args[0]
	case out == "" || len(args) > 0:
		return errors.New("usage: kumo admin backup --out FILE|DIR (--data DIR | --server URL --admin-token-file F)")
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		out = filepath.Join(out, "kumo-meta-"+time.Now().UTC().Format("20060102-150405")+".backup")
	}
	return withAdmin(c, func(ctx context.Context, b adminBackend) error {
		// Written beside the target and renamed at the end: a failed backup
		// never leaves a truncated file under the final name.
		tmp, err := os.CreateTemp(filepath.Dir(out), ".kumo-backup-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		n, err := b.Backup(ctx, tmp)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.Chmod(tmp.Name(), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), out); err != nil {
			return err
		}
		fmt.Printf("backup written to %s (%s)\n", out, size.Format(n))
		return nil
	})
}
