package schedule

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetRoom drops the delayed events waiting to be sent into the room
// (a room purge, rooms.PurgeRoom): the room they were for is gone.
func (s *Service) ForgetRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	rows, err := tx.Query(`SELECT delay_id FROM delayed_events WHERE room_id = $1`, string(room))
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
	if err := tx.Delete(removed, "delayed_events", `DELETE FROM delayed_events WHERE room_id = $1`, string(room)); err != nil {
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
