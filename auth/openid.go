package auth

import (
	"database/sql"
	"errors"
	"net/http"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// OpenID tokens let a third party (a widget, Element Call's token service)
// confirm who a user is: the client hands the token over, and the third
// party asks this server's federation endpoint whose it is. They prove
// identity only and are good for nothing else.

// POST /_matrix/client/v3/user/{userId}/openid/request_token
func (s *Service) requestOpenIDToken(c *gin.Context) error {
	dev := DeviceFrom(c)
	if c.Param("userId") != string(dev.UserID) {
		return spec.Forbidden("you can only request OpenID tokens for yourself")
	}
	var req map[string]any
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	tok := newToken(prefixOpenID)
	now := time.Now()
	err := s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		if _, err := tx.Exec(`DELETE FROM openid_tokens WHERE expires_ts <= $1`, now.UnixMilli()); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			hashToken(tok), string(dev.UserID), now.Add(s.cfg.OpenIDTokenLifetime).UnixMilli())
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{
		"access_token":       tok,
		"token_type":         "Bearer",
		"matrix_server_name": string(s.serverName),
		"expires_in":         int64(s.cfg.OpenIDTokenLifetime / time.Second),
	})
	return nil
}

// GET /_matrix/federation/v1/openid/userinfo?access_token=: whose token it
// is, for the third party. The token is in the query string here by the
// spec's design (the caller is not a Matrix client).
func (s *Service) openIDUserinfo(c *gin.Context) error {
	tok := c.Query("access_token")
	if tok == "" {
		return spec.NewError(spec.ErrMissingToken, "access_token is required")
	}
	var user string
	err := s.db.QueryRow(c.Request.Context(), `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`,
		hashToken(tok), time.Now().UnixMilli()).Scan(&user)
	if errors.Is(err, sql.ErrNoRows) {
		return spec.NewError(spec.ErrUnknownToken, "access token unknown or expired")
	}
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"sub": user})
	return nil
}
