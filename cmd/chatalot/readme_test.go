package main

import (
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// settingRow is a setting's row of the README's configuration table, made
// from the same struct tags and defaults as the help and the example file.
func settingRow(f reflect.StructField) string {
	def := "empty"
	if v := fmt.Sprint(reflect.ValueOf(defaults()).FieldByIndex(f.Index).Interface()); v != "" {
		def = "`" + v + "`"
	}
	return "| `" + f.Tag.Get("toml") + "` | " + def + " | " + f.Tag.Get("help") + " |"
}

// TestREADMEListsEverySetting keeps the configuration reference complete
// and true: every key the server accepts has its row in README.md, with
// the default and the meaning the binary has (a failure shows the row to
// paste).
func TestREADMEListsEverySetting(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fields() {
		if row := settingRow(f); !strings.Contains(string(raw), "\n"+row+"\n") {
			t.Errorf("README.md's configuration table lacks (or has another version of) the row\n%s", row)
		}
	}
}

// TestREADMEStatesTheGoVersionOfGoMod: every "Go 1.x" the README names is
// the go line of go.mod.
func TestREADMEStatesTheGoVersionOfGoMod(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	found := regexp.MustCompile(`\bGo (1\.[0-9.]*[0-9])`).FindAllSubmatch(raw, -1)
	if len(found) == 0 {
		t.Fatal("the README does not say which Go it needs")
	}
	for _, f := range found {
		if string(f[1]) != string(m[1]) {
			t.Errorf("the README says Go %s; go.mod says go %s", f[1], m[1])
		}
	}
}

// TestREADMEShellIsPOSIX: every ```sh block of the README parses in dash,
// the POSIX shell Debian's /bin/sh is, so that no bash-only syntax (<<<,
// arrays) hides in what an operator pastes. Blocks in list items are
// indented; the indentation is removed first.
func TestREADMEShellIsPOSIX(t *testing.T) {
	dash, err := exec.LookPath("dash")
	if err != nil {
		t.Skip("dash is not installed (apt-get install dash)")
	}
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)\n( *)```sh\n(.*?)\n *```").FindAllStringSubmatch(string(raw), -1)
	if len(blocks) == 0 {
		t.Fatal("no sh blocks found")
	}
	for _, b := range blocks {
		script := regexp.MustCompile("(?m)^"+b[1]).ReplaceAllString(b[2], "")
		cmd := exec.Command(dash, "-n")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("a shell block of the README is not POSIX sh: %v %s\n%s", err, out, script)
		}
	}
}
