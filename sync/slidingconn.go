package sync

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	stdsync "sync"
	"time"

	"github.com/chatalot/chatalot/spec"
)

// Sliding sync connections: what each connection of a device has been sent
// so far, so that the next response carries only what is new to it.
//
// They live in memory only. A restart forgets them and clients, told
// M_UNKNOWN_POS, start the connection over: nothing here is worth a write
// per request. Memory is bounded: a few connections per device (Element X
// uses two, "room-list" and "encryption"), a few positions per connection
// (a client may retry its previous request), one small record per room of
// the user; and a connection unused for connIdle is dropped.
const (
	maxConnsPerDevice = 8
	maxConns          = 50000
	keptPositions     = 3
	connIdle          = 30 * time.Minute
	sweepEvery        = time.Minute
)

// connKey names a connection: two installs on one account both use conn_id
// "room-list", so the device is part of the name.
type connKey struct {
	user   spec.UserID
	device string
	connID string
}

// connState is what a connection had been sent as of one pos. It is never
// changed once stored: a new response makes a new one.
type connState struct {
	n     uint64 // the pos's sequence number in the connection
	token Token  // the stream position and serial the response covered
	rooms map[spec.RoomID]sentRoom
	// subs are the connection's room subscriptions. They hold until
	// unsubscribe_rooms names them: matrix-js-sdk sends a subscription
	// once, matrix-rust-sdk with every request.
	subs  map[spec.RoomID]roomConfig
	lists map[string]int // the count sent per list
	// shape is the request's lists, subscriptions and extensions as
	// asked (to-device's since aside): the same shape and no change for
	// the user since token is an empty answer, known from memory alone.
	shape string
	// wakes is what can change the answer after this one: a connection
	// waiting at this pos is woken only by such a change.
	wakes *interest
}

// sentRoom is what a connection has of one room.
type sentRoom struct {
	pos        int64    // events up to this stream position were sent
	membership string   // the user's membership when sent
	limit      int      // the timeline limit it was sent with
	required   []string // the required_state entries it was sent with, sorted
	countsPos  int64    // the position of the unread counts sent
}

// listCount is the count last sent for a list, and whether one was.
func (st *connState) listCount(name string) (int, bool) {
	if st == nil {
		return 0, false
	}
	n, ok := st.lists[name]
	return n, ok
}

// slidingConn is one connection.
type slidingConn struct {
	nonce    string // in every pos: a pos of an older connection is unknown
	mu       stdsync.Mutex
	states   map[uint64]*connState
	next     uint64
	lastUsed time.Time
}

// connStore holds every connection.
type connStore struct {
	mu        stdsync.Mutex
	conns     map[connKey]*slidingConn
	lastSweep time.Time
}

func newConnStore() *connStore { return &connStore{conns: map[connKey]*slidingConn{}} }

// start begins a connection, replacing any of the same name.
func (cs *connStore) start(k connKey, now time.Time) *slidingConn {
	var b [6]byte
	_, _ = rand.Read(b[:])
	c := &slidingConn{nonce: hex.EncodeToString(b[:]), states: map[uint64]*connState{}, lastUsed: now}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.sweepLocked(now)
	cs.conns[k] = c
	cs.boundLocked(k)
	return c
}

// resume finds the connection state a pos names; an unknown or stale pos
// (another connection's, another user's, one from before a restart) is
// M_UNKNOWN_POS, which tells the client to start over.
func (cs *connStore) resume(k connKey, pos string, now time.Time) (*slidingConn, *connState, error) {
	unknown := spec.NewError(spec.ErrUnknownPos, "unknown or expired pos: start the connection again")
	nonce, seq, ok := strings.Cut(pos, "_")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		return nil, nil, unknown
	}
	cs.mu.Lock()
	cs.sweepLocked(now)
	c := cs.conns[k]
	cs.mu.Unlock()
	if c == nil || c.nonce != nonce {
		return nil, nil, unknown
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.states[n]
	if st == nil {
		return nil, nil, unknown
	}
	c.lastUsed = now
	return c, st, nil
}

// save stores a new state and returns its pos.
func (c *slidingConn) save(st *connState) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	st.n = c.next
	c.states[st.n] = st
	for n := range c.states {
		if n+keptPositions <= c.next {
			delete(c.states, n)
		}
	}
	return c.pos(st.n)
}

func (c *slidingConn) pos(n uint64) string { return c.nonce + "_" + strconv.FormatUint(n, 10) }

// sweepLocked drops idle connections, at most once per sweepEvery.
func (cs *connStore) sweepLocked(now time.Time) {
	if now.Sub(cs.lastSweep) < sweepEvery {
		return
	}
	cs.lastSweep = now
	for k, c := range cs.conns {
		c.mu.Lock()
		idle := now.Sub(c.lastUsed) > connIdle
		c.mu.Unlock()
		if idle {
			delete(cs.conns, k)
		}
	}
}

// boundLocked keeps a device's connections, and all of them, under their
// bounds by dropping the least recently used other than k, the new one.
func (cs *connStore) boundLocked(k connKey) {
	var mine []connKey
	for other := range cs.conns {
		if other != k && other.user == k.user && other.device == k.device {
			mine = append(mine, other)
		}
	}
	cs.dropOldestLocked(mine, len(mine)+1-maxConnsPerDevice)
	if len(cs.conns) > maxConns {
		all := make([]connKey, 0, len(cs.conns))
		for other := range cs.conns {
			if other != k {
				all = append(all, other)
			}
		}
		cs.dropOldestLocked(all, len(cs.conns)-maxConns)
	}
}

func (cs *connStore) dropOldestLocked(keys []connKey, n int) {
	if n <= 0 {
		return
	}
	used := func(k connKey) time.Time {
		c := cs.conns[k]
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lastUsed
	}
	sort.Slice(keys, func(i, j int) bool { return used(keys[i]).Before(used(keys[j])) })
	for _, k := range keys[:n] {
		delete(cs.conns, k)
	}
}

// count is the number of connections held (for tests).
func (cs *connStore) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.conns)
}
