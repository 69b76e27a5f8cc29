package rooms

// postgresMigrations are the rooms migrations that PostgreSQL runs instead
// of the SQLite text (storage.Schema.Postgres): 2 and 4 backfill with
// SQLite's JSON functions. A PostgreSQL database is always made at the
// current schema (it cannot have rows from before these migrations), so
// they are the same tables and indexes without the backfill.
var postgresMigrations = map[int]string{
	2: "\n" + relationTables,
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
