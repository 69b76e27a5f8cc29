package sync

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"github.com/chatalot/chatalot/auth/authtest"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"testing"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// memAccountData is an in-memory stand-in for the accounts package.
type memAccountData struct {
	mu   stdsync.Mutex
	db   *storage.DB
	data map[spec.UserID]map[string][]byte // room + "\x00" + type → content
	pos  map[spec.UserID]int64
	at   map[spec.UserID]map[string]int64
	n    *Notifier
}

func (m *memAccountData) AccountData(ctx context.Context, user spec.UserID, since, until int64) ([]json.RawMessage, map[spec.RoomID][]json.RawMessage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var global []json.RawMessage
	perRoom := map[spec.RoomID][]json.RawMessage{}
	for k, c := range m.data[user] {
		if p := m.at[user][k]; p <= since || p > until {
			continue
		}
		room, typ, _ := strings.Cut(k, "\x00")
		ev, _ := json.Marshal(map[string]any{"type": typ, "content": json.RawMessage(c)})
		if room == "" {
			global = append(global, ev)
		} else {
			perRoom[spec.RoomID(room)] = append(perRoom[spec.RoomID(room)], ev)
		}
	}
	return global, perRoom, nil
}

func (m *memAccountData) AccountDataPosition(user spec.UserID) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pos[user]
}

func (m *memAccountData) GetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) (json.RawMessage, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.data[user][string(room)+"\x00"+typ]
	return c, ok, nil
}

func (m *memAccountData) IgnoredUsers(user spec.UserID) map[spec.UserID]bool {
	raw, _, _ := m.GetAccountData(context.Background(), user, "", "m.ignored_user_list")
	var c struct {
		IgnoredUsers map[spec.UserID]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &c) != nil || len(c.IgnoredUsers) == 0 {
		return nil
	}
	users := map[spec.UserID]bool{}
	for u := range c.IgnoredUsers {
		users[u] = true
	}
	return users
}

func (m *memAccountData) SetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, content json.RawMessage) error {
	return m.db.Write(ctx, func(tx *storage.Tx) error {
		pos := tx.NextPosition()
		tx.AfterCommit(func() {
			m.mu.Lock()
			if m.data[user] == nil {
				m.data[user] = map[string][]byte{}
				m.at[user] = map[string]int64{}
			}
			k := string(room) + "\x00" + typ
			m.data[user][k] = content
			m.at[user][k] = pos
			m.pos[user] = pos
			m.mu.Unlock()
			m.n.Notify(pos, user)
		})
		return nil
	})
}

type testServer struct {
	t     *testing.T
	rooms *rooms.Service
	sync  *Service
	acct  *memAccountData
	srv   *httptest.Server
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	db, err := storage.Open(filepath.Join(t.TempDir(), "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(context.Background(), rooms.Schema, Schema); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	n := NewNotifier(db)
	rs, err := rooms.New(context.Background(), rooms.Deps{
		DB: db, Key: events.SigningKey{ServerName: "test", KeyID: "ed25519:1", Private: priv},
		Server: "test", Config: rooms.Config{Encryption: "optional"}, Log: zerolog.Nop(), Notify: n,
	})
	if err != nil {
		t.Fatal(err)
	}
	acct := &memAccountData{db: db, data: map[spec.UserID]map[string][]byte{}, pos: map[spec.UserID]int64{}, at: map[spec.UserID]map[string]int64{}, n: n}
	stopping := make(chan struct{})
	ss := New(Deps{DB: db, Rooms: rs, AccountData: acct, Notifier: n, Log: zerolog.Nop(), Stopping: stopping, Config: Config{Presence: true}})
	if err := ss.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	rs.Routes(r, authtest.Middleware, nil)
	ss.Routes(r, authtest.Middleware)
	ts := &testServer{t: t, rooms: rs, sync: ss, acct: acct, srv: httptest.NewServer(r)}
	t.Cleanup(func() { close(stopping); ts.srv.Close(); db.Close() })
	return ts
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
	if err := json.Unmarshal(raw, &out); err != nil {
		ts.t.Fatalf("%s %s: not JSON: %q", method, path, raw)
	}
	return resp.StatusCode, out
}

func (ts *testServer) must(user, method, path string, body any) map[string]any {
	ts.t.Helper()
	code, out := ts.do(user, method, path, body)
	if code != 200 {
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
