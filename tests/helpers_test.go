package tests

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"
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

// httpClient is a plain client with a timeout and no retries.
func httpClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }
