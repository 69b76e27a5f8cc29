package push

import (
	"context"
	"encoding/json"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Schema is push's tables. Push rules are not here: they are the user's
// m.push_rules account data, which the accounts package stores and /sync
// delivers.
//
// push_notifications holds one row per (user, event) that notified: the
// list GET /notifications pages through and the source of the unread
// counts after a restart. Only what the counts and the list need is kept —
// the event itself stays in the rooms tables. push_read holds each user's
// read position per room and thread (empty for an unthreaded receipt, main
// for the main timeline, else the thread root's event ID).
var Schema = storage.Schema{Domain: "push", Migrations: []string{`
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
}}

// recountSQL counts a user's unread notifications in one room per thread:
// those after both the unthreaded read position and the thread's own.
const recountSQL = `SELECT n.thread_id, count(*), sum(CASE WHEN n.highlight THEN 1 ELSE 0 END)
	FROM push_notifications n
	WHERE n.user_id = $1 AND n.room_id = $2 AND n.counted
	AND n.position > coalesce((SELECT r.position FROM push_read r WHERE r.user_id = n.user_id AND r.room_id = n.room_id AND r.thread_id = ''), 0)
	AND n.position > coalesce((SELECT r.position FROM push_read r WHERE r.user_id = n.user_id AND r.room_id = n.room_id AND r.thread_id = n.thread_id), 0)
	GROUP BY n.thread_id`

// recount runs recountSQL inside a write, so it sees the write's own rows.
func recount(tx *storage.Tx, user spec.UserID, room spec.RoomID) (map[string][2]int64, error) {
	rows, err := tx.Query(recountSQL, string(user), string(room))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][2]int64{}
	for rows.Next() {
		var thread string
		var n, h int64
		if err := rows.Scan(&thread, &n, &h); err != nil {
			return nil, err
		}
		out[thread] = [2]int64{n, h}
	}
	return out, rows.Err()
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

// notificationRow is one stored notification.
type notificationRow struct {
	user      spec.UserID
	room      spec.RoomID
	event     spec.EventID
	position  int64
	thread    string
	highlight bool
	counted   bool
	actions   []json.RawMessage
	ts        int64
	eventType string // not stored: for the push priority
}

// insertNotifications writes the rows with one prepared statement: one
// event in a big room notifies every member, and preparing a statement per
// row (or one giant statement per batch) made the writer the bottleneck of
// a busy room.
func insertNotifications(tx *storage.Tx, rows []*notificationRow) error {
	args := make([][]any, len(rows))
	for i, n := range rows {
		actions, err := json.Marshal(n.actions)
		if err != nil {
			return err
		}
		args[i] = []any{string(n.user), string(n.room), string(n.event), n.position, n.thread, n.highlight, n.counted, string(actions), n.ts}
	}
	return tx.ExecMany(`INSERT INTO push_notifications (user_id, room_id, event_id, position, thread_id, highlight, counted, actions, ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (user_id, position) DO NOTHING`, args)
}

// loadCounts reads every unread count and read position at start-up.
func (s *Service) loadCounts(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, room_id, thread_id, position FROM push_read`)
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
	rows, err = s.db.Query(ctx, `SELECT n.user_id, n.room_id, n.thread_id, count(*), sum(CASE WHEN n.highlight THEN 1 ELSE 0 END), max(n.position)
		FROM push_notifications n
		WHERE n.counted
		AND n.position > coalesce((SELECT r.position FROM push_read r WHERE r.user_id = n.user_id AND r.room_id = n.room_id AND r.thread_id = ''), 0)
		AND n.position > coalesce((SELECT r.position FROM push_read r WHERE r.user_id = n.user_id AND r.room_id = n.room_id AND r.thread_id = n.thread_id), 0)
		GROUP BY n.user_id, n.room_id, n.thread_id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var u, r, t string
		var n, h, pos int64
		if err := rows.Scan(&u, &r, &t, &n, &h, &pos); err != nil {
			return err
		}
		rc := s.counts.room(spec.UserID(u), spec.RoomID(r))
		rc.threads[t] = [2]int64{n, h}
		// Positions from before the restart: every token a client holds
		// from then is at or past them, so nothing is re-sent.
		s.counts.touch(spec.UserID(u), rc, pos)
	}
	return rows.Err()
}
