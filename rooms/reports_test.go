package rooms_test

import (
	"strings"
	"testing"

	"github.com/chatalot/chatalot/rooms"
)

func TestReports(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	hidden := ts.CreateRoom(userA, nil)
	ts.putState(userA, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
	early := ts.send(userA, room, map[string]any{"body": "before Bob"})
	ts.join(userB, room)
	bad := ts.send(userA, room, map[string]any{"body": "something bad"})
	secret := ts.send(userA, hidden, map[string]any{"body": "secret"})

	ok := func(user, p string, body any) {
		t.Helper()
		got := ts.must(user, "POST", p, body)
		if len(got) != 0 {
			t.Fatalf("%s: the answer says more than {}: %v", p, got)
		}
	}
	ok(userB, v3+room+"/report/"+bad, map[string]any{"reason": "spam"})
	ok(userB, v3+room+"/report/"+bad, map[string]any{}) // the reason is optional for events
	// Room and user reports: accepted whatever the room or user, so the
	// answer tells nothing.
	ok(userC, v3+hidden+"/report", map[string]any{"reason": "looks bad"})
	ok(userC, v3+"!unknown:test/report", map[string]any{"reason": ""})
	ok(userC, "/_matrix/client/v3/users/"+userA+"/report", map[string]any{"reason": "rude"})
	ok(userC, "/_matrix/client/v3/users/@nobody:test/report", map[string]any{"reason": "rude"})

	for _, c := range []struct {
		name, user, path string
		body             any
		status           int
		code             string
	}{
		{"unknown event", userB, v3 + room + "/report/$nope", map[string]any{}, 404, "M_NOT_FOUND"},
		{"event Bob may not see", userB, v3 + room + "/report/" + early, map[string]any{}, 404, "M_NOT_FOUND"},
		{"not joined", userC, v3 + room + "/report/" + bad, map[string]any{}, 404, "M_NOT_FOUND"},
		{"event of another room", userB, v3 + room + "/report/" + secret, map[string]any{}, 404, "M_NOT_FOUND"},
		{"room Bob is not in", userB, v3 + hidden + "/report/" + secret, map[string]any{}, 404, "M_NOT_FOUND"},
		{"room report without reason", userB, v3 + room + "/report", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"user report without reason", userB, "/_matrix/client/v3/users/" + userA + "/report", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"reason too long", userB, v3 + room + "/report", map[string]any{"reason": strings.Repeat("x", 2001)}, 400, "M_INVALID_PARAM"},
		{"reason not a string", userB, v3 + room + "/report", map[string]any{"reason": 1}, 400, "M_BAD_JSON"},
		{"bad user ID", userB, "/_matrix/client/v3/users/alice/report", map[string]any{"reason": ""}, 400, "M_INVALID_PARAM"},
		{"bad event ID", userB, v3 + room + "/report/nope", map[string]any{}, 400, "M_INVALID_PARAM"},
	} {
		code, body := ts.do(c.user, "POST", c.path, c.body)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("%s: %d %v, want %d %s", c.name, code, body, c.status, c.code)
		}
	}

	// The admin API.
	list, total, err := ts.s.ListReports(t.Context(), rooms.ReportFilter{})
	if err != nil || total != 6 || len(list) != 6 {
		t.Fatalf("ListReports: %d %v %v", total, list, err)
	}
	if list[0].Kind != rooms.ReportUser || list[0].UserID != "@nobody:test" || list[5].Kind != rooms.ReportEvent || list[5].Reason != "spam" ||
		list[5].EventID != eventID(bad) || list[5].RoomID != roomID(room) || list[5].Reporter != userB || list[5].ReceivedTS == 0 {
		t.Fatalf("reports, newest first: %+v", list)
	}
	events, total, err := ts.s.ListReports(t.Context(), rooms.ReportFilter{Kind: rooms.ReportEvent, Oldest: true, Limit: 1, From: 1})
	if err != nil || total != 2 || len(events) != 1 || events[0].ID != list[4].ID {
		t.Fatalf("filtered: %d %+v %v", total, events, err)
	}
	if byRoom, total, _ := ts.s.ListReports(t.Context(), rooms.ReportFilter{RoomID: roomID(hidden)}); total != 1 || byRoom[0].Kind != rooms.ReportRoom {
		t.Fatalf("by room: %+v", byRoom)
	}
	r, err := ts.s.GetReport(t.Context(), list[5].ID)
	if err != nil || r == nil || r.Reason != "spam" {
		t.Fatalf("GetReport: %+v %v", r, err)
	}
	ev, err := ts.s.ReportedEvent(t.Context(), r)
	if err != nil || ev == nil || string(ev.PDU.EventID()) != bad {
		t.Fatalf("ReportedEvent: %v %v", ev, err)
	}
	if found, err := ts.s.DeleteReport(t.Context(), r.ID); !found || err != nil {
		t.Fatalf("DeleteReport: %v %v", found, err)
	}
	if found, _ := ts.s.DeleteReport(t.Context(), r.ID); found {
		t.Fatalf("deleted twice")
	}
	if r, _ := ts.s.GetReport(t.Context(), r.ID); r != nil {
		t.Fatalf("deleted report still there")
	}
}
