package storage

import (
	"context"
	"errors"
	"testing"

	"github.com/chatalot/chatalot/internal/pgtest"
)

// TestPostgresDialect: a migration's PostgreSQL text replaces the SQLite
// one, the known SQLite-only words are rewritten, the read pool cannot
// write, and the SQLite file operations say they are not for PostgreSQL.
func TestPostgresDialect(t *testing.T) {
	db, err := Open(pgtest.DSN(t), Options{FilePath: "/nowhere/chatalot.db"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	s := Schema{Domain: "d", Migrations: []string{
		`CREATE TABLE a (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID`,
		`SELECT json_extract('{}', '$.x')`, // SQLite only
	}, Postgres: map[int]string{2: `CREATE TABLE b (k TEXT)`}}
	if err := db.Migrate(ctx, s); err != nil {
		t.Fatal(err)
	}
	if db.Dialect() != Postgres || db.Path() != "/nowhere/chatalot.db" {
		t.Fatalf("dialect %q, path %q", db.Dialect(), db.Path())
	}
	if err := db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec("INSERT INTO a (k, v) VALUES ($1, $2)", "x", []byte{0, 1})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var v []byte
	if err := db.QueryRow(ctx, "SELECT v FROM a WHERE k = $1", "x").Scan(&v); err != nil || len(v) != 2 {
		t.Fatalf("read back %v, %v", v, err)
	}
	if _, err := db.read.ExecContext(ctx, "INSERT INTO b (k) VALUES ('y')"); err == nil {
		t.Fatal("the read pool wrote")
	}
	if _, _, err := db.Compact(ctx); !errors.Is(err, ErrNotOnPostgres) {
		t.Fatalf("Compact: %v", err)
	}
	if err := db.FreePages(ctx); err != nil {
		t.Fatalf("FreePages: %v", err)
	}
	if sp, err := db.Space(ctx); err != nil || sp.FileBytes <= 0 {
		t.Fatalf("Space: %+v, %v", sp, err)
	}
}
