package admin

import (
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// purgeOptions are the forgetters of a room purge: every package named by
// ForgetRoomsWith, and admin's own rows.
func (s *Service) purgeOptions(dryRun bool) rooms.PurgeOptions {
	also := append([]rooms.RoomForgetter{}, s.forgetters...)
	return rooms.PurgeOptions{DryRun: dryRun, Also: append(also, adminRoomRows{s})}
}

// adminRoomRows forgets the admin package's rows about a purged room: a
// server-notices room that is gone is no longer anyone's (the next notice
// makes a new one), and the deletion's resume row goes with the purge it
// stood for. A block stays — it is what keeps the room ID from
// coming back — and so does the audit log, which records the purge.
type adminRoomRows struct{ s *Service }

func (a adminRoomRows) ForgetRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	if err := forgetNoticeRoom(tx, room, removed); err != nil {
		return err
	}
	if err := forgetPendingPurge(tx, room, removed); err != nil {
		return err
	}
	tx.AfterCommit(func() {
		a.s.mu.Lock()
		if user, ok := a.s.noticeRoom[room]; ok {
			delete(a.s.noticeRoom, room)
			if a.s.noticeRooms[user] == room {
				delete(a.s.noticeRooms, user)
			}
		}
		a.s.mu.Unlock()
	})
	return nil
}

// historyOptions are the forgetters of a history purge: the packages of
// ForgetRoomsWith that keep rows about single events.
func (s *Service) historyOptions(dryRun bool) rooms.PurgeOptions {
	opts := rooms.PurgeOptions{DryRun: dryRun}
	for _, f := range s.forgetters {
		if e, ok := f.(rooms.EventForgetter); ok {
			opts.Events = append(opts.Events, e)
		}
	}
	return opts
}
