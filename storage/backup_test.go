package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestBackupWhileWriting copies the database while writes go on and checks
// that the copy is sound and holds every write acknowledged before the
// backup started, and a prefix of the writes made during it.
func TestBackupWhileWriting(t *testing.T) {
	db, path := openTest(t)
	for i := 0; i < 50; i++ {
		if _, err := insert(db, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	before := db.Position()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := insert(db, "during"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	dest := filepath.Join(t.TempDir(), "copy.db")
	err := BackupFile(context.Background(), path, dest)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("copy: %v, mode %v; want 0600", err, fi.Mode())
	}
	info, err := Inspect(context.Background(), dest)
	if err != nil || info.Integrity != "ok" || info.Versions["test"] != 1 {
		t.Fatalf("inspect copy: %+v %v", info, err)
	}
	cp, err := Open(dest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if err := cp.Migrate(context.Background(), testSchema); err != nil {
		t.Fatal(err)
	}
	var n, maxPos, recorded int64
	if err := cp.QueryRow(context.Background(), "SELECT count(*), max(pos) FROM items").Scan(&n, &maxPos); err != nil {
		t.Fatal(err)
	}
	if err := cp.QueryRow(context.Background(), "SELECT position FROM stream_position").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	// Positions are 1, 2, 3, … with no gaps here: a consistent snapshot
	// holds exactly the first n of them, and the recorded stream position
	// agrees.
	if maxPos < before || n != maxPos || recorded != maxPos {
		t.Fatalf("copy has %d items up to position %d (stream position %d); %d were acknowledged before the backup", n, maxPos, recorded, before)
	}
}

// TestBackupOfClosedDatabase copies a database no process has open (its
// WAL already checkpointed away), as `chatalot admin backup` does for a
// stopped server, and refuses to overwrite an existing file.
func TestBackupOfClosedDatabase(t *testing.T) {
	db, path := openTest(t)
	if _, err := insert(db, "x"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	dest := filepath.Join(t.TempDir(), "copy.db")
	if err := BackupFile(context.Background(), path, dest); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		// A read-only connection may leave the -wal/-shm files behind;
		// that is harmless, but the original must still open.
		t.Log("the -wal file was left in place")
	}
	if err := BackupFile(context.Background(), path, dest); err == nil {
		t.Fatal("backup over an existing file succeeded")
	}
	again, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Migrate(context.Background(), testSchema); err != nil {
		t.Fatal(err)
	}
	if count(t, again) != 1 {
		t.Fatal("original changed")
	}
}
