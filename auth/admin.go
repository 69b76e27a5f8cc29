package auth

import (
	"context"
	"database/sql"
	"errors"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// What the admin package needs from accounts beyond what clients use:
// listing accounts, reactivating one, changing a registration token, keeping
// the session cache in step with changes another process (the CLI) made, and
// a hook to refuse the requests of locked or suspended accounts.

// AccessPolicy lets the admin package refuse requests: auth asks it for
// every authenticated request and before issuing any new access token. Its
// answers come from memory; the middleware still reads no database.
type AccessPolicy interface {
	// CheckRequest runs after the access token is resolved, with the
	// route matched (c.FullPath); a non-nil error refuses the request.
	CheckRequest(c *gin.Context, dev *Device) error
	// CheckLogin runs before a login or refresh issues an access token.
	CheckLogin(ctx context.Context, user spec.UserID) error
}

// UserInfo is one account as the admin API shows it.
type UserInfo struct {
	UserID      spec.UserID
	IsAdmin     bool
	Deactivated bool
	HasPassword bool
	DisplayName string
	AvatarURL   string
	CreatedTS   int64 // unix ms
	LastSeenTS  int64 // unix ms of the latest use of any device; 0 if never
}

const userInfoColumns = `u.user_id, u.is_admin, u.deactivated, u.password_hash IS NOT NULL, u.displayname, u.avatar_url, u.created_ts,
	(SELECT max(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id) FROM users u`

func (s *Service) scanUserInfo(row interface{ Scan(...any) error }) (UserInfo, error) {
	var u UserInfo
	var dn, av sql.NullString
	var seen sql.NullInt64
	if err := row.Scan(&u.UserID, &u.IsAdmin, &u.Deactivated, &u.HasPassword, &dn, &av, &u.CreatedTS, &seen); err != nil {
		return u, err
	}
	u.DisplayName, u.AvatarURL, u.LastSeenTS = dn.String, av.String, seen.Int64
	// last_seen_ts is persisted lazily; memory knows the latest use.
	for _, ts := range s.tokens.lastSeen(u.UserID) {
		u.LastSeenTS = max(u.LastSeenTS, ts)
	}
	return u, nil
}

// Users lists every account, deactivated ones included, by user ID. The
// admin API filters, sorts and pages it; a community server has thousands
// of accounts at most.
func (s *Service) Users(ctx context.Context) ([]UserInfo, error) {
	rows, err := s.db.Query(ctx, `SELECT `+userInfoColumns+` ORDER BY u.user_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UserInfo
	for rows.Next() {
		u, err := s.scanUserInfo(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// User describes one account; found is false if it never existed.
func (s *Service) User(ctx context.Context, user spec.UserID) (UserInfo, bool, error) {
	u, err := s.scanUserInfo(s.db.QueryRow(ctx, `SELECT `+userInfoColumns+` WHERE u.user_id = $1`, string(user)))
	if errors.Is(err, sql.ErrNoRows) {
		return u, false, nil
	}
	return u, err == nil, err
}

// DeviceInfo is one device as the admin API shows it.
type DeviceInfo struct {
	DeviceID    string
	DisplayName *string
	LastSeenTS  *int64
}

// Devices lists a user's devices.
func (s *Service) Devices(ctx context.Context, user spec.UserID) ([]DeviceInfo, error) {
	devs, err := s.devicesJSON(ctx, user, "")
	if err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, len(devs))
	for i, d := range devs {
		out[i] = DeviceInfo{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenTS: d.LastSeenTS}
	}
	return out, nil
}

// Reactivate reopens a deactivated account with a new password (empty: the
// account cannot log in with a password). M_NOT_FOUND unless the account
// exists and is deactivated.
func (s *Service) Reactivate(ctx context.Context, user spec.UserID, password string) error {
	var hash any
	if password != "" {
		if err := checkNewPassword(password, s.cfg.MinPasswordLength); err != nil {
			return err
		}
		h, err := s.hasher.Hash(ctx, password)
		if err != nil {
			return err
		}
		hash = h
	}
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`UPDATE users SET deactivated = FALSE, password_hash = $1 WHERE user_id = $2 AND deactivated`, hash, string(user))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return spec.NotFound("no such deactivated user")
		}
		return nil
	})
	if err == nil {
		s.log.Info().Str("user_id", string(user)).Msg("account reactivated")
		s.reloadProfile(ctx, user)
	}
	return err
}

// RegistrationTokenUpdate says which fields of a registration token change;
// a nil value means unlimited uses or no expiry.
type RegistrationTokenUpdate struct {
	SetUsesAllowed bool
	UsesAllowed    *int64
	SetExpiryTime  bool
	ExpiryTime     *int64 // unix ms
}

// UpdateRegistrationToken changes a token's allowed uses or expiry and
// returns it. Allowed uses below the completed ones are refused
// (M_INVALID_PARAM); an unknown token is M_NOT_FOUND.
func (s *Service) UpdateRegistrationToken(ctx context.Context, tok string, u RegistrationTokenUpdate) (RegistrationToken, error) {
	if u.UsesAllowed != nil && *u.UsesAllowed < 0 {
		return RegistrationToken{}, spec.InvalidParam("uses_allowed must not be negative")
	}
	if u.ExpiryTime != nil && *u.ExpiryTime < 0 {
		return RegistrationToken{}, spec.InvalidParam("expiry_time must not be negative")
	}
	var out RegistrationToken
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		now := s.now()
		t, err := scanRegistrationToken(tx.QueryRow(`SELECT `+tokenColumns+` FROM registration_tokens t WHERE t.token = $2`, now.UnixMilli(), tok))
		if errors.Is(err, sql.ErrNoRows) {
			return spec.NotFound("no such registration token")
		}
		if err != nil {
			return err
		}
		if u.SetUsesAllowed {
			if u.UsesAllowed != nil && *u.UsesAllowed < t.Completed {
				return spec.InvalidParam("uses_allowed cannot be below the %d completed uses", t.Completed)
			}
			var v any
			if u.UsesAllowed != nil {
				v = *u.UsesAllowed
			}
			if _, err := tx.Exec(`UPDATE registration_tokens SET uses_allowed = $1 WHERE token = $2`, v, tok); err != nil {
				return err
			}
			t.UsesAllowed = u.UsesAllowed
		}
		if u.SetExpiryTime {
			var v any
			if u.ExpiryTime != nil {
				v = *u.ExpiryTime
			}
			if _, err := tx.Exec(`UPDATE registration_tokens SET expiry_ts = $1 WHERE token = $2`, v, tok); err != nil {
				return err
			}
			t.ExpiryTime = u.ExpiryTime
		}
		out = t
		return nil
	})
	return out, err
}

// RefreshSessions brings the in-memory sessions of a user in line with the
// database, after another process (the admin CLI) deactivated the account,
// deleted devices or changed the admin flag: tokens no longer stored stop
// working and the admin flag is reloaded. The running server calls it when
// it picks up the CLI's change (admin package). Grants kept only in this
// process's memory (login tokens, UIA sessions) go too: the CLI could not
// revoke them, and its password reset must end them as the API's does.
func (s *Service) RefreshSessions(ctx context.Context, user spec.UserID) error {
	s.dropMemoryGrants(user)
	u, found, err := loadUser(s.reader(ctx), user)
	if err != nil {
		return err
	}
	s.reloadProfile(ctx, user)
	if s.cluster {
		// One node picks the CLI's change up: it tells the others.
		kind := changeTokens
		if !found || u.Deactivated {
			kind = changeAccount
		}
		if err := s.db.Write(ctx, func(tx *storage.Tx) error { return s.changed(tx, kind, user) }); err != nil {
			return err
		}
	}
	if !found || u.Deactivated {
		s.tokens.removeDevice(user, "")
		return nil
	}
	rows, err := s.db.Query(ctx, `SELECT token_hash FROM access_tokens WHERE user_id = $1`, string(user))
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return err
		}
		live[h] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var gone []string
	s.tokens.mu.RLock()
	for h := range s.tokens.byUser[user] {
		if !live[h] {
			gone = append(gone, h)
		}
	}
	s.tokens.mu.RUnlock()
	s.tokens.remove(gone...)
	s.tokens.setAdmin(user, u.IsAdmin)
	return nil
}

// CheckNewPassword applies the password rules (length, UTF-8) without
// hashing, so that an admin request can be refused before it changes
// anything: M_WEAK_PASSWORD.
func (s *Service) CheckNewPassword(password string) error {
	return checkNewPassword(password, s.cfg.MinPasswordLength)
}

// ValidateProfileField checks a display name or avatar URL ("displayname"
// or "avatar_url") as PUT /profile would: M_INVALID_PARAM.
func ValidateProfileField(key, value string) error { return validateProfileField(key, value) }
