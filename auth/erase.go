package auth

import (
	"context"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// AccountEraser erases, after a deactivation with erase, what the other
// packages keep about the account (admin's erasure: events, keys, push,
// media …). Deactivate calls it once the user has left every room.
type AccountEraser interface {
	EraseAccount(ctx context.Context, user spec.UserID) error
}

// ForgetUser deletes auth's rows about an erased account but the users row
// itself, which stays (deactivated, no password, no profile) so that the
// user ID is never given out again: devices and their tokens, account data
// (push rules, tags, settings), OpenID tokens; and wipes the profile, for
// an account deactivated earlier without erase.
func (s *Service) ForgetUser(tx *storage.Tx, user spec.UserID, removed storage.Removed) error {
	for _, d := range []struct{ table, query string }{
		{"access_tokens", `DELETE FROM access_tokens WHERE user_id = $1`},
		{"devices", `DELETE FROM devices WHERE user_id = $1`},
		{"account_data", `DELETE FROM account_data WHERE user_id = $1`},
		{"openid_tokens", `DELETE FROM openid_tokens WHERE user_id = $1`},
		{"auth_login_tokens", `DELETE FROM auth_login_tokens WHERE user_id = $1`},
	} {
		if err := tx.Delete(removed, d.table, d.query, string(user)); err != nil {
			return err
		}
	}
	res, err := tx.Exec(`UPDATE users SET displayname = NULL, avatar_url = NULL
		WHERE user_id = $1 AND deactivated AND (displayname IS NOT NULL OR avatar_url IS NOT NULL)`, string(user))
	if err != nil {
		return err
	}
	n, _ := res.RowsAffected()
	removed["profile"] += n
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
		s.dropMemoryGrants(user)
	})
	return nil
}

// AvatarInUse reports, inside a write, whether an active account has the
// mxc:// URI as its avatar (media deletions that keep profiles' media).
func (s *Service) AvatarInUse(tx *storage.Tx, uri string) (bool, error) {
	var n int
	err := tx.QueryRow(`SELECT count(*) FROM users WHERE avatar_url = $1 AND NOT deactivated`, uri).Scan(&n)
	return n > 0, err
}
