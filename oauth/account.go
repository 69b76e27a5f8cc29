package oauth

import (
	"errors"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// The account page that account_management_uri points to (spec "Account
// management"): the sessions (devices) and signing them out, the password,
// closing the account. It has its own sign-in, kept in a browser session:
// in memory, for accountSessionLifetime, in a cookie only this page gets.

const (
	pathAccount             = "/_chatalot/account"
	pathAccountSignIn       = pathAccount + "/sign_in"
	pathAccountSignOut      = pathAccount + "/sign_out"
	pathAccountDeleteDevice = pathAccount + "/delete_device"
	pathAccountPassword     = pathAccount + "/password"
	pathAccountDeactivate   = pathAccount + "/deactivate"
	accountCookie           = "chatalot_account"
	accountSessionLifetime  = time.Hour
	accountPendingLifetime  = 15 * time.Minute
	actionProfile           = "org.matrix.profile"
	actionDevicesList       = "org.matrix.devices_list"
	actionDeviceView        = "org.matrix.device_view"
	actionDeviceDelete      = "org.matrix.device_delete"
	actionAccountDeactivate = "org.matrix.account_deactivate"
)

// accountActions are the spec's account management actions this page
// answers.
var accountActions = []string{actionProfile, actionDevicesList, actionDeviceView, actionDeviceDelete, actionAccountDeactivate, actionCrossSigningReset}

// webSession is one browser's session of the account page; user is empty
// until it signed in.
type webSession struct {
	user    spec.UserID
	csrf    string
	expires time.Time
}

// accountSession returns the browser's session, creating a signed-out one
// (with its CSRF token) when it has none.
func (s *Service) accountSession(c *gin.Context, create bool) (string, webSession, bool) {
	if v, err := c.Cookie(accountCookie); err == nil {
		s.mu.Lock()
		ws, ok := s.web[hashSecret(v)]
		if ok && s.now().Before(ws.expires) {
			out := *ws
			s.mu.Unlock()
			return v, out, true
		}
		s.mu.Unlock()
	}
	if !create {
		return "", webSession{}, false
	}
	// A signed-out session is held in memory too: it costs a login attempt.
	if err := s.limiter.AllowIP(c, auth.RateLogin); err != nil {
		return "", webSession{}, false
	}
	v, ws, ok := s.newWebSession(c, "")
	return v, ws, ok
}

// newWebSession stores a session and sets its cookie; false when the
// store is full.
func (s *Service) newWebSession(c *gin.Context, user spec.UserID) (string, webSession, bool) {
	life := accountPendingLifetime
	if user != "" {
		life = accountSessionLifetime
	}
	v := newSecret()
	ws := webSession{user: user, csrf: newSecret(), expires: s.now().Add(life)}
	s.mu.Lock()
	now := s.now()
	for h, w := range s.web {
		if now.After(w.expires) {
			delete(s.web, h)
		}
	}
	if len(s.web) >= s.cfg.MaxPending {
		s.mu.Unlock()
		return "", ws, false
	}
	stored := ws
	s.web[hashSecret(v)] = &stored
	s.mu.Unlock()
	http.SetCookie(c.Writer, &http.Cookie{
		Name: accountCookie, Value: v, Path: pathAccount, HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(life.Seconds()),
	})
	return v, ws, true
}

func (s *Service) endWebSession(c *gin.Context, v string) {
	s.mu.Lock()
	delete(s.web, hashSecret(v))
	s.mu.Unlock()
	http.SetCookie(c.Writer, &http.Cookie{Name: accountCookie, Value: "", Path: pathAccount, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// accountForm checks a posted form of a signed-in session.
func (s *Service) accountForm(c *gin.Context) (string, webSession, bool) {
	v, ws, ok := s.accountSession(c, false)
	if !ok || ws.user == "" || !equalSecret(c.PostForm("csrf"), ws.csrf) {
		return "", webSession{}, false
	}
	return v, ws, true
}

// accountTarget keeps only the parameters the page understands, for the
// redirect after signing in.
func accountTarget(q url.Values) string {
	keep := url.Values{}
	if a := q.Get("action"); containsString(accountActions, a) {
		keep.Set("action", a)
	}
	if d := q.Get("device_id"); d != "" && len(d) <= 255 {
		keep.Set("device_id", d)
	}
	if u := q.Get("session"); u != "" && len(u) <= maxUIASessionParamLength {
		keep.Set("session", u) // a cross-signing reset's UIA session
	}
	if len(keep) == 0 {
		return pathAccount
	}
	return pathAccount + "?" + keep.Encode()
}

// GET /_chatalot/account: the account page, or its sign-in.
func (s *Service) accountPage(c *gin.Context) error {
	_, ws, ok := s.accountSession(c, true)
	if !ok {
		return s.errorPage(c, http.StatusServiceUnavailable, "The server is handling too many sign-ins; try again in a few minutes.")
	}
	if ws.user == "" {
		return s.accountSignInPage(c, ws, accountTarget(c.Request.URL.Query()), "", http.StatusOK)
	}
	return s.renderAccount(c, ws, c.Query("action"), c.Query("device_id"), "", http.StatusOK)
}

func (s *Service) accountSignInPage(c *gin.Context, ws webSession, next, errMsg string, status int) error {
	return s.renderPage(c, status, "account_signin", pageData{
		Title: "Your account on " + string(s.serverName), Server: string(s.serverName),
		Error: errMsg, Action: pathAccountSignIn, CSRF: ws.csrf, Next: next,
	}, "")
}

type deviceView struct {
	ID, Name, LastSeen string
	Selected           bool
}

func (s *Service) renderAccount(c *gin.Context, ws webSession, action, deviceID, msg string, status int) error {
	devs, err := s.accounts.Devices(c.Request.Context(), ws.user)
	if err != nil {
		return err
	}
	sort.Slice(devs, func(i, j int) bool { return lastSeen(devs[i]) > lastSeen(devs[j]) })
	var views []deviceView
	for _, d := range devs {
		v := deviceView{ID: d.DeviceID, Name: d.DeviceID, Selected: d.DeviceID == deviceID}
		if d.DisplayName != nil && *d.DisplayName != "" {
			v.Name = *d.DisplayName
		}
		if d.LastSeenTS != nil {
			v.LastSeen = time.UnixMilli(*d.LastSeenTS).UTC().Format("2 Jan 2006 15:04 UTC")
		}
		views = append(views, v)
	}
	d := pageData{
		Title: "Your account on " + string(s.serverName), Server: string(s.serverName), User: string(ws.user),
		CSRF: ws.csrf, Error: msg, Devices: views, Deactivate: action == actionAccountDeactivate,
		ConfirmDelete: action == actionDeviceDelete && deviceID != "", ResetAsked: action == actionCrossSigningReset,
	}
	if d.ResetAsked {
		if d.Resets, err = s.crossSigningResets(c, ws.user, c.Query("session")); err != nil {
			return err
		}
	}
	return s.renderPage(c, status, "account", d, "")
}

func lastSeen(d auth.DeviceInfo) int64 {
	if d.LastSeenTS == nil {
		return 0
	}
	return *d.LastSeenTS
}

// POST /_chatalot/account/sign_in
func (s *Service) accountSignIn(c *gin.Context) error {
	v, ws, ok := s.accountSession(c, false)
	if !ok || !equalSecret(c.PostForm("csrf"), ws.csrf) {
		return s.errorPage(c, http.StatusForbidden, "This page has expired. Open your account page again.")
	}
	next := c.PostForm("next")
	if u, err := url.Parse(next); err != nil || u.Path != pathAccount || u.Host != "" || u.Scheme != "" {
		next = pathAccount // only ever back to this page
	} else {
		next = accountTarget(u.Query())
	}
	user, err := s.accounts.SignIn(c, c.PostForm("username"), c.PostForm("password"))
	if err != nil {
		var me *spec.Error
		if errors.As(err, &me) && me.Code == spec.ErrLimitExceeded {
			return s.accountSignInPage(c, ws, next, "Too many attempts. Wait a minute, then try again.", http.StatusTooManyRequests)
		}
		if errors.As(err, &me) {
			return s.accountSignInPage(c, ws, next, "The user name or password is wrong.", http.StatusForbidden)
		}
		return err
	}
	// A new session ID once signed in: one planted before cannot ride it.
	s.endWebSession(c, v)
	if _, _, ok := s.newWebSession(c, user); !ok {
		return s.errorPage(c, http.StatusServiceUnavailable, "The server is handling too many sign-ins; try again in a few minutes.")
	}
	c.Redirect(http.StatusSeeOther, next)
	return nil
}

// POST /_chatalot/account/sign_out: ends the browser session.
func (s *Service) accountSignOut(c *gin.Context) error {
	v, _, ok := s.accountForm(c)
	if ok {
		s.endWebSession(c, v)
	}
	c.Redirect(http.StatusSeeOther, pathAccount)
	return nil
}

// POST /_chatalot/account/delete_device: signs a session out (deletes the
// device, its tokens and keys, and any OAuth grant with it).
func (s *Service) accountDeleteDevice(c *gin.Context) error {
	_, ws, ok := s.accountForm(c)
	if !ok {
		return s.errorPage(c, http.StatusForbidden, "This page has expired. Open your account page again.")
	}
	id := c.PostForm("device_id")
	if id == "" {
		return s.renderAccount(c, ws, "", "", "No session was chosen.", http.StatusBadRequest)
	}
	if err := s.accounts.DeleteDevices(c.Request.Context(), ws.user, id); err != nil {
		return err
	}
	if err := s.deleteDeviceGrants(c, ws.user, id); err != nil {
		return err
	}
	c.Redirect(http.StatusSeeOther, pathAccount)
	return nil
}

// POST /_chatalot/account/password: the current password, then the new
// one twice; other sessions are signed out unless the person says not to.
func (s *Service) accountPassword(c *gin.Context) error {
	_, ws, ok := s.accountForm(c)
	if !ok {
		return s.errorPage(c, http.StatusForbidden, "This page has expired. Open your account page again.")
	}
	if msg, status := s.recheckPassword(c, ws.user, c.PostForm("current_password")); msg != "" {
		return s.renderAccount(c, ws, "", "", msg, status)
	}
	if c.PostForm("new_password") != c.PostForm("new_password2") {
		return s.renderAccount(c, ws, "", "", "The two new passwords differ.", http.StatusBadRequest)
	}
	logout := c.PostForm("keep_sessions") == ""
	if err := s.accounts.SetPassword(c.Request.Context(), ws.user, c.PostForm("new_password"), logout, ""); err != nil {
		var me *spec.Error
		if errors.As(err, &me) {
			return s.renderAccount(c, ws, "", "", me.Message, me.Status)
		}
		return err
	}
	msg := "Your password was changed."
	if logout {
		msg += " Your sessions were signed out."
	}
	return s.renderAccount(c, ws, "", "", msg, http.StatusOK)
}

// POST /_chatalot/account/deactivate: closes the account for good, after
// the password and an explicit confirmation.
func (s *Service) accountDeactivate(c *gin.Context) error {
	v, ws, ok := s.accountForm(c)
	if !ok {
		return s.errorPage(c, http.StatusForbidden, "This page has expired. Open your account page again.")
	}
	if c.PostForm("confirm") != "yes" {
		return s.renderAccount(c, ws, actionAccountDeactivate, "", "Tick the box to confirm that the account is to be closed.", http.StatusBadRequest)
	}
	if msg, status := s.recheckPassword(c, ws.user, c.PostForm("password")); msg != "" {
		return s.renderAccount(c, ws, actionAccountDeactivate, "", msg, status)
	}
	if err := s.accounts.Deactivate(c.Request.Context(), ws.user, c.PostForm("erase") == "yes"); err != nil {
		return err
	}
	s.endWebSession(c, v)
	return s.renderPage(c, http.StatusOK, "error", pageData{Title: "Account closed", Error: "Your account " + string(ws.user) + " is closed. Its user name will not be given to anyone else."}, "")
}

// recheckPassword asks for the password again before a change that
// matters, under the login rate limits.
func (s *Service) recheckPassword(c *gin.Context, user spec.UserID, password string) (string, int) {
	_, err := s.accounts.SignIn(c, string(user), password)
	if err == nil {
		return "", 0
	}
	var me *spec.Error
	if errors.As(err, &me) && me.Code == spec.ErrLimitExceeded {
		return "Too many attempts. Wait a minute, then try again.", http.StatusTooManyRequests
	}
	return "The current password is wrong.", http.StatusForbidden
}

// deleteDeviceGrants ends the OAuth grants of a deleted device.
func (s *Service) deleteDeviceGrants(c *gin.Context, user spec.UserID, deviceID string) error {
	return s.db.Write(c.Request.Context(), func(tx *storage.Tx) error { return deleteDeviceGrants(tx, user, deviceID) })
}
