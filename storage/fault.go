package storage

import "errors"

// FaultHook, when set, is called before every statement a write runs; an
// error it returns fails that statement. Tests use it to fail each storage
// step of an operation in turn and prove nothing partial is left behind.
type FaultHook func(step int) error

// ErrInjected is what tests usually return from a FaultHook.
var ErrInjected = errors.New("injected fault")

// SetFaultHook installs (or, with nil, removes) the fault hook.
func (db *DB) SetFaultHook(h FaultHook) {
	if h == nil {
		db.fault.Store(nil)
		return
	}
	db.fault.Store(&h)
}

func (t *Tx) injectFault() error {
	h := t.db.fault.Load()
	if h == nil {
		return nil
	}
	t.step++
	return (*h)(t.step)
}
