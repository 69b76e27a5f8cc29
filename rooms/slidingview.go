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

// BumpStamp is the stream position of the room's latest activity at or
// before upTo (a left room's leave): its latest bump event in memory, or,
// when memory holds none, the latest event there. 0 for an unknown room.
func (s *Service) BumpStamp(id spec.RoomID, upTo int64) int64 {
	r := s.room(id)
	if r == nil {
		return 0
	}
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
