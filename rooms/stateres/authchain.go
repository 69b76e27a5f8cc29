package stateres

import (
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// fullAuthChain is the union of the auth chains of the events of a state
// set: every event reachable through auth_events, the set's own events only
// when another event reaches them.
func (s *resolution) fullAuthChain(starts []spec.EventID) (map[spec.EventID]bool, error) {
	chain := map[spec.EventID]bool{}
	var stack []spec.EventID
	for _, id := range starts {
		ev, err := s.event(id)
		if err != nil {
			return nil, err
		}
		stack = append(stack, ev.AuthEvents()...)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if chain[id] {
			continue
		}
		ev, err := s.event(id)
		if err != nil {
			return nil, err
		}
		chain[id] = true
		stack = append(stack, ev.AuthEvents()...)
	}
	return chain, nil
}

// authDifference is ∪Cᵢ − ∩Cᵢ over the full auth chains Cᵢ of the state
// sets (rooms/v2 "Auth difference").
func (s *resolution) authDifference(stateSets []authrules.StateMap) (map[spec.EventID]bool, error) {
	count := map[spec.EventID]int{}
	for _, set := range stateSets {
		ids := make([]spec.EventID, 0, len(set))
		for _, ev := range set {
			ids = append(ids, ev.EventID())
		}
		chain, err := s.fullAuthChain(ids)
		if err != nil {
			return nil, err
		}
		for id := range chain {
			count[id]++
		}
	}
	diff := map[spec.EventID]bool{}
	for id, n := range count {
		if n < len(stateSets) {
			diff[id] = true
		}
	}
	return diff, nil
}

// chainWithin is the auth chain of the event restricted to the events of
// within.
func (s *resolution) chainWithin(id spec.EventID, within map[spec.EventID]bool) (map[spec.EventID]bool, error) {
	chain, ok := s.chains[id]
	if !ok {
		var err error
		if chain, err = s.fullAuthChain([]spec.EventID{id}); err != nil {
			return nil, err
		}
		s.chains[id] = chain
	}
	out := map[spec.EventID]bool{}
	for a := range chain {
		if within[a] {
			out[a] = true
		}
	}
	return out, nil
}

// conflictedSubgraph is the v2.1 (room version 12) conflicted state
// subgraph: the events on some auth_events path from one event of the
// conflicted state set to another, endpoints included. Those are the events
// reachable from the conflicted set that also reach it.
func (s *resolution) conflictedSubgraph(conflicted map[spec.EventID]bool) (map[spec.EventID]bool, error) {
	// Walk forward from the conflicted events, recording the reverse edges.
	reached := map[spec.EventID]bool{}
	citedBy := map[spec.EventID][]spec.EventID{}
	var stack []spec.EventID
	for id := range conflicted {
		stack = append(stack, id)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if reached[id] {
			continue
		}
		reached[id] = true
		ev, err := s.event(id)
		if err != nil {
			return nil, err
		}
		for _, a := range ev.AuthEvents() {
			citedBy[a] = append(citedBy[a], id)
			stack = append(stack, a)
		}
	}
	// Walk back from the conflicted events along the reverse edges.
	sub := map[spec.EventID]bool{}
	for id := range conflicted {
		stack = append(stack, id)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if sub[id] {
			continue
		}
		sub[id] = true
		stack = append(stack, citedBy[id]...)
	}
	return sub, nil
}
