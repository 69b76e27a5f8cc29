package pgtest

import (
	"database/sql"
	"os"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestFreshDatabasePerTest: each DSN is an empty database of its own.
func TestFreshDatabasePerTest(t *testing.T) {
	for i := 0; i < 2; i++ {
		db, err := sql.Open("pgx", DSN(t))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.QueryRow("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("new database has %d tables", n)
		}
		if _, err := db.Exec("CREATE TABLE x (id BIGINT)"); err != nil {
			t.Fatal(err)
		}
	}
}
