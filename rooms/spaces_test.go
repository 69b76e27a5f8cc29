package rooms_test

import (
	"testing"
)

func hierarchyRooms(res map[string]any) []string {
	var out []string
	for _, r := range res["rooms"].([]any) {
		out = append(out, path(r, "room_id").(string))
	}
	return out
}

func TestSpaceHierarchy(t *testing.T) {
	ts := newTestServer(t, "optional")
	ts.tickingClock()
	space := map[string]any{"type": "m.space"}
	top := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "Top", "creation_content": space})
	sub := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "Sub", "creation_content": space})
	lobby := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "Lobby"})
	secret := ts.CreateRoom(userA, map[string]any{"preset": "private_chat", "name": "Secret"})
	readable := ts.CreateRoom(userA, map[string]any{"preset": "private_chat", "name": "Readable"})
	ts.putState(userA, readable, "m.room.history_visibility", "", map[string]any{"history_visibility": "world_readable"})
	deep := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "Deep"})
	removed := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})

	child := func(parent, c string, content map[string]any) {
		if content == nil {
			content = map[string]any{}
		}
		if _, ok := content["via"]; !ok {
			content["via"] = []string{"test"}
		}
		ts.putState(userA, parent, "m.space.child", c, content)
	}
	// Order: sub ("a"), lobby ("b"), then by the child event's timestamp:
	// readable, secret.
	child(top, readable, map[string]any{"suggested": true})
	child(top, secret, nil)
	child(top, lobby, map[string]any{"order": "b"})
	child(top, sub, map[string]any{"order": "a", "suggested": true})
	child(top, removed, map[string]any{"via": []string{}})
	child(top, "!unknown:elsewhere.org", nil)
	child(sub, deep, nil)
	child(sub, top, nil) // a cycle

	h := v1 + top + "/hierarchy"
	res := ts.must(userB, "GET", h, nil)
	// Depth first, each room before its children; the cycle back to top
	// ends; secret (invite-only) is not shown to Bob; readable is.
	sameList(t, "Bob's hierarchy", hierarchyRooms(res), top, sub, deep, lobby, readable)
	first := res["rooms"].([]any)[0]
	if path(first, "name") != "Top" || path(first, "room_type") != "m.space" || path(first, "join_rule") != "public" ||
		path(first, "num_joined_members") != float64(1) || path(first, "room_version") != "12" {
		t.Fatalf("root summary: %v", first)
	}
	cs := path(first, "children_state").([]any)
	if len(cs) != 5 || path(cs[0], "type") != "m.space.child" || path(cs[0], "origin_server_ts") == nil || path(cs[0], "state_key") != sub {
		t.Fatalf("children_state: %v", cs)
	}
	if len(path(res["rooms"].([]any)[3], "children_state").([]any)) != 0 {
		t.Fatalf("a room that is not a space has children_state")
	}
	// Alice sees the invite-only room too.
	sameList(t, "Alice's hierarchy", hierarchyRooms(ts.must(userA, "GET", h, nil)), top, sub, deep, lobby, readable, secret)
	sameList(t, "max_depth 0", hierarchyRooms(ts.must(userB, "GET", h+"?max_depth=0", nil)), top)
	sameList(t, "max_depth 1", hierarchyRooms(ts.must(userB, "GET", h+"?max_depth=1", nil)), top, sub, lobby, readable)
	sameList(t, "suggested only", hierarchyRooms(ts.must(userB, "GET", h+"?suggested_only=true", nil)), top, sub, readable)

	// Pages.
	p1 := ts.must(userB, "GET", h+"?limit=2&max_depth=3", nil)
	sameList(t, "page 1", hierarchyRooms(p1), top, sub)
	next := p1["next_batch"].(string)
	p2 := ts.must(userB, "GET", h+"?limit=2&max_depth=3&from="+esc(next), nil)
	sameList(t, "page 2", hierarchyRooms(p2), deep, lobby)
	p3 := ts.must(userB, "GET", h+"?limit=2&max_depth=3&from="+esc(p2["next_batch"].(string)), nil)
	sameList(t, "page 3", hierarchyRooms(p3), readable)
	if _, more := p3["next_batch"]; more {
		t.Fatalf("next_batch on the last page")
	}

	for _, c := range []struct {
		user, path string
		status     int
		code       string
	}{
		{userB, h + "?limit=2&max_depth=2&from=" + esc(next), 400, "M_INVALID_PARAM"},                     // max_depth changed
		{userB, h + "?limit=2&max_depth=3&suggested_only=true&from=" + esc(next), 400, "M_INVALID_PARAM"}, // suggested_only changed
		{userB, v1 + sub + "/hierarchy?max_depth=3&from=" + esc(next), 400, "M_INVALID_PARAM"},            // another root
		{userB, h + "?from=s10", 400, "M_INVALID_PARAM"},
		{userB, h + "?from=h1.2", 400, "M_INVALID_PARAM"},
		{userB, h + "?limit=0", 400, "M_INVALID_PARAM"},
		{userB, h + "?max_depth=-1", 400, "M_INVALID_PARAM"},
		{userB, h + "?suggested_only=maybe", 400, "M_INVALID_PARAM"},
		{userB, v1 + secret + "/hierarchy", 403, "M_FORBIDDEN"},
		{userB, v1 + "!unknown:test/hierarchy", 403, "M_FORBIDDEN"},
		{userB, v1 + "unknown/hierarchy", 400, "M_INVALID_PARAM"},
	} {
		code, body := ts.do(c.user, "GET", c.path, nil)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("%s: %d %v, want %d %s", c.path, code, body, c.status, c.code)
		}
	}
}

func TestRoomSummary(t *testing.T) {
	ts := newTestServer(t, "optional")
	pub := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "Open", "room_alias_name": "open", "topic": "t"})
	priv := ts.CreateRoom(userA, map[string]any{"preset": "private_chat", "name": "Closed", "invite": []string{userB},
		"initial_state": []map[string]any{{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}})
	sum := "/_matrix/client/v1/room_summary/"

	anon := ts.must("", "GET", sum+esc("#open:test"), nil)
	if anon["room_id"] != pub || anon["name"] != "Open" || anon["topic"] != "t" || anon["room_version"] != "12" {
		t.Fatalf("anonymous summary: %v", anon)
	}
	if _, has := anon["membership"]; has {
		t.Fatalf("membership without a caller: %v", anon)
	}
	if ts.must(userC, "GET", sum+pub, nil)["membership"] != "leave" {
		t.Fatalf("a stranger's membership")
	}
	// The invited user sees the closed room; strangers and anonymous
	// callers get 404 as for an unknown room.
	inv := ts.must(userB, "GET", sum+priv, nil)
	if inv["membership"] != "invite" || inv["encryption"] != "m.megolm.v1.aes-sha2" || inv["join_rule"] != "invite" {
		t.Fatalf("invited summary: %v", inv)
	}
	for _, c := range []struct {
		user, id string
		status   int
		code     string
	}{
		{userC, priv, 404, "M_NOT_FOUND"},
		{"", priv, 404, "M_NOT_FOUND"},
		{"", "!unknown:test", 404, "M_NOT_FOUND"},
		{"", esc("#unknown:test"), 404, "M_NOT_FOUND"},
		{"", "nonsense", 400, "M_INVALID_PARAM"},
		{"", esc("#bad"), 400, "M_INVALID_PARAM"},
	} {
		code, body := ts.do(c.user, "GET", sum+c.id, nil)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("%s as %q: %d %v", c.id, c.user, code, body)
		}
	}
}
