package rooms_test

import (
	"net/url"
	"regexp"
	"testing"

	"github.com/chatalot/chatalot/rooms"

	"github.com/chatalot/chatalot/spec"
)

// eventIDForm is the event ID each room version mints: $opaque:server in
// v1/v2, the reference hash in standard base64 in v3, URL-safe from v4.
func eventIDForm(v spec.RoomVersion) *regexp.Regexp {
	switch {
	case v.EventIDInEvent():
		return regexp.MustCompile(`^\$[A-Za-z0-9_-]{24}:test$`)
	case !v.URLSafeEventIDs():
		return regexp.MustCompile(`^\$[A-Za-z0-9+/]{43}$`)
	}
	return regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)
}

// TestEveryRoomVersionEndToEnd creates a room of each stable version,
// joins, sends, reads and redacts in it, through HTTP.
func TestEveryRoomVersionEndToEnd(t *testing.T) {
	ts := newTestServer(t, "optional")
	for _, v := range spec.SupportedRoomVersions {
		t.Run("v"+string(v), func(t *testing.T) {
			id := ts.CreateRoom(userA, map[string]any{"room_version": string(v), "preset": "public_chat"})
			create := ts.must(userA, "GET", v3+id+"/state/m.room.create/", nil)
			if create["room_version"] != string(v) || (create["creator"] != nil) == v.AtLeast11() {
				t.Fatalf("create content %v", create)
			}
			ts.join(userB, id)
			msg := ts.send(userB, id, map[string]any{"msgtype": "m.text", "body": "hello"})
			if !eventIDForm(v).MatchString(msg) {
				t.Fatalf("event ID %q is not of the v%s form", msg, v)
			}
			ev := ts.must(userA, "GET", v3+id+"/event/"+url.PathEscape(msg), nil)
			if ev["event_id"] != msg || path(ev, "content", "body") != "hello" || ev["room_id"] != id {
				t.Fatalf("event %v", ev)
			}
			// The room creator (100 before v12, unlimited in v12) redacts
			// Bob's message; the redacted content is empty in every version.
			ts.must(userA, "PUT", v3+id+"/redact/"+url.PathEscape(msg)+"/r"+string(v), map[string]any{"reason": "test"})
			ev = ts.must(userA, "GET", v3+id+"/event/"+url.PathEscape(msg), nil)
			if c, _ := ev["content"].(map[string]any); len(c) != 0 {
				t.Fatalf("redacted content %v", ev["content"])
			}
			// Power levels set by a client in the room's own terms.
			pl := ts.must(userA, "GET", v3+id+"/state/m.room.power_levels/", nil)
			pl["kick"] = 40
			ts.putState(userA, id, spec.MRoomPowerLevels, "", pl)
		})
	}
	code, body := ts.do(userA, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "13"})
	wantError(t, code, body, 400, "M_UNSUPPORTED_ROOM_VERSION")
}

// TestStringPowerLevelsBeforeV10 shows levels written as strings, which
// rooms before version 10 accept, counted as the integers they hold, and
// refused from version 10.
func TestStringPowerLevelsBeforeV10(t *testing.T) {
	ts := newTestServer(t, "optional")
	for _, v := range []spec.RoomVersion{spec.RoomV9, spec.RoomV10} {
		id := ts.CreateRoom(userA, map[string]any{"room_version": string(v), "preset": "public_chat"})
		ts.join(userB, id)
		pl := ts.must(userA, "GET", v3+id+"/state/m.room.power_levels/", nil)
		pl["events_default"] = " 60"
		code, body := ts.do(userA, "PUT", v3+id+"/state/m.room.power_levels/", pl)
		if v.IntegerPowerLevels() {
			wantError(t, code, body, 403, "M_FORBIDDEN")
			continue
		}
		if code != 200 {
			t.Fatalf("v%s: %d %v", v, code, body)
		}
		code, body = ts.do(userB, "PUT", v3+id+"/send/m.room.message/s1", map[string]any{"body": "below 60"})
		wantError(t, code, body, 403, "M_FORBIDDEN")
	}
}

// TestKnockAndRestrictedJoinPerVersion: knocking exists from v7, restricted
// joins from v8 (the server signs join_authorised_via_users_server itself),
// knock_restricted from v10.
func TestKnockAndRestrictedJoinPerVersion(t *testing.T) {
	ts := newTestServer(t, "optional")
	for _, v := range []spec.RoomVersion{spec.RoomV6, spec.RoomV7} {
		id := ts.CreateRoom(userA, map[string]any{"room_version": string(v), "preset": "private_chat",
			"initial_state": []map[string]any{{"type": spec.MRoomJoinRules, "content": map[string]any{"join_rule": "knock"}}}})
		code, body := ts.do(userB, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(id), map[string]any{})
		if v.Knocking() {
			if code != 200 || ts.s.Membership(userB, roomID(id)) != spec.Knock {
				t.Fatalf("v%s knock: %d %v", v, code, body)
			}
		} else {
			wantError(t, code, body, 403, "M_FORBIDDEN")
		}
	}

	space := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	for _, tc := range []struct {
		v    spec.RoomVersion
		rule string
		ok   bool
	}{
		{spec.RoomV7, "restricted", false},
		{spec.RoomV8, "restricted", true},
		{spec.RoomV9, "knock_restricted", false},
		{spec.RoomV10, "knock_restricted", true},
	} {
		id := ts.CreateRoom(userA, map[string]any{"room_version": string(tc.v), "preset": "private_chat",
			"initial_state": []map[string]any{{"type": spec.MRoomJoinRules, "content": map[string]any{
				"join_rule": tc.rule, "allow": []map[string]any{{"type": "m.room_membership", "room_id": space}}}}}})
		code, body := ts.do(userC, "POST", v3+id+"/join", map[string]any{})
		wantError(t, code, body, 403, "M_FORBIDDEN") // not in the space yet
		ts.join(userC, space)
		code, body = ts.do(userC, "POST", v3+id+"/join", map[string]any{})
		if !tc.ok {
			wantError(t, code, body, 403, "M_FORBIDDEN")
			ts.must(userC, "POST", v3+space+"/leave", map[string]any{})
			continue
		}
		if code != 200 {
			t.Fatalf("v%s %s join: %d %v", tc.v, tc.rule, code, body)
		}
		member := ts.must(userC, "GET", v3+id+"/state/m.room.member/"+userC, nil)
		if member["join_authorised_via_users_server"] != userA {
			t.Fatalf("v%s join not authorised via the creator: %v", tc.v, member)
		}
		ts.must(userC, "POST", v3+space+"/leave", map[string]any{})
	}
}

// TestUpgradeThroughEveryVersion upgrades a room from version 1 to 12, one
// version at a time, and back to 1: state and members come along, and
// levels written as strings become integers from v10.
func TestUpgradeThroughEveryVersion(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"room_version": "1", "preset": "private_chat", "name": "Old", "invite": []string{userB}})
	ts.join(userB, id)
	pl := ts.must(userA, "GET", v3+id+"/state/m.room.power_levels/", nil)
	pl["kick"] = "060"
	ts.putState(userA, id, spec.MRoomPowerLevels, "", pl)
	for _, v := range append(spec.SupportedRoomVersions[1:], spec.RoomV1) {
		old := id
		id = ts.must(userA, "POST", v3+old+"/upgrade", map[string]any{"new_version": string(v)})["replacement_room"].(string)
		create := ts.must(userA, "GET", v3+id+"/state/m.room.create/", nil)
		if create["room_version"] != string(v) || path(create, "predecessor", "room_id") != old {
			t.Fatalf("v%s create %v", v, create)
		}
		// predecessor.event_id is deprecated: v12 rooms leave it out.
		if hasEventID := path(create, "predecessor", "event_id") != nil; hasEventID == v.AtLeast12() {
			t.Fatalf("v%s predecessor %v", v, create["predecessor"])
		}
		if ts.must(userA, "GET", v3+id+"/state/m.room.name/", nil)["name"] != "Old" {
			t.Fatalf("v%s: name not copied", v)
		}
		kick := ts.must(userA, "GET", v3+id+"/state/m.room.power_levels/", nil)["kick"]
		if v.IntegerPowerLevels() && kick != float64(60) || !v.IntegerPowerLevels() && kick != "060" && kick != float64(60) {
			t.Fatalf("v%s kick level %#v", v, kick)
		}
		if ts.s.Membership(userB, roomID(id)) != spec.Invite {
			t.Fatalf("v%s: Bob not invited", v)
		}
		ts.join(userB, id)
		ts.send(userB, id, map[string]any{"body": "still here"})
	}
}

// TestRoomVersion12ValidationIsBadRequest: what MSC4289 and MSC4291 forbid
// is answered as a malformed request, not a missing permission.
func TestRoomVersion12ValidationIsBadRequest(t *testing.T) {
	ts := newTestServer(t, "optional")
	for _, ac := range []any{"not-an-array", []any{"@foo:test", 42}, []any{"not-a-user-id"}, []any{"@invalid:dom$ain$.com"}} {
		code, body := ts.do(userA, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "12",
			"creation_content": map[string]any{"additional_creators": ac}})
		wantError(t, code, body, 400, "M_BAD_JSON")
	}
	ts.CreateRoom(userA, map[string]any{"room_version": "12", "creation_content": map[string]any{"additional_creators": []any{"@foo:example.com"}}})
	// Before v12 additional_creators means nothing.
	ts.CreateRoom(userA, map[string]any{"room_version": "11", "creation_content": map[string]any{"additional_creators": "x"}})

	code, body := ts.do(userA, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "12",
		"power_level_content_override": map[string]any{"users": map[string]any{userA: 100}}})
	wantError(t, code, body, 400, "M_INVALID_ROOM_STATE")
	code, body = ts.do(userA, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "10",
		"power_level_content_override": map[string]any{"events": map[string]any{spec.MRoomName: 101}}, "name": "n"})
	wantError(t, code, body, 400, "M_INVALID_ROOM_STATE")

	for _, v := range []string{"11", "12"} {
		id := ts.CreateRoom(userA, map[string]any{"room_version": v, "creation_content": map[string]any{"additional_creators": []string{userB}}})
		code, body = ts.do(userA, "PUT", v3+id+"/state/m.room.create/", map[string]any{"room_version": v, "entropy": 1})
		wantError(t, code, body, 400, "M_BAD_JSON")
		for _, listed := range []string{userA, userB} {
			code, body = ts.do(userA, "PUT", v3+id+"/state/m.room.power_levels/", map[string]any{"users": map[string]any{listed: 100}})
			switch {
			case v == "12":
				wantError(t, code, body, 400, "M_BAD_JSON")
			case code != 200:
				t.Fatalf("v11 power levels listing %s: %d %v", listed, code, body)
			}
		}
	}
}

// TestDefaultRoomVersionSetting: rooms created without a version get the
// configured one.
func TestDefaultRoomVersionSetting(t *testing.T) {
	ts := newTestServerWith(t, rooms.Config{Encryption: "optional", DefaultRoomVersion: spec.RoomV10})
	id := ts.CreateRoom(userA, nil)
	if v := ts.must(userA, "GET", v3+id+"/state/m.room.create/", nil)["room_version"]; v != "10" {
		t.Fatalf("default room version %v", v)
	}
	// The creator is in power_levels.users, as v10 wants.
	if path(ts.must(userA, "GET", v3+id+"/state/m.room.power_levels/", nil), "users", userA) != float64(100) {
		t.Fatal("creator not listed at 100")
	}
}
