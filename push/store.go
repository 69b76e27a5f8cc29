package push

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	stdsync "sync"
	"time"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Schema is push's tables. Push rules are not here: they are the user's
// m.push_rules account data, which the accounts package stores and /sync
// delivers.
//
// A notification is a row of push_notified or push_staged (user, position,
// actions, flags) with the event's room, ID and thread in push_events: the list
// GET /notifications pages through and the source of the unread counts
// after a restart. Only what the counts and the list need is kept — the
// event itself stays in the rooms tables. push_read holds each user's
// read position per room and thread (empty for an unthreaded receipt, main
// for the main timeline, else the thread root's event ID).
var Schema = storage.Schema{Domain: "push", Postgres: postgresMigrations, Migrations: []string{`
CREATE TABLE push_notifications (
	user_id   TEXT    NOT NULL,
	room_id   TEXT    NOT NULL,
	event_id  TEXT    NOT NULL,
	position  BIGINT  NOT NULL CHECK (position > 0),
	thread_id TEXT    NOT NULL CHECK (thread_id <> ''),
	highlight BOOLEAN NOT NULL,
	counted   BOOLEAN NOT NULL,
	actions   TEXT    NOT NULL,
	ts        BIGINT  NOT NULL,
	PRIMARY KEY (user_id, event_id)
);
CREATE INDEX push_notifications_by_user ON push_notifications (user_id, position);
CREATE INDEX push_notifications_by_room ON push_notifications (user_id, room_id, position);

CREATE TABLE push_read (
	user_id   TEXT   NOT NULL,
	room_id   TEXT   NOT NULL,
	thread_id TEXT   NOT NULL,
	position  BIGINT NOT NULL CHECK (position > 0),
	PRIMARY KEY (user_id, room_id, thread_id)
);

CREATE TABLE pushers (
	user_id             TEXT   NOT NULL,
	app_id              TEXT   NOT NULL CHECK (app_id <> ''),
	pushkey             TEXT   NOT NULL CHECK (pushkey <> ''),
	kind                TEXT   NOT NULL CHECK (kind = 'http'),
	app_display_name    TEXT   NOT NULL,
	device_display_name TEXT   NOT NULL,
	profile_tag         TEXT   NOT NULL,
	lang                TEXT   NOT NULL,
	data                TEXT   NOT NULL,
	device_id           TEXT   NOT NULL,
	pushkey_ts          BIGINT NOT NULL,
	PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);`,
	// 2: keyed by (user, position), which is what the list pages by, so
	// one index fewer is written for every member an event notifies.
	`
CREATE TABLE push_notifications_new (
	user_id   TEXT    NOT NULL,
	position  BIGINT  NOT NULL CHECK (position > 0),
	room_id   TEXT    NOT NULL,
	event_id  TEXT    NOT NULL,
	thread_id TEXT    NOT NULL CHECK (thread_id <> ''),
	highlight BOOLEAN NOT NULL,
	counted   BOOLEAN NOT NULL,
	actions   TEXT    NOT NULL,
	ts        BIGINT  NOT NULL,
	PRIMARY KEY (user_id, position)
);
INSERT INTO push_notifications_new (user_id, position, room_id, event_id, thread_id, highlight, counted, actions, ts)
	SELECT user_id, position, room_id, event_id, thread_id, highlight, counted, actions, ts FROM push_notifications;
DROP TABLE push_notifications;
ALTER TABLE push_notifications_new RENAME TO push_notifications;
CREATE INDEX push_notifications_by_room ON push_notifications (user_id, room_id, position);`,
	// 3: an event notifies most members of its room, so what is the same
	// for all of them is stored once (push_events) and each member's row
	// is three integers, with user IDs and action lists interned. A new
	// event's rows are one push_staged row (a JSON array of [user, actions,
	// flags]), moved to push_notified in user order a few seconds' worth at
	// a time: an event's notifications cost one insert and dirty one page,
	// not one per member. push_staged_rows reads them as rows.
	`
CREATE TABLE push_users (
	nid     INTEGER PRIMARY KEY,
	user_id TEXT    NOT NULL UNIQUE
);
CREATE TABLE push_actions (
	id      INTEGER PRIMARY KEY,
	actions TEXT    NOT NULL UNIQUE
);
CREATE TABLE push_events (
	position  INTEGER PRIMARY KEY CHECK (position > 0),
	room_id   TEXT    NOT NULL,
	event_id  TEXT    NOT NULL,
	thread_id TEXT    NOT NULL CHECK (thread_id <> ''),
	ts        INTEGER NOT NULL
);
CREATE TABLE push_notified (
	user_nid   INTEGER NOT NULL,
	position   INTEGER NOT NULL,
	actions_id INTEGER NOT NULL,
	flags      INTEGER NOT NULL, -- 1: highlight, 2: counted in the unread counts
	PRIMARY KEY (user_nid, position)
) WITHOUT ROWID;
CREATE TABLE push_staged (
	position   INTEGER PRIMARY KEY,
	recipients TEXT    NOT NULL
);
CREATE VIEW push_staged_rows AS
	SELECT s.position AS position, r.value ->> 0 AS user_nid, r.value ->> 1 AS actions_id, r.value ->> 2 AS flags
	FROM push_staged s, json_each(s.recipients) r;
INSERT INTO push_users (user_id) SELECT DISTINCT user_id FROM push_notifications;
INSERT INTO push_actions (actions) SELECT DISTINCT actions FROM push_notifications;
INSERT INTO push_events (position, room_id, event_id, thread_id, ts)
	SELECT position, room_id, event_id, thread_id, max(ts) FROM push_notifications GROUP BY position;
INSERT INTO push_notified (user_nid, position, actions_id, flags)
	SELECT u.nid, n.position, a.id, (CASE WHEN n.highlight THEN 1 ELSE 0 END) | (CASE WHEN n.counted THEN 2 ELSE 0 END)
	FROM push_notifications n JOIN push_users u ON u.user_id = n.user_id JOIN push_actions a ON a.actions = n.actions;
DROP TABLE push_notifications;`,
	threadSubsSchema,
	// 5: the read positions a cluster node moved (follow.go), so that the
	// other nodes recount; written only on a cluster node.
	`
CREATE TABLE push_changes (
	position   BIGINT NOT NULL,
	user_id    TEXT   NOT NULL,
	room_id    TEXT   NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE INDEX push_changes_position ON push_changes (position);
CREATE INDEX push_changes_created ON push_changes (created_ts);`,
}}

const (
	flagHighlight = 1
	flagCounted   = 2
)

// notificationRow is one notification.
type notificationRow struct {
	user      spec.UserID
	room      spec.RoomID
	event     spec.EventID
	ev        *rooms.Event // its position is set when the event is stored
	thread    string
	highlight bool
	counted   bool
	actions   []json.RawMessage
	// actionsJSON is actions as stored.
	actionsJSON string
	ts          int64
	eventType   string // not stored: for the push priority
}

func (n *notificationRow) position() int64 { return n.ev.Position }

func (n *notificationRow) flags() int64 {
	var f int64
	if n.highlight {
		f |= flagHighlight
	}
	if n.counted {
		f |= flagCounted
	}
	return f
}

// insertNotifications stores a group's notifications: per event, one
// push_events row and one push_staged row with every recipient. It returns
// the user IDs and action lists it interned, to publish once the write
// commits.
func (s *Service) insertNotifications(tx *storage.Tx, rows []*notificationRow) (*newInterned, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	fresh := &newInterned{users: map[spec.UserID]int64{}, actions: map[string]int64{}}
	var evArgs, stagedArgs [][]any
	var recipients []byte
	for i, n := range rows {
		if i == 0 || n.position() != rows[i-1].position() {
			evArgs = append(evArgs, []any{n.position(), string(n.room), string(n.event), n.thread, n.ts})
			recipients = append(recipients[:0], '[')
		}
		user, err := s.ids.userIn(tx, n.user, fresh)
		if err != nil {
			return nil, err
		}
		act, err := s.ids.actionsIn(tx, n.actionsJSON, fresh)
		if err != nil {
			return nil, err
		}
		if recipients[len(recipients)-1] != '[' {
			recipients = append(recipients, ',')
		}
		recipients = append(recipients, '[')
		recipients = strconv.AppendInt(recipients, user, 10)
		recipients = append(recipients, ',')
		recipients = strconv.AppendInt(recipients, act, 10)
		recipients = append(recipients, ',')
		recipients = strconv.AppendInt(recipients, n.flags(), 10)
		recipients = append(recipients, ']')
		if i == len(rows)-1 || rows[i+1].position() != n.position() {
			stagedArgs = append(stagedArgs, []any{n.position(), string(append(recipients, ']'))})
		}
	}
	if err := tx.ExecMany(`INSERT INTO push_events (position, room_id, event_id, thread_id, ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (position) DO NOTHING`, evArgs); err != nil {
		return nil, err
	}
	if err := tx.ExecMany(`INSERT INTO push_staged (position, recipients) VALUES ($1, $2)
		ON CONFLICT (position) DO NOTHING`, stagedArgs); err != nil {
		return nil, err
	}
	return fresh, nil
}

// raiseRead moves a read position forward (never back: of two receipts the
// one further ahead counts).
func raiseRead(tx *storage.Tx, user spec.UserID, room spec.RoomID, thread string, pos int64) error {
	_, err := tx.Exec(`INSERT INTO push_read (user_id, room_id, thread_id, position) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET position =
		CASE WHEN excluded.position > push_read.position THEN excluded.position ELSE push_read.position END`,
		string(user), string(room), thread, pos)
	return err
}

// unreadSQL counts unread notifications per (user, room, thread): those
// after both the unthreaded read position and the thread's own.
const unreadSQL = `SELECT u.user_id, e.room_id, e.thread_id, count(*), sum(n.flags & 1), max(n.position)
	FROM (SELECT user_nid, position, flags FROM push_notified UNION ALL SELECT user_nid, position, flags FROM push_staged_rows) n
	JOIN push_users u ON u.nid = n.user_nid JOIN push_events e ON e.position = n.position
	WHERE n.flags & 2 <> 0 %s
	AND n.position > coalesce((SELECT r.position FROM push_read r WHERE r.user_id = u.user_id AND r.room_id = e.room_id AND r.thread_id = ''), 0)
	AND n.position > coalesce((SELECT r.position FROM push_read r WHERE r.user_id = u.user_id AND r.room_id = e.room_id AND r.thread_id = e.thread_id), 0)
	GROUP BY u.user_id, e.room_id, e.thread_id`

// recount counts a user's unread notifications in one room per thread,
// inside a write so that it sees the write's own rows. Rarely needed: only
// a receipt for an event older than the notifications tracked one by one
// in memory (see threadUnread).
func (s *Service) recount(tx *storage.Tx, user spec.UserID, room spec.RoomID) (map[string][2]int64, error) {
	tallies, err := s.tallies(tx, user, room)
	if err != nil {
		return nil, err
	}
	out := make(map[string][2]int64, len(tallies))
	for t, c := range tallies {
		out[t] = [2]int64{c.n, c.h}
	}
	return out, nil
}

// tallies are a user's unread notifications in one room per thread, from
// the database as the write tx sees it.
func (s *Service) tallies(tx *storage.Tx, user spec.UserID, room spec.RoomID) (map[string]tally, error) {
	out := map[string]tally{}
	nid, ok := s.ids.user(user)
	if !ok {
		return out, nil // never notified
	}
	rows, err := tx.Query(fmt.Sprintf(unreadSQL, "AND n.user_nid = $1 AND e.room_id = $2"), nid, string(room))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var u, r, thread string
		var n, h, last int64
		if err := rows.Scan(&u, &r, &thread, &n, &h, &last); err != nil {
			return nil, err
		}
		out[thread] = tally{n: n, h: h, upTo: last}
	}
	return out, rows.Err()
}

// queryFunc is a database's or a write's Query.
type queryFunc func(q string, args ...any) (*sql.Rows, error)

// loadCounts reads every unread count and read position at start-up.
func (s *Service) loadCounts(query queryFunc) error {
	rows, err := query(`SELECT user_id, room_id, thread_id, position FROM push_read`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var u, r, t string
		var pos int64
		if err := rows.Scan(&u, &r, &t, &pos); err != nil {
			rows.Close()
			return err
		}
		s.counts.room(spec.UserID(u), spec.RoomID(r)).marks[t] = pos
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = query(fmt.Sprintf(unreadSQL, ""))
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
		rc := s.counts.room(spec.UserID(u), spec.RoomID(r))
		// Loaded as counts, not one by one: a read before the last of
		// them recounts (threadUnread).
		rc.thread(t).untracked = tally{n: n, h: h, upTo: last}
		rc.lastRow[t] = last
		// Positions from before the restart: every token a client holds
		// from then is at or past them, so nothing is re-sent.
		s.counts.touch(spec.UserID(u), rc, last)
	}
	return rows.Err()
}

// interned maps user IDs and action lists to the small integers the
// notification rows store. Entries are added only after the write that
// inserted them committed, so a rolled-back ID is never remembered.
type interned struct {
	mu      stdsync.RWMutex
	users   map[spec.UserID]int64
	actions map[string]int64
}

// newInterned is what one write interned.
type newInterned struct {
	users   map[spec.UserID]int64
	actions map[string]int64
}

func loadInterned(ctx context.Context, db *storage.DB) (*interned, error) {
	in := &interned{users: map[spec.UserID]int64{}, actions: map[string]int64{}}
	for _, q := range []struct {
		sql string
		put func(string, int64)
	}{
		{`SELECT nid, user_id FROM push_users`, func(k string, v int64) { in.users[spec.UserID(k)] = v }},
		{`SELECT id, actions FROM push_actions`, func(k string, v int64) { in.actions[k] = v }},
	} {
		rows, err := db.Query(ctx, q.sql)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id int64
			var key string
			if err := rows.Scan(&id, &key); err != nil {
				rows.Close()
				return nil, err
			}
			q.put(key, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return in, nil
}

func (in *interned) user(u spec.UserID) (int64, bool) {
	in.mu.RLock()
	defer in.mu.RUnlock()
	id, ok := in.users[u]
	return id, ok
}

// userIn returns a user's number, inserting it in the write if new.
func (in *interned) userIn(tx *storage.Tx, u spec.UserID, fresh *newInterned) (int64, error) {
	if id, ok := in.user(u); ok {
		return id, nil
	}
	if id, ok := fresh.users[u]; ok {
		return id, nil
	}
	id, err := internIn(tx, `push_users`, `nid`, `user_id`, string(u))
	fresh.users[u] = id
	return id, err
}

// actionsIn returns an action list's number, inserting it if new.
func (in *interned) actionsIn(tx *storage.Tx, actions string, fresh *newInterned) (int64, error) {
	in.mu.RLock()
	id, ok := in.actions[actions]
	in.mu.RUnlock()
	if ok {
		return id, nil
	}
	if id, ok := fresh.actions[actions]; ok {
		return id, nil
	}
	id, err := internIn(tx, `push_actions`, `id`, `actions`, actions)
	fresh.actions[actions] = id
	return id, err
}

// internIn inserts a value if missing and returns its number. An earlier
// write of the same batch may have inserted it already, uncommitted and not
// yet remembered: hence the select.
func internIn(tx *storage.Tx, table, idCol, col, value string) (int64, error) {
	if _, err := tx.Exec(`INSERT INTO `+table+` (`+col+`) VALUES ($1) ON CONFLICT (`+col+`) DO NOTHING`, value); err != nil {
		return 0, err
	}
	var id int64
	err := tx.QueryRow(`SELECT `+idCol+` FROM `+table+` WHERE `+col+` = $1`, value).Scan(&id)
	return id, err
}

// add remembers what a committed write interned.
func (in *interned) add(fresh *newInterned) {
	if fresh == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, v := range fresh.users {
		in.users[k] = v
	}
	for k, v := range fresh.actions {
		in.actions[k] = v
	}
}

// Moving staged notifications: once none came for flushIdle (a burst is
// over: the server does not leave work owed for long after it), flushDelay
// after the first at the latest (a steady stream), or at once past
// flushRows. The longer a move waits, the more events share each user's
// page writes.
const (
	flushIdle  = 200 * time.Millisecond
	flushDelay = 5 * time.Second
	flushRows  = 50000
)

// flushTimers are the pending moves' timers, nil when none is pending.
type flushTimers struct {
	mu           stdsync.Mutex
	idle, latest *time.Timer
}

// stagedRows notes n new staged rows and schedules their move.
func (s *Service) stagedRows(n int) {
	if s.staged.Add(int64(n)) >= flushRows {
		go s.flush()
		return
	}
	t := &s.flushTimers
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = time.AfterFunc(flushIdle, s.flush)
	} else {
		t.idle.Reset(flushIdle)
	}
	if t.latest == nil {
		t.latest = time.AfterFunc(flushDelay, s.flush)
	}
}

// A move is written event by event in one transaction, which ends early
// once other writes wait and it has moved flushMinEvents events: a send
// queued meanwhile waits for a few events' rows, and each user's pages are
// still written once per several events.
const (
	flushMinEvents = 8
	flushMaxRows   = 50000
)

// flush moves the staged notifications to push_notified. Rows staged after
// it starts wait for the next flush.
func (s *Service) flush() { s.flushWith(flushMinEvents, flushMaxRows) }

// flushWith is flush with the yield point and the rows per write given.
func (s *Service) flushWith(minEvents, maxRows int) {
	t := &s.flushTimers
	t.mu.Lock()
	for _, timer := range []*time.Timer{t.idle, t.latest} {
		if timer != nil {
			timer.Stop()
		}
	}
	t.idle, t.latest = nil, nil
	t.mu.Unlock()
	s.staged.Store(0)
	ctx := context.Background()
	var end int64 // the newest staged position when the move began
	for {
		moved := 0
		err := s.db.Write(ctx, func(tx *storage.Tx) error {
			// Read in the write, not on the read pool: the move is the
			// writer's business and leaves the readers to clients.
			if end == 0 {
				if err := tx.QueryRow(`SELECT coalesce(max(position), 0) FROM push_staged`).Scan(&end); err != nil || end == 0 {
					return err
				}
			}
			for rows := 0; rows < maxRows; {
				var pos, n int64
				length := `json_array_length(recipients)`
				if tx.Dialect() == storage.Postgres {
					length = `jsonb_array_length(recipients::jsonb)`
				}
				err := tx.QueryRow(`SELECT position, `+length+` FROM push_staged
					WHERE position <= $1 ORDER BY position LIMIT 1`, end).Scan(&pos, &n)
				if errors.Is(err, sql.ErrNoRows) {
					return nil
				} else if err != nil {
					return err
				}
				if _, err := tx.Exec(`INSERT INTO push_notified (user_nid, position, actions_id, flags)
					SELECT user_nid, position, actions_id, flags FROM push_staged_rows WHERE position = $1 ORDER BY user_nid
					ON CONFLICT (user_nid, position) DO NOTHING`, pos); err != nil {
					return err
				}
				if _, err := tx.Exec(`DELETE FROM push_staged WHERE position = $1`, pos); err != nil {
					return err
				}
				moved++
				rows += int(n)
				if moved >= minEvents && s.db.Queued() > 0 {
					return nil // let the waiting writes in
				}
			}
			return nil
		})
		if err != nil {
			if err != storage.ErrClosed {
				s.log.Warn().Err(err).Msg("push: could not move staged notifications")
			}
			return
		}
		if moved == 0 {
			return
		}
	}
}
