package servertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// SyncQuery runs one /sync with the query and decodes it; it may run in a
// goroutine (it reports errors rather than failing a test).
func (s *Server) SyncQuery(token, query string) (map[string]any, error) {
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/_matrix/client/v3/sync?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sync: %d %v", resp.StatusCode, out)
	}
	return out, nil
}

// WaitSync runs incremental syncs from *since until ok accepts one (within
// 15 s), moving *since along.
func (s *Server) WaitSync(t testing.TB, token string, since *string, ok func(map[string]any) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		res, err := s.SyncQuery(token, "timeout=2000&since="+url.QueryEscape(*since))
		if err != nil {
			t.Fatal(err)
		}
		*since = res["next_batch"].(string)
		if ok(res) {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// WokenSync proves that a long-poll wakes for act: it starts a long-poll
// from *since (20 s timeout), runs act once the poll waits, and follows
// with long-polls until ok accepts an answer, within 10 s of act: answers
// with other changes (the hooks that run after a login, say) only move
// *since along.
func (s *Server) WokenSync(t testing.TB, token string, since *string, act func(), ok func(map[string]any) bool, what string) {
	t.Helper()
	type result struct {
		res map[string]any
		err error
	}
	poll := func() chan result {
		ch := make(chan result, 1)
		from := *since
		go func() {
			res, err := s.SyncQuery(token, "timeout=20000&since="+url.QueryEscape(from))
			ch <- result{res, err}
		}()
		return ch
	}
	next := func(r result) bool {
		if r.err != nil {
			t.Fatal(r.err)
		}
		*since = r.res["next_batch"].(string)
		return ok(r.res)
	}
	ch := poll()
	for acted := false; !acted; {
		select {
		case r := <-ch:
			if next(r) {
				t.Fatalf("%s: there before the change", what)
			}
			ch = poll()
		case <-time.After(5 * time.Millisecond):
			if s.Sync.Notifier().Waiters() > 0 {
				act()
				acted = true
			}
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-ch:
			if next(r) {
				return
			}
			ch = poll()
		case <-deadline:
			t.Fatalf("the long-poll was not woken with %s", what)
		}
	}
}
