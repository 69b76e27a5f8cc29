package main

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEListsEverySetting keeps the configuration reference complete:
// every key the server accepts has a row in README.md.
func TestREADMEListsEverySetting(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fields() {
		key := f.Tag.Get("toml")
		if !strings.Contains(string(raw), "| `"+key+"` |") {
			t.Errorf("README.md's configuration table has no row for %q", key)
		}
	}
}
