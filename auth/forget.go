package auth

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetRoom deletes every user's account data about the room (tags,
// m.fully_read, client settings) in a room purge (rooms.PurgeRoom).
func (s *Service) ForgetRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	return tx.Delete(removed, "account_data", `DELETE FROM account_data WHERE room_id = $1`, string(room))
}
