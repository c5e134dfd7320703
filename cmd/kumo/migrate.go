package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"kumo/remote/pathops"
)

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "re-seal an account made before format v2 in v2, then refuse v1 records for good",
		Description: "Every record of the account is authenticated and re-sealed in format v2 (names bound to\n" +
			"their files, attributes with revisions), then the root is marked all-v2: from then on every\n" +
			"client refuses a v1 record, so the server cannot replay one. Mounted drives follow along.\n" +
			"Safe to interrupt and run again. Upgrade every device to this version first: older\n" +
			"clients cannot read v2 records.",
		UsageText: "kumo migrate",
		Flags:     []cli.Flag{configFlag()},
		Action: func(c *cli.Context) error {
			s, _, fsys, err := loadSession(c)
			if err != nil {
				return err
			}
			ctx, stop := interruptible(c)
			defer stop()
			st, err := fsys.Migrate(ctx, func(st pathops.MigrateStats) {
				fmt.Fprintf(os.Stderr, "\rchecked %d records, re-sealed %d names and %d nodes", st.Checked, st.Names, st.Nodes)
			})
			fmt.Fprintln(os.Stderr)
			if err != nil {
				return explain(err, s)
			}
			fmt.Printf("account %s is in format v2 (%d names and %d nodes re-sealed); v1 records are now refused\n", s.Email, st.Names, st.Nodes)
			return nil
		},
	}
}
