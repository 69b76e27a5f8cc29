package sync

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
)

// add records one required_state entry.
func (r *requiredState) add(typ, key string) {
	for _, e := range r.entries {
		if e == [2]string{typ, key} {
			return
		}
	}
	r.entries = append(r.entries, [2]string{typ, key})
	switch {
	case typ == "*" && key == "*":
		r.all = true
	case key == "*":
		if r.anyKey == nil {
			r.anyKey = map[string]bool{}
		}
		r.anyKey[typ] = true
	case typ == "*":
		if r.anyType == nil {
			r.anyType = map[string]bool{}
		}
		r.anyType[key] = true
	case typ == spec.MRoomMember && key == "$LAZY":
		r.lazy = true
	default:
		if r.exact == nil {
			r.exact = map[[2]string]bool{}
		}
		r.exact[[2]string{typ, key}] = true
	}
}

// matches reports whether a state event is asked for; "$ME" stands for the
// user, and "$LAZY" members for the senders of the timeline shown.
func (r *requiredState) matches(p *events.PDU, user spec.UserID, senders map[spec.UserID]bool) bool {
	typ := p.Type()
	sk, _ := p.StateKey()
	me := sk == string(user)
	switch {
	case r.all, r.anyKey[typ], r.anyType[sk], me && r.anyType["$ME"]:
		return true
	case r.exact[[2]string{typ, sk}], me && r.exact[[2]string{typ, "$ME"}]:
		return true
	}
	return r.lazy && typ == spec.MRoomMember && senders[spec.UserID(sk)]
}

// sortKeys records the entries as sorted strings, for comparing with what
// was sent; once done, the state is not changed.
func (r *requiredState) sortKeys() {
	out := make([]string, len(r.entries))
	for i, e := range r.entries {
		out[i] = e[0] + "\x00" + e[1]
	}
	sort.Strings(out)
	r.sorted = out
}

// keys is the entries as sorted strings.
func (r *requiredState) keys() []string { return r.sorted }

// coveredBy reports whether what was sent (limit, sorted keys) holds all that
// the config asks for: if not, the room is sent again in full.
func (c roomConfig) coveredBy(limit int, sent []string) bool {
	if c.timelineLimit > limit {
		return false
	}
	for _, k := range c.required.keys() {
		i := sort.SearchStrings(sent, k)
		if i >= len(sent) || sent[i] != k {
			return false
		}
	}
	return true
}

// room builds one room of the answer, or nil when the connection already
// has all of it. store reports that sent is the connection's new record of
// the room.
func (b *slidingBuild) room(ctx context.Context, v *viewRoom) (resp *slidingRoomResp, sent sentRoom, store bool, err error) {
	s := b.s
	id, m := v.cand.ID, v.cand.Membership
	var prev *sentRoom
	if b.prev != nil {
		if p, ok := b.prev.rooms[id]; ok {
			prev = &p
		}
	}
	until := b.now.Pos
	if m != spec.Join {
		until = v.cand.MemberPos // a left room's history ends at the leave
	}
	sent = sentRoom{pos: until, membership: m, limit: v.config.timelineLimit, required: v.config.required.keys()}
	// Sent before, with as much as is asked now, and under the same
	// membership (or the leave of a joined room, which is news to it): an
	// update. Anything else is sent whole, as the client's first sight.
	fresh := prev == nil || !v.config.coveredBy(prev.limit, prev.required) ||
		prev.membership != m && !(prev.membership == spec.Join && (m == spec.Leave || m == spec.Ban))

	var notifications, highlights int64
	if m == spec.Join && s.unread != nil {
		var threads map[string][2]int64
		notifications, highlights, threads, sent.countsPos = s.unread.Counts(b.user, id)
		for _, c := range threads {
			notifications, highlights = notifications+c[0], highlights+c[1]
		}
	}
	if !fresh {
		roomChanged := prev.pos < until && s.rooms.Position(id) > prev.pos
		countsChanged := sent.countsPos > prev.countsPos
		if !roomChanged && !countsChanged && prev.membership == m {
			return nil, sent, false, nil
		}
		if m == spec.Invite || m == spec.Knock {
			return nil, sent, true, nil // nothing of the room is theirs to see yet
		}
		if !roomChanged {
			// Only the counts moved: the record keeps its position.
			sent.pos = prev.pos
		}
	}

	r := &slidingRoomResp{Initial: fresh}
	bump := v.cand.Bump
	r.BumpStamp = &bump
	if m == spec.Invite || m == spec.Knock {
		// invite_state carries knocks too: matrix-rust-sdk tells the two
		// apart by the user's own member event in it.
		r.InviteState = s.rooms.StrippedState(id, b.user)
		return r, sent, true, nil
	}

	floor := int64(0)
	if !fresh {
		floor = prev.pos
	}
	limit := v.config.timelineLimit
	var evs []*rooms.Event
	limited := false
	if fresh || sent.pos > floor {
		evs, limited, err = s.rooms.LatestEvents(ctx, rooms.TimelineRequest{User: b.user, Room: id, Since: floor, Until: until, Limit: limit})
		if err != nil {
			return nil, sent, false, err
		}
		if fresh && limit > 0 {
			limited = limited || !startsAtCreation(evs)
		}
		if m == spec.Leave || m == spec.Ban {
			evs, limited = s.withOwnLeave(b.user, id, until, evs, limited, limit, nil)
		}
		evs = dropIgnored(evs, b.ignored)
	}
	// prev_batch is always there, as the reference server sends it: with
	// no new events it is the room's latest position, from which paging
	// back gives what the client has.
	start := until
	if len(evs) > 0 {
		start = evs[0].Position - 1
	} else if roomPos := s.rooms.Position(id); roomPos < start {
		start = roomPos
	}
	r.PrevBatch = rooms.Token(start).String()
	r.Limited = limited
	if r.Timeline, err = s.renderTimeline(ctx, b.req, evs, limited); err != nil {
		return nil, sent, false, err
	}
	live := 0
	if b.prev != nil {
		for _, ev := range evs {
			if ev.Position > b.prev.token.Pos {
				live++
			}
		}
	}
	r.NumLive = &live

	var state []*events.PDU
	switch {
	case fresh:
		state, err = s.rooms.StateAt(ctx, id, until)
	case limited || len(s.rooms.StateResolved(id, floor, until)) > 0:
		// State resolution's changes are in no timeline (rooms/dag.go).
		state, err = s.rooms.StateDelta(ctx, id, floor, until)
	default:
		state = timelineState(evs)
	}
	if err != nil {
		return nil, sent, false, err
	}
	b.requiredState(r, v, id, m, fresh, state, evs)

	if m == spec.Join || fresh || memberChanged(state) {
		sum := s.rooms.RoomSummary(id, b.user)
		r.JoinedCount, r.InvitedCount = &sum.Joined, &sum.Invited
		if r.Name == nil && (fresh || memberChanged(state)) {
			for _, u := range sum.Heroes {
				h := slidingHero{UserID: u}
				if ev := s.rooms.CurrentState(id, spec.MRoomMember, string(u)); ev != nil {
					h.DisplayName = ev.Content().Get("displayname").String()
					h.AvatarURL = ev.Content().Get("avatar_url").String()
				}
				r.Heroes = append(r.Heroes, h)
			}
		}
	}
	if m == spec.Join && s.unread != nil {
		r.NotificationCount, r.HighlightCount = &notifications, &highlights
	}
	return r, sent, true, nil
}

// requiredState fills the room's required_state, name and avatar from the
// state to tell: the whole state for a fresh room, the changes otherwise.
func (b *slidingBuild) requiredState(r *slidingRoomResp, v *viewRoom, id spec.RoomID, m string, fresh bool, state []*events.PDU, evs []*rooms.Event) {
	s := b.s
	rs := &v.config.required
	senders := map[spec.UserID]bool{}
	for _, ev := range evs {
		senders[ev.PDU.Sender()] = true
	}
	seen := map[[2]string]bool{}
	add := func(p *events.PDU) {
		sk, _ := p.StateKey()
		k := [2]string{p.Type(), sk}
		if !seen[k] {
			seen[k] = true
			r.RequiredState = append(r.RequiredState, b.req.renderState(p))
		}
	}
	for _, p := range state {
		switch p.Type() {
		case spec.MRoomName:
			if sk, _ := p.StateKey(); sk == "" {
				name := p.Content().Get("name").String()
				if !fresh || name != "" {
					r.Name = &name
				}
			}
		case spec.MRoomAvatar:
			if sk, _ := p.StateKey(); sk == "" {
				if url := p.Content().Get("url").String(); url != "" {
					r.Avatar, _ = json.Marshal(url)
				} else if !fresh {
					r.Avatar = json.RawMessage("null")
				}
			}
		}
		if rs.matches(p, b.user, senders) {
			add(p)
		}
	}
	if rs.lazy && !fresh {
		// New senders in an update: their member events, which the
		// changes alone would not carry.
		for u := range senders {
			if ev := s.rooms.CurrentState(id, spec.MRoomMember, string(u)); ev != nil {
				add(ev)
			}
		}
	}
	if m != spec.Join {
		// The user's own leave, kick or ban goes in required_state whatever
		// was asked: the SDK learns its membership there.
		if ev := s.rooms.CurrentState(id, spec.MRoomMember, string(b.user)); ev != nil {
			add(ev)
		}
	}
}

func memberChanged(state []*events.PDU) bool {
	for _, p := range state {
		if p.Type() == spec.MRoomMember {
			return true
		}
	}
	return false
}

// positionString is a stream position on the wire (to-device next_batch).
func positionString(p int64) string { return strconv.FormatInt(p, 10) }
