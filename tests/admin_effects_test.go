package tests

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The effects of admin actions, checked through the client API.

// TestAdminDeactivatedUserCannotLogIn: deactivation ends every session,
// takes the user out of their rooms, refuses logins; erase drops the
// profile; reactivation needs a new password.
func TestAdminDeactivatedUserCannotLogIn(t *testing.T) {
	e := admStart(t)
	alice := e.register("alice")
	bob := e.register("bob")
	room := e.createRoom(bob, map[string]any{"preset": "public_chat"})
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), alice, map[string]any{}, 200, "")

	e.admin("POST", e.url("/_synapse/admin/v1/deactivate/%s", "@alice:localhost"), map[string]any{"erase": true}, 200)
	if code, _ := e.loginCode("alice", admPassword); code == 200 {
		t.Fatal("a deactivated user logged in")
	}
	e.want("GET", e.s.URL+"/_matrix/client/v3/account/whoami", alice, nil, 401, "M_UNKNOWN_TOKEN")
	members := e.want("GET", e.url("/_matrix/client/v3/rooms/%s/joined_members", room), bob, nil, 200, "")["joined"].(map[string]any)
	if _, in := members["@alice:localhost"]; in {
		t.Fatal("the deactivated user is still in the room")
	}
	u := e.admin("GET", e.url("/_synapse/admin/v2/users/%s", "@alice:localhost"), nil, 200)
	if u["deactivated"] != true || u["erased"] != true || u["displayname"] != nil || u["admin"] != false {
		t.Fatalf("user after deactivation: %v", u)
	}
	// Deactivating again is harmless.
	e.admin("POST", e.url("/_synapse/admin/v1/deactivate/%s", "@alice:localhost"), nil, 200)
	// The ID is never given out again.
	e.want("POST", e.s.URL+"/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": admPassword,
		"auth": map[string]string{"type": "m.login.dummy"}}, 400, "M_USER_IN_USE")

	// Reactivation needs a password.
	e.want("PUT", e.url("/_synapse/admin/v2/users/%s", "@alice:localhost"), e.token, map[string]any{"deactivated": false}, 400, "M_MISSING_PARAM")
	u = e.admin("PUT", e.url("/_synapse/admin/v2/users/%s", "@alice:localhost"), map[string]any{"deactivated": false, "password": "a brand new password"}, 200)
	if u["deactivated"] != false || u["erased"] != false {
		t.Fatalf("user after reactivation: %v", u)
	}
	e.login("alice", "a brand new password")
	if a := e.auditActions(); !strings.Contains(strings.Join(a, ","), "deactivate_user") || !strings.Contains(strings.Join(a, ","), "modify_user") {
		t.Fatalf("audit log: %v", a)
	}
}

// TestAdminDeleteRoom: a deleted room's members are out and it cannot be
// rejoined; its aliases move to the replacement room, where the members are
// invited (never joined for them) and read the admin's message.
func TestAdminDeleteRoom(t *testing.T) {
	e := admStart(t)
	alice := e.register("alice")
	bob := e.register("bob")
	room := e.createRoom(alice, map[string]any{"preset": "public_chat", "room_alias_name": "doomed", "name": "Doomed"})
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), bob, map[string]any{}, 200, "")
	e.send(bob, room, "something bad")

	status := e.deleteRoom(room, map[string]any{"new_room_user_id": "@boss:localhost", "block": true,
		"room_name": "Closed", "message": "The room broke the rules."})
	sr := status["shutdown_room"].(map[string]any)
	kicked := sr["kicked_users"].([]any)
	if len(kicked) != 2 || !admContains(kicked, "@alice:localhost") || !admContains(kicked, "@bob:localhost") ||
		!admContains(sr["local_aliases"].([]any), "#doomed:localhost") || sr["new_room_id"] == nil {
		t.Fatalf("shutdown: %v", sr)
	}
	newRoom := sr["new_room_id"].(string)
	for _, tok := range []string{alice, bob} {
		if admContains(e.joinedRooms(tok), room) {
			t.Fatal("a member is still in the deleted room")
		}
		if code, _ := e.do("POST", e.url("/_matrix/client/v3/join/%s", room), tok, map[string]any{}); code == 200 {
			t.Fatal("the deleted room was rejoined")
		}
	}
	// Gone from the server, blocked for good.
	e.want("GET", e.url("/_synapse/admin/v1/rooms/%s", room), e.token, nil, 404, "M_NOT_FOUND")
	if b := e.admin("GET", e.url("/_synapse/admin/v1/rooms/%s/block", room), nil, 200); b["block"] != true || b["user_id"] != "@boss:localhost" {
		t.Fatalf("block: %v", b)
	}
	// The alias leads to the new room; bob accepts the invite and reads the
	// message but cannot speak.
	alias := e.want("GET", e.url("/_matrix/client/v3/directory/room/%s", "#doomed:localhost"), bob, nil, 200, "")
	if alias["room_id"] != newRoom {
		t.Fatalf("alias: %v", alias)
	}
	e.want("POST", e.url("/_matrix/client/v3/join/%s", newRoom), bob, map[string]any{}, 200, "")
	msgs := e.want("GET", e.url("/_matrix/client/v3/rooms/%s/messages", newRoom)+"?dir=b&limit=50", bob, nil, 200, "")
	if raw, _ := json.Marshal(msgs); !strings.Contains(string(raw), "The room broke the rules.") {
		t.Fatalf("no message in the new room: %s", raw)
	}
	e.want("PUT", e.url("/_matrix/client/v3/rooms/%s/send/m.room.message/x", newRoom), bob, map[string]any{"msgtype": "m.text", "body": "hey"}, 403, "M_FORBIDDEN")

	// Without purge the room stays, blocked: nobody gets back in until it
	// is unblocked.
	other := e.createRoom(alice, map[string]any{"preset": "public_chat"})
	out := e.admin("DELETE", e.url("/_synapse/admin/v1/rooms/%s", other), map[string]any{"block": true, "purge": false}, 200)
	if !admContains(out["kicked_users"].([]any), "@alice:localhost") {
		t.Fatalf("v1 delete: %v", out)
	}
	e.admin("GET", e.url("/_synapse/admin/v1/rooms/%s", other), nil, 200)
	e.want("POST", e.url("/_matrix/client/v3/join/%s", other), alice, map[string]any{}, 403, "M_FORBIDDEN")
	e.admin("PUT", e.url("/_synapse/admin/v1/rooms/%s/block", other), map[string]any{"block": false}, 200)
	e.want("POST", e.url("/_matrix/client/v3/join/%s", other), alice, map[string]any{}, 200, "")

	actions := strings.Join(e.auditActions(), ",")
	for _, a := range []string{"delete_room", "unblock_room"} {
		if !strings.Contains(actions, a) {
			t.Errorf("audit log has no %s: %s", a, actions)
		}
	}
}

// TestAdminInviteCodes: invite codes made and revoked over the admin API;
// a revoked code no longer registers.
func TestAdminInviteCodes(t *testing.T) {
	e := admStart(t, "--registration", "token")
	tok := e.admin("POST", e.s.URL+"/_synapse/admin/v1/registration_tokens/new", map[string]any{"uses_allowed": 1}, 200)
	code := tok["token"].(string)
	if len(code) != 16 || tok["uses_allowed"] != float64(1) || tok["pending"] != float64(0) || tok["completed"] != float64(0) || tok["expiry_time"] != nil {
		t.Fatalf("new token: %v", tok)
	}
	if c, out := e.registerWithToken("alice", code); c != 200 {
		t.Fatalf("register with the code: %d %v", c, out)
	}
	got := e.admin("GET", e.url("/_synapse/admin/v1/registration_tokens/%s", code), nil, 200)
	if got["completed"] != float64(1) {
		t.Fatalf("token after use: %v", got)
	}
	invalid := e.admin("GET", e.s.URL+"/_synapse/admin/v1/registration_tokens?valid=false", nil, 200)["registration_tokens"].([]any)
	if len(invalid) != 1 {
		t.Fatalf("used-up tokens: %v", invalid)
	}
	// More uses, then revoked.
	e.admin("PUT", e.url("/_synapse/admin/v1/registration_tokens/%s", code), map[string]any{"uses_allowed": nil}, 200)
	if c, out := e.registerWithToken("bob", code); c != 200 {
		t.Fatalf("register after raising the uses: %d %v", c, out)
	}
	e.admin("DELETE", e.url("/_synapse/admin/v1/registration_tokens/%s", code), nil, 200)
	if c, out := e.registerWithToken("carol", code); c == 200 || out["access_token"] != nil {
		t.Fatalf("a revoked code registered an account: %d %v", c, out)
	}
	e.want("GET", e.url("/_synapse/admin/v1/registration_tokens/%s", code), e.token, nil, 404, "M_NOT_FOUND")
	// An expiry in the past cannot be set; a named token can be made.
	named := e.admin("POST", e.s.URL+"/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "friends-2026", "expiry_time": time.Now().Add(time.Hour).UnixMilli()}, 200)
	if named["token"] != "friends-2026" || named["expiry_time"] == nil {
		t.Fatalf("named token: %v", named)
	}
	list := e.admin("GET", e.s.URL+"/_synapse/admin/v1/registration_tokens", nil, 200)["registration_tokens"].([]any)
	if len(list) != 1 {
		t.Fatalf("tokens: %v", list)
	}
	actions := strings.Join(e.auditActions(), ",")
	for _, a := range []string{"create_registration_token", "update_registration_token", "delete_registration_token"} {
		if !strings.Contains(actions, a) {
			t.Errorf("audit log has no %s: %s", a, actions)
		}
	}
}

// TestAdminQuarantineMedia: a quarantined file is no longer served, to
// anyone; released, it is again; deleted, it is gone.
func TestAdminQuarantineMedia(t *testing.T) {
	e := admStart(t)
	alice := e.register("alice")
	bob := e.register("bob")
	id := e.upload(alice, "a file that was reported")
	if e.download(bob, id) != 200 {
		t.Fatal("download before quarantine")
	}
	e.admin("POST", e.url("/_synapse/admin/v1/media/quarantine/localhost/%s", id), map[string]any{}, 200)
	if c := e.download(bob, id); c != 404 {
		t.Fatalf("a quarantined file was served to another user: %d", c)
	}
	if c := e.download(alice, id); c != 404 {
		t.Fatalf("a quarantined file was served to its uploader: %d", c)
	}
	info := e.admin("GET", e.url("/_synapse/admin/v1/media/localhost/%s", id), nil, 200)["media_info"].(map[string]any)
	if info["quarantined_by"] != "@boss:localhost" || info["media_length"] != float64(len("a file that was reported")) {
		t.Fatalf("media info: %v", info)
	}
	e.admin("POST", e.url("/_synapse/admin/v1/media/unquarantine/localhost/%s", id), map[string]any{}, 200)
	if e.download(bob, id) != 200 {
		t.Fatal("released media is not served")
	}
	list := e.admin("GET", e.url("/_synapse/admin/v1/users/%s/media", "@alice:localhost"), nil, 200)
	if list["total"] != float64(1) || list["media"].([]any)[0].(map[string]any)["media_id"] != id {
		t.Fatalf("user media: %v", list)
	}
	del := e.admin("DELETE", e.url("/_synapse/admin/v1/media/localhost/%s", id), nil, 200)
	if del["total"] != float64(1) || e.download(bob, id) != 404 {
		t.Fatalf("delete: %v", del)
	}
	e.upload(alice, "one")
	e.upload(alice, "two")
	del = e.admin("DELETE", e.url("/_synapse/admin/v1/users/%s/media", "@alice:localhost"), nil, 200)
	if del["total"] != float64(2) {
		t.Fatalf("delete user media: %v", del)
	}
	actions := strings.Join(e.auditActions(), ",")
	for _, a := range []string{"quarantine_media", "unquarantine_media", "delete_media", "delete_user_media"} {
		if !strings.Contains(actions, a) {
			t.Errorf("audit log has no %s: %s", a, actions)
		}
	}
}

// TestAdminLockAndSuspend: a locked account gets 401 M_USER_LOCKED on every
// request but logout and cannot log in; a suspended one may read and leave
// but not send, join or change its profile.
func TestAdminLockAndSuspend(t *testing.T) {
	e := admStart(t)
	bob := e.register("bob")
	bob2 := e.login("bob", admPassword)
	alice := e.register("alice")
	room := e.createRoom(alice, map[string]any{"preset": "public_chat"})
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), bob, map[string]any{}, 200, "")
	own := e.send(bob, room, "mine")
	hers := e.send(alice, room, "hers")

	e.admin("PUT", e.url("/_matrix/client/v1/admin/lock/%s", "@bob:localhost"), map[string]any{"locked": true}, 200)
	out := e.want("GET", e.s.URL+"/_matrix/client/v3/sync?timeout=0", bob, nil, 401, "M_USER_LOCKED")
	if out["soft_logout"] != true {
		t.Fatalf("locked: %v", out)
	}
	if c, out := e.loginCode("bob", admPassword); c != 401 || out["errcode"] != "M_USER_LOCKED" {
		t.Fatalf("a locked user logged in: %d %v", c, out)
	}
	e.want("POST", e.s.URL+"/_matrix/client/v3/logout", bob2, map[string]any{}, 200, "")
	if l := e.admin("GET", e.url("/_matrix/client/v1/admin/lock/%s", "@bob:localhost"), nil, 200); l["locked"] != true {
		t.Fatalf("lock status: %v", l)
	}
	if u := e.admin("GET", e.url("/_synapse/admin/v2/users/%s", "@bob:localhost"), nil, 200); u["locked"] != true {
		t.Fatalf("user: %v", u)
	}
	e.admin("PUT", e.url("/_matrix/client/v1/admin/lock/%s", "@bob:localhost"), map[string]any{"locked": false}, 200)
	e.want("GET", e.s.URL+"/_matrix/client/v3/account/whoami", bob, nil, 200, "")

	// Reading your own lock status is allowed; reading someone else's
	// takes an admin, and is refused before any lookup (no enumeration).
	if l := e.want("GET", e.url("/_matrix/client/v1/admin/lock/%s", "@bob:localhost"), bob, nil, 200, ""); l["locked"] != false {
		t.Fatalf("bob's own lock status: %v", l)
	}
	e.want("GET", e.url("/_matrix/client/v1/admin/lock/%s", "@alice:localhost"), bob, nil, 403, "M_FORBIDDEN")
	e.want("GET", e.url("/_matrix/client/v1/admin/lock/%s", "@nobody:localhost"), bob, nil, 403, "M_FORBIDDEN")
	if l := e.admin("GET", e.url("/_matrix/client/v1/admin/lock/%s", "@boss:localhost"), nil, 200); l["locked"] != false {
		t.Fatalf("the admin's own lock status: %v", l)
	}

	e.admin("PUT", e.url("/_matrix/client/v1/admin/suspend/%s", "@bob:localhost"), map[string]any{"suspended": true}, 200)
	e.want("PUT", e.url("/_matrix/client/v3/rooms/%s/send/m.room.message/s1", room), bob, map[string]any{"msgtype": "m.text", "body": "x"}, 403, "M_USER_SUSPENDED")
	e.want("PUT", e.url("/_matrix/client/v3/profile/%s/displayname", "@bob:localhost"), bob, map[string]any{"displayname": "B"}, 403, "M_USER_SUSPENDED")
	e.want("POST", e.s.URL+"/_matrix/client/v3/createRoom", bob, map[string]any{}, 403, "M_USER_SUSPENDED")
	if c, _ := admRaw(t, "POST", e.s.URL+"/_matrix/media/v3/upload", bob, "data"); c != 403 {
		t.Fatalf("a suspended user uploaded: %d", c)
	}
	e.want("PUT", e.url("/_matrix/client/v3/rooms/%s/redact/%s/r1", room, hers), bob, map[string]any{}, 403, "M_USER_SUSPENDED")
	e.want("PUT", e.url("/_matrix/client/v3/rooms/%s/redact/%s/r2", room, own), bob, map[string]any{}, 200, "")
	e.want("GET", e.s.URL+"/_matrix/client/v3/sync?timeout=0", bob, nil, 200, "")
	e.want("GET", e.url("/_matrix/client/v3/rooms/%s/messages", room)+"?dir=b", bob, nil, 200, "")
	e.want("POST", e.url("/_matrix/client/v3/rooms/%s/leave", room), bob, map[string]any{}, 200, "")
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), bob, map[string]any{}, 403, "M_USER_SUSPENDED")
	// Synapse's endpoint lifts it.
	out = e.admin("PUT", e.url("/_synapse/admin/v1/suspend/%s", "@bob:localhost"), map[string]any{"suspend": false}, 200)
	if out["user_@bob:localhost_suspended"] != false {
		t.Fatalf("unsuspend: %v", out)
	}
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), bob, map[string]any{}, 200, "")

	// Nobody locks themselves or another admin through the spec's endpoint.
	e.want("PUT", e.url("/_matrix/client/v1/admin/lock/%s", "@boss:localhost"), e.token, map[string]any{"locked": true}, 403, "M_FORBIDDEN")
	actions := strings.Join(e.auditActions(), ",")
	for _, a := range []string{"lock_user", "unlock_user", "suspend_user", "unsuspend_user"} {
		if !strings.Contains(actions, a) {
			t.Errorf("audit log has no %s: %s", a, actions)
		}
	}
}

// TestAdminServerNotices: a notice arrives in the user's server-notices
// room (tagged, invite-only, unrejectable, read-only), the same room every
// time; the audit log records it without its text.
func TestAdminServerNotices(t *testing.T) {
	e := admStart(t, "--encryption", "required")
	alice := e.register("alice")
	send := func(body string) string {
		out := e.admin("POST", e.s.URL+"/_synapse/admin/v1/send_server_notice", map[string]any{
			"user_id": "@alice:localhost", "content": map[string]any{"msgtype": "m.text", "body": body}}, 200)
		return out["event_id"].(string)
	}
	send("Maintenance tonight at 22:00")
	sync := e.want("GET", e.s.URL+"/_matrix/client/v3/sync?timeout=0", alice, nil, 200, "")
	invites := sync["rooms"].(map[string]any)["invite"].(map[string]any)
	if len(invites) != 1 {
		t.Fatalf("invites: %v", invites)
	}
	var room string
	for id := range invites {
		room = id
	}
	tags := e.want("GET", e.url("/_matrix/client/v3/user/%s/rooms/%s/tags", "@alice:localhost", room), alice, nil, 200, "")
	if _, ok := tags["tags"].(map[string]any)["m.server_notice"]; !ok {
		t.Fatalf("tags: %v", tags)
	}
	e.want("POST", e.url("/_matrix/client/v3/rooms/%s/leave", room), alice, map[string]any{}, 403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), alice, map[string]any{}, 200, "")
	e.want("PUT", e.url("/_matrix/client/v3/rooms/%s/send/m.room.message/n1", room), alice, map[string]any{"msgtype": "m.text", "body": "x"}, 403, "M_FORBIDDEN")
	id := send("Maintenance done")
	ev := e.want("GET", e.url("/_matrix/client/v3/rooms/%s/event/%s", room, id), alice, nil, 200, "")
	if ev["sender"] != "@server:localhost" || ev["content"].(map[string]any)["body"] != "Maintenance done" {
		t.Fatalf("notice: %v", ev)
	}
	// Having left, the user is invited back to the same room.
	e.want("POST", e.url("/_matrix/client/v3/rooms/%s/leave", room), alice, map[string]any{}, 200, "")
	send("Welcome back")
	sync = e.want("GET", e.s.URL+"/_matrix/client/v3/sync?timeout=0", alice, nil, 200, "")
	if _, ok := sync["rooms"].(map[string]any)["invite"].(map[string]any)[room]; !ok {
		t.Fatalf("not invited back: %v", sync["rooms"])
	}
	// The system user cannot log in.
	if c, _ := e.loginCode("server", ""); c == 200 {
		t.Fatal("the server notices user logged in")
	}
	raw, _ := json.Marshal(e.audit())
	if !strings.Contains(string(raw), `"send_server_notice"`) || strings.Contains(string(raw), "Maintenance") {
		t.Fatalf("audit log: %s", raw)
	}
}

// TestAdminUsersAPI: create, read, list, modify; passwords; devices and
// whois; joined rooms.
func TestAdminUsersAPI(t *testing.T) {
	e := admStart(t)
	created := e.admin("PUT", e.url("/_synapse/admin/v2/users/%s", "@carol:localhost"), map[string]any{
		"password": admPassword, "displayname": "Carol", "admin": false}, 201)
	if created["name"] != "@carol:localhost" || created["displayname"] != "Carol" || created["deactivated"] != false ||
		created["threepids"] == nil || created["creation_ts"] == nil {
		t.Fatalf("created: %v", created)
	}
	carol := e.login("carol", admPassword)
	_, device := e.whoami(carol)
	dave := e.register("dave")
	room := e.createRoom(carol, map[string]any{})

	list := e.admin("GET", e.s.URL+"/_synapse/admin/v2/users?limit=2", nil, 200)
	if list["total"] != float64(3) || len(list["users"].([]any)) != 2 || list["next_token"] != "2" {
		t.Fatalf("page 1: %v", list)
	}
	list = e.admin("GET", e.s.URL+"/_synapse/admin/v2/users?from=2&limit=2", nil, 200)
	if len(list["users"].([]any)) != 1 || list["next_token"] != nil {
		t.Fatalf("page 2: %v", list)
	}
	list = e.admin("GET", e.s.URL+"/_synapse/admin/v2/users?admins=true", nil, 200)
	if list["total"] != float64(1) || list["users"].([]any)[0].(map[string]any)["name"] != "@boss:localhost" {
		t.Fatalf("admins: %v", list)
	}
	list = e.admin("GET", e.s.URL+"/_synapse/admin/v2/users?name=caro", nil, 200)
	if list["total"] != float64(1) {
		t.Fatalf("name filter: %v", list)
	}
	list = e.admin("GET", e.s.URL+"/_synapse/admin/v2/users?order_by=name&dir=b", nil, 200)
	if list["users"].([]any)[0].(map[string]any)["name"] != "@dave:localhost" {
		t.Fatalf("order: %v", list)
	}

	// Modify: display name, admin, password (logging devices out).
	u := e.admin("PUT", e.url("/_synapse/admin/v2/users/%s", "@carol:localhost"), map[string]any{"displayname": "Caroline", "admin": true}, 200)
	if u["displayname"] != "Caroline" || u["admin"] != true {
		t.Fatalf("modified: %v", u)
	}
	if a := e.admin("GET", e.url("/_synapse/admin/v1/users/%s/admin", "@carol:localhost"), nil, 200); a["admin"] != true {
		t.Fatalf("admin flag: %v", a)
	}
	e.want("GET", e.s.URL+"/_synapse/admin/v1/server_version", carol, nil, 200, "")
	e.admin("PUT", e.url("/_synapse/admin/v1/users/%s/admin", "@carol:localhost"), map[string]any{"admin": false}, 200)
	e.want("GET", e.s.URL+"/_synapse/admin/v1/server_version", carol, nil, 403, "M_FORBIDDEN")

	devs := e.admin("GET", e.url("/_synapse/admin/v2/users/%s/devices", "@carol:localhost"), nil, 200)
	if devs["total"] != float64(1) || devs["devices"].([]any)[0].(map[string]any)["device_id"] != device {
		t.Fatalf("devices: %v", devs)
	}
	who := e.admin("GET", e.url("/_synapse/admin/v1/whois/%s", "@carol:localhost"), nil, 200)
	if raw, _ := json.Marshal(who); !strings.Contains(string(raw), device) || strings.Contains(string(raw), `"ip"`) {
		t.Fatalf("whois (no IP addresses are kept): %s", raw)
	}
	if jr := e.admin("GET", e.url("/_synapse/admin/v1/users/%s/joined_rooms", "@carol:localhost"), nil, 200); jr["total"] != float64(1) || !admContains(jr["joined_rooms"].([]any), room) {
		t.Fatalf("joined rooms: %v", jr)
	}
	e.admin("POST", e.url("/_synapse/admin/v1/reset_password/%s", "@carol:localhost"), map[string]any{"new_password": "the new secret phrase"}, 200)
	e.want("GET", e.s.URL+"/_matrix/client/v3/account/whoami", carol, nil, 401, "M_UNKNOWN_TOKEN")
	if c, _ := e.loginCode("carol", admPassword); c == 200 {
		t.Fatal("the old password still works")
	}
	e.login("carol", "the new secret phrase")

	// Deleting a device logs it out.
	_, daveDevice := e.whoami(dave)
	e.admin("DELETE", e.url("/_synapse/admin/v2/users/%s/devices/%s", "@dave:localhost", daveDevice), nil, 200)
	e.want("GET", e.s.URL+"/_matrix/client/v3/account/whoami", dave, nil, 401, "M_UNKNOWN_TOKEN")

	// Locking through PUT /v2/users.
	e.admin("PUT", e.url("/_synapse/admin/v2/users/%s", "@dave:localhost"), map[string]any{"locked": true}, 200)
	if c, out := e.loginCode("dave", admPassword); c != 401 || out["errcode"] != "M_USER_LOCKED" {
		t.Fatalf("locked login: %d %v", c, out)
	}
	// Locked users are listed only when asked for.
	if l := e.admin("GET", e.s.URL+"/_synapse/admin/v2/users", nil, 200); l["total"] != float64(2) {
		t.Fatalf("default list: %v", l)
	}
	if l := e.admin("GET", e.s.URL+"/_synapse/admin/v2/users?locked=true", nil, 200); l["total"] != float64(3) {
		t.Fatalf("list with locked: %v", l)
	}
	raw, _ := json.Marshal(e.audit())
	for _, a := range []string{"create_user", "modify_user", "set_admin", "reset_password", "delete_devices"} {
		if !strings.Contains(string(raw), `"`+a+`"`) {
			t.Errorf("audit log has no %s", a)
		}
	}
	for _, secret := range []string{admPassword, "the new secret phrase", "Caroline"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the audit log holds %q", secret)
		}
	}
}

// TestAdminReportsAndPurgeHistory: event reports are listed, read (with
// the reported event) and closed; history before a point is purged.
func TestAdminReportsAndPurgeHistory(t *testing.T) {
	e := admStart(t)
	alice := e.register("alice")
	bob := e.register("bob")
	room := e.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Lobby"})
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), bob, map[string]any{}, 200, "")
	bad := e.send(bob, room, "an old rude message")
	e.want("POST", e.url("/_matrix/client/v3/rooms/%s/report/%s", room, bad), alice, map[string]any{"reason": "rude"}, 200, "")
	list := e.admin("GET", e.s.URL+"/_synapse/admin/v1/event_reports", nil, 200)
	if list["total"] != float64(1) {
		t.Fatalf("reports: %v", list)
	}
	r := list["event_reports"].([]any)[0].(map[string]any)
	if r["event_id"] != bad || r["sender"] != "@bob:localhost" || r["user_id"] != "@alice:localhost" || r["name"] != "Lobby" || r["reason"] != "rude" {
		t.Fatalf("report: %v", r)
	}
	id := strconvF(r["id"].(float64))
	one := e.admin("GET", e.url("/_synapse/admin/v1/event_reports/%s", id), nil, 200)
	if ej, ok := one["event_json"].(map[string]any); !ok || ej["event_id"] != nil && ej["event_id"] != bad {
		t.Fatalf("report detail: %v", one)
	}
	e.admin("DELETE", e.url("/_synapse/admin/v1/event_reports/%s", id), nil, 200)
	e.want("GET", e.url("/_synapse/admin/v1/event_reports/%s", id), e.token, nil, 404, "M_NOT_FOUND")

	time.Sleep(5 * time.Millisecond)
	cut := time.Now().UnixMilli()
	time.Sleep(5 * time.Millisecond)
	e.send(alice, room, "a new message")
	out := e.admin("POST", e.url("/_synapse/admin/v1/purge_history/%s", room), map[string]any{"delete_local_events": true, "purge_up_to_ts": cut}, 200)
	pid := out["purge_id"].(string)
	admWait(t, 10*time.Second, "the purge", func() bool {
		return e.admin("GET", e.url("/_synapse/admin/v1/purge_history_status/%s", pid), nil, 200)["status"] == "complete"
	})
	msgs := e.want("GET", e.url("/_matrix/client/v3/rooms/%s/messages", room)+"?dir=b&limit=100", bob, nil, 200, "")
	raw, _ := json.Marshal(msgs)
	if strings.Contains(string(raw), "an old rude message") || !strings.Contains(string(raw), "a new message") {
		t.Fatalf("after the purge: %s", raw)
	}
	// State survives: the room still has its name and members.
	if d := e.admin("GET", e.url("/_synapse/admin/v1/rooms/%s", room), nil, 200); d["name"] != "Lobby" || d["joined_members"] != float64(2) {
		t.Fatalf("room after purge: %v", d)
	}
	actions := strings.Join(e.auditActions(), ",")
	for _, a := range []string{"view_event_report", "delete_event_report", "purge_history"} {
		if !strings.Contains(actions, a) {
			t.Errorf("audit log has no %s: %s", a, actions)
		}
	}
}

// TestAdminSupportFile: /.well-known/matrix/support comes from the
// configuration, and is 404 without it.
func TestAdminSupportFile(t *testing.T) {
	e := admStart(t)
	e.want("GET", e.s.URL+"/.well-known/matrix/support", "", nil, 404, "M_NOT_FOUND")
	e.s.Args = append(e.s.Args, "--support-admin-contacts", "@boss:localhost,admin@example.org",
		"--support-security-contacts", "security@example.org", "--support-page", "https://example.org/help")
	e.s.Restart()
	out := e.want("GET", e.s.URL+"/.well-known/matrix/support", "", nil, 200, "")
	raw, _ := json.Marshal(out)
	want := `{"contacts":[{"matrix_id":"@boss:localhost","role":"m.role.admin"},{"email_address":"admin@example.org","role":"m.role.admin"},{"email_address":"security@example.org","role":"m.role.security"}],"support_page":"https://example.org/help"}`
	if string(raw) != want {
		t.Fatalf("support:\n%s\nwant\n%s", raw, want)
	}
}
