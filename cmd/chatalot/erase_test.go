package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/storage"
)

// fillAccount gives alice data of every kind a user can leave on the
// server, in a room bob made: a profile (display name and avatar), messages
// with an image, a thread reply, a reaction, a receipt, a tag and room
// account data, global account data, a push rule, a pusher, a filter,
// device keys, one-time and fallback keys, cross-signing keys, a key
// backup, a dehydrated device, a delayed event, a to-device message to
// bob, a report, and three uploads: her avatar, an image only her message
// shows, and an image bob posted too (which the room still needs after
// the erasure). It returns the room, the tokens, the canary words that
// must leave the server, and the three mxc:// URIs.
func fillAccount(t *testing.T, base string) (room, alice, bob string, canaries []string, avatar, own, shared string) {
	t.Helper()
	alice = registerUser(t, base, "alice")
	bob = registerUser(t, base, "bob")
	const me = "@alice:localhost"
	u := url.PathEscape(me)
	upload := func(body string) string {
		return between(mustRequest(t, "POST", base+"/_matrix/media/v3/upload?filename=x.txt", alice, body), `"content_uri":"`, `"`)
	}
	avatar, own, shared = upload("avatar bytes erasecanary-avatar"), upload("own image erasecanary-own"), upload("shared image erasecanary-shared")
	canaries = []string{"Alicecanary", "erasecanary-text", "erasecanary-thread", "erasecanary-account", "erasecanary-filter",
		"erasecanary-pusher", "erasecanary-delayed", "erasecanary-todevice", "erasecanary-report", "erasecanary-backup", "erasecanary-pickle"}
	mustRequest(t, "PUT", base+"/_matrix/client/v3/profile/"+u+"/displayname", alice, `{"displayname":"Alicecanary"}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/profile/"+u+"/avatar_url", alice, `{"avatar_url":"`+avatar+`"}`)

	room = between(mustRequest(t, "POST", base+"/_matrix/client/v3/createRoom", bob, `{"preset":"public_chat"}`), `"room_id":"`, `"`)
	r := url.PathEscape(room)
	mustRequest(t, "POST", base+"/_matrix/client/v3/join/"+r, alice, `{}`)
	send := func(token, typ, txn, body string) string {
		raw := mustRequest(t, "PUT", base+"/_matrix/client/v3/rooms/"+r+"/send/"+typ+"/"+txn, token, body)
		return between(raw, `"event_id":"`, `"`)
	}
	long := strings.Repeat("erasecanary-text fills the page ", 64)
	for i := 0; i < 100; i++ {
		send(alice, "m.room.message", fmt.Sprint("long", i), `{"msgtype":"m.text","body":"`+long+`"}`)
	}
	root := send(alice, "m.room.message", "a1", `{"msgtype":"m.text","body":"erasecanary-text one"}`)
	send(alice, "m.room.message", "a2", `{"msgtype":"m.image","body":"pic","url":"`+own+`"}`)
	send(alice, "m.room.message", "a3", `{"msgtype":"m.image","body":"pic","url":"`+shared+`"}`)
	bobs := send(bob, "m.room.message", "b1", `{"msgtype":"m.image","body":"same pic","url":"`+shared+`"}`)
	send(alice, "m.room.message", "a4", `{"msgtype":"m.text","body":"erasecanary-thread","m.relates_to":{"rel_type":"m.thread","event_id":"`+root+`"}}`)
	send(alice, "m.reaction", "a5", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"`+bobs+`","key":"erasecanary-text"}}`)
	mustRequest(t, "POST", base+"/_matrix/client/v3/rooms/"+r+"/receipt/m.read/"+url.PathEscape(bobs), alice, `{}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/user/"+u+"/rooms/"+r+"/tags/u.erasecanary-account", alice, `{"order":0.5}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/user/"+u+"/rooms/"+r+"/account_data/org.example.erasecanary-account", alice, `{"x":1}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/user/"+u+"/account_data/org.example.settings", alice, `{"note":"erasecanary-account"}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/pushrules/global/content/erasecanary-account", alice,
		`{"pattern":"erasecanary-account","actions":["notify"]}`)
	mustRequest(t, "POST", base+"/_matrix/client/v3/pushers/set", alice, `{"kind":"http","app_id":"org.example.app","pushkey":"erasecanary-pusher",
		"app_display_name":"App","device_display_name":"Phone","lang":"en","data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}`)
	mustRequest(t, "POST", base+"/_matrix/client/v3/user/"+u+"/filter", alice, `{"room":{"timeline":{"types":["erasecanary-filter"]}}}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/rooms/"+r+"/send/m.room.message/later?org.matrix.msc4140.delay=3600000", alice,
		`{"msgtype":"m.text","body":"erasecanary-delayed"}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/sendToDevice/org.example.secret/td1", alice,
		`{"messages":{"@bob:localhost":{"*":{"note":"erasecanary-todevice"}}}}`)
	mustRequest(t, "POST", base+"/_matrix/client/v3/rooms/"+r+"/report/"+url.PathEscape(bobs), alice, `{"reason":"erasecanary-report"}`)

	// End-to-end keys: the device's keys, one-time and fallback keys, a
	// cross-signing set, a backup with a key, a dehydrated device.
	device := between(mustRequest(t, "GET", base+"/_matrix/client/v3/account/whoami", alice, ""), `"device_id":"`, `"`)
	deviceKeys := func(id string, extra map[string]any) json.RawMessage {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		dk := map[string]any{"user_id": me, "device_id": id,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"ed25519:" + id: base64.RawStdEncoding.EncodeToString(pub), "curve25519:" + id: fakeKey(len(id))}}
		for k, v := range extra {
			dk[k] = v
		}
		raw, _ := json.Marshal(dk)
		signed, err := events.SignJSON(raw, events.SigningKey{ServerName: me, KeyID: "ed25519:" + id, Private: priv})
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	mustRequest(t, "POST", base+"/_matrix/client/v3/keys/upload", alice, `{"device_keys":`+string(deviceKeys(device, nil))+`,
		"one_time_keys":{"curve25519:AAAA":"`+fakeKey(1)+`","curve25519:AAAB":"`+fakeKey(2)+`"},
		"fallback_keys":{"curve25519:FFFF":"`+fakeKey(3)+`"}}`)
	signedKey := func(usage string, priv, signer ed25519.PrivateKey) map[string]any {
		pub := base64.RawStdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
		raw, _ := json.Marshal(map[string]any{"user_id": me, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}})
		if signer != nil {
			sp := base64.RawStdEncoding.EncodeToString(signer.Public().(ed25519.PublicKey))
			var err error
			if raw, err = events.SignJSON(raw, events.SigningKey{ServerName: me, KeyID: "ed25519:" + sp, Private: signer}); err != nil {
				t.Fatal(err)
			}
		}
		var out map[string]any
		json.Unmarshal(raw, &out)
		return out
	}
	_, master, _ := ed25519.GenerateKey(rand.Reader)
	_, self, _ := ed25519.GenerateKey(rand.Reader)
	_, usr, _ := ed25519.GenerateKey(rand.Reader)
	cs, _ := json.Marshal(map[string]any{"master_key": signedKey("master", master, nil),
		"self_signing_key": signedKey("self_signing", self, master), "user_signing_key": signedKey("user_signing", usr, master)})
	mustRequest(t, "POST", base+"/_matrix/client/v3/keys/device_signing/upload", alice, string(cs))
	ver := between(mustRequest(t, "POST", base+"/_matrix/client/v3/room_keys/version", alice,
		`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"erasecanary-backup"}}`), `"version":"`, `"`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/room_keys/keys/"+r+"/session1?version="+ver, alice,
		`{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"erasecanary-backup","ephemeral":"y","mac":"z"}}`)
	dehydrated := base64.RawStdEncoding.EncodeToString([]byte("dehydrated-device-id-32-bytes!!!"))
	body, _ := json.Marshal(map[string]any{"device_id": dehydrated, "initial_device_display_name": "Dehydrated",
		"device_data": map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "erasecanary-pickle"},
		"device_keys": deviceKeys(dehydrated, map[string]any{"dehydrated": true})})
	mustRequest(t, "PUT", base+"/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", alice, string(body))
	return room, alice, bob, canaries, avatar, own, shared
}

// textTraces counts, per table, the rows in which any column holds one of
// the strings (roomTraces with no positions).
func textTraces(t *testing.T, app *App, needles ...string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, n := range needles {
		for tb, c := range roomTraces(t, app.db, n, nil, nil) {
			out[tb] += c
		}
	}
	return out
}

// TestAccountErasureLeavesNothing: the admin API's deactivation with erase
// removes every row that names the user or holds what they wrote, but what
// the spec and the server's own records keep; answers the rows removed per
// table (a dry run first says the same and changes nothing but the audit
// log); serves the user's events redacted, with their membership and no
// profile; deletes the uploads no room needs and keeps the one bob's
// message shows; and takes the blobs off the disk.
func TestAccountErasureLeavesNothing(t *testing.T) {
	app, srv, boss := newAdminTestApp(t)
	room, alice, bob, canaries, avatar, own, shared := fillAccount(t, srv.URL)
	const me = "@alice:localhost"
	r := url.PathEscape(room)
	before := textTraces(t, app, me)
	for _, tb := range []string{"users", "devices", "access_tokens", "account_data", "events", "room_state", "receipts", "pushers",
		"filters", "delayed_events", "to_device_messages", "content_reports", "key_devices", "device_keys", "one_time_keys",
		"fallback_keys", "cross_signing_keys", "backup_versions", "backup_keys", "dehydrated_devices", "media", "push_users",
		"event_relations", "txn_ids"} {
		if before[tb] == 0 {
			t.Errorf("the test account has no row in %s: %v", tb, before)
		}
	}
	if n := textTraces(t, app, canaries...); len(n) == 0 {
		t.Fatal("the canaries are nowhere before the erasure")
	}

	// A dry run answers the figures and changes nothing.
	state := stripAudit(dbState(t, app))
	raw := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/deactivate/"+url.PathEscape(me), boss, `{"erase":true,"dry_run":true}`)
	var dry struct {
		Erased struct {
			DryRun  bool             `json:"dry_run"`
			Removed map[string]int64 `json:"removed_rows"`
			Media   struct{ Media, Files int }
			Kept    int64 `json:"media_kept"`
		}
	}
	if err := json.Unmarshal([]byte(raw), &dry); err != nil || !dry.Erased.DryRun {
		t.Fatalf("dry run: %s", raw)
	}
	if got := stripAudit(dbState(t, app)); got != state {
		t.Fatalf("the dry run changed the database:\n%s\n%s", state, got)
	}
	if dry.Erased.Removed["events_redacted"] < 105 || dry.Erased.Media.Media != 2 || dry.Erased.Kept != 1 {
		t.Fatalf("dry run figures: %s", raw)
	}
	if code, _ := request(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami", alice, ""); code != 200 {
		t.Fatal("the dry run logged alice out")
	}

	space := func() storage.Space {
		var sp storage.Space
		json.Unmarshal([]byte(mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/database", boss, "")), &sp)
		return sp
	}
	app.db.Compact(context.Background()) // the WAL back into the file, for a fair "before"
	full := space()
	raw = mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/deactivate/"+url.PathEscape(me), boss, `{"erase":true}`)
	erased := space()
	app.db.Compact(context.Background())
	t.Logf("database: %d bytes before the erasure, %d after, %d after a compaction", full.FileBytes, erased.FileBytes, space().FileBytes)
	if erased.FileBytes >= full.FileBytes {
		t.Errorf("the erasure freed no space: %d → %d bytes", full.FileBytes, erased.FileBytes)
	}
	var done struct {
		Erased struct {
			Removed map[string]int64 `json:"removed_rows"`
			Total   int64            `json:"total_rows"`
			Media   struct {
				Media, Files int
				Bytes        int64
			}
		}
	}
	json.Unmarshal([]byte(raw), &done)
	t.Logf("erasure: %d rows, %d media (%d files, %d bytes): %v", done.Erased.Total, done.Erased.Media.Media,
		done.Erased.Media.Files, done.Erased.Media.Bytes, done.Erased.Removed)
	for _, tb := range []string{"events_redacted", "pushers", "devices", "device_keys", "filters", "delayed_events", "cross_signing_keys", "backup_keys", "media"} {
		if done.Erased.Removed[tb] == 0 {
			t.Errorf("the erasure removed nothing from %s: %s", tb, raw)
		}
	}

	// Nothing the user wrote is left anywhere in the database.
	if left := withoutAudit(textTraces(t, app, canaries...)); len(left) > 0 {
		t.Errorf("rows still hold what the erased user wrote: %v", left)
	}
	// What still names the user is what is kept on purpose: the account
	// row, the DAG (sender, state_key), the device list position, the
	// erased flag and the audit log.
	kept := map[string]bool{"users": true, "events": true, "room_state": true, "device_list_changes": true, "admin_user_flags": true}
	for tb, n := range withoutAudit(textTraces(t, app, me)) {
		if !kept[tb] {
			t.Errorf("%s still has %d rows naming the erased user", tb, n)
		}
	}
	ctx := context.Background()
	var named int
	app.db.QueryRow(ctx, `SELECT count(*) FROM events WHERE instr(json, $1) > 0 AND sender <> $1 AND coalesce(state_key, '') <> $1`, me).Scan(&named)
	if named > 0 {
		t.Errorf("%d events by others name the erased user", named)
	}
	var profile int
	app.db.QueryRow(ctx, `SELECT count(*) FROM users WHERE user_id = $1 AND (displayname IS NOT NULL OR avatar_url IS NOT NULL)`, me).Scan(&profile)
	if profile > 0 {
		t.Error("the erased user's profile is still stored")
	}

	// Through the API: events redacted, memberships without profile, no
	// keys, no profile, media gone but what bob's message needs.
	msgs := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/messages?dir=b&limit=100", bob, "")
	for _, c := range canaries {
		if strings.Contains(msgs, c) {
			t.Errorf("/messages still shows %q: %.600s", c, msgs)
		}
	}
	if strings.Contains(msgs, own) || !strings.Contains(msgs, shared) {
		t.Errorf("/messages: alice's image should be gone and bob's stay: %.600s", msgs)
	}
	members := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/members", bob, "")
	if !strings.Contains(members, `"membership":"leave"`) || strings.Contains(members, "Alicecanary") {
		t.Errorf("members: %.600s", members)
	}
	if code, _ := request(t, "GET", srv.URL+"/_matrix/client/v3/profile/"+url.PathEscape(me), bob, ""); code != 404 && code != 403 {
		t.Errorf("the erased profile answers %d", code)
	}
	keys := mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/keys/query", bob, `{"device_keys":{"`+me+`":[]}}`)
	if strings.Contains(keys, "ed25519:") {
		t.Errorf("keys/query still has the erased user's keys: %s", keys)
	}
	media := func(mxc string) int {
		code, _ := request(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(mxc, "mxc://"), bob, "")
		return code
	}
	if media(avatar) != 404 || media(own) != 404 || media(shared) != 200 {
		t.Errorf("media after erasure: avatar %d, own %d, shared %d", media(avatar), media(own), media(shared))
	}
	if code, _ := request(t, "GET", srv.URL+"/_matrix/client/v3/account/whoami", alice, ""); code != 401 {
		t.Errorf("the erased account's token answers %d", code)
	}
	// The files of the deleted uploads are off the disk.
	var files int
	filepath.Walk(filepath.Join(app.cfg.DataDir, "media"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			raw, _ := os.ReadFile(p)
			if strings.Contains(string(raw), "erasecanary-own") || strings.Contains(string(raw), "erasecanary-avatar") {
				t.Errorf("%s still holds an erased upload", p)
			}
			files++
		}
		return nil
	})
	// The audit log records the erasure with its figures, and a second
	// erasure finds nothing left to do.
	audit := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/audit_log?limit=100", boss, "")
	for _, a := range []string{`"erase_user"`, `"erase_user_dry_run"`, `"events_redacted"`} {
		if !strings.Contains(audit, a) {
			t.Errorf("audit log has no %s", a)
		}
	}
	again := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/deactivate/"+url.PathEscape(me), boss, `{"erase":true}`)
	if !strings.Contains(again, `"total_rows":0`) {
		t.Errorf("a second erasure: %s", again)
	}
	if files == 0 {
		t.Error("the upload bob's message needs is gone from the disk")
	}
}

// TestClientErasure: a user's own deactivation with erase through the
// client API erases the account as the admin API does.
func TestClientErasure(t *testing.T) {
	app, srv, _ := newAdminTestApp(t)
	_, alice, _, canaries, _, _, _ := fillAccount(t, srv.URL)
	mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/account/deactivate", alice,
		`{"erase":true,"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"correct horse battery staple"}}`)
	if left := withoutAudit(textTraces(t, app, canaries...)); len(left) > 0 {
		t.Errorf("rows still hold what the erased user wrote: %v", left)
	}
	kept := map[string]bool{"users": true, "events": true, "room_state": true, "device_list_changes": true, "admin_user_flags": true}
	for tb, n := range withoutAudit(textTraces(t, app, "@alice:localhost")) {
		if !kept[tb] {
			t.Errorf("%s still has %d rows naming the erased user", tb, n)
		}
	}
}
