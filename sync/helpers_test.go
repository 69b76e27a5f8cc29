package sync_test

import (
	"encoding/json"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/chatalot/chatalot/internal/servertest"
)

// testServer is the whole server (internal/servertest); the users are real
// accounts, named by their user IDs.
type testServer struct {
	*servertest.Server
	t *testing.T
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	return &testServer{Server: servertest.New(t, ""), t: t}
}

func (ts *testServer) do(user, method, path string, body any) (int, map[string]any) {
	ts.t.Helper()
	return ts.JSONAs(user, method, path, body)
}

// must is servertest.Server.MustJSON: the decoded answer, which must be 200.
func (ts *testServer) must(user, method, path string, body any) map[string]any {
	ts.t.Helper()
	return ts.MustJSON(user, method, path, body)
}

// createRoom is servertest.Server.CreateRoom.
func (ts *testServer) createRoom(user string, body map[string]any) string {
	ts.t.Helper()
	return ts.CreateRoom(user, body)
}

// txn numbers sends; tests send from several goroutines at once.
var txn atomic.Int64

func (ts *testServer) send(user, room, text string) string {
	ts.t.Helper()
	n := int(txn.Add(1))
	return ts.must(user, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/t"+itoa(n), map[string]any{"msgtype": "m.text", "body": text})["event_id"].(string)
}

// syncOnce runs one /sync; since "" means initial.
func (ts *testServer) syncOnce(user, since string, timeoutMS int, extra string) map[string]any {
	ts.t.Helper()
	q := "/_matrix/client/v3/sync?timeout=" + itoa(timeoutMS)
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	return ts.must(user, "GET", q+extra, nil)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// timeline returns the event IDs of a joined room's timeline in a sync.
func timeline(resp map[string]any, room string) []string {
	var out []string
	for _, ev := range path(resp, "rooms", "join", room, "timeline", "events").([]any) {
		out = append(out, ev.(map[string]any)["event_id"].(string))
	}
	return out
}

// path walks a decoded JSON object; a missing step gives an empty slice.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return []any{}
		}
		if v, ok = m[k]; !ok {
			return []any{}
		}
	}
	return v
}
