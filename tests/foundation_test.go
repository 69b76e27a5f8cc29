package tests

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/tests/harness"
)

// get fetches a URL and decodes a JSON object answer.
func getJSON(t *testing.T, method, url, body string, header ...string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, resp.Header, m
}

func TestServerEndpoints(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--server-name", "chat.example"))

	code, hdr, v := getJSON(t, "GET", s.URL+"/_matrix/client/versions", "")
	if code != 200 || len(v["versions"].([]any)) == 0 {
		t.Fatalf("versions: %d %v", code, v)
	}
	if hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("no CORS header on a normal response")
	}
	if v["unstable_features"].(map[string]any)["org.chatalot.encryption_policy.optional"] != true {
		t.Fatalf("the encryption policy is not advertised: %v", v)
	}
	code, _, wk := getJSON(t, "GET", s.URL+"/.well-known/matrix/client", "")
	if code != 200 || wk["m.homeserver"].(map[string]any)["base_url"] == "" {
		t.Fatalf("well-known client: %d %v", code, wk)
	}
	// Federation is off: nothing tells other servers to try.
	if code, _, wks := getJSON(t, "GET", s.URL+"/.well-known/matrix/server", ""); code != 404 {
		t.Fatalf("well-known server while federation is off: %d %v", code, wks)
	}

	// The server key is self-signed with the key it announces.
	resp, err := http.Get(s.URL + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var keys struct {
		ServerName string `json:"server_name"`
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
	}
	if err := json.Unmarshal(raw, &keys); err != nil || keys.ServerName != "chat.example" || len(keys.VerifyKeys) != 1 {
		t.Fatalf("server keys: %s", raw)
	}
	for id, k := range keys.VerifyKeys {
		if !strings.HasPrefix(id, "ed25519:") {
			t.Fatalf("key ID %q", id)
		}
		pub, err := base64.RawStdEncoding.DecodeString(k.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := events.VerifyJSON(raw, "chat.example", id, ed25519.PublicKey(pub)); err != nil {
			t.Fatalf("the key response is not self-signed: %v", err)
		}
	}

	resp, err = http.Get(s.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "chat.example") {
		t.Fatalf("index page: %s", page)
	}
	code, _, _ = getJSON(t, "GET", s.URL+"/health", "")
	if code != 200 {
		t.Fatalf("health: %d", code)
	}
}

func TestErrorsAreMatrixErrors(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--max-body-bytes", "70000"))
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown endpoint", "GET", "/_matrix/client/v3/nope", "", 404, "M_UNRECOGNIZED"},
		{"wrong method", "DELETE", "/_matrix/client/versions", "", 405, "M_UNRECOGNIZED"},
		{"body over the limit", "POST", "/_matrix/client/v3/login", `{"type":"` + strings.Repeat("x", 80000) + `"}`, 413, "M_TOO_LARGE"},
		{"invalid JSON", "POST", "/_matrix/client/v3/login", `{"type":`, 400, "M_NOT_JSON"},
	}
	for _, c := range cases {
		code, hdr, body := getJSON(t, c.method, s.URL+c.path, c.body, "Content-Type", "application/json")
		if code != c.status || body["errcode"] != c.code {
			t.Errorf("%s: got %d %v, want %d %s", c.name, code, body, c.status, c.code)
		}
		if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
			t.Errorf("%s: content type %q", c.name, hdr.Get("Content-Type"))
		}
	}
	// A CORS preflight is answered without running the endpoint.
	code, hdr, _ := getJSON(t, "OPTIONS", s.URL+"/_matrix/client/v3/login", "")
	if code != 204 && code != 200 || !strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", code, hdr)
	}
	// Tokens in query strings never reach the log.
	getJSON(t, "GET", s.URL+"/_matrix/client/v3/account/whoami?access_token=sekrit_token_123", "")
	if strings.Contains(s.Logs(), "sekrit_token_123") {
		t.Fatal("an access token from the query string was logged")
	}
	if !s.Running() {
		t.Fatal("the server died")
	}
}

func TestRestartKeepsSigningKeyAndGracefulShutdown(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--log-level", "debug"))
	keyPath := filepath.Join(s.DataDir, "signing.key")
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("signing key mode %v, want 0600", st.Mode().Perm())
	}
	before, _ := os.ReadFile(keyPath)
	_, _, k1 := getJSON(t, "GET", s.URL+"/_matrix/key/v2/server", "")

	// A long-poll in flight ends promptly at SIGTERM, and the exit is clean.
	token := registerForTest(t, s.URL, "shutdown")
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v3/sync?timeout=60000&since="+firstSync(t, s.URL, token), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	waitFor(t, 10*time.Second, "the long-poll to be waiting", func() bool {
		return strings.Contains(s.Logs(), "sync: long-poll waiting")
	})
	start := time.Now()
	s.Stop()
	if s.ExitCode() != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", s.ExitCode(), s.Logs())
	}
	select {
	case code := <-done:
		if code != 200 {
			t.Fatalf("the long-poll got %d at shutdown, want 200", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not end at shutdown")
	}
	if time.Since(start) > 15*time.Second {
		t.Fatal("shutdown waited for the long-poll's timeout")
	}

	s.Launch()
	after, _ := os.ReadFile(keyPath)
	if string(before) != string(after) {
		t.Fatal("the signing key changed across a restart")
	}
	_, _, k2 := getJSON(t, "GET", s.URL+"/_matrix/key/v2/server", "")
	if !sameKeys(k1, k2) {
		t.Fatalf("announced keys differ: %v vs %v", k1["verify_keys"], k2["verify_keys"])
	}

	// Another data directory gets another key.
	other := harness.Start(t)
	theirs, _ := os.ReadFile(filepath.Join(other.DataDir, "signing.key"))
	if string(theirs) == string(before) {
		t.Fatal("two data directories got the same signing key")
	}
}

func sameKeys(a, b map[string]any) bool {
	ja, _ := json.Marshal(a["verify_keys"])
	jb, _ := json.Marshal(b["verify_keys"])
	return string(ja) == string(jb)
}

func TestConfigFileAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chatalot.toml")
	if out, err := harness.Run(t, "", "config", "init", path); err != nil {
		t.Fatalf("config init: %v %s", err, out)
	}
	if out, err := harness.Run(t, "", "config", "check", path); err != nil {
		t.Fatalf("the example configuration does not pass its own check: %v %s", err, out)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("server_nam = \"x\"\nregistration = \"maybe\"\n"), 0o600)
	out, err := harness.Run(t, "", "config", "check", bad)
	if err == nil || !strings.Contains(out, "server_nam") || !strings.Contains(out, "registration") {
		t.Fatalf("config check should name both bad keys: %v %s", err, out)
	}
	// The server refuses to start with it, naming the key.
	out, err = harness.Run(t, "", "serve", "--config", bad, "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(out, "server_nam") {
		t.Fatalf("serve with an unknown key: %v %s", err, out)
	}
	// Environment variables work as flags do.
	s := harness.Start(t, harness.WithEnv("CHATALOT_SERVER_NAME=env.example"))
	_, _, keys := getJSON(t, "GET", s.URL+"/_matrix/key/v2/server", "")
	if keys["server_name"] != "env.example" {
		t.Fatalf("CHATALOT_SERVER_NAME ignored: %v", keys["server_name"])
	}
	secret := filepath.Join(dir, "secret.toml")
	os.WriteFile(secret, []byte("registration_shared_secret = \"hunter2-very-secret\"\n"), 0o600)
	out, err = harness.Run(t, "", "config", "print", "--config", secret)
	if err != nil || strings.Contains(out, "hunter2") || !strings.Contains(out, "registration_shared_secret") {
		t.Fatalf("config print must mask secrets: %v %s", err, out)
	}
}

// freePortIsUnused guards against a test server listening beyond loopback.
func TestListensOnLoopbackOnly(t *testing.T) {
	s := harness.Start(t)
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("listening on %q", s.Addr)
	}
}
