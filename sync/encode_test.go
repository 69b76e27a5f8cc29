package sync

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

// The parts of /sync that are not events are written by hand too; each
// must read as encoding/json writes it, escaping included.
func TestHandWrittenKeysAndCountsMatchEncodingJSON(t *testing.T) {
	fallback := []string{"signed_curve25519", `we"ird<&>`}
	resp := &Response{
		NextBatch:        "s1_2",
		OTKCounts:        map[string]int{"signed_curve25519": 50, "curve25519": 0, "é\n": 3},
		FallbackKeyTypes: &fallback,
		DeviceLists:      &DeviceLists{Changed: []spec.UserID{"@a:x"}},
		Rooms: &Rooms{Join: map[spec.RoomID]*JoinedRoom{"!r:x": {
			Timeline:            Timeline{Events: []json.RawMessage{json.RawMessage(`{"type":"m.room.message"}`)}, Limited: true, PrevBatch: "p"},
			Ephemeral:           EventList{Events: []json.RawMessage{}},
			AccountData:         EventList{Events: []json.RawMessage{}},
			UnreadNotifications: &UnreadCounts{NotificationCount: 12, HighlightCount: 1},
			UnreadThreadNotifications: map[string]UnreadCounts{
				"$t": {NotificationCount: 2},
			},
		}}},
	}
	want, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var got, exp any
	if err := json.Unmarshal(resp.encode(), &got); err != nil {
		t.Fatalf("hand-written JSON does not parse: %v\n%s", err, resp.encode())
	}
	_ = json.Unmarshal(want, &exp)
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("encodings differ:\n%s\n%s", resp.encode(), want)
	}

	empty := []string{}
	resp = &Response{NextBatch: "s", FallbackKeyTypes: &empty, OTKCounts: map[string]int{}}
	// A device's counts are always sent once known, even when empty.
	if got, want := string(resp.encode()), `{"next_batch":"s","device_one_time_keys_count":{},"device_unused_fallback_key_types":[]}`; got != want {
		t.Fatalf("empty lists: %s, want %s", got, want)
	}

	for _, s := range []string{"", "plain", `q"uote`, "back\\slash", "<tag>&", "ctl\x01", "ünï", "\u2028"} {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
}
