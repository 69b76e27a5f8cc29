package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestMatrixJSSDKSlidingSync runs tests/js/slidingsync.test.mjs: a
// matrix-js-sdk client that syncs only with its SlidingSync class (MSC4186)
// against one on /v3/sync, through the room list, an invite and a join,
// encrypted messages both ways with the Rust crypto, a room subscription and
// back-pagination, typing, receipts and a leave. No message body may then be
// found in the server's data or log.
func TestMatrixJSSDKSlidingSync(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("Node.js 20 is needed for the matrix-js-sdk tests (README: what else must be installed)")
	}
	s := harness.Start(t)
	dir := jsDir()
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
	bodies := filepath.Join(t.TempDir(), "bodies.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-concurrency=1", "slidingsync.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CHATALOT_URL="+s.URL, "CHATALOT_BODIES_FILE="+bodies)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("matrix-js-sdk sliding sync tests failed: %v", err)
	}
	s.Stop()
	raw, err := os.ReadFile(bodies)
	if err != nil {
		t.Fatalf("the JS tests recorded no message bodies: %v", err)
	}
	assertNoPlaintext(t, s, strings.Split(strings.TrimSpace(string(raw)), "\n")...)
}
