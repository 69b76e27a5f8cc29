package tests

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestMatrixJSSDKOAuth runs tests/js/oauth.test.mjs: matrix-js-sdk's own
// OAuth2 helpers against a server that is its own authorisation server
// (oauth = true): registration, authorisation URL, code exchange, refresh
// rotation and replay, revocation.
func TestMatrixJSSDKOAuth(t *testing.T) {
	s := startOAuthServer(t)
	node, dir := nodeTests(t)
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

// TestChromiumOAuthPages runs tests/js/oauth_browser.test.mjs: the sign-up,
// sign-in, consent and account pages filled in by a headless Chromium
// (Debian's, driven by playwright-core), with matrix-js-sdk as the client,
// down to approving the cross-signing reset its Rust crypto asks for, and
// the legacy API's SSO login that OAuth 2.0 aware clients use.
func TestChromiumOAuthPages(t *testing.T) {
	browser := opsTool(t, "chromium", "chromium")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("Node.js 20 is needed for the matrix-js-sdk tests (README: what else must be installed)")
	}
	s := startOAuthServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-concurrency=1", "oauth_browser.test.mjs")
	cmd.Dir = jsDir()
	cmd.Env = append(os.Environ(), "CHATALOT_URL="+s.URL, "CHROMIUM="+browser, "CHATALOT_SCREENSHOTS="+os.Getenv("CHATALOT_SCREENSHOTS"))
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("browser tests failed: %v\n%s", err, s.Logs())
	}
}

// startOAuthServer runs a server with the OAuth 2.0 API on. The issuer is
// the public base URL, so the address is chosen first.
func startOAuthServer(t *testing.T) *harness.Server {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return harness.Start(t, harness.WithArgs("--listen", addr, "--public-baseurl", "http://"+addr, "--oauth"))
}
