package auth

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Login types.
const (
	loginPassword  = "m.login.password"
	loginTypeToken = "m.login.token"
	loginJWT       = "org.matrix.login.jwt"
	loginSSO       = "m.login.sso" // served by the OAuth 2.0 API's pages (package oauth)
)

// GET /_matrix/client/v3/login: the login types offered.
func (s *Service) getLoginFlows(c *gin.Context) error {
	var flows []gin.H
	if !s.cfg.NoPasswordLogin {
		flows = append(flows, gin.H{"type": loginPassword})
	}
	flows = append(flows, gin.H{"type": loginTypeToken, "get_login_token": true})
	if s.jwt != nil {
		flows = append(flows, gin.H{"type": loginJWT})
	}
	if s.oauth != nil {
		// Spec v1.18 "OAuth 2.0 aware clients" (MSC3824): clients that only
		// know the legacy API sign in and up on the OAuth 2.0 API's pages
		// through /login/sso/redirect, which answers an m.login.token.
		flows = append(flows, gin.H{"type": loginSSO, "oauth_aware_preferred": true})
	}
	c.JSON(http.StatusOK, gin.H{"flows": flows})
	return nil
}

type loginRequest struct {
	Type                     string      `json:"type"`
	Identifier               *identifier `json:"identifier"`
	User                     string      `json:"user"`
	Medium                   string      `json:"medium"`
	Address                  string      `json:"address"`
	Password                 *string     `json:"password"`
	Token                    string      `json:"token"`
	DeviceID                 string      `json:"device_id"`
	InitialDeviceDisplayName string      `json:"initial_device_display_name"`
	RefreshToken             bool        `json:"refresh_token"`
}

// POST /_matrix/client/v3/login: password, login token or JWT; answers an
// access token for a new (or the given) device. Failures are 403 M_FORBIDDEN
// without saying whether the user exists.
func (s *Service) login(c *gin.Context) error {
	if err := s.limiter.AllowIP(c, RateLogin); err != nil {
		return err
	}
	var req loginRequest
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if err := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	var user spec.UserID
	switch req.Type {
	case loginPassword:
		if s.cfg.NoPasswordLogin {
			return badLoginType()
		}
		if req.Identifier == nil && req.User == "" && req.Medium != "" {
			return spec.Forbidden("unknown third-party identifier")
		}
		if req.Password == nil {
			return spec.MissingParam("password is required")
		}
		id, err := s.resolveIdentifier(req.Identifier, req.User)
		if err != nil {
			return err
		}
		if _, err := s.checkPassword(c, id, *req.Password); err != nil {
			return err
		}
		user = id
	case loginTypeToken:
		id, ok, err := s.consumeLoginToken(c.Request.Context(), req.Token)
		if err != nil {
			return err
		}
		if !ok {
			return spec.Forbidden("invalid or expired login token")
		}
		user = id
	case loginJWT:
		if s.jwt == nil {
			return badLoginType()
		}
		sub, err := s.jwt.verify(req.Token)
		if err != nil {
			return spec.Forbidden("invalid JWT: %v", err)
		}
		id, ok := s.lookupLocal(sub)
		if !ok {
			return spec.Forbidden("the JWT subject is not a user of this server")
		}
		user = id
	case "":
		return spec.MissingParam("type is required")
	default:
		return badLoginType()
	}
	out, err := s.startSession(c.Request.Context(), user, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, out)
	return nil
}

func badLoginType() *spec.Error {
	return spec.NewError(spec.ErrUnknown, "unknown login type")
}

// loginResponse is the body of a successful login or registration.
type loginResponse struct {
	UserID     spec.UserID `json:"user_id"`
	DeviceID   string      `json:"device_id,omitempty"`
	HomeServer string      `json:"home_server"`
	issued
}

// resolveIdentifier finds the local user an identifier (or the legacy
// "user" field) names. Third-party identifiers are never known here.
func (s *Service) resolveIdentifier(id *identifier, legacyUser string) (spec.UserID, error) {
	user := legacyUser
	if id != nil {
		switch id.Type {
		case "m.id.user":
			user = id.User
		case "m.id.thirdparty", "m.id.phone":
			return "", spec.Forbidden("unknown third-party identifier")
		case "":
			return "", spec.MissingParam("identifier.type is required")
		default:
			return "", spec.InvalidParam("unknown identifier type %q", id.Type)
		}
	}
	if user == "" {
		return "", spec.MissingParam("identifier is required")
	}
	local, ok := s.lookupLocal(user)
	if !ok {
		return "", errBadLogin
	}
	return local, nil
}

var errBadLogin = spec.Forbidden("invalid user name or password")

// checkPassword verifies a user's password. Unknown users, deactivated
// users and wrong passwords all get the same 403 after the same work, so
// that the answer does not tell which accounts exist. Failed attempts are
// limited per account and client address. A hash with old parameters is replaced.
func (s *Service) checkPassword(c *gin.Context, user spec.UserID, password string) (userRow, error) {
	if err := s.limiter.checkAccount(c, user); err != nil {
		return userRow{}, err
	}
	u, found, err := loadUser(s.reader(c.Request.Context()), user)
	if err != nil {
		return u, err
	}
	if len(password) > MaxPasswordLength {
		password = password[:MaxPasswordLength] // cannot match; still costs a hash
	}
	ok, stale, err := s.hasher.Verify(c.Request.Context(), u.PasswordHash, password)
	if err != nil {
		return u, err
	}
	if !ok || !found || u.Deactivated {
		s.limiter.chargeAccount(c, user)
		return u, errBadLogin
	}
	if stale {
		s.rehash(c.Request.Context(), user, password)
	}
	return u, nil
}

// rehash upgrades a stored hash to the current parameters; failing only
// leaves the old hash in place.
func (s *Service) rehash(ctx context.Context, user spec.UserID, password string) {
	hash, err := s.hasher.Hash(ctx, password)
	if err == nil {
		err = s.db.Write(ctx, func(tx *storage.Tx) error { return setPasswordHash(tx, user, hash) })
	}
	if err != nil {
		s.log.Warn().Err(err).Msg("could not upgrade a password hash")
		return
	}
	s.log.Info().Str("user_id", string(user)).Msg("password hash upgraded to the current parameters")
}

// checkDeviceFields validates a client-chosen device ID and display name.
func checkDeviceFields(deviceID, displayName string) error {
	if len(deviceID) > maxDeviceIDLength || !printable(deviceID) {
		return spec.InvalidParam("device_id must be printable and at most %d bytes", maxDeviceIDLength)
	}
	if len(displayName) > maxDeviceNameLength || !utf8.ValidString(displayName) {
		return spec.InvalidParam("the device display name must be at most %d bytes of UTF-8", maxDeviceNameLength)
	}
	return nil
}

const (
	maxDeviceIDLength   = 255
	maxDeviceNameLength = 255
)

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// newDeviceID makes a device ID like other servers do: 10 capital letters.
func newDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := []byte(newToken("")[:10])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// startSession logs a user in on a device: a new device, or the given one
// (whose earlier tokens are revoked, as the spec allows). The user must be
// active at commit time.
func (s *Service) startSession(ctx context.Context, user spec.UserID, deviceID, displayName string, withRefresh bool) (*loginResponse, error) {
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	now := s.now()
	row, out := s.newTokenRow(user, deviceID, withRefresh, now)
	var existed bool
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		u, found, err := loadUser(tx, user)
		if err != nil {
			return err
		}
		if !found {
			return errBadLogin
		}
		if u.Deactivated {
			return spec.NewError(spec.ErrUserDeactivated, "this account has been deactivated")
		}
		if s.policy != nil { // a locked account gets no new token (admin.go)
			if err := s.policy.CheckLogin(tx.Context(), user); err != nil {
				return err
			}
		}
		return s.addDeviceToken(tx, u, row, displayName, now, &existed)
	})
	if err != nil {
		return nil, err
	}
	if !existed {
		s.deviceAdded(ctx, user, deviceID, displayName)
	}
	return &loginResponse{UserID: user, DeviceID: deviceID, HomeServer: string(s.serverName), issued: out}, nil
}

// addDeviceToken creates the device if needed, replaces its tokens with row
// and registers the cache updates for after the commit.
func (s *Service) addDeviceToken(tx *storage.Tx, u userRow, row tokenRow, displayName string, now time.Time, existed *bool) error {
	ex, err := insertDevice(tx, row.user, row.deviceID, displayName, now.UnixMilli())
	if err != nil {
		return err
	}
	*existed = ex
	var old []string
	if ex {
		if old, err = deleteDeviceTokens(tx, row.user, row.deviceID); err != nil {
			return err
		}
		if len(old) > 0 {
			if err := s.changed(tx, changeTokens, row.user); err != nil {
				return err
			}
		}
	}
	if err := insertToken(tx, row, now.UnixMilli()); err != nil {
		return err
	}
	tx.AfterCommit(func() {
		s.tokens.remove(old...)
		s.cacheToken(row, u.IsAdmin, now.UnixMilli())
	})
	return nil
}

func (s *Service) deviceAdded(ctx context.Context, user spec.UserID, deviceID, displayName string) {
	if s.devices == nil {
		return
	}
	if err := s.devices.DeviceAdded(context.WithoutCancel(ctx), user, deviceID, displayName); err != nil {
		s.log.Error().Err(err).Str("user_id", string(user)).Msg("device-added hook failed")
	}
}

// POST /_matrix/client/v1/login/get_token: a single-use m.login.token for
// the caller, after re-entering the password (always: the spec requires
// fresh consent for each new client).
func (s *Service) getLoginToken(c *gin.Context) error {
	dev := DeviceFrom(c)
	finish, err := s.reauthenticateBody(c, dev)
	if err != nil {
		return err
	}
	if err := s.limiter.AllowUser(c, dev, RateLogin); err != nil {
		return err
	}
	finish()
	tok := s.IssueLoginToken(dev.UserID)
	c.JSON(http.StatusOK, gin.H{"login_token": tok, "expires_in_ms": s.cfg.LoginTokenLifetime.Milliseconds()})
	return nil
}

// IssueLoginToken makes a single-use m.login.token for user, valid for
// LoginTokenLifetime: for /login/get_token, and for the OAuth 2.0 API's
// answer to /login/sso/redirect.
func (s *Service) IssueLoginToken(user spec.UserID) string {
	tok := newToken(prefixLogin)
	if s.cluster {
		// In the database, so that the login may reach another node.
		now := s.now()
		err := s.db.Write(context.Background(), func(tx *storage.Tx) error {
			if _, err := tx.Exec(`DELETE FROM auth_login_tokens WHERE expires_ts < $1`, now.UnixMilli()); err != nil {
				return err
			}
			_, err := tx.Exec(`INSERT INTO auth_login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
				hashToken(tok), string(user), now.Add(s.cfg.LoginTokenLifetime).UnixMilli())
			return err
		})
		if err == nil {
			return tok
		}
		// Kept in memory instead: it works on this node only.
		s.log.Warn().Err(err).Msg("cannot store a login token")
	}
	s.loginMu.Lock()
	defer s.loginMu.Unlock()
	now := time.Now()
	for h, t := range s.loginTokens {
		if now.After(t.expires) {
			delete(s.loginTokens, h)
		}
	}
	s.loginTokens[hashToken(tok)] = loginToken{user: user, expires: now.Add(s.cfg.LoginTokenLifetime)}
	return tok
}

// revokeGrants withdraws what an account handed out besides its devices'
// tokens, as part of revoking its sessions (log out everywhere, a password
// change, an admin reset, deactivation): outstanding m.login.token tokens,
// OpenID tokens, and user-interactive auth sessions with stages already
// passed. It runs inside tx; the in-memory grants go once tx commits.
func (s *Service) revokeGrants(tx *storage.Tx, user spec.UserID) error {
	if _, err := tx.Exec(`DELETE FROM openid_tokens WHERE user_id = $1`, string(user)); err != nil {
		return err
	}
	if s.cluster {
		if _, err := tx.Exec(`DELETE FROM auth_login_tokens WHERE user_id = $1`, string(user)); err != nil {
			return err
		}
	}
	tx.AfterCommit(func() { s.dropMemoryGrants(user) })
	return nil
}

// dropMemoryGrants is the in-memory half of revokeGrants.
func (s *Service) dropMemoryGrants(user spec.UserID) {
	s.loginMu.Lock()
	for h, t := range s.loginTokens {
		if t.user == user {
			delete(s.loginTokens, h)
		}
	}
	s.loginMu.Unlock()
	s.uia.dropUser(user)
}

// consumeLoginToken uses up a login token; each works once.
func (s *Service) consumeLoginToken(ctx context.Context, tok string) (spec.UserID, bool, error) {
	if tok == "" {
		return "", false, nil
	}
	h := hashToken(tok)
	if s.cluster {
		// Deleted in a write: of two nodes given the same token, one wins.
		var user string
		var expires int64
		found := false
		err := s.db.Write(ctx, func(tx *storage.Tx) error {
			err := tx.QueryRow(`DELETE FROM auth_login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts`, h).Scan(&user, &expires)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			found = err == nil
			return err
		})
		if err != nil {
			return "", false, err
		}
		if found {
			return spec.UserID(user), s.now().UnixMilli() <= expires, nil
		}
		// Else perhaps one this node could not store (IssueLoginToken).
	}
	s.loginMu.Lock()
	defer s.loginMu.Unlock()
	t, ok := s.loginTokens[h]
	delete(s.loginTokens, h)
	if !ok || time.Now().After(t.expires) {
		return "", false, nil
	}
	return t.user, true, nil
}

// POST /_matrix/client/v3/refresh: a new access token (and refresh token)
// for the refresh token's device. The old pair stays valid until the new
// one is first used, so a client that lost the answer can retry.
func (s *Service) refresh(c *gin.Context) error {
	var req struct {
		RefreshToken *string `json:"refresh_token"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.RefreshToken == nil {
		return spec.MissingParam("refresh_token is required")
	}
	now := s.now()
	rh := hashToken(*req.RefreshToken)
	var out issued
	err := s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		old, found, err := tokenByRefresh(tx, rh)
		if err != nil {
			return err
		}
		if !found {
			return unknownToken(false)
		}
		if old.refreshExpires != 0 && now.UnixMilli() >= old.refreshExpires {
			return unknownToken(true)
		}
		u, found, err := loadUser(tx, old.user)
		if err != nil {
			return err
		}
		if !found || u.Deactivated {
			return unknownToken(false)
		}
		if s.policy != nil { // a locked account gets no new token (admin.go)
			if err := s.policy.CheckLogin(tx.Context(), old.user); err != nil {
				return err
			}
		}
		var gone []string
		if old.parent != "" {
			// Using this refresh token retires the pair it replaced.
			if err := deleteToken(tx, old.parent); err != nil {
				return err
			}
			if err := clearParent(tx, old.hash); err != nil {
				return err
			}
			gone = append(gone, old.parent)
		}
		// A successor the client never used (it lost our answer) is replaced.
		children, err := deleteChildren(tx, old.hash)
		if err != nil {
			return err
		}
		gone = append(gone, children...)
		if len(gone) > 0 {
			if err := s.changed(tx, changeTokens, old.user); err != nil {
				return err
			}
		}
		row, iss := s.newTokenRow(old.user, old.deviceID, true, now)
		row.parent = old.hash
		if err := insertToken(tx, row, now.UnixMilli()); err != nil {
			return err
		}
		out = iss
		tx.AfterCommit(func() {
			s.tokens.remove(gone...)
			if sess := s.tokens.get(old.hash); sess != nil {
				sess.parent.Store(nil)
			}
			s.cacheToken(row, u.IsAdmin, now.UnixMilli())
		})
		return nil
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// POST /_matrix/client/v3/logout: revokes the token and deletes its device.
func (s *Service) logout(c *gin.Context) error {
	dev := DeviceFrom(c)
	if err := s.DeleteDevices(c.Request.Context(), dev.UserID, dev.DeviceID); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// POST /_matrix/client/v3/logout/all: revokes every token of the user and
// deletes every device.
func (s *Service) logoutAll(c *gin.Context) error {
	dev := DeviceFrom(c)
	ids, err := s.deviceIDs(c.Request.Context(), dev.UserID)
	if err != nil {
		return err
	}
	if err := s.removeDevices(c.Request.Context(), dev.UserID, true, ids...); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// GET /_matrix/client/v3/account/whoami
func (s *Service) whoami(c *gin.Context) error {
	dev := DeviceFrom(c)
	c.JSON(http.StatusOK, gin.H{"user_id": dev.UserID, "device_id": dev.DeviceID, "is_guest": false})
	return nil
}
