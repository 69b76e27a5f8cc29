package schedule_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/schedule"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

const (
	alice = "@alice:test"
	bob   = "@bob:test"
	v3    = "/_matrix/client/v3/rooms/"
	base  = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
)

// testServer is the whole server (internal/servertest) on a real SQLite
// database in dir; the users are real accounts.
type testServer struct {
	*servertest.Server
	t  *testing.T
	db *storage.DB
}

func newTestServer(t *testing.T, dir string, cfg schedule.Config) *testServer {
	t.Helper()
	s := servertest.New(t, dir, servertest.Schedule(cfg))
	return &testServer{Server: s, t: t, db: s.DB}
}

// close stops the scheduler and closes the database, as a shutdown does.
func (ts *testServer) close() { ts.Close() }

func (ts *testServer) do(user, method, path string, body any) (int, map[string]any) {
	ts.t.Helper()
	return ts.As(spec.UserID(user), method, path, body)
}

// must is servertest.Server.MustJSON: the decoded answer, which must be 200.
func (ts *testServer) must(user, method, path string, body any) map[string]any {
	ts.t.Helper()
	return ts.MustJSON(user, method, path, body)
}

func (ts *testServer) wantErr(user, method, path string, body any, status int, code string) map[string]any {
	ts.t.Helper()
	got, out := ts.do(user, method, path, body)
	if got != status || out["errcode"] != code {
		ts.t.Fatalf("%s %s: %d %v, want %d %s", method, path, got, out, status, code)
	}
	return out
}

func (ts *testServer) room(members ...string) string {
	ts.t.Helper()
	id := ts.must(alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	for _, m := range members {
		ts.must(m, "POST", v3+id+"/join", map[string]any{})
	}
	return id
}

func delayQuery(ms string) string { return "?" + url.Values{rooms.DelayParam: {ms}}.Encode() }

// scheduled lists the user's delayed events.
func (ts *testServer) scheduled(user string) []any {
	ts.t.Helper()
	list, _ := ts.must(user, "GET", base, nil)["delayed_events"].([]any)
	return list
}

// waitFor polls check until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// timeline is the room's events of a type, oldest first, as user sees
// them in /messages.
func (ts *testServer) timeline(user, room, typ string) []map[string]any {
	ts.t.Helper()
	page := ts.must(user, "GET", v3+room+"/messages?dir=b&limit=100", nil)
	var out []map[string]any
	chunk, _ := page["chunk"].([]any)
	for i := len(chunk) - 1; i >= 0; i-- {
		ev := chunk[i].(map[string]any)
		if ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}
