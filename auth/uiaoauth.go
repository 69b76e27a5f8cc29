package auth

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// The m.oauth stage of user-interactive authentication (spec v1.17
// "OAuth authentication", MSC4312). A session signed in through the OAuth
// 2.0 API has no password to give, so replacing its cross-signing keys
// (POST /keys/device_signing/upload, the one endpoint the stage is valid
// on) is approved by the person on the account page instead: the 401 names
// that page in params["m.oauth"].url, the person signs in there and allows,
// and the client's retry with the session goes through.
//
// An approval is bound to the UIA session, so to the device that asked and
// to the exact keys of its request (the session's body hash); it lasts
// crossSigningApprovalLifetime and is used up by the upload it allowed.

// OAuthSessions is what the m.oauth stage needs from the OAuth 2.0 API
// (package oauth, which cannot be imported here: it builds on this one).
type OAuthSessions interface {
	// IsOAuthDevice reports whether a device's session was granted through
	// the OAuth 2.0 API.
	IsOAuthDevice(ctx context.Context, user spec.UserID, deviceID string) (bool, error)
	// CrossSigningResetURL is the account page where the person approves
	// the reset asked for in a UIA session.
	CrossSigningResetURL(session string) string
}

// crossSigningApprovalLifetime bounds the time between the person's
// approval and the upload it allows.
const crossSigningApprovalLifetime = 10 * time.Minute

// opCrossSigningUpload is the one operation m.oauth is offered for.
const opCrossSigningUpload = "POST /keys/device_signing/upload"

// errNotApprovedYet answers an m.oauth stage the person has not approved:
// the plain 401 again, without an errcode.
var errNotApprovedYet = errors.New("the reset has not been approved on the account page yet")

// stageParams are the challenge's params: the request's own, plus the
// account page's URL when the session's flows offer m.oauth.
func (s *Service) stageParams(u *uiaSession, params map[string]any) map[string]any {
	if s.oauth == nil || !offersOAuth(u) {
		return params
	}
	out := maps.Clone(params)
	if out == nil {
		out = map[string]any{}
	}
	out[stageOAuth] = map[string]string{"url": s.oauth.CrossSigningResetURL(u.id)}
	return out
}

// ReauthenticateCrossSigningReset is Reauthenticate for replacing
// cross-signing keys (keys' UIAFunc). With the OAuth 2.0 API on, a session
// it granted is offered m.oauth only, as the spec asks; with password login
// off, other sessions are offered m.oauth beside the password. Otherwise it
// is Reauthenticate.
//
// A retry without any "auth" also succeeds once the person approved: the
// Synapse and authentication service pair lifts UIA for a while after the
// approval, and matrix-rust-sdk (so Element X) relies on that, retrying the
// same request without auth. It is bound as tightly as the session: the
// same device, the same keys, within the approval's lifetime, once. Until
// then such a retry gets the same session again rather than a new one, as
// the SDK retries in a loop.
func (s *Service) ReauthenticateCrossSigningReset(c *gin.Context, dev *Device, body []byte) (finish func(), err error) {
	if dev == nil {
		return nil, spec.NewError(spec.ErrMissingToken, "missing access token")
	}
	if s.oauth == nil {
		return s.Reauthenticate(c, dev, body)
	}
	viaOAuth, err := s.oauth.IsOAuthDevice(c.Request.Context(), dev.UserID, dev.DeviceID)
	if err != nil {
		return nil, err
	}
	var flows [][]string
	switch {
	case viaOAuth:
		flows = [][]string{{stageOAuth}}
	case s.cfg.NoPasswordLogin:
		flows = [][]string{{stagePassword}, {stageOAuth}}
	default:
		return s.Reauthenticate(c, dev, body)
	}
	var wrapper struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := api.DecodeJSON(body, &wrapper); err != nil {
		return nil, err
	}
	req := uiaRequest{flows: flows, dev: dev, body: body}
	if len(wrapper.Auth) == 0 || string(wrapper.Auth) == "null" {
		if u := s.uia.pendingReset(dev, uiaOp(c.Request), bodyHash(body)); u != nil {
			if s.isDone(u) {
				return func() { s.uia.finish(u.id) }, nil
			}
			return nil, answerChallenge(c, s.status(u, req, nil))
		}
	}
	u, err := s.authenticate(c, req, wrapper.Auth)
	if err != nil {
		return nil, answerChallenge(c, err)
	}
	return func() { s.uia.finish(u.id) }, nil
}

// pendingReset finds the live m.oauth session a device started for this
// very request.
func (st *uiaStore) pendingReset(dev *Device, op string, hash [32]byte) *uiaSession {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	var found *uiaSession
	for _, u := range st.m {
		if u.op != op || u.user != dev.UserID || u.device != dev.DeviceID || u.bodyHash != hash || !now.Before(u.expires) || !offersOAuth(u) {
			continue
		}
		// An approved one first, else the latest.
		if found == nil || u.done() && !found.done() || u.done() == found.done() && u.expires.After(found.expires) {
			found = u
		}
	}
	return found
}

// offersOAuth reports whether one of a session's flows has m.oauth.
func offersOAuth(u *uiaSession) bool {
	return slices.ContainsFunc(u.flows, func(f []string) bool { return slices.Contains(f, stageOAuth) })
}

// CrossSigningReset is a cross-signing reset waiting for the person's
// approval on the account page.
type CrossSigningReset struct {
	Session  string // the UIA session
	DeviceID string // the device that asked
	Approved bool
	Expires  time.Time
}

// CrossSigningResets lists a user's resets waiting for approval or for the
// upload, oldest first.
func (s *Service) CrossSigningResets(user spec.UserID) []CrossSigningReset {
	s.uia.mu.Lock()
	defer s.uia.mu.Unlock()
	now := time.Now()
	var out []CrossSigningReset
	for _, u := range s.uia.m {
		if u.user == user && u.op == opCrossSigningUpload && now.Before(u.expires) && offersOAuth(u) {
			out = append(out, CrossSigningReset{Session: u.id, DeviceID: u.device, Approved: u.done(), Expires: u.expires})
		}
	}
	slices.SortFunc(out, func(a, b CrossSigningReset) int { return a.Expires.Compare(b.Expires) })
	return out
}

// ApproveCrossSigningReset completes the m.oauth stage of a user's reset
// request: the upload it protects may go ahead within the approval's
// lifetime. False if there is no such request (any more).
func (s *Service) ApproveCrossSigningReset(user spec.UserID, session string) bool {
	s.uia.mu.Lock()
	defer s.uia.mu.Unlock()
	u := s.uia.m[session]
	now := time.Now()
	if u == nil || u.user != user || u.op != opCrossSigningUpload || !now.Before(u.expires) || !u.accepts(stageOAuth) {
		return false
	}
	u.completed = append(u.completed, stageOAuth)
	if limit := now.Add(crossSigningApprovalLifetime); u.expires.After(limit) {
		u.expires = limit
	}
	s.log.Info().Str("user_id", string(user)).Str("device_id", u.device).Msg("cross-signing reset approved on the account page")
	return true
}
