package oauth

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// The legacy API's SSO login, for clients that do not speak the OAuth 2.0
// API (spec v1.18 "OAuth 2.0 aware clients", MSC3824): /login offers
// m.login.sso with oauth_aware_preferred, the client opens
// /login/sso/redirect in a browser, the person signs in (or up, with
// action=register) on these pages and confirms the app, and the browser
// goes back to the client's redirectUrl with a loginToken for POST /login
// (m.login.token). The confirmation names where the token goes, as the
// spec's security considerations ask: a link with someone else's
// redirectUrl cannot take an account unnoticed.

const (
	pathSSORedirect   = "/_matrix/client/v3/login/sso/redirect"
	pathSSORedirectR0 = "/_matrix/client/r0/login/sso/redirect"
	maxRedirectURL    = 2048
)

// GET /_matrix/client/v3/login/sso/redirect: the sign-in (or sign-up)
// page, then consent, then the redirect with the login token.
func (s *Service) ssoRedirect(c *gin.Context) error {
	q := c.Request.URL.Query()
	for k, v := range q {
		if len(v) > 1 {
			return s.errorPage(c, http.StatusBadRequest, "The request repeats the parameter "+truncate(k, 40)+".")
		}
	}
	target := q.Get("redirectUrl")
	if target == "" {
		return spec.MissingParam("redirectUrl is required")
	}
	if !validSSORedirect(target) {
		return s.errorPage(c, http.StatusBadRequest, "The application that sent you here gave a return address that cannot be used.")
	}
	if err := s.limiter.AllowIP(c, auth.RateLogin); err != nil {
		return s.errorPage(c, http.StatusTooManyRequests, "Too many sign-ins from your network. Wait a minute, then try again.")
	}
	req := &authRequest{
		id: newSecret(), browser: s.browserID(c), csrf: newSecret(),
		client:      clientMetadata{ClientName: "The app at " + destination(target)},
		redirectURI: target, legacySSO: true, expires: s.now().Add(s.cfg.RequestLifetime),
	}
	if !s.addRequest(req) {
		return s.errorPage(c, http.StatusServiceUnavailable, "The server is handling too many sign-ins; try again in a few minutes.")
	}
	if _, ok := s.accounts.SignUpNeedsInviteCode(); ok && q.Get("action") == "register" {
		return s.signUpPage(c, req, "", http.StatusOK)
	}
	return s.signInPage(c, req, "", http.StatusOK)
}

// validSSORedirect accepts an absolute URL to send a login token to: a web
// address, or a native app's own scheme; never a scheme a browser would run
// or read locally.
func validSSORedirect(raw string) bool {
	if len(raw) > maxRedirectURL {
		return false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return false
	}
	switch strings.ToLower(u.Scheme) {
	case "javascript", "data", "vbscript", "file", "blob", "about", "filesystem":
		return false
	case "http", "https":
		return u.Host != "" && u.User == nil
	}
	return plainHost(u.Scheme)
}

// finishSSO ends a legacy SSO sign-in: allowed, the browser goes back to
// the app with a single-use login token, any loginToken already in the
// address replaced (spec "Handling the callback").
func (s *Service) finishSSO(c *gin.Context, req authRequest, allow bool) error {
	if !allow {
		return s.renderPage(c, http.StatusOK, "done", pageData{Title: "Not signed in", Error: "The app was not signed in. You can close this page."}, "")
	}
	u, err := url.Parse(req.redirectURI)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("loginToken", s.accounts.IssueLoginToken(req.user))
	u.RawQuery = q.Encode()
	s.log.Info().Str("user_id", string(req.user)).Msg("oauth: legacy SSO sign-in granted")
	c.Redirect(http.StatusSeeOther, u.String())
	return nil
}

func (s *Service) ssoRoutes(r *gin.Engine) {
	r.GET(pathSSORedirect, api.Handle(s.ssoRedirect))
	r.GET(pathSSORedirectR0, api.Handle(s.ssoRedirect))
}
