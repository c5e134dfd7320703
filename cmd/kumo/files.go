package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"kumo/internal/size"
	"kumo/remote/pathops"
)

func lsCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "ls",
		Usage:     "list a remote directory like ls -l (mode, size, modification time, name)",
		UsageText: "kumo ls [-H] [REMOTE]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "human", Aliases: []string{"H"}, Usage: "sizes as KiB, MiB, GiB"},
			configFlag(),
			cloudDirFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return fmt.Errorf("ls takes one remote path, got %d", c.NArg())
			}
			if shown, err := lsShared(c, c.Args().First(), c.Bool("human")); shown || err != nil {
				return err
			}
			s, _, fsys, err := loadSession(c)
			if err != nil {
				return err
			}
			ctx, stop := interruptible(c)
			defer stop()
			nodes, err := fsys.List(ctx, c.Args().First())
			if err != nil {
				return explain(err, s)
			}
			return printLong(os.Stdout, nodes, c.Bool("human"), time.Now())
		},
	})
}

// printLong writes nodes like ls -l.
// sharedDirName is where the folders other accounts shared show, as in a
// mount (kumo mount --shared-dir's default).
const sharedDirName = "Shared"

// lsShared lists /Shared (the joined shares, named as a mount names them)
// or a path in one of them. shown is false when p is not under /Shared or
// the account joined no share: then p is a path of the account's own tree
// (a mount hides a real /Shared only while it shows shares, too).
func lsShared(c *cli.Context, p string, human bool) (shown bool, err error) {
	clean := path.Clean("/" + p)
	rest, ok := strings.CutPrefix(clean, "/"+sharedDirName)
	if !ok || rest != "" && rest[0] != '/' {
		return false, nil
	}
	ctx, stop := interruptible(c)
	defer stop()
	ss, err := loadShareSession(ctx, c)
	if err != nil {
		return true, err
	}
	byName := ss.shares.JoinedByDirName()
	if len(byName) == 0 {
		return false, nil
	}
	var nodes []*pathops.Node
	if rest == "" {
		for _, name := range slices.Sorted(maps.Keys(byName)) {
			v, err := ss.home.View(byName[name])
			if err != nil {
				return true, explain(err, ss.s)
			}
			root, err := v.Resolve(ctx, "/")
			if err != nil {
				return true, explain(err, ss.s)
			}
			root.Name, root.Path = name, "/"+sharedDirName+"/"+name
			nodes = append(nodes, root)
		}
	} else {
		name, sub, _ := sharedName(clean)
		v, err := joinedView(ss, byName, name)
		if err != nil {
			return true, err
		}
		if nodes, err = v.List(ctx, sub); err != nil {
			return true, explain(err, ss.s)
		}
	}
	return true, printLong(os.Stdout, nodes, human, time.Now())
}

func printLong(w io.Writer, nodes []*pathops.Node, human bool, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 0, ' ', tabwriter.AlignRight)
	for _, n := range nodes {
		sz := strconv.FormatInt(n.Size(), 10)
		if human {
			sz = size.Format(n.Size())
		}
		mt := n.ModTime()
		layout := "Jan _2 15:04"
		if d := now.Sub(mt); d > 180*24*time.Hour || d < -time.Hour {
			layout = "Jan _2  2006"
		}
		name := n.Name
		if n.Path == "/" {
			name = "/"
		}
		if n.Attrs.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			name += " -> " + string(n.Attrs.Target)
		}
		fmt.Fprintf(tw, "%s\t %d\t %s\t %s\t %s\n", n.Mode(), n.Node.Nlink, sz, mt.Format(layout), name)
	}
	return tw.Flush()
}

func putCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "put",
		Usage:     "upload a local file (or with -r a directory tree) to the account",
		UsageText: "kumo put [-r] LOCAL [REMOTE]",
		Description: "REMOTE defaults to /. If REMOTE is an existing directory, LOCAL goes into it under its own name;\n" +
			"missing parent directories are created. Chunks already stored are not uploaded again.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Usage: "upload a directory tree (symlinks kept as symlinks)"},
			&cli.IntFlag{Name: "parallel", Value: pathops.DefaultParallel, Usage: "chunks uploaded at once"},
			configFlag(),
			cloudDirFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return fmt.Errorf("usage: kumo put [-r] LOCAL [REMOTE]")
			}
			local, remote := c.Args().Get(0), c.Args().Get(1)
			if remote == "" {
				remote = "/"
			}
			s, _, fsys, err := loadSession(c)
			if err != nil {
				return err
			}
			fsys.Parallel = c.Int("parallel")
			ctx, stop := interruptible(c)
			defer stop()
			prog, end := progressBar(filepath.Base(local))
			defer end()
			if c.Bool("recursive") {
				err = fsys.PutTree(ctx, local, remote, prog, func(p string) {
					fmt.Fprintf(os.Stderr, "kumo: skipped %s: not a file, directory or symlink\n", p)
				})
			} else {
				_, err = fsys.PutFile(ctx, local, remote, prog)
			}
			return explain(err, s)
		},
	})
}

func getCommand() *cli.Command {
	return embeddedOK(&cli.Command{
		Name:      "get",
		Usage:     "download a remote file (or with -r a directory tree), verifying every byte",
		UsageText: "kumo get [-r] REMOTE [LOCAL]\nkumo get [--fingerprint HEX] https://SERVER/s/ID#SECRET [LOCAL]",
		Description: "LOCAL defaults to the current directory. A file is written to a temporary name and renamed\n" +
			"into place only when complete and verified. A link URL (kumo link) downloads the linked file or\n" +
			"folder with no account.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Usage: "download a directory tree"},
			&cli.IntFlag{Name: "parallel", Value: pathops.DefaultParallel, Usage: "chunks downloaded at once"},
			linkPasswordFileFlag(),
			fingerprintFlag(), // a link's server: link.go's linkClient
			configFlag(),
			cloudDirFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return fmt.Errorf("usage: kumo get [-r] REMOTE [LOCAL]")
			}
			remote, local := c.Args().Get(0), c.Args().Get(1)
			if local == "" {
				local = "."
			}
			if isLinkURL(remote) {
				return getLink(c, remote, local) // link.go: no account needed
			}
			s, _, fsys, err := loadSession(c)
			if err != nil {
				return err
			}
			fsys.Parallel = c.Int("parallel")
			ctx, stop := interruptible(c)
			defer stop()
			prog, end := progressBar(path.Base(remote))
			defer end()
			if c.Bool("recursive") {
				err = fsys.GetTree(ctx, remote, local, prog)
			} else {
				err = fsys.GetFile(ctx, remote, local, prog)
			}
			return explain(err, s)
		},
	})
}
