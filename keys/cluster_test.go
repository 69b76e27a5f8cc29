package keys_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/internal/servertest"
)

// Two nodes of a cluster on one PostgreSQL database (docs/scaling.md, step
// 2): what keys keeps in memory for /sync on node B follows what node A
// writes: one-time key counts (upload and claim), to-device messages (with
// a woken long-poll) and device-list changes.

// syncOn runs /sync on a node; it may run in a goroutine.
func syncOn(s *servertest.Server, token, query string) (map[string]any, error) {
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

// waitSync runs incremental syncs on a node from *since until ok accepts one.
func waitSync(t *testing.T, s *servertest.Server, token string, since *string, ok func(map[string]any) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		res, err := syncOn(s, token, "timeout=2000&since="+url.QueryEscape(*since))
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

func otkCount(res map[string]any) any {
	c, _ := res["device_one_time_keys_count"].(map[string]any)
	return c["signed_curve25519"]
}

func TestClusterKeysFollow(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := servertest.NewNode(t, dsn, "a")
	b := servertest.NewNode(t, dsn, "b")
	tok := a.Token(alice) // works on B too (auth follows)
	initial, err := syncOn(b, tok, "")
	if err != nil {
		t.Fatal(err)
	}
	since := initial["next_batch"].(string)

	// Alice uploads two one-time keys on A: B's /sync counts them.
	dev := servertest.DeviceID
	d := newDevice(alice, dev)
	a.MustJSON(string(alice), http.MethodPost, "/_matrix/client/v3/keys/upload", map[string]any{
		"device_keys":   d.deviceKeys(),
		"one_time_keys": map[string]any{"signed_curve25519:k1": d.otk(false), "signed_curve25519:k2": d.otk(false)},
	})
	waitSync(t, b, tok, &since, func(res map[string]any) bool { return otkCount(res) == float64(2) }, "two one-time keys counted on B")

	// Bob claims one on A: B's count drops.
	a.MustJSON(string(bob), http.MethodPost, "/_matrix/client/v3/keys/claim", map[string]any{
		"one_time_keys": map[string]any{string(alice): map[string]string{dev: "signed_curve25519"}},
	})
	waitSync(t, b, tok, &since, func(res map[string]any) bool { return otkCount(res) == float64(1) }, "the claimed key gone from B's count")

	// A to-device message sent on A wakes alice's long-poll on B.
	wokenSync(t, b, tok, &since, func() {
		a.MustJSON(string(bob), http.MethodPut, "/_matrix/client/v3/sendToDevice/org.example.ping/t1", map[string]any{
			"messages": map[string]any{string(alice): map[string]any{dev: map[string]any{"hello": "from A"}}},
		})
	}, func(res map[string]any) bool {
		list, _ := res["to_device"].(map[string]any)["events"].([]any)
		return len(list) == 1 && list[0].(map[string]any)["type"] == "org.example.ping"
	}, "A's to-device message")

	// Bob joins a room of alice's on A, then logs in a new device there:
	// alice's sync on B lists bob's devices as changed.
	room := a.CreateRoom(string(alice), map[string]any{"preset": "public_chat"})
	a.MustJSON(string(bob), http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})
	waitSync(t, b, tok, &since, func(res map[string]any) bool {
		_, ok := res["rooms"].(map[string]any)["join"].(map[string]any)[room]
		return ok
	}, "the room on B")
	a.DeviceToken(bob, "BOB2")
	waitSync(t, b, tok, &since, func(res map[string]any) bool {
		dl, _ := res["device_lists"].(map[string]any)
		changed, _ := dl["changed"].([]any)
		return slices.Contains(changed, any(string(bob)))
	}, "bob in device_lists.changed on B")
}

// wokenSync proves that a long-poll on s wakes for act: it starts a
// long-poll from *since (20 s timeout), runs act once the poll waits, and
// follows with long-polls until ok accepts an answer, within 10 s of act:
// answers with other changes (the hooks that run after a login, say) only
// move *since along.
func wokenSync(t *testing.T, s *servertest.Server, token string, since *string, act func(), ok func(map[string]any) bool, what string) {
	t.Helper()
	type result struct {
		res map[string]any
		err error
	}
	poll := func() chan result {
		ch := make(chan result, 1)
		from := *since
		go func() {
			res, err := syncOn(s, token, "timeout=20000&since="+url.QueryEscape(from))
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
