package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// refreshPrefix makes a leaked refresh token recognisable, as auth's
// prefixes do for its tokens.
const refreshPrefix = "cho_r_"

// spentKeep is how long a spent refresh token is remembered: a reuse
// within it revokes the session.
const spentKeep = 30 * 24 * time.Hour

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in,omitempty"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

// POST /_chatalot/oauth2/token: the token endpoint (RFC 6749 sections 4.1.3
// and 6), for public clients: the client authenticates with nothing but its
// client_id, and the code with its PKCE verifier.
func (s *Service) token(c *gin.Context) error {
	if err := c.Request.ParseForm(); err != nil {
		return oauthError(c, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	for k, v := range c.Request.PostForm {
		if len(v) > 1 {
			return oauthError(c, http.StatusBadRequest, "invalid_request", "the parameter "+truncate(k, 40)+" is repeated")
		}
	}
	client, found, err := s.client(c, c.PostForm("client_id"))
	if err != nil {
		return err
	}
	if !found {
		return oauthError(c, http.StatusUnauthorized, "invalid_client", "unknown client_id")
	}
	grantType := c.PostForm("grant_type")
	if grantType != grantAuthorizationCode && grantType != grantRefreshToken && grantType != grantDeviceCode {
		return oauthError(c, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be authorization_code, refresh_token or "+grantDeviceCode)
	}
	if !slices.Contains(client.GrantTypes, grantType) {
		return oauthError(c, http.StatusBadRequest, "unauthorized_client", "the client did not register this grant type")
	}
	switch grantType {
	case grantAuthorizationCode:
		return s.exchangeCode(c, client)
	case grantDeviceCode:
		return s.pollDevice(c, client)
	}
	return s.refresh(c, client)
}

// exchangeCode turns an authorisation code into the session: the device is
// created now, with its access token and the first refresh token.
func (s *Service) exchangeCode(c *gin.Context, client clientMetadata) error {
	code, verifier, redirectURI := c.PostForm("code"), c.PostForm("code_verifier"), c.PostForm("redirect_uri")
	if code == "" || verifier == "" || redirectURI == "" {
		return oauthError(c, http.StatusBadRequest, "invalid_request", "code, code_verifier and redirect_uri are required")
	}
	h := hashSecret(code)
	s.mu.Lock()
	ac, ok := s.codes[h]
	var first authCode
	if ok {
		first = *ac
		ac.used = true // whatever follows, a code is used once
	}
	s.mu.Unlock()
	if !ok || s.now().After(first.expires) {
		return oauthError(c, http.StatusBadRequest, "invalid_grant", "unknown or expired code")
	}
	if first.used {
		// RFC 6749 section 4.1.2: a code used twice revokes what it
		// granted, the second party may have stolen it.
		if first.grantID != "" {
			s.revokeGrant(c.Request.Context(), first.grantID)
		}
		s.log.Warn().Str("client_id", client.ClientID).Msg("oauth: an authorisation code was used twice; its session is revoked")
		return oauthError(c, http.StatusBadRequest, "invalid_grant", "the code was already used")
	}
	if first.clientID != client.ClientID || first.redirectURI != redirectURI {
		return oauthError(c, http.StatusBadRequest, "invalid_grant", "the code was issued to another client or redirect URI")
	}
	if !verifierMatches(verifier, first.challenge) {
		return oauthError(c, http.StatusBadRequest, "invalid_grant", "the code verifier does not match the code challenge")
	}
	g := grantRow{id: newSecret(), clientID: client.ClientID, user: first.user, deviceID: first.deviceID, scope: first.scope}
	resp, err := s.startGrant(c.Request.Context(), g, first.clientName)
	if err != nil {
		var me *spec.Error
		if asSpecError(err, &me) {
			return oauthError(c, http.StatusBadRequest, "invalid_grant", me.Message)
		}
		return err
	}
	s.mu.Lock()
	if ac, ok := s.codes[h]; ok {
		ac.grantID = g.id
	}
	s.mu.Unlock()
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, resp)
	return nil
}

// verifierMatches checks a PKCE verifier (RFC 7636 section 4.1: 43 to 128
// unreserved characters) against its S256 challenge.
func verifierMatches(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 || !validDeviceID(verifier) {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	return equalSecret(base64.RawURLEncoding.EncodeToString(sum[:]), challenge)
}

// startGrant records a grant with its first refresh token, then gives the
// device its access token. A device has one session: earlier grants on it
// end.
func (s *Service) startGrant(ctx context.Context, g grantRow, deviceName string) (*tokenResponse, error) {
	refresh := refreshPrefix + newSecret()
	now := s.now().UnixMilli()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := deleteDeviceGrants(tx, g.user, g.deviceID); err != nil {
			return err
		}
		if err := insertGrant(tx, g, now); err != nil {
			return err
		}
		return insertRefreshToken(tx, hashSecret(refresh), g.id, stateCurrent, now)
	})
	if err != nil {
		return nil, err
	}
	access, err := s.accounts.IssueDeviceToken(ctx, g.user, g.deviceID, deviceName, s.cfg.AccessTokenLifetime)
	if err != nil {
		_ = s.db.Write(context.WithoutCancel(ctx), func(tx *storage.Tx) error { return deleteGrant(tx, g.id) })
		return nil, err
	}
	return &tokenResponse{
		AccessToken: access, TokenType: "Bearer", ExpiresIn: int64(s.cfg.AccessTokenLifetime.Seconds()),
		RefreshToken: refresh, Scope: g.scope,
	}, nil
}

// refresh is the refresh token grant with rotation (spec "Refresh token
// grant"): each use answers a new refresh token. The one just replaced
// stays usable until its successor is used, so that a client that lost the
// answer can retry; a token older than that is a replay, and ends the
// session.
func (s *Service) refresh(c *gin.Context, client clientMetadata) error {
	tok := c.PostForm("refresh_token")
	if tok == "" {
		return oauthError(c, http.StatusBadRequest, "invalid_request", "refresh_token is required")
	}
	ctx := c.Request.Context()
	newRefresh := refreshPrefix + newSecret()
	now := s.now()
	var g grantRow
	var replay, gone bool
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var state string
		var found bool
		var err error
		replay, gone = false, false
		g, state, found, err = grantByRefresh(tx, hashSecret(tok))
		if err != nil {
			return err
		}
		if !found {
			gone = true
			return nil
		}
		if g.clientID != client.ClientID {
			gone = true // another client's token: not this client's to use
			return nil
		}
		switch state {
		case stateSpent:
			replay = true
			return nil
		case stateCurrent:
			// The normal case: the current token becomes the previous one.
			if err := setRefreshState(tx, g.id, statePrevious, stateSpent); err != nil {
				return err
			}
			if err := setTokenState(tx, hashSecret(tok), statePrevious); err != nil {
				return err
			}
		case statePrevious:
			// A retry: the answer with the current token was lost, as that
			// token was never used. It is replaced.
			if err := setRefreshState(tx, g.id, stateCurrent, stateSpent); err != nil {
				return err
			}
		}
		if err := pruneSpent(tx, g.id, now.Add(-spentKeep).UnixMilli()); err != nil {
			return err
		}
		return insertRefreshToken(tx, hashSecret(newRefresh), g.id, stateCurrent, now.UnixMilli())
	})
	if err != nil {
		return err
	}
	if gone {
		return oauthError(c, http.StatusBadRequest, "invalid_grant", "unknown refresh token")
	}
	if replay {
		s.log.Warn().Str("user_id", string(g.user)).Str("client_id", g.clientID).Msg("oauth: a spent refresh token was used again; the session is revoked")
		s.revokeGrant(ctx, g.id)
		return oauthError(c, http.StatusBadRequest, "invalid_grant", "the refresh token was already used; the session is signed out")
	}
	// A device deleted elsewhere (log out, the devices list, the admin)
	// ends the session: it is not brought back by a refresh.
	has, err := s.accounts.HasDevice(ctx, g.user, g.deviceID)
	if err != nil {
		return err
	}
	if !has {
		s.revokeGrant(ctx, g.id)
		return oauthError(c, http.StatusBadRequest, "invalid_grant", "the session was signed out")
	}
	access, err := s.accounts.IssueDeviceToken(ctx, g.user, g.deviceID, "", s.cfg.AccessTokenLifetime)
	if err != nil {
		var me *spec.Error
		if asSpecError(err, &me) {
			return oauthError(c, http.StatusBadRequest, "invalid_grant", me.Message)
		}
		return err
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, tokenResponse{
		AccessToken: access, TokenType: "Bearer", ExpiresIn: int64(s.cfg.AccessTokenLifetime.Seconds()),
		RefreshToken: newRefresh, Scope: g.scope,
	})
	return nil
}

// revokeGrant ends a session: its device (with the device's tokens and
// keys) and its refresh tokens.
func (s *Service) revokeGrant(ctx context.Context, grantID string) {
	ctx = context.WithoutCancel(ctx)
	g, found, err := loadGrant(ctx, s.db, grantID)
	if err == nil && found {
		err = s.accounts.DeleteDevices(ctx, g.user, g.deviceID)
	}
	if err == nil {
		err = s.db.Write(ctx, func(tx *storage.Tx) error { return deleteGrant(tx, grantID) })
	}
	if err != nil {
		s.log.Error().Err(err).Msg("oauth: could not revoke a session")
	}
}

// DeviceDeleted ends the OAuth grants of a device deleted anywhere (log
// out, the devices API, the admin, deactivation), so that a refresh token
// of the old session cannot bring back a device made later with the same
// ID. auth calls it through its device hooks.
func (s *Service) DeviceDeleted(ctx context.Context, user spec.UserID, deviceID string) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error { return deleteDeviceGrants(tx, user, deviceID) })
}

// POST /_chatalot/oauth2/revoke: token revocation (RFC 7009). Either the
// access or the refresh token ends the whole session and deletes its
// device. Whoever holds a token may revoke it, whatever client_id it names
// (the spec asks so, for secret scanners); an unknown token is a success.
func (s *Service) revoke(c *gin.Context) error {
	if err := c.Request.ParseForm(); err != nil {
		return oauthError(c, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	tok := c.PostForm("token")
	if tok == "" {
		return oauthError(c, http.StatusBadRequest, "invalid_request", "token is required")
	}
	ctx := c.Request.Context()
	if user, device, ok := s.accounts.AccessTokenOwner(tok); ok {
		if err := s.accounts.DeleteDevices(ctx, user, device); err != nil {
			return err
		}
		err := s.db.Write(ctx, func(tx *storage.Tx) error { return deleteDeviceGrants(tx, user, device) })
		if err != nil {
			return err
		}
	} else {
		var g grantRow
		var found bool
		err := s.db.Write(ctx, func(tx *storage.Tx) error {
			var err error
			g, _, found, err = grantByRefresh(tx, hashSecret(tok))
			return err
		})
		if err != nil {
			return err
		}
		if found {
			s.revokeGrant(ctx, g.id)
		}
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

func asSpecError(err error, target **spec.Error) bool { return errors.As(err, target) }
