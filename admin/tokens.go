package admin

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"math/big"
	"net/http"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Registration tokens are Chatalot's invite codes (m.login.registration_token);
// auth stores and checks them, this file manages them.

// tokenAlphabet is what generated invite codes are made of: the letters
// and digits of a registration token's grammar ([A-Za-z0-9._~-]). Codes are
// typed and passed on the command line by people: one that began with "-"
// would read as a flag (chatalot admin token revoke -X…).
const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomToken(length int) (string, error) {
	b := make([]byte, length)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(tokenAlphabet))))
		if err != nil {
			return "", err
		}
		b[i] = tokenAlphabet[n.Int64()]
	}
	return string(b), nil
}

// CreateToken makes an invite code (API and CLI). An empty token is
// generated with length characters.
func (s *Service) CreateToken(ctx context.Context, who Actor, tok string, length int, usesAllowed *int64, expiry *int64) (auth.RegistrationToken, error) {
	if tok == "" {
		if length < 1 || length > 64 {
			return auth.RegistrationToken{}, spec.InvalidParam("length must be 1 to 64")
		}
		var err error
		if tok, err = randomToken(length); err != nil {
			return auth.RegistrationToken{}, err
		}
	}
	if expiry != nil && *expiry < s.now().UnixMilli() {
		return auth.RegistrationToken{}, spec.InvalidParam("expiry_time must not be in the past")
	}
	var exp time.Time
	if expiry != nil {
		exp = time.UnixMilli(*expiry)
	}
	actx, finish := s.audit(ctx, who, "create_registration_token", tok, map[string]any{"uses_allowed": usesAllowed, "expiry_time": expiry}, nil)
	t, err := s.auth.CreateRegistrationToken(actx, tok, usesAllowed, exp)
	return t, finish(err)
}

// Tokens lists the invite codes; valid, if set, keeps only those that can
// (true) or cannot (false) still register an account.
func (s *Service) Tokens(ctx context.Context, valid *bool) ([]auth.RegistrationToken, error) {
	all, err := s.auth.RegistrationTokens(ctx)
	if err != nil {
		return nil, err
	}
	out := []auth.RegistrationToken{}
	now := s.now().UnixMilli()
	for _, t := range all {
		usable := (t.ExpiryTime == nil || now < *t.ExpiryTime) && (t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed)
		if valid == nil || *valid == usable {
			out = append(out, t)
		}
	}
	return out, nil
}

// RevokeToken deletes an invite code (API and CLI): registrations that
// have not completed with it fail from now on.
func (s *Service) RevokeToken(ctx context.Context, who Actor, tok string) error {
	actx, finish := s.audit(ctx, who, "delete_registration_token", tok, nil, nil)
	return finish(s.auth.DeleteRegistrationToken(actx, tok))
}

// GET /_synapse/admin/v1/registration_tokens?valid=
func (s *Service) listTokens(c *gin.Context) error {
	valid, err := boolParam(c, "valid")
	if err != nil {
		return err
	}
	list, err := s.Tokens(c.Request.Context(), valid)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"registration_tokens": list})
	return nil
}

// POST /_synapse/admin/v1/registration_tokens/new {token, uses_allowed,
// expiry_time, length}
func (s *Service) newToken(c *gin.Context) error {
	var req struct {
		Token       *string `json:"token"`
		UsesAllowed *int64  `json:"uses_allowed"`
		ExpiryTime  *int64  `json:"expiry_time"`
		Length      *int    `json:"length"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	tok, length := "", 16
	if req.Token != nil {
		tok = *req.Token
		if tok == "" {
			return spec.InvalidParam("token must not be empty")
		}
	}
	if req.Length != nil {
		length = *req.Length
	}
	if req.UsesAllowed != nil && *req.UsesAllowed < 0 {
		return spec.InvalidParam("uses_allowed must be a non-negative integer or null")
	}
	t, err := s.CreateToken(c.Request.Context(), actor(c), tok, length, req.UsesAllowed, req.ExpiryTime)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, t)
	return nil
}

// GET /_synapse/admin/v1/registration_tokens/{token}
func (s *Service) getToken(c *gin.Context) error {
	t, found, err := s.auth.RegistrationTokenInfo(c.Request.Context(), c.Param("token"))
	if err != nil {
		return err
	}
	if !found {
		return spec.NotFound("no such registration token: %s", c.Param("token"))
	}
	c.JSON(http.StatusOK, t)
	return nil
}

// PUT /_synapse/admin/v1/registration_tokens/{token} {uses_allowed,
// expiry_time}: absent fields stay, null means unlimited or never.
func (s *Service) putToken(c *gin.Context) error {
	var req map[string]json.RawMessage
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	var u auth.RegistrationTokenUpdate
	details := map[string]any{}
	nullableInt := func(key string) (*int64, bool, error) {
		raw, present := req[key]
		if !present {
			return nil, false, nil
		}
		if string(raw) == "null" {
			details[key] = nil
			return nil, true, nil
		}
		var v int64
		if err := json.Unmarshal(raw, &v); err != nil || v < 0 {
			return nil, false, spec.InvalidParam("%s must be a non-negative integer or null", key)
		}
		details[key] = v
		return &v, true, nil
	}
	var err error
	if u.UsesAllowed, u.SetUsesAllowed, err = nullableInt("uses_allowed"); err != nil {
		return err
	}
	if u.ExpiryTime, u.SetExpiryTime, err = nullableInt("expiry_time"); err != nil {
		return err
	}
	if u.ExpiryTime != nil && *u.ExpiryTime < s.now().UnixMilli() {
		return spec.InvalidParam("expiry_time must not be in the past")
	}
	tok := c.Param("token")
	actx, finish := s.audit(c.Request.Context(), actor(c), "update_registration_token", tok, details, nil)
	t, err := s.auth.UpdateRegistrationToken(actx, tok, u)
	if err := finish(err); err != nil {
		return err
	}
	c.JSON(http.StatusOK, t)
	return nil
}

// DELETE /_synapse/admin/v1/registration_tokens/{token}
func (s *Service) deleteToken(c *gin.Context) error {
	if err := s.RevokeToken(c.Request.Context(), actor(c), c.Param("token")); err != nil {
		return err
	}
	answerOK(c)
	return nil
}
