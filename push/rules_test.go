package push_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/chatalot/chatalot/push"
	"github.com/chatalot/chatalot/spec"
)

const rulesPath = "/_matrix/client/v3/pushrules/"

func ruleIDs(list any) []string {
	var out []string
	for _, r := range list.([]any) {
		out = append(out, r.(map[string]any)["rule_id"].(string))
	}
	return out
}

func TestDefaultRules(t *testing.T) {
	ts := newTestServer(t)
	all := ts.must(alice, "GET", rulesPath, nil)
	global := all["global"].(map[string]any)
	// Spec v1.11's order, with the legacy mention rules (deprecated, not
	// yet removed there).
	wantOverride := []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
		".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits",
		".org.matrix.msc3930.rule.poll_response", ".io.element.msc4306.rule.unsubscribed_thread"}
	// MSC3930: the one-to-one poll rules come before the generic ones.
	// MSC4306: a followed thread notifies before any other underride.
	wantUnderride := []string{".io.element.msc4306.rule.subscribed_thread", ".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
		".org.matrix.msc3930.rule.poll_start_one_to_one", ".org.matrix.msc3930.rule.poll_end_one_to_one",
		".m.rule.message", ".m.rule.encrypted", ".org.matrix.msc3930.rule.poll_start", ".org.matrix.msc3930.rule.poll_end"}
	if got := ruleIDs(global["override"]); !equal(got, wantOverride) {
		t.Errorf("override: %v", got)
	}
	if got := ruleIDs(global["underride"]); !equal(got, wantUnderride) {
		t.Errorf("underride: %v", got)
	}
	if got := ruleIDs(global["content"]); !equal(got, []string{".m.rule.contains_user_name"}) {
		t.Errorf("content: %v", got)
	}
	// The content rule's pattern is the user's localpart.
	if r := ts.must(alice, "GET", rulesPath+"global/content/.m.rule.contains_user_name", nil); r["pattern"] != "alice" || r["default"] != true {
		t.Errorf("contains_user_name: %v", r)
	}
	for _, k := range []string{"room", "sender"} {
		if l, ok := global[k].([]any); !ok || len(l) != 0 {
			t.Errorf("%s: %v", k, global[k])
		}
	}
	// The user's ID is filled in.
	r := ts.must(alice, "GET", rulesPath+"global/override/.m.rule.is_user_mention", nil)
	c := r["conditions"].([]any)[0].(map[string]any)
	if c["value"] != alice || c["key"] != `content.m\.mentions.user_ids` || r["default"] != true || r["enabled"] != true {
		t.Errorf("is_user_mention: %v", r)
	}
	master := ts.must(alice, "GET", rulesPath+"global/override/.m.rule.master", nil)
	if master["enabled"] != false || len(master["conditions"].([]any)) != 0 || len(master["actions"].([]any)) != 0 {
		t.Errorf("master: %v", master)
	}
	// /pushrules/global/ is the ruleset itself.
	g := ts.must(alice, "GET", rulesPath+"global/", nil)
	if len(g["override"].([]any)) != len(wantOverride) {
		t.Errorf("global/: %v", g)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRuleCRUD(t *testing.T) {
	ts := newTestServer(t)
	put := func(kind, id, query string, body any) {
		t.Helper()
		ts.must(alice, "PUT", rulesPath+"global/"+kind+"/"+enc(id)+query, body)
	}
	// A new rule is enabled, user-defined, the most important of its kind.
	put("content", "tea", "", map[string]any{"pattern": "tea", "actions": []any{"notify"}})
	put("content", "time", "", map[string]any{"pattern": "time", "actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "bing"}}})
	r := ts.must(alice, "GET", rulesPath+"global/content/tea", nil)
	if r["pattern"] != "tea" || r["enabled"] != true || r["default"] != false {
		t.Fatalf("tea: %v", r)
	}
	order := func(kind string) []string {
		return ruleIDs(ts.must(alice, "GET", rulesPath+"global/", nil)[kind])
	}
	// User content rules come before the server default one.
	if got := order("content"); !equal(got, []string{"time", "tea", ".m.rule.contains_user_name"}) {
		t.Fatalf("content order: %v", got)
	}
	// before and after place a rule next to a user rule.
	put("content", "cake", "?before=tea", map[string]any{"pattern": "cake*lie", "actions": []any{"notify"}})
	if got := order("content"); !equal(got, []string{"time", "cake", "tea", ".m.rule.contains_user_name"}) {
		t.Fatalf("after before=tea: %v", got)
	}
	put("content", "time", "?after=tea", map[string]any{"pattern": "time", "actions": []any{}})
	if got := order("content"); !equal(got, []string{"cake", "tea", "time", ".m.rule.contains_user_name"}) {
		t.Fatalf("after after=tea: %v", got)
	}
	// Relative to a missing or a server-default rule: the spec's 400.
	ts.wantError(alice, "PUT", rulesPath+"global/content/x?before=nope", map[string]any{"pattern": "x", "actions": []any{}}, 400, spec.ErrUnknown)
	ts.wantError(alice, "PUT", rulesPath+"global/override/x?after=.m.rule.master", map[string]any{"actions": []any{}}, 400, spec.ErrUnknown)

	// User overrides sit after .m.rule.master and before the other defaults.
	put("override", "quiet", "", map[string]any{"conditions": []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": "shh"}}, "actions": []any{}})
	if got := order("override"); got[0] != ".m.rule.master" || got[1] != "quiet" || got[2] != ".m.rule.suppress_notices" {
		t.Fatalf("override order: %v", got)
	}
	// User underrides come before the default underrides.
	put("underride", "low", "", map[string]any{"actions": []any{"notify"}})
	if got := order("underride"); got[0] != "low" {
		t.Fatalf("underride order: %v", got)
	}
	// Room and sender rules are named by the room and the sender.
	put("room", "!abc:test", "", map[string]any{"actions": []any{}})
	put("sender", bob, "", map[string]any{"actions": []any{"dont_notify"}})
	// The historical dont_notify is kept as given (and ignored when
	// evaluating), twice in a row: reading does not change the rule.
	for i := 0; i < 2; i++ {
		s := ts.must(alice, "GET", rulesPath+"global/", nil)
		acts := s["sender"].([]any)[0].(map[string]any)["actions"].([]any)
		if len(acts) != 1 || acts[0] != "dont_notify" {
			t.Errorf("read %d: sender rule actions %v", i, acts)
		}
	}

	// enabled and actions, for user and server-default rules alike.
	ts.must(alice, "PUT", rulesPath+"global/content/tea/enabled", map[string]any{"enabled": false})
	if e := ts.must(alice, "GET", rulesPath+"global/content/tea/enabled", nil); e["enabled"] != false {
		t.Fatalf("enabled: %v", e)
	}
	// Replacing a rule keeps its enabled flag and its place.
	put("content", "tea", "", map[string]any{"pattern": "tea*", "actions": []any{"notify"}})
	if r := ts.must(alice, "GET", rulesPath+"global/content/tea", nil); r["enabled"] != false || r["pattern"] != "tea*" {
		t.Fatalf("replaced tea: %v", r)
	}
	ts.must(alice, "PUT", rulesPath+"global/override/.m.rule.master/enabled", map[string]any{"enabled": true})
	ts.must(alice, "PUT", rulesPath+"global/underride/.m.rule.message/actions", map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})
	a := ts.must(alice, "GET", rulesPath+"global/underride/.m.rule.message/actions", nil)
	if len(a["actions"].([]any)) != 2 {
		t.Fatalf("actions: %v", a)
	}
	if m := ts.must(alice, "GET", rulesPath+"global/override/.m.rule.master", nil); m["enabled"] != true || m["default"] != true {
		t.Fatalf("master: %v", m)
	}

	// DELETE removes a user rule; then it is gone.
	ts.must(alice, "DELETE", rulesPath+"global/content/cake", nil)
	ts.wantError(alice, "GET", rulesPath+"global/content/cake", nil, 404, spec.ErrNotFound)
	ts.wantError(alice, "DELETE", rulesPath+"global/content/cake", nil, 404, spec.ErrNotFound)

	// Another user is untouched.
	if got := ruleIDs(ts.must(bob, "GET", rulesPath+"global/", nil)["content"]); !equal(got, []string{".m.rule.contains_user_name"}) {
		t.Errorf("bob's content rules: %v", got)
	}

	// The rules survive a restart: they are the account data.
	raw, ok, _ := ts.Auth.GetAccountData(t.Context(), alice, "", "m.push_rules")
	if !ok {
		t.Fatal("no m.push_rules stored")
	}
	again := push.RulesFromAccountData(raw, alice)
	if got := ruleIDs(mustDecode(t, again)["content"]); !equal(got, []string{"tea", "time", ".m.rule.contains_user_name"}) {
		t.Errorf("reloaded content: %v", got)
	}
	if m, _ := again.Find(push.KindOverride, push.MasterRuleID); !m.Enabled {
		t.Error("reloaded master is disabled")
	}
}

func mustDecode(t *testing.T, rs *push.Ruleset) map[string]any {
	raw, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}

func TestMalformedRules(t *testing.T) {
	ts := newTestServer(t)
	p := rulesPath + "global/"
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   spec.ErrCode
	}{
		{"unknown kind", "PUT", p + "nonsense/x", map[string]any{"actions": []any{}}, 400, spec.ErrInvalidParam},
		{"dot rule ID", "PUT", p + "override/.m.rule.mine", map[string]any{"actions": []any{}}, 400, spec.ErrInvalidParam},
		{"slash in rule ID", "PUT", p + "override/a%2Fb", map[string]any{"actions": []any{}}, 400, spec.ErrInvalidParam},
		{"backslash in rule ID", "PUT", p + "override/a%5Cb", map[string]any{"actions": []any{}}, 400, spec.ErrInvalidParam},
		{"room rule not a room ID", "PUT", p + "room/notaroom", map[string]any{"actions": []any{}}, 400, spec.ErrInvalidParam},
		{"sender rule not a user ID", "PUT", p + "sender/bob", map[string]any{"actions": []any{}}, 400, spec.ErrInvalidParam},
		{"no actions", "PUT", p + "override/x", map[string]any{}, 400, spec.ErrMissingParam},
		{"actions not an array", "PUT", p + "override/x", map[string]any{"actions": "notify"}, 400, spec.ErrBadJSON},
		{"unknown action", "PUT", p + "override/x", map[string]any{"actions": []any{"explode"}}, 400, spec.ErrBadJSON},
		{"tweak without name", "PUT", p + "override/x", map[string]any{"actions": []any{map[string]any{"value": 1}}}, 400, spec.ErrBadJSON},
		{"action of another type", "PUT", p + "override/x", map[string]any{"actions": []any{3}}, 400, spec.ErrBadJSON},
		{"conditions not an array", "PUT", p + "override/x", map[string]any{"actions": []any{}, "conditions": map[string]any{}}, 400, spec.ErrBadJSON},
		{"condition not an object", "PUT", p + "override/x", map[string]any{"actions": []any{}, "conditions": []any{"x"}}, 400, spec.ErrBadJSON},
		{"condition without kind", "PUT", p + "override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"key": "type"}}}, 400, spec.ErrBadJSON},
		{"event_match without pattern", "PUT", p + "override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_match", "key": "type"}}}, 400, spec.ErrBadJSON},
		{"event_property_is with an object", "PUT", p + "override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_property_is", "key": "type", "value": map[string]any{}}}}, 400, spec.ErrBadJSON},
		{"event_property_is with a float", "PUT", p + "override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_property_is", "key": "type", "value": 1.5}}}, 400, spec.ErrBadJSON},
		{"event_property_contains without value", "PUT", p + "override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_property_contains", "key": "type"}}}, 400, spec.ErrBadJSON},
		{"room_member_count bad is", "PUT", p + "underride/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "room_member_count", "is": "about 3"}}}, 400, spec.ErrBadJSON},
		{"content rule without pattern", "PUT", p + "content/x", map[string]any{"actions": []any{}}, 400, spec.ErrMissingParam},
		{"content pattern not a string", "PUT", p + "content/x", map[string]any{"actions": []any{}, "pattern": 3}, 400, spec.ErrBadJSON},
		{"body not JSON", "PUT", p + "override/x", "{nope", 400, spec.ErrNotJSON},
		{"get missing rule", "GET", p + "override/nope", nil, 404, spec.ErrNotFound},
		{"get a rule of an unknown kind", "GET", p + "postcontent/.io.element.msc4306.rule.subscribed_thread", nil, 404, spec.ErrNotFound},
		{"enabled of an unknown kind", "GET", p + "postcontent/x/enabled", nil, 404, spec.ErrNotFound},
		{"enabled of a missing rule", "PUT", p + "override/nope/enabled", map[string]any{"enabled": true}, 404, spec.ErrNotFound},
		{"enabled missing", "PUT", p + "override/.m.rule.master/enabled", map[string]any{}, 400, spec.ErrMissingParam},
		{"enabled not a boolean", "PUT", p + "override/.m.rule.master/enabled", map[string]any{"enabled": "yes"}, 400, spec.ErrBadJSON},
		{"actions of a missing rule", "PUT", p + "override/nope/actions", map[string]any{"actions": []any{}}, 404, spec.ErrNotFound},
		{"bad actions", "PUT", p + "override/.m.rule.master/actions", map[string]any{"actions": []any{"explode"}}, 400, spec.ErrBadJSON},
		{"delete a default rule", "DELETE", p + "override/.m.rule.master", nil, 400, spec.ErrInvalidParam},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, out := ts.do(alice, c.method, c.path, c.body)
			if got != c.status || out["errcode"] != string(c.code) {
				t.Fatalf("got %d %v, want %d %s", got, out, c.status, c.code)
			}
		})
	}
	// Nothing malformed was stored.
	if _, ok, _ := ts.Auth.GetAccountData(t.Context(), alice, "", "m.push_rules"); ok {
		t.Error("a refused change was stored")
	}
	// An unknown condition kind is accepted (it never matches).
	ts.must(alice, "PUT", p+"override/future", map[string]any{"actions": []any{"notify"},
		"conditions": []any{map[string]any{"kind": "org.example.future", "x": 1}}})
	// Unauthenticated requests are refused by the auth middleware.
	if code, _ := ts.do("", "GET", rulesPath, nil); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
}

// TestRulesThroughSync: the rules are in account data from the first sync,
// and a change reaches the next incremental sync.
func TestRulesThroughSync(t *testing.T) {
	ts := newTestServer(t)
	first := ts.syncOnce(alice, "", "")
	rules := pushRulesIn(first)
	if rules == nil {
		t.Fatalf("no m.push_rules in the initial sync: %v", first["account_data"])
	}
	if got := ruleIDs(path(rules, "global", "underride")); len(got) != 10 {
		t.Fatalf("initial rules: %v", got)
	}
	next := first["next_batch"].(string)
	// Nothing changed: an incremental sync does not repeat them.
	again := ts.syncOnce(alice, next, "")
	if pushRulesIn(again) != nil {
		t.Fatal("unchanged rules sent again")
	}
	ts.must(alice, "PUT", rulesPath+"global/room/"+enc("!quiet:test"), map[string]any{"actions": []any{}})
	after := ts.syncOnce(alice, next, "")
	rules = pushRulesIn(after)
	if rules == nil {
		t.Fatalf("the change did not reach the incremental sync: %v", after)
	}
	if got := ruleIDs(path(rules, "global", "room")); !equal(got, []string{"!quiet:test"}) {
		t.Fatalf("room rules after the change: %v", got)
	}
	// A fresh initial sync has the stored, current rules.
	if got := ruleIDs(path(pushRulesIn(ts.syncOnce(alice, "", "")), "global", "room")); !equal(got, []string{"!quiet:test"}) {
		t.Fatalf("room rules in a new initial sync: %v", got)
	}
}

func pushRulesIn(resp map[string]any) map[string]any {
	evs, _ := path(resp, "account_data", "events").([]any)
	for _, ev := range evs {
		m := ev.(map[string]any)
		if m["type"] == "m.push_rules" {
			return m["content"].(map[string]any)
		}
	}
	return nil
}
