package rooms_test

import (
	"net/url"
	"testing"
)

// TestNonMembersReadNothing attacks every read path of a room as users who
// were never joined to it: one who knocked, one only invited, one banned
// before joining and one who rejected an invite (issue 19, item 1). Each
// gets the spec's refusal: 403 M_FORBIDDEN for the room's state, members
// and timeline, 404 M_NOT_FOUND for single events and their context and
// relations. A user who left after having been joined still reads the room
// as of their leave, and no further.
func TestNonMembersReadNothing(t *testing.T) {
	ts := newTestServer(t, "optional")
	const owner, member = "@owner:test", "@member:test"
	const knocker, invitee, banned, rejecter = "@knocker:test", "@invitee:test", "@banned:test", "@rejecter:test"
	id := ts.CreateRoom(owner, map[string]any{"preset": "private_chat"})
	room := url.PathEscape(id)
	ts.putState(owner, room, "m.room.join_rules", "", map[string]any{"join_rule": "knock"})
	ts.putState(owner, room, "org.example.secret", "", map[string]any{"plan": "sensitive"})
	ts.must(owner, "POST", v3+room+"/invite", map[string]any{"user_id": member})
	ts.join(member, room)
	msg := ts.send(owner, room, map[string]any{"msgtype": "m.text", "body": "hello"})

	ts.must(knocker, "POST", "/_matrix/client/v3/knock/"+room, map[string]any{})
	ts.must(owner, "POST", v3+room+"/invite", map[string]any{"user_id": invitee})
	ts.must(owner, "POST", v3+room+"/ban", map[string]any{"user_id": banned})
	ts.must(owner, "POST", v3+room+"/invite", map[string]any{"user_id": rejecter})
	ts.must(rejecter, "POST", v3+room+"/leave", map[string]any{})

	forbidden := []string{
		v3 + room + "/state",
		v3 + room + "/state/org.example.secret/",
		v3 + room + "/state/m.room.member/" + url.PathEscape(member),
		v3 + room + "/members",
		v3 + room + "/joined_members",
		v3 + room + "/messages?dir=b",
		v1 + room + "/threads",
	}
	notFound := []string{
		v3 + room + "/event/" + url.PathEscape(msg),
		v3 + room + "/context/" + url.PathEscape(msg),
		v1 + room + "/relations/" + url.PathEscape(msg),
	}
	for _, who := range []string{knocker, invitee, banned, rejecter} {
		for _, p := range forbidden {
			code, body := ts.do(who, "GET", p, nil)
			if code != 403 || body["errcode"] != "M_FORBIDDEN" {
				t.Errorf("%s GET %s: %d %v, want 403 M_FORBIDDEN", who, p, code, body)
			}
		}
		for _, p := range notFound {
			code, body := ts.do(who, "GET", p, nil)
			if code != 404 || body["errcode"] != "M_NOT_FOUND" {
				t.Errorf("%s GET %s: %d %v, want 404 M_NOT_FOUND", who, p, code, body)
			}
		}
		search := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "hello"}}}
		out := ts.must(who, "POST", "/_matrix/client/v3/search", search)
		if n := path(out, "search_categories", "room_events", "count"); n != nil && n != float64(0) {
			t.Errorf("%s: search found %v events", who, n)
		}
	}

	// Having been joined is what opens the history: the member leaves and
	// reads the room as of their leave, without what came after.
	ts.must(member, "POST", v3+room+"/leave", map[string]any{})
	ts.putState(owner, room, "org.example.later", "", map[string]any{"plan": "after the leave"})
	ts.must(owner, "POST", v3+room+"/invite", map[string]any{"user_id": member}) // invited again
	ts.must(member, "GET", v3+room+"/state/org.example.secret/", nil)
	code, body := ts.do(member, "GET", v3+room+"/state/org.example.later/", nil)
	if code != 404 {
		t.Fatalf("state after the leave: %d %v", code, body)
	}
	ts.must(member, "GET", v3+room+"/event/"+url.PathEscape(msg), nil)
	ts.must(member, "GET", v3+room+"/members", nil)
}
