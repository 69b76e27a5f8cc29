package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Schema is the rooms package's tables. Every event a room accepted is in
// events, in stream order; room_state is the current state (a projection of
// events that start-up loads into memory).
var Schema = storage.Schema{Domain: "rooms", Migrations: []string{`
CREATE TABLE rooms (
	room_id    TEXT    PRIMARY KEY,
	version    TEXT    NOT NULL,
	creator    TEXT    NOT NULL,
	created_ts BIGINT  NOT NULL
);
CREATE TABLE events (
	position         BIGINT  PRIMARY KEY,
	event_id         TEXT    NOT NULL UNIQUE,
	room_id          TEXT    NOT NULL REFERENCES rooms (room_id),
	type             TEXT    NOT NULL,
	state_key        TEXT,
	sender           TEXT    NOT NULL,
	origin_server_ts BIGINT  NOT NULL,
	depth            BIGINT  NOT NULL,
	json             TEXT    NOT NULL,
	redacted_by      TEXT,
	sender_device    TEXT,
	txn_id           TEXT
);
CREATE INDEX events_room ON events (room_id, position);
CREATE INDEX events_room_state ON events (room_id, type, state_key, position) WHERE state_key IS NOT NULL;
CREATE TABLE room_state (
	room_id   TEXT NOT NULL REFERENCES rooms (room_id),
	type      TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id  TEXT NOT NULL REFERENCES events (event_id),
	PRIMARY KEY (room_id, type, state_key)
);
CREATE TABLE txn_ids (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	txn_id    TEXT NOT NULL,
	event_id  TEXT NOT NULL REFERENCES events (event_id),
	PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE TABLE room_aliases (
	alias      TEXT PRIMARY KEY,
	room_id    TEXT NOT NULL REFERENCES rooms (room_id),
	creator    TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
CREATE TABLE published_rooms (
	room_id TEXT PRIMARY KEY REFERENCES rooms (room_id)
);
CREATE TABLE forgotten (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL REFERENCES rooms (room_id),
	PRIMARY KEY (user_id, room_id)
);`,
}}

// storedEvent is one row of events.
type storedEvent struct {
	pdu      *events.PDU
	position int64
	device   string
	txnID    string
}

// insertEvent writes the event, moves current state if it is a state event,
// and records the transaction ID.
func insertEvent(tx *storage.Tx, ev *Event) error {
	p := ev.PDU
	var stateKey any
	if sk, ok := p.StateKey(); ok {
		stateKey = sk
	}
	var device, txn any
	if ev.TxnID != "" {
		device, txn = ev.DeviceID, ev.TxnID
	}
	if _, err := tx.Exec(`INSERT INTO events (position, event_id, room_id, type, state_key, sender, origin_server_ts, depth, json, sender_device, txn_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		ev.Position, string(p.EventID()), string(p.RoomID()), p.Type(), stateKey, string(p.Sender()),
		p.OriginServerTS(), p.Depth(), string(p.JSON()), device, txn); err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	if sk, ok := p.StateKey(); ok {
		if _, err := tx.Exec(`INSERT INTO room_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id`,
			string(p.RoomID()), p.Type(), sk, string(p.EventID())); err != nil {
			return fmt.Errorf("update room state: %w", err)
		}
	}
	if ev.TxnID != "" {
		if _, err := tx.Exec(`INSERT INTO txn_ids (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, $4)`,
			string(p.Sender()), ev.DeviceID, ev.TxnID, string(p.EventID())); err != nil {
			return fmt.Errorf("record transaction ID: %w", err)
		}
	}
	return nil
}

// scanEvents reads rows of eventColumns.
func scanEvents(rows *sql.Rows) ([]*Event, error) {
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		var pos int64
		var id, raw, version string
		var device, txn sql.NullString
		if err := rows.Scan(&pos, &id, &raw, &device, &txn, &version); err != nil {
			return nil, err
		}
		// The event ID was computed when the event was accepted; loading
		// does not hash the event again.
		p, err := events.LoadPDU([]byte(raw), spec.RoomVersion(version), spec.EventID(id))
		if err != nil {
			return nil, fmt.Errorf("stored event at %d does not parse: %w", pos, err)
		}
		out = append(out, &Event{PDU: p, Position: pos, DeviceID: device.String, TxnID: txn.String})
	}
	return out, rows.Err()
}

const eventColumns = `e.position, e.event_id, e.json, e.sender_device, e.txn_id, r.version FROM events e JOIN rooms r ON r.room_id = e.room_id`

// eventByID loads one event.
func (s *Service) eventByID(ctx context.Context, id spec.EventID) (*Event, error) {
	rows, err := s.db.Query(ctx, `SELECT `+eventColumns+` WHERE e.event_id = $1`, string(id))
	if err != nil {
		return nil, err
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, nil
	}
	return evs[0], nil
}

// eventsBetween returns a room's events with position in (from, to],
// ascending, at most limit (0: no limit).
func (s *Service) eventsBetween(ctx context.Context, room spec.RoomID, from, to int64, limit int, backwards bool) ([]*Event, error) {
	order := "ASC"
	if backwards {
		order = "DESC"
	}
	q := `SELECT ` + eventColumns + ` WHERE e.room_id = $1 AND e.position > $2 AND e.position <= $3 ORDER BY e.position ` + order
	if limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", limit)
	}
	rows, err := s.db.Query(ctx, q, string(room), from, to)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// stateAt returns the room's state just after position pos: for each
// (type, state_key) the state event with the highest position ≤ pos. On one
// server the room's DAG is a line, so this is the state at that point.
func (s *Service) stateAt(ctx context.Context, room spec.RoomID, pos int64) ([]*Event, error) {
	rows, err := s.db.Query(ctx, `SELECT `+eventColumns+` WHERE e.position IN (
		SELECT max(position) FROM events WHERE room_id = $1 AND state_key IS NOT NULL AND position <= $2
		GROUP BY type, state_key) ORDER BY e.position`, string(room), pos)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// txnEvent returns the event a (user, device, txn) already produced.
func (s *Service) txnEvent(ctx context.Context, user spec.UserID, device, txn string) (spec.EventID, error) {
	var id string
	err := s.db.QueryRow(ctx, `SELECT event_id FROM txn_ids WHERE user_id = $1 AND device_id = $2 AND txn_id = $3`,
		string(user), device, txn).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return spec.EventID(id), err
}

func insertAlias(tx *storage.Tx, alias spec.RoomAlias, id spec.RoomID, creator spec.UserID) error {
	_, err := tx.Exec(`INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, string(alias), string(id), string(creator))
	if err != nil {
		return spec.NewError(spec.ErrRoomInUse, "the alias %s is already taken", alias)
	}
	return nil
}

func setPublished(tx *storage.Tx, id spec.RoomID, public bool) error {
	var err error
	if public {
		_, err = tx.Exec(`INSERT INTO published_rooms (room_id) VALUES ($1) ON CONFLICT DO NOTHING`, string(id))
	} else {
		_, err = tx.Exec(`DELETE FROM published_rooms WHERE room_id = $1`, string(id))
	}
	return err
}

// ResolveAlias returns the room an alias names, or "".
func (s *Service) ResolveAlias(ctx context.Context, alias spec.RoomAlias) (spec.RoomID, error) {
	var id string
	err := s.db.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, string(alias)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return spec.RoomID(id), err
}
