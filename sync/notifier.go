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

// NewNotifier returns a notifier with no waiters.
func NewNotifier() *Notifier {
	return &Notifier{waiters: map[spec.UserID]map[chan struct{}]struct{}{}}
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

// Notify wakes every waiting request of the users. The position (0 for a
// change without one) is recorded for quietSince.
func (n *Notifier) Notify(pos int64, users ...spec.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var serial int64
	if pos == 0 && n.serial != nil {
		serial = n.serial()
	}
	for _, u := range users {
		if n.last != nil {
			l := n.last[u]
			l.pos, l.serial = max(l.pos, pos), max(l.serial, serial)
			n.last[u] = l
		}
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
