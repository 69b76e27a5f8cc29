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

// appendString appends s as a JSON string, as encoding/json writes it.
// Tokens, IDs and key algorithms need no escaping: they skip the encoder.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func (c UnreadCounts) appendJSON(b []byte) []byte {
	b = append(b, `{"notification_count":`...)
	b = strconv.AppendInt(b, c.NotificationCount, 10)
	b = append(b, `,"highlight_count":`...)
	b = strconv.AppendInt(b, c.HighlightCount, 10)
	return append(b, '}')
}

// appendKeyCounts appends device_one_time_keys_count's map, keys sorted as
// encoding/json sorts them.
func appendKeyCounts(b []byte, counts map[string]int) []byte {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(counts[k]), 10)
	}
	return append(b, '}')
}

func appendStrings(b []byte, list []string) []byte {
	if list == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
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
		b = append(b, `,"device_one_time_keys_count":`...)
		b = appendKeyCounts(b, r.OTKCounts)
	}
	if r.FallbackKeyTypes != nil {
		b = append(b, `,"device_unused_fallback_key_types":`...)
		b = appendStrings(b, *r.FallbackKeyTypes)
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
		b = append(b, `,"unread_notifications":`...)
		b = jr.UnreadNotifications.appendJSON(b)
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
