package storage

import (
	"context"
	"fmt"
	"os"
	"time"
)

// Space is how much room the database takes on disk.
type Space struct {
	// FileBytes is the size of the database file plus its write-ahead log.
	FileBytes int64 `json:"file_bytes"`
	// FreeBytes are pages inside the file that hold no data (freed by
	// deletes and not yet given back).
	FreeBytes int64 `json:"free_bytes"`
	// AutoVacuum is the file's mode: "none", "full" or "incremental".
	AutoVacuum string `json:"auto_vacuum"`
}

// Space measures the database: file sizes and free pages. On PostgreSQL
// FileBytes is the database's size (pg_database_size), FreeBytes 0 and
// AutoVacuum "postgres": PostgreSQL's autovacuum manages free space.
func (db *DB) Space(ctx context.Context) (Space, error) {
	var sp Space
	if db.dialect == Postgres {
		sp.AutoVacuum = "postgres"
		err := db.read.QueryRowContext(ctx, "SELECT pg_database_size(current_database())").Scan(&sp.FileBytes)
		return sp, err
	}
	var pageSize, free, mode int64
	if err := db.read.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return sp, err
	}
	if err := db.read.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil {
		return sp, err
	}
	if err := db.read.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		return sp, err
	}
	sp.FreeBytes = free * pageSize
	sp.AutoVacuum = map[int64]string{0: "none", 1: "full", 2: "incremental"}[mode]
	for _, p := range []string{db.path, db.path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			sp.FileBytes += fi.Size()
		}
	}
	return sp, nil
}

// FreePages gives the file's free pages back to the file system
// (incremental vacuum) and truncates the write-ahead log, so that what a
// purge deleted stops taking disk. It does nothing on a file whose
// auto-vacuum mode is not incremental (one made before Chatalot set it):
// Compact converts such a file. On PostgreSQL it does nothing: autovacuum
// reuses what deletes free.
func (db *DB) FreePages(ctx context.Context) error {
	if db.dialect == Postgres {
		return nil
	}
	err := db.Write(ctx, func(tx *Tx) error {
		// incremental_vacuum returns a row per page it freed (none at
		// all on a file without incremental mode); reading them runs it.
		rows, err := tx.Query("PRAGMA incremental_vacuum")
		if err != nil {
			return err
		}
		for rows.Next() {
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("incremental vacuum: %w", err)
	}
	db.checkpointTruncate(ctx)
	return nil
}

// Compact rewrites the whole database file without its free pages
// (VACUUM), switching it to incremental auto-vacuum on the way, and
// truncates the write-ahead log. Writes wait while it runs (the writer's
// connection runs it); reads go on. It returns the space before and after.
func (db *DB) Compact(ctx context.Context) (before, after Space, err error) {
	if db.dialect == Postgres {
		return before, after, ErrNotOnPostgres
	}
	if before, err = db.Space(ctx); err != nil {
		return before, after, err
	}
	conn, err := db.write.Conn(ctx) // the one writer connection: the writer waits for it
	if err != nil {
		return before, after, err
	}
	_, err = conn.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL; VACUUM")
	conn.Close()
	if err != nil {
		return before, after, fmt.Errorf("vacuum: %w", err)
	}
	db.checkpointTruncate(ctx)
	after, err = db.Space(ctx)
	return before, after, err
}

// checkpointTruncate copies the write-ahead log into the file and empties
// it. A checkpoint running beside it (checkpoint.go) or a reader on an old
// snapshot makes it busy: it tries again for a while, then leaves the job
// to the checkpointer.
func (db *DB) checkpointTruncate(ctx context.Context) {
	for try := 0; try < 50; try++ {
		conn, err := db.write.Conn(ctx)
		if err != nil {
			return
		}
		var busy, logPages, done int64
		err = conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done)
		conn.Close()
		if err == nil && busy == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
