package storage

import (
	"context"
	"sync/atomic"
)

// Attach returns a context whose first write to commit also runs fn, in the
// same transaction and savepoint, after the write's own function. The
// admin audit log uses it so that an action and its audit row commit
// together or not at all, whichever domain package does the writing: the
// admin package passes the context to, say, auth.Deactivate, and the audit
// row lands in the transaction that deactivates the account.
//
// Only one write runs fn. If fn fails, that write is rolled back with it
// (an action that cannot be recorded does not happen). done reports whether
// fn committed; when the action wrote nothing (or its writes all failed),
// it reports false and the caller records the action on its own.
func Attach(ctx context.Context, fn func(*Tx) error) (_ context.Context, done func() bool) {
	a := &attached{fn: fn}
	return context.WithValue(ctx, attachKey{}, a), a.done.Load
}

type attachKey struct{}

type attached struct {
	fn      func(*Tx) error
	claimed atomic.Bool // a write has run fn (and may still roll back)
	done    atomic.Bool // that write committed
}

// runAttached runs the work attached to the write's context, if any and if
// no other write took it.
func runAttached(t *Tx) error {
	a, _ := t.ctx.Value(attachKey{}).(*attached)
	if a == nil || !a.claimed.CompareAndSwap(false, true) {
		return nil
	}
	ok := false
	defer func() {
		if !ok { // failed or panicked: a later write may try again
			a.claimed.Store(false)
		}
	}()
	if err := a.fn(t); err != nil {
		return err
	}
	ok = true
	t.AfterCommit(func() { a.done.Store(true) })
	return nil
}
