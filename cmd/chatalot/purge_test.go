package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

const purgePassword = "correct horse battery staple"

// newAdminTestApp is newTestApp with a server admin, "boss", created by the
// CLI before the start as an operator would; it returns boss's token.
func newAdminTestApp(t *testing.T, settings ...func(*Config)) (*App, *httptest.Server, string) {
	t.Helper()
	cfg := defaults()
	cfg.DataDir = t.TempDir()
	cfg.Registration = "open"
	cfg.RateLimits = "off"
	cfg.Encryption = "optional"
	for _, f := range settings {
		f(&cfg)
	}
	if err := adminCreateUser([]string{"boss", "--admin", "--password-stdin", "--data-dir", cfg.DataDir},
		strings.NewReader(purgePassword+"\n"), io.Discard); err != nil {
		t.Fatal(err)
	}
	app, err := openApp(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.Router())
	t.Cleanup(func() {
		app.BeginShutdown()
		srv.Close()
		app.Close()
	})
	code, raw := request(t, "POST", srv.URL+"/_matrix/client/v3/login", "",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"boss"},"password":"`+purgePassword+`"}`)
	if code != 200 {
		t.Fatalf("login: %d %s", code, raw)
	}
	return app, srv, between(raw, `"access_token":"`, `"`)
}

// mustRequest sends a request and fails the test unless it answers 200.
func mustRequest(t *testing.T, method, u, token, body string) string {
	t.Helper()
	code, raw := request(t, method, u, token, body)
	if code != 200 {
		t.Fatalf("%s %s: %d %s", method, u, code, raw)
	}
	return raw
}

// roomTraces counts, per table, the rows that still name the room: any
// column holding the room ID or one of its event IDs, and, in a table with
// a position column, any row at one of the room's event positions (search
// words and notifications are keyed by position alone). Stream positions
// are unique server-wide, so no other room's row can match.
func roomTraces(t *testing.T, db *storage.DB, room string, eventIDs []string, positions []int64) map[string]int {
	t.Helper()
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	needles, _ := json.Marshal(append([]string{room}, eventIDs...))
	pos, _ := json.Marshal(positions)
	out := map[string]int{}
	for _, tb := range tables {
		cols, err := db.Query(ctx, `SELECT name FROM pragma_table_info($1)`, tb)
		if err != nil {
			t.Fatal(err)
		}
		var conds []string
		var args []any
		for cols.Next() {
			var c string
			cols.Scan(&c)
			// The column is named with its table: json_each has columns
			// of its own (json, type, key …) that a bare name would mean.
			conds = append(conds, fmt.Sprintf(`EXISTS (SELECT 1 FROM json_each($%d) n WHERE instr(CAST("%s"."%s" AS TEXT), n.value) > 0)`, len(args)+1, tb, c))
			args = append(args, string(needles))
			if c == "position" {
				conds = append(conds, fmt.Sprintf(`"%s".position IN (SELECT value FROM json_each($%d))`, tb, len(args)+1))
				args = append(args, string(pos))
			}
		}
		cols.Close()
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM "`+tb+`" WHERE `+strings.Join(conds, " OR "), args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", tb, err)
		}
		if n > 0 && tb != "stream_position" { // the counter: its value may equal an event's position
			out[tb] = n
		}
	}
	return out
}

// roomEvents lists the room's event IDs and positions.
func roomEvents(t *testing.T, db *storage.DB, room string) ([]string, []int64) {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT event_id, position FROM events WHERE room_id = $1`, room)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	var ps []int64
	for rows.Next() {
		var id string
		var p int64
		rows.Scan(&id, &p)
		ids, ps = append(ids, id), append(ps, p)
	}
	return ids, ps
}

// fillRoom makes a room with data in every package: messages (searchable,
// some long), a thread with a subscription, a reaction, receipts, a tag and
// room account data, notifications and unread counts, a delayed event and
// a key backup entry. It returns the room and its members' tokens.
func fillRoom(t *testing.T, base string, messages int) (room, alice, bob string) {
	t.Helper()
	alice = registerUser(t, base, "alice")
	bob = registerUser(t, base, "bob")
	raw := mustRequest(t, "POST", base+"/_matrix/client/v3/createRoom", alice, `{"preset":"public_chat","name":"Doomed"}`)
	room = between(raw, `"room_id":"`, `"`)
	r := url.PathEscape(room)
	mustRequest(t, "POST", base+"/_matrix/client/v3/join/"+r, bob, `{}`)
	send := func(token, txn, body string) string {
		raw := mustRequest(t, "PUT", base+"/_matrix/client/v3/rooms/"+r+"/send/m.room.message/"+txn, token, body)
		return between(raw, `"event_id":"`, `"`)
	}
	long := strings.Repeat("purgeable words fill pages ", 80)
	var last string
	for i := 0; i < messages; i++ {
		last = send(alice, fmt.Sprint("m", i), fmt.Sprintf(`{"msgtype":"m.text","body":"canaryword %d bob %s"}`, i, long))
	}
	root := send(alice, "root", `{"msgtype":"m.text","body":"thread root canaryword"}`)
	send(bob, "reply", `{"msgtype":"m.text","body":"in thread","m.relates_to":{"rel_type":"m.thread","event_id":"`+root+`"}}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/rooms/"+r+"/send/m.reaction/react", bob,
		`{"m.relates_to":{"rel_type":"m.annotation","event_id":"`+last+`","key":"👍"}}`)
	mustRequest(t, "PUT", base+"/_matrix/client/unstable/io.element.msc4306/rooms/"+r+"/thread/"+url.PathEscape(root)+"/subscription", alice, `{}`)
	mustRequest(t, "POST", base+"/_matrix/client/v3/rooms/"+r+"/receipt/m.read/"+url.PathEscape(root), bob, `{}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/user/@bob:localhost/rooms/"+r+"/tags/u.work", bob, `{"order":0.5}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/user/@bob:localhost/rooms/"+r+"/account_data/org.example.setting", bob, `{"x":1}`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/rooms/"+r+"/send/m.room.message/later?org.matrix.msc4140.delay=3600000", alice,
		`{"msgtype":"m.text","body":"later"}`)
	ver := between(mustRequest(t, "POST", base+"/_matrix/client/v3/room_keys/version", bob,
		`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"abc"}}`), `"version":"`, `"`)
	mustRequest(t, "PUT", base+"/_matrix/client/v3/room_keys/keys/"+r+"/session1?version="+ver, bob,
		`{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"x","ephemeral":"y","mac":"z"}}`)
	return room, alice, bob
}

// TestRoomPurgeLeavesNoRow: the admin room deletion with purge removes
// every row of every package that names the room, in one transaction (a
// failure at any statement leaves the room whole), answers the rows per
// table, and gives the pages back; a dry run changes nothing.
func TestRoomPurgeLeavesNoRow(t *testing.T) {
	app, srv, boss := newAdminTestApp(t)
	room, alice, bob := fillRoom(t, srv.URL, 150)
	r := url.PathEscape(room)
	ids, positions := roomEvents(t, app.db, room)
	before := roomTraces(t, app.db, room, ids, positions)
	for _, tb := range []string{"events", "room_state", "rooms", "receipts", "account_data", "push_events", "push_read",
		"push_thread_subscriptions", "search_docs", "search_words", "event_relations", "delayed_events", "backup_keys", "txn_ids"} {
		if before[tb] == 0 {
			t.Errorf("the test room has no row in %s: %v", tb, before)
		}
	}
	if before["push_notified"]+before["push_staged"] == 0 {
		t.Errorf("the test room has no notification: %v", before)
	}
	// The members leave first (no purge yet), so that every request below
	// runs the purge alone.
	mustRequest(t, "DELETE", srv.URL+"/_synapse/admin/v1/rooms/"+r, boss, `{"purge":false}`)
	// Push moves staged notifications to push_notified in the background
	// once sends stop; the dry run is compared with a database at rest.
	waitNoStagedNotifications(t, app.db)
	ids, positions = roomEvents(t, app.db, room)
	before = roomTraces(t, app.db, room, ids, positions)

	// A dry run reports what would go and changes nothing but the audit log.
	state := dbState(t, app)
	raw := mustRequest(t, "DELETE", srv.URL+"/_synapse/admin/v2/rooms/"+r+"?dry_run=true", boss, `{}`)
	var dry struct {
		DryRun  bool             `json:"dry_run"`
		Removed map[string]int64 `json:"removed_rows"`
		Total   int64            `json:"total_rows"`
	}
	if err := json.Unmarshal([]byte(raw), &dry); err != nil || !dry.DryRun {
		t.Fatalf("dry run: %s", raw)
	}
	if got := stripAudit(dbState(t, app)); got != stripAudit(state) {
		t.Fatalf("the dry run changed the database:\n%s\n%s", state, got)
	}
	for tb, n := range withoutAudit(before) {
		if dry.Removed[tb] != int64(n) && !strings.HasPrefix(tb, "push_") {
			t.Errorf("dry run: %s would lose %d rows, the room has %d (%v)", tb, dry.Removed[tb], n, dry.Removed)
		}
	}

	// A failure at any statement of the purge leaves the room whole.
	var failures int
	for step := 1; ; step++ {
		app.db.SetFaultHook(func(s int) error {
			if s == step {
				return storage.ErrInjected
			}
			return nil
		})
		code, out := request(t, "DELETE", srv.URL+"/_synapse/admin/v1/rooms/"+r, boss, `{"force_purge":true}`)
		app.db.SetFaultHook(nil)
		if code == 200 {
			raw = out
			break
		}
		failures++
		got := roomTraces(t, app.db, room, ids, positions)
		delete(got, "admin_pending_purges") // the mark a restart resumes the deletion by (TestInterruptedPurgeResumes)
		if fmt.Sprint(withoutAudit(got)) != fmt.Sprint(withoutAudit(before)) {
			t.Fatalf("failure at step %d left a half-purged room:\nbefore %v\nafter  %v", step, before, got)
		}
		if step > 200 {
			t.Fatal("the purge never succeeded")
		}
	}
	if failures < 10 {
		t.Fatalf("only %d failure points: the purge did not run in the loop", failures)
	}
	var done struct {
		Removed map[string]int64 `json:"removed_rows"`
	}
	json.Unmarshal([]byte(raw), &done)
	delete(done.Removed, "admin_pending_purges") // a real deletion's resume mark, which the dry run has not
	delete(dry.Removed, "admin_pending_purges")
	if fmt.Sprint(withoutAudit(int64s(done.Removed))) != fmt.Sprint(withoutAudit(int64s(dry.Removed))) {
		t.Errorf("purge removed %v, the dry run said %v", done.Removed, dry.Removed)
	}
	t.Logf("purge removed %d rows: %v", dry.Total, done.Removed)
	left := withoutAudit(roomTraces(t, app.db, room, ids, positions))
	if len(left) > 0 {
		t.Fatalf("rows naming the purged room are left: %v", left)
	}
	// The audit log records the purge with its figures.
	audit := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/audit_log?limit=100", boss, "")
	for _, a := range []string{`"purge_room"`, `"delete_room_dry_run"`, `"removed_rows"`} {
		if !strings.Contains(audit, a) {
			t.Errorf("audit log has no %s: %.500s", a, audit)
		}
	}
	// The members' views forget it: no tag, no unread count, no room.
	for _, tok := range []string{alice, bob} {
		if s := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/sync", tok, ""); strings.Contains(s, room) {
			t.Errorf("a fresh sync still names the purged room: %.300s", s)
		}
	}
	if s := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/notifications", alice, ""); strings.Contains(s, room) {
		t.Errorf("notifications still name the purged room")
	}
}

// TestPurgeShrinksDatabase: the file is smaller after a purge (incremental
// vacuum gives the pages back), and compaction answers sizes before and
// after.
func TestPurgeShrinksDatabase(t *testing.T) {
	app, srv, boss := newAdminTestApp(t)
	room, _, _ := fillRoom(t, srv.URL, 400)
	space := func() storage.Space {
		var sp storage.Space
		json.Unmarshal([]byte(mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/database", boss, "")), &sp)
		return sp
	}
	app.db.Compact(context.Background()) // the WAL back into the file, for a fair "before"
	full := space()
	if full.AutoVacuum != "incremental" {
		t.Fatalf("a new database is not in incremental vacuum: %+v", full)
	}
	mustRequest(t, "DELETE", srv.URL+"/_synapse/admin/v1/rooms/"+url.PathEscape(room), boss, `{"force_purge":true}`)
	purged := space()
	t.Logf("database: %d bytes with the room, %d after its purge", full.FileBytes, purged.FileBytes)
	if purged.FileBytes >= full.FileBytes*2/3 {
		t.Fatalf("the purge freed too little: %d → %d bytes", full.FileBytes, purged.FileBytes)
	}
	var c struct {
		Before, After storage.Space
		Freed         int64 `json:"freed_bytes"`
	}
	json.Unmarshal([]byte(mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/chatalot/database/compact", boss, `{}`)), &c)
	if c.Before.FileBytes == 0 || c.After.FileBytes > c.Before.FileBytes || c.After.AutoVacuum != "incremental" {
		t.Fatalf("compact: %+v", c)
	}
}

// withoutAudit drops the audit log (which records each attempt) from
// per-table counts, and adds staged notifications to the notified ones:
// push moves them from one table to the other in the background.
func withoutAudit(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		switch k {
		case "admin_audit_log":
		case "push_staged":
			out["push_notified"] += v
		default:
			out[k] += v
		}
	}
	return out
}

func int64s(m map[string]int64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

// stripAudit removes the audit log's count from a dbState string.
func stripAudit(s string) string {
	var kept []string
	for _, f := range strings.Fields(s) {
		if !strings.HasPrefix(f, "admin_audit_log=") {
			kept = append(kept, f)
		}
	}
	return strings.Join(kept, " ")
}

// TestHistoryPurgeForgetsEvents: purge_history removes the message events
// before a point with their search rows, relations, transaction IDs and
// notifications, answers the rows per table (a dry run changes nothing),
// and the purged messages are gone from /messages and search; state
// events stay.
func TestHistoryPurgeForgetsEvents(t *testing.T) {
	app, srv, boss := newAdminTestApp(t)
	alice := registerUser(t, srv.URL, "alice")
	bob := registerUser(t, srv.URL, "bob")
	room := between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice, `{"preset":"public_chat"}`), `"room_id":"`, `"`)
	r := url.PathEscape(room)
	mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/join/"+r, bob, `{}`)
	send := func(txn, body string) string {
		raw := mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/send/m.room.message/"+txn, alice,
			`{"msgtype":"m.text","body":"`+body+` bob"}`)
		return between(raw, `"event_id":"`, `"`)
	}
	var old []string
	for i := 0; i < 20; i++ {
		old = append(old, send(fmt.Sprint("old", i), "oldword"))
	}
	mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/send/m.reaction/r1", bob,
		`{"m.relates_to":{"rel_type":"m.annotation","event_id":"`+old[3]+`","key":"x"}}`)
	cut := send("cut", "newword")
	send("after", "newword")
	var oldPositions []int64
	for _, id := range old {
		var p int64
		app.db.QueryRow(context.Background(), `SELECT position FROM events WHERE event_id = $1`, id).Scan(&p)
		oldPositions = append(oldPositions, p)
	}
	traces := func() map[string]int {
		m := withoutAudit(roomTraces(t, app.db, "$never", old, oldPositions))
		delete(m, "receipts") // none is on an old event, but a receipt may name the room's events
		// Later events name the purged ones in prev_events (the DAG keeps
		// its edges): count the events themselves, by position.
		delete(m, "events")
		list, _ := json.Marshal(oldPositions)
		var n int
		app.db.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE position IN (SELECT value FROM json_each($1))`, string(list)).Scan(&n)
		if n > 0 {
			m["events"] = n
		}
		return m
	}
	if n := traces(); n["events"] != 20 || n["search_docs"] != 20 || n["push_notified"] == 0 || n["txn_ids"] != 20 {
		t.Fatalf("before the purge: %v", n)
	}
	body := `{"delete_local_events":true,"purge_up_to_event_id":"` + cut + `"}`
	state := stripAudit(dbState(t, app))
	raw := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/purge_history/"+r+"?dry_run=true", boss, body)
	if !strings.Contains(raw, `"dry_run":true`) || !strings.Contains(raw, `"search_docs":20`) {
		t.Fatalf("dry run: %s", raw)
	}
	if got := stripAudit(dbState(t, app)); got != state {
		t.Fatalf("the dry run changed the database:\n%s\n%s", state, got)
	}
	id := between(mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/purge_history/"+r, boss, body), `"purge_id":"`, `"`)
	var status string
	waitUntil(t, func() bool {
		status = mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/purge_history_status/"+id, boss, "")
		return strings.Contains(status, `"complete"`)
	})
	if !strings.Contains(status, `"events":21`) { // 20 messages and the reaction
		t.Fatalf("status: %s", status)
	}
	if left := traces(); len(left) > 0 {
		t.Fatalf("rows about purged events are left: %v", left)
	}
	msgs := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/messages?dir=b&limit=100", bob, "")
	if strings.Contains(msgs, "oldword") || !strings.Contains(msgs, "newword") || !strings.Contains(msgs, `"m.room.create"`) {
		t.Fatalf("messages after the purge: %.500s", msgs)
	}
	found := mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/search", bob, `{"search_categories":{"room_events":{"search_term":"oldword"}}}`)
	if !strings.Contains(found, `"results":[]`) {
		t.Fatalf("search still finds purged messages: %.300s", found)
	}
	if audit := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/audit_log?limit=100", boss, ""); !strings.Contains(audit, `"purged_history"`) {
		t.Fatalf("audit log: %.500s", audit)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("timed out")
}

// TestRetentionPurgesExpiredMessages: a room whose m.room.retention sets a
// one-second lifetime (raised to the server's minimum where shorter) loses
// its older messages on the next pass: from /messages, /context, /event,
// search, notifications and the database file; a room without a policy
// keeps them, and state events stay.
func TestRetentionPurgesExpiredMessages(t *testing.T) {
	app, srv, boss := newAdminTestApp(t, func(c *Config) {
		c.RetentionMin = "1s"
		c.RetentionInterval = "100ms"
	})
	alice := registerUser(t, srv.URL, "alice")
	bob := registerUser(t, srv.URL, "bob")
	mk := func() (string, string) {
		room := between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice, `{"preset":"public_chat"}`), `"room_id":"`, `"`)
		r := url.PathEscape(room)
		mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/join/"+r, bob, `{}`)
		return room, r
	}
	send := func(r, txn, body string) string {
		return between(mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/send/m.room.message/"+txn, alice,
			`{"msgtype":"m.text","body":"`+body+` bob"}`), `"event_id":"`, `"`)
	}
	_, r := mk()
	_, k := mk()
	// 10 ms asked, 1 s applied (retention_min_lifetime).
	mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/state/m.room.retention/", alice, `{"max_lifetime":10}`)
	since := between(mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/sync?timeout=0", bob, ""), `"next_batch":"`, `"`)
	old := send(r, "o1", "expiringword")
	send(r, "o2", "expiringword")
	send(k, "k1", "keptword")
	time.Sleep(300 * time.Millisecond)
	if m := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/messages?dir=b&limit=50", bob, ""); !strings.Contains(m, "expiringword") {
		t.Fatal("messages went before their lifetime (the minimum is 1s)")
	}
	time.Sleep(900 * time.Millisecond)
	send(r, "new", "freshword") // the room's latest event always stays: the old ones are now behind it
	waitUntil(t, func() bool {
		m := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/messages?dir=b&limit=50", bob, "")
		return !strings.Contains(m, "expiringword")
	})
	m := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/messages?dir=b&limit=50", bob, "")
	if !strings.Contains(m, "freshword") || !strings.Contains(m, retentionType) || !strings.Contains(m, `"m.room.create"`) {
		t.Fatalf("after the purge: %.600s", m)
	}
	if code, _ := request(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/event/"+url.PathEscape(old), bob, ""); code != 404 {
		t.Errorf("/event of an expired message: %d", code)
	}
	if code, _ := request(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/context/"+url.PathEscape(old), bob, ""); code != 404 {
		t.Errorf("/context of an expired message: %d", code)
	}
	found := mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/search", bob, `{"search_categories":{"room_events":{"search_term":"expiringword"}}}`)
	if !strings.Contains(found, `"results":[]`) {
		t.Errorf("search finds expired messages: %.300s", found)
	}
	// A client back after a gap, whose token is from before the messages,
	// and a fresh sync: neither gets them.
	for _, q := range []string{"?timeout=0&since=" + url.QueryEscape(since), "?timeout=0"} {
		if got := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/sync"+q, bob, ""); strings.Contains(got, "expiringword") {
			t.Errorf("/sync%s still has expired messages", q)
		}
	}
	if rel, _ := request(t, "GET", srv.URL+"/_matrix/client/v1/rooms/"+r+"/relations/"+url.PathEscape(old), bob, ""); rel == 200 {
		t.Errorf("/relations of an expired message answers 200")
	}
	if n := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/notifications", bob, ""); strings.Contains(n, old) {
		t.Errorf("notifications keep an expired message")
	}
	var rows int
	app.db.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE instr(json, 'expiringword') > 0`).Scan(&rows)
	if rows != 0 {
		t.Errorf("%d expired events left in the database", rows)
	}
	// Not in the files either: deleted cells are zeroed (secure_delete)
	// and the write-ahead log is emptied after the purge.
	// The pass empties the log just after the purge's commit, which the
	// requests above may have seen first: wait for the pass to end.
	waitUntil(t, func() bool {
		for _, f := range []string{app.db.Path(), app.db.Path() + "-wal"} {
			if raw, err := os.ReadFile(f); err == nil && strings.Contains(string(raw), "expiringword") {
				return false
			}
		}
		return true
	})
	if km := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+k+"/messages?dir=b&limit=50", bob, ""); !strings.Contains(km, "keptword") {
		t.Errorf("a room without a policy lost its messages")
	}
	if audit := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/audit_log?limit=100", boss, ""); !strings.Contains(audit, `"retention_purge"`) {
		t.Errorf("audit log: %.400s", audit)
	}
}

const retentionType = `"m.room.retention"`

// TestInterruptedPurgeResumes: a room deletion whose purge did not commit
// (here the purge's write fails, as a crash would stop it) leaves the room
// whole, and the next start of the server finishes it.
func TestInterruptedPurgeResumes(t *testing.T) {
	cfg := defaults()
	cfg.DataDir = t.TempDir()
	cfg.Registration = "open"
	cfg.RateLimits = "off"
	cfg.Encryption = "optional"
	if err := adminCreateUser([]string{"boss", "--admin", "--password-stdin", "--data-dir", cfg.DataDir},
		strings.NewReader(purgePassword+"\n"), io.Discard); err != nil {
		t.Fatal(err)
	}
	app, err := openApp(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.Router())
	code, raw := request(t, "POST", srv.URL+"/_matrix/client/v3/login", "",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"boss"},"password":"`+purgePassword+`"}`)
	if code != 200 {
		t.Fatal(raw)
	}
	boss := between(raw, `"access_token":"`, `"`)
	room, _, _ := fillRoom(t, srv.URL, 5)
	r := url.PathEscape(room)
	mustRequest(t, "DELETE", srv.URL+"/_synapse/admin/v1/rooms/"+r, boss, `{"purge":false}`)
	// Only the purge has this many statements: it fails, as if the
	// process had died in it.
	app.db.SetFaultHook(func(s int) error {
		if s == 20 {
			return storage.ErrInjected
		}
		return nil
	})
	if code, raw := request(t, "DELETE", srv.URL+"/_synapse/admin/v1/rooms/"+r, boss, `{"force_purge":true}`); code != 500 {
		t.Fatalf("the purge did not fail: %d %s", code, raw)
	}
	app.db.SetFaultHook(nil)
	ids, positions := roomEvents(t, app.db, room)
	if n := roomTraces(t, app.db, room, ids, positions); n["events"] == 0 || n["rooms"] != 1 || n["admin_pending_purges"] != 1 {
		t.Fatalf("after the failed purge: %v", n)
	}
	app.BeginShutdown()
	srv.Close()
	app.Close()

	app, err = openApp(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	defer app.BeginShutdown()
	waitUntil(t, func() bool {
		return len(withoutAudit(roomTraces(t, app.db, room, ids, positions))) == 0
	})
}

// waitNoStagedNotifications waits until push has moved every staged
// notification (it does within its flush delay, 5 s, of the last send).
func waitNoStagedNotifications(t *testing.T, db *storage.DB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var staged int
		if err := db.QueryRow(t.Context(), `SELECT count(*) FROM push_staged`).Scan(&staged); err != nil {
			t.Fatal(err)
		}
		if staged == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d notifications still staged after 15 s", staged)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHistoryPurgeRedactsSupersededState: the state events a history
// purge keeps (the DAG and the auth rules need them) but that are no
// longer the room's state are stored redacted: an old topic and an old
// display name leave the database file and its log, while the events stay
// (with their IDs, and what the room version's redaction keeps) and the
// current topic and name are untouched. A retention pass does the same.
func TestHistoryPurgeRedactsSupersededState(t *testing.T) {
	for _, viaRetention := range []bool{false, true} {
		t.Run(map[bool]string{false: "purge_history", true: "retention"}[viaRetention], func(t *testing.T) {
			var settings []func(*Config)
			if viaRetention {
				settings = append(settings, func(c *Config) { c.RetentionMin = "1s"; c.RetentionInterval = "100ms" })
			}
			app, srv, boss := newAdminTestApp(t, settings...)
			alice := registerUser(t, srv.URL, "alice")
			room := between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice, `{"preset":"public_chat"}`), `"room_id":"`, `"`)
			r := url.PathEscape(room)
			state := func(typ, body string) string {
				return between(mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/state/"+typ+"/", alice, body), `"event_id":"`, `"`)
			}
			send := func(txn string) string {
				return between(mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/send/m.room.message/"+txn, alice,
					`{"msgtype":"m.text","body":"a message"}`), `"event_id":"`, `"`)
			}
			oldTopic := state("m.room.topic", `{"topic":"oldtopicsecret"}`)
			mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/profile/@alice:localhost/displayname", alice, `{"displayname":"oldnamesecret"}`)
			mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/profile/@alice:localhost/displayname", alice, `{"displayname":"Alice Now"}`)
			state("m.room.topic", `{"topic":"currenttopic"}`)
			send("m1")
			if viaRetention {
				mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/state/m.room.retention/", alice, `{"max_lifetime":10}`)
				time.Sleep(1100 * time.Millisecond) // past the 1 s minimum lifetime
				send("m2")                          // the latest event stays: the rest is now behind it
				waitUntil(t, func() bool {
					var n int
					app.db.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE instr(json, 'oldtopicsecret') > 0`).Scan(&n)
					return n == 0
				})
			} else {
				cut := send("cut")
				send("after")
				body := `{"delete_local_events":true,"purge_up_to_event_id":"` + cut + `"}`
				id := between(mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/purge_history/"+r, boss, body), `"purge_id":"`, `"`)
				var status string
				waitUntil(t, func() bool {
					status = mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/purge_history_status/"+id, boss, "")
					return strings.Contains(status, `"complete"`)
				})
				audit := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/audit_log?limit=100", boss, "")
				if !strings.Contains(audit, `"events_redacted":`) {
					t.Errorf("the audit entry does not count the redacted state: %.600s", audit)
				}
			}
			// The old topic event is kept, redacted; the current state is whole.
			ev := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/event/"+url.PathEscape(oldTopic), alice, "")
			if !strings.Contains(ev, `"content":{}`) || !strings.Contains(ev, `"state_key":""`) {
				t.Errorf("the old topic event: %s", ev)
			}
			if topic := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/state/m.room.topic/", alice, ""); !strings.Contains(topic, "currenttopic") {
				t.Errorf("current topic: %s", topic)
			}
			if m := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+r+"/state/m.room.member/@alice:localhost", alice, ""); !strings.Contains(m, "Alice Now") || !strings.Contains(m, `"membership":"join"`) {
				t.Errorf("current membership: %s", m)
			}
			send("still-works")
			for _, secret := range []string{"oldtopicsecret", "oldnamesecret"} {
				var n int
				app.db.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE instr(json, $1) > 0`, secret).Scan(&n)
				if n != 0 {
					t.Errorf("%d stored events still hold %q", n, secret)
				}
			}
			// Nor in the files: rewritten cells are zeroed (secure_delete)
			// and the log is emptied after the purge.
			waitUntil(t, func() bool {
				for _, f := range []string{app.db.Path(), app.db.Path() + "-wal"} {
					raw, err := os.ReadFile(f)
					if err == nil && (strings.Contains(string(raw), "oldtopicsecret") || strings.Contains(string(raw), "oldnamesecret")) {
						return false
					}
				}
				return true
			})
		})
	}
}

// TestHistoryPurgeRecountsUnread: the unread counts /sync answers drop
// the notifications of events a history purge removed, without a restart.
func TestHistoryPurgeRecountsUnread(t *testing.T) {
	_, srv, boss := newAdminTestApp(t)
	alice := registerUser(t, srv.URL, "alice")
	bob := registerUser(t, srv.URL, "bob")
	room := between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice, `{"preset":"public_chat"}`), `"room_id":"`, `"`)
	r := url.PathEscape(room)
	mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/join/"+r, bob, `{}`)
	send := func(txn string) string {
		raw := mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+r+"/send/m.room.message/"+txn, alice, `{"msgtype":"m.text","body":"hello bob"}`)
		return between(raw, `"event_id":"`, `"`)
	}
	for i := 0; i < 10; i++ {
		send(fmt.Sprint("old", i))
	}
	cut := send("cut")
	send("after")
	unread := func() int64 {
		var res struct {
			Rooms struct {
				Join map[string]struct {
					Unread struct {
						Notifications int64 `json:"notification_count"`
					} `json:"unread_notifications"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal([]byte(mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/sync", bob, "")), &res); err != nil {
			t.Fatal(err)
		}
		return res.Rooms.Join[room].Unread.Notifications
	}
	if n := unread(); n != 12 {
		t.Fatalf("bob's unread count before the purge: %d, want 12", n)
	}
	id := between(mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/purge_history/"+r, boss,
		`{"delete_local_events":true,"purge_up_to_event_id":"`+cut+`"}`), `"purge_id":"`, `"`)
	waitUntil(t, func() bool {
		return strings.Contains(mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/purge_history_status/"+id, boss, ""), `"complete"`)
	})
	var n int64
	waitUntil(t, func() bool { n = unread(); return n == 2 })
	if n != 2 {
		t.Fatalf("bob's unread count after the purge: %d, want 2 (the messages left)", n)
	}
}
