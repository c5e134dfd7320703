package main

// kumo mount URL MOUNTPOINT: a read-only link mounted with no account
// (fs/linkfs). It daemonizes, logs and unmounts (kumo unmount, SIGINT,
// SIGTERM, fusermount3 -u) like the drive's mount.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	kfs "kumo/fs"
	"kumo/fs/linkfs"
	"kumo/internal/link"
	"kumo/remote/pathops"
)

// linkMountPassword reads a link's password as kumo get URL does, from
// --password-file, else $KUMO_LINK_PASSWORD, else a prompt.
func linkMountPassword(c *cli.Context) ([]byte, error) {
	return readPassword(c, "password-file", linkPasswordEnv, "Link password: ", false)
}

// askLinkPassword runs before daemonizing, where there is still a terminal.
// It settles the server's certificate as kumo get does (linkClient:
// --fingerprint, a kept pin, the system CAs, else the trust-on-first-use
// question, whose answer the pin file keeps for the daemon). When the link
// has a password that neither --password-file nor the environment gives, it
// is asked for here and handed to the daemon in its environment (readable
// only by this user and root).
func askLinkPassword(c *cli.Context, rawURL string) error {
	base, id, _, err := link.ParseURL(rawURL)
	if err != nil {
		return err
	}
	cl, err := linkClient(c, base)
	if err != nil {
		return err
	}
	if c.String("password-file") != "" {
		return nil
	}
	if _, ok := os.LookupEnv(linkPasswordEnv); ok {
		return nil
	}
	pub, err := cl.PublicLink(c.Context, id.String())
	if err != nil || pub.Password == nil {
		return nil // the daemon reports what is wrong with the link
	}
	pw, err := linkMountPassword(c)
	if err != nil {
		return err
	}
	return os.Setenv(linkPasswordEnv, string(pw))
}

// serveLinkMount is the daemon of a mounted link: open the link, mount,
// serve the control socket, wait.
func serveLinkMount(c *cli.Context, rawURL, mnt string, ready func(uses string, err error)) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	logw := &switchWriter{w: os.Stderr}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: lv}))
	mo, err := parseMountOpts(c.StringSlice("o"))
	if err != nil {
		return err
	}
	base, id, secret, err := link.ParseURL(rawURL)
	if err != nil {
		return err
	}
	cl, err := linkClient(c, base) // pinned TLS as kumo get's (--fingerprint)
	if err != nil {
		return err
	}
	ctl, err := listenControl(mnt, log)
	if err != nil {
		return err
	}
	defer ctl.Close()

	ctx := context.Background()
	m, err := pathops.OpenLink(ctx, cl, id, secret, func() ([]byte, error) { return linkMountPassword(c) })
	if err != nil {
		return explainPin(c, err) // a certificate other than --fingerprint's: said so
	}
	if !c.Bool("foreground") || os.Getenv("KUMO_LOG_FILE") != "" || isDaemonChild() {
		// The log of a link's mount: the cache dir if given, else
		// $XDG_CACHE_HOME/kumo/links/ID.log (the id is no secret; the URL's
		// secret is never logged).
		dir := c.String("cache-dir")
		if dir == "" {
			dir = filepath.Join(defaultCacheRoot(), "links")
		}
		if err := os.MkdirAll(dir, 0o700); err == nil {
			if f, err := os.OpenFile(filepath.Join(dir, id.String()+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
				logw.set(f)
				defer f.Close()
			}
		}
	}
	uid, gid := linkfs.Owner()
	if mo.uid != nil {
		uid = *mo.uid
	}
	if mo.gid != nil {
		gid = *mo.gid
	}
	lf, err := linkfs.Mount(mnt, linkfs.Options{Client: cl, LinkID: id.String(), Manifest: m, Logger: log,
		UID: uid, GID: gid, AllowOther: mo.allowOther, DefaultPermissions: mo.defaultPerms})
	if err != nil {
		return err
	}
	lm := mountedLink{lf, mnt, base}
	go ctl.Serve(lm)
	uses := fmt.Sprintf("read-only link %q from %s", m.Name, base)
	ready(uses, nil)
	log.Info("ready", "mountpoint", mnt, "link", id.String(), "name", m.Name, "server", base)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() { lf.Wait(); close(done) }()
	select {
	case <-done:
	case s := <-sigs:
		log.Info("signal: unmounting", "signal", s.String())
		if err := lm.Unmount(); err != nil {
			log.Error("unmount failed; detaching lazily", "err", err)
			_ = exec.Command("fusermount3", "-uz", mnt).Run()
		}
		<-done
	}
	ctl.Close()
	log.Info("unmounted", "mountpoint", mnt)
	return nil
}

// mountedLink is a mounted link as the control socket drives it: nothing
// is ever pending, so an unmount is only the unmount.
type mountedLink struct {
	*linkfs.FS
	mnt, server string
}

func (m mountedLink) Status() kfs.Status              { return kfs.Status{Server: m.server, Online: true} }
func (m mountedLink) Flush(ctx context.Context) error { return nil }

// Unmount waits up to 2 s for processes holding the mount, as the drive's does.
func (m mountedLink) Unmount() error { return unmountWhenFree(m.mnt, m.FS.Unmount) }
