// Package servertest runs the whole server in-process for package tests:
// every service wired by server/app exactly as cmd/chatalot wires it, on a
// SQLite database in a test's directory (a PostgreSQL one with
// CHATALOT_TEST_DATABASE=postgres, see pgtest.Location), behind an
// httptest server. Users
// are real accounts with real access tokens.
//
// Only external test packages (package rooms_test, …) can use it: it
// imports every domain package, so an internal test of one of them would
// import itself.
package servertest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chatalot/chatalot/admin"
	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/push"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/schedule"
	"github.com/chatalot/chatalot/server/app"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	chatsync "github.com/chatalot/chatalot/sync"
	"github.com/rs/zerolog"
)

// ServerName is the server name of every test server.
const ServerName spec.ServerName = "test"

// DeviceID is the device every test account logs in with.
const DeviceID = "DEV"

// Password is every test account's password.
const Password = "correct horse battery staple"

// key is the signing key every test server shares, as a restarted server
// keeps its key.
var key = func() events.SigningKey {
	_, priv, _ := ed25519.GenerateKey(nil)
	return events.SigningKey{ServerName: string(ServerName), KeyID: "ed25519:1", Private: priv}
}()

// Option changes the configuration of a test server.
type Option func(*app.Config)

// Schedule sets the scheduler's limits.
func Schedule(c schedule.Config) Option { return func(a *app.Config) { a.Schedule = c } }

// Rooms sets the rooms configuration (encryption, room versions, limits).
func Rooms(c rooms.Config) Option { return func(a *app.Config) { a.Rooms = c } }

// Config is the configuration of a test server: the binary's defaults but
// open registration, no rate limits, the cheapest password hashes allowed
// and encryption optional (tests send plaintext).
func Config(dir string) app.Config {
	ac := auth.DefaultConfig()
	ac.Registration, ac.RateLimits = auth.RegistrationOpen, false
	ac.Argon2 = auth.MinArgon2
	return app.Config{
		ServerName: ServerName,
		BaseURL:    "http://localhost",
		Version:    "test",
		MediaDir:   filepath.Join(dir, "media"),
		Rooms:      rooms.Config{Encryption: "optional"},
		Auth:       ac,
		Sync:       chatsync.Config{Presence: true},
		Push:       push.DefaultConfig(),
		Admin:      admin.Config{Version: "test"},
		Schedule:   schedule.DefaultConfig(),
		Router:     api.Options{Log: zerolog.Nop()},
	}
}

// Server is one running test server.
type Server struct {
	*app.App
	t        testing.TB
	Dir      string // the database's directory: New(t, Dir) is a restart
	DB       *storage.DB
	HTTP     *httptest.Server
	URL      string
	stopping chan struct{}
	once     sync.Once

	mu     sync.Mutex
	tokens map[deviceKey]string
}

type deviceKey struct {
	user   spec.UserID
	device string
}

// New starts a server on the database in dir (a fresh one in t.TempDir()
// if dir is ""); it stops when the test ends, or at Close.
func New(t testing.TB, dir string, opts ...Option) *Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	db, err := storage.Open(pgtest.Location(t, dir, "chatalot.db"), storage.Options{FilePath: filepath.Join(dir, "chatalot.db")})
	if err != nil {
		t.Fatal(err)
	}
	return start(t, dir, db, opts)
}

// NewNode starts one node of a cluster (docs/scaling.md): a server on the
// PostgreSQL database at dsn, opened as the node named node. Each node has
// a directory of its own (its media). It stops when the test ends, or at
// Close.
func NewNode(t testing.TB, dsn, node string, opts ...Option) *Server {
	t.Helper()
	db, err := storage.Open(dsn, storage.Options{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	return start(t, t.TempDir(), db, opts)
}

// start migrates db and runs the server on it.
func start(t testing.TB, dir string, db *storage.DB, opts []Option) *Server {
	t.Helper()
	ctx := context.Background()
	var err error
	if err := db.Migrate(ctx, app.Schemas...); err != nil {
		t.Fatal(err)
	}
	cfg := Config(dir)
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{t: t, Dir: dir, DB: db, stopping: make(chan struct{}), tokens: map[deviceKey]string{}}
	if s.App, err = app.New(ctx, cfg, app.Deps{DB: db, Key: key, Log: zerolog.Nop(), Stopping: s.stopping}); err != nil {
		db.Close()
		t.Fatal(err)
	}
	s.HTTP = httptest.NewServer(s.Router)
	s.URL = s.HTTP.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the workers, the HTTP server and the database, as a
// shutdown does. It may be called more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.stopping)
		s.HTTP.Close()
		s.DB.Close()
	})
}

// Token returns an access token of user's device DeviceID, registering
// the account (or logging in to it, on a server restarted on the same
// database) at first use.
func (s *Server) Token(user spec.UserID) string {
	s.t.Helper()
	return s.DeviceToken(user, DeviceID)
}

// DeviceToken is Token for another device of the user: the first use logs
// the device in.
func (s *Server) DeviceToken(user spec.UserID, device string) string {
	s.t.Helper()
	key := deviceKey{user, device}
	s.mu.Lock()
	tok, ok := s.tokens[key]
	s.mu.Unlock()
	if ok {
		return tok
	}
	local := strings.TrimPrefix(strings.SplitN(string(user), ":", 2)[0], "@")
	code, out := s.Do("", http.MethodPost, "/_matrix/client/v3/register", map[string]any{
		"username": local, "password": Password, "device_id": device, "auth": map[string]string{"type": "m.login.dummy"},
	})
	if code == http.StatusBadRequest && out["errcode"] == string(spec.ErrUserInUse) {
		code, out = s.Do("", http.MethodPost, "/_matrix/client/v3/login", map[string]any{
			"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": local}, "password": Password, "device_id": device,
		})
	}
	tok, _ = out["access_token"].(string)
	if code != http.StatusOK || tok == "" {
		s.t.Fatalf("servertest: account %s: %d %v", user, code, out)
	}
	s.mu.Lock()
	s.tokens[key] = tok
	s.mu.Unlock()
	return tok
}

// MakeAdmin makes user (registered at first use) a server admin, as the
// admin CLI does.
func (s *Server) MakeAdmin(user spec.UserID) {
	s.t.Helper()
	s.Token(user)
	if err := s.Admin.SetAdmin(context.Background(), admin.CLIActor, user, true); err != nil {
		s.t.Fatal(err)
	}
}

// Do sends a request with the access token (none if "") and a JSON body
// (none if nil), and returns the status and the decoded JSON answer (nil
// if the answer is not a JSON object).
func (s *Server) Do(token, method, path string, body any) (int, map[string]any) {
	s.t.Helper()
	code, raw := s.DoRaw(token, method, path, body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return code, out
}

// Raw is a request body sent as it is, not encoded as JSON.
type Raw string

// DoRaw is Do with the answer's body as it came.
func (s *Server) DoRaw(token, method, path string, body any) (int, []byte) {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case Raw:
		rd = strings.NewReader(string(b))
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, s.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// DoAs sends a request as who: "" for no access token, a user ID for its
// device DeviceID, "USER|DEVICE" for another device (see DeviceToken). A
// string or []byte body is sent as it is, anything else as JSON. It returns
// the status and the answer's body as it came.
func (s *Server) DoAs(who, method, path string, body any) (int, []byte) {
	s.t.Helper()
	switch b := body.(type) {
	case string:
		body = Raw(b)
	case []byte:
		body = Raw(b)
	}
	tok := ""
	if who != "" {
		user, device, _ := strings.Cut(who, "|")
		if device == "" {
			device = DeviceID
		}
		tok = s.DeviceToken(spec.UserID(user), device)
	}
	return s.DoRaw(tok, method, path, body)
}

// JSONAs is DoAs with the answer decoded; an answer that is not JSON fails
// the test.
func (s *Server) JSONAs(who, method, path string, body any) (int, map[string]any) {
	s.t.Helper()
	code, raw := s.DoAs(who, method, path, body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		s.t.Fatalf("%s %s: not JSON: %q", method, path, raw)
	}
	return code, out
}

// MustJSON is JSONAs that fails the test unless the status is 200.
func (s *Server) MustJSON(who, method, path string, body any) map[string]any {
	s.t.Helper()
	code, out := s.JSONAs(who, method, path, body)
	if code != http.StatusOK {
		s.t.Fatalf("%s %s as %s: %d %v", method, path, who, code, out)
	}
	return out
}

// CreateRoom creates a room as who with the createRoom body (nil: {}) and
// returns its ID.
func (s *Server) CreateRoom(who string, body map[string]any) string {
	s.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	return s.MustJSON(who, http.MethodPost, "/_matrix/client/v3/createRoom", body)["room_id"].(string)
}

// As sends a request as user (see Token; anonymous if user is "").
func (s *Server) As(user spec.UserID, method, path string, body any) (int, map[string]any) {
	s.t.Helper()
	tok := ""
	if user != "" {
		tok = s.Token(user)
	}
	return s.Do(tok, method, path, body)
}
