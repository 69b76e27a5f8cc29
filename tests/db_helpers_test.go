package tests

import (
	"database/sql"
	"testing"

	"github.com/chatalot/chatalot/tests/harness"
)

// openServerDB opens the database of the server on data directory dir for
// a test's own checks: its SQLite file read-only (with the extra URL
// parameters params, such as a busy timeout), or its PostgreSQL database
// when the tests run there. On SQLite it fails the test unless
// integrity_check is ok (PostgreSQL has no such whole-database check).
func openServerDB(t *testing.T, dir, params string) *sql.DB {
	t.Helper()
	if harness.OnPostgres(dir) {
		db, err := sql.Open("pgx", harness.Database(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Ping(); err != nil {
			t.Fatal(err)
		}
		return db
	}
	return openIntact(t, "file:"+harness.Database(t, dir)+"?mode=ro"+params)
}

// serverTables lists the tables of a database openServerDB opened.
func serverTables(t *testing.T, dir string, db *sql.DB) []string {
	t.Helper()
	q := `SELECT name FROM sqlite_master WHERE type = 'table'`
	if harness.OnPostgres(dir) {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`
	}
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	return tables
}
