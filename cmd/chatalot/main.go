// Command chatalot is the Chatalot homeserver: `chatalot serve` runs it,
// `chatalot config …` and `chatalot admin …` manage it.
package main

import (
	"fmt"
	"os"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

const usage = `Chatalot — a private, self-hosted Matrix homeserver.

Usage:
  chatalot [serve] [flags]          run the server (the default)
  chatalot config init [FILE]       write a commented example configuration
  chatalot config check [FILE]      validate a configuration, printing every problem
  chatalot config print [flags]     show the effective configuration, secrets masked
  chatalot admin COMMAND [flags]    manage the server (run "chatalot admin" for the list)
  chatalot version                  print the version

Run "chatalot serve -h" for the settings; each is also a CHATALOT_* variable
and a key of the configuration file.
`

func main() {
	// Everything Chatalot writes (database, key, media, backups) is for
	// its own user only, whichever command creates it.
	syscall.Umask(0o077)
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && (args[0] == "" || args[0][0] != '-') {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "config":
		err = configCommand(args)
	case "admin":
		err = adminCommand(args)
	case "version":
		fmt.Println("chatalot", version)
	case "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatalot:", err)
		os.Exit(1)
	}
}
