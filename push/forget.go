package push

import (
	"encoding/json"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
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
// purge, rooms.PurgeHistoryWith), and counts again, in the same write,
// the unread notifications of every user memory has counts for in the
// room: what memory tracked one by one may be among what went.
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
	s.counts.mu.RLock()
	var users []spec.UserID
	for u, c := range s.counts.users {
		if c.rooms[room] != nil {
			users = append(users, u)
		}
	}
	s.counts.mu.RUnlock()
	fresh := make(map[spec.UserID]map[string]tally, len(users))
	for _, u := range users {
		t, err := s.tallies(tx, u, room)
		if err != nil {
			return err
		}
		fresh[u] = t
	}
	change := tx.NextPosition()
	tx.AfterCommit(func() {
		s.counts.mu.Lock()
		for u, threads := range fresh {
			rc := s.counts.room(u, room)
			rc.threads = map[string]*threadUnread{}
			for t, c := range threads {
				rc.thread(t).untracked = c
				rc.lastRow[t] = c.upTo
			}
			s.counts.touch(u, rc, change)
		}
		s.counts.mu.Unlock()
		for u := range fresh {
			s.notify.Notify(change, wake.InRoom(wake.UnreadCounts, room), u)
		}
	})
	return nil
}
