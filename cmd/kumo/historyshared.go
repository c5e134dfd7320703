package main

// History of folders shared with the account: kumo history, restore and
// trash take paths under /Shared/NAME (as kumo ls and a mount name the
// joined folders) and work on that folder's history, kept by its owner's
// account, through the share's view (records checked against its roster).

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/urfave/cli/v2"

	"kumo/remote/pathops"
)

// sharedName returns the folder name of a path under /Shared/NAME and the
// path inside it; ok is false for any other path.
func sharedName(p string) (name, rest string, ok bool) {
	clean := path.Clean("/" + p)
	after, ok := strings.CutPrefix(clean, "/"+sharedDirName+"/")
	if !ok {
		return "", "", false
	}
	name, rest, _ = strings.Cut(after, "/")
	return name, "/" + rest, true
}

// historyFS runs do on the tree that holds paths: the account's own, or,
// when a path is under /Shared/NAME and the account joined a folder of that
// name, that folder's view, with every path made relative to it (an empty
// path stays empty). All non-empty paths must then be in that folder: a
// restore never crosses between trees (copy with kumo get and put). prefix
// is what to put before a path of the view to show it ("/Shared/NAME"; ""
// for the own tree). A real /Shared folder of the account's own tree is
// used when no folder is joined, as kumo ls does, unless shareOnly: then
// the paths must name a joined folder (kumo trash /Shared/NAME: the own
// tree's trash is not what was asked for).
func historyFS(c *cli.Context, paths []string, shareOnly bool, do func(ctx context.Context, fsys *pathops.FS, paths []string, prefix string) error) error {
	var name string
	var ok bool
	for _, p := range paths {
		if p != "" {
			if name, _, ok = sharedName(p); ok {
				break
			}
		}
	}
	own := func() error {
		return withFiles(c, func(ctx context.Context, fsys *pathops.FS) error { return do(ctx, fsys, paths, "") })
	}
	if !ok {
		return own()
	}
	ctx, stop := interruptible(c)
	defer stop()
	ss, err := loadShareSession(ctx, c)
	if err != nil {
		return err
	}
	byName := ss.shares.JoinedByDirName()
	if len(byName) == 0 && !shareOnly {
		return own()
	}
	if byName[name] == nil {
		return errNotJoined(name)
	}
	prefix := "/" + sharedDirName + "/" + name
	rel := make([]string, len(paths))
	for i, p := range paths {
		if p == "" {
			continue
		}
		n, r, ok := sharedName(p)
		if !ok || n != name {
			return fmt.Errorf("%s is not in the shared folder %s: a restore stays in one folder (copy with kumo get and put)", p, prefix)
		}
		rel[i] = r
	}
	v, err := joinedView(ss, byName, name)
	if err != nil {
		return err
	}
	return explain(do(ctx, v, rel, prefix), ss.s)
}

func errNotJoined(name string) error {
	return fmt.Errorf("/%s/%s: no folder of that name is shared with you (kumo shares lists them)", sharedDirName, name)
}

// joinedView is the view of the folder shared with the account under name
// (/Shared/NAME), of byName (JoinedByDirName).
func joinedView(ss *shareSession, byName map[string]*pathops.Share, name string) (*pathops.FS, error) {
	sh := byName[name]
	if sh == nil {
		return nil, errNotJoined(name)
	}
	v, err := ss.home.View(sh)
	if err != nil {
		return nil, explain(err, ss.s)
	}
	return v, nil
}
