// Package sync answers /sync: the long-poll that returns every change for a
// user since a token, with filters, typing, receipts, read markers and
// presence. Other packages signal it through the Notifier after each commit.
package sync

import (
	"slices"
	stdsync "sync"
	"sync/atomic"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
)

// Notifier wakes the long-polls of the users a change concerns. Waiting
// costs nothing but a channel: no polling of the database.
//
// Each change says what it is about (wake.Change: its room, if any, and its
// kind). A /v3/sync long-poll is woken by every change of its user, as its
// answer can carry any of them; a sliding sync connection registers what
// its answer can be changed by (interest, slidingwake.go) and sleeps through
// the rest: a message in one room does not wake the connections that watch
// other rooms.
type Notifier struct {
	db      *storage.DB
	mu      stdsync.Mutex
	waiters map[spec.UserID]map[*waiter]struct{}
	// held are the changes whose position is not yet published, with the
	// users told: their waiters are woken when it is.
	held []heldChange

	// last is, per user, the latest change they were told of, so that a
	// sync can tell that nothing concerns the user since its token without
	// looking at each of their rooms (quietSince). Kept once sync tracks.
	last   map[spec.UserID]notice
	serial func() int64 // sync's serial, for changes without a position
	start  int64        // the committed position when tracking began

	wakes atomic.Int64 // waiters woken, for tests and benchmarks (Wakes)
}

// heldChange is a change held until its position is published.
type heldChange struct {
	c     wake.Change
	users []spec.UserID
}

// notice is the latest change a user was told of: the highest stream
// position, and for changes without one (typing, presence) the serial at
// the time, which is at or past the change's own.
type notice struct{ pos, serial int64 }

// waiter is one waiting request.
type waiter struct {
	n    *Notifier
	user spec.UserID
	ch   chan struct{} // closed when woken
	in   *interest     // what wakes it; nil: every change of the user
}

// NewNotifier returns a notifier with no waiters, publishing with db.
func NewNotifier(db *storage.DB) *Notifier {
	n := &Notifier{db: db, waiters: map[spec.UserID]map[*waiter]struct{}{}}
	db.OnPublish(n.published)
	return n
}

// track starts recording what each user is told of, from the committed
// position start; serial reads sync's serial.
func (n *Notifier) track(start int64, serial func() int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.last, n.serial, n.start = map[spec.UserID]notice{}, serial, start
}

// quietSince reports whether the user was told of no change after the
// position and serial of a token. It may say no when nothing changed, never
// yes when something did: every change is notified to the users it
// concerns before the committed position moves past it.
func (n *Notifier) quietSince(user spec.UserID, pos, serial int64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.last == nil || pos < n.start {
		return false // a token from before tracking began
	}
	l := n.last[user]
	return l.pos <= pos && l.serial <= serial
}

// Notify tells the users of a change at pos (0 for a change without a
// stream position, such as typing): it is recorded for quietSince and
// wakes their waiting requests that the change can concern. Changes are
// notified from after-commit hooks, before the committed position moves
// past them; a request woken then would build from the old position, find
// nothing and wait again, so such wakes are held until the position is
// published.
func (n *Notifier) Notify(pos int64, c wake.Change, users ...spec.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var serial int64
	if pos == 0 && n.serial != nil {
		serial = n.serial()
	}
	hold := pos > n.db.Position()
	if n.last != nil {
		for _, u := range users {
			l := n.last[u]
			l.pos, l.serial = max(l.pos, pos), max(l.serial, serial)
			n.last[u] = l
		}
	}
	if hold {
		n.held = append(n.held, heldChange{c: c, users: slices.Clone(users)})
		return
	}
	for _, u := range users {
		n.wake(u, c)
	}
}

// published wakes for the held changes once the writer moved the position.
func (n *Notifier) published(int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, h := range n.held {
		for _, u := range h.users {
			n.wake(u, h.c)
		}
		n.held[i] = heldChange{}
	}
	n.held = n.held[:0]
}

// wake wakes the user's waiters that the change can concern; n.mu is held.
func (n *Notifier) wake(u spec.UserID, c wake.Change) {
	m := n.waiters[u]
	for w := range m {
		if w.in != nil && c.Kind != wake.Any && !w.in.wokenBy(c) {
			continue
		}
		close(w.ch)
		delete(m, w)
		n.wakes.Add(1)
	}
	if len(m) == 0 {
		delete(n.waiters, u)
	}
}

// subscribe registers a waiter for the user, woken by the next change that
// in can be changed by (nil: any change of the user). Call cancel when done
// waiting.
func (n *Notifier) subscribe(user spec.UserID, in *interest) *waiter {
	w := &waiter{n: n, user: user, ch: make(chan struct{}), in: in}
	n.mu.Lock()
	m := n.waiters[user]
	if m == nil {
		m = map[*waiter]struct{}{}
		n.waiters[user] = m
	}
	m[w] = struct{}{}
	n.mu.Unlock()
	return w
}

// woken is closed when a change wakes the waiter.
func (w *waiter) woken() <-chan struct{} { return w.ch }

// narrow makes the waiter wake only for changes in can be changed by. A
// request subscribes broadly before it builds its answer (so that a change
// during the build is not missed), then narrows to what the build showed
// it watches; a waiter woken before it narrows stays woken.
func (w *waiter) narrow(in *interest) {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	if _, ok := w.n.waiters[w.user][w]; ok {
		w.in = in
	}
}

// cancel removes the waiter.
func (w *waiter) cancel() {
	n := w.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := n.waiters[w.user]; m != nil {
		delete(m, w)
		if len(m) == 0 {
			delete(n.waiters, w.user)
		}
	}
}

// Waiters counts registered waiters (for tests of freed long-polls).
func (n *Notifier) Waiters() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.waiters {
		c += len(m)
	}
	return c
}

// Wakes counts the waiters woken so far (for tests and benchmarks of whom
// a change wakes).
func (n *Notifier) Wakes() int64 { return n.wakes.Load() }
