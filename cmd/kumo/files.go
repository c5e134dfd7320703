package main

import "github.com/urfave/cli/v2"

func lsCommand() *cli.Command  { return &cli.Command{Name: "ls", Usage: "TODO"} }
func putCommand() *cli.Command { return &cli.Command{Name: "put", Usage: "TODO"} }
func getCommand() *cli.Command { return &cli.Command{Name: "get", Usage: "TODO"} }
