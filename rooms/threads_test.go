package rooms_test

import (
	"testing"
)

func TestThreadList(t *testing.T) {
	ts := newTestServer(t, "optional")
	ts.tickingClock()
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.join(userB, room)
	rootA := ts.send(userA, room, map[string]any{"body": "Alice's thread"})
	rootB := ts.send(userB, room, map[string]any{"body": "Bob's thread"})
	rootC := ts.send(userA, room, map[string]any{"body": "a thread Bob replied in"})
	ts.send(userA, room, map[string]any{"body": "a", "m.relates_to": relatesTo("m.thread", rootA)})
	ts.send(userB, room, map[string]any{"body": "b", "m.relates_to": relatesTo("m.thread", rootB)})
	ts.send(userB, room, map[string]any{"body": "c", "m.relates_to": relatesTo("m.thread", rootC)})
	// Activity in Alice's thread moves it to the front.
	latestA := ts.send(userA, room, map[string]any{"body": "a2", "m.relates_to": relatesTo("m.thread", rootA)})
	ts.send(userA, room, map[string]any{"body": "not in a thread"})

	th := v1 + room + "/threads"
	all := ts.must(userB, "GET", th, nil)
	sameList(t, "all threads", ids(all["chunk"]), rootA, rootC, rootB)
	first := all["chunk"].([]any)[0]
	if path(first, "unsigned", "m.relations", "m.thread", "count") != float64(2) ||
		path(first, "unsigned", "m.relations", "m.thread", "latest_event", "event_id") != latestA {
		t.Fatalf("thread summary: %v", path(first, "unsigned"))
	}
	sameList(t, "Bob participated", ids(ts.must(userB, "GET", th+"?include=participated", nil)["chunk"]), rootC, rootB)
	sameList(t, "Alice participated", ids(ts.must(userA, "GET", th+"?include=participated", nil)["chunk"]), rootA, rootC)

	// Pagination.
	p1 := ts.must(userB, "GET", th+"?limit=2", nil)
	sameList(t, "page 1", ids(p1["chunk"]), rootA, rootC)
	p2 := ts.must(userB, "GET", th+"?limit=2&from="+p1["next_batch"].(string), nil)
	sameList(t, "page 2", ids(p2["chunk"]), rootB)
	if _, more := p2["next_batch"]; more {
		t.Fatalf("next_batch on the last page: %v", p2)
	}

	for _, c := range []struct {
		query  string
		status int
		code   string
	}{
		{"?include=mine", 400, "M_INVALID_PARAM"},
		{"?limit=0", 400, "M_INVALID_PARAM"},
		{"?limit=x", 400, "M_INVALID_PARAM"},
		{"?from=s5", 400, "M_INVALID_PARAM"}, // a /messages token
		{"?from=t", 400, "M_INVALID_PARAM"},
	} {
		code, body := ts.do(userB, "GET", th+c.query, nil)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("%s: %d %v", c.query, code, body)
		}
	}
	// Not in the room: 403, as the spec says.
	code, body := ts.do(userC, "GET", th, nil)
	wantError(t, code, body, 403, "M_FORBIDDEN")
}

func TestThreadListHidesWhatTheUserCannotSee(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.putState(userA, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
	old := ts.send(userA, room, map[string]any{"body": "old"})
	ts.send(userA, room, map[string]any{"body": "old reply", "m.relates_to": relatesTo("m.thread", old)})
	ts.join(userB, room)
	fresh := ts.send(userA, room, map[string]any{"body": "fresh"})
	ts.send(userA, room, map[string]any{"body": "fresh reply", "m.relates_to": relatesTo("m.thread", fresh)})
	sameList(t, "Bob", ids(ts.must(userB, "GET", v1+room+"/threads", nil)["chunk"]), fresh)
	sameList(t, "Alice", ids(ts.must(userA, "GET", v1+room+"/threads", nil)["chunk"]), fresh, old)
}
