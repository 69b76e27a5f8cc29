package rooms

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// The order in which state resolution's changes meet the events stored by
// position (dag.go): a resolution takes effect after the event at its own
// position and before any later one.

func testMember(t *testing.T, n int, user, membership string) *events.PDU {
	t.Helper()
	raw := fmt.Sprintf(`{"auth_events":[],"content":{"membership":%q},"depth":%d,"hashes":{"sha256":"x"},"origin_server_ts":1,"prev_events":[],"room_id":"!r:test","sender":%q,"signatures":{},"state_key":%q,"type":"m.room.member"}`,
		membership, n, user, user)
	p, err := events.LoadPDU([]byte(raw), "12", spec.EventID(fmt.Sprintf("$ev%d%s", n, strings.Repeat("x", 40))[:44]))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWithResolved(t *testing.T) {
	ban := testMember(t, 1, "@c:test", "ban")
	join := testMember(t, 2, "@c:test", "join")
	leave := testMember(t, 3, "@c:test", "leave")
	bob := testMember(t, 4, "@b:test", "join")
	res := []resolution{{pos: 10, set: []*events.PDU{join}, unset: []authrules.StateKeyPair{keyOf(bob)}}}
	ids := func(ps []*events.PDU) string {
		var s string
		for _, p := range ps {
			s += string(p.EventID()) + " "
		}
		return s
	}
	for _, c := range []struct {
		name  string
		rows  []*Event
		unset bool
		want  []*events.PDU
	}{
		{"resolution after an older event", []*Event{{PDU: ban, Position: 5}, {PDU: bob, Position: 6}}, false, []*events.PDU{bob, join}},
		{"resolution after its own event", []*Event{{PDU: ban, Position: 10}}, false, []*events.PDU{join}},
		{"a later event wins", []*Event{{PDU: leave, Position: 11}}, false, []*events.PDU{leave}},
		{"removed entries dropped", []*Event{{PDU: ban, Position: 5}, {PDU: bob, Position: 6}}, true, []*events.PDU{join}},
	} {
		if got := withResolved(c.rows, res, c.unset); ids(got) != ids(c.want) {
			t.Errorf("%s: %s, want %s", c.name, ids(got), ids(c.want))
		}
	}
}

func TestRedactResolved(t *testing.T) {
	join := testMember(t, 2, "@c:test", "join")
	r := newLiveRoom("!r:test", "12")
	r.resolutions = []resolution{{pos: 10, set: []*events.PDU{join}}}
	old := r.resolvedIn(0, 10)
	redacted := testMember(t, 2, "@c:test", "leave") // same ID, another body
	r.redactResolved(redacted)
	if got := r.resolvedIn(0, 10)[0].set[0]; got != redacted {
		t.Error("the resolution keeps the unredacted event")
	}
	if old[0].set[0] != join {
		t.Error("a reader's slice changed under it")
	}
}
