package stateres

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"slices"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// reverseTopologicalPowerOrder sorts the events (rooms/v2 "Reverse
// topological power ordering"): Kahn's algorithm over the auth DAG, an
// event after every event of its auth chain among them, taking at each step
// the candidate whose sender has the highest power level, then the earliest
// origin_server_ts, then the smallest event ID.
//
// The order is over the whole auth DAG, as the spec defines it: an event
// comes after each event of its auth chain in the set even when the auth
// path between them leaves the set. (An implementation that only follows
// auth_events edges between events of the set can order such a pair either
// way; in room version 12 the conflicted state subgraph brings most such
// paths into the set.)
func (s *resolution) reverseTopologicalPowerOrder(set map[spec.EventID]bool) ([]*events.PDU, error) {
	waiting := map[spec.EventID]int{}               // auth events among set not yet placed
	dependents := map[spec.EventID][]spec.EventID{} // events waiting on this one
	cands := &candidates{}
	for id := range set {
		chain, err := s.chainWithin(id, set)
		if err != nil {
			return nil, err
		}
		if chain[id] {
			return nil, fmt.Errorf("stateres: %s is in its own auth chain", id)
		}
		waiting[id] = len(chain)
		for a := range chain {
			dependents[a] = append(dependents[a], id)
		}
	}
	for id, n := range waiting {
		if n == 0 {
			c, err := s.powerCandidate(id)
			if err != nil {
				return nil, err
			}
			heap.Push(cands, c)
		}
	}
	order := make([]*events.PDU, 0, len(set))
	for cands.Len() > 0 {
		c := heap.Pop(cands).(candidate)
		order = append(order, c.ev)
		for _, d := range dependents[c.ev.EventID()] {
			waiting[d]--
			if waiting[d] == 0 {
				next, err := s.powerCandidate(d)
				if err != nil {
					return nil, err
				}
				heap.Push(cands, next)
			}
		}
	}
	if len(order) != len(set) {
		return nil, errors.New("stateres: the auth events of the conflicted set form a cycle")
	}
	return order, nil
}

func (s *resolution) powerCandidate(id spec.EventID) (candidate, error) {
	ev := s.known[id]
	level, err := s.senderPowerLevel(ev)
	if err != nil {
		return candidate{}, err
	}
	// Higher power sorts first: the key is the negated level.
	return candidate{ev: ev, key: -level}, nil
}

// senderPowerLevel is the power level of the event's sender by the power
// levels among its auth events (and, without them, the create event's
// implicit level for the creator; in room version 12 creators outrank
// everyone).
func (s *resolution) senderPowerLevel(ev *events.PDU) (int64, error) {
	if l, ok := s.levels[ev.EventID()]; ok {
		return l, nil
	}
	var pl, create *events.PDU
	for _, id := range ev.AuthEvents() {
		a, err := s.event(id)
		if err != nil {
			return 0, err
		}
		switch sk, _ := a.StateKey(); {
		case a.Type() == spec.MRoomPowerLevels && sk == "":
			pl = a
		case a.Type() == spec.MRoomCreate && sk == "":
			create = a
		}
	}
	if s.Version.AtLeast12() {
		create = s.create // v12: the room ID names it; never an auth event
	}
	if ev.Type() == spec.MRoomCreate {
		// Its auth events say nothing of power. Before v12 every other
		// event cites it, so it comes first whatever its level; in v12 it
		// is in no auth chain and so never in the set.
		s.levels[ev.EventID()] = 0
		return 0, nil
	}
	if create == nil {
		return 0, fmt.Errorf("stateres: %s has no m.room.create among its auth events", ev.EventID())
	}
	levels, err := authrules.ParsePowerLevels(pl, create)
	if err != nil {
		return 0, fmt.Errorf("stateres: the power levels of %s cannot be read: %w", ev.EventID(), err)
	}
	l := levels.UserLevel(ev.Sender())
	s.levels[ev.EventID()] = l
	return l, nil
}

// candidate is an event and its first sort key: the negated power level of
// the power ordering, or the negated mainline position of the mainline
// ordering. Ties go to origin_server_ts, then event ID.
type candidate struct {
	ev  *events.PDU
	key int64
}

func compareCandidates(a, b candidate) int {
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ev.OriginServerTS(), b.ev.OriginServerTS()); c != 0 {
		return c
	}
	return cmp.Compare(a.ev.EventID(), b.ev.EventID())
}

// candidates is a min-heap of candidates.
type candidates []candidate

func (h candidates) Len() int           { return len(h) }
func (h candidates) Less(i, j int) bool { return compareCandidates(h[i], h[j]) < 0 }
func (h candidates) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *candidates) Push(x any)        { *h = append(*h, x.(candidate)) }
func (h *candidates) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// mainlineSort sorts evs in place by the mainline ordering based on pl
// (rooms/v2 "Mainline ordering"): an event whose chain of power levels
// meets the mainline at an older power levels event first, then by
// origin_server_ts and event ID. A nil pl is an empty mainline: every event
// is at the same (infinite) position.
func (s *resolution) mainlineSort(evs []*events.PDU, pl *events.PDU) error {
	mainline := map[spec.EventID]int64{}
	for i := int64(0); pl != nil; i++ {
		if _, seen := mainline[pl.EventID()]; seen {
			return errors.New("stateres: the mainline of power levels forms a cycle")
		}
		mainline[pl.EventID()] = i
		next, err := s.authPowerLevels(pl)
		if err != nil {
			return err
		}
		pl = next
	}
	keyed := make([]candidate, len(evs))
	for i, ev := range evs {
		pos, err := s.mainlinePosition(ev, mainline)
		if err != nil {
			return err
		}
		keyed[i] = candidate{ev: ev, key: -pos}
	}
	slices.SortFunc(keyed, compareCandidates)
	for i, c := range keyed {
		evs[i] = c.ev
	}
	return nil
}

// infinitePosition is the mainline position of an event whose power levels
// never meet the mainline.
const infinitePosition int64 = 1 << 62

// mainlinePosition follows the power levels events of ev's auth events back
// until one is on the mainline, and returns its index there.
func (s *resolution) mainlinePosition(ev *events.PDU, mainline map[spec.EventID]int64) (int64, error) {
	seen := map[spec.EventID]bool{}
	for {
		next, err := s.authPowerLevels(ev)
		if err != nil {
			return 0, err
		}
		if next == nil {
			return infinitePosition, nil
		}
		if pos, ok := mainline[next.EventID()]; ok {
			return pos, nil
		}
		if seen[next.EventID()] {
			return 0, errors.New("stateres: power levels events form a cycle")
		}
		seen[next.EventID()] = true
		ev = next
	}
}

// authPowerLevels is the m.room.power_levels event among ev's auth events,
// or nil.
func (s *resolution) authPowerLevels(ev *events.PDU) (*events.PDU, error) {
	var found *events.PDU
	for _, id := range ev.AuthEvents() {
		a, err := s.event(id)
		if err != nil {
			return nil, err
		}
		if sk, _ := a.StateKey(); a.Type() == spec.MRoomPowerLevels && sk == "" {
			if found != nil {
				return nil, fmt.Errorf("stateres: %s has two power levels auth events", ev.EventID())
			}
			found = a
		}
	}
	return found, nil
}

// iterativeAuthChecks applies each event in order to state if the
// authorisation rules allow it (rooms/v2 "Iterative auth checks"): each key
// the event's auth events selection needs comes from state, or, when state
// has none, from the event's own auth events unless that auth event was
// rejected. A refused event is skipped.
func (s *resolution) iterativeAuthChecks(state authrules.StateMap, order []*events.PDU) error {
	for _, ev := range order {
		own := authrules.StateMap{}
		for _, id := range ev.AuthEvents() {
			a, err := s.event(id)
			if err != nil {
				return err
			}
			if s.rejected(id) {
				continue
			}
			if sk, ok := a.StateKey(); ok {
				own[authrules.StateKeyPair{Type: a.Type(), StateKey: sk}] = a
			}
		}
		auth := authrules.StateMap{}
		for _, k := range authrules.AuthEventKeysOf(ev) {
			if a := state[k]; a != nil {
				auth[k] = a
			} else if a := own[k]; a != nil {
				auth[k] = a
			}
		}
		if s.Version.AtLeast12() {
			// The rules read the create event the room ID names.
			auth[authrules.StateKeyPair{Type: spec.MRoomCreate}] = s.create
		}
		if authrules.Allowed(ev, auth) != nil {
			continue
		}
		sk, _ := ev.StateKey()
		state[authrules.StateKeyPair{Type: ev.Type(), StateKey: sk}] = ev
	}
	return nil
}
