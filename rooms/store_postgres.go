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
	10: searchTSVector,
}

// searchTSVector is search_tsv, PostgreSQL's full-text index of the search
// index: per event (by position) a tsvector of the words search_words holds,
// with a GIN index that search queries through a tsquery and ranks with
// ts_rank. Triggers keep it: a word stored adds its lexeme (so migrate-db's
// copy of search_words fills it too), a search_docs row deleted (redaction,
// purge, retention, erasure, reindex) takes the event's tsvector with it.
// The lexemes are the words as Go folded them (array_to_tsvector, no text
// search configuration): that is the 'simple' configuration's behaviour, not
// 'english' stemming, so PostgreSQL finds exactly what SQLite finds.
const searchTSVector = `
CREATE TABLE search_tsv (
	position BIGINT   PRIMARY KEY,
	tsv      tsvector NOT NULL
);
CREATE INDEX search_tsv_gin ON search_tsv USING GIN (tsv);
INSERT INTO search_tsv (position, tsv)
	SELECT position, array_to_tsvector(array_agg(word)) FROM search_words GROUP BY position;
CREATE FUNCTION search_tsv_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO search_tsv (position, tsv) VALUES (NEW.position, array_to_tsvector(ARRAY[NEW.word]))
		ON CONFLICT (position) DO UPDATE SET tsv = search_tsv.tsv || EXCLUDED.tsv;
	RETURN NULL;
END $$;
CREATE TRIGGER search_words_tsv AFTER INSERT ON search_words FOR EACH ROW EXECUTE FUNCTION search_tsv_add();
CREATE FUNCTION search_tsv_drop() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM search_tsv WHERE position = OLD.position;
	RETURN NULL;
END $$;
CREATE TRIGGER search_docs_tsv AFTER DELETE ON search_docs FOR EACH ROW EXECUTE FUNCTION search_tsv_drop();
CREATE TRIGGER search_words_tsv_drop AFTER DELETE ON search_words FOR EACH ROW EXECUTE FUNCTION search_tsv_drop();`
