package storage

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// fillAndDelete writes about 4 MB of rows and deletes them all.
func fillAndDelete(t *testing.T, db *DB) {
	t.Helper()
	big := strings.Repeat("x", 4000)
	for i := 0; i < 1000; i++ {
		if _, err := insert(db, big); err != nil {
			t.Fatal(err)
		}
	}
	removed := Removed{}
	if err := db.Write(context.Background(), func(tx *Tx) error {
		return tx.Delete(removed, "items", "DELETE FROM items")
	}); err != nil || removed["items"] != 1000 {
		t.Fatalf("delete: %v %v", err, removed)
	}
}

// TestFreePagesShrinksNewDatabase: a new database is in incremental
// vacuum, so the pages a delete frees go back to the file system.
func TestFreePagesShrinksNewDatabase(t *testing.T) {
	db, _ := openTest(t)
	ctx := context.Background()
	fillAndDelete(t, db)
	db.checkpointTruncate(ctx)
	before, _ := db.Space(ctx)
	if before.AutoVacuum != "incremental" || before.FreeBytes < 3<<20 {
		t.Fatalf("before: %+v", before)
	}
	if err := db.FreePages(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := db.Space(ctx)
	if after.FreeBytes != 0 || after.FileBytes > before.FileBytes-3<<20 {
		t.Fatalf("free pages: %+v → %+v", before, after)
	}
}

// TestCompactConvertsOldDatabase: a file made without auto-vacuum keeps
// its free pages until Compact, which shrinks it and turns incremental
// vacuum on for the future.
func TestCompactConvertsOldDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.sqlite")
	old, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec("CREATE TABLE x (a INTEGER)"); err != nil {
		t.Fatal(err)
	}
	old.Close()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if err := db.Migrate(ctx, testSchema); err != nil {
		t.Fatal(err)
	}
	fillAndDelete(t, db)
	if err := db.FreePages(ctx); err != nil {
		t.Fatal(err)
	}
	sp, _ := db.Space(ctx)
	if sp.AutoVacuum != "none" || sp.FreeBytes < 3<<20 {
		t.Fatalf("an old file after FreePages: %+v", sp)
	}
	before, after, err := db.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.AutoVacuum != "incremental" || after.FreeBytes != 0 || after.FileBytes > before.FileBytes-3<<20 {
		t.Fatalf("compact: %+v → %+v", before, after)
	}
	// Writes go on afterwards.
	if _, err := insert(db, "after"); err != nil || count(t, db) != 1 {
		t.Fatalf("write after compact: %v", err)
	}
}
