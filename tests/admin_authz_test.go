package tests

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/admin"
	"github.com/chatalot/chatalot/tests/harness"
	"github.com/gin-gonic/gin"
)

// admRoute is one admin endpoint of the authorisation matrix: the route
// template (as the admin package registers it), a concrete path whose
// {placeholders} name fixtures, a body, and the admin's expected status.
type admRoute struct {
	method, tmpl, path string
	body               any
	status             int
}

// admMatrix lists every admin endpoint, in an order where each destructive
// call has a fixture of its own and status queries follow what they ask
// about.
var admMatrix = []admRoute{
	{"GET", "/_synapse/admin/v1/server_version", "/_synapse/admin/v1/server_version", nil, 200},
	{"GET", "/_synapse/admin/v1/chatalot/audit_log", "/_synapse/admin/v1/chatalot/audit_log", nil, 200},
	{"GET", "/_synapse/admin/v1/chatalot/database", "/_synapse/admin/v1/chatalot/database", nil, 200},
	{"POST", "/_synapse/admin/v1/chatalot/database/compact", "/_synapse/admin/v1/chatalot/database/compact", map[string]any{}, 200},
	{"GET", "/_synapse/admin/v2/users", "/_synapse/admin/v2/users", nil, 200},
	{"GET", "/_synapse/admin/v2/users/:userId", "/_synapse/admin/v2/users/{alice}", nil, 200},
	{"PUT", "/_synapse/admin/v2/users/:userId", "/_synapse/admin/v2/users/@newbie:localhost", map[string]any{"password": admPassword, "displayname": "Newbie"}, 201},
	{"GET", "/_synapse/admin/v1/users/:userId/admin", "/_synapse/admin/v1/users/{alice}/admin", nil, 200},
	{"PUT", "/_synapse/admin/v1/users/:userId/admin", "/_synapse/admin/v1/users/@newbie:localhost/admin", map[string]any{"admin": false}, 200},
	{"POST", "/_synapse/admin/v1/reset_password/:userId", "/_synapse/admin/v1/reset_password/@newbie:localhost", map[string]any{"new_password": "another good password"}, 200},
	{"PUT", "/_synapse/admin/v1/suspend/:userId", "/_synapse/admin/v1/suspend/@newbie:localhost", map[string]any{"suspend": false}, 200},
	{"GET", "/_synapse/admin/v1/users/:userId/joined_rooms", "/_synapse/admin/v1/users/{alice}/joined_rooms", nil, 200},
	{"GET", "/_synapse/admin/v1/users/:userId/memberships", "/_synapse/admin/v1/users/{alice}/memberships", nil, 200},
	{"GET", "/_synapse/admin/v2/users/:userId/devices", "/_synapse/admin/v2/users/{alice}/devices", nil, 200},
	{"GET", "/_synapse/admin/v2/users/:userId/devices/:deviceId", "/_synapse/admin/v2/users/{alice}/devices/{device}", nil, 200},
	{"POST", "/_synapse/admin/v2/users/:userId/delete_devices", "/_synapse/admin/v2/users/{alice}/delete_devices", map[string]any{"devices": []string{"NOSUCHDEVICE"}}, 200},
	{"DELETE", "/_synapse/admin/v2/users/:userId/devices/:deviceId", "/_synapse/admin/v2/users/{alice}/devices/{device2}", nil, 200},
	{"GET", "/_synapse/admin/v1/whois/:userId", "/_synapse/admin/v1/whois/{alice}", nil, 200},
	{"GET", "/_synapse/admin/v1/users/:userId/media", "/_synapse/admin/v1/users/{alice}/media", nil, 200},
	{"DELETE", "/_synapse/admin/v1/users/:userId/media", "/_synapse/admin/v1/users/{victim}/media", nil, 200},
	{"GET", "/_synapse/admin/v1/registration_tokens", "/_synapse/admin/v1/registration_tokens", nil, 200},
	{"POST", "/_synapse/admin/v1/registration_tokens/new", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "matrixtok"}, 200},
	{"GET", "/_synapse/admin/v1/registration_tokens/:token", "/_synapse/admin/v1/registration_tokens/matrixtok", nil, 200},
	{"PUT", "/_synapse/admin/v1/registration_tokens/:token", "/_synapse/admin/v1/registration_tokens/matrixtok", map[string]any{"uses_allowed": 5}, 200},
	{"DELETE", "/_synapse/admin/v1/registration_tokens/:token", "/_synapse/admin/v1/registration_tokens/matrixtok", nil, 200},
	{"GET", "/_synapse/admin/v1/rooms", "/_synapse/admin/v1/rooms", nil, 200},
	{"GET", "/_synapse/admin/v1/rooms/:roomId", "/_synapse/admin/v1/rooms/{room}", nil, 200},
	{"GET", "/_synapse/admin/v1/rooms/:roomId/members", "/_synapse/admin/v1/rooms/{room}/members", nil, 200},
	{"GET", "/_synapse/admin/v1/rooms/:roomId/state", "/_synapse/admin/v1/rooms/{room}/state", nil, 200},
	{"GET", "/_synapse/admin/v1/rooms/:roomId/block", "/_synapse/admin/v1/rooms/{room}/block", nil, 200},
	{"PUT", "/_synapse/admin/v1/rooms/:roomId/block", "/_synapse/admin/v1/rooms/{room3}/block", map[string]any{"block": true}, 200},
	{"POST", "/_synapse/admin/v1/purge_history/:roomId", "/_synapse/admin/v1/purge_history/{room}", map[string]any{"delete_local_events": true, "purge_up_to_ts": 1}, 200},
	{"POST", "/_synapse/admin/v1/purge_history/:roomId/:eventId", "/_synapse/admin/v1/purge_history/{room3}/{event3}", map[string]any{}, 200},
	{"GET", "/_synapse/admin/v1/purge_history_status/:purgeId", "/_synapse/admin/v1/purge_history_status/{purge_id}", nil, 200},
	{"GET", "/_synapse/admin/v1/event_reports", "/_synapse/admin/v1/event_reports", nil, 200},
	{"GET", "/_synapse/admin/v1/event_reports/:reportId", "/_synapse/admin/v1/event_reports/{report}", nil, 200},
	{"DELETE", "/_synapse/admin/v1/event_reports/:reportId", "/_synapse/admin/v1/event_reports/{report}", nil, 200},
	{"POST", "/_synapse/admin/v1/media/quarantine/:serverName/:mediaId", "/_synapse/admin/v1/media/quarantine/localhost/{media}", map[string]any{}, 200},
	{"POST", "/_synapse/admin/v1/media/unquarantine/:serverName/:mediaId", "/_synapse/admin/v1/media/unquarantine/localhost/{media}", map[string]any{}, 200},
	{"GET", "/_synapse/admin/v1/media/:serverName/:mediaId", "/_synapse/admin/v1/media/localhost/{media}", nil, 200},
	{"DELETE", "/_synapse/admin/v1/media/:serverName/:mediaId", "/_synapse/admin/v1/media/localhost/{media}", nil, 200},
	{"POST", "/_synapse/admin/v1/media/delete", "/_synapse/admin/v1/media/delete?before_ts=1", map[string]any{}, 200},
	{"POST", "/_synapse/admin/v1/media/:serverName/delete", "/_synapse/admin/v1/media/localhost/delete?before_ts=1", map[string]any{}, 200},
	{"POST", "/_synapse/admin/v1/purge_media_cache", "/_synapse/admin/v1/purge_media_cache?before_ts=1", map[string]any{}, 200},
	{"POST", "/_synapse/admin/v1/chatalot/media/retention", "/_synapse/admin/v1/chatalot/media/retention?dry_run=true", map[string]any{}, 200},
	{"POST", "/_synapse/admin/v1/chatalot/rooms/collect_forgotten", "/_synapse/admin/v1/chatalot/rooms/collect_forgotten?dry_run=true", map[string]any{}, 200},
	{"POST", "/_synapse/admin/v1/send_server_notice", "/_synapse/admin/v1/send_server_notice", map[string]any{"user_id": "{alice}", "content": map[string]any{"msgtype": "m.text", "body": "Maintenance tonight"}}, 200},
	{"PUT", "/_synapse/admin/v1/send_server_notice/:txnId", "/_synapse/admin/v1/send_server_notice/txn1", map[string]any{"user_id": "{alice}", "content": map[string]any{"msgtype": "m.text", "body": "Maintenance done"}}, 200},
	{"DELETE", "/_synapse/admin/v1/rooms/:roomId", "/_synapse/admin/v1/rooms/{room4}", map[string]any{}, 200},
	{"DELETE", "/_synapse/admin/v2/rooms/:roomId", "/_synapse/admin/v2/rooms/{room2}", map[string]any{}, 200},
	{"GET", "/_synapse/admin/v2/rooms/:roomId/delete_status", "/_synapse/admin/v2/rooms/{room2}/delete_status", nil, 200},
	{"GET", "/_synapse/admin/v2/rooms/delete_status/:deleteId", "/_synapse/admin/v2/rooms/delete_status/{delete_id}", nil, 200},
	{"GET", "/_matrix/client/v1/admin/lock/:userId", "/_matrix/client/v1/admin/lock/{victim}", nil, 200}, // alice may read her own
	{"PUT", "/_matrix/client/v1/admin/lock/:userId", "/_matrix/client/v1/admin/lock/{victim}", map[string]any{"locked": false}, 200},
	{"GET", "/_matrix/client/v1/admin/suspend/:userId", "/_matrix/client/v1/admin/suspend/{alice}", nil, 200},
	{"PUT", "/_matrix/client/v1/admin/suspend/:userId", "/_matrix/client/v1/admin/suspend/{victim}", map[string]any{"suspended": false}, 200},
	{"GET", "/_matrix/client/v3/admin/whois/:userId", "/_matrix/client/v3/admin/whois/{victim}", nil, 200},
	{"GET", "/_matrix/client/r0/admin/whois/:userId", "/_matrix/client/r0/admin/whois/{victim}", nil, 200},
	{"POST", "/_synapse/admin/v1/deactivate/:userId", "/_synapse/admin/v1/deactivate/{victim}", map[string]any{"erase": true}, 200},
}

// TestAdminMatrixCoversEveryRoute: the matrix below is the list of every
// route the admin package mounts (bar the public support file).
func TestAdminMatrixCoversEveryRoute(t *testing.T) {
	r := gin.New()
	(&admin.Service{}).Routes(r, func(*gin.Context) {})
	listed := map[string]bool{}
	for _, m := range admMatrix {
		listed[m.method+" "+m.tmpl] = true
	}
	for _, rt := range r.Routes() {
		key := rt.Method + " " + rt.Path
		if key == "GET /.well-known/matrix/support" {
			continue
		}
		if !listed[key] {
			t.Errorf("%s is not in the authorisation matrix", key)
		}
		delete(listed, key)
	}
	for k := range listed {
		t.Errorf("%s is in the matrix but not mounted", k)
	}
}

// TestAdminAuthorisationMatrix calls every admin endpoint without a token
// (401 M_MISSING_TOKEN), as a normal user (403 M_FORBIDDEN, and nothing
// changes) and as the admin (the documented success).
func TestAdminAuthorisationMatrix(t *testing.T) {
	e := admStart(t)
	alice := e.register("alice")
	aliceID, device := e.whoami(alice)
	second := e.login("alice", admPassword)
	_, device2 := e.whoami(second)
	victim := e.register("victim")
	victimID, _ := e.whoami(victim)
	e.upload(victim, "victim's file")
	room := e.createRoom(alice, map[string]any{"name": "Matrix room", "room_alias_name": "matrixroom"})
	event := e.send(alice, room, "hello")
	e.want("POST", e.url("/_matrix/client/v3/rooms/%s/report/%s", room, event), alice, map[string]any{"reason": "test"}, 200, "")
	reports := e.admin("GET", e.s.URL+"/_synapse/admin/v1/event_reports", nil, 200)
	report := reports["event_reports"].([]any)[0].(map[string]any)["id"].(float64)
	media := e.upload(alice, "alice's file")
	room2 := e.createRoom(alice, map[string]any{"name": "Doomed room"})
	room3 := e.createRoom(alice, map[string]any{"name": "Blocked room"})
	event3 := e.send(alice, room3, "old news")
	room4 := e.createRoom(alice, map[string]any{"name": "Doomed room too"})

	fixtures := map[string]string{
		"{alice}": aliceID, "{victim}": victimID, "{device}": device, "{device2}": device2,
		"{room}": room, "{room2}": room2, "{room3}": room3, "{room4}": room4, "{event3}": event3,
		"{report}": strconvF(report), "{media}": media,
	}
	fill := func(s string) string {
		for k, v := range fixtures {
			s = strings.ReplaceAll(s, k, v)
		}
		return s
	}
	fillBody := func(b any) any {
		m, ok := b.(map[string]any)
		if !ok {
			return b
		}
		out := map[string]any{}
		for k, v := range m {
			if s, ok := v.(string); ok {
				v = fill(s)
			}
			out[k] = v
		}
		return out
	}
	escape := func(p string) string {
		// User, room and event IDs go into paths escaped, as clients send them.
		return strings.NewReplacer("#", "%23", "!", "%21", "$", "%24").Replace(p)
	}
	for _, m := range admMatrix {
		path := escape(fill(m.path))
		u := e.s.URL + path
		body := fillBody(m.body)
		if code, out := e.do(m.method, u, "", body); code != http.StatusUnauthorized || out["errcode"] != "M_MISSING_TOKEN" {
			t.Errorf("%s %s without a token: %d %v, want 401 M_MISSING_TOKEN", m.method, m.tmpl, code, out)
		}
		if code, out := e.do(m.method, u, alice, body); code != http.StatusForbidden || out["errcode"] != "M_FORBIDDEN" {
			t.Errorf("%s %s as a normal user: %d %v, want 403 M_FORBIDDEN", m.method, m.tmpl, code, out)
		}
		code, out := e.do(m.method, u, e.token, body)
		want := m.status
		if strings.HasSuffix(m.tmpl, "/database/compact") && harness.OnPostgres(e.s.DataDir) {
			// Compaction is an SQLite file operation; PostgreSQL's
			// autovacuum does that job (TestAdminPurgeFreesDisk).
			want = http.StatusBadRequest
		}
		if code != want {
			t.Errorf("%s %s as the admin: %d %v, want %d", m.method, m.tmpl, code, out, want)
			continue
		}
		if id, ok := out["purge_id"].(string); ok {
			fixtures["{purge_id}"] = id
		}
		if id, ok := out["delete_id"].(string); ok {
			fixtures["{delete_id}"] = id
		}
	}
	// A normal user's calls changed nothing: alice still has her rooms and
	// is no admin; the audit log holds only the admin's actions.
	if code, _ := e.do("GET", e.s.URL+"/_synapse/admin/v1/server_version", alice, nil); code != 403 {
		t.Fatalf("alice became an admin")
	}
	for _, entry := range e.audit() {
		if entry["actor"] != "@boss:localhost" && entry["actor"] != "cli" {
			t.Errorf("audit entry by %v", entry["actor"])
		}
	}
}
