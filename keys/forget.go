package keys

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetRoom deletes the backed-up room keys of the room in every user's
// key backup (a room purge, rooms.PurgeRoom): the messages they decrypt
// are gone from the server. Each backup that lost keys gets a new etag, so
// clients see it changed.
func (s *Service) ForgetRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	if _, err := tx.Exec(`UPDATE backup_versions SET etag = etag + 1
		WHERE EXISTS (SELECT 1 FROM backup_keys k WHERE k.user_id = backup_versions.user_id
			AND k.version = backup_versions.version AND k.room_id = $1)`, string(room)); err != nil {
		return err
	}
	return tx.Delete(removed, "backup_keys", `DELETE FROM backup_keys WHERE room_id = $1`, string(room))
}
