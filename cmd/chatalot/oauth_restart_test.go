package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
)

// TestOAuthAfterRestart: what the OAuth 2.0 API keeps in memory (sign-ins
// in progress, authorisation codes, device codes, the account page's
// browser sessions, rendezvous) is lost by a restart, and each loss is a
// clean answer: the OAuth error a client acts on (400 invalid_grant, JSON),
// a page that says to start again, a 404; never a 5xx. What is stored
// (client registrations, grants, refresh and access tokens) carries on.
func TestOAuthAfterRestart(t *testing.T) {
	base, restart := restartableOAuthApp(t)
	oauthRegisterUser(t, base, "rita")
	e := oauthMetadata(t, base)
	client := webClient(t, e)
	_, _, raw := oauthDo(t, nil, "GET", base+"/_matrix/client/v1/auth_metadata", "", "", "")
	deviceEndpoint := gjson.Get(raw, "device_authorization_endpoint").Str
	tv := oauthRegisterClient(t, e, `{"client_name":"TV app","client_uri":"https://example.org/","grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}`)
	form := "application/x-www-form-urlencoded"

	// Before: a session, a code not yet exchanged, a sign-in page not yet
	// filled in, a consent page not yet answered, a device code being
	// polled, a signed-in account page, a rendezvous.
	session := oauthLogin(t, base, e, client, "rita", "BEFORE0001")
	verifier, challenge := pkce("restart")
	code := redirectParams(t, signInAndConsent(t, base, newBrowser(t), authURL(e, client, testRedirect, challenge, "BEFORE0002", nil), "rita", "allow")).Get("code")
	signInBrowser := newBrowser(t)
	_, _, page := oauthDo(t, signInBrowser, "GET", authURL(e, client, testRedirect, challenge, "BEFORE0003", nil), "", "", "")
	signInForm := formFields(t, page)
	consentBrowser := newBrowser(t)
	_, _, page = oauthDo(t, consentBrowser, "GET", authURL(e, client, testRedirect, challenge, "BEFORE0004", nil), "", "", "")
	f := formFields(t, page)
	f.Set("username", "rita")
	f.Set("password", oauthPassword)
	_, h, _ := oauthDo(t, consentBrowser, "POST", base+"/_chatalot/oauth2/auth/sign_in", form, f.Encode(), "")
	consentURL := base + h.Get("Location")
	_, _, page = oauthDo(t, consentBrowser, "GET", consentURL, "", "", "")
	consentForm := formFields(t, page)
	_, _, raw = oauthDo(t, nil, "POST", deviceEndpoint, form, url.Values{"client_id": {tv}, "scope": {"urn:matrix:client:api:* urn:matrix:client:device:BEFORE0005"}}.Encode(), "")
	deviceCode, deviceLink := gjson.Get(raw, "device_code").Str, gjson.Get(raw, "verification_uri_complete").Str
	account := accountBrowser(t, base, "rita", base+"/_chatalot/account")
	const rv = "/_matrix/client/unstable/io.element.msc4388/rendezvous"
	_, _, raw = oauthDo(t, nil, "POST", base+rv, "application/json", `{"data":""}`, "")
	rendezvous := gjson.Get(raw, "id").Str
	if code == "" || deviceCode == "" || rendezvous == "" {
		t.Fatalf("setting up: code %q, device code %q, rendezvous %q", code, deviceCode, rendezvous)
	}

	restart()

	// Tokens: the code and the device code are unknown, which the client
	// hears as invalid_grant, in JSON.
	for name, f := range map[string]url.Values{
		"code":        {"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {testRedirect}, "client_id": {client}, "code_verifier": {verifier}},
		"device code": {"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {deviceCode}, "client_id": {tv}},
	} {
		status, h, raw := oauthDo(t, nil, "POST", e.token, form, f.Encode(), "")
		if status != 400 || gjson.Get(raw, "error").Str != "invalid_grant" || !strings.HasPrefix(h.Get("Content-Type"), "application/json") || h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s from before the restart: %d %s %s", name, status, h.Get("Content-Type"), raw)
		}
	}
	// Pages: each says to start again.
	signInForm.Set("username", "rita")
	signInForm.Set("password", oauthPassword)
	consentForm.Set("decision", "allow")
	for name, do := range map[string]func() (int, http.Header, string){
		"sign-in form": func() (int, http.Header, string) {
			return oauthDo(t, signInBrowser, "POST", base+"/_chatalot/oauth2/auth/sign_in", form, signInForm.Encode(), "")
		},
		"consent page": func() (int, http.Header, string) { return oauthDo(t, consentBrowser, "GET", consentURL, "", "", "") },
		"consent form": func() (int, http.Header, string) {
			return oauthDo(t, consentBrowser, "POST", base+"/_chatalot/oauth2/auth/consent", form, consentForm.Encode(), "")
		},
		"device link": func() (int, http.Header, string) { return oauthDo(t, newBrowser(t), "GET", deviceLink, "", "", "") },
		"account form": func() (int, http.Header, string) {
			return oauthDo(t, account.c, "POST", base+"/_chatalot/account/delete_device", form, url.Values{"csrf": {account.csrf}, "device_id": {"BEFORE0001"}}.Encode(), "")
		},
	} {
		status, h, page := do()
		if status >= 500 || status < 400 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(strings.ToLower(page), "again") || h.Get("Location") != "" {
			t.Errorf("%s from before the restart: %d %s %.400s", name, status, h.Get("Content-Type"), page)
		}
	}
	// The account page just asks to sign in again.
	if status, _, page := oauthDo(t, account.c, "GET", base+"/_chatalot/account", "", "", ""); status != 200 || !strings.Contains(page, `name="password"`) {
		t.Errorf("account page after the restart: %d %.300s", status, page)
	}
	if status, _, raw := oauthDo(t, nil, "GET", base+rv+"/"+rendezvous, "", "", ""); status != 404 || gjson.Get(raw, "errcode").Str != "M_NOT_FOUND" {
		t.Errorf("rendezvous from before the restart: %d %s", status, raw)
	}

	// What is stored carries on: the access token, the refresh token (with
	// its rotation), the client registration.
	if status, raw := whoami(t, base, session.Get("access_token").Str); status != 200 || gjson.Get(raw, "device_id").Str != "BEFORE0001" {
		t.Errorf("access token after the restart: %d %s", status, raw)
	}
	status, tok := refreshGrant(t, e, client, session.Get("refresh_token").Str)
	if status != 200 {
		t.Fatalf("refresh after the restart: %d %s", status, tok.Raw)
	}
	if status, raw := whoami(t, base, tok.Get("access_token").Str); status != 200 {
		t.Errorf("refreshed token: %d %s", status, raw)
	}
	oauthLogin(t, base, e, client, "rita", "AFTER00001") // the same client_id signs in again
}

// restartableOAuthApp is newOAuthAppWith whose restart closes the server
// and opens it again on the same data directory and address.
func restartableOAuthApp(t *testing.T) (base string, restart func()) {
	t.Helper()
	var mu sync.RWMutex
	var handler http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.RLock()
		h := handler
		mu.RUnlock()
		h.ServeHTTP(w, r)
	}))
	base = "http://" + srv.Listener.Addr().String()
	cfg := defaults()
	cfg.DataDir = t.TempDir()
	cfg.Registration = "open"
	cfg.RateLimits = "off"
	cfg.OAuth = true
	cfg.PublicBaseURL = base
	open := func() *App {
		app, err := openApp(cfg, zerolog.New(io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		return app
	}
	app := open()
	handler = app.Router()
	srv.Start()
	t.Cleanup(func() {
		app.BeginShutdown()
		srv.Close()
		app.Close()
	})
	restart = func() {
		mu.Lock()
		defer mu.Unlock()
		app.BeginShutdown()
		if err := app.Close(); err != nil {
			t.Fatal(err)
		}
		app = open()
		handler = app.Router()
	}
	return base, restart
}
