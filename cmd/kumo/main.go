// Command kumo is the one binary of kumo: the cloud server, the drive, and the
// account and admin commands. This file only wires commands; each lives in its own file.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
)

func main() {
	// /sbin/mount.kumo → this binary: mount(8) calls it for "mount -t fuse.kumo" and fstab lines.
	if filepath.Base(os.Args[0]) == "mount.kumo" {
		os.Exit(mountHelperMain(os.Args[1:]))
	}
	app := &cli.App{
		Name:  "kumo",
		Usage: "an end-to-end encrypted cloud drive",
		Commands: []*cli.Command{
			serveCommand(),   // serve.go
			signupCommand(),  // account.go
			loginCommand(),   // account.go
			logoutCommand(),  // account.go
			passwdCommand(),  // account.go
			lsCommand(),      // files.go
			putCommand(),     // files.go
			getCommand(),     // files.go
			linkCommand(),    // link.go
			mountCommand(),   // mount.go
			unmountCommand(), // mount.go
			statusCommand(),  // billing.go
			topupCommand(),   // billing.go
			redeemCommand(),  // billing.go
			adminCommand(),   // admin.go
			// keys.go: identity keys and the recovery key
			whoamiCommand(),
			recoveryKeyCommand(),
			recoverCommand(),
			migrateCommand(), // migrate.go
			// history.go: versions, restore, trash
			historyCommand(),
			restoreCommand(),
			trashCommand(),
			shareCommand(), sharesCommand(), contactsCommand(), // share.go: shared folders
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "kumo:", err)
		os.Exit(1)
	}
}
