// Package storage is the plumbing under every domain: it opens the database
// (SQLite by default, PostgreSQL when given a postgres:// URL), runs each
// package's numbered migrations, owns the single ordered writer and the
// global stream position. It knows nothing of events or of any domain.
//
// SQL written against it is portable to PostgreSQL: $N placeholders (each
// used once, in increasing order — the SQLite driver binds them by position),
// INSERT … ON CONFLICT, RETURNING, and types that exist in both. Where a
// statement cannot be (SQLite's json_each), the package asks db.Dialect();
// where a migration cannot be, its Schema carries the PostgreSQL text
// (migrate.go).
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"

	_ "github.com/mattn/go-sqlite3" // the embedded default backend
)

// DB is the server's database: one writer connection fed by an ordered
// queue, and a pool of read-only connections.
//
// Why one writer: SQLite allows one writer at a time anyway; queueing writes
// in the process, instead of letting them fight over the file lock, gives a
// single total order for the stream position, lets concurrent writes share a
// commit (group commit), and never returns SQLITE_BUSY to a client.
// PostgreSQL would take several writers, but keeps the one: it is what
// gives the stream position its single total order.
type DB struct {
	dialect Dialect
	path    string
	write   *sql.DB
	read    *sql.DB

	queue chan *job
	stop  chan struct{}
	done  chan struct{}

	// committed is the highest stream position whose transaction committed
	// and whose after-commit hooks ran; next is the last one handed out.
	committed atomic.Int64
	next      int64 // owned by the writer goroutine
	started   bool

	// published are the OnPublish listeners, replaced whole on register.
	published atomic.Pointer[[]func(pos int64)]
	publishMu sync.Mutex

	reads atomic.Int64 // statements run on the read pool, for hot-path checks

	// The WAL is checkpointed by a goroutine of its own (checkpoint.go),
	// not by the commit that fills it: no write waits for a checkpoint.
	ckpt     *sql.DB
	ckptWake chan struct{}
	ckptDone chan struct{}
	truncate atomic.Bool // a passive checkpoint ran: the writer finishes it

	fault atomic.Pointer[FaultHook]

	migrated []Migration // what the last Migrate changed

	// A cluster node's (cluster.go): its name, the database's URL for the
	// listening connection, what follows the other nodes' writes.
	node       string
	url        string
	followers  atomic.Pointer[[]Follower]
	followMu   sync.Mutex
	listenDone chan struct{}
}

// Options tune how the database is opened.
type Options struct {
	// Readers is the size of the read pool (default 8).
	Readers int
	// Durability "full" fsyncs the WAL at every commit; the default "normal"
	// survives a crash of the process (the WAL is in the OS page cache) but
	// may lose the last commits on power loss. On PostgreSQL "normal" is
	// synchronous_commit off (a crash of PostgreSQL itself may lose the
	// last commits, never corrupt), "full" is PostgreSQL's default.
	Durability string
	// FilePath is, on PostgreSQL, the path Path reports: where the files
	// that live beside the database go (the data directory's chatalot.db,
	// which then never exists). Unused on SQLite, where it is the file.
	FilePath string
	// Serving says this process is the server, not an admin command that
	// writes beside it: on PostgreSQL it holds a lock for as long as the
	// database is open, and a second server on the same database is
	// refused (on SQLite the data directory's lock does this).
	Serving bool
	// Node, on PostgreSQL only, names this server as one node of a
	// cluster sharing the database (cluster.go): it serves beside the
	// other nodes, its positions interleave with theirs, and it follows
	// what they write. Each node's name must be its own.
	Node string
}

// stmtCacheSize is how many prepared statements each connection keeps.
const stmtCacheSize = "64"

// Open opens the database and starts the writer: the SQLite file at path
// (created if needed), or the PostgreSQL database when path is a
// postgres:// or postgresql:// URL (postgres.go). Call Migrate before use
// and Close at the end.
func Open(path string, opts Options) (*DB, error) {
	if opts.Readers <= 0 {
		opts.Readers = 8
	}
	if IsPostgresURL(path) {
		return openPostgres(path, opts)
	}
	if opts.Node != "" {
		return nil, errors.New("several nodes share a PostgreSQL database, not an SQLite file")
	}
	sync := "NORMAL"
	if opts.Durability == "full" {
		sync = "FULL"
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	// Incremental auto-vacuum: pages a purge frees can be given back to the
	// file system (FreePages) without rewriting the whole file. It takes
	// effect on a new database; an older one keeps its mode until Compact.
	q.Set("_auto_vacuum", "incremental")
	// Deleted rows are overwritten with zeros, not only unlinked: what a
	// purge, a retention pass or a delivered to-device message removes is
	// gone from the file, not left in a page's free space.
	q.Set("_secure_delete", "true")
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", "10000")
	q.Set("_synchronous", sync)
	q.Set("_txlock", "immediate")
	// Keep prepared statements per connection: the hot writes and reads
	// are the same few statements, and preparing one costs as much as
	// running it.
	q.Set("_stmt_cache_size", stmtCacheSize)
	w, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.Ping(); err != nil {
		w.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// The one writer connection lives as long as the DB (no idle timeout);
	// were it ever replaced, the new one would checkpoint by itself again,
	// which is slower but as safe.
	// A larger page cache for the writer (allocated as used): writes touch
	// index pages all over the file, one per recipient of a notification.
	if _, err := w.Exec("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -32768"); err != nil {
		w.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	rq := url.Values{}
	rq.Set("_foreign_keys", "on")
	rq.Set("_busy_timeout", "10000")
	rq.Set("_query_only", "true")
	rq.Set("_stmt_cache_size", stmtCacheSize)
	r, err := sql.Open("sqlite3", "file:"+path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	cq := url.Values{}
	cq.Set("_busy_timeout", "10000")
	c, err := sql.Open("sqlite3", "file:"+path+"?"+cq.Encode())
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	c.SetMaxOpenConns(1)
	db := &DB{
		dialect: SQLite,
		path:    path,
		write:   w,
		read:    r,
		queue:   make(chan *job, 1024),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		ckpt:    c, ckptWake: make(chan struct{}, 1), ckptDone: make(chan struct{}),
	}
	go db.checkpointLoop()
	return db, nil
}

// Close stops the writer after the queued writes, checkpoints the WAL and
// closes every connection.
func (db *DB) Close() error {
	select {
	case <-db.stop:
		return nil
	default:
	}
	close(db.stop)
	if db.started {
		<-db.done
	}
	if db.listenDone != nil {
		<-db.listenDone
	}
	if db.dialect == Postgres {
		return errors.Join(db.read.Close(), db.write.Close())
	}
	<-db.ckptDone
	_, _ = db.write.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return errors.Join(db.read.Close(), db.ckpt.Close(), db.write.Close())
}

// Dialect is the database's SQL dialect.
func (db *DB) Dialect() Dialect { return db.dialect }

// Position is the stream position of the last committed change. Every
// change with a position at or below it is durable and visible to readers.
func (db *DB) Position() int64 { return db.committed.Load() }

// Path is the database file's path (on PostgreSQL, Options.FilePath: where
// side files go).
func (db *DB) Path() string { return db.path }

// ReadCount is the number of statements run on the read pool since start;
// benchmarks use it to prove the hot paths do not read the database.
func (db *DB) ReadCount() int64 { return db.reads.Load() }

// QueryRow runs a read-only query on the read pool.
func (db *DB) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	db.reads.Add(1)
	return db.read.QueryRowContext(ctx, query, args...)
}

// Query runs a read-only query on the read pool.
func (db *DB) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	db.reads.Add(1)
	return db.read.QueryContext(ctx, query, args...)
}

// IntegrityCheck runs SQLite's integrity_check and returns its verdict
// ("ok" when the file is sound). PostgreSQL checks its own pages.
func (db *DB) IntegrityCheck(ctx context.Context) (string, error) {
	if db.dialect == Postgres {
		return "", ErrNotOnPostgres
	}
	var res string
	err := db.read.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res)
	return res, err
}

// Backup writes a consistent copy of the live database to dest using
// VACUUM INTO, which reads one snapshot while writers go on (see BackupFile;
// the read pool cannot do it: query_only refuses VACUUM INTO).
func (db *DB) Backup(ctx context.Context, dest string) error {
	if db.dialect == Postgres {
		return ErrNotOnPostgres
	}
	return BackupFile(ctx, db.path, dest)
}
