package main

import "github.com/urfave/cli/v2"

func mountCommand() *cli.Command   { return &cli.Command{Name: "mount", Usage: "TODO"} }
func unmountCommand() *cli.Command { return &cli.Command{Name: "unmount", Usage: "TODO"} }
