package rooms

import (
	"context"
	"slices"
	"sort"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// The DAG as this server serves it to other servers: the events before
// some (get_missing_events, backfill), the state before an event, an
// event's auth chain. Each answer is bounded, and holds only events one of
// the asking server's users in the room may see by history visibility
// (the federation package checks that the server has one).

// Bounds of what one request of another server is answered.
const (
	serveMissingMax  = 50
	serveBackfillMax = 100
)

// MissingEvents answers get_missing_events: the events before latest,
// walking prev events back to earliest, at most limit and none below
// minDepth, that origin may see; oldest first.
func (s *Service) MissingEvents(ctx context.Context, origin spec.ServerName, room spec.RoomID, earliest, latest []spec.EventID, limit int, minDepth int64) ([][]byte, error) {
	r := s.room(room)
	if r == nil {
		return nil, spec.NotFound("no room %s is known to this server", room)
	}
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, serveMissingMax)
	stop := map[spec.EventID]bool{}
	for _, id := range earliest {
		stop[id] = true
	}
	var start []spec.EventID
	for _, id := range latest {
		ev, err := s.eventByID(ctx, id)
		if err != nil {
			return nil, err
		}
		if ev != nil && ev.PDU.RoomID() == room {
			start = append(start, ev.PDU.PrevEvents()...)
		}
	}
	evs, err := s.walkBack(ctx, r, origin, start, stop, limit, minDepth)
	if err != nil {
		return nil, err
	}
	slices.Reverse(evs)
	return evs, nil
}

// Backfill answers /backfill: the events from and before the given ones,
// newest first, at most limit, that origin may see.
func (s *Service) Backfill(ctx context.Context, origin spec.ServerName, room spec.RoomID, from []spec.EventID, limit int) ([][]byte, error) {
	r := s.room(room)
	if r == nil {
		return nil, spec.NotFound("no room %s is known to this server", room)
	}
	if limit <= 0 {
		return nil, spec.InvalidParam("limit must be positive")
	}
	return s.walkBack(ctx, r, origin, from, nil, min(limit, serveBackfillMax), 0)
}

// walkBack walks the DAG back from start, breadth first by depth, to the
// stop events; it returns the events origin may see, newest first.
func (s *Service) walkBack(ctx context.Context, r *liveRoom, origin spec.ServerName, start []spec.EventID, stop map[spec.EventID]bool, limit int, minDepth int64) ([][]byte, error) {
	seen := map[spec.EventID]bool{}
	var frontier []*Event
	add := func(ids []spec.EventID) error {
		for _, id := range ids {
			if seen[id] || stop[id] {
				continue
			}
			seen[id] = true
			ev, err := s.eventByID(ctx, id)
			if err != nil {
				return err
			}
			if ev != nil && ev.PDU.RoomID() == r.id && ev.PDU.Depth() >= minDepth {
				frontier = append(frontier, ev)
			}
		}
		return nil
	}
	if err := add(start); err != nil {
		return nil, err
	}
	var out [][]byte
	// Visited at most a few times the limit: invisible events cost too.
	for visits := 0; len(frontier) > 0 && len(out) < limit && visits < 4*limit; visits++ {
		sort.Slice(frontier, func(i, j int) bool { return frontier[i].PDU.Depth() > frontier[j].PDU.Depth() })
		ev := frontier[0]
		frontier = frontier[1:]
		if s.serverMaySee(origin, r, ev) {
			out = append(out, ev.PDU.JSON())
		}
		if err := add(ev.PDU.PrevEvents()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// serverMaySee reports whether one of origin's users in the room may see
// ev, by the room's history visibility as for a local user.
func (s *Service) serverMaySee(origin spec.ServerName, r *liveRoom, ev *Event) bool {
	for _, u := range r.cur.Load().joined() {
		if u.Server() != origin {
			continue
		}
		if a, err := s.readAccess(u, r.id); err == nil && ev.Position <= a.upTo && r.canSee(u, ev) {
			return true
		}
	}
	return false
}

// StateBefore answers /state and /state_ids: the state before an event, and
// the auth chain of that state.
func (s *Service) StateBefore(ctx context.Context, room spec.RoomID, eventID spec.EventID) (state, authChain []*events.PDU, err error) {
	r := s.room(room)
	if r == nil {
		return nil, nil, spec.NotFound("no room %s is known to this server", room)
	}
	ev, err := s.eventByID(ctx, eventID)
	if err != nil {
		return nil, nil, err
	}
	if ev == nil || ev.PDU.RoomID() != room {
		return nil, nil, spec.NotFound("no event %s in the room", eventID)
	}
	var before roomState
	if len(ev.PDU.PrevEvents()) > 0 {
		if before, err = s.stateBeforeIDs(ctx, r, r.cur.Load(), ev.PDU.PrevEvents(), 0); err != nil {
			return nil, nil, err
		}
	}
	for _, p := range before.All() {
		state = append(state, p)
	}
	chain, err := s.authChain(ctx, state)
	return state, chain, err
}

// EventAuth answers /event_auth: an event's auth chain.
func (s *Service) EventAuth(ctx context.Context, room spec.RoomID, eventID spec.EventID) ([]*events.PDU, error) {
	p, err := s.dagEvent(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if p == nil || p.RoomID() != room {
		return nil, spec.NotFound("no event %s in the room", eventID)
	}
	return s.authChain(ctx, []*events.PDU{p})
}
