package main

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestForgottenRoomsCollected: a room every local member left and forgot
// is purged (every row of every package, as an admin purge) by the
// collection the retention pass runs, here called through the admin API;
// a room one member left without forgetting, and a room in the directory,
// stay. A dry run lists what would go and purges nothing.
func TestForgottenRoomsCollected(t *testing.T) {
	advance := testClockAt(t)
	app, srv, boss := newAdminTestApp(t)
	alice := registerUser(t, srv.URL, "alice")
	bob := registerUser(t, srv.URL, "bob")
	mk := func(body string) string {
		return between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice, body), `"room_id":"`, `"`)
	}
	forgotten, remembered, listed := mk(`{"preset":"public_chat"}`), mk(`{"preset":"public_chat"}`), mk(`{"preset":"public_chat","visibility":"public"}`)
	for _, room := range []string{forgotten, remembered, listed} {
		r := url.PathEscape(room)
		mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/join/"+r, bob, `{}`)
		mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/send/m.room.message/t1", bob, `{"msgtype":"m.text","body":"gcword"}`)
		for _, tok := range []string{alice, bob} {
			mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+r+"/leave", tok, `{}`)
			if room != remembered || tok == alice {
				mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+r+"/forget", tok, `{}`)
			}
		}
	}
	ids, positions := roomEvents(t, app.db, forgotten)
	// Within the grace period (forgotten_room_retention_period, 24h by
	// default) nothing is collected.
	if out := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/chatalot/rooms/collect_forgotten?dry_run=true", boss, ""); strings.Contains(out, forgotten) {
		t.Fatalf("collected within the grace period: %s", out)
	}
	advance(25 * time.Hour)
	dry := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/chatalot/rooms/collect_forgotten?dry_run=true", boss, "")
	if !strings.Contains(dry, forgotten) || strings.Contains(dry, remembered) || strings.Contains(dry, listed) {
		t.Fatalf("dry run: %s", dry)
	}
	if len(withoutAudit(roomTraces(t, app.db, forgotten, ids, positions))) == 0 {
		t.Fatal("the dry run purged the room")
	}
	out := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/chatalot/rooms/collect_forgotten", boss, "")
	if !strings.Contains(out, forgotten) {
		t.Fatalf("collect: %s", out)
	}
	if left := withoutAudit(roomTraces(t, app.db, forgotten, ids, positions)); len(left) > 0 {
		t.Fatalf("rows about the collected room are left: %v", left)
	}
	for _, room := range []string{remembered, listed} {
		if code, _ := request(t, "GET", srv.URL+"/_synapse/admin/v1/rooms/"+url.PathEscape(room), boss, ""); code != 200 {
			t.Errorf("room %s was collected: %d", room, code)
		}
	}
	if audit := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/audit_log?limit=100", boss, ""); !strings.Contains(audit, `"forgotten"`) {
		t.Error("the audit log does not record the collection")
	}
}
