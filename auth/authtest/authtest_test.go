package authtest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyTestsImportIt: the server binary must not link the trusting
// middleware.
func TestOnlyTestsImportIt(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "sqlite_fts5 goolm nomsgpack", "-deps", "github.com/chatalot/chatalot/cmd/chatalot").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "chatalot/auth/authtest") {
		t.Fatal("the chatalot binary depends on auth/authtest")
	}
}
