package storage

import (
	"context"
	"errors"
	"testing"
)

// TestAttachCommitsWithTheFirstWrite: the attached work joins the first
// write made with the context, rolls back with it, and runs only once.
func TestAttachCommitsWithTheFirstWrite(t *testing.T) {
	onEachBackend(t, func(t *testing.T, openTest opener) {
		db, _ := openTest(t)
		ctx := context.Background()
		write := func(ctx context.Context, v string, fail bool) error {
			return db.Write(ctx, func(tx *Tx) error {
				if _, err := tx.Exec("INSERT INTO items (pos, v) VALUES ($1, $2)", tx.NextPosition(), v); err != nil {
					return err
				}
				if fail {
					return errors.New("refused")
				}
				return nil
			})
		}
		attach := func(ctx context.Context, v string, err error) (context.Context, func() bool) {
			return Attach(ctx, func(tx *Tx) error {
				if _, e := tx.Exec("INSERT INTO items (pos, v) VALUES ($1, $2)", tx.NextPosition(), v); e != nil {
					return e
				}
				return err
			})
		}

		// A failing write takes the attached work down with it; the next write
		// carries it.
		actx, done := attach(ctx, "audit", nil)
		if err := write(actx, "effect-1", true); err == nil || done() {
			t.Fatalf("failed write: err %v, done %v", err, done())
		}
		if n := count(t, db); n != 0 {
			t.Fatalf("%d rows after a failed write", n)
		}
		if err := write(actx, "effect-2", false); err != nil || !done() {
			t.Fatalf("write: err %v, done %v", err, done())
		}
		if err := write(actx, "effect-3", false); err != nil {
			t.Fatal(err)
		}
		if n := count(t, db); n != 3 {
			t.Fatalf("%d rows, want effect-2, audit, effect-3", n)
		}

		// Attached work that fails rolls the write back.
		bctx, done := attach(ctx, "audit-2", errors.New("cannot record"))
		if err := write(bctx, "effect-4", false); err == nil || done() {
			t.Fatalf("write with a failing attachment: err %v, done %v", err, done())
		}
		if n := count(t, db); n != 3 {
			t.Fatalf("%d rows after a failing attachment", n)
		}
	})
}
