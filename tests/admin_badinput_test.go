package tests

import (
	"testing"
)

// TestAdminBadInput: unknown users and rooms, malformed IDs and bodies,
// paging out of range: each gets its documented error, never a 500, and
// changes nothing.
func TestAdminBadInput(t *testing.T) {
	e := admStart(t)
	alice := e.register("alice")
	room := e.createRoom(alice, map[string]any{})
	e.admin("POST", e.s.URL+"/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "taken", "uses_allowed": 1}, 200)
	if c, out := e.registerWithToken("bob", "taken"); c != 200 && c != 401 && c != 403 {
		t.Fatalf("register: %d %v", c, out)
	}
	e.admin("POST", e.s.URL+"/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "used", "uses_allowed": 0}, 200)
	before := len(e.audit())

	cases := []struct {
		name, method, path string
		body               any
		status             int
		errcode            string
	}{
		// Users.
		{"malformed user ID", "GET", "/_synapse/admin/v2/users/alice", nil, 400, "M_INVALID_PARAM"},
		{"remote user", "GET", "/_synapse/admin/v2/users/@alice:elsewhere.example", nil, 400, "M_INVALID_PARAM"},
		{"unknown user", "GET", "/_synapse/admin/v2/users/@nobody:localhost", nil, 404, "M_NOT_FOUND"},
		{"negative from", "GET", "/_synapse/admin/v2/users?from=-1", nil, 400, "M_INVALID_PARAM"},
		{"limit not a number", "GET", "/_synapse/admin/v2/users?limit=ten", nil, 400, "M_INVALID_PARAM"},
		{"unknown order_by", "GET", "/_synapse/admin/v2/users?order_by=shoe_size", nil, 400, "M_INVALID_PARAM"},
		{"bad dir", "GET", "/_synapse/admin/v2/users?dir=sideways", nil, 400, "M_INVALID_PARAM"},
		{"bad bool", "GET", "/_synapse/admin/v2/users?deactivated=maybe", nil, 400, "M_INVALID_PARAM"},
		{"body not JSON", "PUT", "/_synapse/admin/v2/users/@new:localhost", "{not json", 400, "M_NOT_JSON"},
		{"body an array", "PUT", "/_synapse/admin/v2/users/@new:localhost", "[]", 400, "M_BAD_JSON"},
		{"admin not a boolean", "PUT", "/_synapse/admin/v2/users/@new:localhost", map[string]any{"admin": "yes"}, 400, "M_BAD_JSON"},
		{"weak password", "PUT", "/_synapse/admin/v2/users/@new:localhost", map[string]any{"password": "short"}, 400, "M_WEAK_PASSWORD"},
		{"threepids", "PUT", "/_synapse/admin/v2/users/@new:localhost", map[string]any{"threepids": []any{map[string]any{"medium": "email", "address": "a@example.org"}}}, 400, "M_INVALID_PARAM"},
		{"avatar not mxc", "PUT", "/_synapse/admin/v2/users/@new:localhost", map[string]any{"avatar_url": "https://example.org/a.png"}, 400, "M_INVALID_PARAM"},
		{"upper-case new user", "PUT", "/_synapse/admin/v2/users/@New:localhost", map[string]any{}, 400, "M_INVALID_USERNAME"},
		{"the server-notices account", "PUT", "/_synapse/admin/v2/users/@server:localhost", map[string]any{"password": admPassword}, 400, "M_USER_IN_USE"},
		{"a reserved name", "PUT", "/_synapse/admin/v2/users/@support:localhost", map[string]any{"password": admPassword}, 400, "M_USER_IN_USE"},
		{"demote yourself", "PUT", "/_synapse/admin/v1/users/@boss:localhost/admin", map[string]any{"admin": false}, 400, "M_INVALID_PARAM"},
		{"admin flag missing", "PUT", "/_synapse/admin/v1/users/@alice:localhost/admin", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"admin flag of unknown user", "GET", "/_synapse/admin/v1/users/@nobody:localhost/admin", nil, 404, "M_NOT_FOUND"},
		{"reset without password", "POST", "/_synapse/admin/v1/reset_password/@alice:localhost", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"reset with weak password", "POST", "/_synapse/admin/v1/reset_password/@alice:localhost", map[string]any{"new_password": "x"}, 400, "M_WEAK_PASSWORD"},
		{"reset unknown user", "POST", "/_synapse/admin/v1/reset_password/@nobody:localhost", map[string]any{"new_password": "long enough password"}, 404, "M_NOT_FOUND"},
		{"deactivate unknown user", "POST", "/_synapse/admin/v1/deactivate/@nobody:localhost", map[string]any{}, 404, "M_NOT_FOUND"},
		{"erase not a boolean", "POST", "/_synapse/admin/v1/deactivate/@alice:localhost", map[string]any{"erase": "yes"}, 400, "M_BAD_JSON"},
		{"deactivate yourself", "POST", "/_synapse/admin/v1/deactivate/@boss:localhost", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"unknown device", "GET", "/_synapse/admin/v2/users/@alice:localhost/devices/NOPE", nil, 404, "M_NOT_FOUND"},
		{"delete_devices without list", "POST", "/_synapse/admin/v2/users/@alice:localhost/delete_devices", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"whois unknown user", "GET", "/_synapse/admin/v1/whois/@nobody:localhost", nil, 404, "M_NOT_FOUND"},
		{"joined rooms of unknown user", "GET", "/_synapse/admin/v1/users/@nobody:localhost/joined_rooms", nil, 404, "M_NOT_FOUND"},
		{"media of unknown user", "GET", "/_synapse/admin/v1/users/@nobody:localhost/media", nil, 404, "M_NOT_FOUND"},
		{"media order_by", "GET", "/_synapse/admin/v1/users/@alice:localhost/media?order_by=colour", nil, 400, "M_INVALID_PARAM"},
		{"suspend without flag", "PUT", "/_synapse/admin/v1/suspend/@alice:localhost", map[string]any{}, 400, "M_MISSING_PARAM"},
		// Account moderation (client-server API).
		{"lock yourself", "PUT", "/_matrix/client/v1/admin/lock/@boss:localhost", map[string]any{"locked": true}, 403, "M_FORBIDDEN"},
		{"lock remote user", "PUT", "/_matrix/client/v1/admin/lock/@x:elsewhere.example", map[string]any{"locked": true}, 400, "M_INVALID_PARAM"},
		{"lock unknown user", "GET", "/_matrix/client/v1/admin/lock/@nobody:localhost", nil, 404, "M_NOT_FOUND"},
		{"lock without flag", "PUT", "/_matrix/client/v1/admin/lock/@alice:localhost", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"suspend not a boolean", "PUT", "/_matrix/client/v1/admin/suspend/@alice:localhost", map[string]any{"suspended": 1}, 400, "M_BAD_JSON"},
		// Invite codes.
		{"token grammar", "POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "no spaces!"}, 400, "M_INVALID_PARAM"},
		{"negative uses", "POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"uses_allowed": -1}, 400, "M_INVALID_PARAM"},
		{"uses not a number", "POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"uses_allowed": "five"}, 400, "M_BAD_JSON"},
		{"expiry in the past", "POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"expiry_time": 1}, 400, "M_INVALID_PARAM"},
		{"length too long", "POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"length": 65}, 400, "M_INVALID_PARAM"},
		{"token exists", "POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "taken"}, 400, "M_INVALID_PARAM"},
		{"unknown token", "GET", "/_synapse/admin/v1/registration_tokens/nope", nil, 404, "M_NOT_FOUND"},
		{"update unknown token", "PUT", "/_synapse/admin/v1/registration_tokens/nope", map[string]any{"uses_allowed": 1}, 404, "M_NOT_FOUND"},
		{"update negative uses", "PUT", "/_synapse/admin/v1/registration_tokens/taken", map[string]any{"uses_allowed": -3}, 400, "M_INVALID_PARAM"},
		{"update uses not a number", "PUT", "/_synapse/admin/v1/registration_tokens/taken", map[string]any{"uses_allowed": "x"}, 400, "M_INVALID_PARAM"},
		{"update expiry in the past", "PUT", "/_synapse/admin/v1/registration_tokens/taken", map[string]any{"expiry_time": 5}, 400, "M_INVALID_PARAM"},
		{"delete unknown token", "DELETE", "/_synapse/admin/v1/registration_tokens/nope", nil, 404, "M_NOT_FOUND"},
		{"valid not a boolean", "GET", "/_synapse/admin/v1/registration_tokens?valid=yes", nil, 400, "M_INVALID_PARAM"},
		// Rooms.
		{"malformed room ID", "GET", "/_synapse/admin/v1/rooms/lobby", nil, 400, "M_INVALID_PARAM"},
		{"unknown room", "GET", "/_synapse/admin/v1/rooms/!unknown:localhost", nil, 404, "M_NOT_FOUND"},
		{"members of unknown room", "GET", "/_synapse/admin/v1/rooms/!unknown:localhost/members", nil, 404, "M_NOT_FOUND"},
		{"state of unknown room", "GET", "/_synapse/admin/v1/rooms/!unknown:localhost/state", nil, 404, "M_NOT_FOUND"},
		{"rooms order_by", "GET", "/_synapse/admin/v1/rooms?order_by=colour", nil, 400, "M_INVALID_PARAM"},
		{"rooms negative limit", "GET", "/_synapse/admin/v1/rooms?limit=-5", nil, 400, "M_INVALID_PARAM"},
		{"block without flag", "PUT", "/_synapse/admin/v1/rooms/" + room + "/block", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"block not a boolean", "PUT", "/_synapse/admin/v1/rooms/" + room + "/block", map[string]any{"block": "yes"}, 400, "M_BAD_JSON"},
		{"block malformed room", "GET", "/_synapse/admin/v1/rooms/lobby/block", nil, 400, "M_INVALID_PARAM"},
		{"delete unknown room (v2)", "DELETE", "/_synapse/admin/v2/rooms/!unknown:localhost", map[string]any{}, 404, "M_NOT_FOUND"},
		{"delete unknown room without block (v1)", "DELETE", "/_synapse/admin/v1/rooms/!unknown:localhost", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"delete with a remote new_room_user_id", "DELETE", "/_synapse/admin/v2/rooms/" + room, map[string]any{"new_room_user_id": "@x:elsewhere.example"}, 400, "M_INVALID_PARAM"},
		{"delete with an unknown new_room_user_id", "DELETE", "/_synapse/admin/v2/rooms/" + room, map[string]any{"new_room_user_id": "@nobody:localhost"}, 400, "M_INVALID_PARAM"},
		{"delete with block not a boolean", "DELETE", "/_synapse/admin/v2/rooms/" + room, map[string]any{"block": "yes"}, 400, "M_BAD_JSON"},
		{"unknown deletion", "GET", "/_synapse/admin/v2/rooms/delete_status/nope", nil, 404, "M_NOT_FOUND"},
		{"no deletion of the room", "GET", "/_synapse/admin/v2/rooms/" + room + "/delete_status", nil, 404, "M_NOT_FOUND"},
		{"purge without a point", "POST", "/_synapse/admin/v1/purge_history/" + room, map[string]any{"delete_local_events": true}, 400, "M_MISSING_PARAM"},
		{"purge to an unknown event", "POST", "/_synapse/admin/v1/purge_history/" + room + "/$nope", map[string]any{}, 404, "M_NOT_FOUND"},
		{"purge unknown room", "POST", "/_synapse/admin/v1/purge_history/!unknown:localhost", map[string]any{"purge_up_to_ts": 1}, 404, "M_NOT_FOUND"},
		{"unknown purge", "GET", "/_synapse/admin/v1/purge_history_status/nope", nil, 404, "M_NOT_FOUND"},
		// Reports.
		{"report ID not a number", "GET", "/_synapse/admin/v1/event_reports/abc", nil, 400, "M_INVALID_PARAM"},
		{"unknown report", "GET", "/_synapse/admin/v1/event_reports/999", nil, 404, "M_NOT_FOUND"},
		{"delete unknown report", "DELETE", "/_synapse/admin/v1/event_reports/999", nil, 404, "M_NOT_FOUND"},
		{"reports dir", "GET", "/_synapse/admin/v1/event_reports?dir=up", nil, 400, "M_INVALID_PARAM"},
		// Media.
		{"uncached remote media", "POST", "/_synapse/admin/v1/media/quarantine/elsewhere.example/abc", map[string]any{}, 404, "M_NOT_FOUND"},
		{"media server name", "POST", "/_synapse/admin/v1/media/quarantine/bad_name!/abc", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"info of uncached remote media", "GET", "/_synapse/admin/v1/media/elsewhere.example/abc", nil, 404, "M_NOT_FOUND"},
		{"delete remote media", "DELETE", "/_synapse/admin/v1/media/elsewhere.example/abc", nil, 400, "M_UNKNOWN"},
		{"unknown media", "POST", "/_synapse/admin/v1/media/quarantine/localhost/nope", map[string]any{}, 404, "M_NOT_FOUND"},
		{"delete unknown media", "DELETE", "/_synapse/admin/v1/media/localhost/nope", nil, 404, "M_NOT_FOUND"},
		// Server notices.
		{"notice without user", "POST", "/_synapse/admin/v1/send_server_notice", map[string]any{"content": map[string]any{"body": "x"}}, 400, "M_MISSING_PARAM"},
		{"notice without content", "POST", "/_synapse/admin/v1/send_server_notice", map[string]any{"user_id": "@alice:localhost"}, 400, "M_MISSING_PARAM"},
		{"notice content not an object", "POST", "/_synapse/admin/v1/send_server_notice", map[string]any{"user_id": "@alice:localhost", "content": "hi"}, 400, "M_BAD_JSON"},
		{"notice to a remote user", "POST", "/_synapse/admin/v1/send_server_notice", map[string]any{"user_id": "@x:elsewhere.example", "content": map[string]any{"body": "x"}}, 400, "M_INVALID_PARAM"},
		{"notice to an unknown user", "POST", "/_synapse/admin/v1/send_server_notice", map[string]any{"user_id": "@nobody:localhost", "content": map[string]any{"body": "x"}}, 404, "M_NOT_FOUND"},
		// Audit log.
		{"audit limit", "GET", "/_synapse/admin/v1/chatalot/audit_log?limit=many", nil, 400, "M_INVALID_PARAM"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := e.do(c.method, e.s.URL+escapePath(c.path), e.token, c.body)
			if code != c.status || out["errcode"] != c.errcode {
				t.Errorf("%s %s: %d %v, want %d %s", c.method, c.path, code, out, c.status, c.errcode)
			}
		})
	}
	// Paging past the end is an empty page, not an error.
	for _, p := range []string{"/_synapse/admin/v2/users?from=1000", "/_synapse/admin/v1/rooms?from=1000",
		"/_synapse/admin/v1/event_reports?from=1000", "/_synapse/admin/v1/chatalot/audit_log?from=1000"} {
		out := e.admin("GET", e.s.URL+p, nil, 200)
		if out["next_token"] != nil || out["next_batch"] != nil {
			t.Errorf("%s: %v", p, out)
		}
	}
	// Nothing was done, so nothing was recorded; and the users are intact.
	if after := len(e.audit()); after != before {
		t.Fatalf("bad requests were recorded as actions: %d entries, had %d: %v", after, before, e.audit()[before:])
	}
	e.want("GET", e.s.URL+"/_synapse/admin/v2/users/@new:localhost", e.token, nil, 404, "M_NOT_FOUND")
	e.want("GET", e.s.URL+"/_matrix/client/v3/account/whoami", alice, nil, 200, "")
}

// escapePath escapes the sigils of IDs in a path, as clients do.
func escapePath(p string) string {
	out := []byte{}
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '!':
			out = append(out, "%21"...)
		case '$':
			out = append(out, "%24"...)
		case '#':
			out = append(out, "%23"...)
		default:
			out = append(out, p[i])
		}
	}
	return string(out)
}
