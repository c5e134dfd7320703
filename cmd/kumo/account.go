package main

import "github.com/urfave/cli/v2"

func signupCommand() *cli.Command { return &cli.Command{Name: "signup", Usage: "TODO"} }
func loginCommand() *cli.Command  { return &cli.Command{Name: "login", Usage: "TODO"} }
func logoutCommand() *cli.Command { return &cli.Command{Name: "logout", Usage: "TODO"} }
func passwdCommand() *cli.Command { return &cli.Command{Name: "passwd", Usage: "TODO"} }
