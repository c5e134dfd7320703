package main

// Client-side transport security of signup and login: --fingerprint pins the
// server's certificate, otherwise a certificate no CA vouches for is trusted on
// first use after the user compares its fingerprint. The pin goes into the
// session (every later command and the drive refuse another certificate) and
// into a pin file next to it, so a later login to the same server does not ask
// again and refuses a changed certificate.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"kumo/internal/tlspin"
	"kumo/remote/client"
	"kumo/remote/session"
)

func fingerprintFlag() cli.Flag {
	return &cli.StringFlag{Name: "fingerprint", Usage: "pin the server's TLS certificate by its SHA-256 `HEX` fingerprint (as kumo serve prints it)", EnvVars: []string{"KUMO_FINGERPRINT"}}
}

func insecureFlag() cli.Flag {
	return &cli.BoolFlag{Name: "insecure", Usage: "allow plain http to a server that is not on loopback (everything, session token included, crosses the network in clear)"}
}

// pinsPath is the pin file next to the session file.
func pinsPath(c *cli.Context) string {
	return filepath.Join(filepath.Dir(sessionPath(c)), "pins")
}

// connectNew returns a client for signup/login of server and the certificate
// pin the session must keep ("" for plain http and CA-verified certificates).
func connectNew(c *cli.Context, server string) (*client.Client, string, error) {
	insecure := c.Bool("insecure")
	if err := tlspin.RequireTLS(server, insecure); err != nil {
		return nil, "", err
	}
	pin, err := resolvePin(c.Context, server, c.String("fingerprint"), pinsPath(c), terminalPrompt)
	if err != nil {
		return nil, "", err
	}
	cl, err := session.NewClient(server, pin, insecure)
	return cl, pin, err
}

// rememberPin stores the pin of a server after a successful signup or login,
// so a later login without --fingerprint keeps refusing other certificates.
func rememberPin(c *cli.Context, server, pin string) error {
	if pin == "" {
		return nil
	}
	hp, err := tlspin.HostPort(server)
	if err != nil {
		return err
	}
	return tlspin.SavePin(pinsPath(c), hp, pin)
}

// explainPin explains a failed signup or login: a certificate that does not
// match the --fingerprint the user just gave is a mismatch, not a change.
func explainPin(c *cli.Context, err error) error {
	var ce *tlspin.ChangedError
	if c.String("fingerprint") != "" && errors.As(err, &ce) {
		return fmt.Errorf("the server's certificate %s does not match --fingerprint %s: check the fingerprint with the server's operator; nothing was sent",
			ce.Got, ce.Pinned)
	}
	return explain(err, nil)
}

// promptFunc asks the user whether to trust fingerprint of hostPort; ok is
// false with an error when nobody can be asked.
type promptFunc func(hostPort, fingerprint string) (bool, error)

// errNoTerminal is what terminalPrompt answers when stdin is not a terminal.
var errNoTerminal = errors.New("no terminal to ask on")

func terminalPrompt(hostPort, fp string) (bool, error) {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return false, errNoTerminal
	}
	return askTrust(os.Stdin, os.Stderr, hostPort, fp), nil
}

// askTrust shows tlspin's question on out and reads the answer from in: only
// "y" or "yes" trusts.
func askTrust(in io.Reader, out io.Writer, hostPort, fp string) bool {
	fmt.Fprint(out, tlspin.PromptText(hostPort, fp))
	line, _ := bufio.NewReader(in).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}

// resolvePin decides the pin of an https server: the --fingerprint given
// (stored in the pin file), else a pin stored earlier, else none when the
// certificate verifies against the system CAs, else the user's answer to the
// trust-on-first-use question. Plain http has no pin.
func resolvePin(ctx context.Context, server, flagFP, pinFile string, prompt promptFunc) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("bad server URL %q: %w", server, err)
	}
	if u.Scheme != "https" {
		if flagFP != "" {
			return "", fmt.Errorf("--fingerprint pins a TLS certificate: it needs an https:// server, not %s", server)
		}
		return "", nil
	}
	hp, err := tlspin.HostPort(server)
	if err != nil {
		return "", err
	}
	if flagFP != "" {
		fp, err := tlspin.NormalizeFingerprint(flagFP)
		if err != nil {
			return "", fmt.Errorf("--fingerprint: %w", err)
		}
		// Used from the first request on: a wrong fingerprint fails the
		// handshake and nothing is sent. rememberPin stores it once it worked.
		return fp, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var askErr error
	pin, err := tlspin.TOFU(ctx, pinFile, server, func(fp string) bool {
		ok, err := prompt(hp, fp)
		askErr = err
		return ok
	})
	switch {
	case err == nil:
		return pin, nil
	case errors.Is(err, tlspin.ErrNotTrusted) && askErr != nil:
		return "", fmt.Errorf("the certificate of %s is not signed by a known authority and there is no terminal to ask whether to trust it (%w); "+
			"get its SHA-256 fingerprint from the server's operator (kumo serve prints it) and pass --fingerprint HEX", hp, err)
	case errors.Is(err, tlspin.ErrNotTrusted):
		return "", fmt.Errorf("%w; nothing was sent to the server", err)
	}
	return "", err
}
