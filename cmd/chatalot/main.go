// Command chatalot is the Chatalot homeserver: `chatalot serve` runs it,
// `chatalot config …` and `chatalot admin …` manage it.
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

const usage = `Chatalot — a private, self-hosted Matrix homeserver.

Usage:
  chatalot serve [flags]            run the server
  chatalot config init [FILE]       write a commented example configuration
  chatalot config check [FILE]      validate a configuration, printing every problem
  chatalot config print [flags]     show the effective configuration, secrets masked
  chatalot admin COMMAND [flags]    manage the server (accounts, invite codes,
                                    backups; "chatalot admin -h" lists them)
  chatalot migrate-db --to URL      copy a stopped server's SQLite database
                                    into PostgreSQL (see "Moving to PostgreSQL")
  chatalot version                  print the version (also --version)
  chatalot help                     print this overview (also -h, --help)

Each command takes -h for its own flags. "chatalot serve -h" lists every
setting; each is also a CHATALOT_* variable and a key of the configuration
file.
`

func main() {
	// Everything Chatalot writes (database, key, media, backups) is for
	// its own user only, whichever command creates it.
	syscall.Umask(0o077)
	os.Exit(exitStatus(run(os.Args[1:])))
}

// run runs one command line. Without a command it only shows the overview:
// starting a server is always asked for by name (`chatalot serve`).
func run(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return usagef("no command given; to start the server, run \"chatalot serve\"")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(args)
	case "config":
		return configCommand(args)
	case "admin":
		return adminCommand(args)
	case "migrate-db":
		return migrateDB(args, os.Stdout)
	case "version", "-version", "--version":
		fmt.Println("chatalot", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Print(usage)
		return nil
	}
	if strings.HasPrefix(cmd, "-") {
		return usagef("%s: flags come after the command, such as \"chatalot serve %s\" (run \"chatalot help\" for the commands)", cmd, cmd)
	}
	return usagef("unknown command %q (run \"chatalot help\" for the commands)", cmd)
}
