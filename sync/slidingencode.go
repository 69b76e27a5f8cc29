package sync

import "encoding/json"

// A sliding sync answer is written as /sync's is (encode.go): the fields
// that are not events go through encoding/json, the events — canonical
// JSON already — are appended as they are, so that they are not scanned
// again.

func (r *slidingResponse) encode() ([]byte, error) {
	b := make([]byte, 0, r.sizeHint())
	b = append(b, `{"pos":`...)
	b = appendString(b, r.Pos)
	if r.TxnID != "" {
		b = append(b, `,"txn_id":`...)
		b = appendString(b, r.TxnID)
	}
	lists, err := json.Marshal(r.Lists)
	if err != nil {
		return nil, err
	}
	b = append(append(b, `,"lists":`...), lists...)
	b = append(b, `,"rooms":{`...)
	for i, id := range sortedRoomIDs(r.Rooms) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendString(b, string(id)), ':')
		if b, err = r.Rooms[id].appendJSON(b); err != nil {
			return nil, err
		}
	}
	b = append(b, `},"extensions":`...)
	if b, err = r.Extensions.appendJSON(b); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendJSON writes the room: its plain fields by encoding/json, then its
// lists of events.
func (room *slidingRoomResp) appendJSON(b []byte) ([]byte, error) {
	plain := *room
	plain.InviteState, plain.Timeline, plain.RequiredState = nil, nil, nil
	head, err := json.Marshal(&plain)
	if err != nil {
		return nil, err
	}
	b = append(b, head[:len(head)-1]...) // without its closing brace
	first := len(head) == 2              // "{}"
	for _, f := range []struct {
		name string
		evs  []json.RawMessage
	}{{"invite_state", room.InviteState}, {"timeline", room.Timeline}, {"required_state", room.RequiredState}} {
		if len(f.evs) == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(appendString(b, f.name), ':')
		b = appendRawList(b, f.evs)
	}
	return append(b, '}'), nil
}

func (e *slidingExtResponse) appendJSON(b []byte) ([]byte, error) {
	b = append(b, '{')
	n := 0
	field := func(name string) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(appendString(b, name), ':')
	}
	if td := e.ToDevice; td != nil {
		field("to_device")
		b = append(b, `{"next_batch":`...)
		b = appendString(b, td.NextBatch)
		b = append(b, `,"events":`...)
		b = appendRawList(b, td.Events)
		b = append(b, '}')
	}
	if e.E2EE != nil {
		field("e2ee")
		raw, err := json.Marshal(e.E2EE)
		if err != nil {
			return nil, err
		}
		b = append(b, raw...)
	}
	if ad := e.AccountData; ad != nil {
		field("account_data")
		b = append(b, '{')
		if len(ad.Global) > 0 {
			b = append(b, `"global":`...)
			b = appendRawList(b, ad.Global)
		}
		if len(ad.Rooms) > 0 {
			if len(ad.Global) > 0 {
				b = append(b, ',')
			}
			b = append(b, `"rooms":{`...)
			for i, id := range sortedRoomIDs(ad.Rooms) {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(appendString(b, string(id)), ':')
				b = appendRawList(b, ad.Rooms[id])
			}
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	for _, x := range []struct {
		name string
		r    *roomEventsResponse
	}{{"receipts", e.Receipts}, {"typing", e.Typing}} {
		if x.r == nil {
			continue
		}
		field(x.name)
		if len(x.r.Rooms) == 0 {
			b = append(b, "{}"...)
			continue
		}
		b = append(b, `{"rooms":{`...)
		for i, id := range sortedRoomIDs(x.r.Rooms) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendString(b, string(id)), ':')
			b = append(b, x.r.Rooms[id]...)
		}
		b = append(b, "}}"...)
	}
	return append(b, '}'), nil
}

func appendRawList(b []byte, evs []json.RawMessage) []byte {
	b = append(b, '[')
	for i, ev := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, ev...)
	}
	return append(b, ']')
}

// sizeHint is about the answer's length, so that it is written into one
// buffer rather than one regrown at each doubling.
func (r *slidingResponse) sizeHint() int {
	n := 1024
	for _, room := range r.Rooms {
		n += 512
		for _, l := range [][]json.RawMessage{room.InviteState, room.Timeline, room.RequiredState} {
			for _, ev := range l {
				n += len(ev) + 1
			}
		}
	}
	e := r.Extensions
	if e.ToDevice != nil {
		for _, ev := range e.ToDevice.Events {
			n += len(ev) + 1
		}
	}
	if e.AccountData != nil {
		for _, ev := range e.AccountData.Global {
			n += len(ev) + 1
		}
		for _, l := range e.AccountData.Rooms {
			for _, ev := range l {
				n += len(ev) + 80
			}
		}
	}
	for _, x := range []*roomEventsResponse{e.Receipts, e.Typing} {
		if x != nil {
			for _, ev := range x.Rooms {
				n += len(ev) + 80
			}
		}
	}
	return n
}
