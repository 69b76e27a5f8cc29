package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// User-interactive authentication (client-server API, "User-Interactive
// Authentication API"): a request is refused with 401 and the flows it
// accepts until the client has completed every stage of one flow, each
// stage being the same request resent with an "auth" object.

// Stage types Chatalot offers.
const (
	stagePassword = "m.login.password"
	stageDummy    = "m.login.dummy"
	stageRegToken = "m.login.registration_token"
	stageOAuth    = "m.oauth" // approved on the OAuth 2.0 API's account page (uiaoauth.go)
)

// uiaSession is one run of UIA. Sessions live in memory only: they last
// minutes, and a restart merely makes the client start over. The
// registration token use a session reserves is in the database (with the
// same expiry) so that a token's pending count survives restarts.
type uiaSession struct {
	id        string
	op        string      // method and version-less path of the request it protects
	user      spec.UserID // who started it; empty for registration
	device    string      // the device that started it; empty for registration
	bodyHash  [32]byte    // the request without "auth"; zero for registration
	flows     [][]string
	completed []string
	expires   time.Time
	regToken  string // registration token reserved by this session

	// Registration remembers what earlier requests of the session gave, as
	// clients may leave it out once authentication has started.
	username, password string
}

// done reports whether the completed stages make up a whole flow.
func (u *uiaSession) done() bool {
	for _, f := range u.flows {
		if slices.Equal(f, u.completed) {
			return true
		}
	}
	return false
}

// accepts reports whether stage is the next stage of a flow that the
// completed stages have followed in order.
func (u *uiaSession) accepts(stage string) bool {
	for _, f := range u.flows {
		n := len(u.completed)
		if len(f) > n && slices.Equal(f[:n], u.completed) && f[n] == stage {
			return true
		}
	}
	return false
}

// uiaStore holds the live sessions.
type uiaStore struct {
	mu        sync.Mutex
	m         map[string]*uiaSession
	ttl       time.Duration
	lastSweep time.Time
}

// maxUIASessions bounds memory; new sessions past it are refused with 429.
const maxUIASessions = 50000

func newUIAStore(ttl time.Duration) *uiaStore {
	return &uiaStore{m: map[string]*uiaSession{}, ttl: ttl}
}

func (st *uiaStore) create(u *uiaSession) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	// Expired sessions are dropped at most once per lifetime (or when the
	// table is full), which keeps creation O(1) amortised.
	if len(st.m) >= maxUIASessions || now.Sub(st.lastSweep) > st.ttl {
		st.lastSweep = now
		for id, s := range st.m {
			if now.After(s.expires) {
				delete(st.m, id)
			}
		}
		if len(st.m) >= maxUIASessions {
			return spec.LimitExceeded(10000)
		}
	}
	u.id = newToken("")[:24]
	u.expires = now.Add(st.ttl)
	st.m[u.id] = u
	return nil
}

func (st *uiaStore) get(id string) *uiaSession {
	st.mu.Lock()
	defer st.mu.Unlock()
	u := st.m[id]
	if u != nil && time.Now().After(u.expires) {
		delete(st.m, id)
		return nil
	}
	return u
}

func (st *uiaStore) finish(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.m, id)
}

// dropUser ends every session a user started.
func (st *uiaStore) dropUser(user spec.UserID) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for id, u := range st.m {
		if u.user == user {
			delete(st.m, id)
		}
	}
}

// lock runs f with the store locked, to update a session atomically.
func (st *uiaStore) lock(f func()) {
	st.mu.Lock()
	defer st.mu.Unlock()
	f()
}

// uiaChallenge is the 401 (or a failed stage's) answer: the flows, params,
// session and completed stages, and an errcode only when a stage failed.
// It is written as is rather than as a *spec.Error, because the first 401 of
// the protocol carries no errcode and clients show any errcode as a failure.
type uiaChallenge struct {
	status int
	body   map[string]any
}

func (e *uiaChallenge) Error() string { return "user-interactive authentication required" }

// asSpecError is the challenge as a *spec.Error, for callers outside the
// package that render errors the usual way.
func (e *uiaChallenge) asSpecError() *spec.Error {
	se := &spec.Error{Status: e.status, Code: spec.ErrUnauthorized, Message: "additional authentication is required"}
	if code, ok := e.body["errcode"].(spec.ErrCode); ok {
		se.Code, se.Message = code, e.body["error"].(string)
	}
	for k, v := range e.body {
		if k != "errcode" && k != "error" {
			se = se.With(k, v)
		}
	}
	return se
}

func challenge(u *uiaSession, params map[string]any, failure *spec.Error) *uiaChallenge {
	flows := make([]map[string][]string, len(u.flows))
	for i, f := range u.flows {
		flows[i] = map[string][]string{"stages": f}
	}
	if params == nil {
		params = map[string]any{}
	}
	body := map[string]any{"flows": flows, "params": params, "session": u.id}
	if len(u.completed) > 0 {
		body["completed"] = u.completed
	}
	if failure != nil {
		body["errcode"] = failure.Code
		body["error"] = failure.Message
	}
	return &uiaChallenge{status: http.StatusUnauthorized, body: body}
}

// answerChallenge returns err for a handler to return. A UIA challenge is
// written here, as is (its body has no errcode until a stage failed, which
// the error renderer would add), and comes back as a *spec.Error that the
// renderer leaves alone since the answer is written.
func answerChallenge(c *gin.Context, err error) error {
	if ch, ok := err.(*uiaChallenge); ok {
		c.AbortWithStatusJSON(ch.status, ch.body)
		return ch.asSpecError()
	}
	return err
}

// authDict is the client's "auth" object. Fields of the wrong JSON type are
// refused with M_BAD_JSON.
type authDict struct {
	Type       string      `json:"type"`
	Session    string      `json:"session"`
	Password   string      `json:"password"`
	Identifier *identifier `json:"identifier"`
	User       string      `json:"user"`  // deprecated form of identifier
	Token      string      `json:"token"` // m.login.registration_token
}

// identifier is a user identifier object.
type identifier struct {
	Type    string `json:"type"`
	User    string `json:"user"`
	Medium  string `json:"medium"`
	Address string `json:"address"`
	Country string `json:"country"`
	Phone   string `json:"phone"`
}

// uiaRequest describes the request being authenticated.
type uiaRequest struct {
	flows  [][]string
	params map[string]any
	dev    *Device // the caller, for endpoints behind the middleware
	body   []byte  // the whole request body, to bind the session to it
	// register marks /register: the session binds to the endpoint only and
	// may carry the registration token stage.
	register bool
}

// uiaOp names the operation a session protects: method and path without
// the API version, so that r0 and v3 share sessions.
func uiaOp(r *http.Request) string {
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/_matrix/client/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			p = rest[i:]
		}
	}
	return r.Method + " " + p
}

// bodyHash hashes the request without its "auth" field, so that a session
// completed for one request cannot authorise a different one.
func bodyHash(body []byte) [32]byte {
	var m map[string]json.RawMessage
	if len(bytes.TrimSpace(body)) == 0 {
		m = map[string]json.RawMessage{} // an empty body reads as {}
	} else if err := json.Unmarshal(body, &m); err != nil {
		return sha256.Sum256(body)
	}
	delete(m, "auth")
	for k, v := range m {
		var buf bytes.Buffer
		if json.Compact(&buf, v) == nil {
			m[k] = buf.Bytes()
		}
	}
	canon, _ := json.Marshal(m) // map keys are sorted
	return sha256.Sum256(canon)
}

// authenticate runs one round of UIA for the request. It returns the
// session once a flow is complete; otherwise an error, usually a
// *uiaChallenge. rawAuth is the request's "auth" value (nil if absent).
func (s *Service) authenticate(c *gin.Context, req uiaRequest, rawAuth json.RawMessage) (*uiaSession, error) {
	op := uiaOp(c.Request)
	var hash [32]byte
	var user spec.UserID
	if !req.register {
		hash = bodyHash(req.body)
		user = req.dev.UserID
	}
	var auth authDict
	if len(rawAuth) > 0 && string(rawAuth) != "null" {
		if err := api.DecodeJSON(rawAuth, &auth); err != nil {
			if se, ok := err.(*spec.Error); ok {
				return nil, spec.BadJSON("auth: %s", se.Message)
			}
			return nil, err
		}
	} else {
		rawAuth = nil
	}
	var u *uiaSession
	if auth.Session != "" {
		u = s.uia.get(auth.Session)
		if u == nil {
			return nil, spec.InvalidParam("unknown or expired authentication session")
		}
		if u.op != op || u.user != user || u.bodyHash != hash {
			return nil, spec.Forbidden("this authentication session was started for another request")
		}
	} else {
		u = &uiaSession{op: op, user: user, bodyHash: hash, flows: req.flows}
		if req.dev != nil {
			u.device = req.dev.DeviceID
		}
		if err := s.uia.create(u); err != nil {
			return nil, err
		}
	}
	if rawAuth == nil {
		// A request without auth never succeeds, even if the session is
		// complete: the spec requires a 401 for it.
		return nil, s.status(u, req, nil)
	}
	if auth.Type == "" {
		// Only the session: report progress (stages done out of band).
		if s.isDone(u) {
			return u, nil
		}
		return nil, s.status(u, req, nil)
	}
	var already, accepted bool
	s.uia.lock(func() {
		already = slices.Contains(u.completed, auth.Type)
		accepted = u.accepts(auth.Type)
	})
	if already {
		// Completed stages cannot be retried: answer with the progress.
		if s.isDone(u) {
			return u, nil
		}
		return nil, s.status(u, req, nil)
	}
	if !accepted {
		return nil, s.status(u, req, spec.Forbidden("authentication stage %q is not expected now", auth.Type))
	}
	if err := s.runStage(c, u, req, &auth); err != nil {
		if errors.Is(err, errOtherUser) {
			return nil, err // not a failed attempt to retry: a plain 403
		}
		if errors.Is(err, errNotApprovedYet) {
			// Not a failure either: clients poll until the person has
			// approved, and stop at the first errcode.
			return nil, s.status(u, req, nil)
		}
		if se, ok := err.(*spec.Error); ok && se.Status == http.StatusUnauthorized || ok && se.Code == spec.ErrForbidden {
			return nil, s.status(u, req, se)
		}
		return nil, err
	}
	s.uia.lock(func() {
		if u.accepts(auth.Type) {
			u.completed = append(u.completed, auth.Type)
		}
	})
	if s.isDone(u) {
		return u, nil
	}
	return nil, s.status(u, req, nil)
}

func (s *Service) isDone(u *uiaSession) bool {
	var d bool
	s.uia.lock(func() { d = u.done() })
	return d
}

func (s *Service) status(u *uiaSession, req uiaRequest, failure *spec.Error) error {
	var ch *uiaChallenge
	s.uia.lock(func() {
		cp := *u
		cp.completed = slices.Clone(u.completed)
		ch = challenge(&cp, s.stageParams(&cp, req.params), failure)
	})
	return ch
}

// runStage checks one stage's credentials. A *spec.Error with M_FORBIDDEN
// means the attempt failed and may be retried.
func (s *Service) runStage(c *gin.Context, u *uiaSession, req uiaRequest, auth *authDict) error {
	switch auth.Type {
	case stageDummy:
		return nil
	case stageOAuth:
		// Completed out of band, on the account page; until then the
		// stage is pending.
		return errNotApprovedYet
	case stagePassword:
		if req.dev == nil {
			return spec.Forbidden("password authentication is not offered here")
		}
		who, err := s.resolveIdentifier(auth.Identifier, auth.User)
		if err != nil {
			return err
		}
		if who != req.dev.UserID {
			return errOtherUser
		}
		if _, err := s.checkPassword(c, who, auth.Password); err != nil {
			return err
		}
		return nil
	case stageRegToken:
		if !req.register {
			return spec.Forbidden("registration tokens are only accepted by /register")
		}
		if err := s.limiter.AllowIP(c, RateRegister); err != nil {
			return err
		}
		if err := s.reserveRegistrationToken(c.Request.Context(), u, auth.Token); err != nil {
			return err
		}
		return nil
	}
	return spec.Forbidden("unsupported authentication stage %q", auth.Type)
}

// reauthenticateBody is Reauthenticate for a request whose body holds
// nothing but the "auth" member: it reads the body itself.
func (s *Service) reauthenticateBody(c *gin.Context, dev *Device) (finish func(), err error) {
	body, err := api.ReadBody(c, 0)
	if err != nil {
		return nil, err
	}
	return s.Reauthenticate(c, dev, body)
}

// Reauthenticate is the user-interactive authentication of every endpoint
// that has the caller re-enter their password before a sensitive change:
// password change, deactivation, device deletion, login tokens, and (from
// keys) replacing cross-signing keys. body is the whole request body: the
// session is bound to it, and its "auth" member is the client's answer.
//
// Until the caller has authenticated, the error is for the handler to
// return: the 401 challenge (flows, params, session, completed) is already
// written. Once err is nil, finish uses the session up; call it after the
// change succeeded, so that a failed change can be retried in the session.
func (s *Service) Reauthenticate(c *gin.Context, dev *Device, body []byte) (finish func(), err error) {
	if dev == nil {
		return nil, spec.NewError(spec.ErrMissingToken, "missing access token")
	}
	var wrapper struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := api.DecodeJSON(body, &wrapper); err != nil {
		return nil, err
	}
	u, err := s.authenticate(c, uiaRequest{flows: passwordFlows, dev: dev, body: body}, wrapper.Auth)
	if err != nil {
		return nil, answerChallenge(c, err)
	}
	return func() { s.uia.finish(u.id) }, nil
}

// errOtherUser answers a password stage that names another user than the
// caller's: the request is refused outright (403, no new challenge), as the
// reference server does, since no retry can make it the caller's own.
var errOtherUser = spec.Forbidden("the identifier does not match the logged-in user")

// passwordFlows are the flows of endpoints that re-check the password.
var passwordFlows = [][]string{{stagePassword}}
