package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/storage"
)

func TestOpenRegistrationFlow(t *testing.T) {
	ts := newTestServer(t)
	body := map[string]any{"username": "alice", "password": "correct horse", "initial_device_display_name": "Phone"}
	r := ts.do("POST", v3+"/register", "", body).must(t, 401)
	if r.errcode() != "" {
		t.Fatalf("the first 401 must carry no errcode: %s", r.Raw)
	}
	if r.str("session") == "" || r.Raw == "" {
		t.Fatalf("no session: %s", r.Raw)
	}
	flows := r.Body["flows"].([]any)
	if len(flows) != 1 || flows[0].(map[string]any)["stages"].([]any)[0] != "m.login.dummy" {
		t.Fatalf("flows = %v", flows)
	}
	// A wrong stage is refused with M_FORBIDDEN inside a 401.
	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "x", "session": r.str("session")}
	ts.do("POST", v3+"/register", "", body).mustErr(t, 401, "M_FORBIDDEN")

	body["auth"] = map[string]any{"type": "m.login.dummy", "session": r.str("session")}
	r = ts.do("POST", v3+"/register", "", body).must(t, 200)
	if r.str("user_id") != "@alice:test.local" || r.str("device_id") == "" || len(r.str("access_token")) < 43 {
		t.Fatalf("register answer: %s", r.Raw)
	}
	who := ts.do("GET", v3+"/account/whoami", r.str("access_token"), nil).must(t, 200)
	if who.str("user_id") != "@alice:test.local" || who.str("device_id") != r.str("device_id") {
		t.Fatalf("whoami: %s", who.Raw)
	}
	aliceTok := r.str("access_token")
	devs := ts.do("GET", v3+"/devices", aliceTok, nil).must(t, 200)
	if d := devs.Body["devices"].([]any)[0].(map[string]any); d["display_name"] != "Phone" {
		t.Fatalf("devices: %s", devs.Raw)
	}
	// The session is used up.
	ts.do("POST", v3+"/register", "", map[string]any{"auth": body["auth"]}).mustErr(t, 400, "M_INVALID_PARAM")
	// The default display name is the localpart.
	p := ts.do("GET", v3+"/profile/@alice:test.local", aliceTok, nil).must(t, 200)
	if p.str("displayname") != "alice" {
		t.Fatalf("profile: %s", p.Raw)
	}
}

func TestRegistrationOptions(t *testing.T) {
	ts := newTestServer(t)
	reg := func(body map[string]any) resp {
		r := ts.do("POST", v3+"/register", "", body).must(t, 401)
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": r.str("session")}
		return ts.do("POST", v3+"/register", "", body)
	}
	// inhibit_login: an account, no session.
	r := reg(map[string]any{"username": "bob", "password": "password1", "inhibit_login": true}).must(t, 200)
	if r.str("user_id") != "@bob:test.local" || r.Body["access_token"] != nil || r.Body["device_id"] != nil {
		t.Fatalf("inhibit_login: %s", r.Raw)
	}
	ts.login("bob", "password1").must(t, 200)
	// device_id is kept.
	r = reg(map[string]any{"username": "carol", "password": "password1", "device_id": "MYDEVICE"}).must(t, 200)
	if r.str("device_id") != "MYDEVICE" {
		t.Fatalf("device_id: %s", r.Raw)
	}
	// No username: one is generated.
	r = reg(map[string]any{"password": "password1"}).must(t, 200)
	if len(r.str("user_id")) < 5 {
		t.Fatalf("generated: %s", r.Raw)
	}
	// Username and password given on the first request only are remembered.
	first := ts.do("POST", v3+"/register", "", map[string]any{"username": "dave", "password": "password1"}).must(t, 401)
	r = ts.do("POST", v3+"/register", "", map[string]any{"auth": map[string]any{"type": "m.login.dummy", "session": first.str("session")}}).must(t, 200)
	if r.str("user_id") != "@dave:test.local" {
		t.Fatalf("remembered: %s", r.Raw)
	}
	// Upper case is folded; taken and reserved names are refused before UIA.
	ts.do("POST", v3+"/register", "", map[string]any{"username": "DAVE", "password": "password1"}).mustErr(t, 400, "M_USER_IN_USE")
	ts.do("POST", v3+"/register", "", map[string]any{"username": "admin", "password": "password1"}).mustErr(t, 400, "M_USER_IN_USE")
	// Availability.
	ts.do("GET", v3+"/register/available?username=erin", "", nil).must(t, 200)
	ts.do("GET", v3+"/register/available?username=dave", "", nil).mustErr(t, 400, "M_USER_IN_USE")
	ts.do("GET", v3+"/register/available?username=a%20b", "", nil).mustErr(t, 400, "M_INVALID_USERNAME")
	ts.do("GET", v3+"/register/available", "", nil).mustErr(t, 400, "M_MISSING_PARAM")
	// Guests are refused.
	ts.do("POST", v3+"/register?kind=guest", "", map[string]any{}).mustErr(t, 403, "M_FORBIDDEN")
	// A request with no auth never succeeds, even with a complete session.
	if n := ts.countUsers(); n != 4 {
		t.Fatalf("%d users", n)
	}
}

func TestClosedRegistration(t *testing.T) {
	ts := newTestServer(t, withRegistration(RegistrationClosed))
	ts.do("POST", v3+"/register", "", map[string]any{"username": "x", "password": "password1"}).mustErr(t, 403, "M_FORBIDDEN")
	ts.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", "", nil).mustErr(t, 403, "M_FORBIDDEN")
	ts.do("GET", v3+"/register/available?username=x", "", nil).mustErr(t, 403, "M_FORBIDDEN")
	// Admins still create accounts.
	if _, err := ts.svc.CreateUser(context.Background(), "admin", "password1", true); err != nil {
		t.Fatal(err)
	}
	ts.login("admin", "password1").must(t, 200)
}

func regWithToken(ts *testServer, name, token string) resp {
	body := map[string]any{"username": name, "password": "password1"}
	r := ts.do("POST", v3+"/register", "", body)
	if r.Status != 401 {
		return r
	}
	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": token, "session": r.str("session")}
	return ts.do("POST", v3+"/register", "", body)
}

func TestTokenRegistration(t *testing.T) {
	ts := newTestServer(t, withRegistration(RegistrationByToken))
	ctx := context.Background()
	one := int64(1)
	if _, err := ts.svc.CreateRegistrationToken(ctx, "invite-1", &one, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.svc.CreateRegistrationToken(ctx, "old", nil, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	validity := func(tok string) bool {
		r := ts.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+tok, "", nil).must(t, 200)
		return r.Body["valid"].(bool)
	}
	if !validity("invite-1") || validity("old") || validity("nope") || validity("bad%20chars") {
		t.Fatal("validity before use")
	}
	r := ts.do("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "password1"}).must(t, 401)
	if st := r.Body["flows"].([]any)[0].(map[string]any)["stages"].([]any); len(st) != 1 || st[0] != "m.login.registration_token" {
		t.Fatalf("flows: %s", r.Raw)
	}
	// Dummy is not offered in token mode.
	ts.do("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "password1",
		"auth": map[string]any{"type": "m.login.dummy", "session": r.str("session")}}).mustErr(t, 401, "M_FORBIDDEN")

	for _, tc := range []struct{ name, token string }{
		{"unknown token", "nope"},
		{"expired token", "old"},
		{"token with bad characters", "in vite"},
		{"over-long token", string(make([]byte, 65))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			regWithToken(ts, "mallory", tc.token).mustErr(t, 401, "M_FORBIDDEN")
		})
	}
	r = regWithToken(ts, "alice", "invite-1").must(t, 200)
	info, found, err := ts.svc.RegistrationTokenInfo(ctx, "invite-1")
	if err != nil || !found || info.Completed != 1 || info.Pending != 0 {
		t.Fatalf("after use: %+v %v %v", info, found, err)
	}
	if validity("invite-1") {
		t.Fatal("used token still valid")
	}
	t.Run("used token", func(t *testing.T) {
		regWithToken(ts, "bob", "invite-1").mustErr(t, 401, "M_FORBIDDEN")
	})
	if n := ts.countUsers(); n != 1 {
		t.Fatalf("%d users", n)
	}
}

// A one-use token reserved by one UIA session is pending: a second session
// cannot take it, and if the first session's account creation fails, the
// use is not consumed.
func TestRegistrationTokenPendingAndAtomic(t *testing.T) {
	ts := newTestServer(t, withRegistration(RegistrationByToken))
	ctx := context.Background()
	one := int64(1)
	if _, err := ts.svc.CreateRegistrationToken(ctx, "solo", &one, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Fail each write step of the registration in turn (the token
	// reservation, then the account transaction), retrying with the same
	// UIA session as a client would.
	body := map[string]any{"username": "alice", "password": "password1"}
	session := ts.do("POST", v3+"/register", "", body).must(t, 401).str("session")
	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "solo", "session": session}
	failures := 0
	for step := 1; ; step++ {
		if step > 20 {
			t.Fatal("registration never succeeded")
		}
		s := step
		ts.db.SetFaultHook(func(n int) error {
			if n == s {
				return storage.ErrInjected
			}
			return nil
		})
		r := ts.do("POST", v3+"/register", "", body)
		ts.db.SetFaultHook(nil)
		if r.Status == 200 {
			break
		}
		failures++
		if ts.countUsers() != 0 {
			t.Fatalf("step %d: a user was left behind", s)
		}
		info, _, _ := ts.svc.RegistrationTokenInfo(ctx, "solo")
		if info.Completed != 0 {
			t.Fatalf("step %d: token use consumed: %+v", s, info)
		}
	}
	if failures < 4 || ts.countUsers() != 1 {
		t.Fatalf("%d failing steps, %d users", failures, ts.countUsers())
	}
	info, _, _ := ts.svc.RegistrationTokenInfo(ctx, "solo")
	if info.Completed != 1 || info.Pending != 0 {
		t.Fatalf("after success: %+v", info)
	}

	// Pending: sessions that completed the token stage hold its uses until
	// they finish or expire.
	two := int64(2)
	if _, err := ts.svc.CreateRegistrationToken(ctx, "duo", &two, time.Time{}); err != nil {
		t.Fatal(err)
	}
	hold := func(ttl time.Duration) *uiaSession {
		u := &uiaSession{op: "POST /v3/register", flows: [][]string{{stageRegToken}}}
		if err := ts.svc.uia.create(u); err != nil {
			t.Fatal(err)
		}
		u.expires = time.Now().Add(ttl)
		if err := ts.svc.reserveRegistrationToken(ctx, u, "duo"); err != nil {
			t.Fatal(err)
		}
		return u
	}
	hold(time.Hour)
	short := hold(time.Second)
	info, _, _ = ts.svc.RegistrationTokenInfo(ctx, "duo")
	if info.Pending != 2 || info.Completed != 0 {
		t.Fatalf("pending: %+v", info)
	}
	regWithToken(ts, "carol", "duo").mustErr(t, 401, "M_FORBIDDEN")
	// Once a reservation expires its use is free again.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(short.expires) {
		if time.Now().After(deadline) {
			t.Fatal("clock stuck")
		}
		time.Sleep(10 * time.Millisecond)
	}
	regWithToken(ts, "carol", "duo").must(t, 200)
}

func TestConcurrentOneUseToken(t *testing.T) {
	ts := newTestServer(t, withRegistration(RegistrationByToken))
	one := int64(1)
	if _, err := ts.svc.CreateRegistrationToken(context.Background(), "race", &one, time.Time{}); err != nil {
		t.Fatal(err)
	}
	const n = 16
	sessions := make([]string, n)
	for i := range sessions {
		sessions[i] = ts.do("POST", v3+"/register", "", map[string]any{}).must(t, 401).str("session")
	}
	var wg sync.WaitGroup
	results := make([]resp, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			results[i] = ts.do("POST", v3+"/register", "", map[string]any{
				"username": "user" + string(rune('a'+i)), "password": "password1",
				"auth": map[string]any{"type": "m.login.registration_token", "token": "race", "session": sessions[i]},
			})
		}(i)
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, r := range results {
		switch {
		case r.Status == 200:
			ok++
		case r.Status == 401 && r.errcode() == "M_FORBIDDEN":
		default:
			t.Fatalf("unexpected answer %d %s", r.Status, r.Raw)
		}
	}
	if ok != 1 || ts.countUsers() != 1 {
		t.Fatalf("%d successes, %d accounts; want exactly one", ok, ts.countUsers())
	}
}

func TestRegistrationTokenAdmin(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	tok, err := ts.svc.CreateRegistrationToken(ctx, "", nil, time.Time{})
	if err != nil || len(tok.Token) != 16 || !validTokenString(tok.Token) {
		t.Fatalf("%+v %v", tok, err)
	}
	if _, err := ts.svc.CreateRegistrationToken(ctx, tok.Token, nil, time.Time{}); err == nil {
		t.Fatal("duplicate accepted")
	}
	if _, err := ts.svc.CreateRegistrationToken(ctx, "bad token", nil, time.Time{}); err == nil {
		t.Fatal("bad grammar accepted")
	}
	list, err := ts.svc.RegistrationTokens(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("%v %v", list, err)
	}
	if err := ts.svc.DeleteRegistrationToken(ctx, tok.Token); err != nil {
		t.Fatal(err)
	}
	if err := ts.svc.DeleteRegistrationToken(ctx, tok.Token); err == nil {
		t.Fatal("deleted twice")
	}
}

func TestCreateUserNeverReusesIDs(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	id, err := ts.svc.CreateUser(ctx, "Zed", "password1", false)
	if err != nil || id != "@zed:test.local" {
		t.Fatal(id, err)
	}
	if err := ts.svc.Deactivate(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.svc.CreateUser(ctx, "zed", "password1", false); err == nil {
		t.Fatal("a deactivated user ID was given out again")
	}
	var se interface{ Error() string }
	if _, err := ts.svc.CreateUser(ctx, "bad name", "password1", false); !errors.As(err, &se) {
		t.Fatal("bad name accepted")
	}
	if _, err := ts.svc.CreateUser(ctx, "short", "pw", false); err == nil {
		t.Fatal("short password accepted")
	}
}
