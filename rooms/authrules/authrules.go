// Package authrules holds the authorisation rules of room versions 1 to 12
// (rooms/vN "Authorisation rules"), the auth events selection of the
// server-server API, and the reading of power levels. One set of rules with the changes of each version behind spec.RoomVersion's
// feature tests: v3 drops the redaction rule, v6 the aliases rule and adds
// notifications, v7 knocking, v8 restricted joins, v10 knock_restricted and
// integer power levels, v11 the creator as the create event's sender, v12
// creators with unlimited power and room IDs from the create event.
// Everything here is pure: no I/O, no clock, no keys.
//
// Any condition the rules do not foresee (an unknown room version, a missing
// m.room.create, content of the wrong type, an AuthState that answers with
// the wrong event) denies the event. Nothing here fails open.
//
// What the caller still owes the rules, because it needs keys or storage:
//   - signature checks: the event is signed by the sender's server and, when
//     content.join_authorised_via_users_server is present, by that user's
//     server (Allowed only checks that such a signature is present);
//   - the auth_events list itself: CheckAuthEvents covers duplicates,
//     selection, room IDs and the create event; whether an auth event was
//     itself rejected is known only to storage;
//   - for redactions, whether to apply them: RedactionApplies.
//
// The package imports only spec, events and the standard library (and the
// JSON reader events uses): purity_test.go holds it to that.
package authrules

import (
	"fmt"
	"strings"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// AuthState is the room state an event is checked against: the state before
// the event, restricted by the caller to the event's auth events. In room
// version 12 the m.room.create event is not an auth event, but AuthState must
// still return it (it is the event the room ID names). Get returns nil when
// the state has no such event.
type AuthState interface {
	Get(eventType, stateKey string) *events.PDU
}

// StateKeyPair is the (type, state_key) key of a state event.
type StateKeyPair struct {
	Type     string
	StateKey string
}

// StateMap is an AuthState held in a map.
type StateMap map[StateKeyPair]*events.PDU

// Get implements AuthState.
func (m StateMap) Get(eventType, stateKey string) *events.PDU {
	return m[StateKeyPair{eventType, stateKey}]
}

// NewStateMap makes a StateMap of state events; a later event replaces an
// earlier one with the same key. Events without a state_key are skipped.
func NewStateMap(evs ...*events.PDU) StateMap {
	m := make(StateMap, len(evs))
	for _, ev := range evs {
		if ev == nil {
			continue
		}
		if sk, ok := ev.StateKey(); ok {
			m[StateKeyPair{ev.Type(), sk}] = ev
		}
	}
	return m
}

// Allowed applies the authorisation rules of the event's room version to ev
// against state. It returns nil if the event is allowed, and otherwise a
// *spec.Error M_FORBIDDEN whose message names the rule that refused it
// ("auth rule member.join.banned: …").
func Allowed(ev *events.PDU, state AuthState) (err error) {
	defer func() {
		// A bug must not let an event through: deny instead.
		if r := recover(); r != nil {
			err = spec.Forbidden("auth rule internal: the event could not be checked")
		}
	}()
	d := authorise(ev, state)
	if d.allowed {
		return nil
	}
	return spec.Forbidden("auth rule %s: %s", d.rule, d.why)
}

// decision is the outcome of the rules and the name of the rule that decided.
type decision struct {
	allowed bool
	rule    string
	why     string
}

func allow(rule string) decision { return decision{allowed: true, rule: rule} }

func deny(rule, format string, args ...any) decision {
	return decision{rule: rule, why: fmt.Sprintf(format, args...)}
}

// checker holds what the rules read while checking one event.
type checker struct {
	ev       *events.PDU
	v        spec.RoomVersion
	state    AuthState
	sender   spec.UserID
	create   *events.PDU
	creators []spec.UserID
	pl       PowerLevels
	plEvent  *events.PDU
}

// authorise applies the rules in the spec's order: the create event's own
// rules; then, for every other event, the room's create event and power
// levels, m.federate, the aliases rule (v1-v5), the member rules, and the
// rules for events of a joined sender.
func authorise(ev *events.PDU, state AuthState) decision {
	c, d, ok := newChecker(ev, state)
	if !ok {
		return d
	}
	if ev.Type() == spec.MRoomCreate {
		return c.createRules()
	}
	if d, ok := c.readRoom(); !ok {
		return d
	}
	if d, ok := c.federateRule(); !ok {
		return d
	}
	if c.v.AliasesAuthRule() && ev.Type() == spec.MRoomAliases {
		return c.aliasesRule()
	}
	if ev.Type() == spec.MRoomMember {
		return c.memberRules()
	}
	return c.joinedSenderRules()
}

// newChecker checks what every rule needs: an event of a supported room
// version, a valid sender and a state to check against.
func newChecker(ev *events.PDU, state AuthState) (*checker, decision, bool) {
	if ev == nil {
		return nil, deny("event", "no event"), false
	}
	v := ev.Version()
	if !v.Supported() {
		return nil, deny("room_version", "room version %q is not supported", v), false
	}
	sender, err := spec.ParseUserID(string(ev.Sender()))
	if err != nil {
		return nil, deny("sender", "sender is not a valid user ID"), false
	}
	if state == nil {
		return nil, deny("auth_events.create", "no auth state"), false
	}
	return &checker{ev: ev, v: v, state: state, sender: sender}, decision{}, true
}

// readRoom reads the room's m.room.create event, its creators and its
// power levels from the state, refusing the event if any is missing or
// malformed.
func (c *checker) readRoom() (decision, bool) {
	// v12 rule 2: the room ID is the create event's ID with the "!" sigil.
	// The create event of the state must be that event.
	create := c.state.Get(spec.MRoomCreate, "")
	if create == nil {
		return deny("auth_events.create", "no m.room.create event"), false
	}
	if c.v.AtLeast12() {
		want, err := events.RoomIDFromCreateEventID(create.EventID())
		if err != nil || want != c.ev.RoomID() {
			return deny("room_id.create", "the room ID is not the ID of the room's m.room.create event"), false
		}
	}
	if d, ok := c.checkFetched(create, spec.MRoomCreate, ""); !ok {
		return d, false
	}
	c.create = create
	if d, ok := c.checkCreateContent(create); !ok {
		return d, false
	}
	creators, err := Creators(create)
	if err != nil {
		return deny("create.malformed", "the room's m.room.create event is malformed"), false
	}
	c.creators = creators

	plEvent, d, ok := c.get(spec.MRoomPowerLevels, "")
	if !ok {
		return d, false
	}
	c.plEvent = plEvent
	if c.pl, err = ParsePowerLevels(plEvent, create); err != nil {
		return deny("power_levels.state", "the room's m.room.power_levels event is malformed"), false
	}
	return decision{}, true
}

// federateRule applies m.federate: a room closed to federation takes events
// from the creator's server only. Anything but true counts as closed.
func (c *checker) federateRule() (decision, bool) {
	if f := field(c.create.Content(), "m.federate"); f.Exists() && f.Type != gjson.True {
		if c.sender.Server() != c.create.Sender().Server() {
			return deny("federate", "the room does not federate and the sender is on another server"), false
		}
	}
	return decision{}, true
}

// aliasesRule is rule 4 of room versions 1 to 5: each server controls its
// own m.room.aliases, members or not. From v6 the event type has no special
// meaning.
func (c *checker) aliasesRule() decision {
	sk, ok := c.ev.StateKey()
	if !ok {
		return deny("aliases.state_key", "m.room.aliases has no state_key")
	}
	if sk != string(c.sender.Server()) {
		return deny("aliases.domain", "the state_key of m.room.aliases is not the sender's server")
	}
	return allow("aliases")
}

// joinedSenderRules are the rules for every event but m.room.create,
// m.room.member and (v1-v5) m.room.aliases: the sender must be joined and
// reach the event's level; m.room.third_party_invite, m.room.power_levels
// and (v1, v2) m.room.redaction have rules of their own.
func (c *checker) joinedSenderRules() decision {
	ev := c.ev
	senderMembership, d, ok := c.membership(c.sender)
	if !ok {
		return d
	}
	if senderMembership != spec.Join {
		return deny("sender_not_joined", "the sender is not joined to the room")
	}
	senderLevel := c.pl.UserLevel(c.sender)

	if ev.Type() == spec.MRoomThirdPartyInvite {
		if senderLevel >= c.pl.Invite {
			return allow("third_party_invite")
		}
		return deny("third_party_invite", "the sender's power level is below the invite level")
	}

	if senderLevel < c.pl.EventLevel(ev.Type(), ev.IsState()) {
		return deny("event_level", "the sender's power level is below the level required for %s", ev.Type())
	}

	if sk, ok := ev.StateKey(); ok && strings.HasPrefix(sk, "@") && sk != string(c.sender) {
		return deny("state_key_user", "a state_key starting with @ must be the sender")
	}

	if ev.Type() == spec.MRoomPowerLevels {
		return c.powerLevelsRules(senderLevel)
	}
	if c.v.RedactionAuthRule() && ev.Type() == spec.MRoomRedaction {
		return c.redactionRule(senderLevel)
	}
	return allow("default")
}

// redactionRule is rule 11 of room versions 1 and 2: the redact level, or a
// redaction minted by the server that minted the event it redacts (both
// event IDs are $opaque:server there). From v3 the check moved to applying
// the redaction (RedactionApplies).
func (c *checker) redactionRule(senderLevel int64) decision {
	if senderLevel >= c.pl.Redact {
		return allow("redaction.level")
	}
	target, own := events.EventIDServer(c.ev.Redacts()), events.EventIDServer(c.ev.EventID())
	if target != "" && target == own {
		return allow("redaction.same_server")
	}
	return deny("redaction", "the sender's power level is below the redact level and the redacted event is from another server")
}

// get fetches a state event and checks that the state answered truthfully.
// A nil event with ok true means the state has none.
func (c *checker) get(eventType, stateKey string) (*events.PDU, decision, bool) {
	ev := c.state.Get(eventType, stateKey)
	if ev == nil {
		return nil, decision{}, true
	}
	d, ok := c.checkFetched(ev, eventType, stateKey)
	return ev, d, ok
}

// checkFetched checks an auth event: its key is the one asked for, and it
// belongs to the same room and room version as the event (v10/v11 rule 2.5,
// v12 rule 3.5).
func (c *checker) checkFetched(ev *events.PDU, eventType, stateKey string) (decision, bool) {
	sk, isState := ev.StateKey()
	if ev.Type() != eventType || !isState || sk != stateKey {
		return deny("auth_events.key", "the auth state returned an event that does not match its key"), false
	}
	if ev.RoomID() != c.ev.RoomID() || ev.Version() != c.v {
		return deny("auth_events.room_id", "an auth event belongs to another room"), false
	}
	return decision{}, true
}

// checkCreateContent checks that the room's create event declares the room
// version the event is checked under.
func (c *checker) checkCreateContent(create *events.PDU) (decision, bool) {
	rv := field(create.Content(), "room_version")
	if rv.Type != gjson.String || spec.RoomVersion(rv.Str) != c.v {
		return deny("create.room_version", "the room's m.room.create event does not declare room version %s", c.v), false
	}
	return decision{}, true
}

// createRules are rule 1, for m.room.create.
func (c *checker) createRules() decision {
	ev := c.ev
	if sk, ok := ev.StateKey(); !ok || sk != "" {
		return deny("create.state_key", "m.room.create must have an empty state_key")
	}
	if len(ev.PrevEvents()) > 0 {
		return deny("create.prev_events", "m.room.create must not have prev_events")
	}
	// A room has one create event: any other one in the state means this
	// event is a second create.
	if old := c.state.Get(spec.MRoomCreate, ""); old != nil && old.EventID() != ev.EventID() {
		return deny("create.duplicate", "the room already has an m.room.create event")
	}
	if c.v.AtLeast12() {
		// v12 (MSC4291): the room ID is derived from the create event.
		if ev.Get("room_id").Exists() {
			return deny("create.room_id", "m.room.create must not have a room_id")
		}
	} else {
		room, err := spec.ParseRoomID(string(ev.RoomID()))
		if err != nil || room.Server() == "" || room.Server() != c.sender.Server() {
			return deny("create.room_id_domain", "the room ID's server is not the sender's server")
		}
	}
	if d, ok := c.checkCreateContent(ev); !ok {
		return d
	}
	content := ev.Content()
	if !c.v.AtLeast11() {
		// v11 (MSC2175) removed "creator"; earlier versions require it.
		creator := field(content, "creator")
		if !creator.Exists() {
			return deny("create.creator", "m.room.create has no creator")
		}
		if _, err := userIDOf(creator); err != nil {
			return deny("create.creator", "creator is not a valid user ID")
		}
	}
	if c.v.AtLeast12() {
		if ac := field(content, "additional_creators"); ac.Exists() {
			if _, err := userIDList(ac); err != nil {
				return deny("create.additional_creators", "additional_creators must be an array of valid user IDs")
			}
		}
	}
	return allow("create")
}

// membership returns the membership of user in the state: "" when the user
// has no m.room.member event.
func (c *checker) membership(user spec.UserID) (string, decision, bool) {
	ev, d, ok := c.get(spec.MRoomMember, string(user))
	if !ok {
		return "", d, false
	}
	if ev == nil {
		return "", decision{}, true
	}
	m := field(ev.Content(), "membership")
	if m.Type != gjson.String {
		return "", deny("member.state", "a member event of the state has no membership"), false
	}
	switch m.Str {
	case spec.Join, spec.Invite, spec.Leave, spec.Ban:
		return m.Str, decision{}, true
	case spec.Knock:
		if c.v.Knocking() {
			return m.Str, decision{}, true
		}
	}
	return "", deny("member.state", "a member event of the state has an unknown membership"), false
}

// powerLevelsRules are the rules for m.room.power_levels (v1-v5 rule 10,
// v6-v11 rule 9, v12 rule 10).
func (c *checker) powerLevelsRules(senderLevel int64) decision {
	next, d, ok := parsePowerLevelsContent(c.ev.Content(), c.v)
	if !ok {
		return d
	}
	if c.v.AtLeast12() && len(listedCreators(c.creators, field(c.ev.Content(), "users"))) > 0 {
		return deny("power_levels.creator", "room creators cannot be listed in users")
	}
	if c.plEvent == nil {
		return allow("power_levels.initial")
	}
	cur, d, ok := parsePowerLevelsContent(c.plEvent.Content(), c.v)
	if !ok {
		return deny("power_levels.state", "the room's m.room.power_levels event is malformed")
	}

	for _, k := range scalarLevels {
		o, hadOld := cur.Scalars[k]
		n, hasNew := next.Scalars[k]
		if hadOld == hasNew && o == n {
			continue
		}
		if (hadOld && o > senderLevel) || (hasNew && n > senderLevel) {
			return deny("power_levels.change", "%s cannot change from or to a level above the sender's", k)
		}
	}
	maps := []struct {
		name     string
		cur, new map[string]int64
	}{{"events", cur.Events, next.Events}}
	if c.v.NotificationsAuthRule() { // v6
		maps = append(maps, maps[0])
		maps[1].name, maps[1].cur, maps[1].new = "notifications", cur.Notifications, next.Notifications
	}
	for _, m := range maps {
		for k, o := range m.cur {
			if n, ok := m.new[k]; (!ok || n != o) && o > senderLevel {
				return deny("power_levels."+m.name+"_change",
					"an entry of %s above the sender's level cannot be changed or removed", m.name)
			}
		}
		for k, n := range m.new {
			if o, ok := m.cur[k]; (!ok || n != o) && n > senderLevel {
				return deny("power_levels."+m.name+"_change",
					"an entry of %s cannot be set above the sender's level", m.name)
			}
		}
	}
	for u, o := range cur.Users {
		if u == string(c.sender) {
			continue
		}
		if n, ok := next.Users[u]; (!ok || n != o) && o >= senderLevel {
			return deny("power_levels.users_change",
				"a user at or above the sender's level cannot be changed or removed")
		}
	}
	for u, n := range next.Users {
		if o, ok := cur.Users[u]; (!ok || n != o) && n > senderLevel {
			return deny("power_levels.users_change", "a user cannot be set above the sender's level")
		}
	}
	return allow("power_levels")
}

// field returns the member key of a JSON object, matching the key exactly
// (gjson paths would read '.', '*' and '?' in keys as syntax).
func field(obj gjson.Result, key string) gjson.Result {
	var out gjson.Result
	if !obj.IsObject() {
		return out
	}
	obj.ForEach(func(k, v gjson.Result) bool {
		if k.Str == key {
			out = v
			return false
		}
		return true
	})
	return out
}

// userIDOf reads a JSON string holding a valid user ID.
func userIDOf(r gjson.Result) (spec.UserID, error) {
	if r.Type != gjson.String {
		return "", spec.InvalidParam("not a string")
	}
	return spec.ParseUserID(r.Str)
}

// userIDList reads a JSON array of valid user IDs.
func userIDList(r gjson.Result) ([]spec.UserID, error) {
	if !r.IsArray() {
		return nil, spec.InvalidParam("not an array")
	}
	var out []spec.UserID
	var bad error
	r.ForEach(func(_, v gjson.Result) bool {
		u, err := userIDOf(v)
		if err != nil {
			bad = err
			return false
		}
		out = append(out, u)
		return true
	})
	if bad != nil {
		return nil, bad
	}
	return out, nil
}
