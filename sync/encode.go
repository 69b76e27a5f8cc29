package sync

import (
	"encoding/json"
	"sort"
	"strconv"

	"github.com/chatalot/chatalot/spec"
)

// The /sync answer is written by hand: it is mostly events that are already
// canonical JSON, and encoding/json would scan every one of them again
// (it re-validates each json.RawMessage). This is the hottest response the
// server writes.

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

func appendEvents(b []byte, evs []json.RawMessage) []byte {
	b = append(b, `{"events":[`...)
	for i, ev := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, ev...)
	}
	return append(b, "]}"...)
}

func sortedRoomIDs[T any](m map[spec.RoomID]T) []spec.RoomID {
	ids := make([]spec.RoomID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// encode writes the response as JSON.
func (r *Response) encode() []byte {
	b := make([]byte, 0, 1024)
	b = append(b, `{"next_batch":`...)
	b = appendString(b, r.NextBatch)
	if r.Rooms != nil {
		b = append(b, `,"rooms":`...)
		b = r.Rooms.appendJSON(b)
	}
	for _, l := range []struct {
		key  string
		list *EventList
	}{{"account_data", r.AccountData}, {"presence", r.Presence}, {"to_device", r.ToDevice}} {
		if l.list != nil {
			b = append(b, ',', '"')
			b = append(b, l.key...)
			b = append(b, '"', ':')
			b = appendEvents(b, l.list.Events)
		}
	}
	if r.DeviceLists != nil {
		dl, _ := json.Marshal(r.DeviceLists)
		b = append(b, `,"device_lists":`...)
		b = append(b, dl...)
	}
	if r.OTKCounts != nil {
		c, _ := json.Marshal(r.OTKCounts)
		b = append(b, `,"device_one_time_keys_count":`...)
		b = append(b, c...)
	}
	if r.FallbackKeyTypes != nil {
		c, _ := json.Marshal(*r.FallbackKeyTypes)
		b = append(b, `,"device_unused_fallback_key_types":`...)
		b = append(b, c...)
	}
	return append(b, '}')
}

func (rs *Rooms) appendJSON(b []byte) []byte {
	b = append(b, '{')
	sections := 0
	if rs.Join != nil {
		b = appendSection(b, &sections, "join", rs.Join, func(b []byte, jr *JoinedRoom) []byte { return jr.appendJSON(b) })
	}
	if rs.Invite != nil {
		b = appendSection(b, &sections, "invite", rs.Invite, func(b []byte, ir *InvitedRoom) []byte {
			b = append(b, `{"invite_state":`...)
			return append(appendEvents(b, ir.InviteState.Events), '}')
		})
	}
	if rs.Knock != nil {
		b = appendSection(b, &sections, "knock", rs.Knock, func(b []byte, kr *KnockedRoom) []byte {
			b = append(b, `{"knock_state":`...)
			return append(appendEvents(b, kr.KnockState.Events), '}')
		})
	}
	if rs.Leave != nil {
		b = appendSection(b, &sections, "leave", rs.Leave, func(b []byte, lr *LeftRoom) []byte {
			b = append(b, `{"timeline":`...)
			b = lr.Timeline.appendJSON(b)
			b = appendStateParts(b, lr.State, lr.StateAfter)
			b = append(b, `,"account_data":`...)
			return append(appendEvents(b, lr.AccountData.Events), '}')
		})
	}
	return append(b, '}')
}

// appendSection writes "key":{"!room":…,…} with the rooms in ID order.
func appendSection[T any](b []byte, sections *int, key string, rooms map[spec.RoomID]T, room func([]byte, T) []byte) []byte {
	if *sections > 0 {
		b = append(b, ',')
	}
	*sections++
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, `":{`...)
	for i, id := range sortedRoomIDs(rooms) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, string(id))
		b = append(b, ':')
		b = room(b, rooms[id])
	}
	return append(b, '}')
}

func (t *Timeline) appendJSON(b []byte) []byte {
	b = append(b, `{"events":[`...)
	for i, ev := range t.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, ev...)
	}
	b = append(b, `],"limited":`...)
	b = strconv.AppendBool(b, t.Limited)
	if t.PrevBatch != "" {
		b = append(b, `,"prev_batch":`...)
		b = appendString(b, t.PrevBatch)
	}
	return append(b, '}')
}

func appendStateParts(b []byte, state, after *EventList) []byte {
	if state != nil {
		b = append(b, `,"state":`...)
		b = appendEvents(b, state.Events)
	}
	if after != nil {
		b = append(b, `,"state_after":`...)
		b = appendEvents(b, after.Events)
	}
	return b
}

func (jr *JoinedRoom) appendJSON(b []byte) []byte {
	b = append(b, `{"timeline":`...)
	b = jr.Timeline.appendJSON(b)
	b = appendStateParts(b, jr.State, jr.StateAfter)
	b = append(b, `,"ephemeral":`...)
	b = appendEvents(b, jr.Ephemeral.Events)
	b = append(b, `,"account_data":`...)
	b = appendEvents(b, jr.AccountData.Events)
	if jr.Summary != nil {
		b = appendMarshalled(b, "summary", jr.Summary)
	}
	if jr.UnreadNotifications != nil {
		b = appendMarshalled(b, "unread_notifications", jr.UnreadNotifications)
	}
	if jr.UnreadThreadNotifications != nil {
		b = appendMarshalled(b, "unread_thread_notifications", jr.UnreadThreadNotifications)
	}
	return append(b, '}')
}

// appendMarshalled appends ,"key":<v as JSON> for the small parts that are
// not events.
func appendMarshalled(b []byte, key string, v any) []byte {
	raw, _ := json.Marshal(v)
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return append(b, raw...)
}
