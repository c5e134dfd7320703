package main

// kumo whoami, kumo recovery-key and kumo recover: the account's identity keys
// and its recovery key (format v2).

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"kumo/internal/keys"
	"kumo/remote/session"
)

func whoamiCommand() *cli.Command {
	return &cli.Command{
		Name:  "whoami",
		Usage: "show the account, its server and the fingerprint of its identity keys (checked against what the server publishes)",
		UsageText: "kumo whoami [EMAIL]\n\nWithout EMAIL: this account (its identity keys are made and published if it has none yet).\n" +
			"With EMAIL: the fingerprint the server publishes for that account, to compare with what its owner's whoami prints.",
		Flags: []cli.Flag{configFlag()},
		Action: func(c *cli.Context) error {
			args, err := positional(c)
			if err != nil {
				return err
			}
			if len(args) > 1 {
				return errors.New("usage: kumo whoami [EMAIL]")
			}
			s, cl, _, err := loadSession(c)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				_, fp, err := session.PeerKeys(c.Context, cl, args[0])
				if err != nil {
					return explain(err, s)
				}
				fmt.Printf("email:    %s\nidentity: %s\n", session.NormalizeEmail(args[0]), fp)
				return nil
			}
			_, created, err := session.EnsureIdentity(c.Context, cl, s)
			switch {
			case errors.Is(err, session.ErrIdentityUnsupported):
				fmt.Printf("email:    %s\nserver:   %s\nidentity: none (the server does not support identity keys)\n", s.Email, s.Server)
				return nil
			case err != nil:
				return explain(err, s)
			}
			if err := s.Save(sessionPath(c)); err != nil {
				return err
			}
			if created {
				fmt.Fprintln(os.Stderr, "kumo: this account had no identity keys yet: made and published them")
			}
			fmt.Printf("email:    %s\nserver:   %s\nidentity: %s\n", s.Email, s.Server, s.Identity)
			return nil
		},
	}
}

func recoveryKeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "recovery-key",
		Usage: "make a recovery key (shown once) that can set a new password if this one is forgotten",
		UsageText: "kumo recovery-key [--password-file F]\n\nThe key replaces any earlier recovery key of the account. Write it down and keep it offline:\n" +
			"whoever has it (and the e-mail) can set a new password and read every file.",
		Flags: []cli.Flag{passwordFileFlag(), configFlag()},
		Action: func(c *cli.Context) error {
			s, cl, _, err := loadSession(c)
			if err != nil {
				return err
			}
			pw, err := readPassword(c, "password-file", "KUMO_PASSWORD", "Current password: ", false)
			if err != nil {
				return err
			}
			rk, err := session.SetRecoveryKey(c.Context, cl, s, pw, kdfOptions(c))
			if err != nil {
				return explain(err, s)
			}
			fmt.Printf("Recovery key of %s (shown only this once; write it down and keep it offline):\n\n    %s\n\n", s.Email, rk)
			fmt.Printf("If the password is forgotten: kumo recover --server %s --email %s\n", s.Server, s.Email)
			fmt.Println("It replaces any recovery key made before, and stays valid until the next kumo recovery-key.")
			return nil
		},
	}
}

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "recover",
		Usage: "set a new password with the recovery key (no old password needed; other sessions are ended) and log in",
		UsageText: "kumo recover --server URL --email E [--recovery-key-file F] [--new-password-file F] [--fingerprint HEX] [--insecure]\n\n" +
			"The recovery key is read from --recovery-key-file, else $KUMO_RECOVERY_KEY, else the terminal.",
		Flags: []cli.Flag{
			serverFlag(), emailFlag(),
			&cli.StringFlag{Name: "recovery-key-file", Usage: "read the recovery key from `FILE` (else $KUMO_RECOVERY_KEY, else a prompt)"},
			&cli.StringFlag{Name: "new-password-file", Usage: "read the new password from the first line of `FILE` (else $KUMO_NEW_PASSWORD, else a prompt)"},
			fingerprintFlag(), insecureFlag(), configFlag(),
		},
		Action: func(c *cli.Context) error {
			server, email, err := serverAndEmail(c, "recover")
			if err != nil {
				return err
			}
			// A typo is caught here, before anything is sent.
			rk, err := readRecoveryKey(c)
			if err != nil {
				return err
			}
			cl, pin, err := connectNew(c, server)
			if err != nil {
				return explain(err, nil)
			}
			pw, err := readPassword(c, "new-password-file", "KUMO_NEW_PASSWORD", "New password: ", true)
			if err != nil {
				return err
			}
			s, err := session.Recover(c.Context, cl, server, email, rk, pw, kdfOptions(c))
			if err != nil {
				return explainPin(c, err)
			}
			s.Fingerprint, s.Insecure = pin, c.Bool("insecure")
			if err := rememberPin(c, server, pin); err != nil {
				return err
			}
			return saveAndGreet(c, s, "new password set with the recovery key (other sessions were ended); logged in")
		},
	}
}

// readRecoveryKey reads and checks the recovery key: --recovery-key-file,
// else $KUMO_RECOVERY_KEY, else a line typed on the terminal.
func readRecoveryKey(c *cli.Context) (keys.RecoveryKey, error) {
	var text string
	if f := c.String("recovery-key-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return keys.RecoveryKey{}, fmt.Errorf("read recovery key: %w", err)
		}
		text = string(b)
	} else if v, ok := os.LookupEnv("KUMO_RECOVERY_KEY"); ok {
		text = v
	} else {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return keys.RecoveryKey{}, errors.New("no recovery key: use --recovery-key-file FILE or set KUMO_RECOVERY_KEY (stdin is not a terminal)")
		}
		fmt.Fprint(os.Stderr, "Recovery key: ")
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil {
			return keys.RecoveryKey{}, fmt.Errorf("read recovery key: %w", err)
		}
		text = line
	}
	rk, err := keys.ParseRecoveryKey(strings.TrimSpace(text))
	if err != nil {
		return keys.RecoveryKey{}, fmt.Errorf("%w (nothing was sent to the server)", err)
	}
	return rk, nil
}
