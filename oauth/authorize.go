package oauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Scope tokens (spec "Allocated scope tokens"), stable and as MSC2967 had
// them: clients built before v1.15 still send the unstable ones.
const (
	scopeAPI                  = "urn:matrix:client:api:*"
	scopeDevicePrefix         = "urn:matrix:client:device:"
	scopeAPIUnstable          = "urn:matrix:org.matrix.msc2967.client:api:*"
	scopeDevicePrefixUnstable = "urn:matrix:org.matrix.msc2967.client:device:"
	// openid is asked for by OpenID Connect libraries; Chatalot issues no
	// ID tokens, so it is left out of what is granted.
	scopeOpenID = "openid"
)

// authRequest is an authorisation request being shown to a person: kept in
// memory for RequestLifetime, tied to the browser that opened it.
type authRequest struct {
	id           string
	browser      string // the browser cookie's value
	csrf         string // the hidden field of the request's forms
	client       clientMetadata
	redirectURI  string
	responseMode string
	state        string
	challenge    string
	scope        string
	deviceID     string
	user         spec.UserID // set once the person signed in
	expires      time.Time
	// deviceCode is set for a device authorisation (device.go): consent
	// answers the polling device instead of redirecting.
	deviceCode string
	// legacySSO marks the legacy API's SSO login (sso.go): consent sends
	// a login token to redirectURI instead of a code.
	legacySSO bool
}

// authCode is an issued authorisation code, kept until it expires so that
// a second use is recognised (RFC 6749 section 4.1.2: it then revokes what
// the first use granted).
type authCode struct {
	clientID    string
	redirectURI string
	challenge   string
	scope       string
	deviceID    string
	user        spec.UserID
	clientName  string
	expires     time.Time
	used        bool
	grantID     string // what the first use granted
}

const browserCookie = "chatalot_oauth_browser"

// newSecret returns 256 random bits, URL-safe.
func newSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashSecret(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

func equalSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// parseScope checks a requested scope: full API access and exactly one
// device, whose ID uses only RFC 3986's unreserved characters. It returns
// the granted scope and the device ID.
func parseScope(scope string) (granted, deviceID string, err error) {
	var api bool
	var out []string
	for _, tok := range strings.Fields(scope) {
		switch {
		case tok == scopeAPI || tok == scopeAPIUnstable:
			api = true
		case strings.HasPrefix(tok, scopeDevicePrefix) || strings.HasPrefix(tok, scopeDevicePrefixUnstable):
			id := strings.TrimPrefix(strings.TrimPrefix(tok, scopeDevicePrefix), scopeDevicePrefixUnstable)
			if !validDeviceID(id) {
				return "", "", errors.New("the device ID must be 1 to 255 letters, digits, '-', '.', '_' or '~'")
			}
			if deviceID != "" && deviceID != id {
				return "", "", errors.New("the scope must name exactly one device")
			}
			deviceID = id
		case tok == scopeOpenID:
			continue
		default:
			return "", "", errors.New("unknown scope token " + truncate(tok, 80))
		}
		if !containsString(out, tok) {
			out = append(out, tok)
		}
	}
	if !api {
		return "", "", errors.New("the scope must include " + scopeAPI)
	}
	if deviceID == "" {
		return "", "", errors.New("the scope must name a device (" + scopeDevicePrefix + "<device_id>)")
	}
	return strings.Join(out, " "), deviceID, nil
}

func containsString(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func validDeviceID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~", r)) {
			return false
		}
	}
	return true
}

// validChallenge: a S256 challenge is the base64url SHA-256 of the
// verifier, 43 characters.
func validChallenge(ch string) bool {
	if len(ch) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(ch)
	return err == nil
}

// GET /_chatalot/oauth2/auth: the authorisation endpoint (RFC 6749 section
// 4.1.1 with PKCE, RFC 7636). A request whose client or redirect URI is not
// registered is refused on a page, never redirected (that would make this
// server an open redirector); other errors go back to the client.
func (s *Service) authorize(c *gin.Context) error {
	q := c.Request.URL.Query()
	for k, v := range q {
		if len(v) > 1 {
			return s.errorPage(c, http.StatusBadRequest, "The request repeats the parameter "+truncate(k, 40)+".")
		}
	}
	client, found, err := s.client(c, q.Get("client_id"))
	if err != nil {
		return err
	}
	if !found {
		return s.errorPage(c, http.StatusBadRequest, "The application that sent you here is not registered with this server.")
	}
	redirectURI := q.Get("redirect_uri")
	if !redirectMatches(client.RedirectURIs, redirectURI) {
		return s.errorPage(c, http.StatusBadRequest, "The application that sent you here gave a return address it did not register.")
	}
	mode := q.Get("response_mode")
	if mode == "" {
		mode = "query"
	}
	if mode != "query" && mode != "fragment" {
		// The client asked for a mode we cannot answer in; query is the
		// code flow's default (OAuth 2.0 Multiple Response Types).
		return s.redirectError(c, redirectURI, "query", q.Get("state"), "invalid_request", "response_mode must be query or fragment")
	}
	state := q.Get("state")
	fail := func(code, desc string) error { return s.redirectError(c, redirectURI, mode, state, code, desc) }
	if q.Get("response_type") != "code" {
		return fail("unsupported_response_type", "only response_type=code is supported")
	}
	if q.Get("code_challenge_method") != "S256" {
		return fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
	}
	if !validChallenge(q.Get("code_challenge")) {
		return fail("invalid_request", "code_challenge must be the base64url SHA-256 of the code verifier")
	}
	scope, deviceID, err := parseScope(q.Get("scope"))
	if err != nil {
		return fail("invalid_scope", err.Error())
	}
	prompt := q.Get("prompt")
	if prompt == "none" {
		return fail("login_required", "signing in needs the person's password")
	}
	// Each request is held in memory until it expires: opening one costs a
	// login attempt of the client's address, so that nobody can fill the
	// store and lock everyone out.
	if err := s.limiter.AllowIP(c, auth.RateLogin); err != nil {
		return s.errorPage(c, http.StatusTooManyRequests, "Too many sign-ins from your network. Wait a minute, then try again.")
	}
	req := &authRequest{
		id: newSecret(), browser: s.browserID(c), csrf: newSecret(), client: client,
		redirectURI: redirectURI, responseMode: mode, state: state, challenge: q.Get("code_challenge"),
		scope: scope, deviceID: deviceID, expires: s.now().Add(s.cfg.RequestLifetime),
	}
	if !s.addRequest(req) {
		return s.errorPage(c, http.StatusServiceUnavailable, "The server is handling too many sign-ins; try again in a few minutes.")
	}
	if _, ok := s.accounts.SignUpNeedsInviteCode(); ok && prompt == "create" {
		return s.signUpPage(c, req, "", http.StatusOK)
	}
	return s.signInPage(c, req, "", http.StatusOK)
}

// client loads a registered client.
func (s *Service) client(c *gin.Context, id string) (clientMetadata, bool, error) {
	var m clientMetadata
	if id == "" || len(id) > 100 {
		return m, false, nil
	}
	raw, found, err := s.loadClientMetadata(c.Request.Context(), id)
	if err != nil || !found {
		return m, false, err
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return m, false, err
	}
	return m, true, nil
}

// browserID returns the browser's cookie, setting one if it has none. It
// ties an authorisation request to the browser it was opened in, so that a
// request started elsewhere cannot be completed in a victim's browser.
func (s *Service) browserID(c *gin.Context) string {
	if v, err := c.Cookie(browserCookie); err == nil && len(v) == 43 {
		return v
	}
	v := newSecret()
	http.SetCookie(c.Writer, &http.Cookie{
		Name: browserCookie, Value: v, Path: cookiePath, HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.RequestLifetime.Seconds()) * 4,
	})
	return v
}

// addRequest stores a request, dropping expired ones; false when full.
func (s *Service) addRequest(r *authRequest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked()
	if len(s.requests)+len(s.codes) >= s.cfg.MaxPending {
		return false
	}
	s.requests[r.id] = r
	return true
}

func (s *Service) sweepLocked() {
	now := s.now()
	for id, r := range s.requests {
		if now.After(r.expires) {
			delete(s.requests, id)
		}
	}
	for h, code := range s.codes {
		if now.After(code.expires) {
			delete(s.codes, h)
		}
	}
	for h, d := range s.devices {
		// Kept a little past expiry, so that polling hears expired_token.
		if now.After(d.expires.Add(time.Minute)) {
			delete(s.devices, h)
			delete(s.userCodes, d.userCode)
		}
	}
}

// formRequest finds the request a posted form belongs to and checks the
// form's CSRF token and the browser cookie. A copy is returned.
func (s *Service) formRequest(c *gin.Context) (authRequest, bool) {
	id, csrf := c.PostForm("request"), c.PostForm("csrf")
	browser, _ := c.Cookie(browserCookie)
	return s.checkRequest(id, browser, csrf, true)
}

func (s *Service) checkRequest(id, browser, csrf string, wantCSRF bool) (authRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if !ok || s.now().After(r.expires) || !equalSecret(browser, r.browser) || (wantCSRF && !equalSecret(csrf, r.csrf)) {
		return authRequest{}, false
	}
	return *r, true
}

// POST /_chatalot/oauth2/auth/sign_in: the sign-in form. Password login's
// rate limits apply, and every failure reads the same.
func (s *Service) signIn(c *gin.Context) error {
	req, ok := s.formRequest(c)
	if !ok {
		return s.errorPage(c, http.StatusForbidden, expiredRequest)
	}
	user, err := s.accounts.SignIn(c, c.PostForm("username"), c.PostForm("password"))
	if err != nil {
		var me *spec.Error
		if errors.As(err, &me) && me.Code == spec.ErrLimitExceeded {
			return s.signInPage(c, &req, "Too many attempts. Wait a minute, then try again.", http.StatusTooManyRequests)
		}
		if errors.As(err, &me) {
			return s.signInPage(c, &req, "The user name or password is wrong.", http.StatusForbidden)
		}
		return err
	}
	s.signedIn(req.id, user)
	c.Redirect(http.StatusSeeOther, pathConsent+"?request="+url.QueryEscape(req.id))
	return nil
}

// GET /_chatalot/oauth2/auth/sign_in: the sign-in form of a request (the
// sign-up page links back to it).
func (s *Service) signInForm(c *gin.Context) error {
	browser, _ := c.Cookie(browserCookie)
	req, ok := s.checkRequest(c.Query("request"), browser, "", false)
	if !ok {
		return s.errorPage(c, http.StatusForbidden, expiredRequest)
	}
	return s.signInPage(c, &req, "", http.StatusOK)
}

// GET /_chatalot/oauth2/auth/sign_up: the sign-up form of a request (the
// sign-in page links to it).
func (s *Service) signUpForm(c *gin.Context) error {
	browser, _ := c.Cookie(browserCookie)
	req, ok := s.checkRequest(c.Query("request"), browser, "", false)
	if !ok {
		return s.errorPage(c, http.StatusForbidden, expiredRequest)
	}
	if _, open := s.accounts.SignUpNeedsInviteCode(); !open {
		return s.errorPage(c, http.StatusForbidden, "This server does not let people create accounts themselves.")
	}
	return s.signUpPage(c, &req, "", http.StatusOK)
}

// POST /_chatalot/oauth2/auth/sign_up: creates the account, then goes on
// to consent as after signing in. Registration's rules and rate limit apply.
func (s *Service) signUp(c *gin.Context) error {
	req, ok := s.formRequest(c)
	if !ok {
		return s.errorPage(c, http.StatusForbidden, expiredRequest)
	}
	if c.PostForm("password") != c.PostForm("password2") {
		return s.signUpPage(c, &req, "The two passwords differ.", http.StatusBadRequest)
	}
	user, err := s.accounts.SignUp(c, c.PostForm("username"), c.PostForm("password"), strings.TrimSpace(c.PostForm("invite_code")))
	if err != nil {
		var me *spec.Error
		if !errors.As(err, &me) {
			return err
		}
		msg := me.Message
		switch me.Code {
		case spec.ErrLimitExceeded:
			msg = "Too many attempts. Wait a while, then try again."
		case spec.ErrForbidden:
			msg = "The invite code is not valid, has expired or has been used up."
		}
		return s.signUpPage(c, &req, msg, me.Status)
	}
	s.signedIn(req.id, user)
	c.Redirect(http.StatusSeeOther, pathConsent+"?request="+url.QueryEscape(req.id))
	return nil
}

// signedIn records who signed in for a request; its forms get a new token.
func (s *Service) signedIn(id string, user spec.UserID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.requests[id]; ok {
		r.user = user
		r.csrf = newSecret()
	}
}

const expiredRequest = "This sign-in page has expired or was not opened in this browser. Go back to the application and start again."

// GET /_chatalot/oauth2/auth/consent: "<client> wants to sign in as you".
func (s *Service) consentPage(c *gin.Context) error {
	browser, _ := c.Cookie(browserCookie)
	req, ok := s.checkRequest(c.Query("request"), browser, "", false)
	if !ok || req.user == "" {
		return s.errorPage(c, http.StatusForbidden, expiredRequest)
	}
	return s.renderConsent(c, &req)
}

// POST /_chatalot/oauth2/auth/consent: allow or deny. Either way the
// request is over and the browser goes back to the client.
func (s *Service) consent(c *gin.Context) error {
	req, ok := s.formRequest(c)
	if !ok || req.user == "" {
		return s.errorPage(c, http.StatusForbidden, expiredRequest)
	}
	s.mu.Lock()
	delete(s.requests, req.id)
	s.mu.Unlock()
	if req.deviceCode != "" {
		return s.decideDevice(c, req, c.PostForm("decision") == "allow")
	}
	if req.legacySSO {
		return s.finishSSO(c, req, c.PostForm("decision") == "allow")
	}
	if c.PostForm("decision") != "allow" {
		return s.redirectError(c, req.redirectURI, req.responseMode, req.state, "access_denied", "the person did not allow the application to sign in")
	}
	code := newSecret()
	s.mu.Lock()
	s.sweepLocked()
	s.codes[hashSecret(code)] = &authCode{
		clientID: req.client.ClientID, redirectURI: req.redirectURI, challenge: req.challenge,
		scope: req.scope, deviceID: req.deviceID, user: req.user, clientName: req.client.ClientName,
		expires: s.now().Add(s.cfg.CodeLifetime),
	}
	s.mu.Unlock()
	s.log.Info().Str("user_id", string(req.user)).Str("client_id", req.client.ClientID).Msg("oauth: authorisation granted")
	return s.redirect(c, req.redirectURI, req.responseMode, url.Values{"code": {code}, "state": {req.state}})
}

// redirectError sends the browser back to the client with an error
// (RFC 6749 section 4.1.2.1).
func (s *Service) redirectError(c *gin.Context, redirectURI, mode, state, code, desc string) error {
	return s.redirect(c, redirectURI, mode, url.Values{"error": {code}, "error_description": {desc}, "state": {state}})
}

// redirect sends the browser to a registered redirect URI with the answer
// in its query or its fragment. An empty state is left out.
func (s *Service) redirect(c *gin.Context, redirectURI, mode string, params url.Values) error {
	if params.Get("state") == "" {
		params.Del("state")
	}
	u, err := url.Parse(redirectURI)
	if err != nil {
		return err
	}
	if mode == "fragment" {
		u.Fragment = ""
		u.RawFragment = ""
		c.Redirect(http.StatusSeeOther, u.String()+"#"+params.Encode())
		return nil
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	c.Redirect(http.StatusSeeOther, u.String())
	return nil
}
