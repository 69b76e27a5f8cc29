package authrules

import (
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// AuthEventKeys returns the (type, state_key) keys of the auth events of a
// new event (server-server API, "Auth events selection"): none for
// m.room.create; otherwise the create event (not in room version 12, where
// the room ID stands for it), the power levels, the sender's membership and,
// for m.room.member, the target's membership, the join rules (join, invite,
// knock), the m.room.third_party_invite named by a third-party invite's
// token, and the membership of join_authorised_via_users_server (join). The
// caller includes those present in the room state. stateKey is nil for a
// message event.
func AuthEventKeys(eventType string, stateKey *string, sender spec.UserID, content gjson.Result, v spec.RoomVersion) []StateKeyPair {
	if eventType == spec.MRoomCreate {
		return nil
	}
	var keys []StateKeyPair
	add := func(t, sk string) {
		k := StateKeyPair{t, sk}
		for _, have := range keys {
			if have == k {
				return
			}
		}
		keys = append(keys, k)
	}
	if !v.AtLeast12() {
		add(spec.MRoomCreate, "")
	}
	add(spec.MRoomPowerLevels, "")
	add(spec.MRoomMember, string(sender))
	if eventType != spec.MRoomMember || stateKey == nil {
		return keys
	}
	add(spec.MRoomMember, *stateKey)
	membership := field(content, "membership")
	if membership.Type != gjson.String {
		return keys
	}
	switch membership.Str {
	case spec.Join, spec.Invite, spec.Knock:
		add(spec.MRoomJoinRules, "")
	}
	if membership.Str == spec.Invite {
		if tpi := field(content, "third_party_invite"); tpi.Exists() {
			if token := field(field(tpi, "signed"), "token"); token.Type == gjson.String {
				add(spec.MRoomThirdPartyInvite, token.Str)
			}
		}
	}
	if membership.Str == spec.Join && v.RestrictedJoins() {
		// v8+: the membership of the user who authorised a restricted join.
		if a := field(content, "join_authorised_via_users_server"); a.Type == gjson.String {
			add(spec.MRoomMember, a.Str)
		}
	}
	return keys
}

// AuthEventKeysOf is AuthEventKeys for an existing event.
func AuthEventKeysOf(ev *events.PDU) []StateKeyPair {
	var sk *string
	if s, ok := ev.StateKey(); ok {
		sk = &s
	}
	return AuthEventKeys(ev.Type(), sk, ev.Sender(), ev.Content(), ev.Version())
}

// CheckAuthEvents applies the rules on an event's auth_events list (v10/v11
// rule 2, v12 rule 3) to the events it names, as the caller fetched them: no
// two for one (type, state_key); each key chosen by the auth events
// selection; all in the event's room; the create event present before
// version 12 and absent from it. The list must be exactly the events named by
// ev.AuthEvents(). Whether an auth event was itself rejected is the caller's
// to check. Errors are *spec.Error M_FORBIDDEN.
func CheckAuthEvents(ev *events.PDU, authEvents []*events.PDU) error {
	if ev == nil || !ev.Version().Supported() {
		return spec.Forbidden("auth rule auth_events: no event of a supported room version")
	}
	v := ev.Version()
	if ev.Type() == spec.MRoomCreate {
		if len(ev.AuthEvents()) != 0 || len(authEvents) != 0 {
			return spec.Forbidden("auth rule auth_events.selection: m.room.create has no auth events")
		}
		return nil
	}
	named := make(map[spec.EventID]bool, len(ev.AuthEvents()))
	for _, id := range ev.AuthEvents() {
		if named[id] {
			return spec.Forbidden("auth rule auth_events.duplicate: an auth event is listed twice")
		}
		named[id] = true
	}
	if len(authEvents) != len(named) {
		return spec.Forbidden("auth rule auth_events.missing: the auth events given are not those the event names")
	}
	allowed := map[StateKeyPair]bool{}
	for _, k := range AuthEventKeysOf(ev) {
		allowed[k] = true
	}
	seen := map[StateKeyPair]bool{}
	hasCreate := false
	for _, a := range authEvents {
		if a == nil || !named[a.EventID()] {
			return spec.Forbidden("auth rule auth_events.missing: the auth events given are not those the event names")
		}
		sk, ok := a.StateKey()
		if !ok {
			return spec.Forbidden("auth rule auth_events.selection: an auth event is not a state event")
		}
		k := StateKeyPair{a.Type(), sk}
		if seen[k] {
			return spec.Forbidden("auth rule auth_events.duplicate: two auth events for (%s, %s)", k.Type, k.StateKey)
		}
		seen[k] = true
		if !allowed[k] {
			return spec.Forbidden("auth rule auth_events.selection: (%s, %s) is not an auth event of this event", k.Type, k.StateKey)
		}
		if a.Version() != v {
			return spec.Forbidden("auth rule auth_events.room_id: an auth event has another room version")
		}
		if a.RoomID() != ev.RoomID() {
			return spec.Forbidden("auth rule auth_events.room_id: an auth event belongs to another room")
		}
		if k.Type == spec.MRoomCreate {
			hasCreate = true
		}
	}
	// v12 (MSC4291): the create event is never an auth event; the selection
	// above already refuses it.
	if !v.AtLeast12() && !hasCreate {
		return spec.Forbidden("auth rule auth_events.create: no m.room.create among the auth events")
	}
	return nil
}

// RedactionApplies decides whether a redaction that passed the auth rules is
// applied to original (rooms v3-v12 "Handling redactions"; in v1 and v2 the
// auth rules' redaction rule has already decided, and this check, stricter
// for redactions of another server's events, is kept): if the
// redaction's sender reaches the redact level in state (the state before the
// redaction), or is on the same server as the original's sender. The
// client-server API is stricter for local users: see
// PowerLevels.CanRedactOthers. Errors are *spec.Error M_FORBIDDEN.
func RedactionApplies(redaction, original *events.PDU, state AuthState) error {
	if redaction == nil || original == nil || redaction.Type() != spec.MRoomRedaction {
		return spec.Forbidden("not a redaction and its target")
	}
	if redaction.Redacts() != original.EventID() || redaction.RoomID() != original.RoomID() ||
		redaction.Version() != original.Version() || !redaction.Version().Supported() {
		return spec.Forbidden("the redaction does not target this event")
	}
	sender, err := spec.ParseUserID(string(redaction.Sender()))
	if err != nil {
		return spec.Forbidden("the redaction's sender is not a valid user ID")
	}
	if orig, err := spec.ParseUserID(string(original.Sender())); err == nil && orig.Server() == sender.Server() {
		return nil
	}
	pl, err := PowerLevelsOf(state)
	if err != nil {
		return spec.Forbidden("the room's power levels cannot be read")
	}
	if create := state.Get(spec.MRoomCreate, ""); create.RoomID() != redaction.RoomID() {
		return spec.Forbidden("the state belongs to another room")
	}
	if pl.UserLevel(sender) >= pl.Redact {
		return nil
	}
	return spec.Forbidden("the sender's power level is below the redact level")
}
