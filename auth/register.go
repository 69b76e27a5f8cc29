package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

type registerRequest struct {
	Auth                     json.RawMessage `json:"auth"`
	Username                 *string         `json:"username"`
	Password                 *string         `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

func (s *Service) registrationFlows() [][]string {
	if s.cfg.Registration == RegistrationOpen {
		return [][]string{{stageDummy}}
	}
	return [][]string{{stageRegToken}}
}

func registrationDisabled() *spec.Error {
	return spec.Forbidden("registration is disabled on this server")
}

// POST /_matrix/client/v3/register: creates an account after UIA (a
// registration token in token mode, m.login.dummy in open mode). The user
// name and password are checked before authentication, as the spec
// requires. The account, its first device and token, and the registration
// token's use are written in one transaction.
func (s *Service) register(c *gin.Context) error {
	switch c.Query("kind") {
	case "", "user":
	case "guest":
		return spec.Forbidden("guest accounts are not available on this server")
	default:
		return spec.InvalidParam("kind must be user or guest")
	}
	if s.cfg.Registration == RegistrationClosed {
		return registrationDisabled()
	}
	if err := s.limiter.AllowIP(c, RateRegister); err != nil {
		return err
	}
	var req registerRequest
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if err := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	if req.Username != nil && *req.Username != "" {
		if _, err := s.availableUserID(c.Request.Context(), *req.Username); err != nil {
			return err
		}
	}
	if req.Password != nil {
		if err := checkNewPassword(*req.Password, s.cfg.MinPasswordLength); err != nil {
			return err
		}
	}
	u, err := s.authenticate(c, uiaRequest{flows: s.registrationFlows(), register: true}, req.Auth)
	// Remember what this request gave, for later requests of the session.
	if u == nil && err != nil {
		if ch, ok := err.(*uiaChallenge); ok {
			if sess := s.uia.get(ch.body["session"].(string)); sess != nil {
				s.uia.lock(func() { rememberRegistration(sess, &req) })
			}
		}
		return answerChallenge(c, err)
	}
	var username, password string
	s.uia.lock(func() {
		rememberRegistration(u, &req)
		username, password = u.username, u.password
	})
	if password == "" {
		return spec.MissingParam("password is required")
	}
	if username == "" {
		username = strings.ToLower(newDeviceID())
	}
	id, err := s.availableUserID(c.Request.Context(), username)
	if err != nil {
		return err
	}
	hash, err := s.hasher.Hash(c.Request.Context(), password)
	if err != nil {
		return err
	}
	out, err := s.createRegisteredAccount(c.Request.Context(), u, id, hash, req)
	if err != nil {
		return err
	}
	s.uia.finish(u.id)
	s.log.Info().Str("user_id", string(id)).Msg("account registered")
	c.JSON(http.StatusOK, out)
	return nil
}

func rememberRegistration(u *uiaSession, req *registerRequest) {
	if req.Username != nil && *req.Username != "" {
		u.username = *req.Username
	}
	if req.Password != nil && *req.Password != "" {
		u.password = *req.Password
	}
}

// createRegisteredAccount is the one transaction of a registration.
func (s *Service) createRegisteredAccount(ctx context.Context, u *uiaSession, id spec.UserID, hash string, req registerRequest) (*loginResponse, error) {
	now := time.Now()
	out := &loginResponse{UserID: id, HomeServer: string(s.serverName)}
	var row tokenRow
	if !req.InhibitLogin {
		out.DeviceID = req.DeviceID
		if out.DeviceID == "" {
			out.DeviceID = newDeviceID()
		}
		row, out.issued = s.newTokenRow(id, out.DeviceID, req.RefreshToken, now)
	}
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if u.regToken != "" {
			if err := consumeRegistrationToken(tx, u.id, u.regToken, now); err != nil {
				return err
			}
		}
		if err := s.insertAccount(tx, id, hash, false, id.Localpart()); err != nil {
			return err
		}
		if req.InhibitLogin {
			return nil
		}
		var existed bool
		return s.addDeviceToken(tx, userRow{ID: id}, row, req.InitialDeviceDisplayName, now, &existed)
	})
	if err != nil {
		return nil, err
	}
	if !req.InhibitLogin {
		s.deviceAdded(ctx, id, out.DeviceID, req.InitialDeviceDisplayName)
	}
	return out, nil
}

// availableUserID checks a requested user name for registration: grammar,
// reserved names, and not taken (nor ever used).
func (s *Service) availableUserID(ctx context.Context, username string) (spec.UserID, error) {
	id, err := s.newUserID(username)
	if err != nil {
		return "", err
	}
	if s.reserved[id.Localpart()] {
		return "", spec.NewError(spec.ErrUserInUse, "this user name is reserved")
	}
	_, found, err := loadUser(s.reader(ctx), id)
	if err != nil {
		return "", err
	}
	if found {
		return "", spec.NewError(spec.ErrUserInUse, "the user ID is already taken")
	}
	return id, nil
}

// GET /_matrix/client/v3/register/available?username=
func (s *Service) registerAvailable(c *gin.Context) error {
	if s.cfg.Registration == RegistrationClosed {
		return registrationDisabled()
	}
	if err := s.limiter.AllowIP(c, RateRegister); err != nil {
		return err
	}
	name, ok := c.GetQuery("username")
	if !ok {
		return spec.MissingParam("username is required")
	}
	if _, err := s.availableUserID(c.Request.Context(), name); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"available": true})
	return nil
}

// GET /_matrix/client/v1/register/m.login.registration_token/validity?token=
func (s *Service) tokenValidity(c *gin.Context) error {
	if s.cfg.Registration == RegistrationClosed {
		return registrationDisabled()
	}
	if err := s.limiter.AllowIP(c, RateRegister); err != nil {
		return err
	}
	tok, ok := c.GetQuery("token")
	if !ok {
		return spec.MissingParam("token is required")
	}
	valid := false
	if validTokenString(tok) {
		var err error
		if valid, err = s.registrationTokenUsable(c.Request.Context(), tok); err != nil {
			return err
		}
	}
	c.JSON(http.StatusOK, gin.H{"valid": valid})
	return nil
}

// validTokenString checks the opaque identifier grammar (at most 64
// characters of [A-Za-z0-9._~-]).
func validTokenString(t string) bool {
	if len(t) == 0 || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._~-", c) >= 0) {
			return false
		}
	}
	return true
}

var errBadRegToken = spec.Forbidden("invalid, expired or used-up registration token")

// RegistrationToken is an invite code as admins see it.
type RegistrationToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"` // unix ms
}

func (s *Service) registrationTokenUsable(ctx context.Context, tok string) (bool, error) {
	t, found, err := s.RegistrationTokenInfo(ctx, tok)
	if err != nil || !found {
		return false, err
	}
	return t.usable(time.Now()), nil
}

func (t RegistrationToken) usable(now time.Time) bool {
	if t.ExpiryTime != nil && now.UnixMilli() >= *t.ExpiryTime {
		return false
	}
	return t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed
}

const tokenColumns = `t.token, t.uses_allowed, t.completed, t.expiry_ts,
	(SELECT count(*) FROM registration_token_reservations r WHERE r.token = t.token AND r.expires_ts > $1)`

func scanRegistrationToken(row interface{ Scan(...any) error }) (RegistrationToken, error) {
	var t RegistrationToken
	var uses, expiry sql.NullInt64
	err := row.Scan(&t.Token, &uses, &t.Completed, &expiry, &t.Pending)
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if expiry.Valid {
		t.ExpiryTime = &expiry.Int64
	}
	return t, err
}

// RegistrationTokenInfo reads one registration token.
func (s *Service) RegistrationTokenInfo(ctx context.Context, tok string) (RegistrationToken, bool, error) {
	t, err := scanRegistrationToken(s.db.QueryRow(ctx, `SELECT `+tokenColumns+` FROM registration_tokens t WHERE t.token = $2`, time.Now().UnixMilli(), tok))
	if errors.Is(err, sql.ErrNoRows) {
		return t, false, nil
	}
	return t, err == nil, err
}

// RegistrationTokens lists every registration token.
func (s *Service) RegistrationTokens(ctx context.Context) ([]RegistrationToken, error) {
	rows, err := s.db.Query(ctx, `SELECT `+tokenColumns+` FROM registration_tokens t ORDER BY t.created_ts, t.token`, time.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RegistrationToken
	for rows.Next() {
		t, err := scanRegistrationToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// CreateRegistrationToken makes an invite code. An empty token is
// generated (16 characters); usesAllowed nil means unlimited, expiry zero
// means never.
func (s *Service) CreateRegistrationToken(ctx context.Context, tok string, usesAllowed *int64, expiry time.Time) (RegistrationToken, error) {
	if tok == "" {
		tok = newToken("")[:16]
	}
	if !validTokenString(tok) {
		return RegistrationToken{}, spec.InvalidParam("a registration token is 1-64 characters of A-Z, a-z, 0-9 and ._~-")
	}
	if usesAllowed != nil && *usesAllowed < 0 {
		return RegistrationToken{}, spec.InvalidParam("uses_allowed must not be negative")
	}
	t := RegistrationToken{Token: tok, UsesAllowed: usesAllowed}
	var exp any
	if !expiry.IsZero() {
		ms := expiry.UnixMilli()
		t.ExpiryTime, exp = &ms, ms
	}
	var uses any
	if usesAllowed != nil {
		uses = *usesAllowed
	}
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`INSERT INTO registration_tokens (token, uses_allowed, expiry_ts, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (token) DO NOTHING`, tok, uses, exp, time.Now().UnixMilli())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return spec.InvalidParam("this registration token already exists")
		}
		return nil
	})
	return t, err
}

// DeleteRegistrationToken removes an invite code (and its reservations).
func (s *Service) DeleteRegistrationToken(ctx context.Context, tok string) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`DELETE FROM registration_tokens WHERE token = $1`, tok)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return spec.NotFound("no such registration token")
		}
		return nil
	})
}

// reserveRegistrationToken is the m.login.registration_token stage: the
// token must exist, not be expired, and have a use left counting the uses
// other sessions have reserved; this session then reserves one. Checking and
// reserving happen in one write, and writes are serialised, so two sessions
// can never take the last use.
func (s *Service) reserveRegistrationToken(ctx context.Context, u *uiaSession, tok string) error {
	if !validTokenString(tok) {
		return errBadRegToken
	}
	now := time.Now()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`DELETE FROM registration_token_reservations WHERE expires_ts <= $1`, now.UnixMilli()); err != nil {
			return err
		}
		if err := checkTokenCapacity(tx, tok, now); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO registration_token_reservations (session, token, expires_ts) VALUES ($1, $2, $3)`,
			u.id, tok, u.expires.UnixMilli())
		return err
	})
	if err != nil {
		return err
	}
	s.uia.lock(func() { u.regToken = tok })
	return nil
}

func checkTokenCapacity(tx *storage.Tx, tok string, now time.Time) error {
	t, err := scanRegistrationToken(tx.QueryRow(`SELECT `+tokenColumns+` FROM registration_tokens t WHERE t.token = $2`, now.UnixMilli(), tok))
	if errors.Is(err, sql.ErrNoRows) {
		return errBadRegToken
	}
	if err != nil {
		return err
	}
	if !t.usable(now) {
		return errBadRegToken
	}
	return nil
}

// consumeRegistrationToken turns the session's reservation into a
// completed use, inside the account's transaction. If the reservation
// lapsed, the token must still have a use left.
func consumeRegistrationToken(tx *storage.Tx, session, tok string, now time.Time) error {
	gone, err := queryStrings(tx, `DELETE FROM registration_token_reservations WHERE session = $1 RETURNING token`, session)
	if err != nil {
		return err
	}
	if len(gone) == 0 {
		if err := checkTokenCapacity(tx, tok, now); err != nil {
			return err
		}
	}
	res, err := tx.Exec(`UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1`, tok)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errBadRegToken // deleted meanwhile
	}
	return nil
}

// Shared-secret registration: the scheme Synapse documents for
// /_synapse/admin/v1/register, which bots, bridges and test tools use. A
// nonce from GET is valid once, for a minute; POST carries
// HMAC-SHA1(secret, nonce NUL username NUL password NUL admin|notadmin
// [NUL user_type]) in hex.

const nonceLifetime = time.Minute

// GET /_synapse/admin/v1/register: a fresh nonce.
func (s *Service) sharedSecretNonce(c *gin.Context) error {
	if s.cfg.SharedSecret == "" {
		return spec.Forbidden("shared-secret registration is not enabled")
	}
	nonce := newToken("")[:32]
	now := time.Now()
	s.nonceMu.Lock()
	for n, t := range s.nonces {
		if now.Sub(t) > nonceLifetime {
			delete(s.nonces, n)
		}
	}
	if len(s.nonces) >= 10000 {
		s.nonceMu.Unlock()
		return spec.LimitExceeded(nonceLifetime.Milliseconds())
	}
	s.nonces[nonce] = now
	s.nonceMu.Unlock()
	c.JSON(http.StatusOK, gin.H{"nonce": nonce})
	return nil
}

// POST /_synapse/admin/v1/register: creates an account (admin or not) when
// the MAC proves knowledge of the shared secret; answers a logged-in
// session like /register.
func (s *Service) sharedSecretRegister(c *gin.Context) error {
	if s.cfg.SharedSecret == "" {
		return spec.Forbidden("shared-secret registration is not enabled")
	}
	var req struct {
		Nonce       string  `json:"nonce"`
		Username    string  `json:"username"`
		DisplayName string  `json:"displayname"`
		Password    string  `json:"password"`
		Admin       bool    `json:"admin"`
		UserType    *string `json:"user_type"`
		MAC         string  `json:"mac"`
		// InhibitLogin creates the account without a device or token.
		InhibitLogin bool `json:"inhibit_login"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	s.nonceMu.Lock()
	issued, ok := s.nonces[req.Nonce]
	delete(s.nonces, req.Nonce)
	s.nonceMu.Unlock()
	if !ok || time.Since(issued) > nonceLifetime {
		return spec.InvalidParam("unrecognised nonce")
	}
	if strings.ContainsRune(req.Username, 0) || strings.ContainsRune(req.Password, 0) {
		return spec.InvalidParam("user name and password must not contain NUL")
	}
	mac := hmac.New(sha1.New, []byte(s.cfg.SharedSecret))
	mac.Write([]byte(req.Nonce + "\x00" + req.Username + "\x00" + req.Password + "\x00"))
	if req.Admin {
		mac.Write([]byte("admin"))
	} else {
		mac.Write([]byte("notadmin"))
	}
	if req.UserType != nil {
		mac.Write([]byte("\x00" + *req.UserType))
	}
	want := mac.Sum(nil)
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return spec.Forbidden("HMAC incorrect")
	}
	if req.DisplayName != "" && len(req.DisplayName) > maxDisplayNameLength {
		return spec.InvalidParam("displayname is too long")
	}
	id, err := s.CreateUser(c.Request.Context(), req.Username, req.Password, req.Admin)
	if err != nil {
		return err
	}
	if req.DisplayName != "" {
		if err := s.setProfileField(c.Request.Context(), id, "displayname", req.DisplayName); err != nil {
			return err
		}
	}
	if req.InhibitLogin {
		c.JSON(http.StatusOK, loginResponse{UserID: id, HomeServer: string(s.serverName)})
		return nil
	}
	out, err := s.startSession(c.Request.Context(), id, "", "", false)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, out)
	return nil
}
