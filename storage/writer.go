package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// Tx is one write inside the writer's transaction. Its statements run in a
// savepoint of their own: if the function returns an error, only its changes
// are rolled back and the other writes of the batch still commit.
type Tx struct {
	tx    *sql.Tx
	db    *DB
	ctx   context.Context
	hooks []func()
	step  int
}

// Dialect is the database's SQL dialect, for the few statements that
// differ.
func (t *Tx) Dialect() Dialect { return t.db.dialect }

// Context is the context of the request that asked for the write.
func (t *Tx) Context() context.Context { return t.ctx }

// Exec runs a statement in the write transaction.
func (t *Tx) Exec(query string, args ...any) (sql.Result, error) {
	if err := t.injectFault(); err != nil {
		return nil, err
	}
	return t.tx.ExecContext(context.WithoutCancel(t.ctx), query, args...)
}

// ExecMany runs one statement for each set of arguments, preparing it
// once: for writes of many similar rows (a notification per room member).
func (t *Tx) ExecMany(query string, args [][]any) error {
	if err := t.injectFault(); err != nil {
		return err
	}
	ctx := context.WithoutCancel(t.ctx)
	stmt, err := t.tx.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, a := range args {
		if _, err := stmt.ExecContext(ctx, a...); err != nil {
			return err
		}
	}
	return nil
}

// QueryRow runs a query in the write transaction (it sees the batch's
// uncommitted changes).
func (t *Tx) QueryRow(query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(context.WithoutCancel(t.ctx), query, args...)
}

// Query runs a query in the write transaction.
func (t *Tx) Query(query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(context.WithoutCancel(t.ctx), query, args...)
}

// NextPosition hands out the next stream position. A write that fails
// returns its positions; when a whole commit fails they are skipped instead
// (gaps are harmless, repeats would not be).
func (t *Tx) NextPosition() int64 {
	t.db.next++
	return t.db.next
}

// AfterCommit registers f to run once the transaction has committed, in
// commit order, before Position moves past this write and before Write
// returns. Use it to update in-memory state: a reader then never sees a
// change that could still be rolled back, and sees the state of every
// position at or below Position. Wake waiting clients after Position moved
// (OnPublish), or a woken reader may find nothing new yet.
func (t *Tx) AfterCommit(f func()) { t.hooks = append(t.hooks, f) }

type job struct {
	ctx  context.Context
	fn   func(*Tx) error
	done chan error
	// after is a write this one depends on: if it failed, this one fails
	// without running. Only the writer reads it, and clears it once used.
	after *job
	// err is the outcome so far, set by the writer: the function's result
	// once it ran, the commit's if that failed.
	err error
}

// ErrClosed is returned for writes queued after Close.
var ErrClosed = errors.New("database is closed")

// ErrDependency is the outcome of a write whose predecessor failed.
var ErrDependency = errors.New("an earlier write it depends on failed")

// Pending is a write submitted with Submit.
type Pending struct {
	j      *job
	once   sync.Once
	result error
}

// Wait returns the write's outcome once it is committed or rolled back.
func (p *Pending) Wait() error {
	p.once.Do(func() { p.result = <-p.j.done })
	return p.result
}

// maxBatch bounds how many writes share one commit.
const maxBatch = 256

// Write runs fn inside the single ordered writer and returns once its changes
// are committed (or rolled back, with fn's error). "Acknowledged" in Chatalot
// means Write returned nil: the change is in the WAL and survives a crash of
// the process.
//
// fn must not block on anything but the database, and must not call Write.
func (db *DB) Write(ctx context.Context, fn func(*Tx) error) error {
	return db.Submit(ctx, nil, fn).Wait()
}

// OnPublish registers f to run on the writer goroutine after each commit,
// once Position has moved past it; pos is the new Position. A notifier
// uses it to wake readers only when they can see what woke them.
func (db *DB) OnPublish(f func(pos int64)) {
	db.publishMu.Lock()
	defer db.publishMu.Unlock()
	var fs []func(int64)
	if old := db.published.Load(); old != nil {
		fs = append(fs, *old...)
	}
	fs = append(fs, f)
	db.published.Store(&fs)
}

// publish tells the OnPublish listeners that Position is pos.
func (db *DB) publish(pos int64) {
	if fs := db.published.Load(); fs != nil {
		for _, f := range *fs {
			f(pos)
		}
	}
}

// Queued is how many writes wait for the writer (not counting the batch
// being written).
func (db *DB) Queued() int { return len(db.queue) }

// Submit queues fn like Write but returns at once. If after is not nil,
// fn runs only if that earlier write succeeded (as far as the writer knows
// when fn's turn comes: a write in the same batch fails with it if the
// commit fails). A caller builds on a write before it commits this way —
// a room's next events on its previous ones — and learns of a failure
// through ErrDependency.
func (db *DB) Submit(ctx context.Context, after *Pending, fn func(*Tx) error) *Pending {
	j := &job{ctx: ctx, fn: fn, done: make(chan error, 1)}
	if after != nil {
		j.after = after.j
	}
	select {
	case <-db.stop:
		j.err = ErrClosed
		j.done <- ErrClosed
	case db.queue <- j:
		// Once queued the write runs to its end even if the client goes
		// away: the caller learns the outcome, never "maybe".
	}
	return &Pending{j: j}
}

func (db *DB) startWriter(ctx context.Context) error {
	if err := db.write.QueryRowContext(ctx, "SELECT position FROM stream_position WHERE id = 1").Scan(&db.next); err != nil {
		return fmt.Errorf("read stream position: %w", err)
	}
	db.committed.Store(db.next)
	db.started = true
	go db.writeLoop()
	if db.node != "" {
		db.listenDone = make(chan struct{})
		go db.listen()
	}
	return nil
}

func (db *DB) writeLoop() {
	defer close(db.done)
	for {
		var first *job
		select {
		case first = <-db.queue:
		case <-db.stop:
			// Drain what was queued before Close.
			for {
				select {
				case j := <-db.queue:
					db.runBatch([]*job{j})
				default:
					return
				}
			}
		}
		batch := []*job{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case j := <-db.queue:
				batch = append(batch, j)
			default:
				break fill
			}
		}
		db.runBatch(batch)
		db.finishCheckpoint()
	}
}

// runBatch commits a group of writes in one transaction, each inside its
// own savepoint.
func (db *DB) runBatch(batch []*job) {
	tx, err := db.write.Begin()
	if err == nil && db.node != "" {
		if err = db.catchUp(&Tx{tx: tx, db: db, ctx: context.Background()}); err != nil {
			_ = tx.Rollback()
		}
	}
	if err != nil {
		for _, j := range batch {
			j.err = fmt.Errorf("begin write: %w", err)
			j.done <- j.err
		}
		return
	}
	startPos := db.next
	results := make([]error, len(batch))
	txs := make([]*Tx, len(batch))
	for i, j := range batch {
		// A predecessor ran earlier in this batch or committed (or failed)
		// in an earlier one: its err is as final as this batch can know.
		if j.after != nil {
			failed := j.after.err != nil
			j.after = nil
			if failed {
				results[i], j.err = ErrDependency, ErrDependency
				continue
			}
		}
		if j.ctx.Err() != nil {
			results[i] = j.ctx.Err() // never started: nothing written
			j.err = results[i]
			continue
		}
		t := &Tx{tx: tx, db: db, ctx: j.ctx}
		txs[i] = t
		before := db.next
		if results[i] = db.runOne(t, j.fn); results[i] != nil {
			// Jobs run one after another, so the positions a failed job
			// took are the latest and nobody has seen them: give them
			// back, and a failed write leaves the stream as it was.
			db.next = before
		}
		j.err = results[i]
	}
	if db.next != startPos {
		err = db.savePosition(tx)
		if err == nil && db.node != "" {
			err = db.announce(&Tx{tx: tx, db: db}, db.next)
		}
	}
	if err == nil {
		err = tx.Commit()
	} else {
		_ = tx.Rollback()
	}
	if err != nil {
		// Nothing of the batch is stored. Positions handed out are skipped
		// rather than reused, so a reader never sees one position twice.
		for i, j := range batch {
			if results[i] == nil {
				results[i] = fmt.Errorf("commit: %w", err)
			}
			j.err = results[i]
			j.done <- results[i]
		}
		return
	}
	for i, t := range txs {
		if t == nil || results[i] != nil {
			continue
		}
		for _, h := range t.hooks {
			h()
		}
	}
	db.committed.Store(db.next)
	db.publish(db.next)
	db.walGrew()
	for i, j := range batch {
		j.done <- results[i]
	}
}

// ErrPositionMoved is the outcome of a commit that found the stored stream
// position other than this process left it: another server writes the same
// database. Nothing of the batch is stored.
var ErrPositionMoved = errors.New("the stream position moved under this server: another server is writing this database")

// savePosition stores the writer's position, only if the stored one is
// still the last this process committed: positions are kept in memory, and
// two writers on one database would hand out the same ones.
func (db *DB) savePosition(tx *sql.Tx) error {
	res, err := tx.Exec("UPDATE stream_position SET position = $1 WHERE id = 1 AND position = $2", db.next, db.committed.Load())
	if err != nil {
		return fmt.Errorf("save stream position: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return ErrPositionMoved
	}
	return nil
}

func (db *DB) runOne(t *Tx, fn func(*Tx) error) (err error) {
	if _, err := t.tx.Exec("SAVEPOINT w"); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write panicked: %v", p)
		}
		if err != nil {
			t.hooks = nil
			_, _ = t.tx.Exec("ROLLBACK TO w")
		}
		_, _ = t.tx.Exec("RELEASE w")
	}()
	if err := fn(t); err != nil {
		return err
	}
	return runAttached(t) // attach.go
}
