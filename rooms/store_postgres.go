package rooms

// postgresMigrations are the rooms migrations that PostgreSQL runs instead
// of the SQLite text (storage.Schema.Postgres): 2 and 4 backfill with
// SQLite's JSON functions. A PostgreSQL database is always made at the
// current schema (it cannot have rows from before these migrations), so
// they are the same tables and indexes without the backfill.
var postgresMigrations = map[int]string{
	2: `
CREATE TABLE event_relations (
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
);`,
	4: `
DROP TABLE txn_ids;
CREATE TABLE txn_ids (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	scope     TEXT NOT NULL,
	txn_id    TEXT NOT NULL,
	event_id  TEXT NOT NULL REFERENCES events (event_id),
	ts        BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE INDEX txn_ids_ts ON txn_ids (ts);`,
}
