package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// configCommand runs `chatalot config init|check|print`.
func configCommand(args []string) error {
	if len(args) == 0 {
		return errors.New("config: expected init, check or print")
	}
	switch args[0] {
	case "init":
		path := "chatalot.toml"
		if len(args) > 1 {
			path = args[1]
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("config init: %w", err)
		}
		defer f.Close()
		if _, err := f.WriteString(exampleConfig()); err != nil {
			return err
		}
		fmt.Println("wrote", path)
		return nil
	case "check":
		fs := flag.NewFlagSet("config check", flag.ContinueOnError)
		configPath, set := configFlags(fs)
		rest := args[1:]
		if len(rest) > 0 && rest[0] != "" && rest[0][0] != '-' {
			*configPath, rest = rest[0], rest[1:]
		}
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if _, path, err := loadConfig(fs, configPath, set); err != nil {
			return err
		} else if path != "" {
			fmt.Println(path + ": ok")
		} else {
			fmt.Println("defaults and environment: ok")
		}
		return nil
	case "print":
		fs := flag.NewFlagSet("config print", flag.ContinueOnError)
		configPath, set := configFlags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		c, _, err := loadConfig(fs, configPath, set)
		if err != nil {
			return err
		}
		fmt.Print(c.masked())
		return nil
	}
	return fmt.Errorf("config: unknown subcommand %q", args[0])
}
