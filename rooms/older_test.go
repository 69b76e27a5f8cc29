package rooms_test

import (
	"testing"

	"github.com/chatalot/chatalot/rooms"
)

// TestRedactionReachesKeptOlderEvents: events below the recent ones, once
// read for /messages, are served from memory; a later redaction of one of
// them shows in /messages as it does in the database.
func TestRedactionReachesKeptOlderEvents(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.join(userB, room)
	var sent []string
	for i := range rooms.RecentSize + 40 {
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
