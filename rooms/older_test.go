package rooms

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

// TestRedactionReachesKeptOlderEvents: events below the recent ones, once
// read for /messages, are served from memory; a later redaction of one of
// them shows in /messages as it does in the database.
func TestRedactionReachesKeptOlderEvents(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.createRoom(userA, map[string]any{"preset": "public_chat"})
	ts.join(userB, room)
	var sent []string
	for i := range recentSize + 40 {
		sent = append(sent, ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "words " + itoa(i)}))
	}
	old := sent[3]
	first := ts.pageBack(userB, room)
	if first[old]["content"].(map[string]any)["body"] != "words 3" {
		t.Fatal("the old event is not in /messages")
	}
	reads := ts.db.ReadCount()
	if len(ts.pageBack(userB, room)) != len(first) || ts.db.ReadCount() != reads {
		t.Fatal("paging back again read the database: the older events were not kept")
	}
	ts.must(userA, "PUT", v3+room+"/redact/"+old+"/r1", map[string]any{})
	if c := ts.pageBack(userB, room)[old]["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("/messages still serves the redacted event's content %v", c)
	}
}

// TestOlderEventsReadBeforeAPurgeAreNotKept: events read from the database
// before a purge are not put in memory after it, where they would come
// back in /messages.
func TestOlderEventsReadBeforeAPurgeAreNotKept(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.createRoom(userA, nil)
	var sent []string
	for i := range recentSize + 20 {
		sent = append(sent, ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": itoa(i)}))
	}
	r := ts.s.room(spec.RoomID(room))
	r.histMu.RLock()
	floor, rewritten := r.recentFloor, r.rewritten
	r.histMu.RUnlock()
	older, err := ts.s.eventsBetween(t.Context(), r.id, eventRange{to: floor})
	if err != nil {
		t.Fatal(err)
	}
	purged, err := ts.s.PurgeHistory(t.Context(), r.id, floor)
	if err != nil || purged == 0 {
		t.Fatalf("purge: %d, %v", purged, err)
	}
	ts.s.keepOlder(r, floor, rewritten, 0, older)
	if r.recentFloor != floor {
		t.Fatal("events read before the purge were kept")
	}
	if _, ok := ts.pageBack(userA, room)[sent[0]]; ok {
		t.Fatal("/messages serves a purged event")
	}
}

// TestOlderEventsStayWithinTheirBudget: older events kept in memory never
// cost more than a room's share or, over all rooms, the budget; the rooms
// that kept some least recently give theirs back first, and new events
// push a room's older events out rather than grow them.
func TestOlderEventsStayWithinTheirBudget(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.createRoom(userA, nil)
	bigID := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 40000)})
	big, err := ts.s.eventByID(t.Context(), spec.EventID(bigID))
	if err != nil {
		t.Fatal(err)
	}
	// Rooms whose memory starts after position 100, each with every
	// position below in the database; each keeps what fits.
	rooms := make([]*liveRoom, 8)
	for i := range rooms {
		r := newLiveRoom(spec.RoomID(fmt.Sprintf("!r%d:test", i)), big.PDU.Version())
		for p := int64(100); p <= 100+recentSize; p++ {
			r.record(&Event{PDU: big.PDU, Position: p})
		}
		var asc []*Event
		for p := int64(1); p < 100; p++ {
			asc = append(asc, &Event{PDU: big.PDU, Position: p})
		}
		ts.s.keepOlder(r, 100, 0, 0, asc)
		if r.recentFloor == 100 || r.olderCost() > r.olderMax || r.olderMax > roomOlderMax {
			t.Fatalf("room %d: floor %d, older events cost %d of %d", i, r.recentFloor, r.olderCost(), r.olderMax)
		}
		if r.recent[0].Position != r.recentFloor+1 {
			t.Fatalf("room %d: memory starts at %d, after floor %d", i, r.recent[0].Position, r.recentFloor)
		}
		rooms[i] = r
	}
	var sum int64
	for _, r := range rooms {
		sum += r.olderMax
	}
	if sum != ts.s.older.bytes || sum > olderBudget {
		t.Fatalf("allowances sum to %d, accounted %d, budget %d", sum, ts.s.older.bytes, olderBudget)
	}
	if first, last := rooms[0], rooms[len(rooms)-1]; first.olderMax != 0 || len(first.recent) != recentSize || last.olderMax == 0 {
		t.Fatalf("the least recent room kept %d, the most recent %d", first.olderMax, last.olderMax)
	}

	r := rooms[len(rooms)-1]
	floor := r.recentFloor
	for p := int64(200); p < 210; p++ {
		r.record(&Event{PDU: big.PDU, Position: p})
	}
	if r.recentFloor <= floor || r.olderCost() > r.olderMax {
		t.Fatalf("new events grew the older ones: floor %d → %d, cost %d of %d", floor, r.recentFloor, r.olderCost(), r.olderMax)
	}
	ts.s.older.forget(r)
	if r.olderMax != 0 || len(r.recent) != recentSize {
		t.Fatalf("a forgotten room keeps %d events", len(r.recent))
	}
}
