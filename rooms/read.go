package rooms

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// Token is a position in the stream as clients see it: "s<position>". A
// /sync next_batch ("s<position>_<…>") is accepted wherever a Token is, as
// the spec allows a sync token as a /messages "from".
type Token int64

func (t Token) String() string { return "s" + strconv.FormatInt(int64(t), 10) }

// ParseToken reads a pagination token.
func ParseToken(s string) (Token, error) {
	if len(s) < 2 || s[0] != 's' {
		return 0, spec.InvalidParam("invalid pagination token")
	}
	s = s[1:]
	if i := strings.IndexByte(s, '_'); i >= 0 {
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < minPosition-1 { // backfilled events have negative positions
		return 0, spec.InvalidParam("invalid pagination token")
	}
	return Token(n), nil
}

// access describes how a user may read a room right now.
type access struct {
	r *liveRoom
	// upTo is the last position the user may read: the current position
	// for members and world-readable rooms, the leave for users who left.
	upTo int64
	// joined means the user is joined now.
	joined bool
}

// readAccess decides whether the user may read the room at all: joined
// users up to now, users who left (or were banned) after having been joined
// up to the end of their last join, anyone in a world-readable room. An
// invite, a knock, a ban before any join or a rejected invite gives no read
// access: those users have the stripped state their invite or knock carried,
// and otherwise the same 403 as for a room that does not exist.
func (s *Service) readAccess(user spec.UserID, id spec.RoomID) (*access, error) {
	r := s.room(id)
	if r == nil {
		return nil, errNotInRoom(id)
	}
	snap := r.cur.Load()
	if snap.membership(user) == spec.Join {
		return &access{r: r, upTo: snap.position, joined: true}, nil
	}
	if r.worldReadableNow() {
		return &access{r: r, upTo: snap.position}, nil
	}
	if s.isForgotten(user, id) {
		// POST /forget: the history is no longer theirs to read.
		return nil, errNotInRoom(id)
	}
	r.histMu.RLock()
	end, ok := lastJoinEnd(r.members[user])
	r.histMu.RUnlock()
	if ok {
		return &access{r: r, upTo: end}, nil
	}
	return nil, errNotInRoom(id)
}

// lastJoinEnd returns the position of the member event that ended the
// user's latest join (their leave, kick or ban), and false if they never
// joined or are joined still. A user invited or knocking again after
// leaving reads only up to that leave.
func lastJoinEnd(h []posValue) (int64, bool) {
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].value == spec.Join {
			if i == len(h)-1 {
				return 0, false
			}
			return h[i+1].pos, true
		}
	}
	return 0, false
}

// stateFor returns the room state the user may see: the current state for
// joined members and world-readable rooms, the state at their leave for
// those who left.
func (s *Service) stateFor(ctx context.Context, a *access) ([]*events.PDU, error) {
	snap := a.r.cur.Load()
	if a.upTo >= snap.position {
		out := make([]*events.PDU, 0, snap.state.Len())
		for _, ev := range snap.state.All() {
			out = append(out, ev)
		}
		return out, nil
	}
	evs, err := s.stateAt(ctx, a.r.id, a.upTo)
	if err != nil {
		return nil, err
	}
	return pdusOf(evs), nil
}

// State returns the room's state as the user may see it.
func (s *Service) State(ctx context.Context, user spec.UserID, id spec.RoomID) ([]*events.PDU, error) {
	a, err := s.readAccess(user, id)
	if err != nil {
		return nil, err
	}
	return s.stateFor(ctx, a)
}

// StateEvent returns one state event as the user may see it.
func (s *Service) StateEvent(ctx context.Context, user spec.UserID, id spec.RoomID, typ, key string) (*events.PDU, error) {
	a, err := s.readAccess(user, id)
	if err != nil {
		return nil, err
	}
	if a.upTo >= a.r.cur.Load().position {
		if ev := a.r.cur.Load().get(typ, key); ev != nil {
			return ev, nil
		}
		return nil, spec.NotFound("the room has no %s state with key %q", typ, key)
	}
	state, err := s.stateFor(ctx, a)
	if err != nil {
		return nil, err
	}
	for _, ev := range state {
		if sk, _ := ev.StateKey(); ev.Type() == typ && sk == key {
			return ev, nil
		}
	}
	return nil, spec.NotFound("the room has no %s state with key %q", typ, key)
}

// MembersRequest is what GET /members asks for.
type MembersRequest struct {
	At            *Token // the state at this token (nil: now)
	Membership    string // only this membership ("" for any)
	NotMembership string // not this membership ("" for none)
}

// Members returns the room's member events the user may see, filtered as
// asked.
func (s *Service) Members(ctx context.Context, user spec.UserID, id spec.RoomID, req MembersRequest) ([]*events.PDU, error) {
	at, want, notWant := req.At, req.Membership, req.NotMembership
	a, err := s.readAccess(user, id)
	if err != nil {
		return nil, err
	}
	var state []*events.PDU
	if at != nil && int64(*at) < a.upTo {
		evs, err := s.stateAt(ctx, id, a.r.membersFrom(int64(*at)))
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			state = append(state, ev.PDU)
		}
	} else if state, err = s.stateFor(ctx, a); err != nil {
		return nil, err
	}
	out := []*events.PDU{}
	for _, ev := range state {
		if ev.Type() != spec.MRoomMember {
			continue
		}
		m := ev.Content().Get("membership").String()
		if (want != "" && m != want) || (notWant != "" && m == notWant) {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}

// membersFrom is the position /members?at= reads the state at. A room's
// members begin with its creator, whom createRoom joins in the same
// transaction as the create event: a token from before that join (the
// prev_batch of a timeline that starts at the room's creation) gives the
// room as its creator made it, not an empty room.
func (r *liveRoom) membersFrom(at int64) int64 {
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	if len(r.changes) > 0 && at < r.changes[0].pos {
		return r.changes[0].pos
	}
	return at
}

// JoinedMembersOf answers /joined_members: only members may ask.
func (s *Service) JoinedMembersOf(user spec.UserID, id spec.RoomID) ([]*events.PDU, error) {
	r := s.room(id)
	if r == nil {
		return nil, errNotInRoom(id)
	}
	snap := r.cur.Load()
	if snap.membership(user) != spec.Join && !r.worldReadableNow() {
		return nil, errNotInRoom(id)
	}
	var out []*events.PDU
	for k, ev := range snap.state.All() {
		if k.Type == spec.MRoomMember && ev.Content().Get("membership").String() == spec.Join {
			out = append(out, ev)
		}
	}
	return out, nil
}

// Event returns one event if the user may see it.
//
// An event the user may not read is a 404 like one that does not exist, as
// GET /rooms/{roomId}/event/{eventId} answers ("not found or you do not
// have permission to read this event"), whether or not the room exists.
func (s *Service) Event(ctx context.Context, user spec.UserID, id spec.RoomID, eventID spec.EventID) (*Event, error) {
	a, err := s.readAccess(user, id)
	if err != nil {
		return nil, spec.NotFound("event not found")
	}
	ev, err := s.eventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev == nil || ev.PDU.RoomID() != id || ev.Position > a.upTo || !a.r.canSee(user, ev) {
		return nil, spec.NotFound("event not found")
	}
	return ev, nil
}

// Page is a page of /messages.
type Page struct {
	Events     []*Event
	Start, End Token
	HasEnd     bool
	State      []*events.PDU // member events of the senders, when lazy-loading
}

// MessagesRequest is what GET /messages asks for.
type MessagesRequest struct {
	// From is where the page starts (nil: the present going backwards,
	// the room's start going forwards); To bounds it (nil: no bound).
	From, To  *Token
	Backwards bool // dir=b
	Limit     int  // 0: 10; at most 1000
	Filter    *RoomEventFilter
}

// Messages pages through a room's timeline from a token in either
// direction, returning only events the user may see. Events the user may
// not see are skipped without ending the page early.
func (s *Service) Messages(ctx context.Context, user spec.UserID, id spec.RoomID, req MessagesRequest) (*Page, error) {
	from, to, backwards, limit, f := req.From, req.To, req.Backwards, req.Limit, req.Filter
	a, err := s.readAccess(user, id)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 10
	}
	if limit > 1000 {
		limit = 1000
	}
	start := int64(minPosition - 1) // forwards from the start, backfilled history included
	if from != nil {
		start = int64(*from)
	} else if backwards {
		start = a.upTo
	}
	if start > a.upTo {
		start = a.upTo
	}
	page := &Page{Start: Token(start)}
	cursor := start
	exhausted := false
	backfilled := false
	for len(page.Events) < limit {
		if exhausted {
			// At the start of what this server holds of a federated room:
			// the history before it is asked of the room's other servers,
			// once a request.
			if !backwards || to != nil || backfilled {
				break
			}
			backfilled = true
			if n, err := s.backfill(ctx, a.r); err != nil || n == 0 {
				if err != nil {
					s.log.Info().Str("room_id", string(id)).Err(err).Msg("federation: no backfill")
				}
				break
			}
			exhausted = false
		}
		var batch []*Event
		if backwards {
			lower := int64(minPosition - 1)
			if to != nil {
				lower = int64(*to)
			}
			if cursor > lower {
				batch, err = s.pageBetween(ctx, a.r, eventRange{from: lower, to: cursor, limit: limit * 2, backwards: true})
			}
		} else {
			upper := a.upTo
			if to != nil && int64(*to) < upper {
				upper = int64(*to)
			}
			if cursor < upper {
				batch, err = s.pageBetween(ctx, a.r, eventRange{from: cursor, to: upper, limit: limit * 2})
			}
		}
		if err != nil {
			return nil, err
		}
		if len(batch) < limit*2 {
			exhausted = true // this batch reaches the bound
		}
		for i, ev := range batch {
			if backwards {
				cursor = ev.Position - 1
			} else {
				cursor = ev.Position
			}
			if a.r.canSee(user, ev) && f.Matches(ev.PDU) {
				page.Events = append(page.Events, ev)
			}
			if len(page.Events) == limit {
				if i < len(batch)-1 {
					exhausted = false
				}
				break
			}
		}
	}
	// The spec omits end when no further events are available.
	if !exhausted {
		page.End, page.HasEnd = Token(cursor), true
	}
	if f != nil && f.LazyLoadMembers {
		page.State, err = s.senderMembers(ctx, a, page.Events)
		if err != nil {
			return nil, err
		}
	}
	return page, nil
}

// senderMembers returns the member events of the senders of evs, as of the
// user's view of the room (lazy-loading members).
func (s *Service) senderMembers(ctx context.Context, a *access, evs []*Event) ([]*events.PDU, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	state, err := s.stateFor(ctx, a)
	if err != nil {
		return nil, err
	}
	senders := map[spec.UserID]bool{}
	for _, ev := range evs {
		senders[ev.PDU.Sender()] = true
	}
	var out []*events.PDU
	for _, ev := range state {
		if sk, _ := ev.StateKey(); ev.Type() == spec.MRoomMember && senders[spec.UserID(sk)] {
			out = append(out, ev)
		}
	}
	return out, nil
}

// ContextResult answers /context.
type ContextResult struct {
	Event         *Event
	Before, After []*Event
	Start, End    Token
	State         []*events.PDU
}

// Context returns an event with up to limit visible events around it and
// the state at the event.
func (s *Service) Context(ctx context.Context, user spec.UserID, id spec.RoomID, eventID spec.EventID, limit int, f *RoomEventFilter) (*ContextResult, error) {
	ev, err := s.Event(ctx, user, id, eventID)
	if err != nil {
		return nil, err
	}
	if limit < 0 {
		limit = 0
	}
	if limit > 100 {
		limit = 100
	}
	before := limit / 2
	after := limit - before
	res := &ContextResult{Event: ev}
	from := Token(ev.Position - 1)
	bp, err := s.Messages(ctx, user, id, MessagesRequest{From: &from, Backwards: true, Limit: max(before, 1), Filter: f})
	if err != nil {
		return nil, err
	}
	if before > 0 {
		res.Before = bp.Events
	}
	res.Start = Token(ev.Position - 1)
	if len(res.Before) > 0 {
		res.Start = Token(res.Before[len(res.Before)-1].Position - 1)
	}
	fwd := Token(ev.Position)
	ap, err := s.Messages(ctx, user, id, MessagesRequest{From: &fwd, Limit: max(after, 1), Filter: f})
	if err != nil {
		return nil, err
	}
	if after > 0 {
		res.After = ap.Events
	}
	res.End = Token(ev.Position)
	if len(res.After) > 0 {
		res.End = Token(res.After[len(res.After)-1].Position)
	}
	state, err := s.stateAt(ctx, id, ev.Position)
	if err != nil {
		return nil, err
	}
	for _, st := range state {
		res.State = append(res.State, st.PDU)
	}
	return res, nil
}

// pageBetween is eventsBetween answered from memory as far as it covers
// the range: a page back from the present usually lies wholly within the
// recent events. What lies below memory is read from the database and kept
// in memory if it adjoins it (older.go).
func (s *Service) pageBetween(ctx context.Context, r *liveRoom, rg eventRange) ([]*Event, error) {
	from, to, limit, backwards := rg.from, rg.to, rg.limit, rg.backwards
	r.histMu.RLock()
	floor, rewritten := r.recentFloor, r.rewritten
	inMemory := rg
	inMemory.from = max(from, floor)
	mem := recentBetween(r.recent, inMemory)
	r.histMu.RUnlock()
	if from >= floor || (backwards && len(mem) == limit) {
		return mem, nil
	}
	// Memory starts after floor, so the database answers (from, floor].
	top := min(to, floor)
	if backwards {
		n := limit - len(mem)
		older, err := s.eventsBetween(ctx, r.id, eventRange{from: from, to: top, limit: n, backwards: true})
		if err != nil {
			return nil, err
		}
		if top == floor {
			lo := from // a short answer holds all of (from, top]
			if len(older) == n {
				lo = older[n-1].Position - 1
			}
			asc := slices.Clone(older)
			slices.Reverse(asc)
			s.keepOlder(r, floor, rewritten, lo, asc)
		}
		return append(mem, older...), nil
	}
	older, err := s.eventsBetween(ctx, r.id, eventRange{from: from, to: top, limit: limit})
	if err != nil {
		return nil, err
	}
	if top == floor && len(older) < limit {
		s.keepOlder(r, floor, rewritten, from, older)
	}
	return append(older, mem[:min(len(mem), limit-len(older))]...), nil
}

// recentBetween returns the events of evs (oldest first) in the range.
func recentBetween(evs []*Event, rg eventRange) []*Event {
	from, to, limit := rg.from, rg.to, rg.limit
	var out []*Event
	if rg.backwards {
		for i := len(evs) - 1; i >= 0 && len(out) < limit && evs[i].Position > from; i-- {
			if evs[i].Position <= to {
				out = append(out, evs[i])
			}
		}
		return out
	}
	for _, ev := range evs {
		if len(out) == limit || ev.Position > to {
			break
		}
		if ev.Position > from {
			out = append(out, ev)
		}
	}
	return out
}
