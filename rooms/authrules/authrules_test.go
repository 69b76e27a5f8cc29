package authrules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// The auth rules fixtures in testdata/*.json. Each file holds
// cases; each case is checked in each room version it lists:
//
//	name        what the case shows
//	versions    room versions (default all, 1 to 12); "N-M" is a range
//	preset      the starting state: "base" (default: creator joined,
//	            power levels admin 100, mod 50 and, before v12, creator
//	            100; public; admin, mod and alice joined), "plain" (base
//	            without the creator's power level), "creator_only" (create
//	            and the creator's join), "create_only" or "none"
//	create      fields merged over the generated m.room.create (null deletes)
//	state       events added on top of the preset (same key replaces)
//	event       the event under test
//	result      "allowed" or "not_allowed"; result_by_version overrides
//	            (keys are versions or "N-M" ranges)
//	rule        the rule that decides; rule_by_version overrides
//	drop_create leave the create event out of the auth state
//	unparseable the event is refused by events.ParsePDU before the rules
//
// Events need only type, sender, content and state_key; the harness fills
// room_id, prev_events (the last state event), auth_events (the auth events
// selection over the state), depth, origin_server_ts, hashes and signatures
// (shape only: ParsePDU does not verify them; signature checks are not the
// rules' job). Fixture strings "$name" name events by their "_name" field, and
// "$CREATE" the create event, "!ROOM" the room ID.
type fixtureCase struct {
	Note            string            `json:"note"`
	Name            string            `json:"name"`
	Versions        []string          `json:"versions"`
	Preset          string            `json:"preset"`
	Create          map[string]any    `json:"create"`
	State           []map[string]any  `json:"state"`
	Event           map[string]any    `json:"event"`
	Result          string            `json:"result"`
	ResultByVersion map[string]string `json:"result_by_version"`
	Rule            string            `json:"rule"`
	RuleByVersion   map[string]string `json:"rule_by_version"`
	DropCreate      bool              `json:"drop_create"`
	Unparseable     bool              `json:"unparseable"`
}

type fixtureFile struct {
	Description string        `json:"description"`
	Cases       []fixtureCase `json:"cases"`
}

const (
	creator = "@creator:example.org"
	admin   = "@admin:example.org"
	mod     = "@mod:example.org"
	alice   = "@alice:example.org"
)

// presetState is the state a case starts from, after the create event.
func presetState(name string, v spec.RoomVersion) []map[string]any {
	member := func(user, membership string) map[string]any {
		return map[string]any{"type": spec.MRoomMember, "state_key": user, "sender": user,
			"content": map[string]any{"membership": membership}}
	}
	switch name {
	case "", "base", "plain":
		users := map[string]any{admin: 100, mod: 50}
		if !v.AtLeast12() && name != "plain" {
			users[creator] = 100 // v12 creators cannot be listed
		}
		return []map[string]any{
			member(creator, spec.Join),
			{"type": spec.MRoomPowerLevels, "state_key": "", "sender": creator,
				"content": map[string]any{"users": users}},
			{"type": spec.MRoomJoinRules, "state_key": "", "sender": creator,
				"content": map[string]any{"join_rule": "public"}},
			member(admin, spec.Join),
			member(mod, spec.Join),
			member(alice, spec.Join),
		}
	case "creator_only":
		return []map[string]any{member(creator, spec.Join)}
	case "create_only", "none":
		return nil
	}
	panic("unknown preset " + name)
}

func defaultCreate(v spec.RoomVersion) map[string]any {
	content := map[string]any{"room_version": string(v)}
	ev := map[string]any{"type": spec.MRoomCreate, "state_key": "", "sender": creator, "content": content}
	if !v.AtLeast11() {
		content["creator"] = creator
	}
	if !v.AtLeast12() {
		ev["room_id"] = "!room:example.org"
	}
	return ev
}

// merge copies over onto base (recursively for content); nil deletes.
func merge(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		if k == "content" {
			if bm, ok := out[k].(map[string]any); ok {
				if om, ok := v.(map[string]any); ok {
					out[k] = merge(bm, om)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

// room builds the events of one case.
type room struct {
	t      *testing.T
	v      spec.RoomVersion
	roomID spec.RoomID
	names  map[string]spec.EventID
	state  []*events.PDU
	create *events.PDU
	depth  int64
	serial int // numbers the event IDs of room versions 1 and 2
}

// resolve replaces "$name" and "!ROOM" placeholders in fixture values.
func (r *room) resolve(x any) any {
	switch x := x.(type) {
	case string:
		if x == "!ROOM" {
			return string(r.roomID)
		}
		if id, ok := r.names[x]; ok {
			return string(id)
		}
		return x
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.resolve(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = r.resolve(e)
		}
		return out
	}
	return x
}

// stateMap is the current state of the room being built.
func (r *room) stateMap() StateMap { return NewStateMap(r.state...) }

// build turns a fixture event into a PDU with the defaults filled in.
func (r *room) build(fx map[string]any) (*events.PDU, error) {
	ev := map[string]any{}
	for k, v := range fx {
		if k != "_name" {
			ev[k] = r.resolve(v)
		}
	}
	r.depth++
	isCreate := ev["type"] == spec.MRoomCreate
	if isCreate {
		ev = merge(defaultCreate(r.v), ev)
	}
	if _, ok := ev["content"]; !ok {
		ev["content"] = map[string]any{}
	}
	if _, ok := ev["room_id"]; !ok && !isCreate {
		ev["room_id"] = string(r.roomID)
	}
	if _, ok := ev["prev_events"]; !ok {
		prev := []any{}
		if n := len(r.state); n > 0 && !isCreate {
			prev = append(prev, string(r.state[n-1].EventID()))
		}
		ev["prev_events"] = prev
	}
	if _, ok := ev["auth_events"]; !ok {
		ev["auth_events"] = r.selectAuthEvents(ev)
	}
	if _, ok := ev["depth"]; !ok {
		ev["depth"] = r.depth
	}
	if _, ok := ev["origin_server_ts"]; !ok {
		ev["origin_server_ts"] = 1000 + r.depth
	}
	if _, ok := ev["hashes"]; !ok {
		ev["hashes"] = map[string]any{"sha256": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
	}
	if r.v.EventIDInEvent() {
		// Room versions 1 and 2: the event names itself, and its
		// prev_events and auth_events come with (unchecked) hashes.
		if _, ok := ev["event_id"]; !ok {
			r.serial++
			server := "example.org"
			if s, ok := ev["sender"].(string); ok {
				if _, after, ok := strings.Cut(s, ":"); ok && after != "" {
					server = after
				}
			}
			ev["event_id"] = fmt.Sprintf("$e%d:%s", r.serial, server)
		}
		for _, k := range []string{"prev_events", "auth_events"} {
			ev[k] = asPairs(ev[k])
		}
	}
	if _, ok := ev["signatures"]; !ok {
		server := "example.org"
		if s, ok := ev["sender"].(string); ok {
			if _, after, ok := strings.Cut(s, ":"); ok {
				server = after
			}
		}
		ev["signatures"] = map[string]any{server: map[string]any{"ed25519:a": "AAAA"}}
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		r.t.Fatalf("marshal fixture event: %v", err)
	}
	p, err := events.ParsePDU(raw, r.v)
	if err != nil {
		return nil, err
	}
	if name, ok := fx["_name"].(string); ok {
		r.names["$"+name] = p.EventID()
	}
	return p, nil
}

// asPairs turns a list of event IDs into room version 1 [ID, hashes] pairs.
func asPairs(x any) any {
	ids, ok := x.([]any)
	if !ok {
		return x
	}
	out := make([]any, len(ids))
	for i, id := range ids {
		if _, isID := id.(string); !isID {
			return x
		}
		out[i] = []any{id, map[string]any{"sha256": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}
	}
	return out
}

// selectAuthEvents lists the IDs of the state events the auth events
// selection chooses for a fixture event.
func (r *room) selectAuthEvents(ev map[string]any) []any {
	raw, _ := json.Marshal(ev)
	g := gjson.ParseBytes(raw)
	var sk *string
	if s := g.Get("state_key"); s.Exists() {
		str := s.String()
		sk = &str
	}
	ids := []any{}
	state := r.stateMap()
	for _, k := range AuthEventKeys(g.Get("type").String(), sk, spec.UserID(g.Get("sender").String()), g.Get("content"), r.v) {
		if p := state.Get(k.Type, k.StateKey); p != nil {
			ids = append(ids, string(p.EventID()))
		}
	}
	return ids
}

// add appends a state event, replacing the one with the same key.
func (r *room) add(p *events.PDU) {
	sk, _ := p.StateKey()
	kept := r.state[:0]
	for _, s := range r.state {
		if s2, _ := s.StateKey(); s.Type() == p.Type() && s2 == sk {
			continue
		}
		kept = append(kept, s)
	}
	r.state = append(kept, p)
}

// authStateFor restricts the room state to the event's auth events, as a
// real caller does, plus the create event in room version 12.
func (r *room) authStateFor(ev *events.PDU, dropCreate bool) (StateMap, []*events.PDU) {
	byID := map[spec.EventID]*events.PDU{}
	for _, s := range r.state {
		byID[s.EventID()] = s
	}
	var authEvents []*events.PDU
	m := StateMap{}
	for _, id := range ev.AuthEvents() {
		if p := byID[id]; p != nil {
			authEvents = append(authEvents, p)
			sk, _ := p.StateKey()
			m[StateKeyPair{p.Type(), sk}] = p
		}
	}
	if r.create != nil {
		m[StateKeyPair{spec.MRoomCreate, ""}] = r.create
	}
	if dropCreate {
		delete(m, StateKeyPair{spec.MRoomCreate, ""})
	}
	return m, authEvents
}

func loadFixtures(t *testing.T) map[string]fixtureFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	out := map[string]fixtureFile{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		var f fixtureFile
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[filepath.Base(p)] = f
	}
	return out
}

func TestAuthRulesFixtures(t *testing.T) {
	files := loadFixtures(t)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	perVersion := map[spec.RoomVersion]int{}
	perOutcome := map[string]int{}
	for _, file := range names {
		for _, c := range files[file].Cases {
			versions := expandVersions(t, c.Versions)
			if len(c.Versions) == 0 {
				versions = spec.SupportedRoomVersions
			}
			results := byVersion(t, c.ResultByVersion)
			rules := byVersion(t, c.RuleByVersion)
			for _, v := range versions {
				vs := string(v)
				perVersion[v]++
				want := c.Result
				if w, ok := results[v]; ok {
					want = w
				}
				rule := c.Rule
				if w, ok := rules[v]; ok {
					rule = w
				}
				perOutcome[want]++
				t.Run(file+"/"+c.Name+"/v"+vs, func(t *testing.T) {
					runCase(t, c, v, want, rule)
				})
			}
		}
	}
	t.Logf("cases per room version: %v; outcomes: %v", perVersion, perOutcome)
}

// expandVersions reads a fixture's version list, where "N-M" stands for
// every version from N to M.
func expandVersions(t *testing.T, list []string) []spec.RoomVersion {
	var out []spec.RoomVersion
	for _, item := range list {
		lo, hi, isRange := strings.Cut(item, "-")
		if !isRange {
			hi = lo
		}
		in := false
		for _, v := range spec.SupportedRoomVersions {
			if string(v) == lo {
				in = true
			}
			if in {
				out = append(out, v)
			}
			if string(v) == hi {
				if !in {
					break
				}
				in = false
				lo = "" // found
			}
		}
		if lo != "" || in {
			t.Fatalf("bad version or range %q", item)
		}
	}
	return out
}

// byVersion expands the keys of a result_by_version or rule_by_version map.
func byVersion(t *testing.T, m map[string]string) map[spec.RoomVersion]string {
	out := map[spec.RoomVersion]string{}
	for k, val := range m {
		for _, v := range expandVersions(t, []string{k}) {
			out[v] = val
		}
	}
	return out
}

func runCase(t *testing.T, c fixtureCase, v spec.RoomVersion, want, rule string) {
	if want != "allowed" && want != "not_allowed" {
		t.Fatalf("bad result %q", want)
	}
	if rule == "" {
		t.Fatal("case names no rule")
	}
	r := &room{t: t, v: v, names: map[string]spec.EventID{}}
	preset := c.Preset
	if preset != "none" {
		fx := map[string]any{"type": spec.MRoomCreate}
		for k, x := range c.Create {
			fx[k] = x // build merges these over the defaults
		}
		create, err := r.build(fx)
		if err != nil {
			t.Fatalf("build create: %v", err)
		}
		r.create, r.roomID = create, create.RoomID()
		r.names["$CREATE"] = create.EventID()
		r.add(create)
	} else {
		r.roomID = "!room:example.org"
	}
	for _, fx := range append(presetState(preset, v), c.State...) {
		p, err := r.build(fx)
		if err != nil {
			t.Fatalf("build state event %v: %v", fx, err)
		}
		r.add(p)
	}
	ev, err := r.build(c.Event)
	if c.Unparseable {
		if err == nil {
			t.Fatalf("events.ParsePDU accepted the event; the rules must refuse it instead")
		}
		var se *spec.Error
		if !errors.As(err, &se) {
			t.Fatalf("ParsePDU error %v is not a *spec.Error", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("build event: %v", err)
	}
	state, authEvents := r.authStateFor(ev, c.DropCreate)
	d := authorise(ev, state)
	err = Allowed(ev, state)
	if want == "allowed" {
		if err != nil {
			t.Fatalf("not allowed, want allowed by %s: %v", rule, err)
		}
		if d.rule != rule {
			t.Fatalf("allowed by rule %s, want %s", d.rule, rule)
		}
		// An allowed event's auth events, as the harness selected them,
		// pass CheckAuthEvents.
		if err := CheckAuthEvents(ev, authEvents); err != nil && c.Preset != "none" {
			t.Fatalf("CheckAuthEvents: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("allowed by %s, want refused by %s", d.rule, rule)
	}
	var se *spec.Error
	if !errors.As(err, &se) || se.Code != spec.ErrForbidden {
		t.Fatalf("error %v is not M_FORBIDDEN", err)
	}
	if !strings.HasPrefix(se.Message, "auth rule "+rule+": ") {
		t.Fatalf("refused with %q, want rule %s", se.Message, rule)
	}
}
