package schedule

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetUser drops the delayed events an erased user left waiting (account
// erasure): they would otherwise be sent in their name after the erasure.
func (s *Service) ForgetUser(tx *storage.Tx, user spec.UserID, removed storage.Removed) error {
	rows, err := tx.Query(`SELECT delay_id FROM delayed_events WHERE user_id = $1`, string(user))
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if err := tx.Delete(removed, "delayed_events", `DELETE FROM delayed_events WHERE user_id = $1`, string(user)); err != nil {
		return err
	}
	tx.AfterCommit(func() {
		s.mu.Lock()
		for _, id := range ids {
			s.timers.remove(id)
		}
		s.mu.Unlock()
	})
	return nil
}
