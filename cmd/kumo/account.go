package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"kumo/internal/keys"
	"kumo/internal/size"
	"kumo/remote/api"
	"kumo/remote/session"
)

func signupCommand() *cli.Command {
	return &cli.Command{
		Name:      "signup",
		Usage:     "create an account on a kumo server and log in",
		UsageText: "kumo signup --server URL --email E [--voucher CODE] [--password-file F] [--fingerprint HEX] [--insecure]",
		Flags: []cli.Flag{serverFlag(), emailFlag(), passwordFileFlag(), fingerprintFlag(), insecureFlag(), configFlag(),
			&cli.StringFlag{Name: "voucher", Usage: "invitation voucher `CODE`, spent on the new account (servers run with --signup voucher need one)", EnvVars: []string{"KUMO_VOUCHER"}}},
		Action: func(c *cli.Context) error {
			server, email, err := serverAndEmail(c, "signup")
			if err != nil {
				return err
			}
			cl, pin, err := connectNew(c, server)
			if err != nil {
				return explain(err, nil)
			}
			pw, err := readPassword(c, "password-file", "KUMO_PASSWORD", "New password: ", true)
			if err != nil {
				return err
			}
			cl.SetSignupVoucher(c.String("voucher"))
			s, err := session.Signup(c.Context, cl, server, email, pw, keys.DefaultKDF())
			if err != nil {
				return explainPin(c, err)
			}
			s.Fingerprint, s.Insecure = pin, c.Bool("insecure")
			if err := rememberPin(c, server, pin); err != nil {
				return err
			}
			// A later login refuses weaker parameters than these.
			if err := kdfOptions(c).Remember(s.Server, s.Email, keys.DefaultKDF()); err != nil {
				return err
			}
			return saveAndGreet(c, s, "signed up")
		},
	}
}

func loginCommand() *cli.Command {
	return &cli.Command{
		Name:      "login",
		Usage:     "log in to a kumo account (keys are derived from the password on this machine)",
		UsageText: "kumo login --server URL --email E [--password-file F] [--fingerprint HEX] [--insecure]",
		Flags:     []cli.Flag{serverFlag(), emailFlag(), passwordFileFlag(), fingerprintFlag(), insecureFlag(), configFlag()},
		Action: func(c *cli.Context) error {
			server, email, err := serverAndEmail(c, "login")
			if err != nil {
				return err
			}
			cl, pin, err := connectNew(c, server)
			if err != nil {
				return explain(err, nil)
			}
			pw, err := readPassword(c, "password-file", "KUMO_PASSWORD", "Password: ", false)
			if err != nil {
				return err
			}
			s, err := session.LoginWith(c.Context, cl, server, email, pw, kdfOptions(c))
			if err != nil {
				return explainPin(c, err)
			}
			s.Fingerprint, s.Insecure = pin, c.Bool("insecure")
			if err := rememberPin(c, server, pin); err != nil {
				return err
			}
			return saveAndGreet(c, s, "logged in")
		},
	}
}

func logoutCommand() *cli.Command {
	return &cli.Command{
		Name:  "logout",
		Usage: "end the session on the server and forget it on this machine",
		Flags: []cli.Flag{configFlag()},
		Action: func(c *cli.Context) error {
			path := sessionPath(c)
			s, err := session.Load(path)
			if errors.Is(err, session.ErrNoSession) {
				return errors.New("not logged in")
			}
			if err != nil {
				return err
			}
			// Forget the session locally even if the server cannot be told
			// (expired session, server gone).
			cl, serr := s.Client()
			if serr == nil {
				serr = cl.Logout(c.Context)
			}
			if err := session.Remove(path); err != nil {
				return err
			}
			if serr != nil && !errors.Is(serr, api.ErrUnauthorized) {
				fmt.Fprintf(os.Stderr, "kumo: logged out locally, but the server was not told (%v)\n", serr)
				return nil
			}
			fmt.Printf("logged out of %s on %s\n", s.Email, s.Server)
			return nil
		},
	}
}

func passwdCommand() *cli.Command {
	return &cli.Command{
		Name:      "passwd",
		Usage:     "change the account password (other sessions are ended; files stay readable)",
		UsageText: "kumo passwd [--password-file OLD] [--new-password-file NEW]",
		Flags: []cli.Flag{
			passwordFileFlag(),
			&cli.StringFlag{Name: "new-password-file", Usage: "read the new password from the first line of `FILE` (else $KUMO_NEW_PASSWORD, else a prompt)"},
			configFlag(),
		},
		Action: func(c *cli.Context) error {
			s, cl, _, err := loadSession(c)
			if err != nil {
				return err
			}
			old, err := readPassword(c, "password-file", "KUMO_PASSWORD", "Current password: ", false)
			if err != nil {
				return err
			}
			nw, err := readPassword(c, "new-password-file", "KUMO_NEW_PASSWORD", "New password: ", true)
			if err != nil {
				return err
			}
			if err := session.ChangePassword(c.Context, cl, s, old, nw, kdfOptions(c)); err != nil {
				return explain(err, s)
			}
			fmt.Printf("password of %s changed; other sessions were ended\n", s.Email)
			return nil
		},
	}
}

func serverAndEmail(c *cli.Context, cmd string) (server, email string, err error) {
	server = strings.TrimRight(c.String("server"), "/")
	email = c.String("email")
	if server == "" || email == "" {
		return "", "", fmt.Errorf("%s needs --server URL and --email E (or $KUMO_SERVER and $KUMO_EMAIL)", cmd)
	}
	return server, email, nil
}

func saveAndGreet(c *cli.Context, s *session.Session, what string) error {
	path := sessionPath(c)
	if err := s.Save(path); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s as %s on %s", what, s.Email, s.Server)
	cl, err := s.Client()
	if err == nil {
		if a, err := cl.Account(c.Context); err == nil {
			msg += fmt.Sprintf(" (%s of %s used)", size.Format(a.QuotaUsed), size.Format(a.QuotaLimit))
		}
	}
	fmt.Println(msg)
	return nil
}

// kdfOptions are the client's password-hashing rules: the default floor, and
// the accounts' parameters remembered in known_accounts.json next to the session.
func kdfOptions(c *cli.Context) session.Options {
	return session.Options{Known: session.KnownPath(sessionPath(c))}
}
