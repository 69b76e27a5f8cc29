package storage

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Dialect is the SQL a database speaks, for the few statements that differ.
type Dialect string

const (
	// SQLite is the embedded default.
	SQLite Dialect = "sqlite"
	// Postgres is PostgreSQL, chosen with a postgres:// URL.
	Postgres Dialect = "postgres"
)

// IsPostgresURL reports whether a database setting names a PostgreSQL
// database rather than an SQLite file.
func IsPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// ErrNotOnPostgres is what the SQLite file operations (integrity check,
// VACUUM INTO backup, compaction) return on PostgreSQL, whose own tools
// (pg_dump, VACUUM, amcheck) do these jobs.
var ErrNotOnPostgres = errors.New("not available on PostgreSQL (an SQLite file operation; use PostgreSQL's own tools)")

// openPostgres opens the PostgreSQL database at url with the same shape as
// the SQLite backend: one writer connection, which the ordered writer owns
// and which group-commits, and a pool of read-only connections. There is
// no checkpointer: PostgreSQL manages its own log.
func openPostgres(url string, opts Options) (*DB, error) {
	// Each pool gets a config of its own: the parsed one holds a map.
	config := func(params map[string]string) (*pgx.ConnConfig, error) {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			return nil, fmt.Errorf("database URL: %w", err)
		}
		for k, v := range params {
			cfg.RuntimeParams[k] = v
		}
		return cfg, nil
	}
	wp := map[string]string{}
	if opts.Durability != "full" {
		// As SQLite's synchronous=NORMAL: a crash of the database server
		// may lose the last commits, but never leaves a partial one.
		wp["synchronous_commit"] = "off"
	}
	if opts.Node != "" {
		// A node frozen in the middle of a batch (SIGSTOP, a long pause)
		// loses its transaction and its locks, the room leases' shared
		// locks among them, instead of blocking another node's takeover
		// (docs/scaling.md). PostgreSQL ends the whole session: the
		// node's next batch fails and reconnects.
		wp["idle_in_transaction_session_timeout"] = clusterIdleTxTimeout
	}
	wcfg, err := config(wp)
	if err != nil {
		return nil, err
	}
	rcfg, err := config(map[string]string{"default_transaction_read_only": "on"})
	if err != nil {
		return nil, err
	}
	w := stdlib.OpenDB(*wcfg)
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.Ping(); err != nil {
		w.Close()
		return nil, fmt.Errorf("open database %s: %w", redactURL(url), err)
	}
	if opts.Serving || opts.Node != "" {
		if err := lockServing(w, url, opts.Node); err != nil {
			w.Close()
			return nil, err
		}
	}
	r := stdlib.OpenDB(*rcfg)
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	ckptDone := make(chan struct{})
	close(ckptDone)
	return &DB{
		dialect:  Postgres,
		path:     opts.FilePath,
		write:    w,
		read:     r,
		queue:    make(chan *job, 1024),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		ckptDone: ckptDone,
		node:     opts.Node,
		url:      url,
	}, nil
}

// clusterIdleTxTimeout bounds how long a cluster node's write transaction
// may sit idle: a batch runs statement after statement, so only a frozen
// process gets near it.
const clusterIdleTxTimeout = "5s"

// servingLock is the advisory lock a server holds on its database: alone,
// or shared by the nodes of a cluster (each also holding nodeLock for its
// name).
const servingLock int64 = migrateLock + 1

// nodeLock is the lock space of cluster nodes' names (two-key advisory
// locks: this, and the name's hash).
const nodeLock int32 = 0x6e6f6465 // "node"

// ErrDatabaseServed is the outcome of opening, as a server, a PostgreSQL
// database another server holds.
var ErrDatabaseServed = errors.New("another Chatalot server is using this database (one server per database, or nodes of one cluster each with a name of its own)")

// lockServing takes the serving locks on the writer's connection, the one
// session that lives as long as the DB: the serving lock, exclusive for a
// lone server and shared for a cluster's node, and the node's own. Were
// that connection ever replaced, the locks would go with it; the writer's
// position check (savePosition) still refuses to write beside a server
// that does not know of this one.
//
// It waits a little: a server restarted after a crash may find its
// predecessor's session not yet ended by PostgreSQL.
func lockServing(w *sql.DB, url, node string) error {
	query, args := "SELECT pg_try_advisory_lock($1)", []any{servingLock}
	if node != "" {
		query = "SELECT pg_try_advisory_lock_shared($1) AND pg_try_advisory_lock($2, hashtext($3))"
		args = []any{servingLock, nodeLock, node}
	}
	deadline := time.Now().Add(servingLockWait)
	for {
		var got bool
		if err := w.QueryRow(query, args...).Scan(&got); err != nil {
			return fmt.Errorf("lock database %s: %w", redactURL(url), err)
		}
		if got {
			return nil
		}
		// One of the two may have been taken: drop them to try again.
		if _, err := w.Exec("SELECT pg_advisory_unlock_all()"); err != nil {
			return fmt.Errorf("lock database %s: %w", redactURL(url), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("database %s: %w", redactURL(url), ErrDatabaseServed)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// servingLockWait is how long lockServing waits for another session's lock.
var servingLockWait = 3 * time.Second

// redactURL drops the password from a database URL, for messages.
func redactURL(s string) string {
	cfg, err := pgx.ParseConfig(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}
