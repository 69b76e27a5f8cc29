package tests

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"
)

const authPassword = "correct horse battery staple"

// authResp is an HTTP answer with its JSON body.
type authResp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r authResp) str(k string) string { s, _ := r.body[k].(string); return s }

func (r authResp) want(t *testing.T, status int, code string) authResp {
	t.Helper()
	if r.status != status || (code != "" && r.str("errcode") != code) {
		t.Fatalf("got %d %s, want %d %s: %s", r.status, r.str("errcode"), status, code, r.raw)
	}
	return r
}

// authCall sends a JSON request (body nil, a string, or a value).
func authCall(t *testing.T, method, url, token string, body any) authResp {
	t.Helper()
	status, header, raw := doRequest(t, method, url, token, body)
	out := authResp{status: status, header: header, raw: string(raw)}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

func passwordAuth(session, user, password string) map[string]any {
	return map[string]any{"type": "m.login.password", "session": session, "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": user}}
}

// authUIA runs a UIA-protected request through the password stage.
func authUIA(t *testing.T, method, url, token string, body map[string]any, user, password string) authResp {
	t.Helper()
	first := authCall(t, method, url, token, body).want(t, 401, "")
	b := map[string]any{}
	for k, v := range body {
		b[k] = v
	}
	b["auth"] = passwordAuth(first.str("session"), user, password)
	return authCall(t, method, url, token, b)
}

// TestAuthWithMautrix drives registration, login, whoami, devices, profile,
// account data, tags, capabilities and OpenID with mautrix-go.
func TestAuthWithMautrix(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	avail, err := cli.RegisterAvailable(ctx, "alice")
	if err != nil || !avail.Available {
		t.Fatalf("available: %v %v", avail, err)
	}
	reg, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: authPassword, InitialDeviceDisplayName: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if reg.UserID != "@alice:localhost" || reg.DeviceID == "" {
		t.Fatalf("register: %+v", reg)
	}
	_, err = cli.RegisterAvailable(ctx, "alice")
	wantHTTPError(t, err, 400, "M_USER_IN_USE")

	flows, err := cli.GetLoginFlows(ctx)
	if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) || !flows.HasFlow(mautrix.AuthTypeToken) {
		t.Fatalf("flows: %+v %v", flows, err)
	}
	login, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password:   authPassword, InitialDeviceDisplayName: "mautrix", StoreCredentials: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	who, err := cli.Whoami(ctx)
	if err != nil || who.UserID != "@alice:localhost" || who.DeviceID != login.DeviceID {
		t.Fatalf("whoami: %+v %v", who, err)
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "wrong"})
	wantHTTPError(t, err, 403, "M_FORBIDDEN")

	// Capabilities.
	caps, err := cli.Capabilities(ctx)
	if err != nil || caps.ChangePassword == nil || !caps.ChangePassword.Enabled || caps.SetDisplayname == nil || !caps.SetDisplayname.Enabled ||
		caps.SetAvatarURL == nil || !caps.SetAvatarURL.Enabled || caps.ThreePIDChanges == nil || caps.ThreePIDChanges.Enabled {
		t.Fatalf("capabilities: %+v %v", caps, err)
	}

	// Devices.
	devs, err := cli.GetDevicesInfo(ctx)
	if err != nil || len(devs.Devices) != 2 {
		t.Fatalf("devices: %+v %v", devs, err)
	}
	if err := cli.SetDeviceInfo(ctx, login.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "renamed"}); err != nil {
		t.Fatal(err)
	}
	info, err := cli.GetDeviceInfo(ctx, login.DeviceID)
	if err != nil || info.DisplayName != "renamed" {
		t.Fatalf("device: %+v %v", info, err)
	}
	// Deleting a device: mautrix gets the UIA challenge, then passes it.
	body, err := cli.MakeRequest(ctx, http.MethodDelete, cli.BuildClientURL("v3", "devices", reg.DeviceID), map[string]any{}, nil)
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response.StatusCode != 401 || httpErr.RespError != nil {
		t.Fatalf("delete without auth: %v", err)
	}
	var uia mautrix.RespUserInteractive
	if err := json.Unmarshal(body, &uia); err != nil || !uia.HasSingleStageFlow(mautrix.AuthTypePassword) {
		t.Fatalf("UIA: %s", body)
	}
	err = cli.DeleteDevice(ctx, reg.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: passwordAuth(uia.Session, "alice", authPassword)})
	if err != nil {
		t.Fatal(err)
	}
	devs, _ = cli.GetDevicesInfo(ctx)
	if len(devs.Devices) != 1 {
		t.Fatalf("%d devices after delete", len(devs.Devices))
	}
	old, _ := mautrix.NewClient(s.URL, reg.UserID, reg.AccessToken)
	_, err = old.Whoami(ctx)
	wantHTTPError(t, err, 401, "M_UNKNOWN_TOKEN")

	// Profile.
	if err := cli.SetDisplayName(ctx, "Alice A."); err != nil {
		t.Fatal(err)
	}
	if err := cli.SetAvatarURL(ctx, id.ContentURI{Homeserver: "localhost", FileID: "avatar1"}); err != nil {
		t.Fatal(err)
	}
	prof, err := cli.GetProfile(ctx, "@alice:localhost")
	if err != nil || prof.DisplayName != "Alice A." || prof.AvatarURL.String() != "mxc://localhost/avatar1" {
		t.Fatalf("profile: %+v %v", prof, err)
	}
	bob := newClient(t, s.URL, "bob")
	_, err = bob.MakeRequest(ctx, http.MethodPut, bob.BuildClientURL("v3", "profile", "@alice:localhost", "displayname"), map[string]string{"displayname": "hacked"}, nil)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")

	// Account data and tags.
	type cfg struct {
		Theme string `json:"theme"`
	}
	if err := cli.SetAccountData(ctx, "org.example.settings", cfg{"dark"}); err != nil {
		t.Fatal(err)
	}
	var got cfg
	if err := cli.GetAccountData(ctx, "org.example.settings", &got); err != nil || got.Theme != "dark" {
		t.Fatalf("account data: %+v %v", got, err)
	}
	err = cli.GetAccountData(ctx, "org.example.missing", &got)
	wantHTTPError(t, err, 404, "M_NOT_FOUND")
	err = cli.SetAccountData(ctx, "m.fully_read", map[string]string{"event_id": "$x"})
	wantHTTPError(t, err, 405, "M_BAD_JSON")
	room := id.RoomID("!somewhere:localhost")
	if err := cli.SetRoomAccountData(ctx, room, "org.example.room", cfg{"light"}); err != nil {
		t.Fatal(err)
	}
	if err := cli.GetRoomAccountData(ctx, room, "org.example.room", &got); err != nil || got.Theme != "light" {
		t.Fatalf("room account data: %+v %v", got, err)
	}
	if err := cli.AddTag(ctx, room, event.RoomTagFavourite, 0.5); err != nil {
		t.Fatal(err)
	}
	tags, err := cli.GetTags(ctx, room)
	if order, _ := tags.Tags[event.RoomTagFavourite].Order.Float64(); err != nil || order != 0.5 {
		t.Fatalf("tags: %+v %v", tags, err)
	}
	if err := cli.RemoveTag(ctx, room, event.RoomTagFavourite); err != nil {
		t.Fatal(err)
	}
	if tags, _ = cli.GetTags(ctx, room); len(tags.Tags) != 0 {
		t.Fatalf("tags after remove: %+v", tags)
	}
	err = bob.GetAccountData(ctx, "org.example.settings", &got)
	if err == nil {
		t.Fatal("bob read his own missing data?")
	}
	_, err = bob.MakeRequest(ctx, http.MethodGet, bob.BuildClientURL("v3", "user", "@alice:localhost", "account_data", "org.example.settings"), nil, nil)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")

	// OpenID: the token proves who alice is to a third party.
	oid, err := cli.RequestOpenIDToken(ctx)
	if err != nil || oid.MatrixServerName != "localhost" {
		t.Fatalf("openid: %+v %v", oid, err)
	}
	authCall(t, "GET", s.URL+"/_matrix/federation/v1/openid/userinfo?access_token="+oid.AccessToken, "", nil).want(t, 200, "")

	// Logout and logout/all.
	second, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "@alice:localhost"}, Password: authPassword, StoreCredentials: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Whoami(ctx); err != nil {
		t.Fatal("logout revoked another device:", err)
	}
	if _, err := cli.LogoutAll(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = cli.Whoami(ctx)
	wantHTTPError(t, err, 401, "M_UNKNOWN_TOKEN")
}

// TestAuthInviteTokenRegistration: an admin creates an invite code with the
// CLI while the server runs; it registers exactly one account.
func TestAuthInviteTokenRegistration(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--registration", "token"))
	out, err := harness.Run(t, "", "admin", "registration-token", "create", "--uses", "1", "--data-dir", s.DataDir)
	if err != nil {
		t.Fatalf("create token: %v\n%s", err, out)
	}
	token := strings.TrimSpace(out)
	validity := func(tok string) bool {
		r := authCall(t, "GET", s.URL+"/_matrix/client/v1/register/m.login.registration_token/validity?token="+tok, "", nil).want(t, 200, "")
		return r.body["valid"] == true
	}
	if !validity(token) || validity("unknown") {
		t.Fatal("validity")
	}
	ctx := context.Background()
	cli, _ := mautrix.NewClient(s.URL, "", "")
	// Open-registration clients find no dummy flow.
	if _, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: authPassword}); err == nil {
		t.Fatal("registered without an invite")
	}
	_, uia, err := cli.Register(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: authPassword})
	if uia == nil || !uia.HasSingleStageFlow("m.login.registration_token") {
		t.Fatalf("flows: %+v %v", uia, err)
	}
	resp, _, err := cli.Register(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: authPassword,
		Auth: map[string]any{"type": "m.login.registration_token", "token": token, "session": uia.Session}})
	if err != nil || resp.UserID != "@alice:localhost" || resp.AccessToken == "" {
		t.Fatalf("register: %+v %v", resp, err)
	}
	if validity(token) {
		t.Fatal("used-up token still valid")
	}
	// Used up.
	_, uia, _ = cli.Register(ctx, &mautrix.ReqRegister[any]{Username: "bob", Password: authPassword})
	r := authCall(t, "POST", s.URL+"/_matrix/client/v3/register", "", map[string]any{"username": "bob", "password": authPassword,
		"auth": map[string]any{"type": "m.login.registration_token", "token": token, "session": uia.Session}})
	r.want(t, 401, "M_FORBIDDEN")
	out, err = harness.Run(t, "", "admin", "registration-token", "list", "--data-dir", s.DataDir)
	if err != nil || !strings.Contains(out, token) || !strings.Contains(out, " 1 ") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	// Closed mode refuses outright.
	s.Args = []string{"--registration", "closed"}
	s.Restart()
	authCall(t, "POST", s.URL+"/_matrix/client/v3/register", "", map[string]any{}).want(t, 403, "M_FORBIDDEN")
	// Guests are refused in any mode.
	authCall(t, "POST", s.URL+"/_matrix/client/v3/register?kind=guest", "", map[string]any{}).want(t, 403, "M_FORBIDDEN")
}

// TestAuthConcurrentInvite: many clients race for a one-use invite; exactly
// one account results.
func TestAuthConcurrentInvite(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--registration", "token"))
	out, err := harness.Run(t, "", "admin", "registration-token", "create", "race-1", "--uses", "1", "--data-dir", s.DataDir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	const n = 10
	sessions := make([]string, n)
	for i := range sessions {
		sessions[i] = authCall(t, "POST", s.URL+"/_matrix/client/v3/register", "", map[string]any{}).want(t, 401, "").str("session")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := authCall(t, "POST", s.URL+"/_matrix/client/v3/register", "", map[string]any{
				"username": "racer" + string(rune('a'+i)), "password": authPassword,
				"auth": map[string]any{"type": "m.login.registration_token", "token": "race-1", "session": sessions[i]}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case r.status == 200:
				wins++
			case r.status == 401 && r.str("errcode") == "M_FORBIDDEN":
			default:
				t.Errorf("unexpected %d %s", r.status, r.raw)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d accounts from a one-use token", wins)
	}
}

// TestAuthCLICreateUser: the first admin is created on a data directory
// with no server running; accounts can be added while it runs.
func TestAuthCLICreateUser(t *testing.T) {
	dir := t.TempDir()
	out, err := harness.Run(t, authPassword+"\n", "admin", "create-user", "chief", "--admin", "--password-stdin", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "created admin @chief:localhost") {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(out, authPassword) {
		t.Fatal("the password was printed")
	}
	s := harness.Start(t, harness.WithDataDir(dir), harness.WithArgs("--registration", "closed"))
	login := func(user, pw string) authResp {
		return authCall(t, "POST", s.URL+"/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": user}, "password": pw})
	}
	login("chief", authPassword).want(t, 200, "")
	// While the server runs; a generated password is printed once.
	out, err = harness.Run(t, "", "admin", "create-user", "carol", "--data-dir", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var pw string
	for _, line := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(line, "password: "); ok {
			pw = p
		}
	}
	if len(pw) < 20 {
		t.Fatalf("no generated password:\n%s", out)
	}
	login("carol", pw).want(t, 200, "")
	// Taken names and bad input fail with a message.
	if out, err := harness.Run(t, "", "admin", "create-user", "carol", "--data-dir", dir); err == nil {
		t.Fatalf("duplicate accepted:\n%s", out)
	}
	if out, err := harness.Run(t, "x\n", "admin", "create-user", "dave", "--password-stdin", "--data-dir", dir); err == nil || !strings.Contains(out, "at least") {
		t.Fatalf("short password accepted:\n%s", out)
	}
	if out, err := harness.Run(t, "", "admin", "create-user", "Bad Name", "--data-dir", dir); err == nil {
		t.Fatalf("bad name accepted:\n%s", out)
	}
	// Reserved names are refused here as /register refuses them: above
	// all the server-notices account, which has no password on purpose.
	for _, name := range []string{"server", "@server:localhost", "admin", "Support"} {
		out, err := harness.Run(t, "", "admin", "create-user", name, "--data-dir", dir)
		if err == nil || !strings.Contains(out, "reserved") && !strings.Contains(out, "server-notices") {
			t.Fatalf("reserved name %q: %v\n%s", name, err, out)
		}
	}
	// A full user ID is accepted as every other command accepts it, and
	// lower-cased as a bare name is; one of another server is refused.
	out, err = harness.Run(t, authPassword+"\n", "admin", "create-user", "@Dave:localhost", "--password-stdin", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "created user @dave:localhost") {
		t.Fatalf("create-user with a full user ID: %v\n%s", err, out)
	}
	if out, err := harness.Run(t, "", "admin", "make-admin", "@DAVE:localhost", "--data-dir", dir); err != nil || !strings.Contains(out, "@dave:localhost is a server admin") {
		t.Fatalf("make-admin with the user ID in capitals: %v\n%s", err, out)
	}
	if out, err := harness.Run(t, "", "admin", "create-user", "@erin:elsewhere.example", "--data-dir", dir); err == nil || !strings.Contains(out, "not a user of this server") {
		t.Fatalf("create-user for another server: %v\n%s", err, out)
	}
}

// TestAuthPasswordAndDeactivation: change the password (other devices
// logged out), then deactivate; the name is never given out again.
func TestAuthPasswordAndDeactivation(t *testing.T) {
	s := harness.Start(t)
	base := s.URL + "/_matrix/client/v3"
	tok := registerForTest(t, s.URL, "alice")
	login := func(pw string) authResp {
		return authCall(t, "POST", base+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": pw})
	}
	other := login(authPassword).want(t, 200, "").str("access_token")
	authUIA(t, "POST", base+"/account/password", tok, map[string]any{"new_password": "another good password"}, "alice", "wrong password").
		want(t, 401, "M_FORBIDDEN")
	authUIA(t, "POST", base+"/account/password", tok, map[string]any{"new_password": "another good password"}, "alice", authPassword).
		want(t, 200, "")
	authCall(t, "GET", base+"/account/whoami", other, nil).want(t, 401, "M_UNKNOWN_TOKEN")
	authCall(t, "GET", base+"/account/whoami", tok, nil).want(t, 200, "")
	login(authPassword).want(t, 403, "M_FORBIDDEN")
	login("another good password").want(t, 200, "")

	authUIA(t, "POST", base+"/account/deactivate", tok, map[string]any{"erase": true}, "alice", "another good password").want(t, 200, "")
	authCall(t, "GET", base+"/account/whoami", tok, nil).want(t, 401, "M_UNKNOWN_TOKEN")
	login("another good password").want(t, 403, "M_FORBIDDEN")
	authCall(t, "GET", base+"/register/available?username=alice", "", nil).want(t, 400, "M_USER_IN_USE")
	authCall(t, "GET", base+"/profile/@alice:localhost", "", nil).want(t, 401, "M_MISSING_TOKEN") // profiles are not public
	if strings.Contains(s.Logs(), "another good password") || strings.Contains(s.Logs(), authPassword) {
		t.Fatal("a password reached the logs")
	}
}

// TestAuthTokensSurviveRestartAndRefresh: access tokens survive a restart;
// refresh tokens rotate.
func TestAuthTokensSurviveRestartAndRefresh(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--access-token-lifetime", "5m"))
	base := s.URL + "/_matrix/client/v3"
	registerForTest(t, s.URL, "alice")
	r := authCall(t, "POST", base+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": authPassword, "refresh_token": true}).want(t, 200, "")
	if r.body["expires_in_ms"] != float64(300000) || r.str("refresh_token") == "" {
		t.Fatalf("login: %s", r.raw)
	}
	a1, r1 := r.str("access_token"), r.str("refresh_token")
	s.Restart()
	base = s.URL + "/_matrix/client/v3"
	authCall(t, "GET", base+"/account/whoami", a1, nil).want(t, 200, "")
	r = authCall(t, "POST", base+"/refresh", "", map[string]any{"refresh_token": r1}).want(t, 200, "")
	a2 := r.str("access_token")
	authCall(t, "GET", base+"/account/whoami", a2, nil).want(t, 200, "")
	authCall(t, "GET", base+"/account/whoami", a1, nil).want(t, 401, "M_UNKNOWN_TOKEN")
	authCall(t, "POST", base+"/refresh", "", map[string]any{"refresh_token": r1}).want(t, 401, "M_UNKNOWN_TOKEN")
	// Token login: get_token re-asks for the password; the token works once.
	lt := authUIA(t, "POST", s.URL+"/_matrix/client/v1/login/get_token", a2, map[string]any{}, "alice", authPassword).want(t, 200, "").str("login_token")
	authCall(t, "POST", base+"/login", "", map[string]any{"type": "m.login.token", "token": lt}).want(t, 200, "")
	authCall(t, "POST", base+"/login", "", map[string]any{"type": "m.login.token", "token": lt}).want(t, 403, "M_FORBIDDEN")
	if strings.Contains(s.Logs(), a2) || strings.Contains(s.Logs(), lt) {
		t.Fatal("a token reached the logs")
	}
}

// TestAuthJWTLogin: an integration logs a bot in with a signed JWT.
func TestAuthJWTLogin(t *testing.T) {
	secret := []byte("a-shared-hmac-secret-of-at-least-32-bytes")
	keyFile := filepath.Join(t.TempDir(), "jwt.key")
	if err := os.WriteFile(keyFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	s := harness.Start(t, harness.WithArgs("--jwt-key-file", keyFile, "--jwt-issuer", "my-bots"))
	registerForTest(t, s.URL, "bot")
	sign := func(key []byte, c jwt.Claims) string {
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, nil)
		tok, err := jwt.Signed(signer).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ctx := context.Background()
	cli, _ := mautrix.NewClient(s.URL, "", "")
	flows, err := cli.GetLoginFlows(ctx)
	if err != nil || !flows.HasFlow("org.matrix.login.jwt") {
		t.Fatalf("flows: %+v %v", flows, err)
	}
	good := sign(secret, jwt.Claims{Subject: "bot", Issuer: "my-bots", Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))})
	resp, err := cli.Login(ctx, &mautrix.ReqLogin{Type: "org.matrix.login.jwt", Token: good})
	if err != nil || resp.UserID != "@bot:localhost" {
		t.Fatalf("jwt login: %+v %v", resp, err)
	}
	bad := sign([]byte("another-secret-another-secret-another"), jwt.Claims{Subject: "bot", Issuer: "my-bots", Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))})
	_, err = cli.Login(ctx, &mautrix.ReqLogin{Type: "org.matrix.login.jwt", Token: bad})
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	expired := sign(secret, jwt.Claims{Subject: "bot", Issuer: "my-bots", Expiry: jwt.NewNumericDate(time.Now().Add(-time.Hour))})
	_, err = cli.Login(ctx, &mautrix.ReqLogin{Type: "org.matrix.login.jwt", Token: expired})
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
}

// TestAuthSharedSecretRegistration with mautrix's Synapse admin client.
func TestAuthSharedSecretRegistration(t *testing.T) {
	const secret = "bridge-shared-secret"
	s := harness.Start(t, harness.WithArgs("--registration", "closed"), harness.WithEnv("CHATALOT_REGISTRATION_SHARED_SECRET="+secret))
	cli, _ := mautrix.NewClient(s.URL, "", "")
	admin := synapseadmin.Client{Client: cli}
	ctx := context.Background()
	resp, err := admin.SharedSecretRegister(ctx, secret, synapseadmin.ReqSharedSecretRegister{Username: "bridgebot", Password: authPassword, Displayname: "Bridge", Admin: true})
	if err != nil || resp.UserID != "@bridgebot:localhost" || resp.AccessToken == "" {
		t.Fatalf("%+v %v", resp, err)
	}
	bot, _ := mautrix.NewClient(s.URL, resp.UserID, resp.AccessToken)
	if dn, err := bot.GetOwnDisplayName(ctx); err != nil || dn.DisplayName != "Bridge" {
		t.Fatalf("display name: %+v %v", dn, err)
	}
	_, err = admin.SharedSecretRegister(ctx, "wrong secret", synapseadmin.ReqSharedSecretRegister{Username: "eve", Password: authPassword})
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	if strings.Contains(s.Logs(), secret) {
		t.Fatal("the shared secret reached the logs")
	}
}

// TestAuthRateLimits: with limits on, a burst of logins from one address
// is refused with 429 and a retry delay.
func TestAuthRateLimits(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--rate-limits", "on", "--rate-limit-login", "3/1h"))
	registerForTest(t, s.URL, "alice")
	var last authResp
	for i := 0; i < 4; i++ {
		last = authCall(t, "POST", s.URL+"/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": authPassword})
	}
	last.want(t, 429, "M_LIMIT_EXCEEDED")
	if ms, _ := last.body["retry_after_ms"].(float64); ms <= 0 || last.header.Get("Retry-After") == "" {
		t.Fatalf("retry: %s %v", last.raw, last.header)
	}
}

// TestAuthBadInputOverHTTP spot-checks that malformed requests to the real
// server get Matrix errors.
func TestAuthBadInputOverHTTP(t *testing.T) {
	s := harness.Start(t)
	base := s.URL + "/_matrix/client/v3"
	tok := registerForTest(t, s.URL, "alice")
	authCall(t, "POST", base+"/login", "", "{").want(t, 400, "M_NOT_JSON")
	authCall(t, "POST", base+"/login", "", map[string]any{"type": 5}).want(t, 400, "M_BAD_JSON")
	authCall(t, "POST", base+"/register", "", map[string]any{"username": strings.Repeat("a", 300), "password": authPassword}).want(t, 400, "M_INVALID_USERNAME")
	authCall(t, "POST", base+"/register", "", map[string]any{"username": "ok", "password": "short"}).want(t, 400, "M_WEAK_PASSWORD")
	authCall(t, "GET", base+"/account/whoami", "", nil).want(t, 401, "M_MISSING_TOKEN")
	// The deprecated query-string token still works for the spec versions
	// Chatalot advertises; a bad one is an unknown token.
	authCall(t, "GET", base+"/account/whoami?access_token="+tok, "", nil).want(t, 200, "")
	authCall(t, "GET", base+"/account/whoami?access_token=cha_nope", "", nil).want(t, 401, "M_UNKNOWN_TOKEN")
	authCall(t, "GET", base+"/account/whoami", "cha_nope", nil).want(t, 401, "M_UNKNOWN_TOKEN")
	authCall(t, "PUT", base+"/profile/@alice:localhost/displayname", tok, map[string]any{"displayname": 42}).want(t, 400, "M_BAD_JSON")
	authCall(t, "PUT", base+"/user/@alice:localhost/account_data/x.y", tok, "[]").want(t, 400, "M_BAD_JSON")
	authCall(t, "GET", base+"/account/3pid", tok, nil).want(t, 200, "")
	authCall(t, "POST", base+"/account/3pid/add", tok, map[string]any{}).want(t, 403, "M_THREEPID_DENIED")
}
