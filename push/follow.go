package push

import (
	"context"
	"fmt"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
)

// Following the other nodes of a cluster (docs/scaling.md). What push keeps
// in memory moves with the other nodes' writes in three ways:
//
//   - notifications by position: an event's rows are staged under its
//     position (push_staged) until a flush moves them, so the follower reads
//     the staged rows of the range and counts them as a local commit does.
//     Rows already moved are in push_notified, which has no index leading
//     with the position (migration 3 saves that write per member): they are
//     read user by user, which a node that follows within moments of the
//     commit rarely needs;
//   - read positions have no position of their own: the writing node stores
//     a push_changes row at the receipt's (or the sender's event's)
//     position, and the follower recounts that user's room from the
//     database, as at start-up;
//   - push rules are m.push_rules account data, which has a position: the
//     follower compiles what any node stored in the range.
//
// Outside a cluster none of this runs and no change row is written.

// changesKept is how long a change row is kept: followers read them within
// moments, and a node that was away longer loads everything at start.
const changesKept = 24 * time.Hour

// readChanged stores, on a cluster node, that a user's read position in a
// room moved at pos.
func (s *Service) readChanged(tx *storage.Tx, user spec.UserID, room spec.RoomID, pos int64) error {
	if s.db.Node() == "" {
		return nil
	}
	now := s.now()
	if _, err := tx.Exec(`DELETE FROM push_changes WHERE created_ts < $1`, now.Add(-changesKept).UnixMilli()); err != nil {
		return err
	}
	_, err := tx.Exec(`INSERT INTO push_changes (position, user_id, room_id, created_ts) VALUES ($1, $2, $3, $4)`,
		pos, string(user), string(room), now.UnixMilli())
	return err
}

// loadCountsFollowing loads the counts inside a write and registers the
// follower there: the writer holds the stream position's lock
// (storage/cluster.go), so the follower starts exactly where the load ends.
func (s *Service) loadCountsFollowing(ctx context.Context) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := s.loadCounts(tx.Query); err != nil {
			return err
		}
		s.db.OnFollow(s.follow)
		return nil
	})
}

// followedRow is one notification another node stored.
type followedRow struct {
	pos    int64
	nid    int64
	user   spec.UserID
	flags  int64
	room   spec.RoomID
	thread string
}

type userRoom struct {
	user spec.UserID
	room spec.RoomID
}

// reloaded is one (user, room) recounted from the database.
type reloaded struct {
	pos    int64 // the newest change
	marks  map[string]int64
	counts map[string]tally
}

const followedRowsSQL = `SELECT n.position, u.nid, u.user_id, n.flags, e.room_id, e.thread_id
	FROM %s JOIN push_users u ON u.nid = n.user_nid JOIN push_events e ON e.position = n.position
	WHERE n.position > $1 AND n.position <= $2`

// follow applies what other nodes committed at positions in (from, to]
// (a storage.Follower). It reads everything before changing memory, so a
// failed follow changes nothing.
func (s *Service) follow(tx *storage.Tx, from, to int64) error {
	rows, err := s.followedRows(tx, from, to)
	if err != nil {
		return fmt.Errorf("read followed notifications: %w", err)
	}
	pairs, err := s.followedReads(tx, from, to)
	if err != nil {
		return fmt.Errorf("read followed read positions: %w", err)
	}
	ruleUsers, ruleContents, err := auth.GlobalAccountDataBetween(tx, pushRulesType, from, to)
	if err != nil {
		return fmt.Errorf("read followed push rules: %w", err)
	}

	changed := map[userRoom]int64{}
	fresh := &newInterned{users: map[spec.UserID]int64{}}
	s.counts.mu.Lock()
	for _, r := range rows {
		fresh.users[r.user] = r.nid
		k := userRoom{r.user, r.room}
		if _, ok := pairs[k]; ok {
			continue // recounted below, this row with the rest
		}
		counted := r.flags&flagCounted != 0
		if counted {
			rc := s.counts.room(r.user, r.room)
			rc.lastRow[r.thread] = max(rc.lastRow[r.thread], r.pos)
		}
		s.counts.notified(&notificationRow{user: r.user, room: r.room, thread: r.thread, ev: &rooms.Event{Position: r.pos},
			highlight: r.flags&flagHighlight != 0, counted: counted})
		changed[k] = max(changed[k], r.pos)
	}
	for k, re := range pairs {
		rc := s.counts.room(k.user, k.room)
		rc.marks = re.marks
		rc.threads = map[string]*threadUnread{}
		for t, c := range re.counts {
			// As at start-up: counts, not one by one (threadUnread).
			rc.thread(t).untracked = c
			rc.lastRow[t] = max(rc.lastRow[t], c.upTo)
		}
		s.counts.touch(k.user, rc, re.pos)
		changed[k] = max(changed[k], re.pos)
	}
	s.counts.mu.Unlock()
	s.ids.add(fresh)

	for i, u := range ruleUsers {
		set := rulesFromAccountData(ruleContents[i], u)
		s.rules.Store(u, &userRules{set: set, compiled: compile(set)})
	}
	for k, pos := range changed {
		s.notify.Notify(pos, wake.InRoom(wake.UnreadCounts, k.room), k.user)
	}
	return nil
}

// followedRows reads the notifications stored at positions in (from, to].
func (s *Service) followedRows(tx *storage.Tx, from, to int64) ([]followedRow, error) {
	out, err := scanFollowedRows(tx, fmt.Sprintf(followedRowsSQL, "push_staged_rows n"), from, to)
	if err != nil {
		return nil, err
	}
	// Events of the range whose rows a flush moved already.
	var moved bool
	if err := tx.QueryRow(`SELECT EXISTS (SELECT 1 FROM push_events e WHERE e.position > $1 AND e.position <= $2
		AND NOT EXISTS (SELECT 1 FROM push_staged s WHERE s.position = e.position))`, from, to).Scan(&moved); err != nil {
		return nil, err
	}
	if !moved {
		return out, nil
	}
	// One probe of push_notified's (user, position) key per user.
	more, err := scanFollowedRows(tx, `SELECT n.position, u.nid, u.user_id, n.flags, e.room_id, e.thread_id
		FROM push_users u JOIN push_notified n ON n.user_nid = u.nid AND n.position > $1 AND n.position <= $2
		JOIN push_events e ON e.position = n.position`, from, to)
	return append(out, more...), err
}

func scanFollowedRows(tx *storage.Tx, q string, from, to int64) ([]followedRow, error) {
	rows, err := tx.Query(q, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []followedRow
	for rows.Next() {
		var r followedRow
		var u, room string
		if err := rows.Scan(&r.pos, &r.nid, &u, &r.flags, &room, &r.thread); err != nil {
			return nil, err
		}
		r.user, r.room = spec.UserID(u), spec.RoomID(room)
		out = append(out, r)
	}
	return out, rows.Err()
}

// followedReads recounts, from the database, the rooms of the users whose
// read positions other nodes moved in (from, to].
func (s *Service) followedReads(tx *storage.Tx, from, to int64) (map[userRoom]*reloaded, error) {
	rows, err := tx.Query(`SELECT position, user_id, room_id FROM push_changes WHERE position > $1 AND position <= $2`, from, to)
	if err != nil {
		return nil, err
	}
	out := map[userRoom]*reloaded{}
	for rows.Next() {
		var pos int64
		var u, r string
		if err := rows.Scan(&pos, &u, &r); err != nil {
			rows.Close()
			return nil, err
		}
		k := userRoom{spec.UserID(u), spec.RoomID(r)}
		if out[k] == nil {
			out[k] = &reloaded{marks: map[string]int64{}, counts: map[string]tally{}}
		}
		out[k].pos = max(out[k].pos, pos)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for k, re := range out {
		if err := recountInto(tx, k, re); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// recountInto reads a user's read positions and unread counts in a room.
func recountInto(tx *storage.Tx, k userRoom, re *reloaded) error {
	rows, err := tx.Query(`SELECT thread_id, position FROM push_read WHERE user_id = $1 AND room_id = $2`, string(k.user), string(k.room))
	if err != nil {
		return err
	}
	for rows.Next() {
		var t string
		var pos int64
		if err := rows.Scan(&t, &pos); err != nil {
			rows.Close()
			return err
		}
		re.marks[t] = pos
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = tx.Query(fmt.Sprintf(unreadSQL, "AND u.user_id = $1 AND e.room_id = $2"), string(k.user), string(k.room))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var u, r, t string
		var n, h, last int64
		if err := rows.Scan(&u, &r, &t, &n, &h, &last); err != nil {
			return err
		}
		re.counts[t] = tally{n: n, h: h, upTo: last}
	}
	return rows.Err()
}
