package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// A data directory belongs to one server name: every user ID, room ID and
// signed event in it carries that name. Served under another name, its
// accounts become unreachable ("invalid user name or password") and new
// ones mix in beside them. So the first start (or the first admin command)
// records the name in the database, and every later start and admin
// command refuses a different one, naming both. The record is in the
// database so that backups carry it.
var identitySchema = storage.Schema{Domain: "identity", Migrations: []string{`
CREATE TABLE server_identity (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	server_name TEXT    NOT NULL CHECK (server_name <> '')
);`,
}}

// serverNameMismatch is a data directory started under another name.
type serverNameMismatch struct{ dir, recorded, configured string }

func (e *serverNameMismatch) Error() string {
	return fmt.Sprintf("the data directory %s belongs to the server name %q, but server_name is %q: "+
		"set server_name = %q (or --server-name %s) to serve it; a server name cannot change once a data directory is in use",
		e.dir, e.recorded, e.configured, e.recorded, e.recorded)
}

// checkServerName compares the configured server name with the one the
// data directory records, recording it when there is none yet. A data
// directory from before the name was recorded belongs to the server name
// of its accounts. db must be migrated with identitySchema and auth's
// schema.
func checkServerName(ctx context.Context, db *storage.DB, dir, configured string) error {
	var recorded string
	err := db.QueryRow(ctx, `SELECT server_name FROM server_identity WHERE id = 1`).Scan(&recorded)
	switch {
	case err == nil:
		if recorded != configured {
			return &serverNameMismatch{dir: dir, recorded: recorded, configured: configured}
		}
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("read the data directory's server name: %w", err)
	}
	names, err := auth.ServerNamesInUse(ctx, db)
	if err != nil {
		return fmt.Errorf("read the data directory's accounts: %w", err)
	}
	for _, n := range names {
		if string(n) != configured {
			return &serverNameMismatch{dir: dir, recorded: string(n), configured: configured}
		}
	}
	return db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO server_identity (id, server_name) VALUES (1, $1) ON CONFLICT (id) DO NOTHING`, configured)
		return err
	})
}

// recordedServerName reads the server name a database file (a backup's)
// records, without changing it; empty when it records none.
func recordedServerName(ctx context.Context, path string) (string, error) {
	conn, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		return "", err
	}
	defer conn.Close()
	var name string
	err = conn.QueryRowContext(ctx, `SELECT server_name FROM server_identity WHERE id = 1`).Scan(&name)
	// No table: a database from before the name was recorded.
	if errors.Is(err, sql.ErrNoRows) || err != nil && strings.Contains(err.Error(), "no such table") {
		return "", nil
	}
	return name, err
}

// requireDataDir refuses to work on a data directory that does not exist:
// an admin command run without --config would otherwise make a new,
// empty one in the current directory and put the account there, where
// the server never looks.
func requireDataDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if abs, err := filepath.Abs(dir); err == nil && abs != dir {
			dir = fmt.Sprintf("%s (%s)", dir, abs)
		}
		return fmt.Errorf("there is no data directory at %s, where data_dir points; give the server's with "+
			"--config FILE (the server's configuration, such as /etc/chatalot/chatalot.toml) or --data-dir DIR "+
			"(a new server's data directory is made by its first start, chatalot serve)", dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("data_dir %s is not a directory", dir)
	}
	return nil
}

// logMigrations logs each schema migration the last Migrate applied, once:
// a new database as one line, an upgraded one as a line per schema.
func logMigrations(log zerolog.Logger, db *storage.DB) {
	ms := db.Migrated()
	if len(ms) == 0 {
		return
	}
	if newDatabase(ms) {
		log.Info().Str("schemas", formatMigrations(ms)).Msg("created a new database")
		return
	}
	for _, m := range ms {
		log.Info().Str("schema", m.Domain).Int("from", m.From).Int("to", m.To).
			Msgf("migrated schema %s: %d → %d", m.Domain, m.From, m.To)
	}
}

// printMigrations is logMigrations for the admin commands, on standard
// error. A data directory new to the database gets one line.
func printMigrations(w io.Writer, db *storage.DB, dir string) {
	ms := db.Migrated()
	if newDatabase(ms) {
		fmt.Fprintf(w, "chatalot: created a new database in %s\n", dir)
		return
	}
	for _, m := range ms {
		fmt.Fprintf(w, "chatalot: migrated schema %s: %d → %d\n", m.Domain, m.From, m.To)
	}
}

// newDatabase reports whether the migrations made the database itself:
// storage's own schema comes first in every database.
func newDatabase(ms []storage.Migration) bool {
	return len(ms) > 0 && ms[0].Domain == "storage" && ms[0].From == 0
}

// formatMigrations lists schemas with their new versions: "auth 3, rooms 5".
func formatMigrations(ms []storage.Migration) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s %d", m.Domain, m.To)
	}
	return strings.Join(parts, ", ")
}

// checkSQLiteLeftBehind refuses a new, empty PostgreSQL database while the
// data directory still holds an SQLite one: the server would start with
// no accounts and no rooms, as if the data were lost, and the two would
// drift apart from then on.
//
// It also refuses a database an interrupted migrate-db left half copied.
func checkSQLiteLeftBehind(ctx context.Context, db *storage.DB, p dataPaths) error {
	if db.Dialect() != storage.Postgres {
		return nil
	}
	// (An error here is the usual case: no migrate-db made this database.)
	var copying bool
	if err := db.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM `+migrateMarkers+` WHERE table_name = $1)`,
		migrateComplete).Scan(&copying); err == nil && copying {
		return fmt.Errorf("the PostgreSQL database is a copy that migrate-db has not finished: run \"chatalot migrate-db --to URL\" again (with the server stopped) to complete it")
	}
	if _, err := os.Stat(p.db); err != nil {
		return nil
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM schema_versions`).Scan(&n); err == nil && n > 0 {
		return nil // a PostgreSQL database in use, or one migrate-db filled
	}
	return fmt.Errorf("the data directory %s holds an SQLite database (chatalot.db), but database names a new, empty PostgreSQL database: "+
		"copy the data there first with \"chatalot migrate-db --to URL\" while the server is stopped, or move chatalot.db away to start with no data", p.dir)
}
