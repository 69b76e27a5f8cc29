package rooms

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
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
	return s.eventsBetween(ctx, id, eventRange{from: since, to: until})
}

// TimelineRequest asks for the latest events of a room as a user sees
// them, for one sync response.
type TimelineRequest struct {
	User spec.UserID
	Room spec.RoomID
	// Since and Until bound the positions: after Since, at or before Until.
	Since, Until int64
	Limit        int
	Filter       *RoomEventFilter // nil keeps every event
}

// LatestEvents returns up to q.Limit of the room's latest events in the
// window that the user may see, oldest first, and whether older visible
// events were left out.
func (s *Service) LatestEvents(ctx context.Context, q TimelineRequest) ([]*Event, bool, error) {
	user, id, since, until, limit, f := q.User, q.Room, q.Since, q.Until, q.Limit, q.Filter
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
		batch, err := s.eventsBetween(ctx, id, eventRange{from: since, to: cursor, limit: limit*2 + 1, backwards: true})
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
	return withResolved(evs, r.resolvedIn(-1<<62, pos), true), nil
}

// StateDelta returns the state that changed in (from, to]: for each key
// changed, the state at to. The changes state resolution made are among
// them; an entry it removed cannot be told, and is not.
func (s *Service) StateDelta(ctx context.Context, id spec.RoomID, from, to int64) ([]*events.PDU, error) {
	if to <= from {
		return nil, nil
	}
	evs, err := s.queryEvents(ctx, `WHERE e.position IN (
		SELECT max(position) FROM events WHERE room_id = $1 AND state_key IS NOT NULL AND position > $2 AND position <= $3
		GROUP BY type, state_key) ORDER BY e.position`, string(id), from, to)
	if err != nil {
		return nil, err
	}
	// A key changed in the window may have changed again later in memory
	// (redactions rewrite the stored copy); the rows already are the latest.
	var res []resolution
	if r := s.room(id); r != nil {
		res = r.resolvedIn(from, to)
	}
	return withResolved(evs, res, false), nil
}

// Resolved is a state entry that state resolution set with the event at
// Position (a remote event joining a fork, dag.go), after that event: state
// no timeline event shows.
type Resolved struct {
	PDU      *events.PDU
	Position int64
}

// StateResolved returns the state entries state resolution set in
// (from, to] beyond the resolving events' own, the latest per key, oldest
// first: sync must send them for a client to reach the room's state. (An
// entry it removed cannot be told to a client, and is not.)
func (s *Service) StateResolved(id spec.RoomID, from, to int64) []Resolved {
	r := s.room(id)
	if r == nil || to <= from {
		return nil
	}
	var out []Resolved
	at := map[authrules.StateKeyPair]int{}
	for _, rs := range r.resolvedIn(from, to) {
		for _, p := range rs.set {
			if i, ok := at[keyOf(p)]; ok {
				out[i].PDU = nil // set again later
			}
			at[keyOf(p)] = len(out)
			out = append(out, Resolved{PDU: p, Position: rs.pos})
		}
	}
	kept := out[:0]
	for _, e := range out {
		if e.PDU != nil {
			kept = append(kept, e)
		}
	}
	return kept
}

// CurrentState returns one piece of current state from memory, or nil.
func (s *Service) CurrentState(id spec.RoomID, typ, key string) *events.PDU {
	r := s.room(id)
	if r == nil {
		if typ == spec.MRoomMember {
			if o := s.outlierOf(spec.UserID(key), id); o != nil {
				return o.pdu // an invite's inviter (sync's ignored-user check)
			}
		}
		return nil
	}
	return r.cur.Load().get(typ, key)
}

// MembershipEvent returns the user's latest member event position and
// membership in the room.
func (s *Service) MembershipEvent(user spec.UserID, id spec.RoomID) (int64, string) {
	r := s.room(id)
	if r == nil {
		if o := s.outlierOf(user, id); o != nil {
			return o.pos, o.membership
		}
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
// their own member event (in full, see events.OwnMemberState) and the
// inviter's.
func (s *Service) StrippedState(id spec.RoomID, user spec.UserID) []json.RawMessage {
	r := s.room(id)
	if r == nil {
		if o := s.outlierOf(user, id); o != nil {
			return o.strippedState()
		}
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
		out = append(out, events.OwnMemberState(ev))
		if inviter := snap.get(spec.MRoomMember, string(ev.Sender())); inviter != nil && ev.Sender() != user {
			out = append(out, events.StrippedState(inviter))
		}
	}
	return out
}

// Viewer is who events are rendered for: their own device's events carry
// the transaction ID, and every event of a room carries the viewer's
// membership at it (unsigned.membership, spec v1.11, MSC4115), read from
// the room's membership history in memory.
type Viewer struct {
	User   spec.UserID
	Device string

	s      *Service // nil: no membership (a nested event of a bundle)
	room   spec.RoomID
	loaded bool
	hist   []posValue
}

// ViewerOf returns the viewer for a user's device.
func (s *Service) ViewerOf(user spec.UserID, device string) *Viewer {
	return &Viewer{User: user, Device: device, s: s}
}

// membershipAt is the viewer's membership in the room at the event at pos,
// its own change included; "leave" before they ever had one, as the spec
// says; "" when unknown (an event without a position).
func (v *Viewer) membershipAt(room spec.RoomID, pos int64) string {
	if v == nil || v.s == nil || pos <= 0 {
		return ""
	}
	if !v.loaded || v.room != room {
		v.room, v.loaded, v.hist = room, true, nil
		if r := v.s.room(room); r != nil {
			// The history only grows by append: this prefix stays
			// valid after the lock is let go.
			r.histMu.RLock()
			v.hist = r.members[v.User]
			r.histMu.RUnlock()
		}
	}
	if m := valueAt(v.hist, pos); m != "" {
		return m
	}
	return spec.Leave
}

// unsigned is an event's unsigned object for the viewer (nil when empty),
// with more keys (bundled aggregations) if given.
func (v *Viewer) unsigned(ev *Event, more map[string]any) []byte {
	var txnKey, txn string
	if v != nil {
		txnKey, txn = ownUnsigned(ev, v.User, v.Device)
	}
	m := v.membershipAt(ev.PDU.RoomID(), ev.Position)
	if len(more) == 0 && ev.RedactedBecause == nil {
		// The /sync path: two strings, written without a map.
		return appendUnsigned(nil, m, txnKey, txn)
	}
	u := make(map[string]any, len(more)+2)
	for k, val := range more {
		u[k] = val
	}
	if txnKey != "" {
		u[txnKey] = txn
	}
	if m != "" {
		u["membership"] = m
	}
	if ev.RedactedBecause != nil {
		// The redaction in the client format: matrix-js-sdk decides
		// "is redacted" from this key alone.
		u["redacted_because"] = json.RawMessage(events.ClientEvent(ev.RedactedBecause, nil))
	}
	out, err := events.MarshalCanonical(u)
	if err != nil {
		return appendUnsigned(nil, m, txnKey, txn)
	}
	return out
}

// appendUnsigned writes {"membership":…,TXNKEY:…} with the keys that are
// set, or nothing. txnKey is "transaction_id" or the delay ID's key.
func appendUnsigned(b []byte, membership, txnKey, txn string) []byte {
	if membership == "" && txnKey == "" {
		return b
	}
	b = append(b, '{')
	if membership != "" {
		q, _ := json.Marshal(membership)
		b = append(append(b, `"membership":`...), q...)
	}
	if txnKey != "" {
		if membership != "" {
			b = append(b, ',')
		}
		k, _ := json.Marshal(txnKey)
		q, _ := json.Marshal(txn)
		b = append(append(append(b, k...), ':'), q...)
	}
	return append(b, '}')
}

// ClientEvent renders an event in the client format for a viewer.
func ClientEvent(ev *Event, v *Viewer) json.RawMessage {
	return events.ClientEvent(ev.PDU, v.unsigned(ev, nil))
}

// ForgottenRooms lists the rooms the user forgot and has not rejoined
// since, from memory.
func (s *Service) ForgottenRooms(user spec.UserID) []spec.RoomID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]spec.RoomID, 0, len(s.forgotten[user]))
	for id := range s.forgotten[user] {
		if _, listed := s.userRooms[user][id]; !listed {
			out = append(out, id)
		}
	}
	return out
}

// isForgotten reports whether the user forgot the room and has not joined
// it since.
func (s *Service) isForgotten(user spec.UserID, id spec.RoomID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.forgotten[user][id]
}

// ownUnsigned is what unsigned tells the sender of their own event: the
// transaction ID on the device that sent it, or, for a delayed event, its
// delay ID on every device of the sender (MSC4140). key is "" for nothing.
func ownUnsigned(ev *Event, viewer spec.UserID, device string) (key, value string) {
	if ev.TxnID == "" || ev.PDU.Sender() != viewer {
		return "", ""
	}
	if id, ok := strings.CutPrefix(ev.TxnID, DelayedTxnPrefix); ok {
		return "org.matrix.msc4140.delay_id", id
	}
	if ev.DeviceID == device {
		return "transaction_id", ev.TxnID
	}
	return "", ""
}

// Forgotten reports whether the user forgot the room.
func (s *Service) Forgotten(user spec.UserID, id spec.RoomID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, known := s.userRooms[user][id]
	return !known
}
