package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// testServer is the auth service on a real SQLite database in a temporary
// directory, behind the real router, driven in process.
type testServer struct {
	t      testing.TB
	svc    *Service
	db     *storage.DB
	router *gin.Engine
	notes  *recordingNotifier
	rooms  *recordingRooms
	devs   *recordingDevices
}

const serverName = "test.local"

type option func(*Config)

func withRegistration(mode string) option { return func(c *Config) { c.Registration = mode } }
func withRateLimits(rates map[string]Rate) option {
	return func(c *Config) { c.RateLimits = true; c.Rates = rates }
}

// fastHashes swaps in cheap Argon2 parameters so that package tests do not
// spend most of their time hashing; tests about hashing keep real ones.
var fastParams = Argon2Params{MemoryKiB: 64, Iterations: 1, Parallelism: 1}

func newTestServer(t testing.TB, opts ...option) *testServer {
	return newTestServerHashing(t, true, opts...)
}

func newTestServerHashing(t testing.TB, fast bool, opts ...option) *testServer {
	t.Helper()
	db, err := storage.Open(pgtest.Location(t, t.TempDir(), "chatalot.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background(), Schema); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Registration = RegistrationOpen
	cfg.RateLimits = false
	for _, o := range opts {
		o(&cfg)
	}
	ts := &testServer{t: t, db: db, notes: &recordingNotifier{}, rooms: &recordingRooms{}, devs: &recordingDevices{}}
	svc, err := New(Deps{DB: db, ServerName: serverName, Config: cfg, Log: zerolog.Nop(),
		Notify: ts.notes, Rooms: ts.rooms, Devices: ts.devs})
	if err != nil {
		t.Fatal(err)
	}
	if fast {
		if svc.hasher, err = newHasher(fastParams, cfg.HashConcurrency, cfg.HashQueue); err != nil {
			t.Fatal(err)
		}
	}
	ts.svc = svc
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	svc.Routes(r)
	// A route of "another package" protected by Reauthenticate.
	r.POST("/_test/uia", svc.Middleware(), api.Handle(func(c *gin.Context) error {
		body, _ := io.ReadAll(c.Request.Body)
		finish, err := svc.Reauthenticate(c, DeviceFrom(c), body)
		if err != nil {
			return err
		}
		finish()
		c.JSON(http.StatusOK, gin.H{"ok": true})
		return nil
	}))
	r.POST("/_test/send", svc.Middleware(), svc.Limiter().PerUser(RateSend), func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{})
	})
	ts.router = r
	return ts
}

// resp is an answer: status and decoded JSON body.
type resp struct {
	Status int
	Body   map[string]any
	Header http.Header
	Raw    string
}

func (r resp) errcode() string { s, _ := r.Body["errcode"].(string); return s }
func (r resp) str(k string) string {
	s, _ := r.Body[k].(string)
	return s
}

// do sends a request. body is a string (sent as is) or a value (JSON).
func (ts *testServer) do(method, path, token string, body any) resp {
	return ts.doFrom("192.0.2.1:1234", method, path, token, body)
}

func (ts *testServer) doFromHeader(remote, xff, method, path string) resp {
	req := httptest.NewRequest(method, path, nil)
	req.RemoteAddr = remote
	req.Header.Set("X-Forwarded-For", xff)
	w := httptest.NewRecorder()
	ts.router.ServeHTTP(w, req)
	return resp{Status: w.Code, Header: w.Header(), Raw: w.Body.String()}
}

func (ts *testServer) doFrom(remote, method, path, token string, body any) resp {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			ts.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = remote
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	ts.router.ServeHTTP(w, req)
	out := resp{Status: w.Code, Header: w.Header(), Raw: w.Body.String()}
	_ = json.Unmarshal(w.Body.Bytes(), &out.Body)
	return out
}

// must fails the test unless the answer has the wanted status.
func (r resp) must(t testing.TB, status int) resp {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Raw)
	}
	return r
}

// mustErr fails the test unless the answer is the wanted Matrix error.
func (r resp) mustErr(t testing.TB, status int, code string) resp {
	t.Helper()
	if r.Status != status || r.errcode() != code {
		t.Fatalf("got %d %s, want %d %s: %s", r.Status, r.errcode(), status, code, r.Raw)
	}
	return r
}

const v3 = "/_matrix/client/v3"

// register creates an account through open registration and returns its
// access token and device ID.
func (ts *testServer) register(name, password string) (token, deviceID string) {
	ts.t.Helper()
	body := map[string]any{"username": name, "password": password}
	r := ts.do("POST", v3+"/register", "", body).must(ts.t, 401)
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": r.str("session")}
	r = ts.do("POST", v3+"/register", "", body).must(ts.t, 200)
	return r.str("access_token"), r.str("device_id")
}

func (ts *testServer) login(name, password string) resp {
	return ts.do("POST", v3+"/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": name}, "password": password,
	})
}

// uia runs a UIA-protected request through its password stage.
func (ts *testServer) uia(method, path, token string, body map[string]any, user, password string) resp {
	ts.t.Helper()
	var first any
	if body != nil {
		first = body
	}
	r := ts.do(method, path, token, first)
	if r.Status != 401 {
		return r
	}
	b := map[string]any{}
	for k, v := range body {
		b[k] = v
	}
	b["auth"] = map[string]any{"type": "m.login.password", "session": r.str("session"), "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": user}}
	return ts.do(method, path, token, b)
}

func (ts *testServer) countUsers() int {
	var n int
	if err := ts.db.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n); err != nil {
		ts.t.Fatal(err)
	}
	return n
}

type recordingNotifier struct {
	mu    sync.Mutex
	calls []int64
}

func (n *recordingNotifier) Notify(pos int64, _ wake.Change, users ...spec.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, pos)
}

type recordingRooms struct {
	mu       sync.Mutex
	left     []spec.UserID
	profiles []string
	sharing  map[[2]spec.UserID]bool
	joined   map[spec.UserID][]spec.RoomID
}

func (r *recordingRooms) LeaveAllRooms(ctx context.Context, user spec.UserID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.left = append(r.left, user)
	return nil
}

func (r *recordingRooms) ProfileChanged(ctx context.Context, user spec.UserID, dn, av string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.profiles = append(r.profiles, dn+"|"+av)
	return nil
}

// InDirectoryOf: users see each other when a test says so (sharing).
func (r *recordingRooms) InDirectoryOf(a, b spec.UserID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sharing[[2]spec.UserID{a, b}] || r.sharing[[2]spec.UserID{b, a}]
}

// JoinedRooms: the rooms a test says the user is joined to.
func (r *recordingRooms) JoinedRooms(user spec.UserID) []spec.RoomID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.joined[user]
}

type recordingDevices struct {
	mu      sync.Mutex
	added   []string
	updated []string
	deleted []string
}

func (d *recordingDevices) DeviceAdded(ctx context.Context, user spec.UserID, id, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.added = append(d.added, id)
	return nil
}

func (d *recordingDevices) DeviceUpdated(ctx context.Context, user spec.UserID, id, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.updated = append(d.updated, id+"="+name)
	return nil
}

func (d *recordingDevices) DeviceDeleted(ctx context.Context, user spec.UserID, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deleted = append(d.deleted, id)
	return nil
}

func (d *recordingDevices) deletedCopy() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.deleted...)
}
