// Package sync answers /sync: the long-poll that returns every change for a
// user since a token, with filters, typing, receipts, read markers and
// presence. Other packages signal it through the Notifier after each commit.
package sync

import (
	stdsync "sync"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Notifier wakes the long-polls of the users a change concerns. Waiting
// costs nothing but a channel: no polling of the database.
type Notifier struct {
	db      *storage.DB
	mu      stdsync.Mutex
	waiters map[spec.UserID]map[chan struct{}]struct{}
	// held are users told of a change whose position is not yet
	// published: they are woken when it is.
	held map[spec.UserID]struct{}

	// last is, per user, the latest change they were told of, so that a
	// sync can tell that nothing concerns the user since its token without
	// looking at each of their rooms (quietSince). Kept once sync tracks.
	last   map[spec.UserID]notice
	serial func() int64 // sync's serial, for changes without a position
	start  int64        // the committed position when tracking began
}

// notice is the latest change a user was told of: the highest stream
// position, and for changes without one (typing, presence) the serial at
// the time, which is at or past the change's own.
type notice struct{ pos, serial int64 }

// NewNotifier returns a notifier with no waiters, publishing with db.
func NewNotifier(db *storage.DB) *Notifier {
	n := &Notifier{db: db, waiters: map[spec.UserID]map[chan struct{}]struct{}{}, held: map[spec.UserID]struct{}{}}
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
// wakes their waiting requests. Changes are notified from after-commit
// hooks, before the committed position moves past them; a request woken
// then would build from the old position, find nothing and wait again, so
// such wakes are held until the position is published.
func (n *Notifier) Notify(pos int64, users ...spec.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var serial int64
	if pos == 0 && n.serial != nil {
		serial = n.serial()
	}
	hold := pos > n.db.Position()
	for _, u := range users {
		if n.last != nil {
			l := n.last[u]
			l.pos, l.serial = max(l.pos, pos), max(l.serial, serial)
			n.last[u] = l
		}
		if hold {
			n.held[u] = struct{}{}
		} else {
			n.wake(u)
		}
	}
}

// published wakes the held users once the writer moved the position.
func (n *Notifier) published(int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u := range n.held {
		n.wake(u)
		delete(n.held, u)
	}
}

func (n *Notifier) wake(u spec.UserID) {
	for ch := range n.waiters[u] {
		close(ch)
	}
	delete(n.waiters, u)
}

// subscribe registers a waiter for the user; the channel is closed on the
// next change that concerns them. Call cancel when done waiting.
func (n *Notifier) subscribe(user spec.UserID) (ch chan struct{}, cancel func()) {
	ch = make(chan struct{})
	n.mu.Lock()
	m := n.waiters[user]
	if m == nil {
		m = map[chan struct{}]struct{}{}
		n.waiters[user] = m
	}
	m[ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		if m := n.waiters[user]; m != nil {
			delete(m, ch)
			if len(m) == 0 {
				delete(n.waiters, user)
			}
		}
		n.mu.Unlock()
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
