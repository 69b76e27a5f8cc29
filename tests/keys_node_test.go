package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// jsDir is tests/js, the Node project of matrix-js-sdk tests.
func jsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "js")
}

// TestMatrixJSSDKEncryption runs tests/js (matrix-js-sdk with its Rust crypto
// under Node) against a fresh server: messages both ways, a second device,
// cross-signing, and key backup restored on a fresh device. Then no message
// body the clients sent may be found in the server's data or log.
func TestMatrixJSSDKEncryption(t *testing.T) {
	s := harness.Start(t)
	node, dir := nodeTests(t)

	bodies := filepath.Join(t.TempDir(), "bodies.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-concurrency=1", "e2ee.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CHATALOT_URL="+s.URL, "CHATALOT_BODIES_FILE="+bodies)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("matrix-js-sdk tests failed: %v", err)
	}
	s.Stop()
	raw, err := os.ReadFile(bodies)
	if err != nil {
		t.Fatalf("the JS tests recorded no message bodies: %v", err)
	}
	list := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(list) < 4 {
		t.Fatalf("only %d message bodies were recorded", len(list))
	}
	assertNoPlaintext(t, s, list...)
}

// nodeTests finds Node.js and installs tests/js from its lock file when
// it is not installed yet; it returns node's path and the tests' folder.
func nodeTests(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("Node.js 20 is needed for the matrix-js-sdk tests (README: what else must be installed)")
	}
	dir = jsDir()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatal("npm is needed to install tests/js from its lock file")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	return node, dir
}
