package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// The outbound queue. An event this server's users send is queued for every
// other server with a member in the room in the same transaction that
// stores it (PrepareCommit), as a row naming the event's stream position;
// a room with no remote member queues nothing. One sender per destination
// sends what is queued in transactions of at most maxPDUs, oldest first,
// and deletes the rows once the destination accepted them. A destination
// that fails is retried with exponential backoff, or at once when it calls
// this server (it is back). The rows survive a crash: at start every
// destination with rows gets its sender (Start).
//
// A destination that was unreachable catches up: before the first send
// after a failure, only the newest queued event of each room is kept (and
// the member events naming its users), and the destination fills the gap
// itself through get_missing_events and backfill, as the spec lets it,
// rather than being sent an outage's worth of transactions (catchUp).

// Spec limits of one transaction.
const (
	maxPDUs = 50
	maxEDUs = 100
)

// Backoff bounds of a failing destination.
const (
	minBackoff = time.Second
	maxBackoff = 10 * time.Minute
)

// PrepareCommit implements rooms.CommitHook: it queues the events of this
// server's users for the other servers in the room after them, and for the
// server of a remote user whose membership an event changes (an invitee, a
// kicked user).
func (s *Service) PrepareCommit(room spec.RoomID, evs []*rooms.Event, state rooms.RoomState) func(*storage.Tx) error {
	var dests []spec.ServerName
	seen := map[spec.ServerName]bool{}
	add := func(srv spec.ServerName) {
		if !seen[srv] && s.Allowed(srv) {
			seen[srv] = true
			dests = append(dests, srv)
		}
	}
	local := false
	for _, ev := range evs {
		if !s.ours(ev) {
			continue
		}
		local = true
		if sk, ok := ev.PDU.StateKey(); ok && ev.PDU.Type() == spec.MRoomMember {
			add(spec.UserID(sk).Server())
		}
	}
	if !local {
		return nil
	}
	for _, u := range state.Joined() {
		add(u.Server())
	}
	if len(dests) == 0 {
		return nil
	}
	return func(tx *storage.Tx) error {
		var rows [][]any
		for _, ev := range evs {
			if !s.ours(ev) {
				continue
			}
			for _, d := range dests {
				if d != ev.PDU.Sender().Server() { // a relayed join goes to the others
					rows = append(rows, []any{string(d), ev.Position})
				}
			}
		}
		if len(rows) == 0 {
			return nil
		}
		if err := tx.ExecMany(`INSERT INTO federation_outbound (destination, position) VALUES ($1, $2) ON CONFLICT DO NOTHING`, rows); err != nil {
			return fmt.Errorf("queue for federation: %w", err)
		}
		tx.AfterCommit(func() {
			for _, d := range dests {
				s.queue(d).poke(false)
			}
		})
		return nil
	}
}

// ours reports whether this server sends ev to the room's other servers:
// its own users' events, and the joins it accepted as the resident.
func (s *Service) ours(ev *rooms.Event) bool {
	return ev.PDU.Sender().Server() == s.name || ev.Relay
}

// Start runs a sender for every destination with queued events (work a
// restart or a crash left).
func (s *Service) Start(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT destination FROM federation_outbound`)
	if err != nil {
		return err
	}
	var dests []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return err
		}
		dests = append(dests, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, d := range dests {
		s.queue(spec.ServerName(d)).poke(false)
	}
	return nil
}

// queue is one destination's sender.
type queue struct {
	s    *Service
	dest spec.ServerName
	wake chan bool // true: the destination is back, retry now
}

// queue returns the destination's sender, started on first use.
func (s *Service) queue(dest spec.ServerName) *queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[dest]
	if q == nil {
		q = &queue{s: s, dest: dest, wake: make(chan bool, 1)}
		s.queues[dest] = q
		go q.run()
	}
	return q
}

// poke tells the sender there is work, or with back that the destination
// answered a request of its own: a backoff in progress ends.
func (q *queue) poke(back bool) {
	select {
	case q.wake <- back:
	default:
		if back {
			// A wake is pending already; make sure it ends the backoff.
			select {
			case <-q.wake:
			default:
			}
			select {
			case q.wake <- true:
			default:
			}
		}
	}
}

// destinationIsBack ends the backoff of a destination that just called.
func (s *Service) destinationIsBack(origin spec.ServerName) {
	s.mu.Lock()
	q := s.queues[origin]
	s.mu.Unlock()
	if q != nil {
		q.poke(true)
	}
}

func (q *queue) run() {
	backoff := time.Duration(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-q.s.stopping; cancel() }()
	catchUp := false
	for {
		if catchUp {
			if err := q.catchUp(ctx); err != nil {
				q.s.log.Warn().Str("destination", string(q.dest)).Err(err).Msg("federation: catch-up failed")
			}
		}
		sent, err := q.sendOnce(ctx)
		catchUp = err != nil
		if ctx.Err() != nil {
			return
		}
		var wait <-chan time.Time
		switch {
		case err != nil:
			backoff = min(max(minBackoff, 2*backoff), maxBackoff)
			q.s.log.Warn().Str("destination", string(q.dest)).Err(err).Dur("retry_in", backoff).Msg("federation: cannot send, will retry")
			wait = time.After(backoff)
		case sent > 0:
			backoff = 0
			continue // there may be more
		}
		select {
		case back := <-q.wake:
			if back {
				backoff = 0
			} else if err != nil {
				// New work does not end a backoff: wait it out (a stream of
				// sends to a server that is down must not spin the retries).
			backingOff:
				for {
					select {
					case b := <-q.wake:
						if b {
							backoff = 0
							break backingOff
						}
					case <-wait:
						break backingOff
					case <-ctx.Done():
						return
					}
				}
			}
		case <-wait:
		case <-ctx.Done():
			return
		}
	}
}

// sendOnce sends one transaction of the oldest queued events and returns
// how many it delivered.
func (q *queue) sendOnce(ctx context.Context) (int, error) {
	rows, err := q.s.db.Query(ctx, `SELECT position FROM federation_outbound WHERE destination = $1 ORDER BY position LIMIT `+strconv.Itoa(maxPDUs), string(q.dest))
	if err != nil {
		return 0, err
	}
	var positions []int64
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return 0, err
		}
		positions = append(positions, p)
	}
	rows.Close()
	if len(positions) == 0 {
		return 0, rows.Err()
	}
	pdus := []json.RawMessage{}
	for _, p := range positions {
		raw, _, err := q.s.rooms.EventJSONAt(ctx, p)
		if err != nil {
			return 0, err
		}
		if raw != nil { // nil: purged meanwhile
			pdus = append(pdus, raw)
		}
	}
	if len(pdus) > 0 {
		// The transaction ID names the first event queued: a retry of the
		// same batch has the same ID.
		txn := strconv.FormatInt(positions[0], 10) + "-" + strconv.FormatInt(positions[len(positions)-1], 10)
		body, _ := json.Marshal(map[string]any{
			"origin": q.s.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus, "edus": []any{},
		})
		if _, err := q.s.request(ctx, http.MethodPut, q.dest, "/_matrix/federation/v1/send/"+txn, body); err != nil {
			var re *remoteError
			if !errors.As(err, &re) || re.status < 400 || re.status >= 500 || re.status == http.StatusTooManyRequests {
				return 0, err
			}
			// A refusal of the transaction itself will not change on a
			// retry: drop it rather than block the destination forever.
			q.s.log.Warn().Str("destination", string(q.dest)).Err(err).Int("pdus", len(pdus)).Msg("federation: transaction refused, dropped")
		}
	}
	err = q.s.db.Write(ctx, func(tx *storage.Tx) error {
		args := make([][]any, len(positions))
		for i, p := range positions {
			args[i] = []any{string(q.dest), p}
		}
		return tx.ExecMany(`DELETE FROM federation_outbound WHERE destination = $1 AND position = $2`, args)
	})
	return len(positions), err
}

// catchUpRows bounds the queued rows one catch-up reads; older ones are
// dropped unread (the destination backfills them if it wants them).
const catchUpRows = 5000

// catchUp drops the destination's queued events but the newest of each
// room and the member events naming its users.
func (q *queue) catchUp(ctx context.Context) error {
	rows, err := q.s.db.Query(ctx, `SELECT position FROM federation_outbound WHERE destination = $1 ORDER BY position DESC LIMIT `+strconv.Itoa(catchUpRows), string(q.dest))
	if err != nil {
		return err
	}
	var positions []int64
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return err
		}
		positions = append(positions, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(positions) == 0 {
		return err
	}
	newest := map[spec.RoomID]bool{}
	var drop [][]any
	for _, p := range positions {
		raw, room, err := q.s.rooms.EventJSONAt(ctx, p)
		if err != nil {
			return err
		}
		keep := raw != nil && !newest[room]
		if raw != nil && gjson.GetBytes(raw, "type").String() == spec.MRoomMember {
			if u, err := spec.ParseUserID(gjson.GetBytes(raw, "state_key").String()); err == nil && u.Server() == q.dest {
				keep = true
			}
		}
		if raw != nil {
			newest[room] = true
		}
		if !keep {
			drop = append(drop, []any{string(q.dest), p})
		}
	}
	oldest := positions[len(positions)-1]
	return q.s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`DELETE FROM federation_outbound WHERE destination = $1 AND position < $2`, string(q.dest), oldest); err != nil {
			return err
		}
		if len(drop) == 0 {
			return nil
		}
		return tx.ExecMany(`DELETE FROM federation_outbound WHERE destination = $1 AND position = $2`, drop)
	})
}
