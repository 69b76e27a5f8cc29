package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
)

// The OAuth 2.0 API, driven over HTTP as a client and a browser drive it:
// register a client, open the authorisation URL, fill in the sign-in and
// consent forms, exchange the code, use and refresh the tokens, revoke.

const oauthPassword = "correct horse battery staple"

// newOAuthApp wires the server with the OAuth 2.0 API on, its public base
// URL the test server's own. limits turns the rate limits on.
func newOAuthApp(t *testing.T, limits bool) string {
	_, base := newOAuthAppWith(t, func(cfg *Config) {
		if limits {
			cfg.RateLimits = "on"
		}
	})
	return base
}

func newOAuthAppWith(t *testing.T, configure func(*Config)) (*App, string) {
	t.Helper()
	var handler http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	base := "http://" + srv.Listener.Addr().String()
	cfg := defaults()
	cfg.DataDir = t.TempDir()
	cfg.Registration = "open"
	cfg.RateLimits = "off"
	cfg.Encryption = "optional"
	cfg.OAuth = true
	cfg.PublicBaseURL = base
	configure(&cfg)
	app, err := openApp(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	handler = app.Router()
	srv.Start()
	t.Cleanup(func() {
		app.BeginShutdown()
		srv.Close()
		app.Close()
	})
	return app, base
}

// oauthDo sends a request and returns the status, headers and body; it
// never follows redirects.
func oauthDo(t *testing.T, c *http.Client, method, u, contentType, body, token string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c == nil {
		c = noRedirects(nil)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

func noRedirects(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// newBrowser is a client with cookies that does not follow redirects, so
// that the test sees each one.
func newBrowser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return noRedirects(jar)
}

func oauthRegisterUser(t *testing.T, base, name string) {
	t.Helper()
	body := `{"username":"` + name + `","password":"` + oauthPassword + `","auth":{"type":"m.login.dummy"}}`
	if code, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/register", "application/json", body, ""); code != 200 {
		t.Fatalf("register %s: %d %s", name, code, raw)
	}
}

type oauthEndpoints struct{ authorize, token, register, revoke string }

func oauthMetadata(t *testing.T, base string) oauthEndpoints {
	t.Helper()
	code, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v1/auth_metadata", "", "", "")
	if code != 200 {
		t.Fatalf("auth_metadata: %d %s", code, raw)
	}
	m := gjson.Parse(raw)
	return oauthEndpoints{m.Get("authorization_endpoint").Str, m.Get("token_endpoint").Str, m.Get("registration_endpoint").Str, m.Get("revocation_endpoint").Str}
}

const testRedirect = "https://app.example.org/callback"

func oauthRegisterClient(t *testing.T, e oauthEndpoints, metadata string) string {
	t.Helper()
	code, _, raw := oauthDo(t, nil, "POST", e.register, "application/json", metadata, "")
	if code != 201 || gjson.Get(raw, "client_id").Str == "" {
		t.Fatalf("client registration: %d %s", code, raw)
	}
	return gjson.Get(raw, "client_id").Str
}

func webClient(t *testing.T, e oauthEndpoints) string {
	return oauthRegisterClient(t, e, `{"client_name":"Test App","client_uri":"https://example.org/","redirect_uris":["`+testRedirect+`"],
		"response_types":["code"],"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":"none","application_type":"web"}`)
}

// pkce is a code verifier and its S256 challenge.
func pkce(seed string) (verifier, challenge string) {
	verifier = strings.Repeat(seed+"-", 64)[:64]
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func authURL(e oauthEndpoints, clientID, redirect, challenge, device string, extra url.Values) string {
	q := url.Values{
		"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect},
		"scope": {"urn:matrix:client:api:* urn:matrix:client:device:" + device},
		"state": {"state-" + device}, "response_mode": {"fragment"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"},
	}
	for k, v := range extra {
		if v[0] == "" {
			q.Del(k)
		} else {
			q[k] = v
		}
	}
	return e.authorize + "?" + q.Encode()
}

var hiddenField = regexp.MustCompile(`name="(request|csrf)" value="([^"]*)"`)

// formFields reads the hidden fields of a page's form.
func formFields(t *testing.T, page string) url.Values {
	t.Helper()
	v := url.Values{}
	for _, m := range hiddenField.FindAllStringSubmatch(page, -1) {
		v.Set(m[1], m[2])
	}
	if v.Get("request") == "" || v.Get("csrf") == "" {
		t.Fatalf("no form in the page: %.500s", page)
	}
	return v
}

// redirectParams reads the answer in a redirect to the client.
func redirectParams(t *testing.T, loc string) url.Values {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	if u.Fragment != "" {
		v, _ := url.ParseQuery(u.Fragment)
		return v
	}
	return u.Query()
}

// signInAndConsent walks the pages from the authorisation URL to the
// redirect back to the client, and returns that redirect's location.
func signInAndConsent(t *testing.T, base string, browser *http.Client, authorizeURL, user, decision string) string {
	t.Helper()
	code, h, page := oauthDo(t, browser, "GET", authorizeURL, "", "", "")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("authorize: %d %s %.300s", code, h.Get("Content-Type"), page)
	}
	form := formFields(t, page)
	form.Set("username", user)
	form.Set("password", oauthPassword)
	code, h, page = oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", form.Encode(), "")
	if code != 303 {
		t.Fatalf("sign in: %d %.300s", code, page)
	}
	code, _, page = oauthDo(t, browser, "GET", base+h.Get("Location"), "", "", "")
	if code != 200 || !strings.Contains(page, "wants to sign in as") {
		t.Fatalf("consent page: %d %.300s", code, page)
	}
	form = formFields(t, page)
	form.Set("decision", decision)
	code, h, page = oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", "application/x-www-form-urlencoded", form.Encode(), "")
	if code != 303 {
		t.Fatalf("consent: %d %.300s", code, page)
	}
	return h.Get("Location")
}

func tokenRequest(t *testing.T, e oauthEndpoints, form url.Values) (int, gjson.Result) {
	t.Helper()
	code, h, raw := oauthDo(t, nil, "POST", e.token, "application/x-www-form-urlencoded", form.Encode(), "")
	if h.Get("Cache-Control") != "no-store" {
		t.Errorf("token answer without Cache-Control: no-store")
	}
	return code, gjson.Parse(raw)
}

func exchange(t *testing.T, e oauthEndpoints, clientID, code, verifier string) (int, gjson.Result) {
	return tokenRequest(t, e, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {testRedirect}, "client_id": {clientID}, "code_verifier": {verifier}})
}

func refreshGrant(t *testing.T, e oauthEndpoints, clientID, refresh string) (int, gjson.Result) {
	return tokenRequest(t, e, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {clientID}})
}

// login runs the whole flow and returns the token answer.
func oauthLogin(t *testing.T, base string, e oauthEndpoints, clientID, user, device string) gjson.Result {
	t.Helper()
	verifier, challenge := pkce(device)
	loc := signInAndConsent(t, base, newBrowser(t), authURL(e, clientID, testRedirect, challenge, device, nil), user, "allow")
	if !strings.HasPrefix(loc, testRedirect+"#") {
		t.Fatalf("redirect to %q, want the registered URI with the answer in the fragment", loc)
	}
	p := redirectParams(t, loc)
	if p.Get("state") != "state-"+device || p.Get("code") == "" {
		t.Fatalf("callback parameters: %v", p)
	}
	code, tok := exchange(t, e, clientID, p.Get("code"), verifier)
	if code != 200 {
		t.Fatalf("code exchange: %d %s", code, tok.Raw)
	}
	return tok
}

func whoami(t *testing.T, base, token string) (int, string) {
	code, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v3/account/whoami", "", "", token)
	return code, raw
}

func TestOAuthOffByDefault(t *testing.T) {
	_, srv := newTestApp(t)
	for _, p := range []string{"/_matrix/client/v1/auth_metadata", "/_chatalot/oauth2/auth"} {
		code, _, raw := oauthDo(t, nil, "GET", srv.URL+p, "", "", "")
		if code != 404 || gjson.Get(raw, "errcode").Str != "M_UNRECOGNIZED" {
			t.Errorf("GET %s with oauth off: %d %s, want 404 M_UNRECOGNIZED", p, code, raw)
		}
	}
}

func TestOAuthMetadata(t *testing.T) {
	base := newOAuthApp(t, false)
	code, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v1/auth_metadata", "", "", "")
	if code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	m := gjson.Parse(raw)
	if m.Get("issuer").Str != base+"/" {
		t.Errorf("issuer %q, want %q", m.Get("issuer").Str, base+"/")
	}
	for _, f := range []string{"authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"} {
		if !strings.HasPrefix(m.Get(f).Str, base+"/") {
			t.Errorf("%s = %q, want a URL under the base URL", f, m.Get(f).Str)
		}
	}
	want := map[string]string{
		"response_types_supported":         `["code"]`,
		"response_modes_supported":         `["query","fragment"]`,
		"grant_types_supported":            `["authorization_code","refresh_token","urn:ietf:params:oauth:grant-type:device_code"]`,
		"code_challenge_methods_supported": `["S256"]`,
	}
	for f, v := range want {
		if m.Get(f).Raw != v {
			t.Errorf("%s = %s, want %s", f, m.Get(f).Raw, v)
		}
	}
}

func TestOAuthClientRegistration(t *testing.T) {
	base := newOAuthApp(t, false)
	e := oauthMetadata(t, base)
	meta := func(appType, clientURI string, redirects ...string) string {
		return `{"client_uri":"` + clientURI + `","application_type":"` + appType + `","redirect_uris":["` + strings.Join(redirects, `","`) + `"]}`
	}
	cases := []struct {
		name, body, wantError string
	}{
		// The spec's own examples ("Redirect URI validation").
		{"web callback", meta("web", "https://example.com/", "https://example.com/callback"), ""},
		{"web subdomain", meta("web", "https://example.com/", "https://app.example.com/callback"), ""},
		{"web port and query", meta("web", "https://example.com/", "https://example.com:5173/?query=value"), ""},
		{"web fragment", meta("web", "https://example.com/", "https://example.com/callback#fragment"), "invalid_redirect_uri"},
		{"web http", meta("web", "https://example.com/", "http://example.com/callback"), "invalid_redirect_uri"},
		{"web localhost", meta("web", "https://example.com/", "http://localhost/"), "invalid_redirect_uri"},
		{"web other host", meta("web", "https://example.com/", "https://app.com/callback"), "invalid_redirect_uri"},
		{"web host suffix", meta("web", "https://example.com/", "https://evilexample.com/callback"), "invalid_redirect_uri"},
		{"web credentials", meta("web", "https://example.com/", "https://user:pw@example.com/callback"), "invalid_redirect_uri"},
		{"native scheme", meta("native", "https://example.com/", "com.example.app:/callback"), ""},
		{"native bare scheme", meta("native", "https://example.com/", "com.example:/"), ""},
		{"native opaque", meta("native", "https://example.com/", "com.example:callback"), ""},
		{"native localhost", meta("native", "https://example.com/", "http://localhost/callback"), ""},
		{"native 127.0.0.1", meta("native", "https://example.com/", "http://127.0.0.1/callback"), ""},
		{"native ::1", meta("native", "https://example.com/", "http://[::1]/callback"), ""},
		{"native claimed https", meta("native", "https://example.com/", "https://example.com/app"), ""},
		{"native wrong scheme", meta("native", "https://example.com/", "example:/callback"), "invalid_redirect_uri"},
		{"native authority", meta("native", "https://example.com/", "com.example.app://callback"), "invalid_redirect_uri"},
		{"native https localhost", meta("native", "https://example.com/", "https://localhost/callback"), "invalid_redirect_uri"},
		{"native loopback port", meta("native", "https://example.com/", "http://localhost:1234/callback"), "invalid_redirect_uri"},
		{"native other scheme", meta("native", "https://example.com/", "org.evil:/callback"), "invalid_redirect_uri"},
		{"no redirect", `{"client_uri":"https://example.com/"}`, "invalid_redirect_uri"},
		{"no client_uri", `{"redirect_uris":["https://example.com/cb"]}`, "invalid_client_metadata"},
		{"http client_uri", meta("web", "http://example.com/", "https://example.com/cb"), "invalid_client_metadata"},
		{"bad application_type", meta("desktop", "https://example.com/", "https://example.com/cb"), "invalid_client_metadata"},
		{"secret", `{"client_uri":"https://example.com/","redirect_uris":["https://example.com/cb"],"token_endpoint_auth_method":"client_secret_basic"}`, "invalid_client_metadata"},
		{"logo elsewhere", `{"client_uri":"https://example.com/","redirect_uris":["https://example.com/cb"],"logo_uri":"https://tracker.example.net/l.png"}`, "invalid_client_metadata"},
		{"policy http", `{"client_uri":"https://example.com/","redirect_uris":["https://example.com/cb"],"policy_uri":"http://example.com/p"}`, "invalid_client_metadata"},
		{"no code", `{"client_uri":"https://example.com/","redirect_uris":["https://example.com/cb"],"response_types":["token"]}`, "invalid_client_metadata"},
		{"not json", `client_uri=x`, "invalid_client_metadata"},
	}
	for _, tc := range cases {
		code, _, raw := oauthDo(t, nil, "POST", e.register, "application/json", tc.body, "")
		if tc.wantError == "" {
			if code != 201 || gjson.Get(raw, "client_id").Str == "" || gjson.Get(raw, "token_endpoint_auth_method").Str != "none" {
				t.Errorf("%s: %d %s, want 201 with a client_id", tc.name, code, raw)
			}
			continue
		}
		if code != 400 || gjson.Get(raw, "error").Str != tc.wantError {
			t.Errorf("%s: %d %s, want 400 %s", tc.name, code, raw, tc.wantError)
		}
	}
	// Localised fields are not registered; the logo is kept but never
	// fetched (nothing here listens at example.com).
	code, _, raw := oauthDo(t, nil, "POST", e.register, "application/json",
		`{"client_name":"My App","client_name#fr":"Mon application","client_uri":"https://example.com/","logo_uri":"https://example.com/logo.png","redirect_uris":["https://example.com/cb"],"grant_types":["authorization_code","refresh_token","urn:ietf:params:oauth:grant-type:token-exchange"]}`, "")
	if code != 201 || gjson.Get(raw, `client_name\#fr`).Exists() || gjson.Get(raw, "grant_types").Raw != `["authorization_code","refresh_token"]` || gjson.Get(raw, "logo_uri").Str == "" {
		t.Errorf("registration answer: %d %s", code, raw)
	}
}

// TestOAuthFullFlow: sign in through the pages, use the token on the
// client API, refresh with rotation, reuse of a spent refresh token ends
// the session, revocation deletes the device.
func TestOAuthFullFlow(t *testing.T) {
	base := newOAuthApp(t, false)
	oauthRegisterUser(t, base, "alice")
	e := oauthMetadata(t, base)
	client := webClient(t, e)

	tok := oauthLogin(t, base, e, client, "alice", "DEVICEAAAA")
	if tok.Get("token_type").Str != "Bearer" || tok.Get("expires_in").Int() != 300 || tok.Get("refresh_token").Str == "" ||
		tok.Get("scope").Str != "urn:matrix:client:api:* urn:matrix:client:device:DEVICEAAAA" {
		t.Fatalf("token answer: %s", tok.Raw)
	}
	access := tok.Get("access_token").Str
	code, raw := whoami(t, base, access)
	if code != 200 || gjson.Get(raw, "user_id").Str != "@alice:localhost" || gjson.Get(raw, "device_id").Str != "DEVICEAAAA" {
		t.Fatalf("whoami: %d %s", code, raw)
	}
	if code, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v3/sync?timeout=0", "", "", access); code != 200 || !gjson.Get(raw, "next_batch").Exists() {
		t.Fatalf("sync: %d %.200s", code, raw)
	}
	code, _, raw = oauthDo(t, nil, "GET", base+"/_matrix/client/v3/devices", "", "", access)
	if code != 200 || gjson.Get(raw, `devices.#(device_id=="DEVICEAAAA").display_name`).Str != "Test App" {
		t.Fatalf("devices: %d %s", code, raw)
	}

	// Rotation: a new pair; the old access token is gone.
	r1 := tok.Get("refresh_token").Str
	code, t2 := refreshGrant(t, e, client, r1)
	if code != 200 || t2.Get("refresh_token").Str == r1 || t2.Get("access_token").Str == access {
		t.Fatalf("refresh: %d %s", code, t2.Raw)
	}
	if code, _ := whoami(t, base, access); code != 401 {
		t.Errorf("the replaced access token still works: %d", code)
	}
	// The answer was "lost": the same refresh token is accepted once more
	// while its successor was never used.
	code, t3 := refreshGrant(t, e, client, r1)
	if code != 200 {
		t.Fatalf("retried refresh: %d %s", code, t3.Raw)
	}
	// The client goes on with the latest answer.
	code, t4 := refreshGrant(t, e, client, t3.Get("refresh_token").Str)
	if code != 200 {
		t.Fatalf("refresh: %d %s", code, t4.Raw)
	}
	if code, raw := whoami(t, base, t4.Get("access_token").Str); code != 200 || gjson.Get(raw, "device_id").Str != "DEVICEAAAA" {
		t.Fatalf("whoami after refresh: %d %s", code, raw)
	}
	// The never-used successor of the retry is dead.
	if code, r := refreshGrant(t, e, client, t2.Get("refresh_token").Str); code != 400 || r.Get("error").Str != "invalid_grant" {
		t.Fatalf("superseded refresh token: %d %s", code, r.Raw)
	}
	// That was a replay: the session is over, device and all.
	if code, _ := whoami(t, base, t4.Get("access_token").Str); code != 401 {
		t.Errorf("after a refresh token replay the session still works: %d", code)
	}
	if code, r := refreshGrant(t, e, client, t4.Get("refresh_token").Str); code != 400 {
		t.Errorf("after a replay the latest refresh token still works: %d %s", code, r.Raw)
	}
	if code, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"`+oauthPassword+`"}`, ""); code != 200 {
		t.Fatalf("legacy login beside OAuth: %d %s", code, raw)
	} else {
		_, _, devs := oauthDo(t, nil, "GET", base+"/_matrix/client/v3/devices", "", "", gjson.Get(raw, "access_token").Str)
		if gjson.Get(devs, `devices.#(device_id=="DEVICEAAAA")`).Exists() {
			t.Errorf("the replayed session's device is still there: %s", devs)
		}
	}

	// Revocation by refresh token deletes the device.
	tok = oauthLogin(t, base, e, client, "alice", "DEVICEBBBB")
	if code, _, raw := oauthDo(t, nil, "POST", e.revoke, "application/x-www-form-urlencoded",
		url.Values{"token": {tok.Get("refresh_token").Str}, "token_type_hint": {"refresh_token"}, "client_id": {client}}.Encode(), ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, raw)
	}
	if code, _ := whoami(t, base, tok.Get("access_token").Str); code != 401 {
		t.Errorf("revoked session still works: %d", code)
	}
	if code, _ := refreshGrant(t, e, client, tok.Get("refresh_token").Str); code != 400 {
		t.Errorf("revoked refresh token still works: %d", code)
	}
	// Revocation by access token, without naming the client.
	tok = oauthLogin(t, base, e, client, "alice", "DEVICECCCC")
	if code, _, raw := oauthDo(t, nil, "POST", e.revoke, "application/x-www-form-urlencoded", url.Values{"token": {tok.Get("access_token").Str}}.Encode(), ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, raw)
	}
	if code, _ := whoami(t, base, tok.Get("access_token").Str); code != 401 {
		t.Errorf("revoked session still works: %d", code)
	}
	if code, _ := refreshGrant(t, e, client, tok.Get("refresh_token").Str); code != 400 {
		t.Errorf("revoked session's refresh token still works: %d", code)
	}
	// An unknown token is a success (RFC 7009 section 2.2).
	if code, _, _ := oauthDo(t, nil, "POST", e.revoke, "application/x-www-form-urlencoded", "token=nothing", ""); code != 200 {
		t.Errorf("revoking an unknown token: %d", code)
	}
	// A device signed out through the client API does not come back by
	// refreshing.
	tok = oauthLogin(t, base, e, client, "alice", "DEVICEDDDD")
	if code, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/logout", "application/json", "{}", tok.Get("access_token").Str); code != 200 {
		t.Fatalf("logout: %d %s", code, raw)
	}
	if code, r := refreshGrant(t, e, client, tok.Get("refresh_token").Str); code != 400 {
		t.Errorf("refresh after logout: %d %s", code, r.Raw)
	}
	// Nor does a refresh token of a signed-out session take over a device
	// made later with the same ID.
	tok = oauthLogin(t, base, e, client, "alice", "DEVICEEEEE")
	oauthDo(t, nil, "POST", base+"/_matrix/client/v3/logout", "application/json", "{}", tok.Get("access_token").Str)
	_, _, raw = oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"`+oauthPassword+`","device_id":"DEVICEEEEE"}`, "")
	legacy := gjson.Get(raw, "access_token").Str
	if code, r := refreshGrant(t, e, client, tok.Get("refresh_token").Str); code != 400 {
		t.Errorf("an old refresh token on a new device of the same ID: %d %s", code, r.Raw)
	}
	if code, _ := whoami(t, base, legacy); code != 200 {
		t.Errorf("the new device's session was taken over: %d", code)
	}
}

func TestOAuthAuthorizationSecurity(t *testing.T) {
	base := newOAuthApp(t, false)
	oauthRegisterUser(t, base, "bob")
	e := oauthMetadata(t, base)
	client := webClient(t, e)
	other := oauthRegisterClient(t, e, `{"client_name":"Other","client_uri":"https://other.example.net/","redirect_uris":["https://other.example.net/cb"]}`)
	_, challenge := pkce("x")

	// A redirect URI that was not registered is never redirected to.
	for name, redirect := range map[string]string{
		"other host":   "https://evil.example.com/callback",
		"other path":   "https://app.example.org/callback/../evil",
		"prefix":       testRedirect + "/more",
		"query added":  testRedirect + "?next=https://evil.example.com",
		"userinfo":     "https://app.example.org@evil.example.com/callback",
		"other client": "https://other.example.net/cb",
	} {
		code, h, page := oauthDo(t, newBrowser(t), "GET", authURL(e, client, redirect, challenge, "DEV1234567", nil), "", "", "")
		if code != 400 || h.Get("Location") != "" || !strings.Contains(page, "did not register") {
			t.Errorf("redirect_uri %s: %d Location %q", name, code, h.Get("Location"))
		}
	}
	if code, h, _ := oauthDo(t, newBrowser(t), "GET", authURL(e, "nosuchclient", testRedirect, challenge, "DEV1234567", nil), "", "", ""); code != 400 || h.Get("Location") != "" {
		t.Errorf("unknown client: %d Location %q", code, h.Get("Location"))
	}

	// Errors the client can be told go back to it, with the state.
	for name, tc := range map[string]struct {
		extra url.Values
		want  string
	}{
		"no PKCE":        {url.Values{"code_challenge": {""}, "code_challenge_method": {""}}, "invalid_request"},
		"plain PKCE":     {url.Values{"code_challenge_method": {"plain"}}, "invalid_request"},
		"no method":      {url.Values{"code_challenge_method": {""}}, "invalid_request"},
		"short":          {url.Values{"code_challenge": {"abc"}}, "invalid_request"},
		"token response": {url.Values{"response_type": {"token"}}, "unsupported_response_type"},
		"no device":      {url.Values{"scope": {"urn:matrix:client:api:*"}}, "invalid_scope"},
		"two devices":    {url.Values{"scope": {"urn:matrix:client:api:* urn:matrix:client:device:AAAAAAAAAA urn:matrix:client:device:BBBBBBBBBB"}}, "invalid_scope"},
		"admin scope":    {url.Values{"scope": {"urn:matrix:client:api:* urn:matrix:client:device:AAAAAAAAAA urn:synapse:admin:*"}}, "invalid_scope"},
		"bad device":     {url.Values{"scope": {"urn:matrix:client:api:* urn:matrix:client:device:a/b"}}, "invalid_scope"},
	} {
		code, h, _ := oauthDo(t, newBrowser(t), "GET", authURL(e, client, testRedirect, challenge, "DEV1234567", tc.extra), "", "", "")
		p := redirectParams(t, h.Get("Location"))
		if code != 303 || !strings.HasPrefix(h.Get("Location"), testRedirect+"#") || p.Get("error") != tc.want || p.Get("state") != "state-DEV1234567" {
			t.Errorf("%s: %d %q, want a redirect with error %s and the state", name, code, h.Get("Location"), tc.want)
		}
	}
	// response_mode=query puts the answer in the query.
	code, h, _ := oauthDo(t, newBrowser(t), "GET", authURL(e, client, testRedirect, challenge, "DEV1234567", url.Values{"response_mode": {"query"}, "response_type": {"token"}}), "", "", "")
	if u, _ := url.Parse(h.Get("Location")); code != 303 || u == nil || u.Query().Get("error") != "unsupported_response_type" {
		t.Errorf("query mode: %d %q", code, h.Get("Location"))
	}

	// The pages: CSP, no framing, no CORS, no caching.
	browser := newBrowser(t)
	code, h, page := oauthDo(t, browser, "GET", authURL(e, client, testRedirect, challenge, "DEV1234567", nil), "", "", "")
	if code != 200 || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
		h.Get("Access-Control-Allow-Origin") != "" || h.Get("Cache-Control") != "no-store" || strings.Contains(page, "<script") {
		t.Errorf("sign-in page headers: %d %v", code, h)
	}
	form := formFields(t, page)
	form.Set("username", "bob")
	form.Set("password", oauthPassword)
	// Wrong CSRF token, and the right one from a browser that did not
	// open the request: both refused.
	bad := url.Values{}
	for k, v := range form {
		bad[k] = v
	}
	bad.Set("csrf", "forged")
	if code, _, _ := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", bad.Encode(), ""); code != 403 {
		t.Errorf("forged CSRF token: %d", code)
	}
	if code, _, _ := oauthDo(t, newBrowser(t), "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", form.Encode(), ""); code != 403 {
		t.Errorf("another browser: %d", code)
	}
	// No account enumeration: an unknown user and a wrong password read
	// the same.
	wrong := func(user, password string) (int, string) {
		f := url.Values{"request": {form.Get("request")}, "csrf": {form.Get("csrf")}, "username": {user}, "password": {password}}
		code, _, page := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", f.Encode(), "")
		return code, hiddenField.ReplaceAllString(page, "")
	}
	c1, p1 := wrong("bob", "wrong password")
	c2, p2 := wrong("nobody", "wrong password")
	if c1 != 403 || c1 != c2 || p1 != p2 {
		t.Errorf("unknown user and wrong password differ: %d %d", c1, c2)
	}

	// Consent denied: the client hears access_denied.
	loc := signInAndConsent(t, base, newBrowser(t), authURL(e, client, testRedirect, challenge, "DEV1234567", nil), "bob", "deny")
	if p := redirectParams(t, loc); p.Get("error") != "access_denied" || p.Get("state") != "state-DEV1234567" {
		t.Errorf("denied: %q", loc)
	}

	// The code: bound to its client, redirect URI and verifier, and used
	// once; a second use revokes the session the first made.
	verifier, challenge := pkce("v")
	codeFor := func(device string) string {
		loc := signInAndConsent(t, base, newBrowser(t), authURL(e, client, testRedirect, challenge, device, nil), "bob", "allow")
		return redirectParams(t, loc).Get("code")
	}
	c := codeFor("DEVICE0001")
	if code, r := tokenRequest(t, e, url.Values{"grant_type": {"authorization_code"}, "code": {c}, "redirect_uri": {"https://other.example.net/cb"}, "client_id": {other}, "code_verifier": {verifier}}); code != 400 || r.Get("error").Str != "invalid_grant" {
		t.Errorf("code for another client: %d %s", code, r.Raw)
	}
	if code, r := exchange(t, e, client, c, verifier); code != 400 {
		t.Errorf("a code tried by another client first is burnt: %d %s", code, r.Raw)
	}
	c = codeFor("DEVICE0002")
	if code, r := exchange(t, e, client, c, strings.Repeat("w", 64)); code != 400 || r.Get("error").Str != "invalid_grant" {
		t.Errorf("wrong verifier: %d %s", code, r.Raw)
	}
	c = codeFor("DEVICE0003")
	if code, r := tokenRequest(t, e, url.Values{"grant_type": {"authorization_code"}, "code": {c}, "redirect_uri": {testRedirect + "x"}, "client_id": {client}, "code_verifier": {verifier}}); code != 400 {
		t.Errorf("wrong redirect_uri: %d %s", code, r.Raw)
	}
	c = codeFor("DEVICE0004")
	if code, r := tokenRequest(t, e, url.Values{"grant_type": {"authorization_code"}, "code": {c}, "redirect_uri": {testRedirect}, "client_id": {client}}); code != 400 || r.Get("error").Str != "invalid_request" {
		t.Errorf("no verifier: %d %s", code, r.Raw)
	}
	c = codeFor("DEVICE0005")
	code, first := exchange(t, e, client, c, verifier)
	if code != 200 {
		t.Fatalf("exchange: %d %s", code, first.Raw)
	}
	if code, r := exchange(t, e, client, c, verifier); code != 400 || r.Get("error").Str != "invalid_grant" {
		t.Errorf("code reuse: %d %s", code, r.Raw)
	}
	if code, _ := whoami(t, base, first.Get("access_token").Str); code != 401 {
		t.Errorf("the session of a reused code still works: %d", code)
	}
	if code, r := tokenRequest(t, e, url.Values{"grant_type": {"authorization_code"}, "code": {"x"}, "redirect_uri": {testRedirect}, "client_id": {"nosuchclient"}, "code_verifier": {verifier}}); code != 401 || r.Get("error").Str != "invalid_client" {
		t.Errorf("unknown client: %d %s", code, r.Raw)
	}
	if code, r := tokenRequest(t, e, url.Values{"grant_type": {"password"}, "client_id": {client}}); code != 400 || r.Get("error").Str != "unsupported_grant_type" {
		t.Errorf("password grant: %d %s", code, r.Raw)
	}
	// A refresh token works only for the client it was issued to.
	c = codeFor("DEVICE0006")
	_, tok := exchange(t, e, client, c, verifier)
	if code, r := refreshGrant(t, e, other, tok.Get("refresh_token").Str); code != 400 {
		t.Errorf("refresh by another client: %d %s", code, r.Raw)
	}
}

// TestOAuthNativeLoopbackAnyPort: a native client's loopback redirect URI
// is registered without a port and accepted with any.
func TestOAuthNativeLoopbackAnyPort(t *testing.T) {
	base := newOAuthApp(t, false)
	oauthRegisterUser(t, base, "carol")
	e := oauthMetadata(t, base)
	client := oauthRegisterClient(t, e, `{"client_uri":"https://example.com/","application_type":"native","redirect_uris":["http://127.0.0.1/callback","com.example.app:/callback"]}`)
	_, challenge := pkce("n")
	for _, redirect := range []string{"http://127.0.0.1:49152/callback", "com.example.app:/callback"} {
		loc := signInAndConsent(t, base, newBrowser(t), authURL(e, client, redirect, challenge, "NATIVE0001", url.Values{"response_mode": {"query"}}), "carol", "allow")
		if !strings.HasPrefix(loc, redirect+"?") || redirectParams(t, loc).Get("code") == "" {
			t.Errorf("redirect %q", loc)
		}
	}
	if code, _, _ := oauthDo(t, newBrowser(t), "GET", authURL(e, client, "http://127.0.0.1:49152/other", challenge, "NATIVE0001", nil), "", "", ""); code != 400 {
		t.Errorf("loopback with another path: %d", code)
	}
}

// TestOAuthSignInIsRateLimited: the sign-in page shares password login's
// limits; guessing stops being answered.
func TestOAuthSignInIsRateLimited(t *testing.T) {
	base := newOAuthApp(t, true)
	oauthRegisterUser(t, base, "dave")
	e := oauthMetadata(t, base)
	client := webClient(t, e)
	_, challenge := pkce("r")
	browser := newBrowser(t)
	_, _, page := oauthDo(t, browser, "GET", authURL(e, client, testRedirect, challenge, "DEV1234567", nil), "", "", "")
	form := formFields(t, page)
	form.Set("username", "dave")
	limited := false
	for i := 0; i < 20 && !limited; i++ {
		form.Set("password", "guess"+string(rune('a'+i)))
		code, _, page := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", form.Encode(), "")
		limited = code == 429 && strings.Contains(page, "Too many attempts")
	}
	if !limited {
		t.Fatal("20 wrong passwords were all answered")
	}
	// The right password is refused too while limited.
	form.Set("password", oauthPassword)
	if code, _, _ := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", form.Encode(), ""); code != 429 {
		t.Errorf("right password while limited: %d", code)
	}
}

// TestOAuthSignUpWithInviteCode: prompt=create opens the sign-up page; an
// account is made with an invite code, whose use is counted, and the flow
// goes on to consent and a working session.
func TestOAuthSignUpWithInviteCode(t *testing.T) {
	app, base := newOAuthAppWith(t, func(cfg *Config) { cfg.Registration = "token" })
	err := app.db.Write(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO registration_tokens (token, uses_allowed, created_ts) VALUES ('invite-1', 1, 0), ('invite-2', 5, 0)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	e := oauthMetadata(t, base)
	_, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v1/auth_metadata", "", "", "")
	if gjson.Get(raw, "prompt_values_supported").Raw != `["create"]` {
		t.Errorf("prompt_values_supported: %s", raw)
	}
	client := webClient(t, e)
	verifier, challenge := pkce("s")
	signUp := func(browser *http.Client, user, invite, device string) (int, string, http.Header) {
		_, _, page := oauthDo(t, browser, "GET", authURL(e, client, testRedirect, challenge, device, url.Values{"prompt": {"create"}}), "", "", "")
		if !strings.Contains(page, "Create an account") || !strings.Contains(page, `name="invite_code"`) {
			t.Fatalf("prompt=create did not open the sign-up page: %.300s", page)
		}
		form := formFields(t, page)
		form.Set("username", user)
		form.Set("password", oauthPassword)
		form.Set("password2", oauthPassword)
		form.Set("invite_code", invite)
		code, h, page := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_up", "application/x-www-form-urlencoded", form.Encode(), "")
		return code, page, h
	}
	if code, page, _ := signUp(newBrowser(t), "erin", "no-such-code", "SIGNUP0001"); code != 403 || !strings.Contains(page, "invite code is not valid") {
		t.Errorf("wrong invite code: %d %.300s", code, page)
	}
	browser := newBrowser(t)
	code, page, h := signUp(browser, "erin", "invite-1", "SIGNUP0002")
	if code != 303 {
		t.Fatalf("sign up: %d %.300s", code, page)
	}
	code, _, page = oauthDo(t, browser, "GET", base+h.Get("Location"), "", "", "")
	if code != 200 || !strings.Contains(page, "@erin:localhost") {
		t.Fatalf("consent after sign-up: %d %.300s", code, page)
	}
	form := formFields(t, page)
	form.Set("decision", "allow")
	_, h, _ = oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", "application/x-www-form-urlencoded", form.Encode(), "")
	code, tok := exchange(t, e, client, redirectParams(t, h.Get("Location")).Get("code"), verifier)
	if code != 200 {
		t.Fatalf("exchange: %d %s", code, tok.Raw)
	}
	if code, raw := whoami(t, base, tok.Get("access_token").Str); code != 200 || gjson.Get(raw, "user_id").Str != "@erin:localhost" {
		t.Fatalf("whoami: %d %s", code, raw)
	}
	// The code had one use: it is used up.
	if code, page, _ := signUp(newBrowser(t), "frank", "invite-1", "SIGNUP0003"); code != 403 {
		t.Errorf("used-up invite code: %d %.300s", code, page)
	}
	// A taken name is said so (as /register/available does), but only to
	// someone with a valid invite code.
	if code, page, _ := signUp(newBrowser(t), "erin", "no-such-code", "SIGNUP0004"); code != 403 || strings.Contains(page, "taken") {
		t.Errorf("taken name without an invite: %d %.300s", code, page)
	}
	if code, page, _ := signUp(newBrowser(t), "erin", "invite-2", "SIGNUP0004"); code != 400 || !strings.Contains(page, "taken") {
		t.Errorf("taken name: %d %.300s", code, page)
	}
}

// TestOAuthAccountPage: account_management_uri's page signs in on its own,
// lists the sessions and signs one out (OAuth grant included), changes the
// password and closes the account, each behind its CSRF token.
func TestOAuthAccountPage(t *testing.T) {
	base := newOAuthApp(t, false)
	oauthRegisterUser(t, base, "gina")
	e := oauthMetadata(t, base)
	_, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v1/auth_metadata", "", "", "")
	account := gjson.Get(raw, "account_management_uri").Str
	if account != base+"/_chatalot/account" || !strings.Contains(gjson.Get(raw, "account_management_actions_supported").Raw, "org.matrix.device_delete") {
		t.Fatalf("account management metadata: %s", raw)
	}
	client := webClient(t, e)
	tok := oauthLogin(t, base, e, client, "gina", "ACCOUNTDEV")
	csrfField := regexp.MustCompile(`name="csrf" value="([^"]*)"`)
	post := func(browser *http.Client, path string, form url.Values) (int, http.Header, string) {
		return oauthDo(t, browser, "POST", base+path, "application/x-www-form-urlencoded", form.Encode(), "")
	}

	// Deep link: the sign-in page first, then back to the action.
	browser := newBrowser(t)
	code, _, page := oauthDo(t, browser, "GET", account+"?action=org.matrix.device_delete&device_id=ACCOUNTDEV", "", "", "")
	if code != 200 || !strings.Contains(page, `name="next" value="/_chatalot/account?action=org.matrix.device_delete&amp;device_id=ACCOUNTDEV"`) {
		t.Fatalf("account sign-in: %d %.600s", code, page)
	}
	csrf := csrfField.FindStringSubmatch(page)[1]
	if code, _, _ := post(browser, "/_chatalot/account/sign_in", url.Values{"csrf": {"forged"}, "username": {"gina"}, "password": {oauthPassword}}); code != 403 {
		t.Errorf("sign-in with a forged CSRF token: %d", code)
	}
	code, h, _ := post(browser, "/_chatalot/account/sign_in", url.Values{"csrf": {csrf}, "username": {"gina"}, "password": {oauthPassword}, "next": {"https://evil.example.com/_chatalot/account"}})
	if code != 303 || h.Get("Location") != "/_chatalot/account" {
		t.Fatalf("sign-in: %d, to %q (must stay on the account page)", code, h.Get("Location"))
	}
	code, _, page = oauthDo(t, browser, "GET", account+"?action=org.matrix.device_delete&device_id=ACCOUNTDEV", "", "", "")
	if code != 200 || !strings.Contains(page, "<code>ACCOUNTDEV</code>") || !strings.Contains(page, "Test App") {
		t.Fatalf("account page: %d %.600s", code, page)
	}
	csrf = csrfField.FindStringSubmatch(page)[1]
	if code, _, _ := post(browser, "/_chatalot/account/delete_device", url.Values{"csrf": {"forged"}, "device_id": {"ACCOUNTDEV"}}); code != 403 {
		t.Errorf("delete with a forged CSRF token: %d", code)
	}
	if code, _ := whoami(t, base, tok.Get("access_token").Str); code != 200 {
		t.Fatalf("the session went before it was signed out: %d", code)
	}
	if code, _, _ := post(browser, "/_chatalot/account/delete_device", url.Values{"csrf": {csrf}, "device_id": {"ACCOUNTDEV"}}); code != 303 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := whoami(t, base, tok.Get("access_token").Str); code != 401 {
		t.Errorf("a session signed out on the account page still works: %d", code)
	}
	if code, _ := refreshGrant(t, e, client, tok.Get("refresh_token").Str); code != 400 {
		t.Errorf("its refresh token still works: %d", code)
	}

	// Password: the current one is asked again; other sessions end.
	_, _, login := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"gina"},"password":"`+oauthPassword+`"}`, "")
	legacy := gjson.Get(login, "access_token").Str
	change := url.Values{"csrf": {csrf}, "current_password": {"wrong"}, "new_password": {"a new long password"}, "new_password2": {"a new long password"}}
	if code, _, _ := post(browser, "/_chatalot/account/password", change); code != 403 {
		t.Errorf("password change with a wrong current password: %d", code)
	}
	change.Set("current_password", oauthPassword)
	if code, _, page := post(browser, "/_chatalot/account/password", change); code != 200 || !strings.Contains(page, "Your password was changed") {
		t.Fatalf("password change: %d %.300s", code, page)
	}
	if code, _ := whoami(t, base, legacy); code != 401 {
		t.Errorf("another session survived the password change: %d", code)
	}

	// Closing the account needs the password and the box ticked.
	closeForm := url.Values{"csrf": {csrf}, "password": {"a new long password"}}
	if code, _, _ := post(browser, "/_chatalot/account/deactivate", closeForm); code != 400 {
		t.Errorf("deactivate without confirming: %d", code)
	}
	closeForm.Set("confirm", "yes")
	if code, _, page := post(browser, "/_chatalot/account/deactivate", closeForm); code != 200 || !strings.Contains(page, "is closed") {
		t.Fatalf("deactivate: %d %.300s", code, page)
	}
	if code, _, _ := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"gina"},"password":"a new long password"}`, ""); code != 403 {
		t.Errorf("login after closing the account: %d", code)
	}
	// The browser session ended with the account.
	if code, _, page := oauthDo(t, browser, "GET", account, "", "", ""); code != 200 || !strings.Contains(page, `name="password"`) || strings.Contains(page, "Sessions") {
		t.Errorf("account page after closing: %d", code)
	}
}

// TestOAuthPasswordLoginSetting: with password_login off, /login stops
// offering and accepting passwords while the OAuth pages still sign in.
func TestOAuthPasswordLoginSetting(t *testing.T) {
	_, base := newOAuthAppWith(t, func(cfg *Config) { cfg.PasswordLogin = false })
	oauthRegisterUser(t, base, "hana")
	_, _, flows := oauthDo(t, nil, "GET", base+"/_matrix/client/v3/login", "", "", "")
	if strings.Contains(flows, "m.login.password") || !strings.Contains(flows, "m.login.token") {
		t.Errorf("login flows: %s", flows)
	}
	code, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"hana"},"password":"`+oauthPassword+`"}`, "")
	if code != 400 || gjson.Get(raw, "errcode").Str != "M_UNKNOWN" {
		t.Errorf("password login while off: %d %s", code, raw)
	}
	e := oauthMetadata(t, base)
	tok := oauthLogin(t, base, e, webClient(t, e), "hana", "NOPASSWORD")
	if code, _ := whoami(t, base, tok.Get("access_token").Str); code != 200 {
		t.Errorf("OAuth session: %d", code)
	}
	cfg := defaults()
	cfg.PasswordLogin = false
	if problems := cfg.Validate(); !strings.Contains(problems.Error(), "password_login") {
		t.Errorf("password_login off without oauth or JWT passed validation: %v", problems)
	}
}

// TestOAuthRevokedTokenOnEveryRoute: once revoked, an OAuth access token is
// refused on every authenticated route, as a logged-out token is.
func TestOAuthRevokedTokenOnEveryRoute(t *testing.T) {
	app, base := newOAuthAppWith(t, func(*Config) {})
	oauthRegisterUser(t, base, "ivan")
	e := oauthMetadata(t, base)
	tok := oauthLogin(t, base, e, webClient(t, e), "ivan", "REVOKEDDEV")
	access := tok.Get("access_token").Str
	if code, _, raw := oauthDo(t, nil, "POST", e.revoke, "application/x-www-form-urlencoded", url.Values{"token": {tok.Get("refresh_token").Str}}.Encode(), ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, raw)
	}
	checked := 0
	for _, rt := range app.Router().(*gin.Engine).Routes() {
		if isPublic(rt) || oauthRoute(rt.Path) {
			continue // the OAuth API's own routes take no access token
		}
		path := fill(t, rt.Path, func(_ string, v []string) string { return v[0] })
		code, raw := request(t, rt.Method, base+path, access, "{}")
		if code != 401 || gjson.Get(raw, "errcode").Str != "M_UNKNOWN_TOKEN" {
			t.Errorf("%s with a revoked OAuth token: %d %.150s", route(rt), code, raw)
		}
		checked++
	}
	if checked < 100 {
		t.Fatalf("only %d routes checked", checked)
	}
}

// oauthRoute: the routes of the OAuth 2.0 API, QR-code login and the
// legacy SSO login it serves, which answer without an access token.
func oauthRoute(path string) bool {
	return strings.HasPrefix(path, "/_chatalot/") || strings.HasSuffix(path, "/auth_metadata") || strings.Contains(path, "/io.element.msc4388/") ||
		strings.HasSuffix(path, "/login/sso/redirect")
}

// TestOAuthGarbage sends malformed requests to every OAuth route: none may
// be answered with a 5xx.
func TestOAuthGarbage(t *testing.T) {
	app, base := newOAuthAppWith(t, func(*Config) {})
	bodies := []string{"", "{", "null", `{"client_uri":5}`, `{"redirect_uris":"x"}`, "a=%zz", "request=x&csrf=y", strings.Repeat("x=1&", 2000),
		"grant_type=authorization_code&code=&client_id=", "grant_type=refresh_token&refresh_token=x&client_id=x", "token=", "\x00\xff"}
	queries := []string{"", "?client_id=x&client_id=y", "?request=%00", "?action=" + strings.Repeat("a", 5000), "?redirect_uri=%zz"}
	n := 0
	for _, rt := range app.Router().(*gin.Engine).Routes() {
		if !oauthRoute(rt.Path) {
			continue
		}
		path := strings.ReplaceAll(rt.Path, ":id", "nosuchsession")
		for _, q := range queries {
			for _, ct := range []string{"application/x-www-form-urlencoded", "application/json", "text/plain"} {
				for _, b := range bodies {
					code, _, raw := oauthDo(t, nil, rt.Method, base+path+q, ct, b, "")
					n++
					if code >= 500 {
						t.Errorf("%s %s%s (%s, %.40q): %d %.200s", rt.Method, rt.Path, q, ct, b, code, raw)
					}
				}
			}
		}
	}
	if n < 100 {
		t.Fatalf("only %d requests", n)
	}
}

// TestOAuthDeviceAuthorizationGrant: RFC 8628 as the spec profiles it. The
// device asks for a code, polls; the person opens the link, signs in and
// allows (or not); the device gets its session.
func TestOAuthDeviceAuthorizationGrant(t *testing.T) {
	base := newOAuthApp(t, false)
	oauthRegisterUser(t, base, "jill")
	_, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v1/auth_metadata", "", "", "")
	deviceEndpoint := gjson.Get(raw, "device_authorization_endpoint").Str
	if deviceEndpoint == "" {
		t.Fatalf("no device_authorization_endpoint: %s", raw)
	}
	e := oauthMetadata(t, base)
	// A device-only client needs no redirect URI.
	client := oauthRegisterClient(t, e, `{"client_name":"TV app","client_uri":"https://example.org/","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	codeOnly := webClient(t, e)
	form := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v.Encode()
	}
	start := func(clientID, device string) gjson.Result {
		code, _, raw := oauthDo(t, nil, "POST", deviceEndpoint, "application/x-www-form-urlencoded",
			form("client_id", clientID, "scope", "urn:matrix:client:api:* urn:matrix:client:device:"+device), "")
		if code != 200 {
			t.Fatalf("device authorisation: %d %s", code, raw)
		}
		return gjson.Parse(raw)
	}
	poll := func(clientID, deviceCode string) (int, gjson.Result) {
		return tokenRequest(t, e, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {deviceCode}, "client_id": {clientID}})
	}
	if code, _, raw := oauthDo(t, nil, "POST", deviceEndpoint, "application/x-www-form-urlencoded",
		form("client_id", codeOnly, "scope", "urn:matrix:client:api:* urn:matrix:client:device:TVDEVICE01"), ""); code != 400 || gjson.Get(raw, "error").Str != "unauthorized_client" {
		t.Errorf("a client without the grant: %d %s", code, raw)
	}

	d := start(client, "TVDEVICE01")
	if !regexp.MustCompile(`^[A-Z]{4}-[A-Z]{4}$`).MatchString(d.Get("user_code").Str) || d.Get("interval").Int() != 5 ||
		d.Get("verification_uri").Str != base+"/_chatalot/oauth2/auth/device" || !strings.HasPrefix(d.Get("verification_uri_complete").Str, d.Get("verification_uri").Str+"?user_code=") {
		t.Fatalf("device authorisation answer: %s", d.Raw)
	}
	deviceCode := d.Get("device_code").Str
	if code, r := poll(client, deviceCode); code != 400 || r.Get("error").Str != "authorization_pending" {
		t.Errorf("first poll: %d %s", code, r.Raw)
	}
	if code, r := poll(client, deviceCode); code != 400 || r.Get("error").Str != "slow_down" {
		t.Errorf("fast poll: %d %s", code, r.Raw)
	}
	otherDevice := oauthRegisterClient(t, e, `{"client_uri":"https://example.net/","grant_types":["urn:ietf:params:oauth:grant-type:device_code"]}`)
	if code, r := poll(otherDevice, deviceCode); code != 400 || r.Get("error").Str != "invalid_grant" {
		t.Errorf("another client polling: %d %s", code, r.Raw)
	}

	// The person types the code (lower case, without the dash) on the page.
	browser := newBrowser(t)
	if code, _, page := oauthDo(t, browser, "GET", d.Get("verification_uri").Str, "", "", ""); code != 200 || !strings.Contains(page, `name="user_code"`) {
		t.Fatalf("code entry page: %d %.300s", code, page)
	}
	if code, _, _ := oauthDo(t, browser, "GET", d.Get("verification_uri").Str+"?user_code=BBBB-BBBB", "", "", ""); code != 404 {
		t.Errorf("unknown code: %d", code)
	}
	typed := strings.ToLower(strings.ReplaceAll(d.Get("user_code").Str, "-", ""))
	code, _, page := oauthDo(t, browser, "GET", d.Get("verification_uri").Str+"?user_code="+typed, "", "", "")
	if code != 200 || !strings.Contains(page, "TV app") {
		t.Fatalf("sign-in from the code: %d %.300s", code, page)
	}
	f := formFields(t, page)
	f.Set("username", "jill")
	f.Set("password", oauthPassword)
	code, h, _ := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", f.Encode(), "")
	if code != 303 {
		t.Fatalf("sign in: %d", code)
	}
	_, _, page = oauthDo(t, browser, "GET", base+h.Get("Location"), "", "", "")
	if !strings.Contains(page, "another device") || !strings.Contains(page, "TV app</strong> wants to sign in as <strong>@jill:localhost") {
		t.Fatalf("device consent page: %.600s", page)
	}
	f = formFields(t, page)
	f.Set("decision", "allow")
	if code, h, page := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", "application/x-www-form-urlencoded", f.Encode(), ""); code != 200 || h.Get("Location") != "" || !strings.Contains(page, "Done") {
		t.Fatalf("allow: %d %q %.300s", code, h.Get("Location"), page)
	}
	code, tok := poll(client, deviceCode)
	if code != 200 || tok.Get("scope").Str != "urn:matrix:client:api:* urn:matrix:client:device:TVDEVICE01" {
		t.Fatalf("poll after allowing: %d %s", code, tok.Raw)
	}
	if code, raw := whoami(t, base, tok.Get("access_token").Str); code != 200 || gjson.Get(raw, "device_id").Str != "TVDEVICE01" {
		t.Fatalf("whoami: %d %s", code, raw)
	}
	if code, r := refreshGrant(t, e, client, tok.Get("refresh_token").Str); code != 200 {
		t.Errorf("refresh: %d %s", code, r.Raw)
	}
	if code, r := poll(client, deviceCode); code != 400 || r.Get("error").Str != "invalid_grant" {
		t.Errorf("a device code used twice: %d %s", code, r.Raw)
	}
	// The code once used leads nowhere.
	if code, _, _ := oauthDo(t, newBrowser(t), "GET", d.Get("verification_uri_complete").Str, "", "", ""); code != 404 {
		t.Errorf("a used code's link: %d", code)
	}

	// Denied: the device hears access_denied.
	d = start(client, "TVDEVICE02")
	browser = newBrowser(t)
	_, _, page = oauthDo(t, browser, "GET", d.Get("verification_uri_complete").Str, "", "", "")
	f = formFields(t, page)
	f.Set("username", "jill")
	f.Set("password", oauthPassword)
	_, h, _ = oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", f.Encode(), "")
	_, _, page = oauthDo(t, browser, "GET", base+h.Get("Location"), "", "", "")
	f = formFields(t, page)
	f.Set("decision", "deny")
	oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", "application/x-www-form-urlencoded", f.Encode(), "")
	if code, r := poll(client, d.Get("device_code").Str); code != 400 || r.Get("error").Str != "access_denied" {
		t.Errorf("poll after denying: %d %s", code, r.Raw)
	}
}

// TestOAuthRendezvous: the QR-code login's rendezvous (MSC4388): create
// without a token, read, write with the latest sequence token only, bounded
// size, delete; advertised only with oauth on.
func TestOAuthRendezvous(t *testing.T) {
	base := newOAuthApp(t, false)
	const rv = "/_matrix/client/unstable/io.element.msc4388/rendezvous"
	_, _, versions := oauthDo(t, nil, "GET", base+"/_matrix/client/versions", "", "", "")
	if !gjson.Get(versions, `unstable_features.io\.element\.msc4388`).Bool() {
		t.Errorf("rendezvous not advertised: %s", versions)
	}
	if code, _, raw := oauthDo(t, nil, "GET", base+rv, "", "", ""); code != 200 || !gjson.Get(raw, "create_available").Bool() {
		t.Errorf("discovery: %d %s", code, raw)
	}
	code, h, raw := oauthDo(t, nil, "POST", base+rv, "application/json", `{"data":""}`, "")
	id, seq := gjson.Get(raw, "id").Str, gjson.Get(raw, "sequence_token").Str
	if code != 200 || id == "" || seq == "" || gjson.Get(raw, "expires_in_ms").Int() <= 0 || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("create: %d %s", code, raw)
	}
	// The other device reads, then writes with the token it saw.
	code, _, raw = oauthDo(t, nil, "GET", base+rv+"/"+id, "", "", "")
	if code != 200 || gjson.Get(raw, "sequence_token").Str != seq || gjson.Get(raw, "data").Str != "" {
		t.Fatalf("get: %d %s", code, raw)
	}
	code, _, raw = oauthDo(t, nil, "PUT", base+rv+"/"+id, "application/json", `{"sequence_token":"`+seq+`","data":"ciphertext one"}`, "")
	next := gjson.Get(raw, "sequence_token").Str
	if code != 200 || next == "" || next == seq {
		t.Fatalf("put: %d %s", code, raw)
	}
	// A write from a stale view is refused and changes nothing.
	code, _, raw = oauthDo(t, nil, "PUT", base+rv+"/"+id, "application/json", `{"sequence_token":"`+seq+`","data":"overwrite"}`, "")
	if code != 409 || gjson.Get(raw, "errcode").Str != "M_CONCURRENT_WRITE" {
		t.Errorf("stale put: %d %s", code, raw)
	}
	if _, _, raw := oauthDo(t, nil, "GET", base+rv+"/"+id, "", "", ""); gjson.Get(raw, "data").Str != "ciphertext one" || gjson.Get(raw, "sequence_token").Str != next {
		t.Errorf("after the stale put: %s", raw)
	}
	big := strings.Repeat("x", 5000)
	if code, _, raw := oauthDo(t, nil, "PUT", base+rv+"/"+id, "application/json", `{"sequence_token":"`+next+`","data":"`+big+`"}`, ""); code != 413 {
		t.Errorf("oversize put: %d %.100s", code, raw)
	}
	if code, _, _ := oauthDo(t, nil, "POST", base+rv, "application/json", `{"data":"`+big+`"}`, ""); code != 413 {
		t.Errorf("oversize create: %d", code)
	}
	if code, _, raw := oauthDo(t, nil, "POST", base+rv, "application/json", `{}`, ""); code != 400 || gjson.Get(raw, "errcode").Str != "M_MISSING_PARAM" {
		t.Errorf("create without data: %d %s", code, raw)
	}
	if code, _, _ := oauthDo(t, nil, "DELETE", base+rv+"/"+id, "", "", ""); code != 200 {
		t.Errorf("delete: %d", code)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if code, _, raw := oauthDo(t, nil, m, base+rv+"/"+id, "", "", ""); code != 404 || gjson.Get(raw, "errcode").Str != "M_NOT_FOUND" {
			t.Errorf("%s after delete: %d %s", m, code, raw)
		}
	}
	// Off, none of it is there, and it is not advertised.
	_, srv := newTestApp(t)
	_, _, versions = oauthDo(t, nil, "GET", srv.URL+"/_matrix/client/versions", "", "", "")
	if gjson.Get(versions, `unstable_features.io\.element\.msc4388`).Bool() {
		t.Errorf("rendezvous advertised with oauth off: %s", versions)
	}
	if code, _, _ := oauthDo(t, nil, "POST", srv.URL+rv, "application/json", `{"data":""}`, ""); code != 404 {
		t.Errorf("rendezvous with oauth off: %d", code)
	}
}

// TestOAuthIdenticalRegistrationsShareAClient: a client registers at every
// sign-in; identical metadata gets the same client_id, other metadata
// another.
func TestOAuthIdenticalRegistrationsShareAClient(t *testing.T) {
	base := newOAuthApp(t, false)
	e := oauthMetadata(t, base)
	a, b := webClient(t, e), webClient(t, e)
	c := oauthRegisterClient(t, e, `{"client_name":"Another","client_uri":"https://example.org/","redirect_uris":["`+testRedirect+`"]}`)
	if a != b || a == c {
		t.Errorf("client IDs %q %q %q: want the first two equal and the third different", a, b, c)
	}
}
