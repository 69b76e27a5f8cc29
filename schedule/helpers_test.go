package schedule

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth/authtest"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

const (
	alice = "@alice:test"
	bob   = "@bob:test"
	v3    = "/_matrix/client/v3/rooms/"
	base  = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
)

// testServer is rooms and the scheduler on a real router and a real SQLite
// database in dir, with the auth stand-in (the bearer token is the user).
type testServer struct {
	t        *testing.T
	db       *storage.DB
	sched    *Service
	srv      *httptest.Server
	stopping chan struct{}
	closed   bool
}

// key is the signing key every server of a test shares, as a restarted
// server keeps its key.
var key = func() events.SigningKey {
	_, priv, _ := ed25519.GenerateKey(nil)
	return events.SigningKey{ServerName: "test", KeyID: "ed25519:1", Private: priv}
}()

func newTestServer(t *testing.T, dir string, cfg Config) *testServer {
	t.Helper()
	db, err := storage.Open(filepath.Join(dir, "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := db.Migrate(ctx, rooms.Schema, Schema); err != nil {
		t.Fatal(err)
	}
	rs, err := rooms.New(ctx, rooms.Deps{DB: db, Key: key, Server: "test", Config: rooms.Config{Encryption: "optional"}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, db: db, stopping: make(chan struct{})}
	ts.sched, err = New(ctx, Deps{DB: db, Rooms: rs, Log: zerolog.Nop(), Stopping: ts.stopping, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	rs.Routes(r, authtest.Middleware, ts.sched)
	ts.sched.Routes(r, authtest.Middleware)
	ts.sched.Start()
	ts.srv = httptest.NewServer(r)
	t.Cleanup(ts.close)
	return ts
}

// close stops the scheduler and closes the database, as a shutdown does.
func (ts *testServer) close() {
	if ts.closed {
		return
	}
	ts.closed = true
	close(ts.stopping)
	ts.srv.Close()
	ts.db.Close()
}

func (ts *testServer) do(user, method, path string, body any) (int, map[string]any) {
	ts.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, ts.srv.URL+path, rd)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func (ts *testServer) must(user, method, path string, body any) map[string]any {
	ts.t.Helper()
	code, out := ts.do(user, method, path, body)
	if code != http.StatusOK {
		ts.t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
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
