package push

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// TestDefaultRuleEffects sends one event per case, from alice to a room
// where bob is, and checks what the server-default rules made of it in
// bob's counts {notifications, highlights}.
func TestDefaultRuleEffects(t *testing.T) {
	ts := newTestServer(t)
	megolm := map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAc", "sender_key": "k", "device_id": "D", "session_id": "s"}
	cases := []struct {
		name   string
		group  bool // a third member (not one-to-one)
		send   func(room string)
		want   [2]int64
		action string // an action the notification must carry
	}{
		{name: "message in a group", group: true, want: [2]int64{1, 0},
			send: func(r string) { ts.text(alice, r, "hello") }},
		{name: "message one to one", want: [2]int64{1, 0}, action: `{"set_tweak":"sound","value":"default"}`,
			send: func(r string) { ts.text(alice, r, "hello") }},
		{name: "user mention highlights", group: true, want: [2]int64{1, 1}, action: `{"set_tweak":"highlight"}`,
			send: func(r string) {
				ts.send(alice, r, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []string{bob}}})
			}},
		{name: "mention of someone else", group: true, want: [2]int64{1, 0},
			send: func(r string) {
				ts.send(alice, r, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []string{carol}}})
			}},
		{name: "room mention by a moderator highlights", group: true, want: [2]int64{1, 1},
			send: func(r string) {
				ts.send(alice, r, "m.room.message", map[string]any{"msgtype": "m.text", "body": "all", "m.mentions": map[string]any{"room": true}})
			}},
		{name: "notice does not notify", group: true, want: [2]int64{0, 0},
			send: func(r string) {
				ts.send(alice, r, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "bot"})
			}},
		{name: "reaction does not notify", group: true, want: [2]int64{0, 0},
			send: func(r string) {
				target := ts.text(carol, r, "react to me")
				ts.receipt(bob, r, "m.read", target, "")
				ts.send(alice, r, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": "👍"}})
			}},
		{name: "edit does not notify", group: true, want: [2]int64{0, 0},
			send: func(r string) {
				target := ts.text(alice, r, "typo")
				ts.receipt(bob, r, "m.read", target, "")
				ts.send(alice, r, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* fixed",
					"m.new_content": map[string]any{"msgtype": "m.text", "body": "fixed"},
					"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": target}})
			}},
		{name: "member event does not notify", group: true, want: [2]int64{0, 0},
			send: func(r string) {
				ts.must("@dave:test", "POST", "/_matrix/client/v3/rooms/"+enc(r)+"/join", map[string]any{})
			}},
		{name: "encrypted in a group notifies", group: true, want: [2]int64{1, 0},
			send: func(r string) { ts.send(alice, r, "m.room.encrypted", megolm) }},
		{name: "encrypted one to one notifies with sound", want: [2]int64{1, 0}, action: `{"set_tweak":"sound","value":"default"}`,
			send: func(r string) { ts.send(alice, r, "m.room.encrypted", megolm) }},
		{name: "tombstone highlights", group: true, want: [2]int64{1, 1},
			send: func(r string) {
				ts.state(alice, r, "m.room.tombstone", "", map[string]any{"body": "moved", "replacement_room": "!new:test"})
			}},
		{name: "server ACL does not notify", group: true, want: [2]int64{0, 0},
			send: func(r string) { ts.state(alice, r, "m.room.server_acl", "", map[string]any{"allow": []string{"*"}}) }},
		{name: "call invite rings", want: [2]int64{1, 0}, action: `{"set_tweak":"sound","value":"ring"}`,
			send: func(r string) {
				ts.send(alice, r, "m.call.invite", map[string]any{"call_id": "c", "version": "1", "lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": "x"}})
			}},
		// MSC3930: polls notify where they start and end, votes never.
		{name: "poll start one to one notifies with sound", want: [2]int64{1, 0}, action: `{"set_tweak":"sound","value":"default"}`,
			send: func(r string) { ts.send(alice, r, "org.matrix.msc3381.poll.start", map[string]any{"body": "lunch?"}) }},
		{name: "poll end in a group notifies", group: true, want: [2]int64{1, 0},
			send: func(r string) { ts.send(alice, r, "org.matrix.msc3381.poll.end", map[string]any{"body": "closed"}) }},
		{name: "poll response does not notify", want: [2]int64{0, 0},
			send: func(r string) {
				ts.send(alice, r, "org.matrix.msc3381.poll.response", map[string]any{"answers": []string{"a"}})
			}},
		{name: "other event types do not notify", group: true, want: [2]int64{0, 0},
			send: func(r string) { ts.send(alice, r, "org.example.custom", map[string]any{"body": "hello"}) }},
		{name: "state without a rule does not notify", group: true, want: [2]int64{0, 0},
			send: func(r string) { ts.state(alice, r, "m.room.topic", "", map[string]any{"topic": "news"}) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts.t = t
			members := []string{bob}
			if c.group {
				members = append(members, carol)
			}
			room := ts.room(alice, members...)
			c.send(room)
			ts.wantCounts(bob, room, c.want)
			// The sender is never notified of their own events.
			ts.wantCounts(alice, room, [2]int64{0, 0})
			if c.action != "" {
				list := ts.must(bob, "GET", "/_matrix/client/v3/notifications?limit=1", nil)["notifications"].([]any)
				if len(list) == 0 || !hasAction(list[0], c.action) {
					t.Fatalf("the notification does not carry %s: %v", c.action, list)
				}
			}
		})
	}
}

func hasAction(n any, want string) bool {
	raw, _ := json.Marshal(n.(map[string]any)["actions"])
	for _, a := range gjson.ParseBytes(raw).Array() {
		var x, y any
		_ = json.Unmarshal([]byte(a.Raw), &x)
		_ = json.Unmarshal([]byte(want), &y)
		xb, _ := json.Marshal(x)
		yb, _ := json.Marshal(y)
		if string(xb) == string(yb) {
			return true
		}
	}
	return false
}

func TestRoomMentionNeedsPermission(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob, carol)
	// carol (level 0) may not notify the room (level 50): her @room is a
	// plain message for bob.
	ts.send(carol, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "all", "m.mentions": map[string]any{"room": true}})
	ts.wantCounts(bob, room, [2]int64{1, 0})
	// With notifications.room lowered to 0, it highlights.
	ts.state(alice, room, "m.room.power_levels", "", map[string]any{"notifications": map[string]any{"room": 0}})
	ts.send(carol, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "all", "m.mentions": map[string]any{"room": true}})
	ts.wantCounts(bob, room, [2]int64{2, 1})
}

func TestInviteForMe(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice)
	ts.must(alice, "POST", "/_matrix/client/v3/rooms/"+enc(room)+"/invite", map[string]any{"user_id": bob})
	list := ts.must(bob, "GET", "/_matrix/client/v3/notifications", nil)["notifications"].([]any)
	if len(list) != 1 || path(list[0], "event", "type") != "m.room.member" || path(list[0], "room_id") != room {
		t.Fatalf("bob's notifications: %v", list)
	}
	// An invite is not an unread message of a room bob is not in.
	ts.wantCounts(bob, room, [2]int64{0, 0})
}

func TestUserRulesChangeCounts(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob, carol)
	// A content rule highlights a keyword, at word boundaries only.
	ts.must(bob, "PUT", rulesPath+"global/content/cake", map[string]any{"pattern": "cake", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})
	ts.text(alice, room, "there is cake")
	ts.wantCounts(bob, room, [2]int64{1, 1})
	ts.text(alice, room, "cheesecakes")
	ts.wantCounts(bob, room, [2]int64{2, 1})
	// An encrypted event has no body: content rules cannot match it.
	ts.send(alice, room, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "cake cake", "session_id": "s"})
	ts.wantCounts(bob, room, [2]int64{3, 1})
	// A sender rule silences carol; the historical dont_notify is no action.
	ts.must(bob, "PUT", rulesPath+"global/sender/"+enc(carol), map[string]any{"actions": []any{"dont_notify"}})
	ts.text(carol, room, "hello")
	ts.wantCounts(bob, room, [2]int64{3, 1})
	// A room rule silences the room, except what overrides match.
	ts.must(bob, "PUT", rulesPath+"global/room/"+enc(room), map[string]any{"actions": []any{}})
	ts.text(alice, room, "hi")
	ts.wantCounts(bob, room, [2]int64{3, 1})
	ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []string{bob}}})
	ts.wantCounts(bob, room, [2]int64{4, 2})
	// A disabled rule does not match.
	ts.must(bob, "PUT", rulesPath+"global/room/"+enc(room)+"/enabled", map[string]any{"enabled": false})
	ts.text(alice, room, "hi")
	ts.wantCounts(bob, room, [2]int64{5, 2})
	// The master rule silences everything.
	ts.must(bob, "PUT", rulesPath+"global/override/.m.rule.master/enabled", map[string]any{"enabled": true})
	ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []string{bob}}})
	ts.wantCounts(bob, room, [2]int64{5, 2})
	// carol's defaults are untouched by bob's rules; her own message read
	// everything before it.
	ts.wantCounts(carol, room, [2]int64{4, 0})
}

// TestConditions exercises each condition kind on hand-made events.
func TestConditions(t *testing.T) {
	ev := func(raw string) *EventView {
		return &EventView{Event: gjson.Parse(raw), Room: "!r:test", Sender: "@s:test", Members: 3,
			SenderMay: func(key string) bool { return key == "room" }}
	}
	msg := ev(`{"type":"m.room.message","sender":"@s:test","room_id":"!r:test","content":{"body":"Hello Bob, ça va?","msgtype":"m.text",
		"m.mentions":{"user_ids":["@b:test",3,null,true]},"flag":true,"n":42,"nothing":null,"obj":{"a.b":{"c":"deep"}},"m\\x":"esc"}}`)
	cases := []struct {
		cond string
		want bool
	}{
		{`{"kind":"event_match","key":"type","pattern":"m.room.*"}`, true},
		{`{"kind":"event_match","key":"type","pattern":"m.room"}`, false},
		{`{"kind":"event_match","key":"content.msgtype","pattern":"M.TEXT"}`, true},
		{`{"kind":"event_match","key":"content.body","pattern":"bob"}`, true}, // within word boundaries
		{`{"kind":"event_match","key":"content.body","pattern":"ell"}`, false},
		{`{"kind":"event_match","key":"content.flag","pattern":"*"}`, false}, // not a string
		{`{"kind":"event_match","key":"content.absent","pattern":"*"}`, false},
		{`{"kind":"event_match","key":"content.obj.a\\.b.c","pattern":"deep"}`, true}, // escaped dot
		{`{"kind":"event_match","key":"content.m\\x","pattern":"esc"}`, true},         // other escapes are literal
		{`{"kind":"event_property_is","key":"content.flag","value":true}`, true},
		{`{"kind":"event_property_is","key":"content.flag","value":"true"}`, false}, // no casting
		{`{"kind":"event_property_is","key":"content.n","value":42}`, true},
		{`{"kind":"event_property_is","key":"content.n","value":"42"}`, false},
		{`{"kind":"event_property_is","key":"content.nothing","value":null}`, true},
		{`{"kind":"event_property_is","key":"content.absent","value":null}`, false},
		{`{"kind":"event_property_is","key":"content.obj","value":null}`, false},
		{`{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@b:test"}`, true},
		{`{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@b"}`, false}, // no partial values
		{`{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":3}`, true},
		{`{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":null}`, true},
		{`{"kind":"event_property_contains","key":"content.body","value":"Hello"}`, false}, // not an array
		{`{"kind":"room_member_count","is":"3"}`, true},
		{`{"kind":"room_member_count","is":"==3"}`, true},
		{`{"kind":"room_member_count","is":"<3"}`, false},
		{`{"kind":"room_member_count","is":"<=3"}`, true},
		{`{"kind":"room_member_count","is":">2"}`, true},
		{`{"kind":"room_member_count","is":">=4"}`, false},
		{`{"kind":"sender_notification_permission","key":"room"}`, true},
		{`{"kind":"sender_notification_permission","key":"other"}`, false},
		{`{"kind":"contains_display_name"}`, true}, // "Bob", case-insensitive, at word boundaries
		{`{"kind":"org.example.unknown"}`, false},
	}
	to := Recipient{User: "@b:test", DisplayName: func() string { return "bob" }}
	for _, c := range cases {
		cond := compileCondition(json.RawMessage(c.cond))
		if got := cond.holds(msg, to); got != c.want {
			t.Errorf("%s: got %v, want %v", c.cond, got, c.want)
		}
	}
	noName := Recipient{User: "@b:test", DisplayName: func() string { return "" }}
	dn := compileCondition(json.RawMessage(`{"kind":"contains_display_name"}`))
	if dn.holds(msg, noName) {
		t.Error("an empty display name matched")
	}
	partial := Recipient{User: "@b:test", DisplayName: func() string { return "Bo" }}
	if dn.holds(msg, partial) {
		t.Error("a display name matched inside a word")
	}
}

// TestDefaultsCompile checks the default rules' own conditions, so
// that a typo in one shows up here rather than as a silent non-match.
func TestDefaultsCompile(t *testing.T) {
	rs := DefaultRules("@u:test")
	for _, k := range Kinds {
		for _, r := range rs.List(k) {
			for _, c := range r.Conditions {
				if _, err := checkCondition(c); err != nil {
					t.Errorf("%s: %v", r.RuleID, err)
				}
				if compileCondition(c).never {
					t.Errorf("%s: condition %s never matches", r.RuleID, c)
				}
			}
			if _, err := parseActions(mustJSON(r.Actions)); err != nil {
				t.Errorf("%s actions: %v", r.RuleID, err)
			}
		}
	}
}

// TestOneViewManyRecipients: what a condition asks of the event alone is
// worked out once per event; what depends on the recipient is not shared.
func TestOneViewManyRecipients(t *testing.T) {
	view := &EventView{Event: gjson.Parse(`{"type":"m.room.message","sender":"@s:test","room_id":"!r:test",
		"content":{"body":"Hello Bob","msgtype":"m.text","m.mentions":{"user_ids":["@b:test"]}}}`),
		Room: "!r:test", Sender: "@s:test", Members: 3, SenderMay: func(string) bool { return false }}
	names := map[spec.UserID]string{"@b:test": "Bob", "@c:test": "Carol"}
	byName := compileCondition(json.RawMessage(`{"kind":"contains_display_name"}`))
	for range 2 { // the second round answers from the view's memo
		for user, name := range names {
			to := Recipient{User: user, DisplayName: func() string { return name }}
			o := compile(DefaultRules(user)).evaluate(view, to)
			want := user == "@b:test"
			if o.Highlight != want || !o.Notify {
				t.Fatalf("%s: notify %v, highlight %v (want highlight %v)", user, o.Notify, o.Highlight, want)
			}
			if got := byName.holds(view, to); got != want {
				t.Fatalf("%s: contains_display_name %v, want %v", user, got, want)
			}
		}
	}
	if len(view.memo) == 0 {
		t.Fatal("nothing was shared between recipients")
	}
}

// BenchmarkEvaluateFanout evaluates one message for the 50 members of a
// room, each with the default rules: the work push does per send.
func BenchmarkEvaluateFanout(b *testing.B) {
	type member struct {
		rules *compiledRules
		to    Recipient
	}
	var members []member
	for i := range 50 {
		user := spec.UserID("@user" + strconv.Itoa(i) + ":test")
		name := "User " + strconv.Itoa(i) // the service reads it from the room's state
		members = append(members, member{compile(DefaultRules(user)), Recipient{User: user, DisplayName: func() string { return name }}})
	}
	raw := `{"type":"m.room.message","sender":"@s:test","room_id":"!r:test","content":{"body":"bench message 42","msgtype":"m.text"}}`
	b.ReportAllocs()
	for b.Loop() {
		view := &EventView{Event: gjson.Parse(raw), Room: "!r:test", Sender: "@s:test", Members: 51, SenderMay: func(string) bool { return false }}
		for _, m := range members {
			if !m.rules.evaluate(view, m.to).Notify {
				b.Fatal("a plain message did not notify")
			}
		}
	}
}
