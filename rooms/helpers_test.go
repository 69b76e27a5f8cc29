package rooms

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"github.com/chatalot/chatalot/auth/authtest"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// testServer is the rooms package mounted on a real router and a real
// SQLite database, with a stand-in for the auth middleware: the bearer
// token is the user ID.
type testServer struct {
	t   *testing.T
	s   *Service
	db  *storage.DB
	srv *httptest.Server
}

func newTestServer(t *testing.T, encryption string) *testServer {
	t.Helper()
	return newTestServerWith(t, Config{Encryption: encryption})
}

// newTestServerWith is newTestServer with any rooms configuration.
func newTestServerWith(t *testing.T, cfg Config) *testServer {
	t.Helper()
	dir := t.TempDir()
	db, err := storage.Open(pgtest.Location(t, dir, "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(context.Background(), Schema); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := New(context.Background(), Deps{
		DB: db, Key: events.SigningKey{ServerName: "test", KeyID: "ed25519:1", Private: priv},
		Server: "test", Config: cfg, Log: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	s.Routes(r, authtest.Middleware, nil)
	ts := &testServer{t: t, s: s, db: db, srv: httptest.NewServer(r)}
	t.Cleanup(func() { ts.srv.Close(); db.Close() })
	return ts
}

// do sends a request as user (no token if user is "") and decodes the JSON
// answer into a map.
func (ts *testServer) do(user, method, path string, body any) (int, map[string]any) {
	ts.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
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
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			ts.t.Fatalf("%s %s: bad JSON %q", method, path, raw)
		}
	} else {
		out = map[string]any{"_raw": string(raw)}
	}
	return resp.StatusCode, out
}

// must is do that fails the test unless the status is 200.
func (ts *testServer) must(user, method, path string, body any) map[string]any {
	ts.t.Helper()
	code, out := ts.do(user, method, path, body)
	if code != http.StatusOK {
		ts.t.Fatalf("%s %s as %s: %d %v", method, path, user, code, out)
	}
	return out
}

func (ts *testServer) createRoom(user string, body map[string]any) string {
	ts.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	return ts.must(user, "POST", "/_matrix/client/v3/createRoom", body)["room_id"].(string)
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
