package main

// Shared plumbing of the client-side commands (account.go, files.go): where the
// session lives, how passwords are read, how a client is built, progress bars.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"kumo/internal/size"
	"kumo/internal/tlspin"
	"kumo/remote/api"
	"kumo/remote/client"
	"kumo/remote/pathops"
	"kumo/remote/session"
)

// configFlag is --config DIR (env KUMO_CONFIG_DIR): where session.json lives.
func configFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "config",
		Usage:   "directory of session.json (default $XDG_CONFIG_HOME/kumo or ~/.config/kumo)",
		EnvVars: []string{"KUMO_CONFIG_DIR"},
	}
}

func serverFlag() cli.Flag {
	return &cli.StringFlag{Name: "server", Usage: "server URL, e.g. https://kumo.example.com or http://127.0.0.1:8080", EnvVars: []string{"KUMO_SERVER"}}
}

func emailFlag() cli.Flag {
	return &cli.StringFlag{Name: "email", Usage: "account e-mail", EnvVars: []string{"KUMO_EMAIL"}}
}

func passwordFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "password-file", Usage: "read the password from the first line of `FILE` (else $KUMO_PASSWORD, else a prompt)"}
}

// sessionPath is the session file for the command's --config.
func sessionPath(c *cli.Context) string {
	if d := c.String("config"); d != "" {
		return filepath.Join(d, "session.json")
	}
	return session.DefaultPath()
}

// loadSession returns the saved session, a client using it, and the account's tree.
func loadSession(c *cli.Context) (*session.Session, *client.Client, *pathops.FS, error) {
	s, err := session.Load(sessionPath(c))
	if errors.Is(err, session.ErrNoSession) {
		// No server: the embedded cloud of this machine, in-process.
		s, cl, err := notLoggedIn(c)
		if err != nil {
			return nil, nil, nil, err
		}
		return s, cl, pathops.New(cl, s.Subkeys()), nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if !s.Expires.IsZero() && time.Now().After(s.Expires) {
		return nil, nil, nil, fmt.Errorf("the session expired on %s: run kumo login --server %s --email %s",
			s.Expires.Format(time.DateTime), s.Server, s.Email)
	}
	cl, err := s.Client()
	if err != nil {
		return nil, nil, nil, err
	}
	fsys, err := withOwnedShares(c, s, cl, pathops.New(cl, s.Subkeys())) // share.go
	return s, cl, fsys, err
}

// explain adds what to do next to the errors a user can act on.
func explain(err error, s *session.Session) error {
	var changed *tlspin.ChangedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &changed):
		// Not "is the server running?": it answered, with another certificate.
		return changed
	case errors.Is(err, api.ErrUnauthorized):
		hint := "kumo login --server URL --email E"
		if s != nil {
			hint = fmt.Sprintf("kumo login --server %s --email %s", s.Server, s.Email)
		}
		return fmt.Errorf("%w\nthe session has expired or was ended: run %s", err, hint)
	case errors.Is(err, api.ErrForbidden):
		return fmt.Errorf("%w\nthe account may have been disabled by the server's operator", err)
	case errors.Is(err, api.ErrUnavailable):
		return fmt.Errorf("%w\nis the server running and the URL right?", err)
	case errors.Is(err, api.ErrQuota):
		return fmt.Errorf("%w\nfree space or top up the account", err)
	case errors.Is(err, api.ErrReadOnly):
		return fmt.Errorf("%w\nthe plan expired while over quota: top up or delete files", err)
	case errors.Is(err, api.ErrStaleGeneration):
		// The CLI seals with the keys it loaded at its start; a mounted
		// drive seals such a write again by itself (fs/sharegen.go).
		return fmt.Errorf("%w\nthe shared folder moved to a new key generation (a member was removed) while this command ran: run the command again, it loads the new keys", err)
	}
	return err
}

// readPassword returns the password from --<fileFlag>, else $<envVar>, else a
// prompt on the terminal (twice when confirm is set).
func readPassword(c *cli.Context, fileFlag, envVar, prompt string, confirm bool) ([]byte, error) {
	if f := c.String(fileFlag); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[:i]
		}
		b = bytes.TrimSuffix(b, []byte("\r"))
		if len(b) == 0 {
			return nil, fmt.Errorf("password file %s is empty", f)
		}
		return b, nil
	}
	if v, ok := os.LookupEnv(envVar); ok {
		if v == "" {
			return nil, fmt.Errorf("$%s is set but empty", envVar)
		}
		return []byte(v), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, fmt.Errorf("no password: use --%s FILE or set %s (stdin is not a terminal)", fileFlag, envVar)
	}
	ask := func(p string) ([]byte, error) {
		fmt.Fprint(os.Stderr, p)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		return b, nil
	}
	pw, err := ask(prompt)
	if err != nil {
		return nil, err
	}
	if len(pw) == 0 {
		return nil, errors.New("empty password")
	}
	if confirm {
		again, err := ask("Repeat " + strings.ToLower(prompt[:1]) + prompt[1:])
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(pw, again) {
			return nil, errors.New("the passwords do not match")
		}
	}
	return pw, nil
}

// progressBarMin is the smallest transfer that gets a progress bar.
const progressBarMin = 8 << 20

// progressBar returns a Progress drawing a bar on stderr for transfers of at
// least progressBarMin bytes when stderr is a terminal, and a func to end the
// bar's line; nil Progress otherwise.
func progressBar(label string) (pathops.Progress, func()) {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil, func() {}
	}
	return newBar(os.Stderr, label)
}

// newBar draws on w; split out so the drawing can be tested without a terminal.
func newBar(w io.Writer, label string) (pathops.Progress, func()) {
	var mu sync.Mutex
	start := time.Now()
	var last time.Time
	var lastDone int64
	drawn := false
	draw := func(done, total int64) {
		const width = 30
		fill := width
		pct := 100.0
		if total > 0 {
			fill = int(done * width / total)
			pct = float64(done) * 100 / float64(total)
		}
		rate := float64(done) / max(time.Since(start).Seconds(), 0.001)
		fmt.Fprintf(w, "\r%-24.24s %5.1f%% [%s%s] %s / %s  %s/s ", label, pct,
			strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
			size.Format(done), size.Format(total), size.Format(int64(rate)))
		drawn = true
	}
	prog := func(done, total int64) {
		if total < progressBarMin {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if done < lastDone { // the next file of a tree
			start = now
		}
		lastDone = done
		if now.Sub(last) >= 100*time.Millisecond || done == total {
			last = now
			draw(done, total)
		}
		if done == total {
			fmt.Fprintln(w)
			drawn = false
			lastDone = 0
		}
	}
	end := func() {
		mu.Lock()
		defer mu.Unlock()
		if drawn {
			fmt.Fprintln(w)
		}
	}
	return prog, end
}

// interruptible returns the command's context, cancelled by SIGINT/SIGTERM so
// transfers stop cleanly and remove their temporary files.
// withFiles runs do on the account's files (the session's cloud, or this
// machine's embedded cloud) under a context Ctrl-C cancels, and explains
// what the cloud answered.
func withFiles(c *cli.Context, do func(ctx context.Context, fsys *pathops.FS) error) error {
	s, _, fsys, err := loadSession(c)
	if err != nil {
		return err
	}
	ctx, stop := interruptible(c)
	defer stop()
	return explain(do(ctx, fsys), s)
}

func interruptible(c *cli.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
}

// positional returns the command's positional arguments, applying flags that
// follow them ("kumo topup 1GiB --months 3"): urfave/cli v2 stops parsing
// flags at the first positional argument.
func positional(c *cli.Context) ([]string, error) {
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := lookupFlag(c.Command.Flags, name)
		if f == nil {
			return nil, fmt.Errorf("unknown flag %s", a)
		}
		if _, isBool := f.(*cli.BoolFlag); isBool {
			if !hasVal {
				val = "true"
			}
		} else if !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("flag %s needs a value", a)
			}
			i++
			val = args[i]
		}
		if err := c.Set(f.Names()[0], val); err != nil {
			return nil, fmt.Errorf("flag %s: %w", a, err)
		}
	}
	return pos, nil
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}
