package push_test

import (
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/push"
	"github.com/chatalot/chatalot/server/app"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	chatsync "github.com/chatalot/chatalot/sync"
)

// testServer is the whole server (internal/servertest) on a real SQLite
// database, driven over HTTP; the users are real accounts.
type testServer struct {
	*servertest.Server
	t    *testing.T
	db   *storage.DB
	push *push.Service
	sync *chatsync.Service
	txn  atomic.Int64
}

type serverOption = servertest.Option

func withPrivateGateways() serverOption {
	return func(c *app.Config) { c.Push.AllowPrivateGateways = true }
}
func withFullFormat() serverOption { return func(c *app.Config) { c.Push.FullFormat = true } }
func withRetry(backoff, limit time.Duration) serverOption {
	return func(c *app.Config) { c.Push.RetryBackoff, c.Push.RetryLimit = backoff, limit }
}

func newTestServer(t *testing.T, opts ...serverOption) *testServer {
	t.Helper()
	return startTestServer(t, t.TempDir(), opts...)
}

// startTestServer starts a server on the database in dir: a second one on
// the same dir is a restart.
func startTestServer(t *testing.T, dir string, opts ...serverOption) *testServer {
	t.Helper()
	s := servertest.New(t, dir, opts...)
	return &testServer{Server: s, t: t, db: s.DB, push: s.Push, sync: s.Sync}
}

// close stops the server, as a shutdown does.
func (ts *testServer) close() { ts.Close() }

// do sends a request as user and decodes the JSON answer; a string body is
// sent as it is.
func (ts *testServer) do(user, method, path string, body any) (int, map[string]any) {
	ts.t.Helper()
	return ts.JSONAs(user, method, path, body)
}

// must is servertest.Server.MustJSON: the decoded answer, which must be 200.
func (ts *testServer) must(user, method, path string, body any) map[string]any {
	ts.t.Helper()
	return ts.MustJSON(user, method, path, body)
}

// wantError checks an error answer's status and errcode.
func (ts *testServer) wantError(user, method, path string, body any, status int, code spec.ErrCode) {
	ts.t.Helper()
	got, out := ts.do(user, method, path, body)
	if got != status || out["errcode"] != string(code) {
		ts.t.Fatalf("%s %s: got %d %v, want %d %s", method, path, got, out, status, code)
	}
}

const (
	alice = "@alice:test"
	bob   = "@bob:test"
	carol = "@carol:test"
)

// room creates a room as creator with the others joined.
func (ts *testServer) room(creator string, others ...string) string {
	ts.t.Helper()
	id := ts.must(creator, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	for _, u := range others {
		ts.must(u, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(id)+"/join", map[string]any{})
	}
	return id
}

// send sends an event and returns its ID.
func (ts *testServer) send(user, room, typ string, content any) string {
	ts.t.Helper()
	n := ts.txn.Add(1)
	return ts.must(user, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/t%d", url.PathEscape(room), typ, n), content)["event_id"].(string)
}

func (ts *testServer) text(user, room, body string) string {
	return ts.send(user, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

func (ts *testServer) state(user, room, typ, key string, content any) string {
	ts.t.Helper()
	return ts.must(user, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/%s/%s", url.PathEscape(room), typ, url.PathEscape(key)), content)["event_id"].(string)
}

// counts returns a user's {notifications, highlights} in a room (whole room,
// threads included).
func (ts *testServer) counts(user, room string) [2]int64 {
	ts.t.Helper()
	n, h, threads, _ := ts.push.Counts(spec.UserID(user), spec.RoomID(room))
	for _, c := range threads {
		n, h = n+c[0], h+c[1]
	}
	return [2]int64{n, h}
}

func (ts *testServer) wantCounts(user, room string, want [2]int64) {
	ts.t.Helper()
	if got := ts.counts(user, room); got != want {
		ts.t.Fatalf("%s's counts in the room: got %v, want %v", user, got, want)
	}
}

// receipt posts a read receipt.
func (ts *testServer) receipt(user, room, typ, event string, thread string) {
	ts.t.Helper()
	body := map[string]any{}
	if thread != "" {
		body["thread_id"] = thread
	}
	ts.must(user, "POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/%s/%s", url.PathEscape(room), typ, url.PathEscape(event)), body)
}

// syncOnce runs one /sync (since "" for an initial sync).
func (ts *testServer) syncOnce(user, since, filter string) map[string]any {
	ts.t.Helper()
	q := "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	if filter != "" {
		q += "&filter=" + url.QueryEscape(filter)
	}
	return ts.must(user, "GET", q, nil)
}

// path walks decoded JSON; a missing step gives nil.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func enc(s string) string { return url.PathEscape(s) }
