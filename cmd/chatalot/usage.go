package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
)

// Command-line conventions: -h and --help print the command's help on
// standard output and exit 0; a mistake on the command line prints what
// was wrong and where to find help on standard error and exits 2; a
// command that fails exits 1.

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef makes a usageError.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitStatus reports err on standard error and returns the process's exit
// status.
func exitStatus(err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "chatalot:", err)
		return 2
	}
	fmt.Fprintln(os.Stderr, "chatalot:", err)
	return 1
}

// newFlagSet is a flag set that prints nothing itself: parseFlags prints
// the help, and errors go through exitStatus.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args; on -h it prints help to standard output and
// returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, help func(io.Writer)) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		help(os.Stdout)
		return flag.ErrHelp
	}
	return usagef("%s: %v (run \"chatalot %s -h\" for its flags)", fs.Name(), err, fs.Name())
}

// isHelp reports whether a command-line word asks for help.
func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

// isSettingFlag reports whether a flag is one of the server's settings
// (or --config), which every command that opens the data directory takes.
func isSettingFlag(name string) bool {
	if name == "config" {
		return true
	}
	for _, f := range fields() {
		if flagName(f) == name {
			return true
		}
	}
	return false
}

// printSettings writes the help of the given settings, each with its type
// and default.
func printSettings(w io.Writer, keep func(key string) bool) {
	d := reflect.ValueOf(defaults())
	fmt.Fprintln(w, "  --config FILE\n        configuration file (TOML); also CHATALOT_CONFIG")
	for _, f := range fields() {
		key := f.Tag.Get("toml")
		if !keep(key) {
			continue
		}
		typ := settingType(f)
		printFlag(w, flagName(f), typ, f.Tag.Get("help"), settingDefault(d.FieldByIndex(f.Index), typ))
	}
}

// settingDefault is how help shows a default: plain strings quoted, none
// when empty or false.
func settingDefault(v reflect.Value, typ string) string {
	switch v.Kind() {
	case reflect.String:
		if v.String() == "" {
			return ""
		}
		if typ == "string" {
			return fmt.Sprintf("%q", v.String())
		}
		return v.String()
	case reflect.Bool:
		if !v.Bool() {
			return ""
		}
	}
	return fmt.Sprint(v.Interface())
}

// printFlag writes one flag in the layout of Go's flag package, with two
// dashes.
func printFlag(w io.Writer, name, typ, help, def string) {
	line := "  --" + name
	if typ != "" {
		line += " " + typ
	}
	if def != "" {
		help += " (default " + def + ")"
	}
	fmt.Fprintf(w, "%s\n        %s\n", line, help)
}

// printOwnFlags writes the flags of fs that are not settings.
func printOwnFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if isSettingFlag(f.Name) {
			return
		}
		typ, help := flag.UnquoteUsage(f)
		switch typ {
		case "int":
			typ = "integer"
		}
		def := f.DefValue
		if def == "false" || def == "" || def == "0" && typ == "integer" {
			def = ""
		}
		printFlag(w, f.Name, typ, help, def)
	})
}

// dataDirSettings are the settings a command on the data directory is
// usually given; it takes every other one too.
var dataDirSettings = map[string]bool{"data_dir": true, "server_name": true}

// printDataDirSettings ends the help of every command that opens the data
// directory.
func printDataDirSettings(w io.Writer) {
	fmt.Fprintln(w, "\nWhere the data directory is (the server's own settings; the command takes")
	fmt.Fprintln(w, "every setting of \"chatalot serve -h\", as a flag or a CHATALOT_* variable):")
	printSettings(w, func(key string) bool { return dataDirSettings[key] })
}

// serveHelp is `chatalot serve -h`.
func serveHelp(w io.Writer) {
	fmt.Fprint(w, `Usage: chatalot serve [flags]

Runs the homeserver until SIGTERM or SIGINT (SIGHUP re-reads log_level).
Each setting is a flag, a CHATALOT_* variable (CHATALOT_SERVER_NAME) and
a key of the configuration file (server_name); flags win over variables,
which win over the file.

`)
	printSettings(w, func(string) bool { return true })
}

// commandHelp prints a subcommand's help: its synopsis and description (a
// block of text), its own flags, and where it finds the data directory.
func commandHelp(block string, fs *flag.FlagSet, opensDataDir bool) func(io.Writer) {
	return func(w io.Writer) {
		fmt.Fprintln(w, "Usage: chatalot "+strings.TrimSpace(block))
		own := false
		fs.VisitAll(func(f *flag.Flag) { own = own || !isSettingFlag(f.Name) })
		if own {
			fmt.Fprintln(w, "\nFlags:")
			printOwnFlags(w, fs)
		}
		if opensDataDir {
			printDataDirSettings(w)
		}
	}
}

// adminHelpBlock finds a command's synopsis and description in adminUsage
// ("create-user", "token create"…), so that the overview and each
// command's -h say the same.
func adminHelpBlock(name string) string {
	if name == "token delete" {
		name = "token revoke"
	}
	lines := strings.Split(adminUsage, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "  "+name+" ") && l != "  "+name {
			continue
		}
		block := []string{"admin " + strings.TrimSpace(l) + " [flags]", ""}
		for _, d := range lines[i+1:] {
			if !strings.HasPrefix(d, "        ") {
				break
			}
			block = append(block, strings.TrimSpace(d))
		}
		return strings.Join(block, "\n")
	}
	return "admin " + name + " [flags]"
}
