package schedule

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetRoom drops the delayed events waiting to be sent into the room
// (a room purge, rooms.PurgeRoom): the room they were for is gone.
func (s *Service) ForgetRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	return s.forget(tx, removed, "room_id", string(room))
}

// ForgetUser drops the delayed events an erased user left waiting (account
// erasure): they would otherwise be sent in their name after the erasure.
func (s *Service) ForgetUser(tx *storage.Tx, user spec.UserID, removed storage.Removed) error {
	return s.forget(tx, removed, "user_id", string(user))
}

// forget deletes the delayed events whose column (room_id or user_id, never
// a caller's string) is value, and stops their timers once that commits.
func (s *Service) forget(tx *storage.Tx, removed storage.Removed, column, value string) error {
	ids, err := storage.Strings[string](tx.Query(`SELECT delay_id FROM delayed_events WHERE `+column+` = $1`, value))
	if err != nil {
		return err
	}
	if err := tx.Delete(removed, "delayed_events", `DELETE FROM delayed_events WHERE `+column+` = $1`, value); err != nil {
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
