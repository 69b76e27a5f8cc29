package sync_test

import (
	"net/url"
	"testing"
)

const aliceID, bobID = "@alice:test", "@bob:test"

// leftTimeline returns the (type, state_key, membership) of each event of a
// room's timeline in rooms.leave, and whether the room is there.
func leftTimeline(resp map[string]any, room string) ([]string, bool) {
	left, _ := path(resp, "rooms", "leave").(map[string]any)
	r, ok := left[room]
	if !ok {
		return nil, false
	}
	var out []string
	for _, ev := range path(r, "timeline", "events").([]any) {
		e := ev.(map[string]any)
		sk, _ := e["state_key"].(string)
		m, _ := path(e, "content", "membership").(string)
		out = append(out, e["type"].(string)+"|"+sk+"|"+m)
	}
	return out, true
}

func endsWithLeaveOf(tl []string, user string) bool {
	return len(tl) > 0 && tl[len(tl)-1] == "m.room.member|"+user+"|leave"
}

// TestRejectedInviteIsInLeaveWithItsLeaveEvent: rejecting an invite to a
// room whose history is "joined" puts the room in rooms.leave with the
// user's own leave event (the visibility rules alone would hide it), in an
// incremental sync, in a full_state one, and on an initial sync with
// include_leave.
func TestRejectedInviteIsInLeaveWithItsLeaveEvent(t *testing.T) {
	ts := newTestServer(t)
	id := ts.createRoom(bobID, map[string]any{"initial_state": []map[string]any{
		{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}},
	}})
	since := ts.syncOnce(aliceID, "", 0, "")["next_batch"].(string)
	ts.must(bobID, "POST", "/_matrix/client/v3/rooms/"+id+"/invite", map[string]any{"user_id": aliceID})
	ts.send(bobID, id, "not for alice")
	ts.must(aliceID, "POST", "/_matrix/client/v3/rooms/"+id+"/leave", map[string]any{})
	includeLeave := "&filter=" + url.QueryEscape(`{"room":{"include_leave":true}}`)
	for name, extra := range map[string]string{"incremental": "", "full_state": "&full_state=true"} {
		tl, ok := leftTimeline(ts.syncOnce(aliceID, since, 0, extra), id)
		if !ok || !endsWithLeaveOf(tl, aliceID) {
			t.Fatalf("%s sync: in leave %v, timeline %v", name, ok, tl)
		}
		for _, e := range tl {
			if e == "m.room.message||" {
				t.Fatalf("%s sync shows a message alice may not see: %v", name, tl)
			}
		}
	}
	if tl, ok := leftTimeline(ts.syncOnce(aliceID, "", 0, includeLeave), id); !ok || !endsWithLeaveOf(tl, aliceID) {
		t.Fatalf("initial sync with include_leave: in leave %v, timeline %v", ok, tl)
	}
	// Without include_leave an initial sync has no archived rooms.
	if _, ok := leftTimeline(ts.syncOnce(aliceID, "", 0, ""), id); ok {
		t.Fatal("initial sync without include_leave lists the left room")
	}
	// Joined again: a full_state sync has it in join, not leave.
	ts.must(bobID, "PUT", "/_matrix/client/v3/rooms/"+id+"/state/m.room.join_rules/", map[string]any{"join_rule": "public"})
	ts.must(aliceID, "POST", "/_matrix/client/v3/rooms/"+id+"/join", map[string]any{})
	resp := ts.syncOnce(aliceID, since, 0, "&full_state=true")
	if _, ok := leftTimeline(resp, id); ok || path(resp, "rooms", "join", id) == nil {
		t.Fatalf("after the join: %v", path(resp, "rooms"))
	}
}

// TestForgottenRoomLeaveReachesIncrementalSync: a room left and forgotten
// since the token still shows its leave to an incremental sync (other
// devices must learn it), never on an initial sync, and not once the token
// is past the leave.
func TestForgottenRoomLeaveReachesIncrementalSync(t *testing.T) {
	ts := newTestServer(t)
	id := ts.createRoom(aliceID, map[string]any{"preset": "public_chat"})
	ts.must(bobID, "POST", "/_matrix/client/v3/rooms/"+id+"/join", map[string]any{})
	since := ts.syncOnce(aliceID, "", 0, "")["next_batch"].(string)
	ts.must(aliceID, "POST", "/_matrix/client/v3/rooms/"+id+"/leave", map[string]any{})
	ts.must(aliceID, "POST", "/_matrix/client/v3/rooms/"+id+"/forget", map[string]any{})
	ts.send(bobID, id, "after alice forgot")
	includeLeave := "&filter=" + url.QueryEscape(`{"room":{"include_leave":true}}`)
	resp := ts.syncOnce(aliceID, since, 0, includeLeave)
	if tl, ok := leftTimeline(resp, id); !ok || !endsWithLeaveOf(tl, aliceID) {
		t.Fatalf("incremental sync after forget: in leave %v, timeline %v", ok, tl)
	}
	next := resp["next_batch"].(string)
	if _, ok := leftTimeline(ts.syncOnce(aliceID, next, 0, includeLeave), id); ok {
		t.Fatal("the forgotten room's leave came twice")
	}
	for _, extra := range []string{includeLeave, includeLeave + "&full_state=true"} {
		if _, ok := leftTimeline(ts.syncOnce(aliceID, "", 0, extra), id); ok {
			t.Fatalf("initial sync (%s) lists the forgotten room", extra)
		}
	}
}

// TestUnsignedMembership: every timeline event carries the viewer's
// membership at it, its own change included (spec v1.11, MSC4115): "leave"
// before Bob ever joined, "join" from his join on; /messages says the same.
func TestUnsignedMembership(t *testing.T) {
	ts := newTestServer(t)
	id := ts.createRoom(aliceID, map[string]any{"preset": "public_chat"})
	before := ts.send(aliceID, id, "before bob")
	ts.must(bobID, "POST", "/_matrix/client/v3/rooms/"+id+"/join", map[string]any{})
	after := ts.send(aliceID, id, "after bob")
	check := func(where string, evs []any) {
		t.Helper()
		seen := map[string]string{}
		joined := false
		for _, ev := range evs {
			e := ev.(map[string]any)
			if e["type"] == "m.room.member" && e["state_key"] == bobID {
				joined = true
			}
			want := "leave"
			if joined {
				want = "join"
			}
			got, _ := path(e, "unsigned", "membership").(string)
			if got != want {
				t.Fatalf("%s: %s %v has membership %q, want %q", where, e["type"], e["event_id"], got, want)
			}
			seen[e["event_id"].(string)] = got
		}
		if seen[before] != "leave" || seen[after] != "join" {
			t.Fatalf("%s: before %q, after %q", where, seen[before], seen[after])
		}
	}
	resp := ts.syncOnce(bobID, "", 0, "&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`))
	check("sync", path(resp, "rooms", "join", id, "timeline", "events").([]any))
	page := ts.must(bobID, "GET", "/_matrix/client/v3/rooms/"+id+"/messages?dir=f&limit=50", nil)
	check("messages", page["chunk"].([]any))
	// Alice's own message keeps its transaction ID beside her membership.
	mine := path(ts.syncOnce(aliceID, "", 0, ""), "rooms", "join", id, "timeline", "events").([]any)
	last := mine[len(mine)-1].(map[string]any)
	if path(last, "unsigned", "membership") != "join" || path(last, "unsigned", "transaction_id") == nil {
		t.Fatalf("alice's own event: unsigned %v", last["unsigned"])
	}
}

// TestPresenceOfNewlySharedUsers: an incremental sync carries the presence
// of users who began to share a room with the user since the token — the
// members of a room the user joined, a member who joined theirs — though
// it did not change; the next sync does not repeat it.
func TestPresenceOfNewlySharedUsers(t *testing.T) {
	ts := newTestServer(t)
	const carolID = "@carol:test"
	room := ts.createRoom(aliceID, map[string]any{"preset": "public_chat"})
	ts.syncOnce(aliceID, "", 0, "") // alice is online
	bobSince := ts.syncOnce(bobID, "", 0, "")["next_batch"].(string)
	aliceSince := ts.syncOnce(aliceID, "", 0, "")["next_batch"].(string)
	ts.must(bobID, "POST", "/_matrix/client/v3/rooms/"+room+"/join", map[string]any{})
	// Bob joined: he learns Alice's presence, and Alice learns his.
	resp := ts.syncOnce(bobID, bobSince, 0, "")
	if p := presenceIn(resp); p[aliceID] == nil || p[aliceID]["presence"] != "online" {
		t.Fatalf("bob's incremental sync after joining: presence %v", resp["presence"])
	}
	if p := presenceIn(ts.syncOnce(bobID, resp["next_batch"].(string), 0, "")); p[aliceID] != nil {
		t.Fatalf("alice's presence came twice: %v", p)
	}
	aliceResp := ts.syncOnce(aliceID, aliceSince, 0, "")
	if p := presenceIn(aliceResp); p[bobID] == nil {
		t.Fatalf("alice's incremental sync after bob joined: presence %v", aliceResp["presence"])
	}
	// Carol shares no room: nothing of her, nor of her to them.
	ts.syncOnce(carolID, "", 0, "")
	if p := presenceIn(ts.syncOnce(aliceID, aliceSince, 0, "")); p[carolID] != nil {
		t.Fatalf("alice saw carol's presence: %v", p)
	}
}
