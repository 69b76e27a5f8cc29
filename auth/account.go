package auth

import (
	"context"
	"net/http"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// POST /_matrix/client/v3/account/password: changes the password after
// re-entering the current one (UIA). logout_devices (default true) deletes
// every other device; the caller's token is kept.
func (s *Service) changePassword(c *gin.Context) error {
	dev := DeviceFrom(c)
	body, err := api.ReadBody(c, 0)
	if err != nil {
		return err
	}
	var req struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := api.DecodeJSON(body, &req); err != nil {
		return err
	}
	if req.NewPassword == nil {
		return spec.MissingParam("new_password is required")
	}
	if err := checkNewPassword(*req.NewPassword, s.cfg.MinPasswordLength); err != nil {
		return err
	}
	finish, err := s.Reauthenticate(c, dev, body)
	if err != nil {
		return err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := s.SetPassword(c.Request.Context(), dev.UserID, *req.NewPassword, logout, dev.DeviceID); err != nil {
		return err
	}
	finish()
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// SetPassword replaces a user's password. With logoutDevices, every device
// but keepDevice is deleted and its tokens revoked, in the same transaction.
func (s *Service) SetPassword(ctx context.Context, user spec.UserID, password string, logoutDevices bool, keepDevice string) error {
	if err := checkNewPassword(password, s.cfg.MinPasswordLength); err != nil {
		return err
	}
	hash, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return err
	}
	var deleted []string
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`UPDATE users SET password_hash = $1 WHERE user_id = $2 AND NOT deactivated`, hash, string(user))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return spec.NotFound("no such user")
		}
		// Whoever knew the old password may hold a login token or a
		// half-finished UIA session: a new password ends them.
		if err := s.revokeGrants(tx, user); err != nil {
			return err
		}
		if !logoutDevices {
			return nil
		}
		deleted, err = queryStrings(tx, `DELETE FROM devices WHERE user_id = $1 AND device_id <> $2 RETURNING device_id`, string(user), keepDevice)
		if err != nil {
			return err
		}
		return s.forgetTokensOnCommit(tx, user, deleted)
	})
	if err != nil {
		return err
	}
	s.log.Info().Str("user_id", string(user)).Bool("logout_devices", logoutDevices).Msg("password changed")
	return s.devicesDeleted(ctx, user, deleted)
}

// POST /_matrix/client/v3/account/deactivate: deactivates the caller's
// account after re-entering the password (UIA).
func (s *Service) deactivate(c *gin.Context) error {
	dev := DeviceFrom(c)
	body, err := api.ReadBody(c, 0)
	if err != nil {
		return err
	}
	var req struct {
		IDServer string `json:"id_server"`
		Erase    bool   `json:"erase"`
	}
	if err := api.DecodeJSON(body, &req); err != nil {
		return err
	}
	finish, err := s.Reauthenticate(c, dev, body)
	if err != nil {
		return err
	}
	if err := s.Deactivate(c.Request.Context(), dev.UserID, req.Erase); err != nil {
		return err
	}
	finish()
	// No 3PIDs are ever bound, so there is nothing to unbind.
	c.JSON(http.StatusOK, gin.H{"id_server_unbind_result": "success"})
	return nil
}

// Deactivate closes an account for good: the password is wiped, every
// device and token is deleted, account data and OpenID tokens go, and with
// erase the profile too — all in one transaction. The row stays, so the
// user ID is never given out again. Then the user leaves every room and the
// devices' keys are deleted.
func (s *Service) Deactivate(ctx context.Context, user spec.UserID, erase bool) error {
	var deleted []string
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		q := `UPDATE users SET deactivated = TRUE, password_hash = NULL, is_admin = FALSE WHERE user_id = $1 AND NOT deactivated`
		if erase {
			q = `UPDATE users SET deactivated = TRUE, password_hash = NULL, is_admin = FALSE, displayname = NULL, avatar_url = NULL WHERE user_id = $1 AND NOT deactivated`
		}
		res, err := tx.Exec(q, string(user))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return spec.NotFound("no such active user")
		}
		if deleted, err = queryStrings(tx, `DELETE FROM devices WHERE user_id = $1 RETURNING device_id`, string(user)); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM account_data WHERE user_id = $1`, string(user)); err != nil {
			return err
		}
		if err := s.revokeGrants(tx, user); err != nil {
			return err
		}
		if err := s.changed(tx, changeAccount, user); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.tokens.removeDevice(user, "")
			s.adMu.Lock()
			delete(s.accountDataPos, user)
			delete(s.ignored, user)
			s.adMu.Unlock()
			s.profiles.absent(user)
		})
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info().Str("user_id", string(user)).Bool("erase", erase).Msg("account deactivated")
	ctx = context.WithoutCancel(ctx)
	if s.rooms != nil {
		if err := s.rooms.LeaveAllRooms(ctx, user); err != nil {
			return err
		}
	}
	if err := s.devicesDeleted(ctx, user, deleted); err != nil {
		return err
	}
	if erase && s.eraser != nil {
		return s.eraser.EraseAccount(ctx, user)
	}
	return nil
}

// GET /_matrix/client/v3/account/3pid: Chatalot keeps no third-party
// identifiers.
func (s *Service) get3PIDs(c *gin.Context) error {
	c.JSON(http.StatusOK, gin.H{"threepids": []any{}})
	return nil
}

// POST /_matrix/client/v3/account/3pid, …/add, …/bind: refused.
func (s *Service) add3PID(c *gin.Context) error {
	return spec.NewError(spec.ErrThreepidDenied, "this server does not keep third-party identifiers")
}

// POST /_matrix/client/v3/account/3pid/delete, …/unbind: nothing is ever
// bound, so there is nothing to remove.
func (s *Service) delete3PID(c *gin.Context) error {
	var req struct {
		Medium  string `json:"medium"`
		Address string `json:"address"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"id_server_unbind_result": "success"})
	return nil
}

// POST …/email/requestToken and …/msisdn/requestToken: no medium is
// supported.
func (s *Service) requestToken3PID(code spec.ErrCode) api.Handler {
	return func(c *gin.Context) error {
		return spec.NewError(code, "this server does not support email addresses or phone numbers")
	}
}
