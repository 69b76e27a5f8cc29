package rooms

import (
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// canSee applies the history visibility rules (spec: Room History
// Visibility, "Server behaviour") for one event, from the in-memory
// histories: the state "at the event" is the state before it, with the
// event's own change considered for history_visibility and the user's own
// member events ("before or after").
func (r *liveRoom) canSee(user spec.UserID, ev *Event) bool {
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	return r.canSeeLocked(user, ev.Position, ev.PDU)
}

func (r *liveRoom) canSeeLocked(user spec.UserID, pos int64, p *events.PDU) bool {
	before := valueBefore(r.visibility, pos)
	if pos < 0 && before == "" && len(r.visibility) > 0 {
		// Backfilled history (backfill.go), before what the server held:
		// the earliest visibility it knows, not the default.
		before = r.visibility[0].value
	}
	vis := []string{visibilityOf(before)}
	if p.Type() == spec.MRoomHistoryVisibility {
		if sk, _ := p.StateKey(); sk == "" {
			vis = append(vis, visibilityOf(valueAt(r.visibility, pos)))
		}
	}
	hist := r.members[user]
	mem := []string{valueBefore(hist, pos)}
	if p.Type() == spec.MRoomMember {
		if sk, _ := p.StateKey(); sk == string(user) {
			mem = append(mem, valueAt(hist, pos))
		}
	}
	for _, v := range vis {
		for _, m := range mem {
			if allowedBy(v, m, hist, pos) {
				return true
			}
		}
	}
	return false
}

func allowedBy(vis, membership string, hist []posValue, pos int64) bool {
	switch {
	case vis == "world_readable":
		return true
	case membership == spec.Join:
		return true
	case vis == "shared" && joinedAfter(hist, pos):
		return true
	case vis == "invited" && membership == spec.Invite:
		return true
	}
	return false
}

// joinedAfter reports whether the user joined at any point after pos.
func joinedAfter(hist []posValue, pos int64) bool {
	for i := len(hist) - 1; i >= 0 && hist[i].pos > pos; i-- {
		if hist[i].value == spec.Join {
			return true
		}
	}
	return false
}

// visibilityOf maps a history_visibility value to a known one: absent or
// not understood means shared.
func visibilityOf(v string) string {
	switch v {
	case "world_readable", "shared", "invited", "joined":
		return v
	}
	return "shared"
}

// filterVisible keeps the events the user may see, in order.
func (r *liveRoom) filterVisible(user spec.UserID, evs []*Event) []*Event {
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	out := evs[:0:0]
	for _, ev := range evs {
		if r.canSeeLocked(user, ev.Position, ev.PDU) {
			out = append(out, ev)
		}
	}
	return out
}

// worldReadableNow reports whether the room's current history visibility
// is world_readable (non-members may then read it).
func (r *liveRoom) worldReadableNow() bool {
	s := r.cur.Load()
	ev := s.get(spec.MRoomHistoryVisibility, "")
	return ev != nil && ev.Content().Get("history_visibility").String() == "world_readable"
}
