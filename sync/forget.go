package sync

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetRoom deletes the room's receipts (a room purge, rooms.PurgeRoom).
func (s *Service) ForgetRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	if err := tx.Delete(removed, "receipts", `DELETE FROM receipts WHERE room_id = $1`, string(room)); err != nil {
		return err
	}
	tx.AfterCommit(func() {
		s.receipts.mu.Lock()
		delete(s.receipts.latest, room)
		s.receipts.mu.Unlock()
	})
	return nil
}
