package rooms_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/tidwall/gjson"
)

const userA, userB, userC = "@alice:test", "@bob:test", "@carol:test"

func TestCreateRoomInEachVersionAndPreset(t *testing.T) {
	ts := newTestServer(t, "optional")
	for _, v := range []string{"10", "11", "12"} {
		for _, preset := range []string{"private_chat", "public_chat", "trusted_private_chat"} {
			id := ts.CreateRoom(userA, map[string]any{"room_version": v, "preset": preset, "name": "n", "topic": "t", "invite": []string{userB}})
			state := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/state/m.room.create/", nil)
			if state["room_version"] != v {
				t.Fatalf("v%s %s: create content %v", v, preset, state)
			}
			jr := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/state/m.room.join_rules", nil)
			want := "invite"
			if preset == "public_chat" {
				want = "public"
			}
			if jr["join_rule"] != want {
				t.Fatalf("v%s %s: join rule %v", v, preset, jr)
			}
			if v == "12" && strings.Contains(id, ":") {
				t.Fatalf("v12 room ID %q has a server name", id)
			}
			ts.must(userB, "POST", "/_matrix/client/v3/rooms/"+id+"/join", map[string]any{})
			ts.send(userB, id, map[string]any{"msgtype": "m.text", "body": "hi"})
		}
	}
	code, body := ts.do(userA, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "13"})
	wantError(t, code, body, 400, "M_UNSUPPORTED_ROOM_VERSION")
}

// createRoom's topic writes the plain topic and its m.topic text/plain
// block, overriding a topic in initial_state; a topic given only through
// initial_state is stored as given.
func TestCreateRoomTopicWritesRichTopic(t *testing.T) {
	ts := newTestServer(t, "optional")
	initial := []map[string]any{{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "Shenanigans"}}}
	for name, body := range map[string]map[string]any{
		"topic":                    {"topic": "Test Room"},
		"topic over initial_state": {"topic": "Test Room", "initial_state": initial},
	} {
		id := ts.CreateRoom(userA, body)
		got := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/state/m.room.topic/", nil)
		raw, _ := json.Marshal(got)
		want := `{"m.topic":{"m.text":[{"body":"Test Room","mimetype":"text/plain"}]},"topic":"Test Room"}`
		if string(raw) != want {
			t.Errorf("%s: topic content %s, want %s", name, raw, want)
		}
	}
	id := ts.CreateRoom(userA, map[string]any{"initial_state": initial})
	got := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/state/m.room.topic/", nil)
	if raw, _ := json.Marshal(got); string(raw) != `{"topic":"Shenanigans"}` {
		t.Errorf("initial_state topic: %s", raw)
	}
}

func TestEncryptionPolicyRequired(t *testing.T) {
	ts := newTestServer(t, "required")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	enc := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/state/m.room.encryption", nil)
	if enc["algorithm"] != "m.megolm.v1.aes-sha2" {
		t.Fatalf("encryption state %v", enc)
	}
	code, body := ts.do(userA, "PUT", "/_matrix/client/v3/rooms/"+id+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "plain"})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	if !strings.Contains(body["error"].(string), "encrypted") {
		t.Fatalf("error should say the room is encrypted: %v", body)
	}
	ts.must(userA, "PUT", "/_matrix/client/v3/rooms/"+id+"/send/m.room.encrypted/2", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "xx"})
	ts.must(userA, "PUT", "/_matrix/client/v3/rooms/"+id+"/send/m.reaction/3", map[string]any{})
	code, body = ts.do(userA, "PUT", "/_matrix/client/v3/rooms/"+id+"/state/m.room.encryption/", map[string]any{"algorithm": "none"})
	wantError(t, code, body, 403, "M_FORBIDDEN")
}

func TestEncryptionPolicyDefaultAndOptional(t *testing.T) {
	ts := newTestServer(t, "default")
	id := ts.CreateRoom(userA, nil)
	ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/state/m.room.encryption", nil)
	ts.send(userA, id, map[string]any{"msgtype": "m.text", "body": "plain is fine"})

	ts2 := newTestServer(t, "optional")
	id2 := ts2.CreateRoom(userA, nil)
	code, body := ts2.do(userA, "GET", "/_matrix/client/v3/rooms/"+id2+"/state/m.room.encryption", nil)
	wantError(t, code, body, 404, "M_NOT_FOUND")
}

func TestMembershipTransitions(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "private_chat"})
	room := "/_matrix/client/v3/rooms/" + id
	// Not invited: cannot join an invite-only room.
	code, body := ts.do(userB, "POST", room+"/join", map[string]any{})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userA, "POST", room+"/invite", map[string]any{"user_id": userB})
	ts.must(userB, "POST", room+"/join", map[string]any{})
	// Bob (power 0) cannot kick or ban Alice.
	code, body = ts.do(userB, "POST", room+"/kick", map[string]any{"user_id": userA})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	code, body = ts.do(userB, "POST", room+"/ban", map[string]any{"user_id": userA})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userA, "POST", room+"/kick", map[string]any{"user_id": userB, "reason": "test"})
	code, body = ts.do(userB, "PUT", room+"/send/m.room.message/x", map[string]any{"body": "hi"})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userA, "POST", room+"/ban", map[string]any{"user_id": userB})
	ts.must(userA, "POST", room+"/invite", map[string]any{"user_id": userC})
	code, body = ts.do(userA, "POST", room+"/invite", map[string]any{"user_id": userB})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userA, "POST", room+"/unban", map[string]any{"user_id": userB})
	ts.must(userA, "POST", room+"/invite", map[string]any{"user_id": userB})
	ts.must(userB, "POST", room+"/leave", map[string]any{}) // reject invite
	ts.must(userB, "POST", room+"/forget", map[string]any{})
	// Knock needs join_rule knock.
	code, body = ts.do(userB, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(id), map[string]any{})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userA, "PUT", room+"/state/m.room.join_rules/", map[string]any{"join_rule": "knock"})
	ts.must(userB, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(id), map[string]any{})
	ts.must(userA, "POST", room+"/invite", map[string]any{"user_id": userB})
	ts.must(userB, "POST", room+"/join", map[string]any{})
	members := ts.must(userA, "GET", room+"/joined_members", nil)["joined"].(map[string]any)
	if len(members) != 2 {
		t.Fatalf("joined members %v", members)
	}
	rooms := ts.must(userB, "GET", "/_matrix/client/v3/joined_rooms", nil)["joined_rooms"].([]any)
	if len(rooms) != 1 || rooms[0] != id {
		t.Fatalf("joined rooms %v", rooms)
	}
}

func TestSendIsIdempotentPerTransaction(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, nil)
	path := "/_matrix/client/v3/rooms/" + id + "/send/m.room.message/same"
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = ts.must(userA, "PUT", path, map[string]any{"body": "once"})["event_id"].(string)
		}()
	}
	wg.Wait()
	for _, e := range ids {
		if e != ids[0] {
			t.Fatalf("one transaction gave several events: %v", ids)
		}
	}
	page := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/messages?dir=b&limit=50", nil)
	n := 0
	for _, ev := range page["chunk"].([]any) {
		if ev.(map[string]any)["type"] == "m.room.message" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

func TestPaginationBothWaysNeverRepeatsOrSkips(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, nil)
	// More events than memory keeps, so that pages come from both.
	var sent []string
	for i := 0; i < 150; i++ {
		sent = append(sent, ts.send(userA, id, map[string]any{"body": itoa(i)}))
	}
	// Backwards from the end in pages of 7.
	var back []string
	from := ""
	for {
		q := "/_matrix/client/v3/rooms/" + id + "/messages?dir=b&limit=7&filter=" + url.QueryEscape(`{"types":["m.room.message"]}`)
		if from != "" {
			q += "&from=" + from
		}
		page := ts.must(userA, "GET", q, nil)
		for _, ev := range page["chunk"].([]any) {
			back = append(back, ev.(map[string]any)["event_id"].(string))
		}
		end, ok := page["end"].(string)
		if !ok {
			break
		}
		from = end
	}
	if len(back) != len(sent) {
		t.Fatalf("backwards: %d events, want %d", len(back), len(sent))
	}
	for i := range back {
		if back[i] != sent[len(sent)-1-i] {
			t.Fatalf("backwards order wrong at %d", i)
		}
	}
	// Forwards from the start.
	var fwd []string
	from = "s0"
	for {
		page := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/messages?dir=f&limit=4&from="+from+"&filter="+url.QueryEscape(`{"types":["m.room.message"]}`), nil)
		for _, ev := range page["chunk"].([]any) {
			fwd = append(fwd, ev.(map[string]any)["event_id"].(string))
		}
		end, ok := page["end"].(string)
		if !ok {
			break
		}
		from = end
	}
	if strings.Join(fwd, ",") != strings.Join(sent, ",") {
		t.Fatalf("forwards: got %d events, want the %d sent in order", len(fwd), len(sent))
	}
	ctx := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/context/"+sent[10]+"?limit=4", nil)
	if len(ctx["events_before"].([]any)) != 2 || len(ctx["events_after"].([]any)) != 2 {
		t.Fatalf("context: %v", ctx)
	}
	if ctx["events_after"].([]any)[0].(map[string]any)["event_id"] != sent[11] {
		t.Fatal("context: wrong event after")
	}
}

func TestRedaction(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.must(userB, "POST", "/_matrix/client/v3/join/"+id, map[string]any{})
	mine := ts.send(userB, id, map[string]any{"body": "secret words"})
	hers := ts.send(userA, id, map[string]any{"body": "userA words"})
	code, body := ts.do(userB, "PUT", "/_matrix/client/v3/rooms/"+id+"/redact/"+hers+"/r1", map[string]any{})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userB, "PUT", "/_matrix/client/v3/rooms/"+id+"/redact/"+mine+"/r2", map[string]any{"reason": "oops"})
	ev := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/event/"+mine, nil)
	if c := ev["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("redacted event still has content %v", c)
	}
	var stored string
	if err := ts.db.QueryRow(t.Context(), "SELECT json FROM events WHERE event_id = $1", mine).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, "secret words") {
		t.Fatal("the stored event still holds the redacted content")
	}
	// Moderators (userA, 100) may redact others' events.
	ts.must(userA, "PUT", "/_matrix/client/v3/rooms/"+id+"/redact/"+mine+"/r3", map[string]any{})
}

// A redacted event carries the redaction, in the client format, as
// unsigned.redacted_because wherever it is served.
func TestRedactedEventsCarryRedactedBecause(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	room := "/_matrix/client/v3/rooms/" + id
	mine := ts.send(userA, id, map[string]any{"msgtype": "m.text", "body": "to be redacted"})
	ts.send(userA, id, map[string]any{"msgtype": "m.text", "body": "after"})
	redaction := ts.must(userA, "PUT", room+"/redact/"+mine+"/r1", map[string]any{"reason": "oops"})["event_id"].(string)
	check := func(where string, ev any) {
		t.Helper()
		rb, _ := path(ev, "unsigned", "redacted_because").(map[string]any)
		if rb == nil || rb["event_id"] != redaction || rb["type"] != "m.room.redaction" || rb["redacts"] != mine ||
			path(rb, "content", "reason") != "oops" || rb["sender"] != userA {
			t.Errorf("%s: redacted_because %v", where, rb)
		}
	}
	check("/event", ts.must(userA, "GET", room+"/event/"+mine, nil))
	check("/context", ts.must(userA, "GET", room+"/context/"+mine, nil)["event"])
	found := false
	for _, ev := range ts.must(userA, "GET", room+"/messages?dir=b&limit=10", nil)["chunk"].([]any) {
		if path(ev, "event_id") == mine {
			check("/messages", ev)
			found = true
		} else if path(ev, "unsigned", "redacted_because") != nil {
			t.Errorf("an event that was not redacted has redacted_because: %v", ev)
		}
	}
	if !found {
		t.Fatal("/messages lacks the redacted event")
	}

	// After a restart the events come from the database: same answer.
	ts.restart()
	restarted := ts
	check("/event after a restart", restarted.must(userA, "GET", room+"/event/"+mine, nil))
	for _, ev := range restarted.must(userA, "GET", room+"/messages?dir=b&limit=10", nil)["chunk"].([]any) {
		if path(ev, "event_id") == mine {
			check("/messages after a restart", ev)
		}
	}
}

func TestBadInputsAreRefusedAndNothingStored(t *testing.T) {
	ts := newTestServer(t, "required")
	id := ts.CreateRoom(userA, nil)
	room := "/_matrix/client/v3/rooms/" + id
	ts.Token(userB) // Bob's account exists before the count starts
	before := ts.db.Position()
	big := strings.Repeat("x", 70000)
	cases := []struct {
		name       string
		user, path string
		method     string
		body       any
		status     int
		code       string
	}{
		{"float", userA, room + "/send/m.room.encrypted/a", "PUT", `{"n":1.5}`, 400, "M_BAD_JSON"},
		{"big int", userA, room + "/send/m.room.encrypted/b", "PUT", `{"n":9007199254740992}`, 400, "M_BAD_JSON"},
		{"not json", userA, room + "/send/m.room.encrypted/c", "PUT", `{nope`, 400, "M_NOT_JSON"},
		{"array", userA, room + "/send/m.room.encrypted/d", "PUT", `[1]`, 400, "M_BAD_JSON"},
		{"string power level", userA, room + "/state/m.room.power_levels/", "PUT", `{"users":{"@userA:test":"100"}}`, 403, "M_FORBIDDEN"},
		{"too large", userA, room + "/send/m.room.encrypted/e", "PUT", `{"b":"` + big + `"}`, 413, "M_TOO_LARGE"},
		{"invalid room ID", userA, "/_matrix/client/v3/rooms/nope/send/m.room.encrypted/f", "PUT", `{}`, 400, "M_INVALID_PARAM"},
		{"unknown room", userA, "/_matrix/client/v3/rooms/!nope:test/send/m.room.encrypted/g", "PUT", `{}`, 403, "M_FORBIDDEN"},
		{"second create", userA, room + "/state/m.room.create/", "PUT", `{}`, 400, "M_BAD_JSON"},
		{"plaintext in encrypted room", userA, room + "/send/m.room.message/h", "PUT", `{"body":"x"}`, 403, "M_FORBIDDEN"},
		{"not a member", userB, room + "/send/m.room.encrypted/i", "PUT", `{}`, 403, "M_FORBIDDEN"},
		{"bad dir", userA, room + "/messages?dir=x", "GET", nil, 400, "M_INVALID_PARAM"},
		{"bad token", userA, room + "/messages?dir=b&from=zz", "GET", nil, 400, "M_INVALID_PARAM"},
		{"no token", "", room + "/messages?dir=b", "GET", nil, 401, "M_MISSING_TOKEN"},
	}
	for _, c := range cases {
		code, body := ts.do(c.user, c.method, c.path, c.body)
		if code != c.status || body["errcode"] != c.code {
			t.Errorf("%s: got %d %v, want %d %s", c.name, code, body, c.status, c.code)
		}
	}
	if ts.db.Position() != before {
		t.Fatalf("refused requests moved the stream from %d to %d", before, ts.db.Position())
	}
	// Leaving, then sending.
	ts.must(userA, "POST", room+"/leave", map[string]any{})
	code, body := ts.do(userA, "PUT", room+"/send/m.room.encrypted/j", map[string]any{})
	wantError(t, code, body, 403, "M_FORBIDDEN")
}

func TestHistoryVisibility(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	room := "/_matrix/client/v3/rooms/" + id
	ts.must(userA, "PUT", room+"/state/m.room.history_visibility/", map[string]any{"history_visibility": "joined"})
	early := ts.send(userA, id, map[string]any{"body": "before userB"})
	// Bob has never joined: no access at all.
	code, body := ts.do(userB, "GET", room+"/messages?dir=b", nil)
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userB, "POST", room+"/join", map[string]any{})
	during := ts.send(userA, id, map[string]any{"body": "with userB"})
	code, _ = ts.do(userB, "GET", room+"/event/"+early, nil)
	if code != 404 {
		t.Fatalf("userB saw an event from before his join under 'joined' visibility: %d", code)
	}
	ts.must(userB, "GET", room+"/event/"+during, nil)
	ts.must(userB, "POST", room+"/leave", map[string]any{})
	after := ts.send(userA, id, map[string]any{"body": "after userB left"})
	code, _ = ts.do(userB, "GET", room+"/event/"+after, nil)
	if code != 404 {
		t.Fatalf("userB saw an event sent after he left: %d", code)
	}
	page := ts.must(userB, "GET", room+"/messages?dir=b&limit=100", nil)
	for _, ev := range page["chunk"].([]any) {
		if id := ev.(map[string]any)["event_id"]; id == early || id == after {
			t.Fatalf("userB's /messages includes %v", id)
		}
	}
}

// TestStateFromMemoryMatchesDatabase: the state at a recent position,
// derived in memory by undoing later changes, equals the database's answer.
func TestStateFromMemoryMatchesDatabase(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "n0"})
	room := "/_matrix/client/v3/rooms/" + id
	for i := 0; i < 20; i++ {
		ts.must(userA, "PUT", room+"/state/m.room.name/", map[string]any{"name": itoa(i)})
		ts.send(userA, id, map[string]any{"body": "x"})
		if i%5 == 0 {
			ts.must(userB, "POST", room+"/join", map[string]any{})
			ts.must(userB, "POST", room+"/leave", map[string]any{})
		}
	}
	latest := ts.s.Position(spec.RoomID(id))
	for pos := latest; pos > latest-40; pos-- {
		mem, ok := ts.s.StateAtFromMemoryForTest(spec.RoomID(id), pos)
		if !ok {
			t.Fatalf("position %d is recent but memory cannot answer", pos)
		}
		db, err := ts.s.StateAtFromDBForTest(t.Context(), spec.RoomID(id), pos)
		if err != nil {
			t.Fatal(err)
		}
		want := map[spec.EventID]bool{}
		for _, ev := range db {
			want[ev.PDU.EventID()] = true
		}
		if len(mem) != len(want) {
			t.Fatalf("position %d: memory has %d state events, database %d", pos, len(mem), len(want))
		}
		for _, p := range mem {
			if !want[p.EventID()] {
				t.Fatalf("position %d: memory has %s, which the database does not", pos, p.EventID())
			}
		}
	}
}

func TestMembersWithAtAndMembershipFilters(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	room := "/_matrix/client/v3/rooms/" + id
	ts.must(userB, "POST", room+"/join", map[string]any{})
	before := ts.must(userA, "GET", room+"/messages?dir=b&limit=1", nil)["start"].(string)
	ts.must(userA, "POST", room+"/invite", map[string]any{"user_id": userC})
	ts.must(userB, "POST", room+"/leave", map[string]any{})
	count := func(q string) int {
		return len(ts.must(userA, "GET", room+"/members"+q, nil)["chunk"].([]any))
	}
	if n := count(""); n != 3 {
		t.Fatalf("members: %d, want 3 (alice joined, bob left, carol invited)", n)
	}
	if n := count("?membership=join"); n != 1 {
		t.Fatalf("membership=join: %d, want 1", n)
	}
	if n := count("?not_membership=leave"); n != 2 {
		t.Fatalf("not_membership=leave: %d, want 2", n)
	}
	if n := count("?at=" + before + "&membership=join"); n != 2 {
		t.Fatalf("joined members at an earlier token: %d, want 2 (alice and bob)", n)
	}
	code, body := ts.do(userA, "GET", room+"/members?membership=nonsense", nil)
	wantError(t, code, body, 400, "M_INVALID_PARAM")
	// Someone who was never in the room learns nothing.
	code, body = ts.do("@mallory:test", "GET", room+"/members", nil)
	wantError(t, code, body, 403, "M_FORBIDDEN")
}

// TestConcurrentSendsGroupedKeepRules: sends queued together are committed
// as one group, and the group still refuses what one-by-one sends would.
func TestConcurrentSendsGroupedKeepRules(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	target := ts.send(userA, id, map[string]any{"body": "react to me"})
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = ts.do(userA, "PUT", "/_matrix/client/v3/rooms/"+id+"/send/m.reaction/r"+itoa(i), map[string]any{
				"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": "👍"}})
		}()
	}
	wg.Wait()
	ok := 0
	for _, c := range codes {
		if c == 200 {
			ok++
		} else if c != 400 {
			t.Fatalf("a duplicate annotation got %d", c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 8 identical concurrent annotations were accepted, want 1", ok)
	}
}

// TestRedactedStateStaysRedactedInPastState: a redacted state event that
// was replaced later must not reappear, unredacted, in the state at an
// earlier position derived from memory.
func TestRedactedStateStaysRedactedInPastState(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	room := "/_matrix/client/v3/rooms/" + id
	secret := ts.must(userA, "PUT", room+"/state/m.room.topic/", map[string]any{"topic": "the secret topic"})["event_id"].(string)
	before := ts.s.Position(spec.RoomID(id))
	ts.must(userA, "PUT", room+"/state/m.room.topic/", map[string]any{"topic": "public topic"})
	ts.must(userA, "PUT", room+"/redact/"+secret+"/r1", map[string]any{})
	state, err := ts.s.StateAt(t.Context(), spec.RoomID(id), before)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range state {
		if strings.Contains(string(p.JSON()), "the secret topic") {
			t.Fatal("the redacted topic came back in the state at an earlier position")
		}
	}
}

// TestPipelinedSendsSurviveFailedWrites: groups of sends are built on
// groups still being written; when writes fail, every send built on a
// failed one fails too, and what was acknowledged is exactly what is
// stored, with an intact DAG, in memory as in the database.
func TestPipelinedSendsSurviveFailedWrites(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	var steps atomic.Int64
	ts.db.SetFaultHook(func(int) error {
		if steps.Add(1)%23 == 0 {
			return storage.ErrInjected
		}
		return nil
	})
	var mu sync.Mutex
	acked := map[string]bool{}
	failed := 0
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				code, body := ts.do(userA, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/w%di%d", id, w, i),
					map[string]any{"msgtype": "m.text", "body": "hi"})
				mu.Lock()
				if code == 200 {
					acked[body["event_id"].(string)] = true
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	ts.db.SetFaultHook(nil)
	if failed == 0 || len(acked) == 0 {
		t.Fatalf("%d acknowledged, %d failed: the faults should have failed some and not all", len(acked), failed)
	}
	// The room still takes sends, on top of what is stored.
	last := ts.send(userA, id, map[string]any{"body": "after the faults"})
	acked[last] = true

	rows, err := ts.db.Query(t.Context(), `SELECT event_id, type, json FROM events WHERE room_id = $1 ORDER BY position`, id)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	messages := 0
	for rows.Next() {
		var eventID, typ, raw string
		if err := rows.Scan(&eventID, &typ, &raw); err != nil {
			t.Fatal(err)
		}
		for _, prev := range gjson.Get(raw, "prev_events").Array() {
			if !stored[prev.Str] {
				t.Fatalf("%s follows %s, which is not stored before it", eventID, prev.Str)
			}
		}
		stored[eventID] = true
		if typ == "m.room.message" {
			messages++
			if !acked[eventID] {
				t.Fatalf("%s is stored but its send failed", eventID)
			}
		}
	}
	rows.Close()
	if messages != len(acked) {
		t.Fatalf("%d messages stored, %d acknowledged", messages, len(acked))
	}
	// Memory agrees: the latest event is the one sent last, and the
	// timeline from memory holds only stored events.
	page := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/messages?dir=b&limit=50", nil)
	chunk := page["chunk"].([]any)
	if chunk[0].(map[string]any)["event_id"] != last {
		t.Fatalf("latest event %v, want %s", chunk[0].(map[string]any)["event_id"], last)
	}
	for _, ev := range chunk {
		if e := ev.(map[string]any)["event_id"].(string); !stored[e] {
			t.Fatalf("/messages returned %s, which is not stored", e)
		}
	}
}

// TestRedactionWhileReading: redactions replace events in memory while
// other requests read them (run with -race); afterwards every read shows
// them redacted.
func TestRedactionWhileReading(t *testing.T) {
	ts := newTestServer(t, "optional")
	id := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	var ids []string
	for i := range 20 {
		ids = append(ids, ts.send(userA, id, map[string]any{"body": fmt.Sprintf("secret %d", i)}))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ts.do(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/messages?dir=b&limit=30", nil)
			}
		}()
	}
	for i, e := range ids {
		if i%2 == 0 {
			ts.must(userA, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/redact/%s/r%d", id, e, i), map[string]any{})
		}
	}
	close(stop)
	wg.Wait()
	page := ts.must(userA, "GET", "/_matrix/client/v3/rooms/"+id+"/messages?dir=b&limit=50", nil)
	redacted := 0
	for _, ev := range page["chunk"].([]any) {
		m := ev.(map[string]any)
		if m["type"] != "m.room.message" {
			continue
		}
		body, _ := m["content"].(map[string]any)["body"].(string)
		want := slices.Index(ids, m["event_id"].(string))%2 == 0
		if want && body != "" {
			t.Fatalf("%s should be redacted: %v", m["event_id"], m)
		}
		if want {
			redacted++
		}
	}
	if redacted != 10 {
		t.Fatalf("%d redacted messages, want 10", redacted)
	}
}
