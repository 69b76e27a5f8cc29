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
	s := harness.Start(t)
	node, dir := nodeTests(t)
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
