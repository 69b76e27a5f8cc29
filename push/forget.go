package push

import (
	"encoding/json"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetRoom deletes every push row about the room (a room purge,
// rooms.PurgeRoom): the notifications of its events, staged or not, the
// events' push records, the read positions that drive the unread counts,
// and the thread subscriptions; then forgets them in memory.
func (s *Service) ForgetRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	const events = `SELECT position FROM push_events WHERE room_id = $1`
	for _, d := range []struct{ table, query string }{
		{"push_notified", `DELETE FROM push_notified WHERE position IN (` + events + `)`},
		{"push_staged", `DELETE FROM push_staged WHERE position IN (` + events + `)`},
		{"push_events", `DELETE FROM push_events WHERE room_id = $1`},
		{"push_read", `DELETE FROM push_read WHERE room_id = $1`},
		{"push_changes", `DELETE FROM push_changes WHERE room_id = $1`},
		{"push_thread_subscriptions", `DELETE FROM push_thread_subscriptions WHERE room_id = $1`},
	} {
		if err := tx.Delete(removed, d.table, d.query, string(room)); err != nil {
			return err
		}
	}
	tx.AfterCommit(func() {
		s.counts.mu.Lock()
		for _, u := range s.counts.users {
			delete(u.rooms, room)
		}
		s.counts.mu.Unlock()
		s.subs.mu.Lock()
		for k := range s.subs.all {
			if k.room == room {
				delete(s.subs.all, k)
			}
		}
		s.subs.mu.Unlock()
	})
	return nil
}

// ForgetEvents deletes the notifications of purged events (a history
// purge, rooms.PurgeHistoryWith). The unread counts kept in memory are
// not recounted: they are right again after a restart.
func (s *Service) ForgetEvents(tx *storage.Tx, room spec.RoomID, positions []int64, removed storage.Removed) error {
	if len(positions) == 0 {
		return nil
	}
	list, err := json.Marshal(positions)
	if err != nil {
		return err
	}
	doomed := `SELECT value FROM json_each($1)`
	if tx.Dialect() == storage.Postgres {
		doomed = `SELECT value::BIGINT FROM jsonb_array_elements_text($1::jsonb)`
	}
	for _, d := range []struct{ table, query string }{
		{"push_notified", `DELETE FROM push_notified WHERE position IN (` + doomed + `)`},
		{"push_staged", `DELETE FROM push_staged WHERE position IN (` + doomed + `)`},
		{"push_events", `DELETE FROM push_events WHERE position IN (` + doomed + `)`},
	} {
		if err := tx.Delete(removed, d.table, d.query, string(list)); err != nil {
			return err
		}
	}
	return nil
}
