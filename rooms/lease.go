package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Room ownership in a cluster (docs/scaling.md, "Room ownership"): a node
// writes a room only while it holds the room's lease in room_leases. It
// takes the lease before it builds a write (hold), so that the write is
// built on memory that has followed every event the previous owner
// committed: the taking write's batch catches up first, and after it the
// previous owner can commit nothing more to the room. Every write then
// checks, in its own transaction, that the lease's fencing token is still
// the one this node took (fence): a node that lost its lease without
// knowing it (frozen past its lease, its renewals late) stores nothing.
//
// Outside a cluster there is no lease: Service.leases is nil and its
// methods do nothing.

// defaultLeaseDuration is a lease's life without renewal (Config).
const defaultLeaseDuration = 30 * time.Second

// dbNowMS is the database's clock in milliseconds: the nodes compare
// expiries on one clock rather than each on its own.
const dbNowMS = `(extract(epoch from clock_timestamp()) * 1000)::bigint`

// leases are the room leases this node holds.
type leases struct {
	db   *storage.DB
	node string
	dur  time.Duration

	mu   sync.Mutex
	held map[spec.RoomID]int64 // room → fencing token

	// paused stops the renewals (a test's frozen node: export_test.go).
	paused atomic.Bool
}

// newLeases starts renewing the leases of a cluster node; the renewals
// end when the database closes.
func newLeases(db *storage.DB, dur time.Duration) *leases {
	if dur <= 0 {
		dur = defaultLeaseDuration
	}
	l := &leases{db: db, node: db.Node(), dur: dur, held: map[spec.RoomID]int64{}}
	go l.renewLoop()
	return l
}

// token is the fencing token held for a room (0: none).
func (l *leases) token(id spec.RoomID) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[id]
}

// hold takes the room's lease unless this node holds it: a new lease, one
// of this node's that lapsed, or one another node let lapse (its token
// raised by one). A lease another node holds and renews is refused with
// errLeasedElsewhere. Call it before taking the room's write lock.
func (l *leases) hold(ctx context.Context, id spec.RoomID) error {
	if l == nil || l.token(id) != 0 {
		return nil
	}
	var token, left int64
	var owner string
	err := l.db.Write(ctx, func(tx *storage.Tx) error {
		err := tx.QueryRow(`INSERT INTO room_leases (room_id, node_id, token, expires_ts) VALUES ($1, $2, 1, `+dbNowMS+` + $3)
			ON CONFLICT (room_id) DO UPDATE SET node_id = excluded.node_id, expires_ts = excluded.expires_ts,
				token = room_leases.token + CASE WHEN room_leases.node_id = excluded.node_id THEN 0 ELSE 1 END
			WHERE room_leases.node_id = excluded.node_id OR room_leases.expires_ts < `+dbNowMS+`
			RETURNING token`, string(id), l.node, l.dur.Milliseconds()).Scan(&token)
		if errors.Is(err, sql.ErrNoRows) {
			token = 0
			return tx.QueryRow(`SELECT node_id, expires_ts - `+dbNowMS+` FROM room_leases WHERE room_id = $1`, string(id)).Scan(&owner, &left)
		}
		if err != nil {
			return err
		}
		tx.AfterCommit(func() { l.set(id, token) })
		return nil
	})
	if err != nil {
		return fmt.Errorf("take the lease of room %s: %w", id, err)
	}
	if token == 0 {
		return errLeasedElsewhere(id, owner, left)
	}
	return nil
}

func (l *leases) set(id spec.RoomID, token int64) {
	l.mu.Lock()
	l.held[id] = token
	l.mu.Unlock()
}

// fence fails a room's write, inside its transaction, unless this node
// still holds the lease with the token it took. The shared row lock keeps
// a takeover from committing until the write has.
func (l *leases) fence(tx *storage.Tx, id spec.RoomID) error {
	if l == nil {
		return nil
	}
	held := l.token(id)
	var token int64
	err := tx.QueryRow(`SELECT token FROM room_leases WHERE room_id = $1 AND node_id = $2 FOR SHARE`, string(id), l.node).Scan(&token)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("check the lease of room %s: %w", id, err)
	}
	if held != 0 && token == held {
		return nil
	}
	// The next write takes the lease again (or is refused): its batch
	// catches up with what the new owner wrote before it is built.
	l.mu.Lock()
	if l.held[id] == held {
		delete(l.held, id)
	}
	l.mu.Unlock()
	return errLeaseLost(id)
}

// renewLoop renews the held leases three times per lease duration.
func (l *leases) renewLoop() {
	t := time.NewTicker(l.dur / 3)
	defer t.Stop()
	for range t.C {
		if l.paused.Load() {
			continue
		}
		if err := l.renew(); errors.Is(err, storage.ErrClosed) {
			return
		}
	}
}

// renew extends every lease this node holds, in one statement, and
// forgets those it no longer holds.
func (l *leases) renew() error {
	l.mu.Lock()
	n := len(l.held)
	l.mu.Unlock()
	if n == 0 {
		return nil
	}
	return l.db.Write(context.Background(), func(tx *storage.Tx) error {
		rows, err := tx.Query(`UPDATE room_leases SET expires_ts = `+dbNowMS+` + $2 WHERE node_id = $1 RETURNING room_id, token`,
			l.node, l.dur.Milliseconds())
		if err != nil {
			return fmt.Errorf("renew room leases: %w", err)
		}
		defer rows.Close()
		held := map[spec.RoomID]int64{}
		for rows.Next() {
			var id string
			var token int64
			if err := rows.Scan(&id, &token); err != nil {
				return err
			}
			held[spec.RoomID(id)] = token
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// In commit order with the takings (their AfterCommit), so the
		// map is the table as of this commit.
		tx.AfterCommit(func() {
			l.mu.Lock()
			l.held = held
			l.mu.Unlock()
		})
		return nil
	})
}

// errLeasedElsewhere refuses a write to a room another node of the
// cluster writes. Forwarding the request to that node is the next step
// (docs/scaling.md); until then the client retries, here or elsewhere.
func errLeasedElsewhere(id spec.RoomID, owner string, leftMS int64) error {
	return spec.NewError(spec.ErrUnknown, "room %s is written by another node of this server (%s); try again later", id, owner).
		WithStatus(503).With("retry_after_ms", max(leftMS, 1000))
}

// errLeaseLost is the outcome of a write whose node lost the room's lease
// before the write committed: nothing of it is stored.
func errLeaseLost(id spec.RoomID) error {
	return spec.NewError(spec.ErrUnknown, "this node no longer writes room %s (another node took it over); nothing was stored, try again", id).
		WithStatus(503).With("retry_after_ms", 1000)
}
