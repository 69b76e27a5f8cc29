package push_test

import (
	"encoding/json"
	"testing"

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
