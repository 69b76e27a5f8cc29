package rooms_test

import (
	"encoding/json"
	"testing"

	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/storage"
)

// testServer is the whole server (internal/servertest) with the rooms
// configuration a test asks for, driven over HTTP; the users are real
// accounts, named by their user IDs.
type testServer struct {
	*servertest.Server
	t   *testing.T
	s   *rooms.Service
	db  *storage.DB
	cfg rooms.Config
}

func newTestServer(t *testing.T, encryption string) *testServer {
	t.Helper()
	return newTestServerWith(t, rooms.Config{Encryption: encryption})
}

// newTestServerWith is newTestServer with any rooms configuration.
func newTestServerWith(t *testing.T, cfg rooms.Config) *testServer {
	t.Helper()
	return startTestServer(t, "", cfg)
}

// startTestServer starts a server on the database in dir ("" for a new
// one): a second one on the same dir is a restart.
func startTestServer(t *testing.T, dir string, cfg rooms.Config) *testServer {
	t.Helper()
	s := servertest.New(t, dir, servertest.Rooms(cfg))
	return &testServer{Server: s, t: t, s: s.Rooms, db: s.DB, cfg: cfg}
}

// restart stops the server and starts it again on the same database, as a
// server restart does: what is in memory is what start-up loads.
func (ts *testServer) restart() {
	ts.t.Helper()
	ts.Close()
	*ts = *startTestServer(ts.t, ts.Dir, ts.cfg)
}

// do sends a request as user (servertest.Server.DoAs) and decodes the
// JSON answer into a map; an answer that is not an object is kept as
// "_raw".
func (ts *testServer) do(user, method, path string, body any) (int, map[string]any) {
	ts.t.Helper()
	code, raw := ts.DoAs(user, method, path, body)
	var out map[string]any
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			ts.t.Fatalf("%s %s: bad JSON %q", method, path, raw)
		}
	} else {
		out = map[string]any{"_raw": string(raw)}
	}
	return code, out
}

// must is servertest.Server.MustJSON: the decoded answer, which must be 200.
func (ts *testServer) must(user, method, path string, body any) map[string]any {
	ts.t.Helper()
	return ts.MustJSON(user, method, path, body)
}

var txnCounter int

func (ts *testServer) send(user, room string, content map[string]any) string {
	ts.t.Helper()
	txnCounter++
	return ts.must(user, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/t"+itoa(txnCounter), content)["event_id"].(string)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func wantError(t *testing.T, code int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	if code != wantStatus || body["errcode"] != wantCode {
		t.Fatalf("got %d %v, want %d %s", code, body, wantStatus, wantCode)
	}
}
