package main

import (
	"context"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/storage"
	"github.com/tidwall/gjson"
)

// The security proofs that TestOAuthAuthorizationSecurity and
// TestOAuthSignInIsRateLimited leave to these: the consent form's CSRF
// protection, guessing on the account page and the device code page, and
// revocation deleting the device for every other view of it.

// TestOAuthConsentCSRF: consent is answered only by the browser that
// signed in, with the token the consent page gave; the sign-in page's
// token is void once signed in. Nothing is redirected on a refusal.
func TestOAuthConsentCSRF(t *testing.T) {
	base := newOAuthApp(t, false)
	oauthRegisterUser(t, base, "cora")
	e := oauthMetadata(t, base)
	client := webClient(t, e)
	_, challenge := pkce("csrf")
	browser := newBrowser(t)
	_, _, page := oauthDo(t, browser, "GET", authURL(e, client, testRedirect, challenge, "CSRFDEVICE", nil), "", "", "")
	signInForm := formFields(t, page)
	f := url.Values{"request": {signInForm.Get("request")}, "csrf": {signInForm.Get("csrf")}, "username": {"cora"}, "password": {oauthPassword}}
	_, h, _ := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_in", "application/x-www-form-urlencoded", f.Encode(), "")
	consentURL := base + h.Get("Location")
	if code, _, _ := oauthDo(t, newBrowser(t), "GET", consentURL, "", "", ""); code != 403 {
		t.Errorf("the consent page in another browser: %d", code)
	}
	_, _, page = oauthDo(t, browser, "GET", consentURL, "", "", "")
	consent := formFields(t, page)
	if consent.Get("csrf") == signInForm.Get("csrf") {
		t.Errorf("the consent form reuses the sign-in form's CSRF token")
	}
	for name, tc := range map[string]struct {
		csrf  string
		other bool
	}{
		"forged token":         {"forged", false},
		"no token":             {"", false},
		"sign-in page token":   {signInForm.Get("csrf"), false},
		"from another browser": {consent.Get("csrf"), true},
	} {
		b := browser
		if tc.other {
			b = newBrowser(t)
		}
		form := url.Values{"request": {consent.Get("request")}, "csrf": {tc.csrf}, "decision": {"allow"}}
		if code, h, _ := oauthDo(t, b, "POST", base+"/_chatalot/oauth2/auth/consent", "application/x-www-form-urlencoded", form.Encode(), ""); code != 403 || h.Get("Location") != "" {
			t.Errorf("consent with %s: %d %q", name, code, h.Get("Location"))
		}
	}
	// The genuine answer still works, once.
	consent.Set("decision", "allow")
	code, h, _ := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", "application/x-www-form-urlencoded", consent.Encode(), "")
	if code != 303 || redirectParams(t, h.Get("Location")).Get("state") != "state-CSRFDEVICE" {
		t.Fatalf("consent: %d %q", code, h.Get("Location"))
	}
	if code, _, _ := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", "application/x-www-form-urlencoded", consent.Encode(), ""); code != 403 {
		t.Errorf("consent answered twice: %d", code)
	}
}

// TestOAuthGuessingIsRateLimited: the account page's sign-in and the
// device code page share password login's limits, so neither a password
// nor a user code can be guessed at speed.
func TestOAuthGuessingIsRateLimited(t *testing.T) {
	base := newOAuthApp(t, true)
	oauthRegisterUser(t, base, "gus")
	csrfField := regexp.MustCompile(`name="csrf" value="([^"]*)"`)
	browser := newBrowser(t)
	_, _, page := oauthDo(t, browser, "GET", base+"/_chatalot/account", "", "", "")
	csrf := csrfField.FindStringSubmatch(page)[1]
	limited := false
	for i := 0; i < 20 && !limited; i++ {
		form := url.Values{"csrf": {csrf}, "username": {"gus"}, "password": {"guess" + string(rune('a'+i))}}
		code, _, page := oauthDo(t, browser, "POST", base+"/_chatalot/account/sign_in", "application/x-www-form-urlencoded", form.Encode(), "")
		limited = code == 429 && strings.Contains(page, "Too many attempts")
	}
	if !limited {
		t.Error("20 wrong passwords on the account page were all answered")
	}

	// The device code page counts each look-up as a login attempt, whatever
	// the browser.
	limited = false
	for i := 0; i < 20 && !limited; i++ {
		code, _, page := oauthDo(t, newBrowser(t), "GET", base+"/_chatalot/oauth2/auth/device?user_code=BBBB-BBB"+string(rune('B'+i)), "", "", "")
		limited = code == 429 && strings.Contains(page, "Too many attempts")
	}
	if !limited {
		t.Error("20 guessed device codes were all answered")
	}
}

// TestOAuthRevocationDeletesTheDevice: revoking by either token removes
// the device from the owner's devices list, not only its tokens.
func TestOAuthRevocationDeletesTheDevice(t *testing.T) {
	base := newOAuthApp(t, false)
	oauthRegisterUser(t, base, "rosa")
	e := oauthMetadata(t, base)
	client := webClient(t, e)
	_, _, raw := oauthDo(t, nil, "POST", base+"/_matrix/client/v3/login", "application/json",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"rosa"},"password":"`+oauthPassword+`"}`, "")
	legacy := gjson.Get(raw, "access_token").Str
	devices := func() string {
		_, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v3/devices", "", "", legacy)
		return raw
	}
	for device, which := range map[string]string{"REVOKEACC1": "access_token", "REVOKEREF1": "refresh_token"} {
		tok := oauthLogin(t, base, e, client, "rosa", device)
		if !gjson.Get(devices(), `devices.#(device_id=="`+device+`")`).Exists() {
			t.Fatalf("%s is not in the devices list: %s", device, devices())
		}
		if code, _, raw := oauthDo(t, nil, "POST", e.revoke, "application/x-www-form-urlencoded", url.Values{"token": {tok.Get(which).Str}}.Encode(), ""); code != 200 {
			t.Fatalf("revoke by %s: %d %s", which, code, raw)
		}
		if gjson.Get(devices(), `devices.#(device_id=="`+device+`")`).Exists() {
			t.Errorf("revoked by %s, %s is still in the devices list: %s", which, device, devices())
		}
		if code, _, _ := oauthDo(t, nil, "GET", base+"/_matrix/client/v3/devices/"+device, "", "", legacy); code != 404 {
			t.Errorf("revoked by %s, GET /devices/%s: %d", which, device, code)
		}
	}
}

// elementXAndroidMetadata is the client metadata Element X Android (through
// matrix-rust-sdk) registers: its OidcConfigurationProvider, with the grant
// types the SDK adds for QR-code login.
const elementXAndroidMetadata = `{"application_type":"native","client_name":"Element X","client_uri":"https://element.io",
	"logo_uri":"https://element.io/mobile-icon.png","tos_uri":"https://element.io/acceptable-use-policy-terms","policy_uri":"https://element.io/privacy",
	"contacts":["support@element.io"],"redirect_uris":["io.element:/callback"],"response_types":["code"],
	"grant_types":["authorization_code","refresh_token","urn:ietf:params:oauth:grant-type:device_code"],"token_endpoint_auth_method":"none"}`

// TestOAuthElementXJoinsByInviteCode: what Element X does on a fresh
// server with the OAuth 2.0 API on, replayed over HTTP with its own client
// metadata: registration, "Create account" (prompt=create) opening the
// sign-up page, the invite code, consent, the redirect to its private-use
// scheme, the code exchange; and "Sign in" (Element X sends
// prompt=consent) opening the sign-in page.
func TestOAuthElementXJoinsByInviteCode(t *testing.T) {
	app, base := newOAuthAppWith(t, func(cfg *Config) { cfg.Registration = "token" })
	if err := app.db.Write(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO registration_tokens (token, uses_allowed, created_ts) VALUES ('for-ellie', 1, 0)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e := oauthMetadata(t, base)
	client := oauthRegisterClient(t, e, elementXAndroidMetadata)
	const redirect = "io.element:/callback"
	verifier, challenge := pkce("elementx")
	browser := newBrowser(t)
	_, _, page := oauthDo(t, browser, "GET", authURL(e, client, redirect, challenge, "ELEMENTX01", url.Values{"prompt": {"create"}, "response_mode": {""}}), "", "", "")
	if !strings.Contains(page, "Create an account") || !strings.Contains(page, `name="invite_code"`) || !strings.Contains(page, "Element X") {
		t.Fatalf("Create account: %.500s", page)
	}
	f := formFields(t, page)
	f.Set("invite_code", "for-ellie")
	f.Set("username", "ellie")
	f.Set("password", oauthPassword)
	f.Set("password2", oauthPassword)
	code, h, page := oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/sign_up", "application/x-www-form-urlencoded", f.Encode(), "")
	if code != 303 {
		t.Fatalf("sign up: %d %.300s", code, page)
	}
	_, h, page = oauthDo(t, browser, "GET", base+h.Get("Location"), "", "", "")
	if !strings.Contains(page, "Element X</strong> wants to sign in as <strong>@ellie:localhost") || !strings.Contains(h.Get("Content-Security-Policy"), "form-action 'self' io.element:") {
		t.Fatalf("consent: %s %.600s", h.Get("Content-Security-Policy"), page)
	}
	f = formFields(t, page)
	f.Set("decision", "allow")
	_, h, _ = oauthDo(t, browser, "POST", base+"/_chatalot/oauth2/auth/consent", "application/x-www-form-urlencoded", f.Encode(), "")
	if !strings.HasPrefix(h.Get("Location"), redirect+"?") {
		t.Fatalf("redirect %q, want Element X's scheme with the answer in the query", h.Get("Location"))
	}
	p := redirectParams(t, h.Get("Location"))
	code, tok := tokenRequest(t, e, url.Values{"grant_type": {"authorization_code"}, "code": {p.Get("code")}, "redirect_uri": {redirect}, "client_id": {client}, "code_verifier": {verifier}})
	if code != 200 {
		t.Fatalf("exchange: %d %s", code, tok.Raw)
	}
	if code, raw := whoami(t, base, tok.Get("access_token").Str); code != 200 || gjson.Get(raw, "user_id").Str != "@ellie:localhost" {
		t.Fatalf("whoami: %d %s", code, raw)
	}
	// Sign in: Element X asks with prompt=consent.
	_, _, page = oauthDo(t, newBrowser(t), "GET", authURL(e, client, redirect, challenge, "ELEMENTX02", url.Values{"prompt": {"consent"}, "response_mode": {""}}), "", "", "")
	if !strings.Contains(page, "Sign in to localhost") || !strings.Contains(page, "Element X") {
		t.Errorf("Sign in: %.500s", page)
	}
}
