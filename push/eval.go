package push

import (
	"encoding/json"
	"strconv"
	"sync"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// This file is the pure half of push: a ruleset compiled once per change,
// evaluated against an event for one recipient. No I/O: what the rules need
// from the room (member count, power levels, the recipient's display name)
// comes in the event view.

// condition is one compiled condition.
type condition struct {
	kind  string
	path  propertyPath // event_match, event_property_*
	glob  *glob        // event_match
	words bool         // event_match on content.body: match within word boundaries
	value scalar       // event_property_*
	op    string       // room_member_count
	n     int64        // room_member_count
	key   string       // sender_notification_permission
	// subscribed is the parameter of MSC4306's thread_subscription.
	subscribed bool
	never      bool // unknown kind or malformed: never matches
	// memo numbers what the condition asks of the event alone, so that
	// its answer is worked out once per event, not once per recipient
	// (most members share most rules); 0 when it depends on the recipient.
	memo int
}

// numbering gives each distinct key a small number, so that what is worked
// out once per event sits in a slice instead of a map with string keys.
// Numbers are never reused; past max keys get 0 (not kept), which leaves
// out only rare custom rules.
type numbering struct {
	mu  sync.Mutex
	of  map[string]int
	max int
}

func (n *numbering) id(key string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if id, ok := n.of[key]; ok {
		return id
	}
	if len(n.of) >= n.max {
		return 0
	}
	id := len(n.of) + 1
	n.of[key] = id
	return id
}

var (
	// memoIDs number what conditions ask of the event alone.
	memoIDs = &numbering{of: map[string]int{}, max: 4096}
	// pathIDs number the property paths rules look at.
	pathIDs = &numbering{of: map[string]int{}, max: 4096}
)

// propertyPath is a compiled key: its parts, and its number for the event
// view's cache of what is found there.
type propertyPath struct {
	parts []string
	id    int
}

func newPropertyPath(key string) propertyPath {
	parts := splitPath(key)
	return propertyPath{parts: parts, id: pathIDs.id(joinPath(parts))}
}

// compiledRule is a rule ready to evaluate.
type compiledRule struct {
	kind    string
	id      string
	conds   []condition
	exact   string // room rules: the room ID; sender rules: the sender
	pattern *glob  // content rules
	result  Outcome
	// legacy marks the legacy body-mention rules, which stand aside for
	// an event that has m.mentions (see legacyMention).
	legacy bool
}

// Outcome is what the first matching rule asks for.
type Outcome struct {
	RuleID    string
	Notify    bool
	Highlight bool
	Actions   []json.RawMessage
	Tweaks    map[string]json.RawMessage
	// actionsJSON is Actions as stored with a notification.
	actionsJSON string
}

// compiledRules is a user's enabled rules in evaluation order.
type compiledRules struct {
	rules []compiledRule
}

var (
	bodyPath     = newPropertyPath("content.body")
	mentionsPath = newPropertyPath(`content.m\.mentions`)
)

// compile prepares a ruleset for evaluation; disabled rules are left out.
func compile(rs *Ruleset) *compiledRules {
	out := &compiledRules{}
	for _, kind := range Kinds {
		for _, r := range rs.List(kind) {
			if !r.Enabled {
				continue
			}
			cr := compiledRule{kind: kind, id: r.RuleID, result: outcomeOf(r.RuleID, r.Actions),
				legacy: r.Default && legacyMention(kind, r.RuleID)}
			switch kind {
			case KindOverride, KindUnderride:
				for _, c := range r.Conditions {
					cr.conds = append(cr.conds, compileCondition(c))
				}
			case KindContent:
				if r.Pattern == nil {
					continue
				}
				cr.pattern = compileGlob(*r.Pattern, false)
			case KindRoom, KindSender:
				cr.exact = r.RuleID
			}
			out.rules = append(out.rules, cr)
		}
	}
	return out
}

// outcomeOf reads a rule's actions once, at compile time. The historical
// dont_notify and coalesce actions mean nothing and are left out.
func outcomeOf(id string, actions []json.RawMessage) Outcome {
	o := Outcome{RuleID: id, Actions: withoutHistorical(actions)}
	actions = o.Actions
	if raw, err := json.Marshal(actions); err == nil {
		o.actionsJSON = string(raw)
	} else {
		o.actionsJSON = "[]"
	}
	for _, a := range actions {
		v := gjson.ParseBytes(a)
		if v.Type == gjson.String && v.Str == "notify" {
			o.Notify = true
			continue
		}
		name := v.Get("set_tweak")
		if name.Type != gjson.String {
			continue
		}
		val := v.Get("value")
		if o.Tweaks == nil {
			o.Tweaks = map[string]json.RawMessage{}
		}
		if val.Exists() {
			o.Tweaks[name.Str] = json.RawMessage(val.Raw)
		} else {
			o.Tweaks[name.Str] = json.RawMessage("true")
		}
		if name.Str == "highlight" {
			// A highlight tweak without a value means true.
			o.Highlight = !val.Exists() || val.Type == gjson.True
		}
	}
	return o
}

// withoutHistorical drops the dont_notify and coalesce actions.
func withoutHistorical(actions []json.RawMessage) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(actions))
	for _, a := range actions {
		if v := gjson.ParseBytes(a); v.Type == gjson.String && (v.Str == "dont_notify" || v.Str == "coalesce") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// splitPath splits a dot-separated property path (appendices, "Dot-separated
// property paths"): `\.` is a literal dot and `\\` a literal backslash; any
// other backslash is itself.
func splitPath(key string) []string {
	var parts []string
	cur := make([]byte, 0, len(key))
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\') {
			cur = append(cur, key[i+1])
			i++
			continue
		}
		if c == '.' {
			parts = append(parts, string(cur))
			cur = cur[:0]
			continue
		}
		cur = append(cur, c)
	}
	return append(parts, string(cur))
}

func compileCondition(raw json.RawMessage) condition {
	v := gjson.ParseBytes(raw)
	c := condition{kind: v.Get("kind").Str}
	switch c.kind {
	case "event_match":
		key, pattern := v.Get("key"), v.Get("pattern")
		if key.Type != gjson.String || pattern.Type != gjson.String {
			c.never = true
			break
		}
		c.path = newPropertyPath(key.Str)
		c.words = key.Str == "content.body"
		c.glob = compileGlob(pattern.Str, false)
		c.memo = memoIDs.id("match\x00" + key.Str + "\x00" + pattern.Str)
	case "event_property_is", "event_property_contains":
		key, val := v.Get("key"), v.Get("value")
		s, ok := scalarOf(val)
		if key.Type != gjson.String || !val.Exists() || !ok {
			c.never = true
			break
		}
		c.path = newPropertyPath(key.Str)
		c.value = s
		if c.kind == "event_property_is" {
			c.memo = memoIDs.id(c.kind + "\x00" + key.Str + "\x00" + val.Raw)
		}
		// A contains is mostly of the recipient's own ID (mentions): a
		// memo would be used once. The list itself is looked up once.
	case "room_member_count":
		m := memberCountRE.FindStringSubmatch(v.Get("is").Str)
		if m == nil {
			c.never = true
			break
		}
		n, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil {
			c.never = true
			break
		}
		c.op, c.n = m[1], n
	case "sender_notification_permission":
		key := v.Get("key")
		if key.Type != gjson.String {
			c.never = true
			break
		}
		c.key = key.Str
	case "contains_display_name":
	case threadSubscriptionCondition:
		compileThreadSubscription(v, &c)
	default:
		c.never = true // unrecognised conditions never match
	}
	return c
}

// EventView is an event as the rules see it, with what they need from the
// room. One view serves every recipient of the event.
type EventView struct {
	// Event is the event in the client format (for encrypted events: the
	// envelope, which is all the server has).
	Event gjson.Result
	Room  spec.RoomID
	// Sender is the event's sender.
	Sender spec.UserID
	// Members is the room's joined member count.
	Members int
	// SenderMay reports whether the sender's power level reaches the level
	// of a notification key of the room's power levels ("room").
	SenderMay func(key string) bool
	// Thread is the root of the thread the event is in ("" if none).
	Thread string

	values []viewValue  // what is at each numbered path, looked up once
	memo   []memoAnswer // answers of conditions on the event alone, by memo number
}

// viewValue is what an event has at one path.
type viewValue struct {
	looked, foldedDone bool
	v                  gjson.Result
	folded             string
}

// slot is the cache of a numbered path (nil for an unnumbered one). The
// pointer is good until the next call.
func (ev *EventView) slot(p propertyPath) *viewValue {
	if p.id == 0 {
		return nil
	}
	if p.id >= len(ev.values) {
		ev.values = append(ev.values, make([]viewValue, p.id+1-len(ev.values))...)
	}
	return &ev.values[p.id]
}

// at returns the value at a path.
func (ev *EventView) at(p propertyPath) gjson.Result {
	s := ev.slot(p)
	if s == nil {
		return lookup(ev.Event, p.parts)
	}
	if !s.looked {
		s.v, s.looked = lookup(ev.Event, p.parts), true
	}
	return s.v
}

// lookup walks a property path through nested objects. Names are compared
// exactly, so no character of a name has a special meaning.
func lookup(doc gjson.Result, path []string) gjson.Result {
	v := doc
	for _, p := range path {
		if !v.IsObject() {
			return gjson.Result{}
		}
		var found gjson.Result
		v.ForEach(func(k, val gjson.Result) bool {
			if k.Str == p {
				found = val
				return false
			}
			return true
		})
		if !found.Exists() {
			return found
		}
		v = found
	}
	return v
}

// foldedString returns the folded string at a path, and whether the value
// there is a string.
func (ev *EventView) foldedString(p propertyPath) (string, bool) {
	v := ev.at(p)
	if v.Type != gjson.String {
		return "", false
	}
	s := ev.slot(p)
	if s == nil {
		return foldString(v.Str), true
	}
	if !s.foldedDone {
		s.folded, s.foldedDone = foldString(v.Str), true
	}
	return s.folded, true
}

func joinPath(path []string) string {
	n := 0
	for _, p := range path {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	for _, p := range path {
		b = append(b, p...)
		b = append(b, 0)
	}
	return string(b)
}

// Recipient is the user the rules are evaluated for.
type Recipient struct {
	User spec.UserID
	// DisplayName returns the user's display name in the room ("" if none);
	// called only by rules with a contains_display_name condition.
	DisplayName func() string
	// SubscribedToThread reports whether the user follows the event's
	// thread (MSC4306); called only by thread_subscription conditions on
	// threaded events.
	SubscribedToThread func() bool
}

// evaluate returns the outcome of the first enabled rule that matches, or a
// zero Outcome (no notification) when none does.
func (cr *compiledRules) evaluate(ev *EventView, to Recipient) Outcome {
	for i := range cr.rules {
		r := &cr.rules[i]
		if r.matches(ev, to) {
			return r.result
		}
	}
	return Outcome{}
}

func (r *compiledRule) matches(ev *EventView, to Recipient) bool {
	if r.legacy && ev.at(mentionsPath).Exists() {
		// Spec v1.7 (MSC3952): an event with m.mentions, whatever its
		// value, says whom it mentions; the body is not searched.
		return false
	}
	switch r.kind {
	case KindRoom:
		return string(ev.Room) == r.exact
	case KindSender:
		return string(ev.Sender) == r.exact
	case KindContent:
		body, ok := ev.foldedString(bodyPath)
		return ok && r.pattern.matchWords(body)
	}
	for i := range r.conds {
		if !r.conds[i].holds(ev, to) {
			return false
		}
	}
	return true
}

func (c *condition) holds(ev *EventView, to Recipient) bool {
	if c.never {
		return false
	}
	if c.memo == 0 {
		return c.eval(ev, to)
	}
	if c.memo < len(ev.memo) && ev.memo[c.memo] != memoUnknown {
		return ev.memo[c.memo] == memoTrue
	}
	v := c.eval(ev, to)
	if c.memo >= len(ev.memo) {
		ev.memo = append(ev.memo, make([]memoAnswer, c.memo+1-len(ev.memo))...)
	}
	ev.memo[c.memo] = memoFalse
	if v {
		ev.memo[c.memo] = memoTrue
	}
	return v
}

type memoAnswer uint8

const (
	memoUnknown memoAnswer = iota
	memoFalse
	memoTrue
)

func (c *condition) eval(ev *EventView, to Recipient) bool {
	switch c.kind {
	case "event_match":
		s, ok := ev.foldedString(c.path)
		if !ok {
			return false // absent or not a string: no match, even for "*"
		}
		if c.words {
			return c.glob.matchWords(s)
		}
		return c.glob.matchWhole(s)
	case "event_property_is":
		v, ok := scalarOf(ev.at(c.path))
		return ok && v.equal(c.value)
	case "event_property_contains":
		arr := ev.at(c.path)
		if !arr.IsArray() {
			return false
		}
		found := false
		arr.ForEach(func(_, item gjson.Result) bool {
			if v, ok := scalarOf(item); ok && v.equal(c.value) {
				found = true
				return false
			}
			return true
		})
		return found
	case "room_member_count":
		n := int64(ev.Members)
		switch c.op {
		case "", "==":
			return n == c.n
		case "<":
			return n < c.n
		case ">":
			return n > c.n
		case "<=":
			return n <= c.n
		case ">=":
			return n >= c.n
		}
		return false
	case "sender_notification_permission":
		return ev.SenderMay != nil && ev.SenderMay(c.key)
	case "contains_display_name":
		body, ok := ev.foldedString(bodyPath)
		if !ok || to.DisplayName == nil {
			return false
		}
		name := to.DisplayName()
		if name == "" {
			return false
		}
		return displayNameGlob(name).matchWords(body)
	case threadSubscriptionCondition:
		return threadSubscriptionHolds(c, ev, to)
	}
	return false
}

// displayNameGlobs caches each display name compiled as a literal pattern:
// .m.rule.contains_display_name runs for every member on every message
// without m.mentions, and a member's name rarely changes. Cleared when
// full, so a churn of names cannot grow it without bound.
var displayNameGlobs = struct {
	sync.RWMutex
	m map[string]*glob
}{m: map[string]*glob{}}

const maxDisplayNameGlobs = 4096

func displayNameGlob(name string) *glob {
	displayNameGlobs.RLock()
	g := displayNameGlobs.m[name]
	displayNameGlobs.RUnlock()
	if g != nil {
		return g
	}
	g = compileGlob(name, true)
	displayNameGlobs.Lock()
	if len(displayNameGlobs.m) >= maxDisplayNameGlobs {
		clear(displayNameGlobs.m)
	}
	displayNameGlobs.m[name] = g
	displayNameGlobs.Unlock()
	return g
}
