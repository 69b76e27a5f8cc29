package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

const configUsage = `Usage: chatalot config COMMAND

  init [FILE]           write a commented example configuration (default
                        chatalot.toml; an existing file is never overwritten)
  check [FILE] [flags]  validate the configuration the server would run with
                        (FILE, CHATALOT_* variables and flags), printing every
                        problem with its key; run it as the service's user,
                        so that it can tell whether the data directory is
                        writable
  print [flags]         show the effective configuration, secrets masked
`

// configCommand runs `chatalot config init|check|print`.
func configCommand(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, configUsage)
		return usagef("config: expected init, check or print")
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Print(configUsage)
		return nil
	case "init":
		return configInit(args[1:])
	case "check":
		fs := newFlagSet("config check")
		configPath, set := configFlags(fs)
		rest := args[1:]
		if len(rest) > 0 && rest[0] != "" && rest[0][0] != '-' {
			*configPath, rest = rest[0], rest[1:]
		}
		if err := parseFlags(fs, rest, commandHelp("config check [FILE] [flags]\n\nValidate the configuration, printing every problem with its key.", fs, true)); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("config check: unexpected argument %q", fs.Arg(0))
		}
		return configCheck(fs, configPath, set)
	case "print":
		fs := newFlagSet("config print")
		configPath, set := configFlags(fs)
		if err := parseFlags(fs, args[1:], commandHelp("config print [flags]\n\nShow the effective configuration, secrets masked.", fs, true)); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("config print: unexpected argument %q", fs.Arg(0))
		}
		c, _, err := loadConfig(fs, configPath, set)
		if err != nil {
			return err
		}
		fmt.Print(c.masked())
		return nil
	}
	return usagef("config: unknown command %q (expected init, check or print)", args[0])
}

// configInit: chatalot config init [FILE]
func configInit(args []string) error {
	fs := newFlagSet("config init")
	if err := parseFlags(fs, args, commandHelp("config init [FILE]\n\nWrite a commented example configuration (default chatalot.toml).", fs, false)); err != nil {
		return err
	}
	path := "chatalot.toml"
	switch fs.NArg() {
	case 0:
	case 1:
		path = fs.Arg(0)
	default:
		return usagef("config init: expected at most one file name")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("config init: %w", err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, exampleConfig()); err != nil {
		return err
	}
	fmt.Println("wrote", path)
	return nil
}

// configCheck validates the configuration as the server would, and also
// what only shows at run time: whether this user can write the data
// directory (run it as the service user, as the README does).
func configCheck(fs *flag.FlagSet, configPath *string, set map[string]*string) error {
	cfg, path, err := loadConfig(fs, configPath, set)
	var problems ConfigError
	if err != nil && !errors.As(err, &problems) {
		return err
	}
	_, warnings := unknownVariables(os.Environ())
	if p, w := checkDataDir(cfg.DataDir); p != nil {
		problems = append(problems, *p)
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Key < problems[j].Key })
	} else if w != "" {
		warnings = append(warnings, w)
	}
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	if len(problems) > 0 {
		return problems
	}
	if path == "" {
		path = "defaults and environment"
	}
	fmt.Printf("%s: ok (data directory %s)\n", path, cfg.DataDir)
	return nil
}
