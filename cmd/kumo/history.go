package main

// History commands: a file's versions, purge, the retention window,
// restore of a path as it was at a moment, and the trash
// (remote/pathops/history.go does the work; docs/API.md "History").

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"kumo/internal/size"
	"kumo/remote/api"
	"kumo/remote/pathops"
)

// parseWhen reads a moment: RFC 3339 (UTC or with an offset), or a span
// ("2h", "3d") meaning that long before now. It returns Unix ns.
func parseWhen(s string, now time.Time) (int64, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UnixNano(), nil
	}
	d, err := parseSpan(s)
	if err != nil || d == 0 {
		return 0, fmt.Errorf("time %q: want RFC 3339 (2026-05-01T09:30:00Z, 2026-05-01T11:30:00+02:00) or how long ago (90m, 2h, 3d)", s)
	}
	return now.Add(-d).UnixNano(), nil
}

// fmtTime writes a server time (Unix ns) as RFC 3339 in UTC.
func fmtTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }

// historyLine is the account's history usage for kumo status.
func historyLine(a api.Account) string {
	if a.HistoryRetention == 0 {
		return "history     off (kumo history retention 30d turns it on)\n"
	}
	return fmt.Sprintf("history     %s (kept %s, since %s)\n", size.Format(a.HistoryUsed),
		spanWords(a.HistoryRetention.D()), a.HistoryFrom.UTC().Format(time.RFC3339))
}

// spanWords writes a window as "30 days" when it is whole days.
func spanWords(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		if n := d / (24 * time.Hour); n == 1 {
			return "1 day"
		} else {
			return fmt.Sprintf("%d days", n)
		}
	}
	return d.String()
}

func historyCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "history",
		Usage:     "list the kept versions of a file (time, size), free history, or show/set how long it is kept",
		UsageText: "kumo history PATH\nkumo history purge [--before TIME] [PATH]\nkumo history retention [DURATION]",
		Description: "Every version of every file, and everything deleted, is kept for the account's retention window.\n" +
			"kumo history PATH lists PATH's versions, newest first (a deleted PATH: its last deletion's). The\n" +
			"attributes carry no device name, so versions do not say which device wrote them. A PATH under\n" +
			"/Shared/FOLDER is in a folder shared with you: its owner's account keeps that history.",
		Flags: []cli.Flag{configFlag(), cloudDirFlag()},
		Subcommands: []*cli.Command{
			embeddedOK(&cli.Command{
				Name:      "purge",
				Usage:     "free history now: every version that ended before TIME (default now), or all of PATH's",
				UsageText: "kumo history purge [--before TIME] [PATH]",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "before", Usage: "RFC 3339 time or how long ago (2h, 3d); default now"},
					configFlag(), cloudDirFlag(),
				},
				Action: runPurge,
			}),
			embeddedOK(&cli.Command{
				Name:      "retention",
				Usage:     "show, or set, how long history is kept (30d, 12h; 0 turns history off)",
				UsageText: "kumo history retention [DURATION]",
				Flags:     []cli.Flag{configFlag(), cloudDirFlag()},
				Action:    runRetention,
			}),
		},
		Action: runVersions,
	})
}

func runVersions(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("usage: kumo history PATH (or kumo history purge|retention)")
	}
	return historyFS(c, []string{c.Args().First()}, false, func(ctx context.Context, fsys *pathops.FS, ps []string, _ string) error {
		vs, err := fsys.Versions(ctx, ps[0])
		if err != nil {
			return err
		}
		return printVersions(os.Stdout, vs)
	})
}

// printVersions writes one line per version: since, until, size, mode.
func printVersions(w io.Writer, vs []pathops.Version) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SINCE\tUNTIL\tSIZE\tMODE")
	for _, v := range vs {
		since, until := "(before history)", "now"
		if v.Since != 0 {
			since = fmtTime(v.Since)
		}
		if v.Until != 0 {
			until = fmtTime(v.Until)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", since, until, v.Node.Size(), v.Node.Mode())
	}
	return tw.Flush()
}

func runPurge(c *cli.Context) error {
	args, err := positional(c)
	if err != nil {
		return err
	}
	if len(args) > 1 || len(args) == 1 && c.String("before") != "" {
		return errors.New("usage: kumo history purge [--before TIME] | kumo history purge PATH")
	}
	return withFiles(c, func(ctx context.Context, fsys *pathops.FS) error {
		var r api.PurgeResponse
		if len(args) == 1 {
			r, err = fsys.PurgePath(ctx, args[0])
		} else {
			var before int64
			if b := c.String("before"); b != "" {
				if before, err = parseWhen(b, time.Now()); err != nil {
					return err
				}
			}
			r, err = fsys.PurgeBefore(ctx, before)
		}
		if err != nil {
			return err
		}
		fmt.Printf("purged %d versions (%s of names and attributes now; their data is freed at the server's next collection)\n",
			r.Versions, size.Format(r.Bytes))
		return nil
	})
}

func runRetention(c *cli.Context) error {
	if c.NArg() > 1 {
		return errors.New("usage: kumo history retention [DURATION]")
	}
	return withFiles(c, func(ctx context.Context, fsys *pathops.FS) error {
		var a api.Account
		var err error
		if c.NArg() == 1 {
			d, perr := parseSpan(c.Args().First())
			if perr != nil {
				return fmt.Errorf("retention %w", perr)
			}
			a, err = fsys.SetRetention(ctx, d)
		} else {
			a, err = fsys.Account(ctx)
		}
		if err != nil {
			return err
		}
		fmt.Print(historyLine(a))
		return nil
	})
}

func restoreCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "restore",
		Usage:     "bring back a file or a whole tree as it was at a moment",
		UsageText: "kumo restore PATH --at TIME [--to DEST] [--force]",
		Description: "TIME is RFC 3339 (2026-05-01T09:30:00Z or with an offset) or how long ago (90m, 2h, 3d).\n" +
			"Nothing is uploaded again. Without --force nothing newer is overwritten: a file that changed\n" +
			"since keeps its name and the old one comes back as a conflict copy. With --force DEST is made\n" +
			"exactly as PATH was: changed files get their old content back (a new version), and what did\n" +
			"not exist then is removed (it stays in history, so the restore can itself be undone).\n" +
			"An interrupted restore resumes by running it again. In a folder shared with you (/Shared/FOLDER/...)\n" +
			"a writer restores (sealed and signed as its own write); DEST must be in the same folder.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Usage: "the moment: RFC 3339 time or how long ago (2h, 3d); required"},
			&cli.StringFlag{Name: "to", Usage: "restore to this path instead of PATH"},
			&cli.BoolFlag{Name: "force", Usage: "make the destination exactly as it was (replace newer files, remove newer entries)"},
			configFlag(),
			cloudDirFlag(),
		},
		Action: func(c *cli.Context) error {
			args, err := positional(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return errors.New("usage: kumo restore PATH --at TIME [--to DEST] [--force]")
			}
			if c.String("at") == "" {
				return errors.New("kumo restore needs --at TIME: RFC 3339 (2026-05-01T09:30:00Z) or how long ago (2h, 3d)")
			}
			at, err := parseWhen(c.String("at"), time.Now())
			if err != nil {
				return err
			}
			return historyFS(c, []string{args[0], c.String("to")}, false, func(ctx context.Context, fsys *pathops.FS, ps []string, _ string) error {
				prog, end := restoreProgress()
				st, err := fsys.Restore(ctx, ps[0], at, ps[1], c.Bool("force"), prog)
				end()
				if err != nil {
					return err
				}
				dst := c.String("to")
				if dst == "" {
					dst = args[0]
				}
				fmt.Printf("restored %s as at %s to %s: %s\n", args[0], fmtTime(at), dst, restoreSummary(st))
				return nil
			})
		},
	})
}

// restoreSummary says what a restore did.
func restoreSummary(st pathops.RestoreStats) string {
	return fmt.Sprintf("%d entries (%s): %d created, %d updated, %d already as then, %d conflict copies, %d removed",
		st.Entries, size.Format(st.Bytes), st.Created, st.Updated, st.Skipped, st.Conflicts, st.Removed)
}

// restoreProgress draws counts and bytes on stderr when it is a terminal.
func restoreProgress() (pathops.RestoreProgress, func()) {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil, func() {}
	}
	drawn := false
	prog := func(st pathops.RestoreStats) {
		fmt.Fprintf(os.Stderr, "\rrestore: %d/%d entries, %s/%s ", st.Done, st.Entries, size.Format(st.DoneBytes), size.Format(st.Bytes))
		drawn = true
	}
	return prog, func() {
		if drawn {
			fmt.Fprintln(os.Stderr)
		}
	}
}

func trashCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "trash",
		Usage:     "list what was deleted within the history window, or bring it back",
		UsageText: "kumo trash [/Shared/FOLDER]\nkumo trash restore PATH",
		Description: "Lists deleted files and directories whose directory still exists (what was below a deleted\n" +
			"directory comes back with it), oldest first. With /Shared/FOLDER: that folder shared with you\n" +
			"(its owner's account keeps its history; a reader lists and reads it, a writer restores).",
		Flags: []cli.Flag{configFlag(), cloudDirFlag()},
		Subcommands: []*cli.Command{
			embeddedOK(&cli.Command{
				Name:  "restore",
				Usage: "bring back the most recent deletion at PATH to where it was (a directory with everything that was in it)",
				Description: "If PATH is taken now by another kind of entry, the restored one gets a conflict-copy name;\n" +
					"an existing directory there receives the restored entries (a differing file as a conflict copy).",
				UsageText: "kumo trash restore PATH",
				Flags:     []cli.Flag{configFlag(), cloudDirFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("usage: kumo trash restore PATH")
					}
					return historyFS(c, []string{c.Args().First()}, false, func(ctx context.Context, fsys *pathops.FS, ps []string, prefix string) error {
						prog, end := restoreProgress()
						p, st, err := fsys.TrashRestore(ctx, ps[0], prog)
						end()
						if err != nil {
							return err
						}
						fmt.Printf("restored %s: %s\n", shownPath(prefix, p), restoreSummary(st))
						return nil
					})
				},
			}),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return errors.New("usage: kumo trash [/Shared/FOLDER] | kumo trash restore PATH")
			}
			var paths []string
			if c.NArg() == 1 {
				if _, rest, ok := sharedName(c.Args().First()); !ok || rest != "/" {
					return errors.New("usage: kumo trash [/Shared/FOLDER]: the trash of your tree, or of a folder shared with you")
				}
				paths = []string{c.Args().First()}
			}
			return historyFS(c, paths, true, func(ctx context.Context, fsys *pathops.FS, _ []string, prefix string) error {
				items, err := fsys.Trash(ctx)
				if err != nil {
					return err
				}
				return printTrash(os.Stdout, items, prefix)
			})
		},
	})
}

// shownPath is path p of a tree shown under prefix ("/Shared/NAME", or ""
// for the account's own tree).
func shownPath(prefix, p string) string {
	if prefix == "" {
		return p
	}
	return prefix + p
}

// printTrash writes one line per deleted entry: when, type, size, path
// (under prefix: shownPath).
func printTrash(w io.Writer, items []*pathops.TrashItem, prefix string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DELETED\tTYPE\tSIZE\tPATH")
	for _, it := range items {
		if it.Node == nil {
			fmt.Fprintf(tw, "%s\trefused\t-\tin %s: %v\n", fmtTime(it.Deleted), shownPath(prefix, it.Dir), it.Refused)
			continue
		}
		typ, sz := "file", size.Format(it.Node.Size())
		switch {
		case it.Node.IsDir():
			typ, sz = "dir", "-"
		case it.Node.Mode()&os.ModeSymlink != 0:
			typ = "link"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", fmtTime(it.Deleted), typ, sz, shownPath(prefix, it.Node.Path))
	}
	return tw.Flush()
}
