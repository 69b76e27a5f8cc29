package sync

import (
	"context"
	"encoding/json"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// joinedRoom builds one room of rooms.join, or nil when nothing in it
// changed since the token. With nothing new it reads nothing from the
// database: the room's position and the ephemeral positions are in memory.
func (s *Service) joinedRoom(ctx context.Context, req *request, id spec.RoomID, now Token, accountData []json.RawMessage, ignored map[spec.UserID]bool) (*JoinedRoom, error) {
	since := req.sincePos()
	joinPos, _ := s.rooms.MembershipEvent(req.user, id)
	if joinPos > now.Pos {
		// Joined after this response's position: the next sync has it.
		return nil, nil
	}
	fresh := req.initial() || joinPos > since || req.fullState
	roomPos := s.rooms.Position(id) // read once: the timeline's start below uses it too
	roomChanged := roomPos > since
	if roomChanged {
		s.noteNewlyShared(req, id, joinPos, now)
	}
	typing := s.typingSince(id, req.sinceSerial(), req.initial())
	receiptsChanged := s.receiptPosition(id) > since
	// A change of the unread counts (a notification, a receipt) is a
	// change of the room: an incremental sync carries the new counts. The
	// user's last change, from memory, spares the per-room look-up.
	userCountsChanged := s.unread != nil && s.unread.Position(req.user) > since
	if !fresh && !roomChanged && typing == nil && !receiptsChanged && len(accountData) == 0 && !userCountsChanged {
		return nil, nil
	}
	counts := s.roomCounts(req.user, id, since)
	if !fresh && !roomChanged && typing == nil && !receiptsChanged && len(accountData) == 0 && !counts.changed {
		return nil, nil
	}

	jr := &JoinedRoom{Ephemeral: EventList{Events: []json.RawMessage{}}, AccountData: EventList{Events: []json.RawMessage{}}}
	tf, limit := req.timelineFilter()
	var evs []*rooms.Event
	limited := false
	if roomChanged || fresh {
		// A newly joined room starts its timeline at the join, not at since.
		floor := since
		if req.initial() || joinPos > since {
			floor = 0
		}
		var err error
		q := rooms.TimelineRequest{User: req.user, Room: id, Since: floor, Until: now.Pos, Limit: limit, Filter: tf}
		if evs, limited, err = s.latestEvents(ctx, q); err != nil {
			return nil, err
		}
	}
	evs = dropIgnored(evs, ignored)
	if !req.stateAfter && len(evs) > 0 {
		if kept, cut := cutAtResolution(evs, s.rooms.StateResolved(id, evs[0].Position-1, now.Pos)); cut {
			evs, limited = kept, true
		}
	}
	start := now.Pos
	if len(evs) > 0 {
		start = evs[0].Position - 1
	} else if roomPos < start {
		start = roomPos
	}
	jr.Timeline = Timeline{Limited: limited, PrevBatch: rooms.Token(start).String()}
	var err error
	if jr.Timeline.Events, err = s.renderTimeline(ctx, req, evs, limited); err != nil {
		return nil, err
	}

	jr.State, jr.StateAfter, err = s.roomState(ctx, req, id, timelineWindow{
		fresh: fresh, events: evs, limited: limited, since: since, start: start, end: now.Pos,
	})
	if err != nil {
		return nil, err
	}
	if jr.Ephemeral.Events, err = s.roomEphemeral(ctx, req, id, now, typing, receiptsChanged); err != nil {
		return nil, err
	}
	if len(accountData) > 0 {
		jr.AccountData.Events = accountData
		if rf := req.filter.Room; rf != nil && rf.AccountData != nil {
			jr.AccountData.Events = filterRoomEvents(accountData, rf.AccountData)
		}
	}
	if fresh || limited || hasMemberEvent(evs) {
		sum := s.rooms.RoomSummary(id, req.user)
		jr.Summary = &RoomSummary{Heroes: sum.Heroes, Joined: &sum.Joined, Invited: &sum.Invited}
	}
	if !fresh && len(jr.Timeline.Events) == 0 && jr.State == nil && jr.StateAfter == nil &&
		len(jr.Ephemeral.Events) == 0 && len(jr.AccountData.Events) == 0 && !counts.changed {
		return nil, nil
	}
	if s.unread != nil {
		jr.setUnreadCounts(counts, tf != nil && tf.UnreadThreadNotes)
	}
	return jr, nil
}

// latestEvents reads the timeline of a changed room: the latest events in
// (q.Since, q.Until], limited when more are left; from the room's start
// (q.Since 0), it is limited too when the room's creation is not among them.
func (s *Service) latestEvents(ctx context.Context, q rooms.TimelineRequest) ([]*rooms.Event, bool, error) {
	evs, limited, err := s.rooms.LatestEvents(ctx, q)
	if err != nil {
		return nil, false, err
	}
	if q.Since == 0 {
		limited = limited || !startsAtCreation(evs)
	}
	return evs, limited, nil
}

// roomEphemeral returns a room's ephemeral events: its typing users when
// they changed, and its receipts since the token, as the filter allows.
func (s *Service) roomEphemeral(ctx context.Context, req *request, id spec.RoomID, now Token, typing json.RawMessage, receiptsChanged bool) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	if typing != nil {
		out = append(out, typing)
	}
	if receiptsChanged {
		r, err := s.receiptsSince(ctx, req.user, id, req.sincePos(), now.Pos)
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, r)
		}
	}
	if rf := req.filter.Room; rf != nil && rf.Ephemeral != nil {
		out = filterRoomEvents(out, rf.Ephemeral)
	}
	return out, nil
}

// hasMemberEvent reports whether the timeline holds a membership change
// (then the room's summary is sent again).
func hasMemberEvent(evs []*rooms.Event) bool {
	for _, ev := range evs {
		if ev.PDU.Type() == spec.MRoomMember {
			return true
		}
	}
	return false
}

// roomCounts are a room's unread counts for the user, from memory.
type roomCounts struct {
	unread, highlights int64               // of the main timeline
	threads            map[string][2]int64 // per thread root: unread, highlights
	changed            bool                // since the token
}

func (s *Service) roomCounts(user spec.UserID, id spec.RoomID, since int64) roomCounts {
	if s.unread == nil {
		return roomCounts{}
	}
	unread, highlights, threads, pos := s.unread.Counts(user, id)
	return roomCounts{unread: unread, highlights: highlights, threads: threads, changed: pos > since}
}

// setUnreadCounts sets the room's unread counts: of the whole room, or,
// when the filter asks for unread_thread_notifications, of the main
// timeline with each thread's counts beside it.
func (jr *JoinedRoom) setUnreadCounts(counts roomCounts, perThread bool) {
	unread, highlights := counts.unread, counts.highlights
	if !perThread {
		for _, c := range counts.threads {
			unread, highlights = unread+c[0], highlights+c[1]
		}
		jr.UnreadNotifications = &UnreadCounts{NotificationCount: unread, HighlightCount: highlights}
		return
	}
	jr.UnreadNotifications = &UnreadCounts{NotificationCount: unread, HighlightCount: highlights}
	for root, c := range counts.threads {
		if jr.UnreadThreadNotifications == nil {
			jr.UnreadThreadNotifications = map[string]UnreadCounts{}
		}
		jr.UnreadThreadNotifications[root] = UnreadCounts{NotificationCount: c[0], HighlightCount: c[1]}
	}
}

// timelineWindow is a room's timeline in one response and where it lies.
type timelineWindow struct {
	fresh   bool // the client is to get the room's whole state
	events  []*rooms.Event
	limited bool  // events between since and the timeline were left out
	since   int64 // where what the client has of the room ends
	start   int64 // the position just before the timeline (its prev_batch)
	end     int64 // the position the timeline ends at
}

// roomState returns state (the state before the timeline: full for a fresh
// room, the changes since the token when the timeline skipped some) or, with
// use_state_after, stateAfter (the state at the end of the timeline: full
// when fresh, else every change since the token); the other is nil.
//
// State resolution can change state that no timeline event shows (a remote
// event joining a fork, rooms/dag.go): state_after then has every change
// since the token, and state has the entries it changed during the
// timeline too, so that the client ends at the room's state. (In that
// format an older event of the timeline for the same key still comes
// after it: state_after is the exact answer.)
func (s *Service) roomState(ctx context.Context, req *request, id spec.RoomID, w timelineWindow) (state, stateAfter *EventList, err error) {
	sf := req.stateFilter()
	lazy := sf != nil && sf.LazyLoadMembers
	var list []*events.PDU
	if req.stateAfter {
		switch {
		case w.fresh:
			list, err = s.rooms.StateAt(ctx, id, w.end)
		case w.limited || len(s.rooms.StateResolved(id, w.since, w.end)) > 0:
			list, err = s.rooms.StateDelta(ctx, id, w.since, w.end)
		default:
			list = timelineState(w.events)
		}
	} else {
		switch {
		case w.fresh:
			list, err = s.rooms.StateAt(ctx, id, w.start)
		case w.limited:
			list, err = s.rooms.StateDelta(ctx, id, w.since, w.start)
		}
		if err == nil {
			for _, r := range s.rooms.StateResolved(id, w.start, w.end) {
				list = withState(list, r.PDU)
			}
		}
	}
	if err != nil {
		return nil, nil, err
	}
	out := []json.RawMessage{}
	senders := map[spec.UserID]bool{req.user: true}
	for _, ev := range w.events {
		senders[ev.PDU.Sender()] = true
	}
	for _, p := range list {
		if !sf.Matches(p) {
			continue
		}
		if lazy && p.Type() == spec.MRoomMember {
			// Lazy-loading: only the members whose events are shown.
			if sk, _ := p.StateKey(); !senders[spec.UserID(sk)] {
				continue
			}
		}
		out = append(out, req.renderState(p))
	}
	if req.stateAfter {
		return nil, &EventList{Events: out}, nil
	}
	if len(out) > 0 || w.fresh {
		return &EventList{Events: out}, nil, nil
	}
	return nil, nil, nil
}

// withState is list with p in place of the entry of the same key.
func withState(list []*events.PDU, p *events.PDU) []*events.PDU {
	out := list[:0:0]
	for _, q := range list {
		if !sameKey(p, q) {
			out = append(out, q)
		}
	}
	return append(out, p)
}

func sameKey(p, q *events.PDU) bool {
	pk, _ := p.StateKey()
	qk, ok := q.StateKey()
	return ok && p.Type() == q.Type() && pk == qk
}

// cutAtResolution is the legacy format's answer to state resolution (the
// timeline's events are applied after state): a timeline event at or
// before a resolution that set its key would undo it, so the timeline
// starts after the latest such resolution, limited, and state holds the
// rest, the resolution included.
func cutAtResolution(evs []*rooms.Event, resolved []rooms.Resolved) ([]*rooms.Event, bool) {
	cut := int64(-1)
	for _, r := range resolved {
		for _, ev := range evs {
			if ev.Position <= r.Position && sameKey(r.PDU, ev.PDU) {
				cut = max(cut, r.Position)
			}
		}
	}
	if cut < 0 {
		return evs, false
	}
	i := 0
	for i < len(evs) && evs[i].Position <= cut {
		i++
	}
	return evs[i:], true
}

// timelineState is the latest state event per key among the timeline's
// events: the state changes of a timeline that skipped nothing.
func timelineState(evs []*rooms.Event) []*events.PDU {
	latest := map[authrules.StateKeyPair]*events.PDU{}
	var order []authrules.StateKeyPair
	for _, ev := range evs {
		if sk, ok := ev.PDU.StateKey(); ok {
			k := authrules.StateKeyPair{Type: ev.PDU.Type(), StateKey: sk}
			if _, seen := latest[k]; !seen {
				order = append(order, k)
			}
			latest[k] = ev.PDU
		}
	}
	out := make([]*events.PDU, len(order))
	for i, k := range order {
		out[i] = latest[k]
	}
	return out
}

// leftKind is whether the user still has a room they left (or were banned
// from) or has forgotten it.
type leftKind int

const (
	leftKept      leftKind = iota
	leftForgotten          // only a leave since the token is told
)

// leftRoom builds one room of rooms.leave: the timeline up to the user's
// leave. A leave since the token is always there (with full_state too); an
// older one only on an initial or full_state sync with include_leave, and
// never for a room the user forgot.
func (s *Service) leftRoom(ctx context.Context, req *request, id spec.RoomID, now Token, kind leftKind) (*LeftRoom, error) {
	leavePos, _ := s.rooms.MembershipEvent(req.user, id)
	if leavePos > now.Pos {
		return nil, nil
	}
	newLeave := !req.initial() && leavePos > req.sincePos()
	fresh := req.initial() || req.fullState
	switch {
	case newLeave:
	case kind == leftForgotten || !fresh:
		return nil, nil
	case req.filter.Room == nil || !req.filter.Room.IncludeLeave:
		return nil, nil
	}
	floor := req.sincePos()
	if !newLeave {
		floor = 0
	}
	tf, limit := req.timelineFilter()
	evs, limited, err := s.latestEvents(ctx, rooms.TimelineRequest{User: req.user, Room: id, Since: floor, Until: leavePos, Limit: limit, Filter: tf})
	if err != nil {
		return nil, err
	}
	evs, limited = s.withOwnLeave(req.user, id, leavePos, evs, limited, limit, tf)
	start := leavePos
	if len(evs) > 0 {
		start = evs[0].Position - 1
	}
	lr := &LeftRoom{AccountData: EventList{Events: []json.RawMessage{}}}
	lr.Timeline = Timeline{Limited: limited, PrevBatch: rooms.Token(start).String()}
	if lr.Timeline.Events, err = s.renderTimeline(ctx, req, evs, limited); err != nil {
		return nil, err
	}
	lr.State, lr.StateAfter, err = s.roomState(ctx, req, id, timelineWindow{
		fresh: fresh, events: evs, limited: limited, since: floor, start: start, end: leavePos,
	})
	if err != nil {
		return nil, err
	}
	return lr, nil
}

// startsAtCreation reports whether a timeline read from the room's
// beginning (an initial sync, a room newly joined in an incremental one)
// starts at the room's m.room.create event. When it does not, the timeline
// is limited: the client holds nothing of the room, so every earlier event
// (past the limit, or hidden by the filter's types) is a gap that it fills
// by paginating back from prev_batch (what the Complement suite, from
// Sytest, expects of a newly joined room).
// matrix-js-sdk ignores limited for a room it has not seen before (it only
// sets the back-pagination token), and resets the timeline of a room it
// knew (a rejoin), which has a gap indeed.
func startsAtCreation(evs []*rooms.Event) bool {
	if len(evs) == 0 {
		return false
	}
	first := evs[0].PDU
	sk, isState := first.StateKey()
	return first.Type() == spec.MRoomCreate && isState && sk == ""
}

// withOwnLeave ends a left room's timeline with the user's own leave (or
// ban) event. History visibility can hide it (an invite rejected in a
// "joined" room: neither invite nor leave may see events), but a client
// that is not shown the leave keeps the room, or the invite, forever.
func (s *Service) withOwnLeave(user spec.UserID, id spec.RoomID, leavePos int64, evs []*rooms.Event, limited bool, limit int, tf *rooms.RoomEventFilter) ([]*rooms.Event, bool) {
	if n := len(evs); n > 0 && evs[n-1].Position == leavePos {
		return evs, limited
	}
	leave := s.rooms.CurrentState(id, spec.MRoomMember, string(user))
	if leave == nil || !tf.Matches(leave) || limit <= 0 {
		return evs, limited
	}
	if len(evs) >= limit {
		evs, limited = evs[len(evs)-limit+1:], true
	}
	return append(evs, &rooms.Event{PDU: leave, Position: leavePos}), limited
}

func dropIgnored(evs []*rooms.Event, ignored map[spec.UserID]bool) []*rooms.Event {
	if len(ignored) == 0 {
		return evs
	}
	out := evs[:0:0]
	for _, ev := range evs {
		if ignored[ev.PDU.Sender()] && !ev.PDU.IsState() {
			continue
		}
		out = append(out, ev)
	}
	return out
}

func filterRoomEvents(evs []json.RawMessage, f *rooms.RoomEventFilter) []json.RawMessage {
	out := evs[:0:0]
	for _, ev := range evs {
		var head struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(ev, &head)
		ok := true
		for _, t := range f.NotTypes {
			if rooms.Glob(t, head.Type) {
				ok = false
			}
		}
		if ok && f.Types != nil {
			ok = false
			for _, t := range f.Types {
				if rooms.Glob(t, head.Type) {
					ok = true
				}
			}
		}
		if ok {
			out = append(out, ev)
		}
	}
	if f.Limit != nil && len(out) > *f.Limit {
		out = out[:*f.Limit]
	}
	return out
}

// renderTimeline renders a room's timeline. The spec asks for bundled
// aggregations (unsigned.m.relations) in limited timelines. Children are
// always newer than their parent, so a limited timeline — the newest events
// of the window — holds every child of its events unless the filter hid
// some: only then do the bundles tell the client something, and only then
// are they read (one query per room, kept off the common path).
func (s *Service) renderTimeline(ctx context.Context, req *request, evs []*rooms.Event, limited bool) ([]json.RawMessage, error) {
	tf, _ := req.timelineFilter()
	if limited && tf.HidesEvents() && req.filter.EventFormat != "federation" {
		out, err := s.rooms.RenderEvents(ctx, req.user, req.device, evs)
		if err != nil {
			return nil, err
		}
		if len(req.filter.EventFields) > 0 {
			for i := range out {
				out[i] = events.FilterFields(out[i], req.filter.EventFields)
			}
		}
		return out, nil
	}
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = req.renderEvent(ev)
	}
	return out, nil
}
