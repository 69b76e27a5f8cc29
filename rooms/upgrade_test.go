package rooms_test

import (
	"testing"

	"github.com/chatalot/chatalot/rooms"
)

const userD = "@dave:test"

func TestUpgradePrivateRoom(t *testing.T) {
	ts := newTestServer(t, "optional")
	old := ts.CreateRoom(userA, map[string]any{"room_version": "10", "preset": "private_chat", "name": "Team", "topic": "plans",
		"room_alias_name": "team", "invite": []string{userB, userC, userD}})
	ts.join(userB, old)
	ts.join(userD, old)
	ts.must(userA, "POST", v3+old+"/ban", map[string]any{"user_id": userD})
	ts.must(userA, "PUT", "/_matrix/client/v3/directory/list/room/"+old, map[string]any{"visibility": "public"})
	ts.putState(userA, old, "m.space.parent", "!space:test", map[string]any{"via": []string{"test"}})

	for _, c := range []struct {
		user   string
		body   any
		status int
		code   string
	}{
		{userB, map[string]any{"new_version": "12"}, 403, "M_FORBIDDEN"}, // power 0
		{userC, map[string]any{"new_version": "12"}, 403, "M_FORBIDDEN"}, // only invited
		{userA, map[string]any{"new_version": "13"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{userA, map[string]any{}, 400, "M_MISSING_PARAM"},
		{userA, map[string]any{"new_version": 12}, 400, "M_BAD_JSON"},
		{userA, map[string]any{"new_version": "12", "additional_creators": []string{"bob"}}, 400, "M_INVALID_PARAM"},
	} {
		code, body := ts.do(c.user, "POST", v3+old+"/upgrade", c.body)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("%s %v: %d %v, want %d %s", c.user, c.body, code, body, c.status, c.code)
		}
	}
	code, body := ts.do(userA, "POST", v3+"!unknown:test/upgrade", map[string]any{"new_version": "12"})
	wantError(t, code, body, 403, "M_FORBIDDEN")

	res := ts.must(userA, "POST", v3+old+"/upgrade", map[string]any{"new_version": "12"})
	neu, _ := res["replacement_room"].(string)
	if neu == "" || neu == old {
		t.Fatalf("replacement_room: %v", res)
	}

	// The old room: tombstone, restricted power levels.
	tomb := ts.must(userB, "GET", v3+old+"/state/m.room.tombstone/", nil)
	if tomb["replacement_room"] != neu || tomb["body"] == nil {
		t.Fatalf("tombstone: %v", tomb)
	}
	pl := ts.must(userB, "GET", v3+old+"/state/m.room.power_levels/", nil)
	if pl["events_default"].(float64) < 50 || pl["invite"].(float64) < 50 {
		t.Fatalf("old power levels not restricted: %v", pl)
	}
	code, body = ts.do(userB, "PUT", v3+old+"/send/m.room.message/late", map[string]any{"body": "hello?"})
	wantError(t, code, body, 403, "M_FORBIDDEN")

	// The new room: predecessor, copied state, moved alias and directory
	// entry, members invited, the ban kept.
	create := ts.must(userA, "GET", v3+neu+"/state/m.room.create/", nil)
	if create["room_version"] != "12" || path(create, "predecessor", "room_id") != old {
		t.Fatalf("create: %v", create)
	}
	if ts.must(userA, "GET", v3+neu+"/state/m.room.name/", nil)["name"] != "Team" ||
		ts.must(userA, "GET", v3+neu+"/state/m.room.topic/", nil)["topic"] != "plans" {
		t.Fatalf("name or topic not copied")
	}
	if ts.must(userA, "GET", v3+neu+"/state/m.room.join_rules/", nil)["join_rule"] != "invite" {
		t.Fatalf("join rule not copied")
	}
	if ts.must(userA, "GET", v3+neu+"/state/m.space.parent/!space:test", nil)["via"] == nil {
		t.Fatalf("space parent not copied")
	}
	if ts.must("", "GET", dir3+esc("#team:test"), nil)["room_id"] != neu {
		t.Fatalf("alias did not move")
	}
	if ts.must(userA, "GET", v3+neu+"/state/m.room.canonical_alias/", nil)["alias"] != "#team:test" {
		t.Fatalf("canonical alias not copied")
	}
	if _, has := ts.must(userA, "GET", v3+old+"/state/m.room.canonical_alias/", nil)["alias"]; has {
		t.Fatalf("the old room still claims the alias")
	}
	if ts.must("", "GET", "/_matrix/client/v3/directory/list/room/"+neu, nil)["visibility"] != "public" ||
		ts.must("", "GET", "/_matrix/client/v3/directory/list/room/"+old, nil)["visibility"] != "private" {
		t.Fatalf("directory entry did not move")
	}
	newPL := ts.must(userA, "GET", v3+neu+"/state/m.room.power_levels/", nil)
	if _, listed := path(newPL, "users").(map[string]any)[userA]; listed {
		t.Fatalf("a v12 creator is listed in users: %v", newPL)
	}
	if ts.s.Membership(userB, roomID(neu)) != "invite" || ts.s.Membership(userC, roomID(neu)) != "invite" || ts.s.Membership(userD, roomID(neu)) != "ban" {
		t.Fatalf("memberships in the new room: bob %s carol %s dave %s", ts.s.Membership(userB, roomID(neu)), ts.s.Membership(userC, roomID(neu)), ts.s.Membership(userD, roomID(neu)))
	}
	ts.join(userB, neu)
	ts.send(userB, neu, map[string]any{"body": "moved"})
	code, body = ts.do(userD, "POST", v3+neu+"/join", map[string]any{})
	wantError(t, code, body, 403, "M_FORBIDDEN")
}

func TestUpgradePublicRoomAndSpaces(t *testing.T) {
	ts := newTestServer(t, "optional")
	old := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "room_version": "12", "creation_content": map[string]any{"type": "m.space"}})
	ts.join(userB, old)
	child := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.putState(userA, old, "m.space.child", child, map[string]any{"via": []string{"test"}})
	// Into an older version: the creator, unlimited in v12, is listed at
	// the highest level the room uses (150, for m.room.tombstone); the type and space children come along; public rooms need no
	// invites.
	neu := ts.must(userA, "POST", v3+old+"/upgrade", map[string]any{"new_version": "11"})["replacement_room"].(string)
	create := ts.must(userA, "GET", v3+neu+"/state/m.room.create/", nil)
	if create["type"] != "m.space" || create["room_version"] != "11" || path(create, "predecessor", "event_id") == nil {
		t.Fatalf("create: %v", create)
	}
	if path(ts.must(userA, "GET", v3+neu+"/state/m.room.power_levels/", nil), "users", userA) != float64(150) {
		t.Fatalf("creator level not carried over")
	}
	if ts.must(userA, "GET", v3+neu+"/state/m.space.child/"+child, nil)["via"] == nil {
		t.Fatalf("space child not copied")
	}
	if ts.s.Membership(userB, roomID(neu)) != "" {
		t.Fatalf("Bob was invited to a public room")
	}
	ts.join(userB, neu)
	// Additional creators into v12.
	again := ts.must(userA, "POST", v3+neu+"/upgrade", map[string]any{"new_version": "12", "additional_creators": []string{userB}})["replacement_room"].(string)
	if c := ts.must(userA, "GET", v3+again+"/state/m.room.create/", nil); len(c["additional_creators"].([]any)) != 1 {
		t.Fatalf("additional creators: %v", c)
	}
}

func TestUpgradeByAModerator(t *testing.T) {
	ts := newTestServer(t, "optional")
	old := ts.CreateRoom(userA, map[string]any{"room_version": "10", "preset": "public_chat", "name": "n",
		"power_level_content_override": map[string]any{
			"users":  map[string]any{userA: 100, userB: 50},
			"events": map[string]any{"m.room.tombstone": 50, "m.room.power_levels": 100, "m.room.name": 50},
		}})
	ts.join(userB, old)
	// Bob (50) may send the tombstone, not power levels: the new room's
	// state is sent with a raised level that the last event takes back,
	// and the old room's power levels stay as they were.
	neu := ts.must(userB, "POST", v3+old+"/upgrade", map[string]any{"new_version": "11"})["replacement_room"].(string)
	pl := ts.must(userB, "GET", v3+neu+"/state/m.room.power_levels/", nil)
	if path(pl, "users", userB) != float64(50) || path(pl, "users", userA) != float64(100) {
		t.Fatalf("new power levels: %v", pl)
	}
	if ts.must(userB, "GET", v3+neu+"/state/m.room.name/", nil)["name"] != "n" {
		t.Fatalf("name not copied")
	}
	if ts.must(userB, "GET", v3+old+"/state/m.room.power_levels/", nil)["events_default"] != float64(0) {
		t.Fatalf("Bob could not change the old power levels, yet they changed")
	}
	ts.must(userA, "GET", v3+old+"/state/m.room.tombstone/", nil)
}

func TestUpgradeFollowsTheEncryptionPolicy(t *testing.T) {
	ts := newTestServer(t, "default")
	old, _, err := ts.s.CreateRoom(t.Context(), userA, rooms.CreateRequest{Preset: "private_chat", Unencrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	code, _ := ts.do(userA, "GET", v3+string(old)+"/state/m.room.encryption/", nil)
	if code != 404 {
		t.Fatalf("the old room is encrypted")
	}
	neu := ts.must(userA, "POST", v3+string(old)+"/upgrade", map[string]any{"new_version": "12"})["replacement_room"].(string)
	if ts.must(userA, "GET", v3+neu+"/state/m.room.encryption/", nil)["algorithm"] != "m.megolm.v1.aes-sha2" {
		t.Fatalf("the replacement is not encrypted")
	}
}
