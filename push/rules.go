package push

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// The kinds of push rule, in the order they are checked (client-server API,
// "Push Rules").
const (
	KindOverride  = "override"
	KindContent   = "content"
	KindRoom      = "room"
	KindSender    = "sender"
	KindUnderride = "underride"
)

// Kinds lists the kinds in evaluation order.
var Kinds = []string{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

func validKind(k string) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// Rule is one push rule as clients see it. Conditions and actions are kept
// as the JSON the client gave (tweaks and unknown condition kinds pass
// through unchanged); compile turns them into something to evaluate.
type Rule struct {
	RuleID     string
	Default    bool
	Enabled    bool
	Actions    []json.RawMessage
	Conditions []json.RawMessage // override and underride only
	Pattern    *string           // content only
	kind       string
}

// MarshalJSON renders the rule in the spec's PushRule shape: conditions
// for override and underride rules (even when empty), pattern for content
// rules.
func (r *Rule) MarshalJSON() ([]byte, error) {
	type wire struct {
		Actions    []json.RawMessage  `json:"actions"`
		Conditions *[]json.RawMessage `json:"conditions,omitempty"`
		Default    bool               `json:"default"`
		Enabled    bool               `json:"enabled"`
		Pattern    *string            `json:"pattern,omitempty"`
		RuleID     string             `json:"rule_id"`
	}
	w := wire{Actions: r.Actions, Default: r.Default, Enabled: r.Enabled, RuleID: r.RuleID}
	if w.Actions == nil {
		w.Actions = []json.RawMessage{}
	}
	switch r.kind {
	case KindOverride, KindUnderride:
		c := r.Conditions
		if c == nil {
			c = []json.RawMessage{}
		}
		w.Conditions = &c
	case KindContent:
		w.Pattern = r.Pattern
	}
	return json.Marshal(w)
}

// Ruleset is a user's rules by kind, each list in priority order.
type Ruleset struct {
	Override  []*Rule `json:"override"`
	Content   []*Rule `json:"content"`
	Room      []*Rule `json:"room"`
	Sender    []*Rule `json:"sender"`
	Underride []*Rule `json:"underride"`
}

// List returns the rules of one kind.
func (rs *Ruleset) List(kind string) []*Rule { return *rs.list(kind) }

func (rs *Ruleset) list(kind string) *[]*Rule {
	switch kind {
	case KindOverride:
		return &rs.Override
	case KindContent:
		return &rs.Content
	case KindRoom:
		return &rs.Room
	case KindSender:
		return &rs.Sender
	default:
		return &rs.Underride
	}
}

// MarshalJSON renders every kind, empty kinds as [].
func (rs *Ruleset) MarshalJSON() ([]byte, error) {
	type plain Ruleset
	c := plain(*rs)
	for _, l := range []*[]*Rule{&c.Override, &c.Content, &c.Room, &c.Sender, &c.Underride} {
		if *l == nil {
			*l = []*Rule{}
		}
	}
	return json.Marshal(c)
}

// Find returns a rule by kind and ID, and its index.
func (rs *Ruleset) Find(kind, id string) (*Rule, int) {
	for i, r := range rs.List(kind) {
		if r.RuleID == id {
			return r, i
		}
	}
	return nil, -1
}

// clone copies the ruleset deeply enough to change it: the lists and the
// rules are new, their JSON parts are shared (never modified in place).
func (rs *Ruleset) clone() *Ruleset {
	out := &Ruleset{}
	for _, k := range Kinds {
		src := rs.List(k)
		dst := make([]*Rule, len(src))
		for i, r := range src {
			c := *r
			dst[i] = &c
		}
		*out.list(k) = dst
	}
	return out
}

// Content returns the m.push_rules account data content for the ruleset.
func (rs *Ruleset) accountData() (json.RawMessage, error) {
	return json.Marshal(map[string]*Ruleset{"global": rs})
}

// --- The server-default rules ---------------------------------------------

// Server-default rule IDs start with a dot; clients cannot create such IDs.
const masterRuleID = ".m.rule.master"

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on constant Go values
	}
	return b
}

var (
	actNotify    = json.RawMessage(`"notify"`)
	actHighlight = mustJSON(map[string]any{"set_tweak": "highlight"})
)

func actSound(v string) json.RawMessage {
	return mustJSON(map[string]any{"set_tweak": "sound", "value": v})
}

func condMatch(key, pattern string) json.RawMessage {
	return mustJSON(map[string]any{"kind": "event_match", "key": key, "pattern": pattern})
}

func condIs(key string, value any) json.RawMessage {
	return mustJSON(map[string]any{"kind": "event_property_is", "key": key, "value": value})
}

func condContains(key string, value any) json.RawMessage {
	return mustJSON(map[string]any{"kind": "event_property_contains", "key": key, "value": value})
}

func condMembers(is string) json.RawMessage {
	return mustJSON(map[string]any{"kind": "room_member_count", "is": is})
}

func condThreadSubscribed(subscribed bool) json.RawMessage {
	return mustJSON(map[string]any{"kind": threadSubscriptionCondition, "subscribed": subscribed})
}

func condPermission(key string) json.RawMessage {
	return mustJSON(map[string]any{"kind": "sender_notification_permission", "key": key})
}

func condDisplayName() json.RawMessage {
	return mustJSON(map[string]any{"kind": "contains_display_name"})
}

func rule(kind, id string, enabled bool, conds []json.RawMessage, actions ...json.RawMessage) *Rule {
	if conds == nil {
		conds = []json.RawMessage{}
	}
	if actions == nil {
		actions = []json.RawMessage{}
	}
	return &Rule{kind: kind, RuleID: id, Default: true, Enabled: enabled, Conditions: conds, Actions: actions}
}

func conds(c ...json.RawMessage) []json.RawMessage { return c }

// The poll event types of MSC3381 (still unstable) and the rule that
// silences votes (MSC3930).
const (
	pollStart          = "org.matrix.msc3381.poll.start"
	pollResponse       = "org.matrix.msc3381.poll.response"
	pollEnd            = "org.matrix.msc3381.poll.end"
	pollResponseRuleID = ".org.matrix.msc3930.rule.poll_response"
)

// The legacy body-mention rules. Spec v1.17 (MSC4210) removed them, but
// Chatalot advertises versions up to v1.11, where they are predefined and
// deprecated since v1.7 (MSC3952): they "should only be enabled if the
// event does not have an m.mentions property", which legacyMention
// enforces at evaluation. Bots that send no m.mentions rely on them.
const (
	ruleContainsDisplayName = ".m.rule.contains_display_name"
	ruleContainsUserName    = ".m.rule.contains_user_name"
	ruleRoomNotif           = ".m.rule.roomnotif"
)

// legacyMention reports whether a rule is one of the legacy body-mention
// rules, which do not apply to an event that has m.mentions.
func legacyMention(kind, id string) bool {
	switch kind {
	case KindOverride:
		return id == ruleContainsDisplayName || id == ruleRoomNotif
	case KindContent:
		return id == ruleContainsUserName
	}
	return false
}

// contentRule is a server-default content rule: a pattern on content.body.
func contentRule(id, pattern string, actions ...json.RawMessage) *Rule {
	return &Rule{kind: KindContent, RuleID: id, Default: true, Enabled: true, Pattern: &pattern, Actions: actions}
}

// DefaultRules is the server-default rule set for a user, in the order of
// spec v1.11 (the newest version Chatalot advertises), which includes the
// deprecated legacy mention rules (see legacyMention).
func DefaultRules(user spec.UserID) *Ruleset {
	u := string(user)
	const o, un = KindOverride, KindUnderride
	return &Ruleset{
		Override: []*Rule{
			rule(o, masterRuleID, false, nil),
			rule(o, ".m.rule.suppress_notices", true, conds(condMatch("content.msgtype", "m.notice"))),
			rule(o, ".m.rule.invite_for_me", true,
				conds(condMatch("type", "m.room.member"), condMatch("content.membership", "invite"), condMatch("state_key", u)),
				actNotify, actSound("default")),
			rule(o, ".m.rule.member_event", true, conds(condMatch("type", "m.room.member"))),
			rule(o, ".m.rule.is_user_mention", true, conds(condContains(`content.m\.mentions.user_ids`, u)),
				actNotify, actSound("default"), actHighlight),
			rule(o, ruleContainsDisplayName, true, conds(condDisplayName()),
				actNotify, actSound("default"), actHighlight),
			rule(o, ".m.rule.is_room_mention", true,
				conds(condIs(`content.m\.mentions.room`, true), condPermission("room")),
				actNotify, actHighlight),
			rule(o, ruleRoomNotif, true, conds(condMatch("content.body", "@room"), condPermission("room")),
				actNotify, actHighlight),
			rule(o, ".m.rule.tombstone", true, conds(condMatch("type", "m.room.tombstone"), condMatch("state_key", "")),
				actNotify, actHighlight),
			rule(o, ".m.rule.reaction", true, conds(condMatch("type", "m.reaction"))),
			rule(o, ".m.rule.room.server_acl", true, conds(condMatch("type", "m.room.server_acl"), condMatch("state_key", ""))),
			rule(o, ".m.rule.suppress_edits", true, conds(condIs(`content.m\.relates_to.rel_type`, "m.replace"))),
			// MSC3930: poll responses are votes, never a notification.
			rule(o, pollResponseRuleID, true, conds(condMatch("type", pollResponse))),
			// MSC4306: nothing from threads the user does not follow
			// (mentions matched above). Off by default: a client without
			// thread subscriptions never subscribes, and its user would
			// lose every thread reply. A client that subscribes turns it on.
			rule(o, ".io.element.msc4306.rule.unsubscribed_thread", false, conds(condThreadSubscribed(false))),
		},
		Content: []*Rule{
			contentRule(ruleContainsUserName, user.Localpart(), actNotify, actSound("default"), actHighlight),
		},
		Room:   []*Rule{},
		Sender: []*Rule{},
		Underride: []*Rule{
			// MSC4306: a followed thread notifies.
			rule(un, ".io.element.msc4306.rule.subscribed_thread", true, conds(condThreadSubscribed(true)),
				actNotify, actSound("default")),
			rule(un, ".m.rule.call", true, conds(condMatch("type", "m.call.invite")), actNotify, actSound("ring")),
			rule(un, ".m.rule.encrypted_room_one_to_one", true, conds(condMembers("2"), condMatch("type", "m.room.encrypted")),
				actNotify, actSound("default")),
			rule(un, ".m.rule.room_one_to_one", true, conds(condMembers("2"), condMatch("type", "m.room.message")),
				actNotify, actSound("default")),
			// MSC3930: a poll started or ended notifies like a message
			// does, with a sound in a one-to-one room.
			rule(un, ".org.matrix.msc3930.rule.poll_start_one_to_one", true, conds(condMembers("2"), condMatch("type", pollStart)),
				actNotify, actSound("default")),
			rule(un, ".org.matrix.msc3930.rule.poll_end_one_to_one", true, conds(condMembers("2"), condMatch("type", pollEnd)),
				actNotify, actSound("default")),
			rule(un, ".m.rule.message", true, conds(condMatch("type", "m.room.message")), actNotify),
			rule(un, ".m.rule.encrypted", true, conds(condMatch("type", "m.room.encrypted")), actNotify),
			rule(un, ".org.matrix.msc3930.rule.poll_start", true, conds(condMatch("type", pollStart)), actNotify),
			rule(un, ".org.matrix.msc3930.rule.poll_end", true, conds(condMatch("type", pollEnd)), actNotify),
		},
	}
}

// --- Stored rules ----------------------------------------------------------

// The m.push_rules account data is where a user's rules live: its content
// is the whole rendered ruleset, so that /sync delivers exactly what
// GET /pushrules/ answers. Reading it back, the server-default rules come
// from DefaultRules (their conditions cannot be changed by clients), with
// the enabled flag and actions the user set on them; user rules are kept in
// their stored order. A default rule added by a newer Chatalot thus appears
// for every user, and one it dropped disappears.

type storedRule struct {
	RuleID     string            `json:"rule_id"`
	Enabled    *bool             `json:"enabled"`
	Actions    []json.RawMessage `json:"actions"`
	Conditions []json.RawMessage `json:"conditions"`
	Pattern    *string           `json:"pattern"`
}

// rulesFromAccountData merges stored m.push_rules content (nil when none is
// stored) with the server defaults. Malformed stored entries are skipped.
func rulesFromAccountData(content json.RawMessage, user spec.UserID) *Ruleset {
	out := DefaultRules(user)
	if len(content) == 0 {
		return out
	}
	global := gjson.GetBytes(content, "global")
	if !global.IsObject() {
		return out
	}
	for _, kind := range Kinds {
		var stored []storedRule
		if raw := global.Get(kind); raw.IsArray() {
			for _, item := range raw.Array() {
				var sr storedRule
				if item.IsObject() && json.Unmarshal([]byte(item.Raw), &sr) == nil && sr.RuleID != "" {
					stored = append(stored, sr)
				}
			}
		}
		defaults := out.list(kind)
		var user []*Rule
		for _, sr := range stored {
			if strings.HasPrefix(sr.RuleID, ".") {
				if d, _ := out.Find(kind, sr.RuleID); d != nil {
					if sr.Enabled != nil {
						d.Enabled = *sr.Enabled
					}
					if sr.Actions != nil {
						if acts, err := parseActions(mustJSON(sr.Actions)); err == nil {
							d.Actions = acts
						}
					}
				}
				continue
			}
			r, err := newUserRule(kind, sr.RuleID, sr.Actions, sr.Conditions, sr.Pattern)
			if err != nil {
				continue
			}
			if sr.Enabled != nil {
				r.Enabled = *sr.Enabled
			}
			if _, i := findIn(user, r.RuleID); i < 0 {
				user = append(user, r)
			}
		}
		*defaults = placeUserRules(kind, *defaults, user)
	}
	return out
}

func findIn(list []*Rule, id string) (*Rule, int) {
	for i, r := range list {
		if r.RuleID == id {
			return r, i
		}
	}
	return nil, -1
}

// placeUserRules orders one kind: user rules come before the server
// defaults, except .m.rule.master, which is always first.
func placeUserRules(kind string, defaults, user []*Rule) []*Rule {
	out := make([]*Rule, 0, len(defaults)+len(user))
	rest := defaults
	if kind == KindOverride && len(defaults) > 0 && defaults[0].RuleID == masterRuleID {
		out = append(out, defaults[0])
		rest = defaults[1:]
	}
	out = append(out, user...)
	return append(out, rest...)
}

// userRules returns the user-defined rules of one kind (the ones whose IDs
// do not start with a dot), in order.
func (rs *Ruleset) userRules(kind string) []*Rule {
	var out []*Rule
	for _, r := range rs.List(kind) {
		if !r.Default {
			out = append(out, r)
		}
	}
	return out
}

// defaultRules returns the server-default rules of one kind, in order.
func (rs *Ruleset) defaultRules(kind string) []*Rule {
	var out []*Rule
	for _, r := range rs.List(kind) {
		if r.Default {
			out = append(out, r)
		}
	}
	return out
}

// --- Validation of client input -------------------------------------------

// Limits on what a user may store: evaluation runs every rule of every
// member on every event, so a user's rules are bounded.
const (
	maxUserRules     = 500
	maxRuleIDBytes   = 255
	maxPatternBytes  = 1024
	maxConditions    = 32
	maxActions       = 16
	maxConditionJSON = 4096
)

// checkRuleID refuses rule IDs a client may not create (PUT
// /pushrules/global/{kind}/{ruleId}): server-default IDs, slashes and, for
// room and sender rules, anything but a room or user ID.
func checkRuleID(kind, id string) error {
	switch {
	case id == "":
		return spec.InvalidParam("the rule ID must not be empty")
	case len(id) > maxRuleIDBytes:
		return spec.InvalidParam("the rule ID is over %d bytes", maxRuleIDBytes)
	case strings.HasPrefix(id, "."):
		return spec.InvalidParam("rule IDs starting with '.' are reserved for server-default rules")
	case strings.ContainsAny(id, `/\`):
		return spec.InvalidParam("rule IDs must not contain slashes or backslashes")
	}
	switch kind {
	case KindRoom:
		if _, err := spec.ParseRoomID(id); err != nil {
			return spec.InvalidParam("a room rule's ID must be the room ID: %v", err)
		}
	case KindSender:
		if _, err := spec.ParseUserID(id); err != nil {
			return spec.InvalidParam("a sender rule's ID must be the sender's user ID: %v", err)
		}
	}
	return nil
}

// newUserRule validates a user-defined rule's parts for its kind. A new
// rule is enabled.
func newUserRule(kind, id string, actions, conditions []json.RawMessage, pattern *string) (*Rule, error) {
	if actions == nil {
		return nil, spec.MissingParam("actions is required")
	}
	acts, err := parseActions(mustJSON(actions))
	if err != nil {
		return nil, err
	}
	r := &Rule{kind: kind, RuleID: id, Enabled: true, Actions: acts}
	switch kind {
	case KindOverride, KindUnderride:
		if len(conditions) > maxConditions {
			return nil, spec.BadJSON("a rule may have at most %d conditions", maxConditions)
		}
		r.Conditions = make([]json.RawMessage, 0, len(conditions))
		for i, c := range conditions {
			cc, err := checkCondition(c)
			if err != nil {
				return nil, spec.BadJSON("conditions[%d]: %s", i, err.Error())
			}
			r.Conditions = append(r.Conditions, cc)
		}
	case KindContent:
		if pattern == nil {
			return nil, spec.MissingParam("a content rule needs a pattern")
		}
		if len(*pattern) > maxPatternBytes {
			return nil, spec.BadJSON("the pattern is over %d bytes", maxPatternBytes)
		}
		p := *pattern
		r.Pattern = &p
	}
	return r, nil
}

// parseActions validates an actions array. The historical dont_notify and
// coalesce actions are kept as the client gave them (clients read their own
// rules back) and ignored when the rule is evaluated (outcomeOf), which is
// what the spec requires of them ("Historical Actions").
func parseActions(raw json.RawMessage) ([]json.RawMessage, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, spec.BadJSON("actions must be an array")
	}
	if len(list) > maxActions {
		return nil, spec.BadJSON("a rule may have at most %d actions", maxActions)
	}
	out := make([]json.RawMessage, 0, len(list))
	for _, a := range list {
		v := gjson.ParseBytes(a)
		switch {
		case v.Type == gjson.String:
			switch v.Str {
			case "notify":
				out = append(out, actNotify)
			case "dont_notify", "coalesce":
				out = append(out, json.RawMessage(strconv.Quote(v.Str)))
			default:
				return nil, spec.BadJSON("unknown action %q", v.Str)
			}
		case v.IsObject():
			if t := v.Get("set_tweak"); t.Type != gjson.String || t.Str == "" {
				return nil, spec.BadJSON("an action object must have a set_tweak string")
			}
			if len(a) > maxConditionJSON {
				return nil, spec.BadJSON("an action is over %d bytes", maxConditionJSON)
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, a); err != nil {
				return nil, spec.BadJSON("invalid action")
			}
			out = append(out, buf.Bytes())
		default:
			return nil, spec.BadJSON("an action must be a string or an object")
		}
	}
	return out, nil
}

var memberCountRE = regexp.MustCompile(`^(==|<=|>=|<|>)?([0-9]+)$`)

// checkCondition validates one condition: the known kinds must carry their
// parameters with the right types; an unknown kind is kept (it never
// matches, as the spec requires).
func checkCondition(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) > maxConditionJSON {
		return nil, fmt.Errorf("the condition is over %d bytes", maxConditionJSON)
	}
	v := gjson.ParseBytes(raw)
	if !v.IsObject() {
		return nil, fmt.Errorf("a condition must be an object")
	}
	kind := v.Get("kind")
	if kind.Type != gjson.String || kind.Str == "" {
		return nil, fmt.Errorf("kind must be a string")
	}
	str := func(name string) error {
		if f := v.Get(name); f.Type != gjson.String {
			return fmt.Errorf("%s needs %s as a string", kind.Str, name)
		}
		return nil
	}
	switch kind.Str {
	case "event_match":
		if err := str("key"); err != nil {
			return nil, err
		}
		if err := str("pattern"); err != nil {
			return nil, err
		}
		if len(v.Get("pattern").Str) > maxPatternBytes {
			return nil, fmt.Errorf("the pattern is over %d bytes", maxPatternBytes)
		}
	case "event_property_is", "event_property_contains":
		if err := str("key"); err != nil {
			return nil, err
		}
		if val := v.Get("value"); !val.Exists() {
			return nil, fmt.Errorf("%s needs a value", kind.Str)
		} else if _, ok := scalarOf(val); !ok {
			return nil, fmt.Errorf("%s needs value as a string, an integer, a boolean or null", kind.Str)
		}
	case "room_member_count":
		if err := str("is"); err != nil {
			return nil, err
		}
		if !memberCountRE.MatchString(v.Get("is").Str) {
			return nil, fmt.Errorf("is must be a number optionally prefixed by ==, <, >, >= or <=")
		}
	case "sender_notification_permission":
		if err := str("key"); err != nil {
			return nil, err
		}
	case "contains_display_name":
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("invalid JSON")
	}
	return buf.Bytes(), nil
}

// scalar is a non-compound canonical JSON value: the values
// event_property_is and event_property_contains compare.
type scalar struct {
	kind gjson.Type // String, Number (integers only), True, False, Null
	s    string
	n    int64
}

const maxSafeInteger = 1<<53 - 1

// scalarOf reads a non-compound canonical JSON value; floats, integers out
// of the canonical range, arrays, objects and absence are not scalars.
func scalarOf(v gjson.Result) (scalar, bool) {
	if !v.Exists() {
		return scalar{}, false
	}
	switch v.Type {
	case gjson.String:
		return scalar{kind: gjson.String, s: v.Str}, true
	case gjson.True, gjson.False, gjson.Null:
		return scalar{kind: v.Type}, true
	case gjson.Number:
		n, err := strconv.ParseInt(v.Raw, 10, 64)
		if err != nil || n > maxSafeInteger || n < -maxSafeInteger {
			return scalar{}, false
		}
		return scalar{kind: gjson.Number, n: n}, true
	}
	return scalar{}, false
}

func (a scalar) equal(b scalar) bool {
	return a.kind == b.kind && a.s == b.s && a.n == b.n
}
