package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// relationTables are migration 2's tables, shared by its SQLite text
// (which then backfills them) and its PostgreSQL text (which has nothing
// to backfill).
const relationTables = `CREATE TABLE event_relations (
	event_id         TEXT   PRIMARY KEY REFERENCES events (event_id),
	room_id          TEXT   NOT NULL,
	relates_to       TEXT   NOT NULL,
	rel_type         TEXT   NOT NULL CHECK (rel_type <> ''),
	type             TEXT   NOT NULL,
	sender           TEXT   NOT NULL,
	position         BIGINT NOT NULL UNIQUE,
	origin_server_ts BIGINT NOT NULL,
	annotation_key   TEXT
);
CREATE INDEX event_relations_parent ON event_relations (relates_to, position);
CREATE INDEX event_relations_room ON event_relations (room_id, rel_type, position);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts, position);
CREATE TABLE content_reports (
	id          BIGINT PRIMARY KEY,
	received_ts BIGINT NOT NULL,
	reporter    TEXT   NOT NULL,
	kind        TEXT   NOT NULL CHECK (kind IN ('event', 'room', 'user')),
	room_id     TEXT,
	event_id    TEXT,
	user_id     TEXT,
	reason      TEXT   NOT NULL,
	CHECK ((kind = 'event' AND room_id IS NOT NULL AND event_id IS NOT NULL)
		OR (kind = 'room' AND room_id IS NOT NULL)
		OR (kind = 'user' AND user_id IS NOT NULL))
);`

// Schema is the rooms package's tables. Every event a room accepted is in
// events, in stream order; room_state is the current state (a projection of
// events that start-up loads into memory).
var Schema = storage.Schema{Domain: "rooms", Postgres: postgresMigrations, Migrations: []string{`
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
	ts        BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX txn_ids_ts ON txn_ids (ts);
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
	// 2: relations, search, reports (relations.go, search.go, reports.go).
	// event_relations holds every non-state event with an m.relates_to
	// rel_type, written in the transaction that stores the event and
	// deleted when it is redacted. The backfill lines index the events
	// stored before this migration the way the commit hook does.
	//
	// As released, this migration also created event_search, an SQLite
	// FTS5 index, and migration 3 configured it. FTS5 needs a build tag of
	// the SQLite driver, so a plain `go build` could not open a database;
	// migration 5 replaced it with a word index in plain tables. The FTS5
	// lines were taken out of 2 and 3 so that a new database never needs
	// FTS5: every database still ends in the same schema after 4 (which
	// drops event_search where it exists), the one exception to "never
	// edit a released migration", made for that reason.
	"\n" + relationTables + `
INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, type, sender, position, origin_server_ts, annotation_key)
	SELECT event_id, room_id, json_extract(json, '$.content."m.relates_to".event_id'),
		json_extract(json, '$.content."m.relates_to".rel_type'), type, sender, position, origin_server_ts,
		CASE WHEN json_extract(json, '$.content."m.relates_to".rel_type') = 'm.annotation'
			AND json_type(json, '$.content."m.relates_to".key') = 'text'
			THEN json_extract(json, '$.content."m.relates_to".key') END
	FROM events
	WHERE state_key IS NULL AND redacted_by IS NULL
		AND json_type(json, '$.content."m.relates_to".rel_type') = 'text'
		AND json_extract(json, '$.content."m.relates_to".rel_type') <> ''
		AND json_type(json, '$.content."m.relates_to".event_id') = 'text'
		AND substr(json_extract(json, '$.content."m.relates_to".event_id'), 1, 1) = '$';`,
	// 3: as released, FTS5 secure-delete for event_search (see 2); now a
	// no-op.
	`SELECT 1;`,
	// 4: a transaction ID is scoped to a device and an endpoint (the
	// request path without the txnId, client-server API "Transaction
	// identifiers"): the same ID sent to another room is a new request.
	// scope is txnScope's value; the rows stored before it get theirs
	// from their events.
	`
CREATE TABLE txn_ids_scoped (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	scope     TEXT NOT NULL,
	txn_id    TEXT NOT NULL,
	event_id  TEXT NOT NULL REFERENCES events (event_id),
	ts        BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, scope, txn_id)
);
INSERT INTO txn_ids_scoped (user_id, device_id, scope, txn_id, event_id, ts)
	SELECT t.user_id, t.device_id,
		CASE WHEN e.type = 'm.room.redaction'
			THEN 'redact ' || e.room_id || ' ' || coalesce(json_extract(e.json, '$.content.redacts'), json_extract(e.json, '$.redacts'), '')
			ELSE 'send ' || e.room_id || ' ' || e.type END,
		t.txn_id, t.event_id, t.ts
	FROM txn_ids t JOIN events e ON e.event_id = t.event_id;
DROP TABLE txn_ids;
ALTER TABLE txn_ids_scoped RENAME TO txn_ids;
CREATE INDEX txn_ids_ts ON txn_ids (ts);`,
	// 5: the search index in plain tables (search.go), portable to
	// PostgreSQL and needing no SQLite extension. search_words holds, per
	// event (by position) and folded word, how often the word occurs;
	// search_docs the event's word count, for ranking. Like the FTS5 index
	// before it, it keeps no copy of the text, only its words. The events
	// stored before are indexed at the next start (search_reindex: the
	// words are cut in Go, not SQL).
	`
DROP TABLE IF EXISTS event_search;
CREATE TABLE search_words (
	word     TEXT    NOT NULL CHECK (word <> ''),
	position BIGINT  NOT NULL,
	hits     INTEGER NOT NULL CHECK (hits > 0),
	PRIMARY KEY (word, position)
);
CREATE INDEX search_words_position ON search_words (position);
CREATE TABLE search_docs (
	position BIGINT  PRIMARY KEY,
	words    INTEGER NOT NULL CHECK (words > 0)
);
CREATE TABLE search_reindex (id INTEGER PRIMARY KEY CHECK (id = 1));
INSERT INTO search_reindex (id) VALUES (1);`,
	// 6: local users' invites to and knocks on rooms of other servers
	// that this server does not hold (outliers.go).
	remoteMembershipsTable,
	// 7: events held outside the timeline (dag.go): soft-failed events,
	// kept so that later events can name them, state fetched from another
	// server to fill a gap in the DAG, and remote redactions held back
	// until their target arrives (remote.go).
	`
CREATE TABLE event_outliers (
	event_id    TEXT   PRIMARY KEY,
	room_id     TEXT   NOT NULL REFERENCES rooms (room_id),
	json        TEXT   NOT NULL,
	reason      TEXT   NOT NULL CHECK (reason IN ('soft_failed', 'state', 'held_redaction')),
	received_ts BIGINT NOT NULL
);
CREATE INDEX event_outliers_room ON event_outliers (room_id);`,
	// 8: what state resolution changed in a room's current state besides
	// the resolving event's own entry (dag.go), at that event's position:
	// an entry set to event_id, or removed (event_id NULL). Sync reads it
	// to bring a client to the resolved state.
	`
CREATE TABLE room_state_resolved (
	room_id   TEXT   NOT NULL REFERENCES rooms (room_id),
	position  BIGINT NOT NULL,
	type      TEXT   NOT NULL,
	state_key TEXT   NOT NULL,
	event_id  TEXT,
	PRIMARY KEY (room_id, position, type, state_key)
);`,
	// 9: which node of a cluster writes each room (lease.go), and the
	// fencing token a takeover raises. Only cluster nodes use it.
	`
CREATE TABLE room_leases (
	room_id    TEXT   PRIMARY KEY,
	node_id    TEXT   NOT NULL,
	token      BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX room_leases_node ON room_leases (node_id);`,
	// 10: PostgreSQL's own full-text index over the word index
	// (postgresMigrations); nothing on SQLite.
	`SELECT 1`,
}}

// storedEvent is one row of events.
type storedEvent struct {
	pdu      *events.PDU
	position int64
	device   string
	txnID    string
}

// scanEvents reads rows of eventColumns.
func scanEvents(rows *sql.Rows) ([]*Event, error) {
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		var pos int64
		var id, raw, version string
		var device, txn, redactionID, redactionRaw sql.NullString
		if err := rows.Scan(&pos, &id, &raw, &device, &txn, &version, &redactionID, &redactionRaw); err != nil {
			return nil, err
		}
		// The event ID was computed when the event was accepted; loading
		// does not hash the event again.
		p, err := events.LoadPDU([]byte(raw), spec.RoomVersion(version), spec.EventID(id))
		if err != nil {
			return nil, fmt.Errorf("stored event at %d does not parse: %w", pos, err)
		}
		ev := &Event{PDU: p, Position: pos, DeviceID: device.String, TxnID: txn.String}
		if redactionRaw.Valid {
			r, err := events.LoadPDU([]byte(redactionRaw.String), spec.RoomVersion(version), spec.EventID(redactionID.String))
			if err != nil {
				return nil, fmt.Errorf("stored redaction of the event at %d does not parse: %w", pos, err)
			}
			ev.RedactedBecause = r
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}

const eventColumns = `e.position, e.event_id, e.json, e.sender_device, e.txn_id, r.version, rb.event_id, rb.json
	FROM events e JOIN rooms r ON r.room_id = e.room_id LEFT JOIN events rb ON rb.event_id = e.redacted_by`

// pdusOf is the PDUs of evs, in order.
func pdusOf(evs []*Event) []*events.PDU {
	out := make([]*events.PDU, len(evs))
	for i, ev := range evs {
		out[i] = ev.PDU
	}
	return out
}

// queryEvents loads the events a query selects; rest is the query after
// SELECT eventColumns: joins, WHERE, ORDER BY and LIMIT.
func (s *Service) queryEvents(ctx context.Context, rest string, args ...any) ([]*Event, error) {
	return queryEventsOn(dbQuerier{ctx, s.db}, rest, args...)
}

// queryEventsOn is queryEvents through q: the readers, or the writer's
// transaction.
func queryEventsOn(q querier, rest string, args ...any) ([]*Event, error) {
	rows, err := q.Query(`SELECT `+eventColumns+` `+rest, args...)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// querier runs a query: a *storage.Tx, or the readers (dbQuerier). Loading
// reads through either: at start-up from the readers, and on a cluster
// node inside the writer's transaction (follow.go).
type querier interface {
	Query(query string, args ...any) (*sql.Rows, error)
}

// dbQuerier is the readers of db as a querier.
type dbQuerier struct {
	ctx context.Context
	db  *storage.DB
}

func (q dbQuerier) Query(query string, args ...any) (*sql.Rows, error) {
	return q.db.Query(q.ctx, query, args...)
}

// eventByID loads one event.
func (s *Service) eventByID(ctx context.Context, id spec.EventID) (*Event, error) {
	evs, err := s.queryEvents(ctx, `WHERE e.event_id = $1`, string(id))
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, nil
	}
	return evs[0], nil
}

// eventRange is a room's events with position in (from, to]: at most
// limit of them (0: no limit, for eventsBetween only), oldest first, or
// newest first if backwards.
type eventRange struct {
	from, to  int64
	limit     int
	backwards bool
}

// eventsBetween returns the room's events in the range, from the database.
func (s *Service) eventsBetween(ctx context.Context, room spec.RoomID, rg eventRange) ([]*Event, error) {
	order := "ASC"
	if rg.backwards {
		order = "DESC"
	}
	q := `WHERE e.room_id = $1 AND e.position > $2 AND e.position <= $3 ORDER BY e.position ` + order
	if rg.limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", rg.limit)
	}
	return s.queryEvents(ctx, q, string(room), rg.from, rg.to)
}

// stateAt returns the room's state just after position pos: for each
// (type, state_key) the state event with the highest position ≤ pos. On one
// server the room's DAG is a line, so this is the state at that point.
func (s *Service) stateAt(ctx context.Context, room spec.RoomID, pos int64) ([]*Event, error) {
	return s.queryEvents(ctx, `WHERE e.position IN (
		SELECT max(position) FROM events WHERE room_id = $1 AND state_key IS NOT NULL AND position <= $2
		GROUP BY type, state_key) ORDER BY e.position`, string(room), pos)
}

// txnKey names one client transaction: transaction IDs are scoped to a
// device and an endpoint (client-server API "Transaction identifiers").
type txnKey struct {
	user   spec.UserID
	device string
	scope  string // txnScope
	txn    string
}

// The scope of a transaction ID is the request path without the txnId:
// /send/{eventType} in one room, or /redact/{eventId}.
func sendScope(room spec.RoomID, typ string) string { return "send " + string(room) + " " + typ }

func redactScope(room spec.RoomID, target spec.EventID) string {
	return "redact " + string(room) + " " + string(target)
}

// txnScope is the scope of the request that sent an event: /send never
// sends a redaction, so the event tells the endpoint.
func txnScope(p *events.PDU) string {
	if p.Type() == spec.MRoomRedaction {
		return redactScope(p.RoomID(), p.Redacts())
	}
	return sendScope(p.RoomID(), p.Type())
}

type txnEntry struct {
	event spec.EventID
	ts    int64
}

// txnWindow is how long a transaction ID stays idempotent. Clients retry
// within seconds or minutes; a day covers a phone that was offline
// overnight, and bounds the memory the index takes.
const txnWindow = 24 * time.Hour

// loadTxns fills the in-memory transaction index with the window's rows,
// so that a send never reads the database to check for a retry.
func (s *Service) loadTxns(q querier) error {
	rows, err := q.Query(`SELECT user_id, device_id, scope, txn_id, event_id, ts FROM txn_ids WHERE ts > $1`,
		s.now().Add(-txnWindow).UnixMilli())
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k txnKey
		var e txnEntry
		var user, id string
		if err := rows.Scan(&user, &k.device, &k.scope, &k.txn, &id, &e.ts); err != nil {
			return err
		}
		k.user, e.event = spec.UserID(user), spec.EventID(id)
		s.txns[k] = e
	}
	return rows.Err()
}

// txnEvent returns the event a transaction already produced, from memory.
func (s *Service) txnEvent(k txnKey) spec.EventID {
	s.txnMu.Lock()
	defer s.txnMu.Unlock()
	return s.txns[k].event
}

// rememberTxns records the transaction IDs of committed events and drops
// entries older than the window.
func (s *Service) rememberTxns(evs []*Event) {
	s.txnMu.Lock()
	defer s.txnMu.Unlock()
	now := s.now()
	for _, ev := range evs {
		if ev.TxnID != "" {
			s.txns[txnKey{ev.PDU.Sender(), ev.DeviceID, txnScope(ev.PDU), ev.TxnID}] = txnEntry{ev.PDU.EventID(), ev.PDU.OriginServerTS()}
		}
	}
	if now.Sub(s.txnPruned) > time.Hour {
		cutoff := now.Add(-txnWindow).UnixMilli()
		for k, e := range s.txns {
			if e.ts < cutoff {
				delete(s.txns, k)
			}
		}
		s.txnPruned = now
	}
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
