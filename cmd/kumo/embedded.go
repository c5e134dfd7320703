package main

// The embedded cloud: the cloud run in-process over a directory on this
// machine, with one account. Its keys live in the config dir, never next to
// its data: the cloud dir holds only sealed data and an id naming it.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"kumo/internal/atomicfile"
	"kumo/internal/keys"
	"kumo/remote/client"
	"kumo/remote/server"
	"kumo/remote/session"
)

const (
	embeddedEmail = "local@kumo.localhost"
	// embeddedIDFile names a cloud dir (not a secret): its keys are in
	// CONFIG/embedded/ID, so a cloud dir moved or restored from a backup
	// finds them.
	embeddedIDFile = "embedded-id"
	// inUseFile says which mount holds a cloud or cache dir, for the
	// message a second mount gets.
	inUseFile = "kumo-mount.json"
	// embeddedSessionTTL: the in-process cloud's sessions last as long as
	// its saved session, which the config dir guards.
	embeddedSessionTTL = 10 * 365 * 24 * time.Hour
)

// embeddedReserve is the room kept free on the disk under the embedded
// cloud: 5 % of the disk, at least 64 MiB (the cloud's metadata store maps
// files that grow by tens of MiB) and at most 1 GiB.
func embeddedReserve(disk int64) int64 {
	return min(max(disk/20, 64<<20), 1<<30)
}

// embeddedKeys are where an embedded cloud's account secrets live.
type embeddedKeys struct {
	dir      string // CONFIG/embedded/ID, 0700
	password string // the random password, when no password of the user's protects it
	session  string // the saved session (token and master key)
}

func configDir(c *cli.Context) string { return filepath.Dir(sessionPath(c)) }

// embeddedKeysFor names (and creates) the key directory of the cloud in
// cloudDir, moving the password and session an older kumo kept in the
// cloud dir itself.
func embeddedKeysFor(configDir, cloudDir string, log *slog.Logger) (embeddedKeys, error) {
	idPath := filepath.Join(cloudDir, embeddedIDFile)
	b, err := os.ReadFile(idPath)
	id := strings.TrimSpace(string(b))
	if errors.Is(err, os.ErrNotExist) {
		r := make([]byte, 16)
		rand.Read(r)
		id = hex.EncodeToString(r)
		err = atomicfile.Write(idPath, []byte(id+"\n"), 0o600)
	}
	if err != nil {
		return embeddedKeys{}, fmt.Errorf("embedded cloud id: %w", err)
	}
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return embeddedKeys{}, fmt.Errorf("embedded cloud id in %s is damaged (%q): restore it from a backup of the cloud dir", idPath, id)
	}
	k := embeddedKeys{dir: filepath.Join(configDir, "embedded", id)}
	k.password = filepath.Join(k.dir, "password")
	k.session = filepath.Join(k.dir, "session.json")
	for _, d := range []string{configDir, filepath.Dir(k.dir), k.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return k, fmt.Errorf("config dir: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return k, fmt.Errorf("config dir: %w", err)
		}
	}
	for old, now := range map[string]string{
		filepath.Join(cloudDir, "local-password"):     k.password,
		filepath.Join(cloudDir, "local-session.json"): k.session,
	} {
		moved, err := moveSecret(old, now)
		if err != nil {
			return k, fmt.Errorf("moving the embedded cloud's keys out of %s: %w", cloudDir, err)
		}
		if moved {
			log.Info("moved the embedded cloud's key out of its data directory into the config dir", "from", old, "to", now)
		}
	}
	return k, nil
}

// moveSecret moves the file old to now (0600), unless now exists already,
// in which case old is a stale copy and only removed.
func moveSecret(old, now string) (bool, error) {
	b, err := os.ReadFile(old)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(now); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.Write(now, b, 0o600); err != nil {
			return false, err
		}
	}
	return true, os.Remove(old)
}

// embedded is an open embedded cloud and its logged-in account.
type embedded struct {
	dir   string
	sess  *session.Session
	cl    *client.Client
	srv   *server.Server
	close func()
}

// errEmbeddedNeedsPassword: the account is protected by the user's password
// and no valid session is saved.
var errEmbeddedNeedsPassword = errors.New("the embedded cloud's account is protected by a password: give it with $KUMO_PASSWORD or --password-file")

// openEmbedded runs the cloud over dir in-process and logs in to its
// account, creating it on first use. password, when given, logs in without
// a saved session and, with protect (kumo mount), protects the account: a
// new one is made with it, and one protected by a stored random password is
// switched to it (the stored one is deleted). Without it, a new account gets
// a random password kept in the config dir.
//
// The embedded cloud keeps chunks of files up to 16 KiB in its metadata
// store (the server's default is 64 KiB): badger maps its value log, so
// every small chunk written stays in the daemon's RSS as a file page until
// the process ends. Files of 16–64 KiB (a third of the bytes of a source
// tree) go to the blob store, written with write(), which RSS never counts.
func openEmbedded(ctx context.Context, dir, cfgDir string, password []byte, protect bool, log *slog.Logger) (*embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	_, err := os.Stat(filepath.Join(dir, "meta"))
	fresh := errors.Is(err, os.ErrNotExist)
	var quota int64 = 1 << 40
	var sfs syscall.Statfs_t
	if syscall.Statfs(dir, &sfs) == nil {
		quota = int64(sfs.Blocks) * sfs.Bsize
	}
	srv, err := server.New(server.Config{DataDir: dir, DefaultQuota: quota, SyncWrites: true, SmallMemory: true, NoReadVerify: true,
		HistoryDefault: server.DefaultHistoryRetention,
		SmallChunkMax:  embeddedSmallChunkMax, SessionTTL: embeddedSessionTTL, Logger: log.With("part", "cloud")})
	if err != nil {
		if strings.Contains(err.Error(), "acquire directory lock") {
			return nil, inUseError("the embedded cloud in "+dir, dir)
		}
		return nil, fmt.Errorf("embedded cloud in %s: %w", dir, err)
	}
	e := &embedded{dir: dir, srv: srv, close: func() { srv.Close() }}
	if err := e.login(ctx, cfgDir, fresh, password, protect, log); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *embedded) login(ctx context.Context, cfgDir string, fresh bool, password []byte, protect bool, log *slog.Logger) error {
	k, err := embeddedKeysFor(cfgDir, e.dir, log)
	if err != nil {
		return err
	}
	// No socket: the client calls the server's handler directly (see
	// client.InProcess), which spares every chunk read a loopback TCP round
	// trip. The URL only names the cloud in requests and the saved session.
	url := embeddedURL
	hc := &http.Client{Transport: client.NewInProcess(e.srv.Handler())}
	cl, err := client.New(client.Options{BaseURL: url, HTTPClient: hc, Logger: log})
	if err != nil {
		return err
	}
	stored, err := os.ReadFile(k.password)
	switch {
	case errors.Is(err, os.ErrNotExist):
		stored = nil
	case err != nil:
		return err
	default:
		stored = []byte(strings.TrimSpace(string(stored)))
	}
	var s *session.Session
	if fresh && stored == nil {
		pw := password
		if pw == nil {
			b := make([]byte, 24)
			rand.Read(b)
			pw = []byte(hex.EncodeToString(b))
			if err := atomicfile.Write(k.password, pw, 0o600); err != nil {
				return err
			}
		}
		if s, err = session.Signup(ctx, cl, url, embeddedEmail, pw, keys.DefaultKDF()); err != nil {
			return fmt.Errorf("create the local account: %w", err)
		}
		log.Info("created the local account of the embedded cloud", "dir", e.dir, "protected_by",
			map[bool]string{true: "your password", false: "a random password in " + k.password}[password != nil])
		stored = nil
		if password == nil {
			stored = pw
		}
	} else {
		if old, err := session.Load(k.session); err == nil {
			cl.SetToken(old.Token)
			if _, err := cl.Account(ctx); err == nil {
				old.Server = url
				s = old
			}
		}
		if s == nil {
			pw := stored
			if pw == nil {
				pw = password
			}
			if pw == nil {
				return fmt.Errorf("%w (its data is in %s; the session this machine saved in %s is missing or ended)", errEmbeddedNeedsPassword, e.dir, k.dir)
			}
			if s, err = session.Login(ctx, cl, url, embeddedEmail, pw); err != nil {
				return fmt.Errorf("log in to the embedded cloud in %s: %w", e.dir, err)
			}
		}
	}
	cl.SetToken(s.Token)
	if protect && password != nil && stored != nil {
		// The user's password now protects the account: the random one goes.
		if err := session.ChangePassword(ctx, cl, s, stored, password, session.Options{}); err != nil {
			return fmt.Errorf("protect the embedded cloud with your password: %w", err)
		}
		if err := os.Remove(k.password); err != nil {
			return fmt.Errorf("the embedded cloud now takes your password, but removing the old one: %w", err)
		}
		log.Info("the embedded cloud's account is now protected by your password; its random password is deleted", "dir", e.dir)
		// Other sessions ended with the change: log in again.
		if s, err = session.Login(ctx, cl, url, embeddedEmail, password); err != nil {
			return fmt.Errorf("log in to the embedded cloud with the new password: %w", err)
		}
		cl.SetToken(s.Token)
	}
	if err := s.Save(k.session); err != nil {
		log.Warn("saving the embedded cloud session", "err", err)
	}
	e.sess, e.cl = s, cl
	return nil
}

// optionalPassword is --password-file or $KUMO_PASSWORD when given, else
// nil: the embedded cloud never prompts.
func optionalPassword(c *cli.Context) ([]byte, error) {
	if c.String("password-file") == "" {
		if _, ok := os.LookupEnv("KUMO_PASSWORD"); !ok {
			return nil, nil
		}
	}
	return readPassword(c, "password-file", "KUMO_PASSWORD", "", false)
}

// inUse is what inUseFile holds.
type inUse struct {
	PID        int    `json:"pid"`
	Mountpoint string `json:"mountpoint"`
}

// markInUse records in dir that the process mounting mnt holds it; the
// returned func removes the mark.
func markInUse(dir, mnt string) func() {
	b, _ := json.Marshal(inUse{PID: os.Getpid(), Mountpoint: mnt})
	p := filepath.Join(dir, inUseFile)
	if atomicfile.Write(p, append(b, '\n'), 0o600) != nil {
		return func() {}
	}
	return func() { os.Remove(p) }
}

// inUseErr is a cloud or cache dir that another kumo process holds.
type inUseErr struct {
	what, dir string
	by        inUse // PID 0: unknown
}

// inUseError says which mount holds dir (what: "the embedded cloud in DIR").
func inUseError(what, dir string) *inUseErr {
	e := &inUseErr{what: what, dir: dir}
	var u inUse
	b, err := os.ReadFile(filepath.Join(dir, inUseFile))
	if err == nil && json.Unmarshal(b, &u) == nil && u.PID > 0 && syscall.Kill(u.PID, 0) != syscall.ESRCH {
		e.by = u
	}
	return e
}

func (e *inUseErr) Error() string {
	if e.by.PID > 0 {
		return fmt.Sprintf("%s is already mounted at %s (pid %d): unmount it first (kumo unmount %s), or use another directory",
			e.what, e.by.Mountpoint, e.by.PID, e.by.Mountpoint)
	}
	return fmt.Sprintf("%s is in use by another kumo process (a drive mounting it, or kumo admin): stop it first, or use another directory", e.what)
}

// cleanups are what a command opened in-process (the embedded cloud), closed
// when it returns.
type cleanups struct{ fns []func() }

type cleanupsKey struct{}

// withCleanups lets loadSession open the embedded cloud for action, and
// closes it when action returns.
func withCleanups(action cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		cs := &cleanups{}
		c.Context = context.WithValue(c.Context, cleanupsKey{}, cs)
		defer func() {
			for i := len(cs.fns) - 1; i >= 0; i-- {
				cs.fns[i]()
			}
		}()
		return action(c)
	}
}

// embeddedOK makes cmd work on the embedded cloud when no server is logged
// in (withCleanups).
func embeddedOK(cmd *cli.Command) *cli.Command {
	cmd.Action = withCleanups(cmd.Action)
	return cmd
}

// cloudDirFlag names the embedded cloud the account commands use when no
// server is logged in.
func cloudDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "cloud-dir", Usage: "without a `kumo login`: the embedded cloud's data directory (default $XDG_DATA_HOME/kumo/cloud)"}
}

// embeddedDirOf is the embedded cloud dir the command names or the default.
func embeddedDirOf(c *cli.Context) string {
	if d := c.String("cloud-dir"); d != "" {
		return d
	}
	return defaultCloudDir()
}

// notLoggedIn is loadSession's answer without a saved session: the embedded
// cloud of this machine, opened in-process, if there is one and the command
// can use it (withCleanups); else what to do.
func notLoggedIn(c *cli.Context) (*session.Session, *client.Client, error) {
	dir := embeddedDirOf(c)
	login := "not logged in: run kumo login --server URL --email E"
	if _, err := os.Stat(filepath.Join(dir, "meta")); err != nil {
		return nil, nil, fmt.Errorf("%s (or kumo mount DIR to use an embedded cloud on this machine)", login)
	}
	cs, ok := c.Context.Value(cleanupsKey{}).(*cleanups)
	if !ok {
		return nil, nil, fmt.Errorf("%s; this command does not work on the embedded cloud in %s: mount it (kumo mount DIR)", login, dir)
	}
	pw, err := optionalPassword(c)
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e, err := openEmbedded(c.Context, dir, configDir(c), pw, false, log)
	var busy *inUseErr
	switch {
	case errors.As(err, &busy) && busy.by.PID > 0:
		return nil, nil, fmt.Errorf("no server is logged in, and the embedded cloud in %s is mounted at %s (pid %d): use the files there (ls, cp), kumo status %s, or unmount it to use this command",
			dir, busy.by.Mountpoint, busy.by.PID, busy.by.Mountpoint)
	case err != nil:
		return nil, nil, fmt.Errorf("no server is logged in; the embedded cloud: %w", err)
	}
	cs.fns = append(cs.fns, e.close)
	return e.sess, e.cl, nil
}
