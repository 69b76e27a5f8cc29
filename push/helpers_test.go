package push

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"github.com/chatalot/chatalot/auth/authtest"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	chatsync "github.com/chatalot/chatalot/sync"
	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
)

// memAccountData stands in for the accounts package: account data in
// memory, each change at a stream position, waking the user's syncs.
type memAccountData struct {
	mu   sync.Mutex
	db   *storage.DB
	n    *chatsync.Notifier
	data map[spec.UserID]map[string]json.RawMessage // room + "\x00" + type → content
	at   map[spec.UserID]map[string]int64
	pos  map[spec.UserID]int64
}

func newMemAccountData(db *storage.DB, n *chatsync.Notifier) *memAccountData {
	return &memAccountData{db: db, n: n, data: map[spec.UserID]map[string]json.RawMessage{},
		at: map[spec.UserID]map[string]int64{}, pos: map[spec.UserID]int64{}}
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
		ev, _ := json.Marshal(map[string]any{"type": typ, "content": c})
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

func (m *memAccountData) IgnoredUsers(user spec.UserID) map[spec.UserID]bool {
	raw, _, _ := m.GetAccountData(context.Background(), user, "", "m.ignored_user_list")
	var users map[spec.UserID]bool
	gjson.GetBytes(raw, "ignored_users").ForEach(func(k, _ gjson.Result) bool {
		if users == nil {
			users = map[spec.UserID]bool{}
		}
		users[spec.UserID(k.Str)] = true
		return true
	})
	return users
}

func (m *memAccountData) GetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) (json.RawMessage, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.data[user][string(room)+"\x00"+typ]
	return c, ok, nil
}

func (m *memAccountData) SetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, content json.RawMessage) error {
	return m.db.Write(ctx, func(tx *storage.Tx) error {
		pos := tx.NextPosition()
		tx.AfterCommit(func() {
			m.mu.Lock()
			if m.data[user] == nil {
				m.data[user] = map[string]json.RawMessage{}
				m.at[user] = map[string]int64{}
			}
			k := string(room) + "\x00" + typ
			m.data[user][k] = append(json.RawMessage(nil), content...)
			m.at[user][k] = pos
			m.pos[user] = pos
			m.mu.Unlock()
			m.n.Notify(pos, user)
		})
		return nil
	})
}

// testServer is rooms, sync and push on a real SQLite database behind a
// real router, driven over HTTP.
type testServer struct {
	t     *testing.T
	db    *storage.DB
	rooms *rooms.Service
	sync  *chatsync.Service
	push  *Service
	acct  *memAccountData
	srv   *httptest.Server
	txn   atomic.Int64
	close func()
}

type serverOption func(*Config)

func withPrivateGateways() serverOption { return func(c *Config) { c.AllowPrivateGateways = true } }
func withFullFormat() serverOption      { return func(c *Config) { c.FullFormat = true } }
func withRetry(backoff, limit time.Duration) serverOption {
	return func(c *Config) { c.RetryBackoff, c.RetryLimit = backoff, limit }
}

func newTestServer(t *testing.T, opts ...serverOption) *testServer {
	t.Helper()
	dir := t.TempDir()
	return startTestServer(t, dir, opts...)
}

func startTestServer(t *testing.T, dir string, opts ...serverOption) *testServer {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(filepath.Join(dir, "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, rooms.Schema, chatsync.Schema, Schema); err != nil {
		t.Fatal(err)
	}
	n := chatsync.NewNotifier(db)
	_, priv, _ := ed25519.GenerateKey(nil)
	commits := &rooms.CommitHooks{}
	rs, err := rooms.New(ctx, rooms.Deps{
		DB: db, Key: events.SigningKey{ServerName: "test", KeyID: "ed25519:1", Private: priv},
		Server: "test", Config: rooms.Config{Encryption: "optional"}, Log: zerolog.Nop(), Notify: n, CommitHook: commits,
	})
	if err != nil {
		t.Fatal(err)
	}
	acct := newMemAccountData(db, n)
	stopping := make(chan struct{})
	cfg := DefaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	ps, err := New(ctx, Deps{DB: db, Rooms: rs, AccountData: acct, Notify: n, Config: cfg, Log: zerolog.Nop(), Stopping: stopping, Commits: commits})
	if err != nil {
		t.Fatal(err)
	}
	ss := chatsync.New(chatsync.Deps{DB: db, Rooms: rs, AccountData: ps.WithRules(acct), Notifier: n, Unread: ps,
		Log: zerolog.Nop(), Stopping: stopping})
	if err := ss.Init(ctx); err != nil {
		t.Fatal(err)
	}
	ps.Start()
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	rs.Routes(r, authtest.Middleware, nil)
	ss.Routes(r, authtest.Middleware)
	ps.Routes(r, authtest.Middleware)
	ts := &testServer{t: t, db: db, rooms: rs, sync: ss, push: ps, acct: acct, srv: httptest.NewServer(r)}
	var once sync.Once
	ts.close = func() { once.Do(func() { close(stopping); ts.srv.Close(); db.Close() }) }
	t.Cleanup(ts.close)
	return ts
}

// do sends a request as user and decodes the JSON answer.
func (ts *testServer) do(user, method, path string, body any) (int, map[string]any) {
	ts.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
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
	if err := json.Unmarshal(raw, &out); err != nil {
		ts.t.Fatalf("%s %s: not JSON: %q", method, path, raw)
	}
	return resp.StatusCode, out
}

func (ts *testServer) must(user, method, path string, body any) map[string]any {
	ts.t.Helper()
	code, out := ts.do(user, method, path, body)
	if code != http.StatusOK {
		ts.t.Fatalf("%s %s as %s: %d %v", method, path, user, code, out)
	}
	return out
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
