package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func TestLoginFlows(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do("GET", v3+"/login", "", nil).must(t, 200)
	types := []string{}
	for _, f := range r.Body["flows"].([]any) {
		types = append(types, f.(map[string]any)["type"].(string))
	}
	if strings.Join(types, ",") != "m.login.password,m.login.token" {
		t.Fatalf("flows: %s", r.Raw)
	}
	ts.do("GET", "/_matrix/client/r0/login", "", nil).must(t, 200)
}

func TestPasswordLogin(t *testing.T) {
	ts := newTestServer(t)
	ts.register("alice", "password1")
	ok := func(body map[string]any) resp {
		t.Helper()
		r := ts.do("POST", v3+"/login", "", body).must(t, 200)
		if r.str("user_id") != "@alice:test.local" || r.str("access_token") == "" || r.str("device_id") == "" {
			t.Fatalf("login: %s", r.Raw)
		}
		return r
	}
	ok(map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password1"})
	ok(map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@alice:test.local"}, "password": "password1"})
	ok(map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "ALICE"}, "password": "password1"})
	ok(map[string]any{"type": "m.login.password", "user": "alice", "password": "password1"})

	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"wrong password", map[string]any{"type": "m.login.password", "user": "alice", "password": "password2"}, 403, "M_FORBIDDEN"},
		{"unknown user", map[string]any{"type": "m.login.password", "user": "nobody", "password": "password1"}, 403, "M_FORBIDDEN"},
		{"other server", map[string]any{"type": "m.login.password", "user": "@alice:elsewhere", "password": "password1"}, 403, "M_FORBIDDEN"},
		{"third-party id", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "password1"}, 403, "M_FORBIDDEN"},
		{"legacy medium", map[string]any{"type": "m.login.password", "medium": "email", "address": "a@b.c", "password": "password1"}, 403, "M_FORBIDDEN"},
		{"phone", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.phone", "country": "GB", "phone": "123"}, "password": "password1"}, 403, "M_FORBIDDEN"},
		{"unknown identifier type", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "x.y"}, "password": "password1"}, 400, "M_INVALID_PARAM"},
		{"no identifier", map[string]any{"type": "m.login.password", "password": "password1"}, 400, "M_MISSING_PARAM"},
		{"no password", map[string]any{"type": "m.login.password", "user": "alice"}, 400, "M_MISSING_PARAM"},
		{"no type", map[string]any{"user": "alice", "password": "password1"}, 400, "M_MISSING_PARAM"},
		{"unknown type", map[string]any{"type": "m.login.magic"}, 400, "M_UNKNOWN"},
		{"jwt not configured", map[string]any{"type": "org.matrix.login.jwt", "token": "x"}, 400, "M_UNKNOWN"},
		{"over-long password", map[string]any{"type": "m.login.password", "user": "alice", "password": strings.Repeat("p", 10000)}, 403, "M_FORBIDDEN"},
		{"bad login token", map[string]any{"type": "m.login.token", "token": "chl_nope"}, 403, "M_FORBIDDEN"},
		{"device id with spaces", map[string]any{"type": "m.login.password", "user": "alice", "password": "password1", "device_id": "A B"}, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.do("POST", v3+"/login", "", tc.body).mustErr(t, tc.status, tc.code)
		})
	}
}

func TestLoginWithDeviceIDReplacesItsToken(t *testing.T) {
	ts := newTestServer(t)
	tok1, dev := ts.register("alice", "password1")
	r := ts.do("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "password1", "device_id": dev}).must(t, 200)
	if r.str("device_id") != dev {
		t.Fatalf("device: %s", r.Raw)
	}
	ts.do("GET", v3+"/account/whoami", tok1, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("GET", v3+"/account/whoami", r.str("access_token"), nil).must(t, 200)
	devs := ts.do("GET", v3+"/devices", r.str("access_token"), nil).must(t, 200)
	if n := len(devs.Body["devices"].([]any)); n != 1 {
		t.Fatalf("%d devices", n)
	}
}

func TestMiddleware(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	ts.do("GET", v3+"/account/whoami", "", nil).mustErr(t, 401, "M_MISSING_TOKEN")
	// The deprecated query-string token (spec v1.11, dropped in v1.20) still works.
	ts.do("GET", v3+"/account/whoami?access_token="+tok, "", nil).must(t, 200)
	r := ts.do("GET", v3+"/account/whoami", "cha_madeup", nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	if r.Body["soft_logout"] != false {
		t.Fatalf("soft_logout: %s", r.Raw)
	}
	// A malformed header.
	req, _ := http.NewRequest("GET", v3+"/account/whoami", nil)
	req.Header.Set("Authorization", "Basic abc")
	// The hot path reads no database, for good and bad tokens alike.
	before := ts.db.ReadCount()
	for i := 0; i < 100; i++ {
		ts.do("GET", v3+"/account/whoami", tok, nil).must(t, 200)
		ts.do("GET", v3+"/account/whoami", "cha_bogus", nil).must(t, 401)
	}
	if n := ts.db.ReadCount() - before; n != 0 {
		t.Fatalf("the middleware read the database %d times", n)
	}
	// A restart (a new service on the same database) still knows the token.
	svc2, err := New(Deps{DB: ts.db, ServerName: serverName, Config: ts.svc.cfg})
	if err != nil {
		t.Fatal(err)
	}
	if svc2.tokens.get(hashToken(tok)) == nil {
		t.Fatal("token not loaded at start")
	}
	// Tokens are stored only as hashes.
	var n int
	ts.db.QueryRow(context.Background(), `SELECT count(*) FROM access_tokens WHERE token_hash = $1`, tok).Scan(&n)
	if n != 0 {
		t.Fatal("a raw token is stored")
	}
}

func TestLoginToken(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	path := "/_matrix/client/v1/login/get_token"
	r := ts.do("POST", path, tok, map[string]any{}).must(t, 401)
	if r.str("session") == "" {
		t.Fatal(r.Raw)
	}
	r = ts.uia("POST", path, tok, map[string]any{}, "alice", "password1").must(t, 200)
	lt := r.str("login_token")
	if !strings.HasPrefix(lt, "chl_") || r.Body["expires_in_ms"].(float64) != 120000 {
		t.Fatalf("get_token: %s", r.Raw)
	}
	login := map[string]any{"type": "m.login.token", "token": lt}
	r = ts.do("POST", v3+"/login", "", login).must(t, 200)
	if r.str("user_id") != "@alice:test.local" {
		t.Fatal(r.Raw)
	}
	// Single use.
	ts.do("POST", v3+"/login", "", login).mustErr(t, 403, "M_FORBIDDEN")
	// Expired.
	r = ts.uia("POST", path, tok, map[string]any{}, "alice", "password1").must(t, 200)
	ts.svc.loginMu.Lock()
	for h, v := range ts.svc.loginTokens {
		v.expires = time.Now().Add(-time.Second)
		ts.svc.loginTokens[h] = v
	}
	ts.svc.loginMu.Unlock()
	ts.do("POST", v3+"/login", "", map[string]any{"type": "m.login.token", "token": r.str("login_token")}).mustErr(t, 403, "M_FORBIDDEN")
	// Always re-prompts: a completed session is used up.
	sess := ts.do("POST", path, tok, map[string]any{}).must(t, 401).str("session")
	auth := map[string]any{"type": "m.login.password", "session": sess, "password": "password1", "user": "alice"}
	ts.do("POST", path, tok, map[string]any{"auth": auth}).must(t, 200)
	ts.do("POST", path, tok, map[string]any{"auth": auth}).mustErr(t, 400, "M_INVALID_PARAM")
}

func TestJWTLogin(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	ts := newTestServer(t, func(c *Config) { c.JWTKey = pemKey; c.JWTIssuer = "bots" })
	ts.register("bot", "password1")
	r := ts.do("GET", v3+"/login", "", nil).must(t, 200)
	if !strings.Contains(r.Raw, "org.matrix.login.jwt") {
		t.Fatalf("flows: %s", r.Raw)
	}
	sign := func(k any, claims jwt.Claims) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := jwt.Signed(signer).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	good := jwt.Claims{Subject: "bot", Issuer: "bots", Expiry: jwt.NewNumericDate(now.Add(time.Minute))}
	r = ts.do("POST", v3+"/login", "", map[string]any{"type": "org.matrix.login.jwt", "token": sign(key, good)}).must(t, 200)
	if r.str("user_id") != "@bot:test.local" {
		t.Fatal(r.Raw)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name  string
		token string
	}{
		{"bad signature", sign(other, good)},
		{"expired", sign(key, jwt.Claims{Subject: "bot", Issuer: "bots", Expiry: jwt.NewNumericDate(now.Add(-time.Hour))})},
		{"no expiry", sign(key, jwt.Claims{Subject: "bot", Issuer: "bots"})},
		{"too long-lived", sign(key, jwt.Claims{Subject: "bot", Issuer: "bots", Expiry: jwt.NewNumericDate(now.Add(48 * time.Hour))})},
		{"not yet valid", sign(key, jwt.Claims{Subject: "bot", Issuer: "bots", Expiry: jwt.NewNumericDate(now.Add(2 * time.Hour)), NotBefore: jwt.NewNumericDate(now.Add(time.Hour))})},
		{"wrong issuer", sign(key, jwt.Claims{Subject: "bot", Issuer: "evil", Expiry: jwt.NewNumericDate(now.Add(time.Minute))})},
		{"unknown user", sign(key, jwt.Claims{Subject: "ghost", Issuer: "bots", Expiry: jwt.NewNumericDate(now.Add(time.Minute))})},
		{"other server", sign(key, jwt.Claims{Subject: "@bot:elsewhere", Issuer: "bots", Expiry: jwt.NewNumericDate(now.Add(time.Minute))})},
		{"no subject", sign(key, jwt.Claims{Issuer: "bots", Expiry: jwt.NewNumericDate(now.Add(time.Minute))})},
		{"garbage", "not.a.jwt"},
		{"alg none", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJib3QifQ."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.do("POST", v3+"/login", "", map[string]any{"type": "org.matrix.login.jwt", "token": tc.token}).mustErr(t, 403, "M_FORBIDDEN")
		})
	}
	// A deactivated account is told so (the JWT proved who is asking).
	if err := ts.svc.Deactivate(context.Background(), "@bot:test.local", false); err != nil {
		t.Fatal(err)
	}
	ts.do("POST", v3+"/login", "", map[string]any{"type": "org.matrix.login.jwt", "token": sign(key, good)}).mustErr(t, 403, "M_USER_DEACTIVATED")
}

func TestJWTKeyFormats(t *testing.T) {
	if _, err := newJWTVerifier([]byte("short"), "", ""); err == nil {
		t.Fatal("short HMAC secret accepted")
	}
	if _, err := newJWTVerifier([]byte(strings.Repeat("s", 32)), "", ""); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk, _ := jose.JSONWebKey{Key: &key.PublicKey}.MarshalJSON()
	if _, err := newJWTVerifier(jwk, "", ""); err != nil {
		t.Fatal(err)
	}
	priv, _ := x509.MarshalECPrivateKey(key)
	if _, err := newJWTVerifier(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}), "", ""); err == nil {
		t.Fatal("private key accepted")
	}
}

func TestRefreshTokens(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.AccessTokenLifetime = 5 * time.Minute })
	ts.register("alice", "password1")
	// Without refresh_token: a token that does not expire.
	r := ts.login("alice", "password1").must(t, 200)
	if r.Body["refresh_token"] != nil || r.Body["expires_in_ms"] != nil {
		t.Fatalf("no refresh asked: %s", r.Raw)
	}
	r = ts.do("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "password1", "refresh_token": true}).must(t, 200)
	a1, r1 := r.str("access_token"), r.str("refresh_token")
	if r.Body["expires_in_ms"].(float64) != 300000 || !strings.HasPrefix(r1, "chr_") {
		t.Fatalf("refresh asked: %s", r.Raw)
	}
	// Refresh: a new pair; the old one stays valid until the new one is used.
	r = ts.do("POST", v3+"/refresh", "", map[string]any{"refresh_token": r1}).must(t, 200)
	a2, r2 := r.str("access_token"), r.str("refresh_token")
	if a2 == "" || r2 == "" || a2 == a1 || r.Body["expires_in_ms"].(float64) != 300000 {
		t.Fatalf("refresh: %s", r.Raw)
	}
	ts.do("GET", v3+"/account/whoami", a1, nil).must(t, 200)
	// The client lost the answer and retries with the old refresh token:
	// it gets another pair, and the lost one is revoked.
	r = ts.do("POST", "/_matrix/client/v1/refresh", "", map[string]any{"refresh_token": r1}).must(t, 200)
	ts.do("GET", v3+"/account/whoami", a2, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("POST", v3+"/refresh", "", map[string]any{"refresh_token": r2}).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	a3, r3 := r.str("access_token"), r.str("refresh_token")
	// Using the new access token retires the old pair.
	ts.do("GET", v3+"/account/whoami", a3, nil).must(t, 200)
	ts.do("GET", v3+"/account/whoami", a1, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("POST", v3+"/refresh", "", map[string]any{"refresh_token": r1}).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	// Expiry: soft logout.
	ts.svc.now = func() time.Time { return time.Now().Add(6 * time.Minute) }
	r = ts.do("GET", v3+"/account/whoami", a3, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	if r.Body["soft_logout"] != true {
		t.Fatalf("soft_logout: %s", r.Raw)
	}
	r = ts.do("POST", v3+"/refresh", "", map[string]any{"refresh_token": r3}).must(t, 200)
	ts.do("GET", v3+"/account/whoami", r.str("access_token"), nil).must(t, 200)
	ts.svc.now = time.Now
	// Bad input.
	ts.do("POST", v3+"/refresh", "", map[string]any{}).mustErr(t, 400, "M_MISSING_PARAM")
	ts.do("POST", v3+"/refresh", "", map[string]any{"refresh_token": 5}).mustErr(t, 400, "M_BAD_JSON")
	ts.do("POST", v3+"/refresh", "", map[string]any{"refresh_token": "chr_nope"}).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	// One device throughout.
	devs := ts.do("GET", v3+"/devices", r.str("access_token"), nil).must(t, 200)
	if n := len(devs.Body["devices"].([]any)); n != 3 {
		t.Fatalf("%d devices, want 3 (register, login, refreshing login)", n)
	}
}

func TestLogout(t *testing.T) {
	ts := newTestServer(t)
	tok1, dev1 := ts.register("alice", "password1")
	tok2 := ts.login("alice", "password1").must(t, 200).str("access_token")
	tok3 := ts.login("alice", "password1").must(t, 200).str("access_token")
	ts.do("POST", v3+"/logout", tok1, nil).must(t, 200)
	ts.do("GET", v3+"/account/whoami", tok1, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("GET", v3+"/account/whoami", tok2, nil).must(t, 200)
	if d := ts.devs.deletedCopy(); len(d) != 1 || d[0] != dev1 {
		t.Fatalf("device hooks: %v", d)
	}
	ts.do("POST", v3+"/logout/all", tok2, nil).must(t, 200)
	ts.do("GET", v3+"/account/whoami", tok2, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("GET", v3+"/account/whoami", tok3, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	if len(ts.devs.deletedCopy()) != 3 {
		t.Fatal("device hooks after logout/all")
	}
	if ts.svc.tokens.size() != 0 {
		t.Fatal("tokens left in the cache")
	}
}

// TestLogOutEverywhereRevokesLoginTokens attacks "log out everywhere" with
// a login token taken just before (issue 19, item 3): after /logout/all, or
// a password change with logout_devices, an outstanding m.login.token no
// longer logs in, an OpenID token no longer identifies the user, and a UIA
// session started before cannot be finished.
func TestLogOutEverywhereRevokesLoginTokens(t *testing.T) {
	ts := newTestServer(t)
	ts.register("alice", "password1")
	getToken := "/_matrix/client/v1/login/get_token"
	grants := func(tok, password string) (loginToken, openID, uiaSession string) {
		t.Helper()
		loginToken = ts.uia("POST", getToken, tok, map[string]any{}, "alice", password).must(t, 200).str("login_token")
		openID = ts.do("POST", v3+"/user/@alice:test.local/openid/request_token", tok, map[string]any{}).must(t, 200).str("access_token")
		// A UIA session started before the revocation.
		uiaSession = ts.do("POST", v3+"/delete_devices", tok, map[string]any{"devices": []string{"LATER"}}).must(t, 401).str("session")
		return loginToken, openID, uiaSession
	}
	revoked := func(how, loginToken, openID, uiaSession, tok, newPassword string) {
		t.Helper()
		if r := ts.do("POST", v3+"/login", "", map[string]any{"type": "m.login.token", "token": loginToken}); r.Status != 403 {
			t.Errorf("%s: the login token still logs in: %d %s", how, r.Status, r.Raw)
		}
		if r := ts.do("GET", "/_matrix/federation/v1/openid/userinfo?access_token="+openID, "", nil); r.Status != 401 {
			t.Errorf("%s: the OpenID token still identifies alice: %d %s", how, r.Status, r.Raw)
		}
		if tok == "" {
			return
		}
		ts.do("POST", v3+"/delete_devices", tok, map[string]any{"devices": []string{"LATER"}, "auth": map[string]any{
			"type": "m.login.password", "session": uiaSession, "password": newPassword,
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}}).mustErr(t, 400, "M_INVALID_PARAM")
	}

	tok := ts.login("alice", "password1").must(t, 200).str("access_token")
	lt, oid, sess := grants(tok, "password1")
	ts.do("POST", v3+"/logout/all", tok, nil).must(t, 200)
	revoked("logout/all", lt, oid, sess, "", "")

	tok = ts.login("alice", "password1").must(t, 200).str("access_token")
	lt, oid, sess = grants(tok, "password1")
	ts.uia("POST", v3+"/account/password", tok, map[string]any{"new_password": "password2", "logout_devices": true}, "alice", "password1").must(t, 200)
	revoked("password change", lt, oid, sess, tok, "password2")
}
