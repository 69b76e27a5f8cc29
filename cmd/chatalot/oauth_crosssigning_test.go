package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestOAuthCrossSigningReset: the m.oauth stage of user-interactive auth
// (spec v1.17, MSC4312). A session signed in through the OAuth 2.0 API
// replaces its cross-signing keys after the person approved on the account
// page: the 401 names the page, the approval is bound to the UIA session
// (the device and the exact keys) and used once; a retry without auth, as
// matrix-rust-sdk sends, works too once approved.
func TestOAuthCrossSigningReset(t *testing.T) {
	base := newOAuthApp(t, false)
	oauthRegisterUser(t, base, "xena")
	oauthRegisterUser(t, base, "yuri")
	e := oauthMetadata(t, base)
	client := webClient(t, e)
	access := oauthLogin(t, base, e, client, "xena", "XSIGNDEV01").Get("access_token").Str
	upload := func(master, auth string) (int, gjson.Result) {
		t.Helper()
		body := `{"master_key":` + master
		if auth != "" {
			body += `,"auth":` + auth
		}
		code, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/keys/device_signing/upload", "application/json", body+"}", access)
		return code, gjson.Parse(raw)
	}
	m1, m2, m3 := masterKey(t, "@xena:localhost"), masterKey(t, "@xena:localhost"), masterKey(t, "@xena:localhost")
	if code, r := upload(m1, ""); code != 200 {
		t.Fatalf("first upload: %d %s", code, r.Raw)
	}

	// Replacing: the m.oauth stage only, with the account page's URL.
	code, r := upload(m2, "")
	session := r.Get("session").Str
	resetURL := r.Get(`params.m\.oauth.url`).Str
	if code != 401 || r.Get("flows").Raw != `[{"stages":["m.oauth"]}]` || session == "" || r.Get("errcode").Exists() ||
		!strings.HasPrefix(resetURL, base+"/_chatalot/account?") || !strings.Contains(resetURL, "action=org.matrix.cross_signing_reset") {
		t.Fatalf("replacing keys: %d %s", code, r.Raw)
	}
	// Not approved yet: the same plain 401 (clients poll until it is not),
	// with the session alone, the stage named, or no auth at all.
	for _, auth := range []string{`{"session":"` + session + `"}`, `{"type":"m.oauth","session":"` + session + `"}`, ""} {
		if code, r := upload(m2, auth); code != 401 || r.Get("errcode").Exists() || r.Get("session").Str != session {
			t.Errorf("before approval, auth %s: %d %s", auth, code, r.Raw)
		}
	}
	if code, r := upload(m2, `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"xena"},"password":"`+oauthPassword+`","session":"`+session+`"}`); code != 401 || r.Get("errcode").Str != "M_FORBIDDEN" {
		t.Errorf("a password for an OAuth session: %d %s", code, r.Raw)
	}

	// Another account cannot approve it.
	other := accountBrowser(t, base, "yuri", resetURL)
	if code, page := other.post("/_chatalot/account/cross_signing_reset", url.Values{"session": {session}}); code != 404 || !strings.Contains(page, "Start again") {
		t.Errorf("approved by another account: %d %.300s", code, page)
	}
	// The person: the deep link survives the sign-in, the page names the
	// asking session, the form needs its CSRF token.
	me := accountBrowser(t, base, "xena", resetURL)
	code, _, page := oauthDo(t, me.c, "GET", resetURL, "", "", "")
	if code != 200 || !strings.Contains(page, "Reset your encryption identity") || !strings.Contains(page, "Test App (XSIGNDEV01)") || !strings.Contains(page, `value="`+session+`"`) {
		t.Fatalf("reset page: %d %.1500s", code, page)
	}
	if code, _, _ := oauthDo(t, me.c, "POST", base+"/_chatalot/account/cross_signing_reset", "application/x-www-form-urlencoded", url.Values{"csrf": {"forged"}, "session": {session}}.Encode(), ""); code != 403 {
		t.Errorf("approval with a forged CSRF token: %d", code)
	}
	if code, page := me.post("/_chatalot/account/cross_signing_reset", url.Values{"session": {session}}); code != 200 || !strings.Contains(page, "Allowed") {
		t.Fatalf("approval: %d %.300s", code, page)
	}
	// The approval covers these keys only.
	if code, r := upload(m3, `{"session":"`+session+`"}`); code != 403 {
		t.Errorf("other keys in the approved session: %d %s", code, r.Raw)
	}
	if code, r := upload(m2, `{"session":"`+session+`"}`); code != 200 {
		t.Fatalf("retry after approval: %d %s", code, r.Raw)
	}
	if got := storedMaster(t, base, access, "@xena:localhost"); got != keyOf(m2) {
		t.Errorf("stored master key %q, want %q", got, keyOf(m2))
	}
	// Used up.
	if code, r := upload(m3, `{"session":"`+session+`"}`); code == 200 {
		t.Errorf("the approval was used twice: %d %s", code, r.Raw)
	}

	// matrix-rust-sdk's way: it retries the same request without auth.
	code, r = upload(m3, "")
	if code != 401 || r.Get("session").Str == session {
		t.Fatalf("second reset: %d %s", code, r.Raw)
	}
	if code, page := me.post("/_chatalot/account/cross_signing_reset", url.Values{"session": {r.Get("session").Str}}); code != 200 {
		t.Fatalf("second approval: %d %.300s", code, page)
	}
	if code, r := upload(m3, ""); code != 200 {
		t.Fatalf("retry without auth after approval: %d %s", code, r.Raw)
	}
	if code, r := upload(m1, ""); code != 401 {
		t.Errorf("a third reset without approval: %d %s", code, r.Raw)
	}

	// A session from password login is asked for the password, as before.
	_, _, login := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"xena"},"password":"`+oauthPassword+`"}`, "")
	access = gjson.Get(login, "access_token").Str
	if code, r := upload(m1, ""); code != 401 || r.Get("flows").Raw != `[{"stages":["m.login.password"]}]` || r.Get(`params.m\.oauth`).Exists() {
		t.Errorf("password session: %d %s", code, r.Raw)
	}
}

// TestOAuthCrossSigningResetWithoutPasswordLogin: with password login off,
// a session from another login (here m.login.token) is offered m.oauth
// beside the password.
func TestOAuthCrossSigningResetWithoutPasswordLogin(t *testing.T) {
	_, base := newOAuthAppWith(t, func(cfg *Config) { cfg.PasswordLogin = false })
	oauthRegisterUser(t, base, "zoe")
	e := oauthMetadata(t, base)
	access := oauthLogin(t, base, e, webClient(t, e), "zoe", "ZOEDEVICE1").Get("access_token").Str
	_, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v1/login/get_token", "application/json",
		`{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"zoe"},"password":"`+oauthPassword+`"}}`, access)
	_, _, raw = oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json", `{"type":"m.login.token","token":"`+gjson.Get(raw, "login_token").Str+`"}`, "")
	token := gjson.Get(raw, "access_token").Str
	if token == "" {
		t.Fatalf("token login: %s", raw)
	}
	for i, master := range []string{masterKey(t, "@zoe:localhost"), masterKey(t, "@zoe:localhost")} {
		code, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/keys/device_signing/upload", "application/json", `{"master_key":`+master+`}`, token)
		want := 200
		if i == 1 {
			want = 401
		}
		if code != want {
			t.Fatalf("upload %d: %d %s", i, code, raw)
		}
		if i == 1 && (gjson.Get(raw, "flows").Raw != `[{"stages":["m.login.password"]},{"stages":["m.oauth"]}]` || !gjson.Get(raw, `params.m\.oauth.url`).Exists()) {
			t.Errorf("flows without password login: %s", raw)
		}
	}
}

// masterKey is a new master cross-signing key of user, as JSON.
func masterKey(t *testing.T, user string) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := base64.RawStdEncoding.EncodeToString(pub)
	return `{"user_id":"` + user + `","usage":["master"],"keys":{"ed25519:` + k + `":"` + k + `"}}`
}

func keyOf(master string) string {
	return gjson.Get(master, "keys.@values.0").Str
}

func storedMaster(t *testing.T, base, token, user string) string {
	_, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/keys/query", "application/json", `{"device_keys":{"`+user+`":[]}}`, token)
	return gjson.Get(raw, "master_keys."+regexp.QuoteMeta(user)+".keys.@values.0").Str
}

// signedInAccount is a browser signed in to the account page.
type signedInAccount struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

// accountBrowser signs a new browser in to the account page through a deep
// link, and reads the page's CSRF token.
func accountBrowser(t *testing.T, base, user, link string) *signedInAccount {
	t.Helper()
	csrfField := regexp.MustCompile(`name="csrf" value="([^"]*)"`)
	b := newBrowser(t)
	_, _, page := oauthDo(t, b, "GET", link, "", "", "")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no account sign-in form: %.300s", page)
	}
	next := regexp.MustCompile(`name="next" value="([^"]*)"`).FindStringSubmatch(page)
	form := url.Values{"csrf": {m[1]}, "username": {user}, "password": {oauthPassword}}
	if next != nil {
		form.Set("next", strings.ReplaceAll(next[1], "&amp;", "&"))
	}
	code, h, _ := oauthDo(t, b, "POST", base+"/_chatalot/account/sign_in", "application/x-www-form-urlencoded", form.Encode(), "")
	if code != 303 {
		t.Fatalf("account sign-in: %d", code)
	}
	if u, _ := url.Parse(link); h.Get("Location") != u.RequestURI() {
		t.Errorf("after signing in, to %q, want back to %q", h.Get("Location"), u.RequestURI())
	}
	_, _, page = oauthDo(t, b, "GET", base+"/_chatalot/account", "", "", "")
	m = csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no account page: %.300s", page)
	}
	return &signedInAccount{t: t, base: base, c: b, csrf: m[1]}
}

func (a *signedInAccount) post(path string, form url.Values) (int, string) {
	a.t.Helper()
	form.Set("csrf", a.csrf)
	code, _, page := oauthDo(a.t, a.c, "POST", a.base+path, "application/x-www-form-urlencoded", form.Encode(), "")
	return code, page
}
