package admin_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/chatalot/chatalot/admin"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// testEnv is the whole server (internal/servertest), plus a second admin
// service in CLI mode on the same database, as `chatalot admin` would open
// it.
type testEnv struct {
	*servertest.Server
	t    *testing.T
	db   *storage.DB
	auth *auth.Service
	svc  *admin.Service
	cli  *admin.Service
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	s := servertest.New(t, "")
	// The CLI has its own auth service (its own, empty, session cache).
	cfg := servertest.Config("").Auth
	cliAuth, err := auth.New(auth.Deps{DB: s.DB, ServerName: servertest.ServerName, Config: cfg, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := admin.New(context.Background(), admin.Deps{DB: s.DB, ServerName: servertest.ServerName, Auth: cliAuth, Log: zerolog.Nop(), CLI: true})
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{Server: s, t: t, db: s.DB, auth: s.Auth, svc: s.Admin, cli: cli}
}

func (e *testEnv) do(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	code, raw := e.DoRaw(token, method, path, body)
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return code, out
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
	_, total, err := e.svc.AuditLog(context.Background(), admin.AuditFilter{})
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
	boss := admin.Actor{User: "@boss:test"}
	if err := e.svc.SetAdmin(ctx, boss, "@nobody:test", true); err == nil {
		t.Fatal("made an unknown user admin")
	}
	if n := e.auditCount(); n != 0 {
		t.Fatalf("%d audit rows after a failed action", n)
	}
	if err := e.svc.SetAdmin(ctx, boss, "@alice:test", true); err != nil {
		t.Fatal(err)
	}
	list, total, err := e.svc.AuditLog(ctx, admin.AuditFilter{})
	if err != nil || total != 1 || list[0].Actor != "@boss:test" || list[0].Action != "set_admin" ||
		list[0].Target != "@alice:test" || list[0].Origin != "api" || list[0].Details["admin"] != true {
		t.Fatalf("audit: %v %d %v", list, total, err)
	}
	// A write that fails after the audit row was attached takes it along.
	actx, finish := e.svc.AuditForTest(ctx, boss, "test_action", "x", nil, nil)
	werr := e.db.Write(actx, func(tx *storage.Tx) error { return spec.NotFound("gone") })
	if err := finish(werr); err == nil || e.auditCount() != 1 {
		t.Fatalf("a failed write recorded its action: %v, %d rows", err, e.auditCount())
	}
	// An action that writes nothing of its own is still recorded.
	_, finish = e.svc.AuditForTest(ctx, boss, "test_action", "y", nil, nil)
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
	if err := e.cli.Deactivate(ctx, admin.CLIActor, "@alice:test", false); err != nil {
		t.Fatal(err)
	}
	if err := e.cli.SetAdmin(ctx, admin.CLIActor, "@bob:test", true); err != nil {
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
	if left, err := e.svc.PendingFollowupsForTest(ctx); err != nil || len(left) != 0 {
		t.Fatalf("follow-ups left: %v %v", left, err)
	}
	list, _, _ := e.svc.AuditLog(ctx, admin.AuditFilter{Actor: "cli"})
	if len(list) != 2 || list[0].Origin != "cli" {
		t.Fatalf("CLI audit rows: %v", list)
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
	if err := e.svc.SetAdmin(ctx, admin.Actor{User: "@boss:test"}, "@boss:test", true); err != nil {
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
	if err := e.cli.ResetPassword(ctx, admin.CLIActor, "@carol:test", "another good password", true, ""); err != nil {
		t.Fatal(err)
	}
	if !e.svc.ApplyFollowups(ctx) {
		t.Fatal("the follow-up was not applied")
	}
	if got := tryLogin(lt); got != 403 {
		t.Fatalf("a login token survived the CLI's reset: %d", got)
	}
}
