package rooms

import (
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// TestHistoryVisibilityTable checks canSee against the spec's rules
// (Room History Visibility, "Server behaviour") for every visibility and
// every membership a user can have around an event: the event sits at
// position 10, the user's membership changes at the positions given.
func TestHistoryVisibilityTable(t *testing.T) {
	const ev = 10
	type change struct {
		pos        int64
		membership string
	}
	scenarios := map[string][]change{
		"never in the room":      nil,
		"invited before":         {{5, spec.Invite}},
		"joined before":          {{5, spec.Join}},
		"joined before, left":    {{5, spec.Join}, {8, spec.Leave}},
		"joined after the event": {{12, spec.Join}},
		"invited after":          {{12, spec.Invite}},
		"joined, left after":     {{5, spec.Join}, {12, spec.Leave}},
		"knocking":               {{5, spec.Knock}},
		"banned":                 {{5, spec.Join}, {8, spec.Ban}},
	}
	// want[visibility][scenario]
	want := map[string]map[string]bool{
		"world_readable": {"never in the room": true, "invited before": true, "joined before": true, "joined before, left": true,
			"joined after the event": true, "invited after": true, "joined, left after": true, "knocking": true, "banned": true},
		"shared": {"never in the room": false, "invited before": false, "joined before": true, "joined before, left": false,
			"joined after the event": true, "invited after": false, "joined, left after": true, "knocking": false, "banned": false},
		"invited": {"never in the room": false, "invited before": true, "joined before": true, "joined before, left": false,
			"joined after the event": false, "invited after": false, "joined, left after": true, "knocking": false, "banned": false},
		"joined": {"never in the room": false, "invited before": false, "joined before": true, "joined before, left": false,
			"joined after the event": false, "invited after": false, "joined, left after": true, "knocking": false, "banned": false},
	}
	msg := plainEvent(t)
	user := spec.UserID("@u:test")
	for vis, byScenario := range want {
		for name, changes := range scenarios {
			r := newLiveRoom("!r:test", spec.RoomV12)
			r.visibility = []posValue{{1, vis}}
			for _, c := range changes {
				r.members[user] = append(r.members[user], posValue{c.pos, c.membership})
			}
			got := r.canSee(user, &Event{PDU: msg, Position: ev})
			if got != byScenario[name] {
				t.Errorf("%s, %s: canSee = %v, want %v", vis, name, got, byScenario[name])
			}
		}
	}
}

// plainEvent is any message event; canSee reads only its type and key.
func plainEvent(t *testing.T) *events.PDU {
	t.Helper()
	raw := `{"auth_events":[],"content":{"body":"x"},"depth":3,"hashes":{"sha256":"x"},"origin_server_ts":1,"prev_events":[],"room_id":"!r:test","sender":"@a:test","signatures":{"test":{"ed25519:1":"x"}},"type":"m.room.message"}`
	p, err := events.LoadPDU([]byte(raw), spec.RoomV12, "$e")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
