package main

// kumo status, kumo topup and kumo redeem: the account's quota and its
// Bitcoin top-ups, from a mounted drive's control file or from the API.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"kumo/internal/control"
	"kumo/internal/payment"
	"kumo/internal/size"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/session"
)

// defaultMountpoint is where kumo mount mounts when given no mountpoint.
func defaultMountpoint() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, "Kumo")
}

func statusCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "status",
		Usage:     "show quota, plan, top-up invoices (and, for a mounted drive, cache, uploads and connection)",
		UsageText: "kumo status [MOUNTPOINT] [--json]\n\nWith a mounted drive (MOUNTPOINT, default ~/Kumo) it prints the drive's .kumo report;\nwithout one it asks the server of the saved session.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the .kumo.json schema instead of the text report"},
			configFlag(),
			cloudDirFlag(),
		},
		Action: runStatus,
	})
}

func runStatus(c *cli.Context) error {
	args, err := positional(c)
	if err != nil {
		return err
	}
	if len(args) > 1 {
		return errors.New("usage: kumo status [MOUNTPOINT] [--json]")
	}
	name := control.FileText
	if c.Bool("json") {
		name = control.FileJSON
	}
	mnt, explicit := "", len(args) == 1
	if explicit {
		mnt = args[0]
	}
	if !explicit {
		mnt = defaultMountpoint()
	}
	if mnt != "" {
		b, err := os.ReadFile(filepath.Join(mnt, name))
		if err == nil {
			_, err = os.Stdout.Write(b)
			return err
		}
		if explicit {
			return fmt.Errorf("%s is not a mounted kumo drive (no %s: %w)", mnt, name, err)
		}
	}
	s, cl, _, err := loadSession(c)
	if err != nil {
		return err
	}
	st, err := apiStatus(c.Context, s, cl)
	if err != nil {
		return explain(err, s)
	}
	if c.Bool("json") {
		_, err = os.Stdout.Write(control.JSON(st))
	} else {
		_, err = os.Stdout.Write(control.Text(st))
	}
	return err
}

// apiStatus builds the report from the server alone: no drive, so cache and
// upload queue are empty and the connection is what this call saw.
func apiStatus(ctx context.Context, s *session.Session, cl *client.Client) (control.Status, error) {
	// Invoices before the account: the server credits the quota before it
	// shows an invoice Settled, so a Settled invoice here always comes with
	// its quota (the other order could show it beside the old quota).
	invs, err := cl.Invoices(ctx)
	switch {
	case errors.Is(err, api.ErrPaymentsOff) || errors.Is(err, api.ErrNotFound):
		// A server without Bitcoin payments has no invoices to show.
	case err != nil:
		return control.Status{}, err
	}
	a, err := cl.Account(ctx)
	if err != nil {
		return control.Status{}, err
	}
	server := s.Server
	if cl.InProcess() {
		server = "embedded"
	}
	st := control.Status{
		Account:    a.Email,
		Server:     server,
		Quota:      control.Quota{Used: a.QuotaUsed, Limit: a.QuotaLimit, PlanExpires: control.At(a.PlanExpires), ReadOnly: a.ReadOnly},
		Connection: control.Connection{State: "online"},
		History: control.History{Used: a.HistoryUsed, RetentionDays: a.HistoryRetention.D().Hours() / 24,
			From: control.At(a.HistoryFrom), Freed: control.At(a.HistoryFreed)},
	}
	for _, inv := range invs {
		st.Invoices = append(st.Invoices, controlInvoice(inv))
	}
	return st, nil
}

func controlInvoice(inv api.Invoice) control.Invoice {
	ci := control.Invoice{
		ID: inv.ID, Bytes: inv.Bytes, Months: inv.Months, AmountBTC: inv.AmountBTC,
		Address: inv.Address, URI: inv.URI, State: inv.State, Flags: inv.Flags,
		Confirmations: inv.Confirmations, Required: inv.Required, Expires: inv.Expires,
	}
	if inv.PaidSat > 0 {
		ci.PaidBTC = payment.FormatBTC(inv.PaidSat)
	}
	return ci
}

func topupCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "topup",
		Usage:     "buy quota with Bitcoin: prints an invoice (amount, address, BIP21 URI, QR code) and follows it until it settles",
		UsageText: "kumo topup SIZE [--months N] [--no-wait]   e.g. kumo topup 100GiB --months 3",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "months", Value: 1, Usage: fmt.Sprintf("how long the extra quota lasts (1..%d)", control.MaxTopupMonths)},
			&cli.BoolFlag{Name: "no-wait", Usage: "print the invoice and return; kumo status shows its state later"},
			&cli.BoolFlag{Name: "no-qr", Usage: "do not draw the QR code"},
			&cli.DurationFlag{Name: "interval", Value: 5 * time.Second, Usage: "how often to check the invoice's state"},
			configFlag(),
			cloudDirFlag(),
		},
		Action: runTopup,
	})
}

func runTopup(c *cli.Context) error {
	args, err := positional(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return errors.New("usage: kumo topup SIZE [--months N], e.g. kumo topup 100GiB")
	}
	n, err := size.Parse(args[0])
	if err != nil || n <= 0 {
		return fmt.Errorf("topup: bad size %q (e.g. 100GiB)", args[0])
	}
	months := c.Int("months")
	if months < 1 || months > control.MaxTopupMonths {
		return fmt.Errorf("topup: --months must be 1..%d", control.MaxTopupMonths)
	}
	s, cl, _, err := loadSession(c)
	if err != nil {
		return err
	}
	inv, err := cl.Topup(c.Context, api.TopupRequest{Bytes: n, Months: months})
	if err != nil {
		if errors.Is(err, api.ErrPaymentsOff) {
			if cl.InProcess() {
				return errors.New(control.EmbeddedTopupHelp(embeddedDirOf(c), ""))
			}
			return fmt.Errorf("this server does not take Bitcoin: ask its operator for a voucher, then kumo redeem CODE (%v)", err)
		}
		return explain(err, s)
	}
	fmt.Printf("invoice %s: %s for %d month(s)\n", inv.ID, size.Format(inv.Bytes), inv.Months)
	fmt.Printf("  amount   %s BTC (%d sat)\n", inv.AmountBTC, inv.AmountSat)
	fmt.Printf("  address  %s\n", inv.Address)
	fmt.Printf("  pay      %s\n", inv.URI)
	fmt.Printf("  expires  %s (%s from now)\n", inv.Expires.Local().Format(time.DateTime), time.Until(inv.Expires).Round(time.Minute))
	fmt.Printf("  settles after %d confirmation(s)\n", inv.Required)
	if !c.Bool("no-qr") {
		qr, err := control.QRTerminal(inv.URI)
		if err != nil {
			return fmt.Errorf("topup: QR code: %w", err)
		}
		fmt.Printf("\nscan with a wallet:\n%s\n", qr)
	}
	if c.Bool("no-wait") {
		fmt.Println("not waiting: kumo status shows the invoice's state")
		return nil
	}
	ctx, stop := interruptible(c)
	defer stop()
	return followInvoice(ctx, cl, s, inv, c.Duration("interval"))
}

// followInvoice prints the invoice's progress until it ends or ctx is cancelled.
func followInvoice(ctx context.Context, cl *client.Client, s *session.Session, inv api.Invoice, every time.Duration) error {
	fmt.Println("waiting for payment (Ctrl-C stops waiting; the invoice stays valid until it expires)")
	last := ""
	for {
		line := fmt.Sprintf("%s: paid %s of %s BTC, %d/%d confirmations", inv.State, payment.FormatBTC(inv.PaidSat), inv.AmountBTC, inv.Confirmations, inv.Required)
		if len(inv.Flags) > 0 {
			line += " [" + strings.Join(inv.Flags, ", ") + "]"
		}
		if line != last {
			fmt.Printf("%s  %s\n", time.Now().Format(time.TimeOnly), line)
			last = line
		}
		switch inv.State {
		case api.InvoiceSettled:
			if a, err := cl.Account(ctx); err == nil {
				fmt.Printf("settled: quota now %s of %s\n", size.Format(a.QuotaUsed), size.Format(a.QuotaLimit))
			} else {
				fmt.Println("settled")
			}
			return nil
		case api.InvoiceExpired:
			return fmt.Errorf("invoice %s expired unpaid; a payment sent now is flagged as late for the operator", inv.ID)
		case api.InvoiceInvalid:
			return fmt.Errorf("invoice %s is invalid (paid too late or too little); contact the operator with its id", inv.ID)
		}
		select {
		case <-ctx.Done():
			fmt.Printf("\nstopped waiting; invoice %s stays open until %s (kumo status shows it)\n", inv.ID, inv.Expires.Local().Format(time.DateTime))
			return nil
		case <-time.After(every):
		}
		invs, err := cl.Invoices(ctx)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported at the top of the next round
			}
			fmt.Fprintf(os.Stderr, "kumo: checking the invoice: %v (will retry)\n", explain(err, s))
			continue
		}
		found := false
		for _, i := range invs {
			if i.ID == inv.ID {
				inv, found = i, true
				break
			}
		}
		if !found {
			return fmt.Errorf("invoice %s is no longer listed by the server", inv.ID)
		}
	}
}

func redeemCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "redeem",
		Usage:     "add quota with a single-use voucher code",
		UsageText: "kumo redeem CODE",
		Flags:     []cli.Flag{configFlag(), cloudDirFlag()},
		Action: func(c *cli.Context) error {
			args, err := positional(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return errors.New("usage: kumo redeem CODE")
			}
			s, cl, _, err := loadSession(c)
			if err != nil {
				return err
			}
			r, err := cl.Redeem(c.Context, args[0])
			switch {
			case errors.Is(err, api.ErrUsedVoucher):
				return fmt.Errorf("this voucher was already redeemed; nothing changed (%w)", err)
			case errors.Is(err, api.ErrBadVoucher):
				return fmt.Errorf("no such voucher: check the code for typos; nothing changed (%w)", err)
			case err != nil:
				return explain(err, s)
			}
			fmt.Printf("redeemed: +%s for %d days; quota now %s of %s\n", size.Format(r.Bytes), r.Days,
				size.Format(r.Account.QuotaUsed), size.Format(r.Account.QuotaLimit))
			return nil
		},
	})
}
