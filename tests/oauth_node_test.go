package tests

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestMatrixJSSDKOAuth runs tests/js/oauth.test.mjs: matrix-js-sdk's own
// OAuth2 helpers against a server that is its own authorisation server
// (oauth = true): registration, authorisation URL, code exchange, refresh
// rotation and replay, revocation.
func TestMatrixJSSDKOAuth(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("Node.js 20 is needed for the matrix-js-sdk tests (README: what else must be installed)")
	}
	// The issuer is the public base URL, so the address is chosen first.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := harness.Start(t, harness.WithArgs("--listen", addr, "--public-baseurl", "http://"+addr, "--oauth"))
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-concurrency=1", "oauth.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CHATALOT_URL="+s.URL)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("matrix-js-sdk OAuth tests failed: %v\n%s", err, s.Logs())
	}
}
