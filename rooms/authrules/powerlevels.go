package authrules

import (
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// CreatorPowerLevel is the power level of a room creator in room version 12
// (MSC4289): above every level a power levels event can hold, which the
// canonical JSON range limits to ±(2^53-1).
const CreatorPowerLevel int64 = math.MaxInt64

// maxSafeInteger is the largest integer canonical JSON allows.
const maxSafeInteger = 1<<53 - 1

// The default levels of m.room.power_levels, used for absent properties and
// when the room has no power levels event.
const (
	defaultUsersLevel        = 0
	defaultEventsLevel       = 0
	defaultStateLevel        = 50
	defaultBanLevel          = 50
	defaultKickLevel         = 50
	defaultRedactLevel       = 50
	defaultInviteLevel       = 0
	defaultNotificationLevel = 50
	// CreatorImplicitLevel is the creator's level in room versions 1 to 11
	// when the room has no power levels event.
	CreatorImplicitLevel = 100
)

// scalarLevels are the integer properties of power levels content whose
// changes rule 9.5 (v12: 10.6) checks.
var scalarLevels = []string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

// PowerLevels is the content of a room's m.room.power_levels with the spec's
// defaults filled in, plus the room's creators.
type PowerLevels struct {
	Users         map[spec.UserID]int64
	UsersDefault  int64
	Events        map[string]int64
	EventsDefault int64
	StateDefault  int64
	Ban           int64
	Kick          int64
	Redact        int64
	Invite        int64
	// Notifications maps a notification key ("room") to its level.
	Notifications map[string]int64
	// Creators are the room creators with unlimited power: the create
	// event's sender and content.additional_creators in room version 12,
	// and nobody in earlier versions.
	Creators []spec.UserID
}

// ParsePowerLevels reads the power levels of a room from its
// m.room.power_levels event (nil if the room has none) and its m.room.create
// event. Values are integers; before room version 10 a string holding an
// integer counts as that integer, and before version 6 a float counts
// truncated (see levelValue). With no power levels event, everyone is at 0
// except the creator, at 100 before version 12.
func ParsePowerLevels(plEvent, create *events.PDU) (PowerLevels, error) {
	if create == nil || create.Type() != spec.MRoomCreate || !create.Version().Supported() {
		return PowerLevels{}, spec.Forbidden("no valid m.room.create event")
	}
	v := create.Version()
	creators, err := Creators(create)
	if err != nil {
		return PowerLevels{}, err
	}
	pl := PowerLevels{
		Users:         map[spec.UserID]int64{},
		UsersDefault:  defaultUsersLevel,
		Events:        map[string]int64{},
		EventsDefault: defaultEventsLevel,
		StateDefault:  defaultStateLevel,
		Ban:           defaultBanLevel,
		Kick:          defaultKickLevel,
		Redact:        defaultRedactLevel,
		Invite:        defaultInviteLevel,
		Notifications: map[string]int64{"room": defaultNotificationLevel},
	}
	if v.AtLeast12() {
		pl.Creators = creators
	}
	if plEvent == nil {
		if !v.AtLeast12() {
			pl.Users[creators[0]] = CreatorImplicitLevel
		}
		return pl, nil
	}
	if plEvent.Type() != spec.MRoomPowerLevels || plEvent.Version() != v || plEvent.RoomID() != create.RoomID() {
		return PowerLevels{}, spec.Forbidden("the power levels event does not belong to the room")
	}
	c, d, ok := parsePowerLevelsContent(plEvent.Content(), v)
	if !ok {
		return PowerLevels{}, spec.Forbidden("malformed power levels: %s", d.why)
	}
	for k, n := range c.Scalars {
		switch k {
		case "users_default":
			pl.UsersDefault = n
		case "events_default":
			pl.EventsDefault = n
		case "state_default":
			pl.StateDefault = n
		case "ban":
			pl.Ban = n
		case "kick":
			pl.Kick = n
		case "redact":
			pl.Redact = n
		case "invite":
			pl.Invite = n
		}
	}
	for u, n := range c.Users {
		pl.Users[spec.UserID(u)] = n
	}
	for t, n := range c.Events {
		pl.Events[t] = n
	}
	for k, n := range c.Notifications {
		pl.Notifications[k] = n
	}
	return pl, nil
}

// PowerLevelsOf reads the power levels of the room whose state is given.
func PowerLevelsOf(state AuthState) (PowerLevels, error) {
	if state == nil {
		return PowerLevels{}, spec.Forbidden("no room state")
	}
	create := state.Get(spec.MRoomCreate, "")
	if create == nil {
		return PowerLevels{}, spec.Forbidden("no m.room.create event")
	}
	return ParsePowerLevels(state.Get(spec.MRoomPowerLevels, ""), create)
}

// Creators returns the room creators named by an m.room.create event: its
// content.creator before room version 11, its sender from 11, and from 12
// also content.additional_creators. An invalid value is an error.
func Creators(create *events.PDU) ([]spec.UserID, error) {
	if create == nil || create.Type() != spec.MRoomCreate {
		return nil, spec.Forbidden("no m.room.create event")
	}
	v := create.Version()
	content := create.Content()
	switch {
	case !v.Supported():
	case !v.AtLeast11():
		creator, err := userIDOf(field(content, "creator"))
		if err != nil {
			return nil, spec.Forbidden("m.room.create has no valid creator")
		}
		return []spec.UserID{creator}, nil
	case !v.AtLeast12():
		sender, err := spec.ParseUserID(string(create.Sender()))
		if err != nil {
			return nil, spec.Forbidden("m.room.create has no valid sender")
		}
		return []spec.UserID{sender}, nil
	default:
		sender, err := spec.ParseUserID(string(create.Sender()))
		if err != nil {
			return nil, spec.Forbidden("m.room.create has no valid sender")
		}
		out := []spec.UserID{sender}
		if ac := field(content, "additional_creators"); ac.Exists() {
			more, err := userIDList(ac)
			if err != nil {
				return nil, spec.Forbidden("m.room.create has invalid additional_creators")
			}
			out = append(out, more...)
		}
		return out, nil
	}
	return nil, spec.Forbidden("room version %q is not supported", v)
}

// ListedCreators returns the room creators that power levels content lists
// in its users, in creator order. Room version 12 (MSC4289) forbids that:
// a creator's power is implicit and unlimited. Before version 12, and for a
// create event whose creators cannot be read (the rules refuse such a room),
// it returns none.
func ListedCreators(create *events.PDU, content gjson.Result) []spec.UserID {
	if create == nil || !create.Version().AtLeast12() {
		return nil
	}
	creators, err := Creators(create)
	if err != nil {
		return nil
	}
	return listedCreators(creators, field(content, "users"))
}

func listedCreators(creators []spec.UserID, users gjson.Result) []spec.UserID {
	var listed []spec.UserID
	for _, c := range creators {
		if field(users, string(c)).Exists() {
			listed = append(listed, c)
		}
	}
	return listed
}

// IsCreator reports whether user is a room creator with unlimited power
// (room version 12).
func (pl PowerLevels) IsCreator(user spec.UserID) bool {
	for _, c := range pl.Creators {
		if c == user {
			return true
		}
	}
	return false
}

// UserLevel is the power level of user: CreatorPowerLevel for a v12 room
// creator, else the users entry, else users_default.
func (pl PowerLevels) UserLevel(user spec.UserID) int64 {
	if pl.IsCreator(user) {
		return CreatorPowerLevel
	}
	if n, ok := pl.Users[user]; ok {
		return n
	}
	return pl.UsersDefault
}

// EventLevel is the level required to send an event of the type: the events
// entry, else state_default or events_default.
func (pl PowerLevels) EventLevel(eventType string, isState bool) int64 {
	if n, ok := pl.Events[eventType]; ok {
		return n
	}
	if isState {
		return pl.StateDefault
	}
	return pl.EventsDefault
}

// CanSend reports whether user's level reaches the level required for the
// event type. Membership events follow their own rules (see Allowed).
func (pl PowerLevels) CanSend(user spec.UserID, eventType string, isState bool) bool {
	return pl.UserLevel(user) >= pl.EventLevel(eventType, isState)
}

// NotificationLevel is the level needed to trigger a notification key such
// as "room"; an unknown key defaults to 50.
func (pl PowerLevels) NotificationLevel(key string) int64 {
	if n, ok := pl.Notifications[key]; ok {
		return n
	}
	return defaultNotificationLevel
}

// CanRedactOthers reports whether user may redact events sent by other users
// (client-server API, m.room.redaction): the redact level. Redacting one's
// own events needs only the level to send m.room.redaction.
func (pl PowerLevels) CanRedactOthers(user spec.UserID) bool {
	return pl.UserLevel(user) >= pl.Redact
}

// PowerLevelsContent is power levels content as written, each level read
// as the room version reads it (see levelValue): only the properties
// present, no defaults.
type PowerLevelsContent struct {
	// Scalars maps the integer properties present (users_default, ban, …)
	// to their levels.
	Scalars       map[string]int64
	Events        map[string]int64
	Notifications map[string]int64
	Users         map[string]int64
}

// ReadPowerLevelsContent reads power levels content under the rules on its
// form (see parsePowerLevelsContent). The error says what is malformed.
func ReadPowerLevelsContent(content gjson.Result, v spec.RoomVersion) (PowerLevelsContent, error) {
	c, d, ok := parsePowerLevelsContent(content, v)
	if !ok {
		return PowerLevelsContent{}, errors.New(d.why)
	}
	return c, nil
}

// parsePowerLevelsContent applies rules 9.1-9.3 (v12: 10.1-10.3): integer
// levels, integer maps for events and notifications, and users keyed by
// valid user IDs. Before room version 10 the rules check only "users"
// (integers or strings holding one); Chatalot also refuses any other level
// it cannot read as a level of that version, since a level that means
// nothing cannot be enforced.
func parsePowerLevelsContent(content gjson.Result, v spec.RoomVersion) (PowerLevelsContent, decision, bool) {
	c := PowerLevelsContent{Scalars: map[string]int64{}}
	if !content.IsObject() {
		return c, deny("power_levels.content", "content is not an object"), false
	}
	for _, k := range scalarLevels {
		r := field(content, k)
		if !r.Exists() {
			continue
		}
		n, ok := levelValue(r, v)
		if !ok {
			return c, deny("power_levels.integer", "%s is not an integer", k), false
		}
		c.Scalars[k] = n
	}
	var ok bool
	if c.Events, ok = integerMap(field(content, "events"), v); !ok {
		return c, deny("power_levels.events", "events is not an object of integers"), false
	}
	if c.Notifications, ok = integerMap(field(content, "notifications"), v); !ok {
		return c, deny("power_levels.notifications", "notifications is not an object of integers"), false
	}
	users := field(content, "users")
	if c.Users, ok = integerMap(users, v); !ok {
		return c, deny("power_levels.users", "users is not an object of integers"), false
	}
	for u := range c.Users {
		if _, err := spec.ParseUserID(u); err != nil {
			return c, deny("power_levels.users", "users has a key that is not a valid user ID"), false
		}
	}
	return c, decision{}, true
}

// integerMap reads an optional JSON object whose values are all levels.
func integerMap(r gjson.Result, v spec.RoomVersion) (map[string]int64, bool) {
	out := map[string]int64{}
	if !r.Exists() {
		return out, true
	}
	if !r.IsObject() {
		return nil, false
	}
	good := true
	r.ForEach(func(k, val gjson.Result) bool {
		n, ok := levelValue(val, v)
		if !ok {
			good = false
			return false
		}
		out[k.Str] = n
		return true
	})
	if !good {
		return nil, false
	}
	return out, true
}

// levelValue reads one power level as room version v writes it: a JSON
// integer in canonical JSON's range from v10; before, also a string holding
// an integer (rooms/v1 "m.room.power_levels events accept values as
// strings"); before v6, whose events may break canonical JSON, also a float,
// truncated at the decimal point ("accept values as floats").
func levelValue(r gjson.Result, v spec.RoomVersion) (int64, bool) {
	if v.IntegerPowerLevels() {
		return jsonInteger(r)
	}
	switch r.Type {
	case gjson.String:
		return stringyLevel(r.Str)
	case gjson.Number:
		if n, ok := jsonInteger(r); ok {
			return n, true
		}
		if v.StrictCanonicalJSON() {
			return 0, false
		}
		return floatyLevel(r.Raw)
	}
	return 0, false
}

// stringyLevel reads the string form of a level before v10: optional
// whitespace around, one optional sign, base-10 digits (leading zeros
// allowed), and nothing else.
func stringyLevel(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg, s = s[0] == '-', s[1:]
	}
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return 0, true
	}
	if len(s) > 16 {
		return 0, false // beyond any level canonical JSON can hold
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxSafeInteger {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// floatyLevel reads a level written as a float before v6: exponents
// applied, then truncated toward zero. Values outside a double's range,
// infinities and NaN are refused, and so is anything beyond canonical
// JSON's integer range, which no level needs.
func floatyLevel(raw string) (int64, bool) {
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	f = math.Trunc(f)
	if f > maxSafeInteger || f < -maxSafeInteger {
		return 0, false
	}
	return int64(f), true
}

// jsonInteger reads a JSON number written as an integer in canonical JSON's
// range. Strings ("50"), fractions and exponents are refused (v10+).
func jsonInteger(r gjson.Result) (int64, bool) {
	if r.Type != gjson.Number || r.Raw == "" || strings.ContainsAny(r.Raw, ".eE+") {
		return 0, false
	}
	n, err := strconv.ParseInt(r.Raw, 10, 64)
	if err != nil || n > maxSafeInteger || n < -maxSafeInteger {
		return 0, false
	}
	return n, true
}
