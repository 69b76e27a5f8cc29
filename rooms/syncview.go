package rooms

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// This file is what /sync reads from rooms. Everything here answers from
// memory when the positions asked for are recent, which is the case for
// every incremental sync of a client that keeps up.

// Position returns the stream position of the room's latest event (0 for an
// unknown room).
func (s *Service) Position(id spec.RoomID) int64 {
	r := s.room(id)
	if r == nil {
		return 0
	}
	return r.cur.Load().position
}

// Version returns the room's version ("" for an unknown room).
func (s *Service) Version(id spec.RoomID) spec.RoomVersion {
	r := s.room(id)
	if r == nil {
		return ""
	}
	return r.version
}

// EventsBetween returns the room's events with position in (since, until],
// oldest first, from memory when it holds them all.
func (s *Service) EventsBetween(ctx context.Context, id spec.RoomID, since, until int64) ([]*Event, error) {
	r := s.room(id)
	if r == nil {
		return nil, nil
	}
	if evs, ok := r.recentSince(since); ok {
		out := evs[:0:0]
		for _, ev := range evs {
			if ev.Position <= until {
				out = append(out, ev)
			}
		}
		return out, nil
	}
	return s.eventsBetween(ctx, id, since, until, 0, false)
}

// LatestEvents returns up to limit of the room's latest events at or before
// until that the user may see, oldest first, and whether older visible
// events were left out.
func (s *Service) LatestEvents(ctx context.Context, user spec.UserID, id spec.RoomID, since, until int64, limit int, f *RoomEventFilter) ([]*Event, bool, error) {
	r := s.room(id)
	if r == nil {
		return nil, false, nil
	}
	// From memory: the latest events are there unless the window reaches
	// past what memory holds and memory does not fill the page.
	r.histMu.RLock()
	floor := r.recentFloor
	var inMem []*Event
	for i := len(r.recent) - 1; i >= 0 && len(inMem) <= limit; i-- {
		ev := r.recent[i]
		if ev.Position > until {
			continue
		}
		if ev.Position <= since {
			break
		}
		if r.canSeeLocked(user, ev.Position, ev.PDU) && f.Matches(ev.PDU) {
			inMem = append(inMem, ev)
		}
	}
	r.histMu.RUnlock()
	reverse(inMem)
	if len(inMem) > limit {
		return inMem[1:], true, nil
	}
	if since >= floor {
		return inMem, false, nil
	}
	// Older events are needed: page backwards through the database.
	var out []*Event
	cursor := until
	for {
		batch, err := s.eventsBetween(ctx, id, since, cursor, limit*2+1, true)
		if err != nil {
			return nil, false, err
		}
		if len(batch) == 0 {
			return out, false, nil
		}
		cursor = batch[len(batch)-1].Position - 1
		reverse(batch)
		kept := r.filterVisible(user, batch)
		matched := kept[:0:0]
		for _, ev := range kept {
			if f.Matches(ev.PDU) {
				matched = append(matched, ev)
			}
		}
		out = append(matched, out...)
		if len(out) > limit {
			return out[len(out)-limit:], true, nil
		}
		if cursor <= since {
			return out, false, nil
		}
	}
}

func reverse(evs []*Event) {
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
}

// Visible keeps the events the user may see.
func (s *Service) Visible(user spec.UserID, id spec.RoomID, evs []*Event) []*Event {
	r := s.room(id)
	if r == nil {
		return nil
	}
	return r.filterVisible(user, evs)
}

// StateAt returns the room's state just after position pos, from memory for
// the current state.
func (s *Service) StateAt(ctx context.Context, id spec.RoomID, pos int64) ([]*events.PDU, error) {
	r := s.room(id)
	if r == nil {
		return nil, nil
	}
	snap := r.cur.Load()
	if pos >= snap.position {
		out := make([]*events.PDU, 0, snap.state.Len())
		for _, ev := range snap.state.All() {
			out = append(out, ev)
		}
		return out, nil
	}
	if state, ok := r.stateAtFromMemory(pos); ok {
		return state, nil
	}
	evs, err := s.stateAt(ctx, id, pos)
	if err != nil {
		return nil, err
	}
	out := make([]*events.PDU, len(evs))
	for i, ev := range evs {
		out[i] = ev.PDU
	}
	return out, nil
}

// StateDelta returns the state that changed in (from, to]: for each key
// changed, the state at to.
func (s *Service) StateDelta(ctx context.Context, id spec.RoomID, from, to int64) ([]*events.PDU, error) {
	if to <= from {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT `+eventColumns+` WHERE e.position IN (
		SELECT max(position) FROM events WHERE room_id = $1 AND state_key IS NOT NULL AND position > $2 AND position <= $3
		GROUP BY type, state_key) ORDER BY e.position`, string(id), from, to)
	if err != nil {
		return nil, err
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, err
	}
	// A key changed in the window may have changed again later in memory
	// (redactions rewrite the stored copy); the rows already are the latest.
	out := make([]*events.PDU, len(evs))
	for i, ev := range evs {
		out[i] = ev.PDU
	}
	return out, nil
}

// CurrentState returns one piece of current state from memory, or nil.
func (s *Service) CurrentState(id spec.RoomID, typ, key string) *events.PDU {
	r := s.room(id)
	if r == nil {
		return nil
	}
	return r.cur.Load().get(typ, key)
}

// MembershipEvent returns the user's latest member event position and
// membership in the room.
func (s *Service) MembershipEvent(user spec.UserID, id spec.RoomID) (int64, string) {
	r := s.room(id)
	if r == nil {
		return 0, ""
	}
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	h := r.members[user]
	if len(h) == 0 {
		return 0, ""
	}
	return h[len(h)-1].pos, h[len(h)-1].value
}

// MembershipChanges returns the membership changes of the room in
// (since, until], the latest per user, from memory in O(changes).
func (s *Service) MembershipChanges(id spec.RoomID, since, until int64) map[spec.UserID]string {
	r := s.room(id)
	if r == nil {
		return nil
	}
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	i := sort.Search(len(r.changes), func(i int) bool { return r.changes[i].pos > since })
	var out map[spec.UserID]string
	for ; i < len(r.changes) && r.changes[i].pos <= until; i++ {
		if out == nil {
			out = map[spec.UserID]string{}
		}
		out[r.changes[i].user] = r.changes[i].membership
	}
	return out
}

// Summary is the room summary /sync sends.
type Summary struct {
	Heroes  []spec.UserID
	Joined  int
	Invited int
}

// RoomSummary counts members and picks up to five heroes (other members,
// by user ID), for clients to name rooms without a name.
func (s *Service) RoomSummary(id spec.RoomID, viewer spec.UserID) Summary {
	r := s.room(id)
	if r == nil {
		return Summary{}
	}
	m := r.cur.Load().members()
	sum := Summary{Joined: m.joined, Invited: m.invited}
	for _, u := range m.firstSix {
		if u != viewer && len(sum.Heroes) < 5 {
			sum.Heroes = append(sum.Heroes, u)
		}
	}
	return sum
}

// memberSummary is what every member's /sync summary is made of: counts,
// and the six lowest user IDs of joined and invited members (a viewer's
// five heroes are the others among them).
type memberSummary struct {
	joined, invited int
	firstSix        []spec.UserID
}

// members computes the summary once per snapshot: after a member change,
// every member's next sync asks for it, and each would otherwise scan the
// whole state.
func (s *snapshot) members() *memberSummary {
	if m := s.summaryCache.Load(); m != nil {
		return m
	}
	m := &memberSummary{}
	var all []spec.UserID
	for k, ev := range s.state.All() {
		if k.Type != spec.MRoomMember {
			continue
		}
		switch ev.Content().Get("membership").String() {
		case spec.Join:
			m.joined++
		case spec.Invite:
			m.invited++
		default:
			continue
		}
		all = append(all, spec.UserID(k.StateKey))
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	m.firstSix = all[:min(len(all), 6)]
	s.summaryCache.Store(m)
	return m
}

// StrippedState is the invite_state / knock_state a user sees for a room
// they are invited to or knocking on: the spec's recommended events, plus
// their own member event.
func (s *Service) StrippedState(id spec.RoomID, user spec.UserID) []json.RawMessage {
	r := s.room(id)
	if r == nil {
		return nil
	}
	snap := r.cur.Load()
	var out []json.RawMessage
	for _, t := range []string{spec.MRoomCreate, spec.MRoomName, spec.MRoomAvatar, spec.MRoomTopic, spec.MRoomJoinRules,
		spec.MRoomCanonicalAlias, spec.MRoomEncryption} {
		if ev := snap.get(t, ""); ev != nil {
			out = append(out, events.StrippedState(ev))
		}
	}
	if ev := snap.get(spec.MRoomMember, string(user)); ev != nil {
		out = append(out, events.StrippedState(ev))
		if inviter := snap.get(spec.MRoomMember, string(ev.Sender())); inviter != nil && ev.Sender() != user {
			out = append(out, events.StrippedState(inviter))
		}
	}
	return out
}

// ClientEvent renders an event for a viewer (their transaction ID in
// unsigned for their own device's events).
func ClientEvent(ev *Event, viewer spec.UserID, device string) json.RawMessage {
	var unsigned []byte
	if ev.TxnID != "" && ev.PDU.Sender() == viewer && ev.DeviceID == device {
		unsigned, _ = json.Marshal(map[string]string{"transaction_id": ev.TxnID})
	}
	return events.ClientEvent(ev.PDU, unsigned)
}

// Forgotten reports whether the user forgot the room.
func (s *Service) Forgotten(user spec.UserID, id spec.RoomID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, known := s.userRooms[user][id]
	return !known
}
