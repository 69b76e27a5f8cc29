package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// The outbound queue. Reliable EDUs (edu.go) wait beside the events in
// federation_outbound_edus and go in the same transactions. An event this server's users send is queued for every
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
	// maxEDUBytes keeps a transaction of large to-device messages well
	// under what a receiver takes (maxRequestBody here).
	maxEDUBytes = 2 << 20
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

// Start runs a sender for every destination with queued events or EDUs
// (work a restart or a crash left).
func (s *Service) Start(ctx context.Context) error {
	dests, err := storage.Strings[spec.ServerName](s.db.Query(ctx,
		`SELECT destination FROM federation_outbound UNION SELECT destination FROM federation_outbound_edus`))
	if err != nil {
		return err
	}
	for _, d := range dests {
		s.queue(d).poke(false)
	}
	return nil
}

// queue is one destination's sender.
type queue struct {
	s    *Service
	dest spec.ServerName
	wake chan bool // true: the destination is back, retry now

	mu        sync.Mutex
	ephemeral []json.RawMessage // EDUs kept in memory only (SendEphemeralEDU)
}

// maxEphemeral bounds the EDUs kept in memory for a destination that does
// not answer: the oldest go first.
const maxEphemeral = 200

// SendEphemeralEDU sends an EDU that may be lost (typing, receipts,
// presence) to dest in its next transaction. It is kept in memory only,
// at most maxEphemeral per destination, and not persisted: a restart loses
// it, which for state of the moment is no loss. Before the Service is
// built (New) it is dropped.
func (p *Peers) SendEphemeralEDU(dest spec.ServerName, eduType string, content any) error {
	s := p.service()
	if s == nil || !p.Allowed(dest) {
		return nil
	}
	edu, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
	if err != nil {
		return err
	}
	q := s.queue(dest)
	q.addEphemeral(edu)
	q.poke(false)
	return nil
}

// addEphemeral keeps an in-memory EDU, dropping the oldest past the bound.
func (q *queue) addEphemeral(edu json.RawMessage) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ephemeral = append(q.ephemeral, edu)
	if len(q.ephemeral) > maxEphemeral {
		q.ephemeral = q.ephemeral[len(q.ephemeral)-maxEphemeral:]
	}
}

// takeEphemeral removes up to n in-memory EDUs for a transaction.
func (q *queue) takeEphemeral(n int) []json.RawMessage {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.ephemeral))
	out := q.ephemeral[:n:n]
	q.ephemeral = q.ephemeral[n:]
	return out
}

// putBackEphemeral returns EDUs of a failed transaction to the front.
func (q *queue) putBackEphemeral(edus []json.RawMessage) {
	if len(edus) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ephemeral = append(append([]json.RawMessage{}, edus...), q.ephemeral...)
	if len(q.ephemeral) > maxEphemeral {
		q.ephemeral = q.ephemeral[len(q.ephemeral)-maxEphemeral:]
	}
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
				// New work does not end a backoff: wait it out, however
				// much is queued meanwhile (a down destination costs no
				// request per message), unless the destination is back.
				for waiting := true; waiting; {
					select {
					case b := <-q.wake:
						if b {
							backoff = 0
							waiting = false
						}
					case <-wait:
						waiting = false
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

// sendOnce sends one transaction of the oldest queued events and EDUs and
// returns how many it delivered.
func (q *queue) sendOnce(ctx context.Context) (int, error) {
	positions, err := q.ids(ctx, `SELECT position FROM federation_outbound WHERE destination = $1 ORDER BY position LIMIT `+strconv.Itoa(maxPDUs))
	if err != nil {
		return 0, err
	}
	eduIDs, edus, err := q.edus(ctx)
	if err != nil {
		return 0, err
	}
	ephemeral := q.takeEphemeral(maxEDUs - len(edus))
	if len(positions) == 0 && len(edus) == 0 && len(ephemeral) == 0 {
		return 0, nil
	}
	pdus := []json.RawMessage{}
	for _, p := range positions {
		raw, _, err := q.s.rooms.EventJSONAt(ctx, p)
		if err != nil {
			q.putBackEphemeral(ephemeral)
			return 0, err
		}
		if raw != nil { // nil: purged meanwhile
			pdus = append(pdus, raw)
		}
	}
	edus = append(edus, ephemeral...)
	if len(pdus) > 0 || len(edus) > 0 {
		// The transaction ID names what it carries: a retry of the same
		// batch has the same ID, and positions are never reused.
		txn := ""
		if len(positions) > 0 {
			txn = strconv.FormatInt(positions[0], 10) + "-" + strconv.FormatInt(positions[len(positions)-1], 10)
		}
		if len(eduIDs) > 0 {
			txn += "e" + strconv.FormatInt(eduIDs[0], 10) + "-" + strconv.FormatInt(eduIDs[len(eduIDs)-1], 10)
		}
		if len(ephemeral) > 0 {
			// In-memory EDUs have no ID of their own: the time tells
			// this transaction from any other.
			txn += "t" + strconv.FormatInt(time.Now().UnixNano(), 36)
		}
		body, _ := json.Marshal(map[string]any{
			"origin": q.s.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus, "edus": edus,
		})
		if _, err := q.s.request(ctx, http.MethodPut, q.dest, "/_matrix/federation/v1/send/"+txn, body); err != nil {
			var re *remoteError
			if !errors.As(err, &re) || re.status < 400 || re.status >= 500 || re.status == http.StatusTooManyRequests {
				q.putBackEphemeral(ephemeral)
				return 0, err
			}
			// A refusal of the transaction itself will not change on a
			// retry: drop it rather than block the destination forever.
			q.s.log.Warn().Str("destination", string(q.dest)).Err(err).Int("pdus", len(pdus)).Int("edus", len(edus)).Msg("federation: transaction refused, dropped")
		}
	}
	err = q.s.db.Write(ctx, func(tx *storage.Tx) error {
		args := make([][]any, len(positions))
		for i, p := range positions {
			args[i] = []any{string(q.dest), p}
		}
		if err := tx.ExecMany(`DELETE FROM federation_outbound WHERE destination = $1 AND position = $2`, args); err != nil {
			return err
		}
		args = make([][]any, len(eduIDs))
		for i, id := range eduIDs {
			args[i] = []any{string(q.dest), id}
		}
		return tx.ExecMany(`DELETE FROM federation_outbound_edus WHERE destination = $1 AND id = $2`, args)
	})
	return len(positions) + len(eduIDs) + len(ephemeral), err
}

// ids reads one BIGINT column for the destination.
func (q *queue) ids(ctx context.Context, query string) ([]int64, error) {
	rows, err := q.s.db.Query(ctx, query, string(q.dest))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// edus reads the oldest queued EDUs of the destination, as the
// transaction carries them.
func (q *queue) edus(ctx context.Context) ([]int64, []json.RawMessage, error) {
	rows, err := q.s.db.Query(ctx, `SELECT id, edu_type, content FROM federation_outbound_edus WHERE destination = $1 ORDER BY id LIMIT `+strconv.Itoa(maxEDUs), string(q.dest))
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var ids []int64
	edus := []json.RawMessage{}
	size := 0
	for rows.Next() && (len(edus) == 0 || size < maxEDUBytes) {
		var id int64
		var typ, content string
		if err := rows.Scan(&id, &typ, &content); err != nil {
			return nil, nil, err
		}
		edu, err := json.Marshal(map[string]any{"edu_type": typ, "content": json.RawMessage(content)})
		if err != nil {
			return nil, nil, err
		}
		ids = append(ids, id)
		edus = append(edus, edu)
		size += len(edu)
	}
	return ids, edus, rows.Err()
}

// catchUpRows bounds the queued rows one catch-up reads; older ones are
// dropped unread (the destination backfills them if it wants them).
const catchUpRows = 5000

// catchUp drops the destination's queued events but the newest of each
// room and the member events naming its users.
func (q *queue) catchUp(ctx context.Context) error {
	positions, err := q.ids(ctx, `SELECT position FROM federation_outbound WHERE destination = $1 ORDER BY position DESC LIMIT `+strconv.Itoa(catchUpRows))
	if err != nil || len(positions) == 0 {
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
