package auth_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/spec"
)

// Two nodes of a cluster on one PostgreSQL database (docs/scaling.md, step
// 2): a token issued on one node works on the other, a revocation on one
// reaches the other's cache, and account data set on one wakes /sync on
// the other.

const alice = spec.UserID("@alice:test")

// hasAccountData reports whether a /sync answer's global account data
// holds an event of the type with the content's "v".
func hasAccountData(res map[string]any, typ, v string) bool {
	ad, _ := res["account_data"].(map[string]any)
	list, _ := ad["events"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		c, _ := m["content"].(map[string]any)
		if m["type"] == typ && c["v"] == v {
			return true
		}
	}
	return false
}

func TestClusterAuthFollows(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := servertest.NewNode(t, dsn, "a")
	b := servertest.NewNode(t, dsn, "b")

	// Registered on A after B started: B finds the token in the database.
	tok := a.Token(alice)
	code, who := b.Do(tok, http.MethodGet, "/_matrix/client/v3/account/whoami", nil)
	if code != http.StatusOK || who["user_id"] != string(alice) {
		t.Fatalf("B's whoami with A's token: %d %v", code, who)
	}
	// A made-up token is still refused.
	if code, out := b.Do("cha_madeup", http.MethodGet, "/_matrix/client/v3/account/whoami", nil); code != http.StatusUnauthorized || out["errcode"] != string(spec.ErrUnknownToken) {
		t.Fatalf("B's whoami with a made-up token: %d %v", code, out)
	}

	// Account data set on A wakes a long-poll on B.
	initial, err := b.SyncQuery(tok, "")
	if err != nil {
		t.Fatal(err)
	}
	since := initial["next_batch"].(string)
	b.WokenSync(t, tok, &since, func() {
		a.MustJSON(string(alice), http.MethodPut, "/_matrix/client/v3/user/"+url.PathEscape(string(alice))+"/account_data/org.example.setting",
			map[string]any{"v": "from A"})
	}, func(res map[string]any) bool { return hasAccountData(res, "org.example.setting", "from A") }, "A's account data")
	// And an initial sync on B shows it, as does B's GET.
	if initial, err = b.SyncQuery(tok, ""); err != nil || !hasAccountData(initial, "org.example.setting", "from A") {
		t.Fatalf("B's initial sync lacks A's account data: %v %v", err, initial["account_data"])
	}

	// A second device's token, cached on B by use, then logged out on A:
	// B refuses it within a bounded wait; the first device's token still
	// works on B.
	other := a.DeviceToken(alice, "OTHER")
	if code, _ := b.Do(other, http.MethodGet, "/_matrix/client/v3/account/whoami", nil); code != http.StatusOK {
		t.Fatalf("B's whoami with the second device's token: %d", code)
	}
	if code, out := a.Do(other, http.MethodPost, "/_matrix/client/v3/logout", map[string]any{}); code != http.StatusOK {
		t.Fatalf("logout on A: %d %v", code, out)
	}
	waitRefused(t, b, other)
	if code, _ := b.Do(tok, http.MethodGet, "/_matrix/client/v3/account/whoami", nil); code != http.StatusOK {
		t.Fatalf("B refuses the token of a device still logged in: %d", code)
	}

	// Logging out on B reaches A's cache the same way.
	if code, _ := a.Do(tok, http.MethodGet, "/_matrix/client/v3/account/whoami", nil); code != http.StatusOK {
		t.Fatalf("A's whoami: %d", code)
	}
	if code, out := b.Do(tok, http.MethodPost, "/_matrix/client/v3/logout", map[string]any{}); code != http.StatusOK {
		t.Fatalf("logout on B: %d %v", code, out)
	}
	waitRefused(t, a, tok)

	// A password change on A (logging out the other devices) and a
	// deactivation on A end the tokens cached on B.
	bob := spec.UserID("@bob:test")
	keep, other2 := a.Token(bob), a.DeviceToken(bob, "OTHER")
	for _, tk := range []string{keep, other2} {
		if code, _ := b.Do(tk, http.MethodGet, "/_matrix/client/v3/account/whoami", nil); code != http.StatusOK {
			t.Fatalf("B's whoami with bob's token: %d", code)
		}
	}
	newPassword := "a new password, long enough"
	withUIA(t, a, keep, "/_matrix/client/v3/account/password", map[string]any{"new_password": newPassword}, bob, servertest.Password)
	waitRefused(t, b, other2)
	if code, _ := b.Do(keep, http.MethodGet, "/_matrix/client/v3/account/whoami", nil); code != http.StatusOK {
		t.Fatalf("B refuses the token of the device that changed the password: %d", code)
	}
	withUIA(t, a, keep, "/_matrix/client/v3/account/deactivate", map[string]any{}, bob, newPassword)
	waitRefused(t, b, keep)
}

// withUIA posts body with the token, completing user-interactive auth
// with the password, and fails unless it answers 200.
func withUIA(t *testing.T, s *servertest.Server, token, path string, body map[string]any, user spec.UserID, password string) {
	t.Helper()
	code, out := s.Do(token, http.MethodPost, path, body)
	if code == http.StatusUnauthorized {
		body["auth"] = map[string]any{"type": "m.login.password", "session": out["session"], "password": password,
			"identifier": map[string]any{"type": "m.id.user", "user": string(user)}}
		code, out = s.Do(token, http.MethodPost, path, body)
	}
	if code != http.StatusOK {
		t.Fatalf("POST %s: %d %v", path, code, out)
	}
}

// waitRefused waits until a node refuses a token with 401 M_UNKNOWN_TOKEN.
func waitRefused(t *testing.T, s *servertest.Server, token string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out := s.Do(token, http.MethodGet, "/_matrix/client/v3/account/whoami", nil)
		if code == http.StatusUnauthorized && out["errcode"] == string(spec.ErrUnknownToken) && out["soft_logout"] == false {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked token is still answered %d %v", code, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An m.login.token issued on one node logs in on the other, once.
func TestClusterLoginTokenHopsNodes(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := servertest.NewNode(t, dsn, "a")
	b := servertest.NewNode(t, dsn, "b")
	tok := a.Token(alice)
	const path = "/_matrix/client/v1/login/get_token"
	code, first := a.Do(tok, http.MethodPost, path, map[string]any{})
	session, _ := first["session"].(string)
	if code != http.StatusUnauthorized || session == "" {
		t.Fatalf("get_token's first step: %d %v", code, first)
	}
	code, out := a.Do(tok, http.MethodPost, path, map[string]any{"auth": map[string]any{
		"type": "m.login.password", "session": session, "password": servertest.Password,
		"identifier": map[string]any{"type": "m.id.user", "user": string(alice)},
	}})
	lt, _ := out["login_token"].(string)
	if code != http.StatusOK || lt == "" {
		t.Fatalf("get_token on A: %d %v", code, out)
	}
	login := map[string]any{"type": "m.login.token", "token": lt}
	if code, out := b.Do("", http.MethodPost, "/_matrix/client/v3/login", login); code != http.StatusOK || out["user_id"] != string(alice) {
		t.Fatalf("login on B with A's login token: %d %v", code, out)
	}
	// Used up, on either node.
	for _, n := range []*servertest.Server{a, b} {
		if code, out := n.Do("", http.MethodPost, "/_matrix/client/v3/login", login); code != http.StatusForbidden || out["errcode"] != string(spec.ErrForbidden) {
			t.Fatalf("a second login with the token: %d %v", code, out)
		}
	}
}
