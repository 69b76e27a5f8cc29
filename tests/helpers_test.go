package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// registerForTest registers a user with open registration and returns the
// access token.
func registerForTest(t *testing.T, base, name string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"username": name, "password": "correct horse battery staple", "auth": map[string]string{"type": "m.login.dummy"}})
	resp, err := http.Post(base+"/_matrix/client/v3/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		t.Fatalf("register %s: %d %v", name, resp.StatusCode, err)
	}
	return out.AccessToken
}

// firstSync does an initial sync and returns next_batch.
func firstSync(t *testing.T, base, token string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/_matrix/client/v3/sync?timeout=0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		NextBatch string `json:"next_batch"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.NextBatch == "" {
		t.Fatalf("initial sync: %d %v", resp.StatusCode, err)
	}
	return out.NextBatch
}

// doRequest sends a request with an optional access token and body (nil; a
// string, or []byte as application/octet-stream, sent as they are; any other
// value as JSON) and returns the answer's status, header and body.
func doRequest(t testing.TB, method, url, token string, body any) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	contentType := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		r, contentType = bytes.NewReader(b), "application/octet-stream"
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// sameList fails the test unless got is want, in order.
func sameList[T comparable](t *testing.T, what string, got []T, want ...T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
}

// httpClient is a plain client with a timeout and no retries.
func httpClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

func randomSuffix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// assertNoPlaintext fails if any file of the server's data directory (the
// database, its WAL, the media store) or its log holds one of the bodies.
func assertNoPlaintext(t *testing.T, s *harness.Server, bodies ...string) {
	t.Helper()
	err := filepath.WalkDir(s.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, b := range bodies {
			if bytes.Contains(data, []byte(b)) {
				return errors.New(path + " holds the plaintext " + b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies {
		if strings.Contains(s.Logs(), b) {
			t.Fatalf("the server log holds the plaintext %q", b)
		}
	}
}
