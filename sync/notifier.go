// Package sync answers /sync: the long-poll that returns every change for a
// user since a token, with filters, typing, receipts, read markers and
// presence. Other packages signal it through the Notifier after each commit.
package sync

import (
	stdsync "sync"

	"github.com/chatalot/chatalot/spec"
)

// Notifier wakes the long-polls of the users a change concerns. Waiting
// costs nothing but a channel: no polling of the database.
type Notifier struct {
	mu      stdsync.Mutex
	waiters map[spec.UserID]map[chan struct{}]struct{}
}

// NewNotifier returns a notifier with no waiters.
func NewNotifier() *Notifier {
	return &Notifier{waiters: map[spec.UserID]map[chan struct{}]struct{}{}}
}

// Notify wakes every waiting request of the users. The position is not
// needed to wake them (they re-read the committed position) but names the
// change for callers.
func (n *Notifier) Notify(pos int64, users ...spec.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		for ch := range n.waiters[u] {
			close(ch)
		}
		delete(n.waiters, u)
	}
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
