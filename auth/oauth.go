package auth

import (
	"context"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// What the OAuth 2.0 authorisation server (package oauth) needs from
// accounts and sessions: it checks passwords at its sign-in page and hands
// out this package's devices and access tokens, so every authenticated route
// accepts its tokens and devices, the admin API and the CLI see its sessions
// like any other.

// SignIn checks a user name (localpart or full ID) and password as POST
// /login does, under the same rate limits: the login limit per client
// address and the failed-check limit per account and address. A wrong
// password, an unknown or deactivated user all get the same error.
func (s *Service) SignIn(c *gin.Context, user, password string) (spec.UserID, error) {
	if err := s.limiter.AllowIP(c, RateLogin); err != nil {
		return "", err
	}
	id, ok := s.lookupLocal(user)
	if !ok {
		return "", errBadLogin
	}
	if _, err := s.checkPassword(c, id, password); err != nil {
		return "", err
	}
	return id, nil
}

// IssueDeviceToken gives a device of user a new access token that expires
// after ttl, creating the device if it does not exist and revoking the
// device's earlier tokens. The account must be active and not locked.
func (s *Service) IssueDeviceToken(ctx context.Context, user spec.UserID, deviceID, displayName string, ttl time.Duration) (string, error) {
	if err := checkDeviceFields(deviceID, displayName); err != nil || deviceID == "" {
		return "", spec.InvalidParam("invalid device ID")
	}
	now := s.now()
	access := newToken(prefixAccess)
	row := tokenRow{hash: hashToken(access), user: user, deviceID: deviceID}
	if ttl > 0 {
		row.expires = now.Add(ttl).UnixMilli()
	}
	var existed bool
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		u, found, err := loadUser(tx, user)
		if err != nil {
			return err
		}
		if !found || u.Deactivated {
			return spec.NewError(spec.ErrUserDeactivated, "this account has been deactivated")
		}
		if s.policy != nil {
			if err := s.policy.CheckLogin(tx.Context(), user); err != nil {
				return err
			}
		}
		return s.addDeviceToken(tx, u, row, displayName, now, &existed)
	})
	if err != nil {
		return "", err
	}
	if !existed {
		s.deviceAdded(ctx, user, deviceID, displayName)
	}
	return access, nil
}

// HasDevice reports whether an active account has the device.
func (s *Service) HasDevice(ctx context.Context, user spec.UserID, deviceID string) (bool, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT count(*) FROM devices d JOIN users u ON u.user_id = d.user_id
		WHERE d.user_id = $1 AND d.device_id = $2 AND NOT u.deactivated`, string(user), deviceID).Scan(&n)
	return n > 0, err
}

// AccessTokenOwner names the user and device of a live access token.
func (s *Service) AccessTokenOwner(token string) (spec.UserID, string, bool) {
	sess, err := s.session(context.Background(), hashToken(token))
	if err != nil || sess == nil {
		return "", "", false
	}
	return sess.user, sess.deviceID, true
}

// SignUp creates an account from the OAuth 2.0 API's sign-up page, under
// the rules of POST /register: the registration setting, its rate limit,
// the user name and password rules, and in token mode an invite code
// (registration token) whose use is counted in the account's transaction.
func (s *Service) SignUp(c *gin.Context, username, password, inviteCode string) (spec.UserID, error) {
	if s.cfg.Registration == RegistrationClosed {
		return "", registrationDisabled()
	}
	if err := s.limiter.AllowIP(c, RateRegister); err != nil {
		return "", err
	}
	ctx := c.Request.Context()
	// The invite code first: without one, the page tells nothing, not
	// even whether a user name is taken.
	byToken := s.cfg.Registration != RegistrationOpen
	if byToken {
		if !validTokenString(inviteCode) {
			return "", errBadRegToken
		}
		ok, err := s.registrationTokenUsable(ctx, inviteCode)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", errBadRegToken
		}
	}
	id, err := s.availableUserID(ctx, username)
	if err != nil {
		return "", err
	}
	if err := checkNewPassword(password, s.cfg.MinPasswordLength); err != nil {
		return "", err
	}
	hash, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return "", err
	}
	now := time.Now()
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if byToken {
			// No UIA session holds a reservation: the token must have a
			// use left now.
			if err := consumeRegistrationToken(tx, "", inviteCode, now); err != nil {
				return err
			}
		}
		return s.insertAccount(tx, id, hash, false, id.Localpart())
	})
	if err != nil {
		return "", err
	}
	s.log.Info().Str("user_id", string(id)).Msg("account registered")
	return id, nil
}

// SignUpNeedsInviteCode reports whether new accounts need a registration
// token; ok is false when nobody may sign up.
func (s *Service) SignUpNeedsInviteCode() (needed, ok bool) {
	return s.cfg.Registration != RegistrationOpen, s.cfg.Registration != RegistrationClosed
}
