package schedule

import (
	"context"
	"database/sql"
	"errors"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Schema is the scheduler's one table: each delayed event until it is sent
// or cancelled. The row goes once the event is finalised; nothing of a sent
// event's content stays here (the room keeps the event itself).
//
// txn_id is the client's transaction ID for a delayed message event (NULL
// for state events and the delayed_event endpoint without one), unique per
// device like the transaction IDs of /send.
var Schema = storage.Schema{Domain: "schedule", Migrations: []string{`
CREATE TABLE delayed_events (
	delay_id      TEXT   PRIMARY KEY,
	user_id       TEXT   NOT NULL,
	device_id     TEXT   NOT NULL,
	txn_id        TEXT,
	room_id       TEXT   NOT NULL,
	type          TEXT   NOT NULL,
	state_key     TEXT,
	content       TEXT   NOT NULL,
	delay_ms      BIGINT NOT NULL CHECK (delay_ms > 0),
	running_since BIGINT NOT NULL
);
CREATE INDEX delayed_events_by_user ON delayed_events (user_id);
CREATE UNIQUE INDEX delayed_events_by_txn ON delayed_events (user_id, device_id, txn_id) WHERE txn_id IS NOT NULL;`,
}}

// delayedEvent is one row.
type delayedEvent struct {
	DelayID      string
	User         spec.UserID
	Device       string
	TxnID        string
	Room         spec.RoomID
	Type         string
	StateKey     *string
	Content      string
	DelayMS      int64
	RunningSince int64
}

func (d *delayedEvent) sendAt() int64 { return d.RunningSince + d.DelayMS }

const columns = `delay_id, user_id, device_id, coalesce(txn_id, ''), room_id, type, state_key, content, delay_ms, running_since`

type scanner interface{ Scan(...any) error }

func scanDelayed(row scanner) (*delayedEvent, error) {
	var d delayedEvent
	var key sql.NullString
	if err := row.Scan(&d.DelayID, &d.User, &d.Device, &d.TxnID, &d.Room, &d.Type, &key, &d.Content, &d.DelayMS, &d.RunningSince); err != nil {
		return nil, err
	}
	if key.Valid {
		d.StateKey = &key.String
	}
	return &d, nil
}

func insertDelayed(tx *storage.Tx, d *delayedEvent) error {
	var txn, key any
	if d.TxnID != "" {
		txn = d.TxnID
	}
	if d.StateKey != nil {
		key = *d.StateKey
	}
	_, err := tx.Exec(`INSERT INTO delayed_events (`+
		`delay_id, user_id, device_id, txn_id, room_id, type, state_key, content, delay_ms, running_since)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		d.DelayID, string(d.User), d.Device, txn, string(d.Room), d.Type, key, d.Content, d.DelayMS, d.RunningSince)
	return err
}

// countOf is how many delayed events a user has scheduled, and the earliest
// send time among them.
func countOf(tx *storage.Tx, user spec.UserID) (n int, earliest int64, err error) {
	var first sql.NullInt64
	err = tx.QueryRow(`SELECT count(*), min(running_since + delay_ms) FROM delayed_events WHERE user_id = $1`, string(user)).Scan(&n, &first)
	return n, first.Int64, err
}

// byTxn finds the delay ID a transaction already scheduled.
func (s *Service) byTxn(ctx context.Context, user spec.UserID, device, txn string) (string, bool, error) {
	var id string
	err := s.db.QueryRow(ctx, `SELECT delay_id FROM delayed_events WHERE user_id = $1 AND device_id = $2 AND txn_id = $3`,
		string(user), device, txn).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return id, err == nil, err
}

func (s *Service) load(ctx context.Context, id string) (*delayedEvent, error) {
	d, err := scanDelayed(s.db.QueryRow(ctx, `SELECT `+columns+` FROM delayed_events WHERE delay_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return d, err
}

func (s *Service) ofUser(ctx context.Context, user spec.UserID) ([]*delayedEvent, error) {
	rows, err := s.db.Query(ctx, `SELECT `+columns+` FROM delayed_events WHERE user_id = $1 ORDER BY running_since + delay_ms, delay_id`, string(user))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*delayedEvent
	for rows.Next() {
		d, err := scanDelayed(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// allTimes reads every scheduled event's ID and send time: what the
// scheduler keeps in memory after a restart.
func (s *Service) allTimes(ctx context.Context) ([]timer, error) {
	rows, err := s.db.Query(ctx, `SELECT delay_id, delay_ms, running_since + delay_ms FROM delayed_events`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []timer
	for rows.Next() {
		var t timer
		if err := rows.Scan(&t.id, &t.delay, &t.at); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *Service) remove(ctx context.Context, id string) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`DELETE FROM delayed_events WHERE delay_id = $1`, id)
		return err
	})
}

func (s *Service) restartAt(ctx context.Context, id string, now int64) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`UPDATE delayed_events SET running_since = $1 WHERE delay_id = $2`, now, id)
		return err
	})
}
