package oauth

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Approving a cross-signing reset (spec "OAuth authentication", the m.oauth
// UIA stage): auth's user-interactive authentication sends the person here,
// to the account page with the org.matrix.cross_signing_reset action and
// the UIA session; signed in, the person allows, and the client's retry
// goes through. The session itself is auth's.

const (
	actionCrossSigningReset  = "org.matrix.cross_signing_reset"
	pathAccountCrossSigning  = pathAccount + "/cross_signing_reset"
	maxUIASessionParamLength = 64
)

// Sessions tells auth's user-interactive authentication which sessions
// were granted here and where their resets are approved (auth.OAuthSessions).
// It needs only the database, so it is built before auth, which the Service
// builds on.
type Sessions struct {
	db   *storage.DB
	base string
}

// NewSessions reads the grants of db; baseURL is the public base URL, as
// in Deps.
func NewSessions(db *storage.DB, baseURL string) *Sessions {
	return &Sessions{db: db, base: strings.TrimRight(baseURL, "/")}
}

// IsOAuthDevice reports whether a device's session is an OAuth grant.
func (r *Sessions) IsOAuthDevice(ctx context.Context, user spec.UserID, deviceID string) (bool, error) {
	return deviceHasGrant(ctx, r.db, user, deviceID)
}

// CrossSigningResetURL is the account page's deep link for approving the
// reset asked for in a UIA session.
func (r *Sessions) CrossSigningResetURL(session string) string {
	return r.base + pathAccount + "?" + url.Values{"action": {actionCrossSigningReset}, "session": {session}}.Encode()
}

// resetView is a reset request as the account page shows it.
type resetView struct {
	Session, Device string
	Approved        bool
}

// crossSigningResets are the user's pending reset requests, only the one of
// session when it is given.
func (s *Service) crossSigningResets(c *gin.Context, user spec.UserID, session string) ([]resetView, error) {
	names := map[string]string{}
	devs, err := s.accounts.Devices(c.Request.Context(), user)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if d.DisplayName != nil && *d.DisplayName != "" {
			names[d.DeviceID] = *d.DisplayName
		}
	}
	var out []resetView
	for _, r := range s.accounts.CrossSigningResets(user) {
		if session != "" && r.Session != session {
			continue
		}
		name := r.DeviceID
		if n, ok := names[r.DeviceID]; ok {
			name = n + " (" + r.DeviceID + ")"
		}
		out = append(out, resetView{Session: r.Session, Device: name, Approved: r.Approved})
	}
	return out, nil
}

// POST /_chatalot/account/cross_signing_reset: allows the reset of one
// UIA session.
func (s *Service) accountCrossSigningReset(c *gin.Context) error {
	_, ws, ok := s.accountForm(c)
	if !ok {
		return s.errorPage(c, http.StatusForbidden, "This page has expired. Open your account page again.")
	}
	session := c.PostForm("session")
	if session == "" || len(session) > maxUIASessionParamLength || !s.accounts.ApproveCrossSigningReset(ws.user, session) {
		return s.renderAccount(c, ws, actionCrossSigningReset, "", "This request to reset your encryption identity has expired or was already used. Start again in your app.", http.StatusNotFound)
	}
	return s.renderAccount(c, ws, "", "", "Allowed. Go back to your app: it resets your encryption identity within the next 10 minutes.", http.StatusOK)
}
