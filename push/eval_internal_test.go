package push

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// The rule compiler and evaluator, tested without a server.

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
