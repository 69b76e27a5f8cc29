package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/rooms/stateres"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// The room as a DAG: the state after each event, the state before an event
// with several prev events (state resolution of their states, rooms/v2 and
// v12), and the events held outside the timeline (outliers: soft-failed
// events and state fetched to fill a gap).
//
// The state after an event is kept in memory for the room's latest
// events (stateAfterKept of them, cheap: states share the persistent
// trie's nodes); for an older one it is read from the database as the
// state at its stream position, which is exact while the room's history
// there was a line. A room that forks keeps its forward extremities' states
// in its snapshot (forks) until an event joins them again.

// stateAfterKept bounds the per-event states a room keeps in memory.
const stateAfterKept = 512

// rememberStates keeps the state after each committed event; histMu held.
func (r *liveRoom) rememberStates(evs []*Event) {
	if r.stateAfter == nil {
		r.stateAfter = map[spec.EventID]roomState{}
	}
	for _, ev := range evs {
		if ev.stateAfter.root == nil && ev.stateAfter.n == 0 {
			continue
		}
		id := ev.PDU.EventID()
		if _, ok := r.stateAfter[id]; !ok {
			r.stateAfterOrder = append(r.stateAfterOrder, id)
		}
		r.stateAfter[id] = ev.stateAfter
	}
	for len(r.stateAfterOrder) > stateAfterKept {
		delete(r.stateAfter, r.stateAfterOrder[0])
		r.stateAfterOrder = r.stateAfterOrder[1:]
	}
}

// maxStateDepth bounds the walk back through outliers to find a state.
const maxStateDepth = 8

// stateAfterEvent is the room's state after the event id, as seen from snap.
func (s *Service) stateAfterEvent(ctx context.Context, r *liveRoom, snap *snapshot, id spec.EventID, depth int) (roomState, error) {
	if len(snap.extremity) == 1 && snap.extremity[0].EventID() == id {
		return snap.state, nil
	}
	if st, ok := snap.forks[id]; ok {
		return st, nil
	}
	r.histMu.RLock()
	st, ok := r.stateAfter[id]
	r.histMu.RUnlock()
	if ok {
		return st, nil
	}
	ev, err := s.eventByID(ctx, id)
	if err != nil {
		return roomState{}, err
	}
	if ev != nil {
		if ev.PDU.RoomID() != r.id {
			return roomState{}, spec.Forbidden("event %s is in another room", id)
		}
		rows, err := s.stateAt(ctx, r.id, ev.Position)
		if err != nil {
			return roomState{}, err
		}
		var out roomState
		for _, e := range rows {
			out = out.With(keyOf(e.PDU), e.PDU)
		}
		return out, nil
	}
	// An outlier: the state before it (from its prev events) and itself.
	p, _, err := s.outlier(ctx, id)
	if err != nil {
		return roomState{}, err
	}
	if p == nil || p.RoomID() != r.id || depth >= maxStateDepth {
		return roomState{}, fmt.Errorf("no state known after event %s", id)
	}
	before, err := s.stateBeforeIDs(ctx, r, snap, p.PrevEvents(), depth+1)
	if err != nil {
		return roomState{}, err
	}
	if p.IsState() {
		before = before.With(keyOf(p), p)
	}
	return before, nil
}

// stateBefore is the state an event with the given prev events is checked
// against: the state after its one prev event, or the resolution of the
// states after each when they differ.
func (s *Service) stateBeforeIDs(ctx context.Context, r *liveRoom, snap *snapshot, prevs []spec.EventID, depth int) (roomState, error) {
	if len(prevs) == 0 {
		return roomState{}, fmt.Errorf("an event with no prev events is only a create event")
	}
	var states []roomState
	for _, id := range prevs {
		st, err := s.stateAfterEvent(ctx, r, snap, id, depth)
		if err != nil {
			return roomState{}, err
		}
		states = append(states, st)
	}
	return s.resolve(ctx, r, states)
}

// resolve is the state resolution of states (state resolution v2; v2.1 for
// room version 12), or the one state when they are all the same.
func (s *Service) resolve(ctx context.Context, r *liveRoom, states []roomState) (roomState, error) {
	distinct := []roomState{states[0]}
	for _, st := range states[1:] {
		if !slices.ContainsFunc(distinct, func(d roomState) bool { return equalStates(d, st) }) {
			distinct = append(distinct, st)
		}
	}
	if len(distinct) == 1 {
		return distinct[0], nil
	}
	sets := make([]authrules.StateMap, len(distinct))
	for i, st := range distinct {
		sets[i] = st.Map()
	}
	fetch := func(id spec.EventID) (*events.PDU, error) {
		p, err := s.dagEvent(ctx, id)
		if err == nil && p == nil {
			err = fmt.Errorf("event %s is not held", id)
		}
		return p, err
	}
	start := time.Now()
	res, err := stateres.Resolve(r.version, sets, fetch)
	if err != nil {
		return roomState{}, fmt.Errorf("state resolution: %w", err)
	}
	s.log.Info().Str("room_id", string(r.id)).Int("forks", len(sets)).Dur("took", time.Since(start)).Msg("resolved the state of a fork")
	// Built on the first state, so that it shares what it can.
	out := distinct[0]
	removed := false
	for k := range out.All() {
		if _, ok := res[k]; !ok {
			removed = true
			break
		}
	}
	if removed {
		out = roomState{}
	}
	for k, p := range res {
		if cur := out.get(k); cur == nil || cur.EventID() != p.EventID() {
			out = out.With(k, p)
		}
	}
	return out, nil
}

// equalStates reports whether two states hold the same events.
func equalStates(a, b roomState) bool {
	if a.root == b.root {
		return true
	}
	if a.Len() != b.Len() {
		return false
	}
	for k, p := range a.All() {
		if q := b.get(k); q == nil || q.EventID() != p.EventID() {
			return false
		}
	}
	return true
}

func keyOf(p *events.PDU) authrules.StateKeyPair {
	sk, _ := p.StateKey()
	return authrules.StateKeyPair{Type: p.Type(), StateKey: sk}
}

// dagEvent is an event the room's DAG may name: in the timeline, or an
// outlier. Never for clients: an outlier is not theirs to see.
func (s *Service) dagEvent(ctx context.Context, id spec.EventID) (*events.PDU, error) {
	ev, err := s.eventByID(ctx, id)
	if err != nil || ev != nil {
		if ev == nil {
			return nil, err
		}
		return ev.PDU, err
	}
	p, _, err := s.outlier(ctx, id)
	return p, err
}

// Reasons an event is an outlier.
const (
	outlierSoftFailed = "soft_failed" // passed its auth events, failed the current state
	outlierState      = "state"       // state or auth chain fetched to fill a gap
	// a redaction whose target is not held, or to which it does not apply
	// (remote.go: redactionTarget)
	outlierHeldRedaction = "held_redaction"
)

// outlier loads an event held outside the timeline, and why.
func (s *Service) outlier(ctx context.Context, id spec.EventID) (*events.PDU, string, error) {
	var room, raw, reason string
	err := s.db.QueryRow(ctx, `SELECT room_id, json, reason FROM event_outliers WHERE event_id = $1`, string(id)).Scan(&room, &raw, &reason)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, "", nil
		}
		return nil, "", err
	}
	r := s.room(spec.RoomID(room))
	if r == nil {
		return nil, "", nil
	}
	p, err := events.ParsePDU([]byte(raw), r.version)
	if err != nil {
		return nil, "", fmt.Errorf("stored outlier %s: %w", id, err)
	}
	return p, reason, nil
}

// storeOutlier keeps an event outside the timeline: it can be named as a
// prev or auth event, and is served to servers that ask for it, but no
// client sees it and it is no part of the current state.
func (s *Service) storeOutlier(ctx context.Context, p *events.PDU, reason string) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO event_outliers (event_id, room_id, json, reason, received_ts) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (event_id) DO NOTHING`, string(p.EventID()), string(p.RoomID()), string(p.JSON()), reason, s.now().UnixMilli())
		return err
	})
}

// setResolvedState writes what state resolution changed with ev besides
// ev's own entry (after setCurrentState wrote that one), and records it at
// ev's position, where sync finds it (room_state_resolved).
func setResolvedState(tx *storage.Tx, room spec.RoomID, ev *Event) error {
	record := func(k authrules.StateKeyPair, id any) error {
		_, err := tx.Exec(`INSERT INTO room_state_resolved (room_id, position, type, state_key, event_id) VALUES ($1, $2, $3, $4, $5)`,
			string(room), ev.Position, k.Type, k.StateKey, id)
		if err != nil {
			return fmt.Errorf("record resolved state: %w", err)
		}
		return nil
	}
	for _, p := range ev.resolved {
		if err := storeAsHistory(tx, p); err != nil {
			return err
		}
		if err := setCurrentState(tx, p); err != nil {
			return err
		}
		if err := record(keyOf(p), string(p.EventID())); err != nil {
			return err
		}
	}
	for _, k := range ev.unset {
		if _, err := tx.Exec(`DELETE FROM room_state WHERE room_id = $1 AND type = $2 AND state_key = $3`, string(room), k.Type, k.StateKey); err != nil {
			return fmt.Errorf("update room state: %w", err)
		}
		if err := record(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// resolution is what state resolution changed in the current state at one
// position besides the resolving event's own entry: entries set, and
// entries removed. Rare (a fork joining): every room keeps all of its own
// in memory (liveRoom.resolutions).
type resolution struct {
	pos   int64
	set   []*events.PDU
	unset []authrules.StateKeyPair
}

// resolvedIn returns the room's resolutions with position in (from, to].
func (r *liveRoom) resolvedIn(from, to int64) []resolution {
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	i := sort.Search(len(r.resolutions), func(i int) bool { return r.resolutions[i].pos > from })
	j := sort.Search(len(r.resolutions), func(i int) bool { return r.resolutions[i].pos > to })
	return r.resolutions[i:j:j]
}

// withResolved applies resolutions to state rows read by position (the
// latest event per key): a resolution takes effect after the event at its
// own position and before any later one. With unset, removed entries are
// dropped; without, they stay (a client cannot be told of a removal).
func withResolved(rows []*Event, res []resolution, unset bool) []*events.PDU {
	if len(res) == 0 {
		return pdusOf(rows)
	}
	type entry struct {
		rank int64 // position*2, +1 for a resolution
		pdu  *events.PDU
	}
	latest := make(map[authrules.StateKeyPair]entry, len(rows))
	for _, ev := range rows {
		latest[keyOf(ev.PDU)] = entry{ev.Position * 2, ev.PDU}
	}
	for _, rs := range res {
		rank := rs.pos*2 + 1
		for _, p := range rs.set {
			if e, ok := latest[keyOf(p)]; !ok || e.rank < rank {
				latest[keyOf(p)] = entry{rank, p}
			}
		}
		for _, k := range rs.unset {
			if e, ok := latest[k]; unset && ok && e.rank < rank {
				delete(latest, k)
			}
		}
	}
	all := make([]entry, 0, len(latest))
	for _, e := range latest {
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].rank < all[j].rank })
	out := make([]*events.PDU, len(all))
	for i, e := range all {
		out[i] = e.pdu
	}
	return out
}

// loadResolutions reads a room's resolutions, oldest first.
func loadResolutions(q querier, room spec.RoomID) ([]resolution, error) {
	held, err := queryEventsOn(q, `WHERE e.event_id IN (SELECT event_id FROM room_state_resolved WHERE room_id = $1)`, string(room))
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*events.PDU, len(held))
	for _, ev := range held {
		byID[string(ev.PDU.EventID())] = ev.PDU
	}
	rows, err := q.Query(`SELECT position, type, state_key, event_id FROM room_state_resolved WHERE room_id = $1 ORDER BY position`, string(room))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []resolution
	for rows.Next() {
		var pos int64
		var k authrules.StateKeyPair
		var id sql.NullString
		if err := rows.Scan(&pos, &k.Type, &k.StateKey, &id); err != nil {
			return nil, err
		}
		if n := len(out); n == 0 || out[n-1].pos != pos {
			out = append(out, resolution{pos: pos})
		}
		rs := &out[len(out)-1]
		switch p := byID[id.String]; {
		case !id.Valid:
			rs.unset = append(rs.unset, k)
		case p != nil:
			rs.set = append(rs.set, p)
		}
	}
	return out, rows.Err()
}

// addReceived moves the working state past a received event, already
// checked against before, the state before it: the forward extremities
// become those it does not follow plus itself, and the current state their
// resolution when there are several.
func (b *builder) addReceived(ctx context.Context, pdu *events.PDU, before roomState) (*Event, error) {
	prev := b.snap
	after := before
	if pdu.IsState() {
		after = before.With(keyOf(pdu), pdu)
	}
	var ext []*events.PDU
	forks := map[spec.EventID]roomState{}
	for _, e := range prev.extremity {
		if slices.Contains(pdu.PrevEvents(), e.EventID()) {
			continue
		}
		st, err := b.s.stateAfterEvent(ctx, b.r, prev, e.EventID(), 0)
		if err != nil {
			return nil, err
		}
		ext = append(ext, e)
		forks[e.EventID()] = st
	}
	ext = append(ext, pdu)
	cur := after
	if len(ext) > 1 {
		forks[pdu.EventID()] = after
		states := make([]roomState, 0, len(ext))
		for _, e := range ext {
			states = append(states, forks[e.EventID()])
		}
		var err error
		if cur, err = b.s.resolve(ctx, b.r, states); err != nil {
			return nil, err
		}
	} else {
		forks = nil
	}
	ev := &Event{PDU: pdu, replacedKnown: true, stateAfter: after}
	// What the write must change beyond applying pdu to the current state.
	naive := prev.state
	if pdu.IsState() {
		ev.replaced = prev.state.get(keyOf(pdu))
		naive = naive.With(keyOf(pdu), pdu)
	}
	if !equalStates(naive, cur) {
		for k, p := range cur.All() {
			if q := naive.get(k); q == nil || q.EventID() != p.EventID() {
				ev.resolved = append(ev.resolved, p)
			}
		}
		for k := range naive.All() {
			if cur.get(k) == nil {
				ev.unset = append(ev.unset, k)
			}
		}
		ev.replacedKnown = false // memory cannot undo a resolution
	}
	b.snap = &snapshot{state: cur, depth: max(prev.depth, pdu.Depth()), extremity: ext, forks: forks, position: prev.position}
	b.evs = append(b.evs, ev)
	return ev, nil
}

// storeAsHistory moves an outlier that state resolution made current state
// (state fetched at a gap) into the room's stored events, as history: at a
// position below every other, as backfill stores events (backfill.go), so
// that no /sync sends it as new.
func storeAsHistory(tx *storage.Tx, p *events.PDU) error {
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM events WHERE event_id = $1`, string(p.EventID())).Scan(&n); err != nil || n > 0 {
		return err
	}
	var low int64
	if err := tx.QueryRow(`SELECT coalesce(min(position), 0) FROM events`).Scan(&low); err != nil {
		return err
	}
	if err := insertEvent(tx, &Event{PDU: p, Position: min(low, 0) - 1}); err != nil {
		return err
	}
	_, err := tx.Exec(`DELETE FROM event_outliers WHERE event_id = $1`, string(p.EventID()))
	return err
}
