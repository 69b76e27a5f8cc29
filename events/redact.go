package events

import (
	"github.com/chatalot/chatalot/spec"
)

// Redact applies the redaction algorithm of room version v to an event
// (rooms/v1 "Redactions" and the changes of v6, v8, v9 and v11; v12 is
// unchanged from v11). It keeps only the protocol's top-level keys and, for
// the event types that need them, the content keys the auth rules read. The
// result is canonical JSON; "unsigned" is not on any version's list, so it is
// dropped. An event whose "type" is not a string or whose "content" is not an
// object is refused.
func Redact(event []byte, v spec.RoomVersion) ([]byte, error) {
	c, err := canonicalEvent(event, v)
	if err != nil {
		return nil, err
	}
	return redactCanonical(c, v)
}

// Top-level keys that survive redaction.
var (
	keepTopV10 = []string{
		"auth_events", "content", "depth", "event_id", "hashes", "membership", "origin",
		"origin_server_ts", "prev_events", "prev_state", "room_id", "sender", "signatures",
		"state_key", "type",
	}
	// v11 (MSC2176, MSC3989): "origin", "membership" and "prev_state" are
	// no longer protected.
	keepTopV11 = []string{
		"auth_events", "content", "depth", "event_id", "hashes", "origin_server_ts",
		"prev_events", "room_id", "sender", "signatures", "state_key", "type",
	}
)

// keepContent returns the content keys kept for an event type, and whether the
// whole content is kept.
func keepContent(typ string, v spec.RoomVersion) (keys []string, all bool) {
	v11 := v.AtLeast11()
	switch typ {
	case spec.MRoomMember:
		// v9: join_authorised_via_users_server, which the restricted join
		// rule reads. v11 also keeps third_party_invite.signed; see
		// redactContent.
		if v.AtLeast(9) {
			return []string{"join_authorised_via_users_server", "membership"}, false
		}
		return []string{"membership"}, false
	case spec.MRoomCreate:
		if v11 {
			return nil, true // v11: the create event keeps its whole content
		}
		return []string{"creator"}, false
	case spec.MRoomJoinRules:
		if v.RestrictedJoins() {
			return []string{"allow", "join_rule"}, false // v8: "allow"
		}
		return []string{"join_rule"}, false
	case spec.MRoomPowerLevels:
		if v11 {
			return []string{"ban", "events", "events_default", "invite", "kick", "redact",
				"state_default", "users", "users_default"}, false
		}
		return []string{"ban", "events", "events_default", "kick", "redact",
			"state_default", "users", "users_default"}, false
	case spec.MRoomAliases:
		if v.AliasesAuthRule() {
			return []string{"aliases"}, false // v6 removed all meaning of m.room.aliases
		}
	case spec.MRoomHistoryVisibility:
		return []string{"history_visibility"}, false
	case spec.MRoomRedaction:
		if v11 {
			return []string{"redacts"}, false // v11: "redacts" moved into content
		}
	}
	return nil, false
}

// redactCanonical redacts an event that is already canonical JSON.
func redactCanonical(ev []byte, v spec.RoomVersion) ([]byte, error) {
	if !v.Supported() {
		return nil, spec.NewError(spec.ErrUnsupportedRoomVersion, "unsupported room version %q", v)
	}
	keepTop := keepTopV10
	if v.AtLeast11() {
		keepTop = keepTopV11
	}
	typRaw, ok := member(ev, "type")
	if !ok {
		return nil, spec.BadJSON("event has no type")
	}
	typ, ok := unquote(typRaw)
	if !ok || !isString(typRaw) {
		return nil, spec.BadJSON("event type must be a string")
	}
	w := objWriter{buf: make([]byte, 0, len(ev))}
	it := iterObject(ev)
	sawContent := false
	for it.next() {
		if !contains(keepTop, it.key) {
			continue
		}
		if string(it.key) != "content" {
			w.rawKey(it.key, it.val)
			continue
		}
		sawContent = true
		content, err := redactContent(it.val, typ, v)
		if err != nil {
			return nil, err
		}
		w.raw("content", content)
	}
	if it.bad {
		return nil, spec.BadJSON("event is not a JSON object")
	}
	if !sawContent {
		return nil, spec.BadJSON("event has no content")
	}
	return w.close(), nil
}

func redactContent(content []byte, typ string, v spec.RoomVersion) ([]byte, error) {
	if !isObject(content) {
		return nil, spec.BadJSON("event content must be an object")
	}
	keys, all := keepContent(typ, v)
	if all {
		return content, nil
	}
	// v11 (MSC3821): a member event keeps the "signed" part of
	// third_party_invite, which the auth rules need. Like Synapse, an object
	// without "signed" is kept as {} and a non-object is dropped.
	tpi := v.AtLeast11() && typ == spec.MRoomMember
	w := objWriter{buf: make([]byte, 0, len(content))}
	it := iterObject(content)
	for it.next() {
		switch {
		case contains(keys, it.key):
			w.rawKey(it.key, it.val)
		case tpi && string(it.key) == "third_party_invite" && isObject(it.val):
			inner := objWriter{}
			if signed, ok := member(it.val, "signed"); ok {
				inner.raw("signed", signed)
			}
			w.raw("third_party_invite", inner.close())
		}
	}
	if it.bad {
		return nil, spec.BadJSON("event content must be an object")
	}
	return w.close(), nil
}
