package main

import (
	"net/http"
	"sort"
	"strconv"
)

// slidingSync is the fake's sliding sync: a new connection gets the
// user's 20 most recent rooms with their latest event; a known one, nothing.
func (s *fakeServer) slidingSync(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	latest := map[string]*fakeEvent{}
	for _, ev := range s.events {
		if s.members[ev.room][user] {
			latest[ev.room] = ev
		}
	}
	ids := make([]string, 0, len(latest))
	for id := range latest {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return latest[ids[i]].pos > latest[ids[j]].pos })
	rooms := map[string]any{}
	if r.URL.Query().Get("pos") == "" {
		for _, id := range ids[:min(20, len(ids))] {
			rooms[id] = map[string]any{"timeline": []any{latest[id].json}}
		}
	}
	reply(w, map[string]any{"pos": strconv.Itoa(len(s.events)), "lists": map[string]any{"all_rooms": map[string]int{"count": len(ids)}}, "rooms": rooms})
}
