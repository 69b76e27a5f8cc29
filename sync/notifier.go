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
}

// NewNotifier returns a notifier with no waiters, publishing with db.
func NewNotifier(db *storage.DB) *Notifier {
	n := &Notifier{db: db, waiters: map[spec.UserID]map[chan struct{}]struct{}{}, held: map[spec.UserID]struct{}{}}
	db.OnPublish(n.published)
	return n
}

// Notify wakes every waiting request of the users for a change at pos (0
// for a change without a stream position). Changes are notified from
// after-commit hooks, before the committed position moves past them; a
// request woken then would build from the old position, find nothing and
// wait again, so such wakes are held until the position is published.
func (n *Notifier) Notify(pos int64, users ...spec.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	hold := pos > n.db.Position()
	for _, u := range users {
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
