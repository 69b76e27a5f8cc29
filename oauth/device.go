package oauth

import (
	"crypto/rand"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// The device authorisation grant (RFC 8628; spec v1.18 "Device
// authorisation flow"): a device without a usable browser shows a short
// code or a QR code of a link; the person opens it on another device,
// signs in and allows; the first device polls the token endpoint.

const (
	grantDeviceCode  = "urn:ietf:params:oauth:grant-type:device_code"
	pathDevice       = prefix + "/device"
	pathDeviceLink   = prefix + "/auth/device"
	deviceInterval   = 5 * time.Second
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ" // RFC 8628 section 6.1: no vowels, no look-alikes
	userCodeLength   = 8
)

// deviceAuth is one device authorisation in progress, in memory.
type deviceAuth struct {
	client   clientMetadata
	scope    string
	deviceID string
	userCode string
	expires  time.Time
	interval time.Duration
	lastPoll time.Time
	decided  bool
	user     spec.UserID // set when allowed; empty and decided: denied
}

// newUserCode makes a code of 8 letters (about 34 bits), written
// XXXX-XXXX. Guessing one is bounded by its lifetime and the rate limit
// on the page that takes it.
func newUserCode() string {
	b := make([]byte, userCodeLength)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(userCodeAlphabet))))
		if err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		b[i] = userCodeAlphabet[n.Int64()]
	}
	return string(b[:4]) + "-" + string(b[4:])
}

// normalUserCode is what a person typed, as issued: upper case, dashes
// and spaces ignored.
func normalUserCode(s string) string {
	s = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(s))
	if len(s) != userCodeLength {
		return ""
	}
	return s[:4] + "-" + s[4:]
}

// POST /_chatalot/oauth2/device: the device authorisation request (RFC 8628
// section 3.1).
func (s *Service) deviceAuthorization(c *gin.Context) error {
	if err := s.limiter.AllowIP(c, auth.RateLogin); err != nil {
		return oauthError(c, http.StatusTooManyRequests, "slow_down", "too many requests; try again later")
	}
	if err := c.Request.ParseForm(); err != nil {
		return oauthError(c, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	client, found, err := s.client(c, c.PostForm("client_id"))
	if err != nil {
		return err
	}
	if !found {
		return oauthError(c, http.StatusUnauthorized, "invalid_client", "unknown client_id")
	}
	if !slices.Contains(client.GrantTypes, grantDeviceCode) {
		return oauthError(c, http.StatusBadRequest, "unauthorized_client", "the client did not register the device code grant")
	}
	scope, deviceID, err := parseScope(c.PostForm("scope"))
	if err != nil {
		return oauthError(c, http.StatusBadRequest, "invalid_scope", err.Error())
	}
	deviceCode := newSecret()
	d := &deviceAuth{client: client, scope: scope, deviceID: deviceID, expires: s.now().Add(s.cfg.RequestLifetime), interval: deviceInterval}
	s.mu.Lock()
	s.sweepLocked()
	if len(s.requests)+len(s.codes)+len(s.devices) >= s.cfg.MaxPending {
		s.mu.Unlock()
		return oauthError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "too many sign-ins in progress; try again later")
	}
	for {
		d.userCode = newUserCode()
		if _, taken := s.userCodes[d.userCode]; !taken {
			break
		}
	}
	h := hashSecret(deviceCode)
	s.devices[h] = d
	s.userCodes[d.userCode] = h
	s.mu.Unlock()
	link := s.base + pathDeviceLink
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{
		"device_code":               deviceCode,
		"user_code":                 d.userCode,
		"verification_uri":          link,
		"verification_uri_complete": link + "?user_code=" + url.QueryEscape(d.userCode),
		"expires_in":                int64(s.cfg.RequestLifetime.Seconds()),
		"interval":                  int64(deviceInterval.Seconds()),
	})
	return nil
}

// GET /_chatalot/oauth2/auth/device: the page where the person enters the
// code (or arrives with it from the link or QR code), then signs in and
// allows as in the code flow.
func (s *Service) deviceLink(c *gin.Context) error {
	typed := c.Query("user_code")
	if typed == "" {
		return s.renderPage(c, http.StatusOK, "device_code", pageData{Title: "Sign in a device", Server: string(s.serverName), Action: pathDeviceLink}, "")
	}
	// Each look-up costs a login attempt: the codes are short.
	if err := s.limiter.AllowIP(c, auth.RateLogin); err != nil {
		return s.renderPage(c, http.StatusTooManyRequests, "device_code", pageData{Title: "Sign in a device", Server: string(s.serverName), Action: pathDeviceLink,
			Error: "Too many attempts. Wait a minute, then try again."}, "")
	}
	code := normalUserCode(typed)
	s.mu.Lock()
	s.sweepLocked()
	var d *deviceAuth
	h, ok := s.userCodes[code]
	if ok {
		d = s.devices[h]
	}
	var snapshot deviceAuth
	if d != nil && !d.decided {
		snapshot = *d
	}
	s.mu.Unlock()
	if d == nil || snapshot.userCode == "" {
		return s.renderPage(c, http.StatusNotFound, "device_code", pageData{Title: "Sign in a device", Server: string(s.serverName), Action: pathDeviceLink,
			Error: "This code is not valid or has expired. Check it on your device, or start again there for a new one."}, "")
	}
	req := &authRequest{
		id: newSecret(), browser: s.browserID(c), csrf: newSecret(), client: snapshot.client,
		scope: snapshot.scope, deviceID: snapshot.deviceID, deviceCode: h, expires: snapshot.expires,
	}
	if !s.addRequest(req) {
		return s.errorPage(c, http.StatusServiceUnavailable, "The server is handling too many sign-ins; try again in a few minutes.")
	}
	return s.signInPage(c, req, "", http.StatusOK)
}

// decideDevice records the person's answer for a device authorisation and
// shows the end of the flow: the device finds out by polling.
func (s *Service) decideDevice(c *gin.Context, req authRequest, allow bool) error {
	s.mu.Lock()
	d, ok := s.devices[req.deviceCode]
	if ok && !d.decided && s.now().Before(d.expires) {
		d.decided = true
		if allow {
			d.user = req.user
		}
	} else {
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		return s.errorPage(c, http.StatusForbidden, "This code has expired or was already used. Start again on your device.")
	}
	msg := "The device was not signed in. You can close this page."
	if allow {
		s.log.Info().Str("user_id", string(req.user)).Str("client_id", req.client.ClientID).Msg("oauth: device authorisation granted")
		msg = "Done: " + s.clientName(req.client) + " on your other device is signing in as " + string(req.user) + ". You can close this page."
	}
	return s.renderPage(c, http.StatusOK, "done", pageData{Title: "Sign in a device", Error: msg}, "")
}

// pollDevice is the token request of the device code grant (RFC 8628
// section 3.4 and 3.5).
func (s *Service) pollDevice(c *gin.Context, client clientMetadata) error {
	h := hashSecret(c.PostForm("device_code"))
	now := s.now()
	s.mu.Lock()
	d, ok := s.devices[h]
	var snapshot deviceAuth
	var slow bool
	if ok {
		if d.client.ClientID != client.ClientID {
			ok = false
		} else {
			slow = !d.lastPoll.IsZero() && now.Sub(d.lastPoll) < d.interval
			if slow {
				d.interval += 5 * time.Second // RFC 8628 section 3.5
			}
			d.lastPoll = now
			snapshot = *d
			if d.decided || now.After(d.expires) {
				delete(s.devices, h)
				delete(s.userCodes, d.userCode)
			}
		}
	}
	s.mu.Unlock()
	switch {
	case !ok:
		return oauthError(c, http.StatusBadRequest, "invalid_grant", "unknown device code")
	case now.After(snapshot.expires):
		return oauthError(c, http.StatusBadRequest, "expired_token", "the device code expired")
	case !snapshot.decided && slow:
		return oauthError(c, http.StatusBadRequest, "slow_down", "poll less often")
	case !snapshot.decided:
		return oauthError(c, http.StatusBadRequest, "authorization_pending", "waiting for the person to allow")
	case snapshot.user == "":
		return oauthError(c, http.StatusBadRequest, "access_denied", "the person did not allow the device to sign in")
	}
	g := grantRow{id: newSecret(), clientID: client.ClientID, user: snapshot.user, deviceID: snapshot.deviceID, scope: snapshot.scope}
	resp, err := s.startGrant(c.Request.Context(), g, snapshot.client.ClientName)
	if err != nil {
		var me *spec.Error
		if asSpecError(err, &me) {
			return oauthError(c, http.StatusBadRequest, "invalid_grant", me.Message)
		}
		return err
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, resp)
	return nil
}
