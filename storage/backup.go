package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
)

// BackupFile writes a consistent copy of the SQLite database at src to dest
// with VACUUM INTO. It works while a server writes to src from another
// process: the copy is read inside one read transaction, so it holds every
// transaction committed before it began and nothing after, and WAL mode lets
// the server's writer go on meanwhile (its checkpoints simply stop short of
// the frames the copy still reads).
//
// The connection is opened read-only (mode=ro): the backup can never change
// the live database, and closing it never checkpoints the server's WAL.
// query_only would not do: SQLite refuses VACUUM INTO under it. dest must not
// exist; it is created with mode 0600 and fsynced before BackupFile returns.
func BackupFile(ctx context.Context, src, dest string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	// VACUUM INTO accepts an existing empty file, which lets the copy have
	// the data directory's private mode from its first byte.
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	f.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(dest)
		}
	}()
	q := url.Values{}
	q.Set("mode", "ro")
	q.Set("_busy_timeout", "10000")
	conn, err := sql.Open("sqlite3", "file:"+src+"?"+q.Encode())
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", src, err)
	}
	defer conn.Close()
	conn.SetMaxOpenConns(1)
	if _, err := conn.ExecContext(ctx, "VACUUM INTO $1", dest); err != nil {
		return fmt.Errorf("backup: copy %s: %w", src, err)
	}
	if err := syncFile(dest); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	ok = true
	return nil
}

// FileInfo is what Inspect finds in a database file.
type FileInfo struct {
	// Integrity is SQLite's integrity_check verdict, "ok" when sound.
	Integrity string
	// Versions is the recorded schema version of every domain.
	Versions map[string]int
}

// Inspect checks a database file that no server is using, such as a
// backup, without changing it.
func Inspect(ctx context.Context, path string) (FileInfo, error) {
	var fi FileInfo
	if _, err := os.Stat(path); err != nil {
		return fi, err
	}
	conn, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		return fi, err
	}
	defer conn.Close()
	conn.SetMaxOpenConns(1)
	if err := conn.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&fi.Integrity); err != nil {
		return fi, fmt.Errorf("integrity check of %s: %w", path, err)
	}
	rows, err := conn.QueryContext(ctx, "SELECT domain, version FROM schema_versions")
	if err != nil {
		return fi, fmt.Errorf("%s is not a Chatalot database: %w", path, err)
	}
	defer rows.Close()
	fi.Versions = map[string]int{}
	for rows.Next() {
		var d string
		var v int
		if err := rows.Scan(&d, &v); err != nil {
			return fi, err
		}
		fi.Versions[d] = v
	}
	return fi, rows.Err()
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}
