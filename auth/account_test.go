package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

func TestDevices(t *testing.T) {
	ts := newTestServer(t)
	tok, dev := ts.register("alice", "password1")
	other := ts.do("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "password1", "initial_device_display_name": "Laptop"}).must(t, 200)
	devs := ts.do("GET", v3+"/devices", tok, nil).must(t, 200).Body["devices"].([]any)
	if len(devs) != 2 {
		t.Fatalf("%d devices", len(devs))
	}
	// Every device has all four fields; no IP is ever stored, so
	// last_seen_ip is always null.
	for _, d := range devs {
		m := d.(map[string]any)
		for _, k := range []string{"device_id", "display_name", "last_seen_ip", "last_seen_ts"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("device lacks %s: %v", k, m)
			}
		}
		if m["last_seen_ts"] == nil || m["last_seen_ip"] != nil {
			t.Fatalf("device: %v", m)
		}
	}
	d := ts.do("GET", v3+"/devices/"+other.str("device_id"), tok, nil).must(t, 200)
	if d.str("display_name") != "Laptop" {
		t.Fatal(d.Raw)
	}
	ts.do("GET", v3+"/devices/NOPE", tok, nil).mustErr(t, 404, "M_NOT_FOUND")
	ts.do("PUT", v3+"/devices/"+dev, tok, map[string]any{"display_name": "Phone"}).must(t, 200)
	if ts.do("GET", v3+"/devices/"+dev, tok, nil).must(t, 200).str("display_name") != "Phone" {
		t.Fatal("rename")
	}
	ts.do("PUT", v3+"/devices/"+dev, tok, map[string]any{}).must(t, 200)
	ts.do("PUT", v3+"/devices/NOPE", tok, map[string]any{"display_name": "x"}).mustErr(t, 404, "M_NOT_FOUND")
	ts.do("PUT", v3+"/devices/"+dev, tok, map[string]any{"display_name": strings.Repeat("x", 300)}).mustErr(t, 400, "M_INVALID_PARAM")

	// Deleting needs the password.
	r := ts.do("DELETE", v3+"/devices/"+other.str("device_id"), tok, nil).must(t, 401)
	if r.Body["flows"] == nil || r.errcode() != "" {
		t.Fatal(r.Raw)
	}
	bad := map[string]any{"auth": map[string]any{"type": "m.login.password", "session": r.str("session"),
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong-password"}}
	r = ts.do("DELETE", v3+"/devices/"+other.str("device_id"), tok, bad).mustErr(t, 401, "M_FORBIDDEN")
	if r.Body["flows"] == nil || r.str("session") == "" {
		t.Fatalf("a failed stage keeps the UIA body: %s", r.Raw)
	}
	// Someone else's identifier is refused outright: 403, no new challenge,
	// and the device stays.
	ts.register("bob", "password2")
	r = ts.uia("DELETE", v3+"/devices/"+other.str("device_id"), tok, nil, "bob", "password2").mustErr(t, 403, "M_FORBIDDEN")
	if r.Body["flows"] != nil {
		t.Fatalf("another user's identifier got a UIA challenge: %s", r.Raw)
	}
	ts.do("GET", v3+"/devices/"+other.str("device_id"), tok, nil).must(t, 200)
	ts.uia("DELETE", v3+"/devices/"+other.str("device_id"), tok, nil, "alice", "password1").must(t, 200)
	ts.do("GET", v3+"/account/whoami", other.str("access_token"), nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	// Deleting again is fine.
	ts.uia("DELETE", v3+"/devices/"+other.str("device_id"), tok, nil, "alice", "password1").must(t, 200)

	// Bulk deletion.
	a := ts.login("alice", "password1").must(t, 200)
	b := ts.login("alice", "password1").must(t, 200)
	ts.uia("POST", v3+"/delete_devices", tok, map[string]any{"devices": []string{a.str("device_id"), b.str("device_id"), "UNKNOWN"}}, "alice", "password1").must(t, 200)
	ts.do("GET", v3+"/account/whoami", a.str("access_token"), nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("GET", v3+"/account/whoami", b.str("access_token"), nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("GET", v3+"/account/whoami", tok, nil).must(t, 200)
	ts.do("POST", v3+"/delete_devices", tok, map[string]any{}).mustErr(t, 400, "M_MISSING_PARAM")
	if got := ts.devs.deletedCopy(); len(got) != 3 {
		t.Fatalf("keys told of %v", got)
	}
}

// A UIA session belongs to one request: it cannot authorise another
// endpoint, another body, or another user.
func TestUIASessionReuse(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	d1 := ts.login("alice", "password1").must(t, 200).str("device_id")
	d2 := ts.login("alice", "password1").must(t, 200).str("device_id")
	auth := func(session string) map[string]any {
		return map[string]any{"type": "m.login.password", "session": session, "password": "password1",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}
	}
	s1 := ts.do("DELETE", v3+"/devices/"+d1, tok, nil).must(t, 401).str("session")
	// Another device (path).
	ts.do("DELETE", v3+"/devices/"+d2, tok, map[string]any{"auth": auth(s1)}).mustErr(t, 403, "M_FORBIDDEN")
	// Another endpoint.
	ts.do("POST", v3+"/account/password", tok, map[string]any{"new_password": "password9", "auth": auth(s1)}).mustErr(t, 403, "M_FORBIDDEN")
	// Another body.
	s2 := ts.do("POST", v3+"/delete_devices", tok, map[string]any{"devices": []string{d1}}).must(t, 401).str("session")
	ts.do("POST", v3+"/delete_devices", tok, map[string]any{"devices": []string{d1, d2}, "auth": auth(s2)}).mustErr(t, 403, "M_FORBIDDEN")
	// A registration session on an authenticated endpoint.
	s3 := ts.do("POST", v3+"/register", "", map[string]any{}).must(t, 401).str("session")
	ts.do("DELETE", v3+"/devices/"+d1, tok, map[string]any{"auth": auth(s3)}).mustErr(t, 403, "M_FORBIDDEN")
	// Another user.
	bob, _ := ts.register("bob", "password2")
	ts.do("DELETE", v3+"/devices/"+d1, bob, map[string]any{"auth": auth(s1)}).mustErr(t, 403, "M_FORBIDDEN")
	// Unknown session.
	ts.do("DELETE", v3+"/devices/"+d1, tok, map[string]any{"auth": auth("nope")}).mustErr(t, 400, "M_INVALID_PARAM")
	// The right request works; the same body with whitespace differences
	// is the same request.
	ts.do("POST", v3+"/delete_devices", tok, `{ "devices" : [ "`+d1+`" ], "auth": {"type":"m.login.password","session":"`+s2+`","password":"password1","user":"alice"}}`).must(t, 200)
	ts.do("DELETE", v3+"/devices/"+d2, tok, map[string]any{"auth": auth(s1)}).mustErr(t, 403, "M_FORBIDDEN")
	// The r0 path of the same operation shares the session.
	ts.do("DELETE", "/_matrix/client/r0/devices/"+d1, tok, map[string]any{"auth": auth(s1)}).must(t, 200)
	// A request without auth never succeeds.
	ts.do("DELETE", v3+"/devices/"+d2, tok, map[string]any{}).must(t, 401)
}

func TestReauthenticate(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	body := map[string]any{"master_key": map[string]any{"usage": []string{"master"}}}
	r := ts.do("POST", "/_test/uia", tok, body).must(t, 401)
	if r.errcode() != "" || r.Body["flows"] == nil {
		t.Fatalf("Reauthenticate challenge: %s", r.Raw)
	}
	ts.uia("POST", "/_test/uia", tok, body, "alice", "password1").must(t, 200)
	ts.do("POST", "/_test/uia", "", body).mustErr(t, 401, "M_MISSING_TOKEN")
}

func TestChangePassword(t *testing.T) {
	ts := newTestServer(t)
	tok, dev := ts.register("alice", "password1")
	other := ts.login("alice", "password1").must(t, 200).str("access_token")
	path := v3 + "/account/password"
	ts.do("POST", path, tok, map[string]any{}).mustErr(t, 400, "M_MISSING_PARAM")
	ts.do("POST", path, tok, map[string]any{"new_password": "short"}).mustErr(t, 400, "M_WEAK_PASSWORD")
	ts.do("POST", path, tok, map[string]any{"new_password": strings.Repeat("p", 513)}).mustErr(t, 400, "M_WEAK_PASSWORD")
	// logout_devices false keeps the other sessions.
	ts.uia("POST", path, tok, map[string]any{"new_password": "password2", "logout_devices": false}, "alice", "password1").must(t, 200)
	ts.do("GET", v3+"/account/whoami", other, nil).must(t, 200)
	ts.login("alice", "password1").mustErr(t, 403, "M_FORBIDDEN")
	ts.login("alice", "password2").must(t, 200)
	// The default logs out every other device, not the caller.
	ts.uia("POST", path, tok, map[string]any{"new_password": "password3"}, "alice", "password2").must(t, 200)
	ts.do("GET", v3+"/account/whoami", other, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	who := ts.do("GET", v3+"/account/whoami", tok, nil).must(t, 200)
	if who.str("device_id") != dev {
		t.Fatal(who.Raw)
	}
	devs := ts.do("GET", v3+"/devices", tok, nil).must(t, 200).Body["devices"].([]any)
	if len(devs) != 1 {
		t.Fatalf("%d devices left", len(devs))
	}
}

func TestDeactivate(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	other := ts.login("alice", "password1").must(t, 200).str("access_token")
	ts.do("PUT", v3+"/user/@alice:test.local/account_data/org.example", tok, map[string]any{"a": 1}).must(t, 200)
	ts.do("PUT", v3+"/profile/@alice:test.local/avatar_url", tok, map[string]any{"avatar_url": "mxc://test.local/abc"}).must(t, 200)
	r := ts.uia("POST", v3+"/account/deactivate", tok, map[string]any{"erase": true}, "alice", "password1").must(t, 200)
	if r.str("id_server_unbind_result") != "success" {
		t.Fatal(r.Raw)
	}
	ts.do("GET", v3+"/account/whoami", tok, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("GET", v3+"/account/whoami", other, nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.login("alice", "password1").mustErr(t, 403, "M_FORBIDDEN")
	bob, _ := ts.register("bob", "password1")
	ts.rooms.sharing = map[[2]spec.UserID]bool{{"@bob:test.local", "@alice:test.local"}: true}
	ts.do("GET", v3+"/profile/@alice:test.local", bob, nil).mustErr(t, 404, "M_NOT_FOUND")
	ts.do("GET", v3+"/register/available?username=alice", "", nil).mustErr(t, 400, "M_USER_IN_USE")
	if len(ts.rooms.left) != 1 || ts.rooms.left[0] != "@alice:test.local" {
		t.Fatalf("rooms not told: %v", ts.rooms.left)
	}
	var n int
	ts.db.QueryRow(context.Background(), `SELECT count(*) FROM account_data`).Scan(&n)
	if n != 0 {
		t.Fatal("account data kept")
	}
	var hash *string
	var dn *string
	ts.db.QueryRow(context.Background(), `SELECT password_hash, displayname FROM users WHERE user_id = '@alice:test.local'`).Scan(&hash, &dn)
	if hash != nil || dn != nil {
		t.Fatal("password or profile kept")
	}
	if d, _ := ts.svc.IsDeactivated(context.Background(), "@alice:test.local"); !d {
		t.Fatal("IsDeactivated")
	}
}

func TestThirdPartyIDs(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	r := ts.do("GET", v3+"/account/3pid", tok, nil).must(t, 200)
	if r.Raw != `{"threepids":[]}` {
		t.Fatal(r.Raw)
	}
	ts.do("POST", v3+"/account/3pid/add", tok, map[string]any{"client_secret": "x", "sid": "y"}).mustErr(t, 403, "M_THREEPID_DENIED")
	ts.do("POST", v3+"/account/3pid/bind", tok, map[string]any{}).mustErr(t, 403, "M_THREEPID_DENIED")
	ts.do("POST", v3+"/account/3pid/email/requestToken", tok, map[string]any{}).mustErr(t, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
	ts.do("POST", v3+"/register/email/requestToken", "", map[string]any{}).mustErr(t, 403, "M_THREEPID_DENIED")
	ts.do("POST", v3+"/account/password/email/requestToken", "", map[string]any{}).mustErr(t, 400, "M_THREEPID_NOT_FOUND")
	ts.do("POST", v3+"/account/3pid/delete", tok, map[string]any{"medium": "email", "address": "a@b.c"}).must(t, 200)
}

func TestProfile(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	bob, _ := ts.register("bob", "password1")
	me := v3 + "/profile/@alice:test.local"
	ts.do("PUT", me+"/displayname", tok, map[string]any{"displayname": "Alice 🌸"}).must(t, 200)
	ts.do("PUT", me+"/avatar_url", tok, map[string]any{"avatar_url": "mxc://test.local/abc123"}).must(t, 200)
	r := ts.do("GET", me, tok, nil).must(t, 200)
	if r.str("displayname") != "Alice 🌸" || r.str("avatar_url") != "mxc://test.local/abc123" {
		t.Fatal(r.Raw)
	}
	if ts.do("GET", me+"/displayname", tok, nil).must(t, 200).str("displayname") != "Alice 🌸" {
		t.Fatal("field")
	}
	if dn, av, err := ts.svc.Profile(context.Background(), "@alice:test.local"); dn != "Alice 🌸" || av == "" || err != nil {
		t.Fatal(dn, av, err)
	}
	if got := ts.rooms.profiles[len(ts.rooms.profiles)-1]; got != "Alice 🌸|mxc://test.local/abc123" {
		t.Fatalf("rooms told %q", got)
	}
	ts.do("DELETE", me+"/avatar_url", tok, nil).must(t, 200)
	ts.do("GET", me+"/avatar_url", tok, nil).mustErr(t, 404, "M_NOT_FOUND")
	ts.do("PUT", me+"/displayname", tok, map[string]any{"displayname": ""}).must(t, 200)
	if r := ts.do("GET", me, tok, nil).must(t, 200); r.Raw != "{}" {
		t.Fatal(r.Raw)
	}
	for _, tc := range []struct {
		name, path, token string
		body              any
		status            int
		code              string
	}{
		{"someone else's", me + "/displayname", bob, map[string]any{"displayname": "x"}, 403, "M_FORBIDDEN"},
		{"no token", me + "/displayname", "", map[string]any{"displayname": "x"}, 401, "M_MISSING_TOKEN"},
		{"number", me + "/displayname", tok, map[string]any{"displayname": 5}, 400, "M_BAD_JSON"},
		{"null", me + "/displayname", tok, map[string]any{"displayname": nil}, 400, "M_BAD_JSON"},
		{"missing", me + "/displayname", tok, map[string]any{}, 400, "M_MISSING_PARAM"},
		{"too long", me + "/displayname", tok, map[string]any{"displayname": strings.Repeat("x", 257)}, 400, "M_INVALID_PARAM"},
		{"not mxc", me + "/avatar_url", tok, map[string]any{"avatar_url": "https://x/y"}, 400, "M_INVALID_PARAM"},
		{"avatar too long", me + "/avatar_url", tok, map[string]any{"avatar_url": "mxc://a/" + strings.Repeat("x", 1000)}, 400, "M_INVALID_PARAM"},
		{"other field", me + "/m.tz", tok, map[string]any{"m.tz": "Europe/Paris"}, 403, "M_FORBIDDEN"},
		{"not json", me + "/displayname", tok, "{", 400, "M_NOT_JSON"},
		{"bad user id", v3 + "/profile/alice/displayname", tok, map[string]any{"displayname": "x"}, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.do("PUT", tc.path, tc.token, tc.body).mustErr(t, tc.status, tc.code)
		})
	}
	ts.do("GET", v3+"/profile/nobody", tok, nil).mustErr(t, 400, "M_INVALID_PARAM")
}

// TestProfileLookupPolicy attacks profile lookups (issue 19, item 8): by
// default, without a token nobody's profile is readable, and a logged-in
// user reads only their own and those of users they share a room with;
// unknown users answer like strangers, so lookups enumerate no accounts.
// profile_lookup = open restores the spec's open lookups.
func TestProfileLookupPolicy(t *testing.T) {
	for _, policy := range []string{ProfileLookupSharedRooms, ProfileLookupAuthenticated, ProfileLookupOpen} {
		t.Run(policy, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) { c.ProfileLookup = policy })
			alice, _ := ts.register("alice", "password1")
			bob, _ := ts.register("bob", "password1")
			carol, _ := ts.register("carol", "password1")
			ts.rooms.sharing = map[[2]spec.UserID]bool{{"@alice:test.local", "@bob:test.local"}: true}
			want := func(token, user string, status int) {
				t.Helper()
				for _, p := range []string{"", "/displayname"} {
					if r := ts.do("GET", v3+"/profile/"+user+p, token, nil); r.Status != status {
						t.Errorf("GET /profile/%s%s with token %v: %d %s, want %d", user, p, token != "", r.Status, r.Raw, status)
					}
				}
			}
			// Everyone reads their own profile, and a room-mate's.
			want(alice, "@alice:test.local", 200)
			want(carol, "@carol:test.local", 200)
			want(bob, "@alice:test.local", 200)
			switch policy {
			case ProfileLookupSharedRooms:
				want("", "@alice:test.local", 401)
				want(carol, "@alice:test.local", 403)
				want(carol, "@nobody:test.local", 403) // as a stranger: no enumeration
				want(alice, "@alice:elsewhere", 403)
			case ProfileLookupAuthenticated:
				want("", "@alice:test.local", 401)
				want(carol, "@alice:test.local", 200)
				want(carol, "@nobody:test.local", 404)
			case ProfileLookupOpen:
				want("", "@alice:test.local", 200)
				want("", "@nobody:test.local", 404)
				want("", "@alice:elsewhere", 404)
			}
		})
	}
}

func TestAccountData(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	bob, _ := ts.register("bob", "password1")
	user := spec.UserID("@alice:test.local")
	ctx := context.Background()
	base := v3 + "/user/@alice:test.local"
	room := "!room:test.local"
	start := ts.db.Position()
	if ts.svc.AccountDataPosition(user) != 0 {
		t.Fatal("position before any data")
	}
	ts.do("GET", base+"/account_data/org.example.a", tok, nil).mustErr(t, 404, "M_NOT_FOUND")
	ts.do("PUT", base+"/account_data/org.example.a", tok, `{"v": 1}`).must(t, 200)
	p1 := ts.svc.AccountDataPosition(user)
	ts.do("PUT", base+"/account_data/org.example.a", tok, map[string]any{"v": 2}).must(t, 200)
	p2 := ts.svc.AccountDataPosition(user)
	ts.do("PUT", base+"/rooms/"+room+"/account_data/org.example.r", tok, map[string]any{"r": true}).must(t, 200)
	p3 := ts.svc.AccountDataPosition(user)
	if !(start < p1 && p1 < p2 && p2 < p3) || p3 != ts.db.Position() {
		t.Fatalf("positions %d %d %d %d", start, p1, p2, p3)
	}
	if r := ts.do("GET", base+"/account_data/org.example.a", tok, nil).must(t, 200); r.Raw != `{"v":2}` {
		t.Fatal(r.Raw)
	}
	ts.do("GET", base+"/rooms/"+room+"/account_data/org.example.r", tok, nil).must(t, 200)
	ts.do("GET", base+"/rooms/"+room+"/account_data/org.example.a", tok, nil).mustErr(t, 404, "M_NOT_FOUND")
	// Changes in a range: the latest content per type.
	global, rooms, err := ts.svc.AccountData(ctx, user, start, p3)
	if err != nil || len(global) != 1 || string(global[0]) != `{"type":"org.example.a","content":{"v":2}}` || len(rooms[spec.RoomID(room)]) != 1 {
		t.Fatalf("%s %v %v", global, rooms, err)
	}
	global, rooms, _ = ts.svc.AccountData(ctx, user, p2, p3)
	if len(global) != 0 || len(rooms) != 1 {
		t.Fatalf("since p2: %s %v", global, rooms)
	}
	// An up-to-date since reads nothing.
	before := ts.db.ReadCount()
	if g, r, _ := ts.svc.AccountData(ctx, user, p3, p3+10); g != nil || r != nil || ts.db.ReadCount() != before {
		t.Fatal("read for nothing")
	}
	ts.notes.mu.Lock()
	if len(ts.notes.calls) != 3 || ts.notes.calls[2] != p3 {
		t.Fatalf("notify %v", ts.notes.calls)
	}
	ts.notes.mu.Unlock()
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		code                      string
	}{
		{"other user", "PUT", base + "/account_data/x.y", bob, map[string]any{}, 403, "M_FORBIDDEN"},
		{"other user read", "GET", base + "/account_data/org.example.a", bob, nil, 403, "M_FORBIDDEN"},
		{"fully read", "PUT", base + "/account_data/m.fully_read", tok, map[string]any{"event_id": "$x"}, 405, "M_BAD_JSON"},
		{"push rules", "PUT", base + "/rooms/" + room + "/account_data/m.push_rules", tok, map[string]any{}, 405, "M_BAD_JSON"},
		{"array", "PUT", base + "/account_data/x.y", tok, "[1]", 400, "M_BAD_JSON"},
		{"null", "PUT", base + "/account_data/x.y", tok, "null", 400, "M_BAD_JSON"},
		{"not json", "PUT", base + "/account_data/x.y", tok, "{x", 400, "M_NOT_JSON"},
		{"bad room", "PUT", base + "/rooms/room/account_data/x.y", tok, map[string]any{}, 400, "M_INVALID_PARAM"},
		{"long type", "PUT", base + "/account_data/" + strings.Repeat("t", 256), tok, map[string]any{}, 400, "M_INVALID_PARAM"},
		{"tag not object", "PUT", base + "/rooms/" + room + "/tags/u.x", tok, "[]", 400, "M_BAD_JSON"},
		{"tag order string", "PUT", base + "/rooms/" + room + "/tags/u.x", tok, map[string]any{"order": "high"}, 400, "M_BAD_JSON"},
		{"tag too long", "PUT", base + "/rooms/" + room + "/tags/" + strings.Repeat("t", 256), tok, map[string]any{}, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.do(tc.method, tc.path, tc.token, tc.body).mustErr(t, tc.status, tc.code)
		})
	}
	// Tags live in m.tag.
	ts.do("PUT", base+"/rooms/"+room+"/tags/m.favourite", tok, map[string]any{"order": 0.25}).must(t, 200)
	ts.do("PUT", base+"/rooms/"+room+"/tags/u.work", tok, map[string]any{}).must(t, 200)
	r := ts.do("GET", base+"/rooms/"+room+"/tags", tok, nil).must(t, 200)
	tags := r.Body["tags"].(map[string]any)
	if len(tags) != 2 || tags["m.favourite"].(map[string]any)["order"] != 0.25 {
		t.Fatal(r.Raw)
	}
	ts.do("DELETE", base+"/rooms/"+room+"/tags/u.work", tok, nil).must(t, 200)
	content, _, _ := ts.svc.GetAccountData(ctx, user, spec.RoomID(room), "m.tag")
	var ev map[string]map[string]json.RawMessage
	json.Unmarshal(content, &ev)
	if len(ev["tags"]) != 1 {
		t.Fatalf("m.tag: %s", content)
	}
	if r := ts.do("GET", base+"/rooms/!other:test.local/tags", tok, nil).must(t, 200); r.Raw != `{"tags":{}}` {
		t.Fatal(r.Raw)
	}
	// Server-managed types can be set through the Go API.
	if err := ts.svc.SetAccountData(ctx, user, spec.RoomID(room), "m.fully_read", json.RawMessage(`{"event_id":"$e"}`)); err != nil {
		t.Fatal(err)
	}
	ts.do("GET", base+"/rooms/"+room+"/account_data/m.fully_read", tok, nil).must(t, 200)
}

func TestOpenID(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "password1")
	bob, _ := ts.register("bob", "password1")
	path := v3 + "/user/@alice:test.local/openid/request_token"
	r := ts.do("POST", path, tok, map[string]any{}).must(t, 200)
	if r.str("token_type") != "Bearer" || r.str("matrix_server_name") != "test.local" || r.Body["expires_in"].(float64) != 3600 {
		t.Fatal(r.Raw)
	}
	info := ts.do("GET", "/_matrix/federation/v1/openid/userinfo?access_token="+r.str("access_token"), "", nil).must(t, 200)
	if info.str("sub") != "@alice:test.local" {
		t.Fatal(info.Raw)
	}
	ts.do("GET", "/_matrix/federation/v1/openid/userinfo?access_token=cho_nope", "", nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("GET", "/_matrix/federation/v1/openid/userinfo", "", nil).mustErr(t, 401, "M_MISSING_TOKEN")
	// An OpenID token is no access token, and the reverse.
	ts.do("GET", v3+"/account/whoami", r.str("access_token"), nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("GET", "/_matrix/federation/v1/openid/userinfo?access_token="+tok, "", nil).mustErr(t, 401, "M_UNKNOWN_TOKEN")
	ts.do("POST", path, bob, map[string]any{}).mustErr(t, 403, "M_FORBIDDEN")
}

func sharedSecretMAC(secret, nonce, user, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00"))
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	return hex.EncodeToString(m.Sum(nil))
}

func TestSharedSecretRegistration(t *testing.T) {
	off := newTestServer(t)
	off.do("GET", "/_synapse/admin/v1/register", "", nil).mustErr(t, 403, "M_FORBIDDEN")

	const secret = "s3cret-shared"
	ts := newTestServer(t, withRegistration(RegistrationClosed), func(c *Config) { c.SharedSecret = secret })
	nonce := ts.do("GET", "/_synapse/admin/v1/register", "", nil).must(t, 200).str("nonce")
	body := map[string]any{"nonce": nonce, "username": "root", "password": "password1", "admin": true, "displayname": "Root",
		"mac": sharedSecretMAC(secret, nonce, "root", "password1", true)}
	r := ts.do("POST", "/_synapse/admin/v1/register", "", body).must(t, 200)
	if r.str("user_id") != "@root:test.local" || r.str("access_token") == "" {
		t.Fatal(r.Raw)
	}
	if admin, _ := ts.svc.IsAdmin(context.Background(), "@root:test.local"); !admin {
		t.Fatal("not admin")
	}
	if dn, _, _ := ts.svc.Profile(context.Background(), "@root:test.local"); dn != "Root" {
		t.Fatal(dn)
	}
	// The nonce is single use.
	ts.do("POST", "/_synapse/admin/v1/register", "", body).mustErr(t, 400, "M_INVALID_PARAM")
	// A wrong MAC (admin flag flipped).
	nonce = ts.do("GET", "/_synapse/admin/v1/register", "", nil).must(t, 200).str("nonce")
	ts.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": nonce, "username": "eve", "password": "password1", "admin": true,
		"mac": sharedSecretMAC(secret, nonce, "eve", "password1", false)}).mustErr(t, 403, "M_FORBIDDEN")
	if ts.countUsers() != 1 {
		t.Fatal("eve was created")
	}
	ts.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": 5}).mustErr(t, 400, "M_BAD_JSON")
}

// TestAccountDataDeletion: MSC3391 deletes account data with DELETE or an
// empty PUT; the deletion reaches an incremental sync as empty content, and
// GET and an initial sync no longer see the type. MSC3890: a device's local
// notification settings go when the device does.
func TestAccountDataDeletion(t *testing.T) {
	ts := newTestServer(t)
	tok, _ := ts.register("alice", "pw-alice-1")
	user := spec.UserID("@alice:test.local")
	ctx := context.Background()
	base := v3 + "/user/@alice:test.local"
	unstable := "/_matrix/client/unstable/org.matrix.msc3391/user/@alice:test.local"
	room := "!room:test.local"

	for _, tc := range []struct{ name, path, del string }{
		{"global by DELETE", "/account_data/org.example.a", "DELETE"},
		{"global by empty PUT", "/account_data/org.example.b", "PUT"},
		{"room by DELETE", "/rooms/" + room + "/account_data/org.example.c", "DELETE"},
		{"room by empty PUT", "/rooms/" + room + "/account_data/org.example.d", "PUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.do("PUT", base+tc.path, tok, map[string]any{"v": 1}).must(t, 200)
			before := ts.svc.AccountDataPosition(user)
			if tc.del == "DELETE" {
				ts.do("DELETE", unstable+tc.path, tok, nil).must(t, 200)
			} else {
				ts.do("PUT", base+tc.path, tok, map[string]any{}).must(t, 200)
			}
			ts.do("GET", base+tc.path, tok, nil).mustErr(t, 404, "M_NOT_FOUND")
			after := ts.svc.AccountDataPosition(user)
			global, rooms, err := ts.svc.AccountData(ctx, user, before, after)
			if err != nil {
				t.Fatal(err)
			}
			changed := append(global, rooms[spec.RoomID(room)]...)
			if len(changed) != 1 || gjson.GetBytes(changed[0], "content").Raw != "{}" {
				t.Fatalf("incremental: %s", changed)
			}
			global, rooms, _ = ts.svc.AccountData(ctx, user, 0, after)
			for _, ev := range append(global, rooms[spec.RoomID(room)]...) {
				if strings.HasSuffix(tc.path, gjson.GetBytes(ev, "type").Str) {
					t.Fatalf("initial sync still has %s", ev)
				}
			}
			// Deleting again is fine and says nothing new.
			ts.do("DELETE", unstable+tc.path, tok, nil).must(t, 200)
			if ts.svc.AccountDataPosition(user) != after {
				t.Fatal("a second deletion took a position")
			}
		})
	}
	ts.do("DELETE", unstable+"/account_data/m.push_rules", tok, nil).mustErr(t, 405, "M_BAD_JSON")
	ts.do("DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/@bob:test.local/account_data/x.y", tok, nil).mustErr(t, 403, "M_FORBIDDEN")

	t.Run("local notification settings go with their device", func(t *testing.T) {
		second := ts.login("alice", "pw-alice-1").must(t, 200)
		typ := "/account_data/org.matrix.msc3890.local_notification_settings." + second.str("device_id")
		ts.do("PUT", base+typ, tok, map[string]any{"is_silenced": true}).must(t, 200)
		other := "/account_data/org.matrix.msc3890.local_notification_settings.OTHER"
		ts.do("PUT", base+other, tok, map[string]any{"is_silenced": true}).must(t, 200)
		ts.do("POST", v3+"/logout", second.str("access_token"), map[string]any{}).must(t, 200)
		ts.do("GET", base+typ, tok, nil).mustErr(t, 404, "M_NOT_FOUND")
		ts.do("GET", base+other, tok, nil).must(t, 200)
	})
}
