package main

import (
	"errors"
	"fmt"
	"os"
)

const adminUsage = `Usage: chatalot admin COMMAND [flags]

Commands work on the data directory whether or not the server is running.
`

// adminCommand runs `chatalot admin …`.
func adminCommand(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return errors.New("admin: expected a command")
	}
	return fmt.Errorf("admin: unknown command %q", args[0])
}
