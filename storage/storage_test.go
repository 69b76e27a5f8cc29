package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
)

var testSchema = Schema{Domain: "test", Migrations: []string{
	`CREATE TABLE items (pos BIGINT PRIMARY KEY, v TEXT NOT NULL)`,
}}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// opener opens a new, migrated test database and returns it with the path
// (or URL) that opens it again.
type opener func(t *testing.T) (*DB, string)

// backends are the stores every test of the writer and the migrations runs
// on; the SQLite file operations (backup, compaction, checkpoints) are
// tested on SQLite only.
var backends = []struct {
	name     string
	location func(t *testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "db.sqlite") }},
	{"postgres", func(t *testing.T) string { return pgtest.DSN(t) }},
}

func onEachBackend(t *testing.T, f func(t *testing.T, open opener)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f(t, func(t *testing.T) (*DB, string) { return openAt(t, b.location(t)) })
		})
	}
}

// openTest opens a new SQLite test database.
func openTest(t *testing.T) (*DB, string) {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "db.sqlite"))
}

func openAt(t *testing.T, path string) (*DB, string) {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(context.Background(), testSchema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func insert(db *DB, v string) (int64, error) {
	var pos int64
	err := db.Write(context.Background(), func(tx *Tx) error {
		pos = tx.NextPosition()
		_, err := tx.Exec("INSERT INTO items (pos, v) VALUES ($1, $2)", pos, v)
		return err
	})
	return pos, err
}

func count(t *testing.T, db *DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConcurrentWritesGetDistinctIncreasingPositions(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, _ := openTest(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[int64]bool{}
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pos, err := insert(db, "x")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if seen[pos] {
					t.Errorf("position %d handed out twice", pos)
				}
				seen[pos] = true
				if db.Position() < pos {
					t.Errorf("Write returned before position %d was committed (at %d)", pos, db.Position())
				}
			}()
		}
		wg.Wait()
		if got := count(t, db); got != 200 {
			t.Fatalf("rows = %d, want 200", got)
		}
		if db.Position() != 200 {
			t.Fatalf("position = %d, want 200", db.Position())
		}
	})
}

func TestFailedWriteRollsBackOnlyItself(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, _ := openTest(t)
		boom := errors.New("boom")
		hookRan := false
		err := db.Write(context.Background(), func(tx *Tx) error {
			tx.NextPosition()
			if _, err := tx.Exec("INSERT INTO items (pos, v) VALUES ($1, $2)", 1000, "half"); err != nil {
				return err
			}
			tx.AfterCommit(func() { hookRan = true })
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
		if hookRan {
			t.Fatal("after-commit hook ran for a rolled-back write")
		}
		if _, err := insert(db, "ok"); err != nil {
			t.Fatal(err)
		}
		if got := count(t, db); got != 1 {
			t.Fatalf("rows = %d, want 1 (the failed write must leave nothing)", got)
		}
	})
}

func TestFaultHookFailsEachStep(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, _ := openTest(t)
		db.SetFaultHook(func(step int) error {
			if step == 1 {
				return ErrInjected
			}
			return nil
		})
		if _, err := insert(db, "x"); !errors.Is(err, ErrInjected) {
			t.Fatalf("err = %v, want injected fault", err)
		}
		db.SetFaultHook(nil)
		if got := count(t, db); got != 0 {
			t.Fatalf("rows = %d after injected fault", got)
		}
	})
}

func TestPositionSurvivesReopen(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, path := openTest(t)
		for i := 0; i < 5; i++ {
			if _, err := insert(db, "x"); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()
		db2, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db2.Close()
		if err := db2.Migrate(context.Background(), testSchema); err != nil {
			t.Fatal(err)
		}
		if db2.Position() != 5 {
			t.Fatalf("position after reopen = %d, want 5", db2.Position())
		}
		pos, err := insert(db2, "y")
		if err != nil || pos != 6 {
			t.Fatalf("next position = %d, %v; want 6", pos, err)
		}
	})
}

func TestNewerSchemaRefused(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, path := openTest(t)
		db.Close()
		db2, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db2.Close()
		older := Schema{Domain: "test", Migrations: nil}
		var newer *NewerSchemaError
		if err := db2.Migrate(context.Background(), older); !errors.As(err, &newer) {
			t.Fatalf("err = %v, want NewerSchemaError", err)
		}
	})
}

// TestMigratedListsWhatRan: a new database reports every schema from 0; a
// reopened one reports only the migration added since, from its old
// version, and nothing once it is up to date.
func TestMigratedListsWhatRan(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, path := openTest(t)
		if got, want := db.Migrated(), []Migration{{"storage", 0, 1}, {"test", 0, 1}}; !reflect.DeepEqual(got, want) {
			t.Fatalf("new database: %v, want %v", got, want)
		}
		db.Close()
		grown := Schema{Domain: "test", Migrations: append(append([]string(nil), testSchema.Migrations...), `CREATE TABLE more (id INTEGER)`)}
		for _, want := range [][]Migration{{{"test", 1, 2}}, nil} {
			db2, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := db2.Migrate(context.Background(), grown); err != nil {
				t.Fatal(err)
			}
			if got := db2.Migrated(); !reflect.DeepEqual(got, want) {
				t.Fatalf("reopened: %v, want %v", got, want)
			}
			db2.Close()
		}
	})
}

// TestSubmitAfterFailedWriteFails: a write submitted after another one
// runs only if that one succeeded, whether the two share a batch or not;
// a failure does not spread to independent writes.
func TestSubmitAfterFailedWriteFails(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, _ := openTest(t)
		ctx := context.Background()
		boom := errors.New("boom")
		add := func(v string) func(*Tx) error {
			return func(tx *Tx) error {
				_, err := tx.Exec("INSERT INTO items (pos, v) VALUES ($1, $2)", tx.NextPosition(), v)
				return err
			}
		}
		for _, sameBatch := range []bool{true, false} {
			// Hold the writer so that the writes queue up and share a batch.
			release := make(chan struct{})
			var holding *Pending
			if sameBatch {
				started := make(chan struct{})
				holding = db.Submit(ctx, nil, func(tx *Tx) error { close(started); <-release; return nil })
				<-started
			}
			first := db.Submit(ctx, nil, func(tx *Tx) error { return boom })
			if !sameBatch {
				if err := first.Wait(); !errors.Is(err, boom) {
					t.Fatalf("first: %v", err)
				}
			}
			ran := false
			second := db.Submit(ctx, first, func(tx *Tx) error { ran = true; return add("second")(tx) })
			third := db.Submit(ctx, second, add("third"))
			independent := db.Submit(ctx, nil, add("independent"))
			close(release)
			if holding != nil {
				if err := holding.Wait(); err != nil {
					t.Fatal(err)
				}
			}
			if err := first.Wait(); !errors.Is(err, boom) {
				t.Fatalf("same batch %v: first: %v", sameBatch, err)
			}
			if err := second.Wait(); !errors.Is(err, ErrDependency) || ran {
				t.Fatalf("same batch %v: second: %v (ran: %v)", sameBatch, err, ran)
			}
			if err := third.Wait(); !errors.Is(err, ErrDependency) {
				t.Fatalf("same batch %v: third: %v", sameBatch, err)
			}
			if err := independent.Wait(); err != nil {
				t.Fatalf("same batch %v: independent: %v", sameBatch, err)
			}
		}
		// After a success, the dependent write runs.
		ok := db.Submit(ctx, nil, add("ok"))
		if err := db.Submit(ctx, ok, add("after ok")).Wait(); err != nil {
			t.Fatal(err)
		}
		if got := count(t, db); got != 4 { // two independents, ok, after ok
			t.Fatalf("rows = %d, want 4", got)
		}
	})
}

// TestWALIsCheckpointedBesideTheWriter: with SQLite's own checkpoints off,
// the checkpointer keeps the WAL from growing without bound.
func TestWALIsCheckpointedBesideTheWriter(t *testing.T) {
	db, path := openTest(t)
	blob := strings.Repeat("x", 8192)
	total := int64(0)
	for i := range 2000 {
		if _, err := insert(db, fmt.Sprintf("%d%s", i, blob)); err != nil {
			t.Fatal(err)
		}
		total += int64(len(blob))
	}
	// Without checkpoints the WAL would hold every row written (16 MB);
	// with them it comes back under twice the threshold once the
	// checkpointer has caught up (the writer finishes a checkpoint after
	// a commit, hence the writes while waiting).
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() < 2*checkpointPages*4096 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL is %d bytes after writing %d: not checkpointed", fi.Size(), total)
		}
		if _, err := insert(db, fmt.Sprintf("more %d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWriterRefusesAMovedPosition: when the stored stream position is not
// the one this writer last committed (another server writes the same
// database), the writer stores nothing rather than hand out positions the
// other has handed out too.
func TestWriterRefusesAMovedPosition(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, _ := openTest(t)
		if _, err := insert(db, "before"); err != nil {
			t.Fatal(err)
		}
		// Another writer's commit, as it would look to this one.
		if err := db.Write(context.Background(), func(tx *Tx) error {
			_, err := tx.Exec("UPDATE stream_position SET position = position + 7 WHERE id = 1")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := insert(db, "after"); !errors.Is(err, ErrPositionMoved) {
			t.Fatalf("err = %v, want ErrPositionMoved", err)
		}
		if got := count(t, db); got != 1 {
			t.Fatalf("rows = %d, want 1 (the refused write must leave nothing)", got)
		}
	})
}
