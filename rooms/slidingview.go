package rooms

import (
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// This file is what sliding sync (MSC4186) reads from rooms beyond what
// /sync reads (syncview.go): the ordering of the room list and the room
// facts its filters test. Everything answers from memory.

// bumpTypes are the events that move a room up the room list: what people
// see as activity, not state churn (MSC4186 "bump_stamp").
var bumpTypes = map[string]bool{
	spec.MRoomCreate: true, "m.room.message": true, "m.room.encrypted": true, "m.sticker": true,
	"m.call.invite": true, "m.poll.start": true, "m.beacon_info": true, "org.matrix.msc3381.poll.start": true,
	"org.matrix.msc3672.beacon_info": true,
}

// ListEntry is one of a user's rooms as a room list sees it.
type ListEntry struct {
	ID         spec.RoomID
	Membership string // join, invite, knock, leave, ban
	MemberPos  int64  // the position of the user's latest member event
	Bump       int64  // BumpStamp at upTo; at the leave for a left room; the invite or knock itself
}

// RoomList returns every room of the user (as RoomsOf) with its ordering
// facts, in one pass over memory: a room list of 500 rooms is read for each
// sliding sync answer that builds one. Rooms whose member event is after
// upTo are left out (the next answer has them).
func (s *Service) RoomList(user spec.UserID, upTo int64) []ListEntry {
	s.mu.RLock()
	out := make([]ListEntry, 0, len(s.userRooms[user]))
	live := make([]*liveRoom, 0, len(s.userRooms[user]))
	var remote []ListEntry
	for id, m := range s.userRooms[user] {
		if r := s.rooms[id]; r != nil {
			out = append(out, ListEntry{ID: id, Membership: m})
			live = append(live, r)
		} else if o := s.outliers[id][user]; o != nil && o.pos <= upTo {
			// An invite to or knock on a room not held (outliers.go): its
			// member event is all the news.
			remote = append(remote, ListEntry{ID: id, Membership: m, MemberPos: o.pos, Bump: o.pos})
		}
	}
	s.mu.RUnlock()
	n := 0
	for i, r := range live {
		e := out[i]
		r.histMu.RLock()
		if h := r.members[user]; len(h) > 0 {
			e.MemberPos = h[len(h)-1].pos
		}
		r.histMu.RUnlock()
		if e.MemberPos > upTo {
			continue
		}
		switch e.Membership {
		case spec.Join:
			e.Bump = r.bumpStamp(upTo)
		case spec.Invite, spec.Knock:
			e.Bump = e.MemberPos // the invite is the news; the room's own activity is not theirs to see
		default:
			e.Bump = r.bumpStamp(e.MemberPos)
		}
		out[n] = e
		n++
	}
	return append(out[:n], remote...)
}

// BumpStamp is the stream position of the room's latest activity at or
// before upTo (a left room's leave): its latest bump event in memory, or,
// when memory holds none, the latest event there. 0 for an unknown room.
func (s *Service) BumpStamp(id spec.RoomID, upTo int64) int64 {
	r := s.room(id)
	if r == nil {
		return 0
	}
	return r.bumpStamp(upTo)
}

func (r *liveRoom) bumpStamp(upTo int64) int64 {
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	var latest int64
	for i := len(r.recent) - 1; i >= 0; i-- {
		ev := r.recent[i]
		if ev.Position > upTo {
			continue
		}
		if latest == 0 {
			latest = ev.Position
		}
		if bumpTypes[ev.PDU.Type()] {
			return ev.Position
		}
	}
	if latest == 0 {
		latest = min(r.cur.Load().position, upTo)
	}
	return latest
}

// RoomType is the type in the room's m.room.create content ("" for a plain
// room, "m.space" for a space).
func (s *Service) RoomType(id spec.RoomID) string {
	if ev := s.CurrentState(id, spec.MRoomCreate, ""); ev != nil {
		return ev.Content().Get("type").String()
	}
	return ""
}

// SpaceChildren lists the rooms a space names as its children.
func (s *Service) SpaceChildren(space spec.RoomID) []spec.RoomID {
	r := s.room(space)
	if r == nil {
		return nil
	}
	children := spaceChildren(r, false)
	out := make([]spec.RoomID, len(children))
	for i, c := range children {
		out[i] = c.room
	}
	return out
}

// CurrentStateOfType returns the room's current state events of one type
// (every state key), from memory.
func (s *Service) CurrentStateOfType(id spec.RoomID, typ string) []*events.PDU {
	r := s.room(id)
	if r == nil {
		return nil
	}
	var out []*events.PDU
	for k, ev := range r.cur.Load().state.All() {
		if k.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}
