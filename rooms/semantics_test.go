package rooms_test

import (
	"testing"
)

// TestTxnIDScopeIsDeviceAndEndpoint: a transaction ID is scoped to one
// device and one endpoint (client-server API "Transaction identifiers"):
// the same ID in another room, or for another event type, is a new
// request; a retry on the same path is not, also after a restart.
func TestTxnIDScopeIsDeviceAndEndpoint(t *testing.T) {
	ts := newTestServer(t, "optional")
	a, b := ts.CreateRoom(userA, nil), ts.CreateRoom(userA, nil)
	put := func(who, room, typ, body string) string {
		return ts.must(who, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/"+typ+"/abc", map[string]any{"body": body})["event_id"].(string)
	}
	first := put(userA, a, "m.room.message", "first")
	if again := put(userA, a, "m.room.message", "changed"); again != first {
		t.Fatalf("a retry with other content sent %s, want %s", again, first)
	}
	inB := put(userA, b, "m.room.message", "first")
	otherType := put(userA, a, "org.example.custom", "first")
	otherDevice := put(userA+"|OTHER", a, "m.room.message", "first")
	seen := map[string]bool{first: true}
	for _, id := range []string{inB, otherType, otherDevice} {
		if seen[id] {
			t.Fatalf("distinct requests shared an event: %s, %s, %s, %s", first, inB, otherType, otherDevice)
		}
		seen[id] = true
	}
	// A redaction's transaction is scoped to its own path.
	red := ts.must(userA, "PUT", "/_matrix/client/v3/rooms/"+a+"/redact/"+esc(otherType)+"/abc", map[string]any{})["event_id"].(string)
	if seen[red] {
		t.Fatalf("the redaction reused event %s", red)
	}
	ts.restart()
	if again := put(userA, b, "m.room.message", "after restart"); again != inB {
		t.Fatalf("after a restart the retry in room b sent %s, want %s", again, inB)
	}
	if again := put(userA, a, "m.room.message", "after restart"); again != first {
		t.Fatalf("after a restart the retry in room a sent %s, want %s", again, first)
	}
	if again := ts.must(userA, "PUT", "/_matrix/client/v3/rooms/"+a+"/redact/"+esc(otherType)+"/abc", map[string]any{})["event_id"].(string); again != red {
		t.Fatalf("after a restart the redaction retry sent %s, want %s", again, red)
	}
}

// TestKickNeedsATargetInTheRoom: POST /kick of a user who never joined or
// already left is a 403 (client-server API: "the kickee is not currently in
// the room"), and sends nothing.
func TestKickNeedsATargetInTheRoom(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.join(userB, id)
	ts.must(userB, "POST", v3+id+"/leave", map[string]any{})
	before := len(ts.pageBack(userA, id))
	for _, who := range []string{userB, userC} {
		code, body := ts.do(userA, "POST", v3+id+"/kick", map[string]any{"user_id": who})
		wantError(t, code, body, 403, "M_FORBIDDEN")
	}
	if after := len(ts.pageBack(userA, id)); after != before {
		t.Fatalf("refused kicks stored events: %d events, want %d", after, before)
	}
	// An invited user can be kicked (the invite is withdrawn).
	ts.must(userA, "POST", v3+id+"/invite", map[string]any{"user_id": userC})
	ts.must(userA, "POST", v3+id+"/kick", map[string]any{"user_id": userC})
}

// TestJoinKeepsCustomContentAndIsIdempotent: the join body's extra keys
// land in the member event; joining again with the same content returns
// the same event and sends nothing; server keys cannot be forged.
func TestJoinKeepsCustomContentAndIsIdempotent(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	body := map[string]any{"foo": "bar", "reason": "hello", "membership": "leave", "join_authorised_via_users_server": userA}
	ts.must(userB, "POST", "/_matrix/client/v3/join/"+esc(id), body)
	ev := ts.must(userA, "GET", v3+id+"/state/m.room.member/"+esc(userB)+"?format=event", nil)
	c := ev["content"].(map[string]any)
	if c["foo"] != "bar" || c["membership"] != "join" || c["reason"] != "hello" || c["join_authorised_via_users_server"] != nil {
		t.Fatalf("member content %v", c)
	}
	before := len(ts.pageBack(userA, id))
	ts.must(userB, "POST", "/_matrix/client/v3/join/"+esc(id), body)
	again := ts.must(userA, "GET", v3+id+"/state/m.room.member/"+esc(userB)+"?format=event", nil)
	if again["event_id"] != ev["event_id"] || len(ts.pageBack(userA, id)) != before {
		t.Fatalf("a second identical join sent %v (first %v)", again["event_id"], ev["event_id"])
	}
	// Other content is a new member event (a profile change).
	ts.must(userB, "POST", v3+id+"/join", map[string]any{"foo": "baz"})
	if third := ts.must(userA, "GET", v3+id+"/state/m.room.member/"+esc(userB)+"?format=event", nil); third["event_id"] == ev["event_id"] {
		t.Fatal("a join with other content sent no event")
	}
	code, out := ts.do(userB, "POST", v3+id+"/join", map[string]any{"reason": 5})
	wantError(t, code, out, 400, "M_BAD_JSON")
}

// TestSettingTheSameStateTwiceIsIdempotent: PUT /state is idempotent (it
// has no transaction ID): the same sender setting the same content gets
// the current event back and the room gets no new event.
func TestSettingTheSameStateTwiceIsIdempotent(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	first := ts.putState(userA, id, "org.example.state", "", map[string]any{"a": "b"})
	before := len(ts.pageBack(userA, id))
	if again := ts.putState(userA, id, "org.example.state", "", map[string]any{"a": "b"}); again != first {
		t.Fatalf("the same state twice: %s then %s", first, again)
	}
	if n := len(ts.pageBack(userA, id)); n != before {
		t.Fatalf("%d events after the repeat, want %d", n, before)
	}
	if other := ts.putState(userA, id, "org.example.state", "", map[string]any{"a": "c"}); other == first {
		t.Fatal("new content gave the old event")
	}
}

// TestMemberStateEvents: PUT /state/m.room.member/{userId} is the
// membership change the event describes, within the auth rules and with
// the membership endpoints' checks: a per-room display name for oneself,
// invite, kick, ban and unban of others.
func TestMemberStateEvents(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "private_chat"})
	member := func(user string) map[string]any {
		return ts.must(userA, "GET", v3+id+"/state/m.room.member/"+esc(user), nil)
	}
	put := func(who, target string, content map[string]any) (int, map[string]any) {
		return ts.do(who, "PUT", v3+id+"/state/m.room.member/"+esc(target), content)
	}
	// Alice's per-room name.
	if code, out := put(userA, userA, map[string]any{"membership": "join", "displayname": "Alice here"}); code != 200 {
		t.Fatalf("per-room name: %d %v", code, out)
	}
	if m := member(userA); m["displayname"] != "Alice here" || m["membership"] != "join" {
		t.Fatalf("alice's member event %v", m)
	}
	// Bob cannot join an invite-only room by setting his own membership.
	code, out := put(userB, userB, map[string]any{"membership": "join"})
	wantError(t, code, out, 403, "M_FORBIDDEN")
	// Invite, then Bob joins with a room name of his own.
	if code, out := put(userA, userB, map[string]any{"membership": "invite"}); code != 200 {
		t.Fatalf("invite by state: %d %v", code, out)
	}
	if code, out := put(userB, userB, map[string]any{"membership": "join", "displayname": "B"}); code != 200 {
		t.Fatalf("join by state: %d %v", code, out)
	}
	if m := member(userB); m["displayname"] != "B" {
		t.Fatalf("bob's member event %v", m)
	}
	// Bob (power 0) cannot kick Alice; Alice kicks Bob, with a reason.
	code, out = put(userB, userA, map[string]any{"membership": "leave"})
	wantError(t, code, out, 403, "M_FORBIDDEN")
	if code, out := put(userA, userB, map[string]any{"membership": "leave", "reason": "bye"}); code != 200 {
		t.Fatalf("kick by state: %d %v", code, out)
	}
	if m := member(userB); m["membership"] != "leave" || m["reason"] != "bye" {
		t.Fatalf("bob after the kick %v", m)
	}
	// Kicking someone who is not in the room is refused, as on /kick.
	code, out = put(userA, userB, map[string]any{"membership": "leave"})
	wantError(t, code, out, 403, "M_FORBIDDEN")
	// Ban, then a leave by state is the unban.
	if code, out := put(userA, userC, map[string]any{"membership": "ban"}); code != 200 {
		t.Fatalf("ban by state: %d %v", code, out)
	}
	if code, out := put(userA, userC, map[string]any{"membership": "leave"}); code != 200 {
		t.Fatalf("unban by state: %d %v", code, out)
	}
	if m := member(userC); m["membership"] != "leave" {
		t.Fatalf("carol after the unban %v", m)
	}
	// Bad member events are 400s.
	for _, c := range []struct {
		key     string
		content map[string]any
		errcode string
	}{
		{userB, map[string]any{}, "M_BAD_JSON"},
		{userB, map[string]any{"membership": "party"}, "M_BAD_JSON"},
		{userB, map[string]any{"membership": 1}, "M_BAD_JSON"},
		{userB, map[string]any{"membership": "join", "reason": 2}, "M_BAD_JSON"},
		{"not-a-user", map[string]any{"membership": "join"}, "M_INVALID_PARAM"},
	} {
		code, out := put(userA, c.key, c.content)
		wantError(t, code, out, 400, c.errcode)
	}
}

// TestEventNotReadableIsNotFound: GET /event/{eventId} of an event the user
// may not read is 404 M_NOT_FOUND, in a room they never joined as in one
// that does not exist.
func TestEventNotReadableIsNotFound(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.putState(userA, id, "m.room.history_visibility", "", map[string]any{"history_visibility": "shared"})
	ev := ts.send(userA, id, map[string]any{"msgtype": "m.text", "body": "hi"})
	code, body := ts.do(userB, "GET", v3+id+"/event/"+esc(ev), nil)
	wantError(t, code, body, 404, "M_NOT_FOUND")
	code, body = ts.do(userB, "GET", v3+"!nosuchroom:test/event/"+esc(ev), nil)
	wantError(t, code, body, 404, "M_NOT_FOUND")
	ts.join(userB, id) // shared: members see the history
	ts.must(userB, "GET", v3+id+"/event/"+esc(ev), nil)
}

// TestMembersAtATokenBeforeTheRoom: /members?at= with a token from before
// the room's first event (a timeline's prev_batch that starts at the room's
// creation) gives the room as created, with its creator, and not members
// who joined later.
func TestMembersAtATokenBeforeTheRoom(t *testing.T) {
	ts := newTestServer(t, "optional")
	ts.CreateRoom(userC, nil) // other rooms' positions come first
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.join(userB, id)
	for _, at := range []string{"s0", "s1"} {
		chunk := ts.must(userA, "GET", v3+id+"/members?at="+at, nil)["chunk"].([]any)
		if len(chunk) != 1 || chunk[0].(map[string]any)["state_key"] != userA {
			t.Fatalf("members at %s: %v, want only the creator", at, chunk)
		}
	}
}

// TestJoinedMembersHaveBothProfileKeys: /joined_members gives display_name
// and avatar_url for every member, null when the member event has none.
func TestJoinedMembersHaveBothProfileKeys(t *testing.T) {
	ts := newTestServer(t, "optional")
	// No profile: the member events carry only what the test gives.
	ts.must(userA, "PUT", "/_matrix/client/v3/profile/"+userA+"/displayname", map[string]any{"displayname": ""})
	id := ts.CreateRoom(userA, nil)
	ts.putState(userA, id, "m.room.member", userA, map[string]any{"membership": "join", "displayname": "Alice", "avatar_url": "mxc://test/a"})
	code, raw := ts.do(userA, "GET", v3+id+"/joined_members", nil)
	got := raw["joined"].(map[string]any)[userA].(map[string]any)
	if code != 200 || got["display_name"] != "Alice" || got["avatar_url"] != "mxc://test/a" {
		t.Fatalf("joined_members %d %v", code, raw)
	}
	ts.putState(userA, id, "m.room.member", userA, map[string]any{"membership": "join"})
	got = ts.must(userA, "GET", v3+id+"/joined_members", nil)["joined"].(map[string]any)[userA].(map[string]any)
	for _, k := range []string{"display_name", "avatar_url"} {
		if v, ok := got[k]; !ok || v != nil {
			t.Fatalf("%s: %v (present %v), want null", k, v, ok)
		}
	}
}

// TestMessagesOfAForgottenRoom: once forgotten, a room's history is no
// longer the user's to read: /messages is 403 with or without parameters;
// in a room they may read, dir stays required (400).
func TestMessagesOfAForgottenRoom(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.join(userB, id)
	ts.send(userA, id, map[string]any{"msgtype": "m.text", "body": "hi"})
	code, body := ts.do(userB, "GET", v3+id+"/messages", nil)
	wantError(t, code, body, 400, "M_INVALID_PARAM")
	ts.must(userB, "POST", v3+id+"/leave", map[string]any{})
	ts.must(userB, "GET", v3+id+"/messages?dir=b", nil) // up to the leave
	ts.must(userB, "POST", v3+id+"/forget", map[string]any{})
	for _, q := range []string{"", "?dir=b"} {
		code, body := ts.do(userB, "GET", v3+id+"/messages"+q, nil)
		wantError(t, code, body, 403, "M_FORBIDDEN")
	}
	// Joining again makes the room readable again.
	ts.join(userB, id)
	ts.must(userB, "GET", v3+id+"/messages?dir=b", nil)
}

// TestSearchFullPageHasNextBatch: a page of search results as long as the
// limit has a next_batch, also when it holds the last hits; the page after
// the last is empty and has none (an absent next_batch means no more).
func TestSearchFullPageHasNextBatch(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, nil)
	for i := 0; i < 4; i++ {
		ts.send(userA, id, map[string]any{"msgtype": "m.text", "body": "Message number " + itoa(i)})
	}
	body := searchBody(map[string]any{"search_term": "Message", "order_by": "recent", "filter": map[string]any{"limit": 2}})
	next := ""
	for page := 1; page <= 3; page++ {
		q := ""
		if next != "" {
			q = "?next_batch=" + esc(next)
		}
		re := path(ts.must(userA, "POST", searchPath+q, body), "search_categories", "room_events").(map[string]any)
		n := len(re["results"].([]any))
		next, _ = re["next_batch"].(string)
		want := 2
		if page == 3 {
			want = 0
		}
		if n != want || re["count"] != float64(4) || (next == "") != (page == 3) {
			t.Fatalf("page %d: %d results, next_batch %q, count %v", page, n, next, re["count"])
		}
	}
}
