package push

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetUser deletes every push row of an erased user (account erasure):
// pushers, notifications, read positions, thread subscriptions and the
// user's interned number; then forgets them in memory. The push rules live
// in auth's account data and go with it.
func (s *Service) ForgetUser(tx *storage.Tx, user spec.UserID, removed storage.Removed) error {
	rows, err := tx.Query(`SELECT app_id, pushkey FROM pushers WHERE user_id = $1`, string(user))
	if err != nil {
		return err
	}
	var gone []pusherKey
	for rows.Next() {
		k := pusherKey{user: user}
		if err := rows.Scan(&k.appID, &k.pushkey); err != nil {
			rows.Close()
			return err
		}
		gone = append(gone, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	const nid = `SELECT nid FROM push_users WHERE user_id = $1`
	for _, d := range []struct{ table, query string }{
		{"pushers", `DELETE FROM pushers WHERE user_id = $1`},
		{"push_notified", `DELETE FROM push_notified WHERE user_nid IN (` + nid + `)`},
		{"push_users", `DELETE FROM push_users WHERE user_id = $1`},
		{"push_read", `DELETE FROM push_read WHERE user_id = $1`},
		{"push_changes", `DELETE FROM push_changes WHERE user_id = $1`},
		{"push_thread_subscriptions", `DELETE FROM push_thread_subscriptions WHERE user_id = $1`},
	} {
		if err := tx.Delete(removed, d.table, d.query, string(user)); err != nil {
			return err
		}
	}
	tx.AfterCommit(func() {
		for _, k := range gone {
			s.gateways.remove(k)
		}
		s.ids.mu.Lock()
		delete(s.ids.users, user)
		s.ids.mu.Unlock()
		s.counts.mu.Lock()
		delete(s.counts.users, user)
		s.counts.mu.Unlock()
		s.subs.mu.Lock()
		for k := range s.subs.all {
			if k.user == user {
				delete(s.subs.all, k)
			}
		}
		s.subs.mu.Unlock()
	})
	return nil
}
