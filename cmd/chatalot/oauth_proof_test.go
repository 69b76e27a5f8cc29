package main

import (
	"net/url"
	"regexp"
	"strings"
	"testing"

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
