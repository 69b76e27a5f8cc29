package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Schema is one package's tables: its migrations, numbered from 1 by their
// place in the list. A released migration is never edited; changes are new
// migrations appended at the end.
//
// Postgres holds, by migration number (from 1), the text PostgreSQL runs
// instead of the SQLite one, for the few migrations that are not portable
// (an SQLite JSON function in a backfill, say). It ends in the same schema.
// Every other migration runs on PostgreSQL as written, after pgRewrite.
type Schema struct {
	Domain     string
	Migrations []string
	Postgres   map[int]string
}

// migration is the text of migration i (from 0) for the dialect.
func (s Schema) migration(d Dialect, i int) string {
	if d != Postgres {
		return s.Migrations[i]
	}
	if m, ok := s.Postgres[i+1]; ok {
		return m
	}
	return pgRewrite(s.Migrations[i])
}

// pgRewrite turns SQLite-only words of a migration into PostgreSQL's: a
// short, explicit list of table options and type names, nothing clever.
func pgRewrite(m string) string {
	return pgWords.Replace(m)
}

var pgWords = strings.NewReplacer(
	") WITHOUT ROWID", ")", // a storage layout hint PostgreSQL has no use for
	" BLOB", " BYTEA",
)

// own is storage's own schema: the schema versions and the stream position.
var own = Schema{Domain: "storage", Migrations: []string{`
CREATE TABLE stream_position (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	position BIGINT  NOT NULL CHECK (position >= 0)
);
INSERT INTO stream_position (id, position) VALUES (1, 0);`,
}}

// NewerSchemaError says the data directory was written by a newer Chatalot.
type NewerSchemaError struct {
	Domain        string
	Have, Support int
}

func (e *NewerSchemaError) Error() string {
	return fmt.Sprintf("the database was written by a newer Chatalot (schema %q version %d; this binary knows up to %d): run the newer binary, or restore a backup", e.Domain, e.Have, e.Support)
}

// Migration is one schema that Migrate brought up to date, from version
// From (0: the schema was new) to version To.
type Migration struct {
	Domain   string
	From, To int
}

// Migrated lists what the last Migrate changed, in the order it ran, so
// that the caller can log each migration once.
func (db *DB) Migrated() []Migration { return db.migrated }

// Migrate brings every schema up to date in one transaction, then starts the
// writer. It refuses a database written by a newer binary.
func (db *DB) Migrate(ctx context.Context, schemas ...Schema) error {
	var applied []Migration
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if _, err := tx.Exec(`CREATE TABLE IF NOT EXISTS schema_versions (
		domain  TEXT    PRIMARY KEY,
		version INTEGER NOT NULL CHECK (version >= 0)
	)`); err != nil {
		return fmt.Errorf("create schema_versions: %w", err)
	}
	for _, s := range append([]Schema{own}, schemas...) {
		var have int
		err := tx.QueryRow("SELECT version FROM schema_versions WHERE domain = $1", s.Domain).Scan(&have)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read schema version of %s: %w", s.Domain, err)
		}
		if have > len(s.Migrations) {
			return &NewerSchemaError{Domain: s.Domain, Have: have, Support: len(s.Migrations)}
		}
		for i := have; i < len(s.Migrations); i++ {
			if _, err := tx.Exec(s.migration(db.dialect, i)); err != nil {
				return fmt.Errorf("migration %s %d: %w", s.Domain, i+1, err)
			}
		}
		if have < len(s.Migrations) {
			applied = append(applied, Migration{Domain: s.Domain, From: have, To: len(s.Migrations)})
			if _, err := tx.Exec(`INSERT INTO schema_versions (domain, version) VALUES ($1, $2)
				ON CONFLICT (domain) DO UPDATE SET version = excluded.version`, s.Domain, len(s.Migrations)); err != nil {
				return fmt.Errorf("record schema version of %s: %w", s.Domain, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migrations: %w", err)
	}
	db.migrated = applied
	return db.startWriter(ctx)
}

// SchemaVersions returns the recorded version of every schema.
func (db *DB) SchemaVersions(ctx context.Context) (map[string]int, error) {
	rows, err := db.Query(ctx, "SELECT domain, version FROM schema_versions")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var d string
		var v int
		if err := rows.Scan(&d, &v); err != nil {
			return nil, err
		}
		out[d] = v
	}
	return out, rows.Err()
}
