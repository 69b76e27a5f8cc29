// Package stateres resolves the state of a room from the states of its
// forks: state resolution v2 (rooms/v2 "State resolution", used by room
// versions 2 to 11) and its v2.1 revision of room version 12 (MSC4297: the
// iterative auth checks of step 2 start from an empty state map, and the
// full conflicted set also holds the conflicted state subgraph).
//
// Room version 1 uses the first state resolution algorithm, which Chatalot
// does not implement: Resolve refuses it with ErrUnsupportedVersion.
//
// What the caller owes: Fetch must return every event of the auth chains
// of the state sets' events (the state sets' own events are taken from the
// maps); Rejected should report the events rejected on receipt. The events
// are not re-verified here: signatures and hashes were checked when they
// arrived.
//
// Like authrules, the package fails closed: an event it cannot fetch, an
// event of another room or version, a state map whose key does not match its
// event, two create events, a cycle of auth events: each is an error, never
// a partial result. It imports only spec, events, authrules and the standard
// library (rooms/authrules/purity_test.go holds it to that).
package stateres

import (
	"errors"
	"fmt"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// ErrUnsupportedVersion is returned for room version 1, whose state
// resolution algorithm (v1) is not implemented, and for unknown versions.
var ErrUnsupportedVersion = errors.New("stateres: the room version's state resolution algorithm is not supported")

// Fetcher returns the event with the given ID, or an error if the caller
// does not have it. Resolution needs every event of the auth chains of the
// state sets' events.
type Fetcher func(spec.EventID) (*events.PDU, error)

// Resolver holds what a resolution reads besides the state sets.
type Resolver struct {
	Version spec.RoomVersion
	Fetch   Fetcher
	// Rejected reports whether an event was rejected when it was received
	// (it failed auth against its auth events). The iterative auth checks
	// do not fall back to a rejected auth event (rooms/v2 "Rejected
	// events"). Nil means none is.
	Rejected func(spec.EventID) bool
}

// Resolve is Resolver{Version: v, Fetch: fetch}.Resolve(stateSets).
func Resolve(v spec.RoomVersion, stateSets []authrules.StateMap, fetch Fetcher) (authrules.StateMap, error) {
	return Resolver{Version: v, Fetch: fetch}.Resolve(stateSets)
}

// Resolve returns the resolution of the state sets: the state before an
// event whose prev_events have these states after them. The state sets are
// not modified; the result is a new map.
func (r Resolver) Resolve(stateSets []authrules.StateMap) (result authrules.StateMap, err error) {
	defer func() {
		// A bug must not hand out a partial state: fail instead.
		if p := recover(); p != nil {
			result, err = nil, fmt.Errorf("stateres: internal error: %v", p)
		}
	}()
	v := r.Version
	if !v.Supported() || !v.StateResV2() {
		return nil, fmt.Errorf("%w: room version %q", ErrUnsupportedVersion, v)
	}
	if r.Fetch == nil {
		return nil, errors.New("stateres: no event fetcher")
	}
	if len(stateSets) == 0 {
		return nil, errors.New("stateres: no state sets to resolve")
	}
	return newResolution(r).run(stateSets)
}

func newResolution(r Resolver) *resolution {
	return &resolution{
		Resolver: r,
		known:    map[spec.EventID]*events.PDU{},
		levels:   map[spec.EventID]int64{},
		chains:   map[spec.EventID]map[spec.EventID]bool{},
	}
}

// resolution is one run of the algorithm and the events it has read.
type resolution struct {
	Resolver
	roomID spec.RoomID
	create *events.PDU
	// known holds every event read: from the state sets and from Fetch.
	known map[spec.EventID]*events.PDU
	// levels memoises the sender power levels of the power ordering.
	levels map[spec.EventID]int64
	// chains memoises the auth chains of single events (see chainWithin).
	chains map[spec.EventID]map[spec.EventID]bool
}

func (s *resolution) run(stateSets []authrules.StateMap) (authrules.StateMap, error) {
	if err := s.readStateSets(stateSets); err != nil {
		return nil, err
	}
	unconflicted, conflicted := split(stateSets)
	if len(conflicted) == 0 {
		return unconflicted, nil
	}
	authDiff, err := s.authDifference(stateSets)
	if err != nil {
		return nil, err
	}
	full := union(conflicted, authDiff)
	if s.Version.AtLeast12() {
		// v2.1: the events on auth paths between conflicted events.
		sub, err := s.conflictedSubgraph(conflicted)
		if err != nil {
			return nil, err
		}
		full = union(full, sub)
	}
	// The room's create event may be in the auth difference (a state set
	// of the create event alone has an empty auth chain); learn has made
	// sure it is the only one.
	for id := range full {
		if !s.known[id].IsState() {
			return nil, fmt.Errorf("stateres: %s in the conflicted set is not a state event", id)
		}
	}

	// Step 1: the power events and their auth chains within the full
	// conflicted set, in reverse topological power ordering.
	powerSet := map[spec.EventID]bool{}
	for id := range full {
		if isPowerEvent(s.known[id]) {
			powerSet[id] = true
			chain, err := s.chainWithin(id, full)
			if err != nil {
				return nil, err
			}
			for a := range chain {
				powerSet[a] = true
			}
		}
	}
	powerOrder, err := s.reverseTopologicalPowerOrder(powerSet)
	if err != nil {
		return nil, err
	}

	// Step 2: v2 starts from the unconflicted state map, v2.1 from nothing.
	partial := authrules.StateMap{}
	if !s.Version.AtLeast12() {
		for k, ev := range unconflicted {
			partial[k] = ev
		}
	}
	if err := s.iterativeAuthChecks(partial, powerOrder); err != nil {
		return nil, err
	}

	// Steps 3 and 4: the other events, in mainline order of the power
	// levels resolved so far.
	var rest []*events.PDU
	for id := range full {
		if !powerSet[id] {
			rest = append(rest, s.known[id])
		}
	}
	if err := s.mainlineSort(rest, partial.Get(spec.MRoomPowerLevels, "")); err != nil {
		return nil, err
	}
	if err := s.iterativeAuthChecks(partial, rest); err != nil {
		return nil, err
	}

	// Step 5: the unconflicted state map has the last word.
	for k, ev := range unconflicted {
		partial[k] = ev
	}
	return partial, nil
}

// readStateSets checks the state sets and learns their events and the
// room's create event: every event belongs to one room of the version, sits
// under its own key, and every set holds the same m.room.create event.
func (s *resolution) readStateSets(stateSets []authrules.StateMap) error {
	createKey := authrules.StateKeyPair{Type: spec.MRoomCreate}
	for i, set := range stateSets {
		create := set[createKey]
		if create == nil {
			return fmt.Errorf("stateres: state set %d has no m.room.create event", i)
		}
		if s.create == nil {
			s.create = create
			s.roomID = create.RoomID()
			if s.Version.AtLeast12() {
				want, err := events.RoomIDFromCreateEventID(create.EventID())
				if err != nil || want != create.RoomID() {
					return errors.New("stateres: the m.room.create event does not name the room")
				}
			}
		} else if create.EventID() != s.create.EventID() {
			return errors.New("stateres: the state sets hold different m.room.create events")
		}
		for k, ev := range set {
			if ev == nil {
				return fmt.Errorf("stateres: state set %d has no event for (%s, %s)", i, k.Type, k.StateKey)
			}
			if sk, ok := ev.StateKey(); !ok || sk != k.StateKey || ev.Type() != k.Type {
				return fmt.Errorf("stateres: state set %d holds %s under another key", i, ev.EventID())
			}
			if err := s.learn(ev); err != nil {
				return err
			}
		}
	}
	return nil
}

// learn checks that an event belongs to the room and remembers it.
func (s *resolution) learn(ev *events.PDU) error {
	if ev.Version() != s.Version || ev.RoomID() != s.roomID {
		return fmt.Errorf("stateres: %s belongs to another room or room version", ev.EventID())
	}
	if ev.Type() == spec.MRoomCreate && ev.EventID() != s.create.EventID() {
		return fmt.Errorf("stateres: %s is a second m.room.create event", ev.EventID())
	}
	if old, ok := s.known[ev.EventID()]; ok && old != ev && string(old.JSON()) != string(ev.JSON()) {
		return fmt.Errorf("stateres: two different events have the ID %s", ev.EventID())
	}
	s.known[ev.EventID()] = ev
	return nil
}

// event returns the event with the ID, fetching and checking it the first
// time.
func (s *resolution) event(id spec.EventID) (*events.PDU, error) {
	if ev, ok := s.known[id]; ok {
		return ev, nil
	}
	ev, err := s.Fetch(id)
	if err != nil {
		return nil, fmt.Errorf("stateres: fetching %s: %w", id, err)
	}
	if ev == nil || ev.EventID() != id {
		return nil, fmt.Errorf("stateres: fetching %s returned another event", id)
	}
	if err := s.learn(ev); err != nil {
		return nil, err
	}
	return ev, nil
}

func (s *resolution) rejected(id spec.EventID) bool {
	return s.Rejected != nil && s.Rejected(id)
}

// split divides the state sets into the unconflicted state map (a key with
// the same event in every set) and the conflicted state set (every other
// event).
func split(stateSets []authrules.StateMap) (authrules.StateMap, map[spec.EventID]bool) {
	unconflicted := authrules.StateMap{}
	conflicted := map[spec.EventID]bool{}
	keys := map[authrules.StateKeyPair]bool{}
	for _, set := range stateSets {
		for k := range set {
			keys[k] = true
		}
	}
	for k := range keys {
		first := stateSets[0][k]
		same := first != nil
		for _, set := range stateSets[1:] {
			if ev := set[k]; ev == nil || first == nil || ev.EventID() != first.EventID() {
				same = false
			}
		}
		if same {
			unconflicted[k] = first
			continue
		}
		for _, set := range stateSets {
			if ev := set[k]; ev != nil {
				conflicted[ev.EventID()] = true
			}
		}
	}
	return unconflicted, conflicted
}

func union(a, b map[spec.EventID]bool) map[spec.EventID]bool {
	out := make(map[spec.EventID]bool, len(a)+len(b))
	for id := range a {
		out[id] = true
	}
	for id := range b {
		out[id] = true
	}
	return out
}

// isPowerEvent: m.room.power_levels, m.room.join_rules, and a leave or ban
// of another user (rooms/v2 "Power events").
func isPowerEvent(ev *events.PDU) bool {
	sk, ok := ev.StateKey()
	if !ok {
		return false
	}
	switch ev.Type() {
	case spec.MRoomPowerLevels, spec.MRoomJoinRules:
		return true
	case spec.MRoomMember:
		m := ev.Content().Get("membership")
		return m.Type == gjson.String && (m.Str == spec.Leave || m.Str == spec.Ban) && sk != string(ev.Sender())
	}
	return false
}
