package admin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// testEnv is the admin package on a real database with real auth and
// rooms services and a router, plus a second admin service in CLI mode on
// the same database, as `chatalot admin` would open it.
type testEnv struct {
	t    *testing.T
	db   *storage.DB
	auth *auth.Service
	svc  *Service
	cli  *Service
	srv  *httptest.Server
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	db, err := storage.Open(filepath.Join(t.TempDir(), "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := db.Migrate(ctx, auth.Schema, rooms.Schema, Schema); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	policy, err := NewPolicy(ctx, db, false)
	if err != nil {
		t.Fatal(err)
	}
	roomsSvc, err := rooms.New(ctx, rooms.Deps{DB: db, Key: events.SigningKey{ServerName: "test", KeyID: "ed25519:1", Private: priv},
		Server: "test", Log: zerolog.Nop(), Profiles: auth.NewUserReader(db), Guard: policy.GuardMembership})
	if err != nil {
		t.Fatal(err)
	}
	cfg := auth.DefaultConfig()
	cfg.Registration, cfg.RateLimits = auth.RegistrationOpen, false
	authSvc, err := auth.New(auth.Deps{DB: db, ServerName: "test", Config: cfg, Log: zerolog.Nop(), Rooms: roomsSvc,
		Policy: policy.ForRequests(roomsSvc)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(ctx, Deps{DB: db, ServerName: "test", Auth: authSvc, Rooms: roomsSvc, Log: zerolog.Nop(), Config: Config{Version: "test"}, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	// The CLI has its own auth service (its own, empty, session cache).
	cliAuth, err := auth.New(auth.Deps{DB: db, ServerName: "test", Config: cfg, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := New(ctx, Deps{DB: db, ServerName: "test", Auth: cliAuth, Log: zerolog.Nop(), CLI: true})
	if err != nil {
		t.Fatal(err)
	}
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	authSvc.Routes(r)
	roomsSvc.Routes(r, authSvc.Middleware(), nil)
	svc.Routes(r, authSvc.Middleware())
	e := &testEnv{t: t, db: db, auth: authSvc, svc: svc, cli: cli, srv: httptest.NewServer(r)}
	t.Cleanup(func() { e.srv.Close(); db.Close() })
	return e
}

func (e *testEnv) do(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(b))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *testEnv) register(name string) string {
	e.t.Helper()
	code, out := e.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": name,
		"password": "correct horse battery staple", "auth": map[string]string{"type": "m.login.dummy"}})
	if code != 200 {
		e.t.Fatalf("register: %d %v", code, out)
	}
	return out["access_token"].(string)
}

func (e *testEnv) auditCount() int {
	e.t.Helper()
	_, total, err := e.svc.AuditLog(context.Background(), AuditFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return total
}

// TestAuditRowCommitsWithTheAction: a failed action leaves no audit row; a
// successful one leaves exactly one, in the action's own transaction.
func TestAuditRowCommitsWithTheAction(t *testing.T) {
	e := newTestEnv(t)
	e.register("alice")
	ctx := context.Background()
	boss := Actor{User: "@boss:test"}
	if err := e.svc.SetAdmin(ctx, boss, "@nobody:test", true); err == nil {
		t.Fatal("made an unknown user admin")
	}
	if n := e.auditCount(); n != 0 {
		t.Fatalf("%d audit rows after a failed action", n)
	}
	if err := e.svc.SetAdmin(ctx, boss, "@alice:test", true); err != nil {
		t.Fatal(err)
	}
	list, total, err := e.svc.AuditLog(ctx, AuditFilter{})
	if err != nil || total != 1 || list[0].Actor != "@boss:test" || list[0].Action != "set_admin" ||
		list[0].Target != "@alice:test" || list[0].Origin != "api" || list[0].Details["admin"] != true {
		t.Fatalf("audit: %v %d %v", list, total, err)
	}
	// A write that fails after the audit row was attached takes it along.
	actx, finish := e.svc.audit(ctx, boss, "test_action", "x", nil, nil)
	werr := e.db.Write(actx, func(tx *storage.Tx) error { return spec.NotFound("gone") })
	if err := finish(werr); err == nil || e.auditCount() != 1 {
		t.Fatalf("a failed write recorded its action: %v, %d rows", err, e.auditCount())
	}
	// An action that writes nothing of its own is still recorded.
	_, finish = e.svc.audit(ctx, boss, "test_action", "y", nil, nil)
	if err := finish(nil); err != nil || e.auditCount() != 2 {
		t.Fatalf("an action without writes: %v, %d rows", err, e.auditCount())
	}
}

// TestCLIFollowupsReachTheServer: the CLI deactivates an account and makes
// another admin; the server's cached sessions follow once it applies the
// queued follow-ups, and the queue empties.
func TestCLIFollowupsReachTheServer(t *testing.T) {
	e := newTestEnv(t)
	alice := e.register("alice")
	bob := e.register("bob")
	ctx := context.Background()
	if err := e.cli.Deactivate(ctx, CLIActor, "@alice:test", false); err != nil {
		t.Fatal(err)
	}
	if err := e.cli.SetAdmin(ctx, CLIActor, "@bob:test", true); err != nil {
		t.Fatal(err)
	}
	// The server has not looked yet: its cache still knows the old state.
	if code, _ := e.do("GET", "/_matrix/client/v3/account/whoami", alice, nil); code != 200 {
		t.Fatalf("whoami before the follow-up: %d", code)
	}
	if code, _ := e.do("GET", "/_synapse/admin/v1/server_version", bob, nil); code != 403 {
		t.Fatalf("server_version before the follow-up: %d", code)
	}
	if !e.svc.ApplyFollowups(ctx) {
		t.Fatal("follow-ups stopped")
	}
	if code, out := e.do("GET", "/_matrix/client/v3/account/whoami", alice, nil); code != 401 || out["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("whoami after the follow-up: %d %v", code, out)
	}
	if code, _ := e.do("GET", "/_synapse/admin/v1/server_version", bob, nil); code != 200 {
		t.Fatalf("server_version after the follow-up: %d", code)
	}
	if left, err := e.svc.pendingFollowups(ctx); err != nil || len(left) != 0 {
		t.Fatalf("follow-ups left: %v %v", left, err)
	}
	list, _, _ := e.svc.AuditLog(ctx, AuditFilter{Actor: "cli"})
	if len(list) != 2 || list[0].Origin != "cli" {
		t.Fatalf("CLI audit rows: %v", list)
	}
}

// TestSuspendedRouteClassification: what a suspended account may and may
// not do, by route shape.
func TestSuspendedRouteClassification(t *testing.T) {
	s := &Service{}
	cases := []struct {
		method, route string
		denied        bool
	}{
		{"GET", "/_matrix/client/v3/sync", false},
		{"GET", "/_matrix/client/v3/rooms/:roomId/messages", false},
		{"POST", "/_matrix/client/v3/rooms/:roomId/leave", false},
		{"POST", "/_matrix/client/v3/rooms/:roomId/forget", false},
		{"POST", "/_matrix/client/v3/logout", false},
		{"POST", "/_matrix/client/v3/keys/upload", false},
		{"PUT", "/_matrix/client/v3/room_keys/keys", false},
		{"PUT", "/_matrix/client/v3/sendToDevice/:eventType/:txnId", false},
		{"POST", "/_matrix/client/v3/rooms/:roomId/receipt/:receiptType/:eventId", false},
		{"POST", "/_matrix/client/v3/account/deactivate", false},
		{"POST", "/_matrix/client/v3/delete_devices", false},
		{"POST", "/_matrix/client/v3/createRoom", true},
		{"POST", "/_matrix/client/v3/join/:roomIdOrAlias", true},
		{"POST", "/_matrix/client/v3/knock/:roomIdOrAlias", true},
		{"POST", "/_matrix/client/v3/rooms/:roomId/join", true},
		{"POST", "/_matrix/client/v3/rooms/:roomId/invite", true},
		{"POST", "/_matrix/client/v3/rooms/:roomId/kick", true},
		{"POST", "/_matrix/client/v3/rooms/:roomId/ban", true},
		{"PUT", "/_matrix/client/v3/rooms/:roomId/send/:eventType/:txnId", true},
		{"PUT", "/_matrix/client/v3/rooms/:roomId/state/:eventType/*stateKey", true},
		{"PUT", "/_matrix/client/r0/profile/:userId/:keyName", true},
		{"PUT", "/_matrix/client/v3/directory/room/:roomAlias", true},
		{"POST", "/_matrix/media/v3/upload", true},
		{"PUT", "/_matrix/client/v3/rooms/:roomId/redact/:eventId/:txnId", true}, // not their own
	}
	for _, c := range cases {
		r := gin.New()
		var got bool
		r.Handle(c.method, c.route, func(g *gin.Context) { got = s.suspendedMayNot(g, "@a:test") })
		path := c.route
		for _, p := range []string{":roomIdOrAlias", ":roomId", ":eventType", ":txnId", "*stateKey", ":userId", ":keyName", ":roomAlias", ":receiptType", ":eventId"} {
			path = replaceSeg(path, p)
		}
		req := httptest.NewRequest(c.method, path, nil)
		r.ServeHTTP(httptest.NewRecorder(), req)
		if got != c.denied {
			t.Errorf("%s %s: denied %v, want %v", c.method, c.route, got, c.denied)
		}
	}
	if !isLogout("/_matrix/client/v3/logout/all") || isLogout("/_matrix/client/v3/sync") {
		t.Fatal("isLogout")
	}
}

func replaceSeg(path, param string) string {
	out := []byte{}
	for i := 0; i < len(path); {
		if len(path)-i >= len(param) && path[i:i+len(param)] == param {
			out = append(out, 'x')
			i += len(param)
			continue
		}
		out = append(out, path[i])
		i++
	}
	return string(out)
}

// TestPage: paging slices and the next offset.
func TestPage(t *testing.T) {
	list := []int{1, 2, 3, 4, 5}
	for _, c := range []struct{ from, limit, n, next int }{
		{0, 2, 2, 2}, {2, 2, 2, 4}, {4, 2, 1, -1}, {5, 2, 0, -1}, {9, 2, 0, -1}, {0, 0, 0, -1}, {0, 10, 5, -1},
	} {
		got, next := page(list, c.from, c.limit)
		if len(got) != c.n || next != c.next {
			t.Errorf("page(from %d, limit %d) = %v, %d", c.from, c.limit, got, next)
		}
	}
}

// TestAdminPasswordResetRevokesLoginTokens: a login token alice took before
// an admin reset her password with logout_devices no longer logs in, through
// the API or through the CLI's follow-up (issue 19, item 3).
func TestAdminPasswordResetRevokesLoginTokens(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	const password = "correct horse battery staple"
	e.register("boss")
	if err := e.svc.SetAdmin(ctx, Actor{User: "@boss:test"}, "@boss:test", true); err != nil {
		t.Fatal(err)
	}
	_, out := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "boss", "password": password})
	boss := out["access_token"].(string)
	take := func(user, tok string) string {
		t.Helper()
		_, out := e.do("POST", "/_matrix/client/v1/login/get_token", tok, map[string]any{})
		code, out := e.do("POST", "/_matrix/client/v1/login/get_token", tok, map[string]any{"auth": map[string]any{
			"type": "m.login.password", "session": out["session"], "password": password,
			"identifier": map[string]any{"type": "m.id.user", "user": user}}})
		if code != 200 {
			t.Fatalf("get_token: %d %v", code, out)
		}
		return out["login_token"].(string)
	}
	tryLogin := func(lt string) int {
		code, _ := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": lt})
		return code
	}

	lt := take("alice", e.register("alice"))
	code, out := e.do("POST", "/_synapse/admin/v1/reset_password/@alice:test", boss, map[string]any{"new_password": "another good password", "logout_devices": true})
	if code != 200 {
		t.Fatalf("reset: %d %v", code, out)
	}
	if got := tryLogin(lt); got != 403 {
		t.Fatalf("a login token survived the admin's reset: %d", got)
	}

	// The CLI resets in another process; the server revokes what it holds
	// when it picks up the follow-up.
	lt = take("carol", e.register("carol"))
	if err := e.cli.ResetPassword(ctx, CLIActor, "@carol:test", "another good password", true, ""); err != nil {
		t.Fatal(err)
	}
	if !e.svc.ApplyFollowups(ctx) {
		t.Fatal("the follow-up was not applied")
	}
	if got := tryLogin(lt); got != 403 {
		t.Fatalf("a login token survived the CLI's reset: %d", got)
	}
}
