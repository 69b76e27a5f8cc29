package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/storage"
	"github.com/tidwall/gjson"
)

// TestOAuthLegacySSOLogin: OAuth 2.0 aware clients (spec v1.18, MSC3824).
// With oauth on, /login offers m.login.sso with oauth_aware_preferred; the
// SSO redirect leads to the sign-in page and a confirmation naming where
// the token goes, then back to the client's redirectUrl with a loginToken
// that POST /login accepts once. action=register opens the sign-up page,
// with an invite code.
func TestOAuthLegacySSOLogin(t *testing.T) {
	app, base := newOAuthAppWith(t, func(cfg *Config) { cfg.Registration = "token" })
	err := app.db.Write(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO registration_tokens (token, uses_allowed, created_ts) VALUES ('sso-invite', 1, 0)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_, _, flows := oauthDo(t, nil, "GET", base+"/_matrix/client/v3/login", "", "", "")
	if !gjson.Get(flows, `flows.#(type=="m.login.sso").oauth_aware_preferred`).Bool() || !gjson.Get(flows, `flows.#(type=="m.login.password")`).Exists() {
		t.Errorf("login flows with oauth on: %s", flows)
	}
	form := "application/x-www-form-urlencoded"
	const target = "https://client.example.org/sso?hs=mine&loginToken=stale"
	redirect := func(browser *http.Client, extra string) (int, string) {
		code, _, page := oauthDo(t, browser, "GET", base+"/_matrix/client/v3/login/sso/redirect?redirectUrl="+url.QueryEscape(target)+extra, "", "", "")
		return code, page
	}

	// Sign up from the SSO redirect with action=register and an invite
	// code, confirm, and log in with the token.
	browser := newBrowser(t)
	code, page := redirect(browser, "&action=register")
	if code != 200 || !strings.Contains(page, "Create an account") || !strings.Contains(page, `name="invite_code"`) {
		t.Fatalf("action=register: %d %.400s", code, page)
	}
	f := formFields(t, page)
	f.Set("username", "sam")
	f.Set("password", oauthPassword)
	f.Set("password2", oauthPassword)
	f.Set("invite_code", "sso-invite")
	code, h, page := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_up", form, f.Encode(), "")
	if code != 303 {
		t.Fatalf("sign up: %d %.300s", code, page)
	}
	code, h, page = oauthDo(t, browser, "GET", base+h.Get("Location"), "", "", "")
	if code != 200 || !strings.Contains(page, "https://client.example.org") || !strings.Contains(page, "@sam:localhost") ||
		!strings.Contains(h.Get("Content-Security-Policy"), "form-action 'self' https://client.example.org") {
		t.Fatalf("confirmation: %d %s %.600s", code, h.Get("Content-Security-Policy"), page)
	}
	f = formFields(t, page)
	f.Set("decision", "allow")
	code, h, _ = oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", form, f.Encode(), "")
	back, _ := url.Parse(h.Get("Location"))
	if code != 303 || back == nil || back.Host != "client.example.org" || back.Path != "/sso" || back.Query().Get("hs") != "mine" || len(back.Query()["loginToken"]) != 1 || back.Query().Get("loginToken") == "stale" {
		t.Fatalf("back to the client: %d %q", code, h.Get("Location"))
	}
	login := `{"type":"m.login.token","token":"` + back.Query().Get("loginToken") + `","initial_device_display_name":"Legacy app"}`
	code, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json", login, "")
	if code != 200 || gjson.Get(raw, "user_id").Str != "@sam:localhost" {
		t.Fatalf("m.login.token: %d %s", code, raw)
	}
	if code, raw := whoami(t, base, gjson.Get(raw, "access_token").Str); code != 200 {
		t.Errorf("whoami: %d %s", code, raw)
	}
	if code, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json", login, ""); code != 403 {
		t.Errorf("the login token used twice: %d %s", code, raw)
	}

	// Sign in, then cancel: no token goes anywhere.
	browser = newBrowser(t)
	_, page = redirect(browser, "")
	f = formFields(t, page)
	f.Set("username", "sam")
	f.Set("password", oauthPassword)
	_, h, _ = oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", form, f.Encode(), "")
	_, _, page = oauthDo(t, browser, "GET", base+h.Get("Location"), "", "", "")
	f = formFields(t, page)
	// Another browser cannot answer it.
	f.Set("decision", "allow")
	if code, h, _ := oauthDo(t, newBrowser(t), "POST", base+"/_chatalot/oauth2/auth/consent", form, f.Encode(), ""); code != 403 || h.Get("Location") != "" {
		t.Errorf("confirmation from another browser: %d %q", code, h.Get("Location"))
	}
	f.Set("decision", "deny")
	if code, h, page := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", form, f.Encode(), ""); code != 200 || h.Get("Location") != "" || !strings.Contains(page, "not signed in") {
		t.Errorf("cancelled: %d %q %.300s", code, h.Get("Location"), page)
	}

	// Addresses a token must never go to, and a missing one.
	for _, bad := range []string{"javascript:alert(1)", "data:text/html,x", "/relative", "https://user@client.example.org/", "file:///etc/passwd", "mailto:x@example.org"} {
		code, h, _ := oauthDo(t, newBrowser(t), "GET", base+"/_matrix/client/v3/login/sso/redirect?redirectUrl="+url.QueryEscape(bad), "", "", "")
		if code != 400 || h.Get("Location") != "" {
			t.Errorf("redirectUrl %q: %d %q", bad, code, h.Get("Location"))
		}
	}
	if code, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v3/login/sso/redirect", "", "", ""); code != 400 || gjson.Get(raw, "errcode").Str != "M_MISSING_PARAM" {
		t.Errorf("no redirectUrl: %d %s", code, raw)
	}
	// A native app's own scheme works.
	if code, page := func() (int, string) {
		code, _, page := oauthDo(t, newBrowser(t), "GET", base+"/_matrix/client/r0/login/sso/redirect?redirectUrl="+url.QueryEscape("element://connect"), "", "", "")
		return code, page
	}(); code != 200 || !strings.Contains(page, "Sign in") {
		t.Errorf("native redirect on r0: %d %.300s", code, page)
	}

	// With oauth off, none of it.
	_, srv := newTestApp(t)
	_, _, flows = oauthDo(t, nil, "GET", srv.URL+"/_matrix/client/v3/login", "", "", "")
	if strings.Contains(flows, "m.login.sso") {
		t.Errorf("m.login.sso offered with oauth off: %s", flows)
	}
	if code, _, _ := oauthDo(t, nil, "GET", srv.URL+"/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fx.example", "", "", ""); code != 404 {
		t.Errorf("SSO redirect with oauth off: %d", code)
	}
}
