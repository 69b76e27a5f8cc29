package spec

// RoomVersion names a room version: the event format, auth rules, redaction
// algorithm and state resolution a room follows (rooms/v1 … rooms/v12).
type RoomVersion string

// The stable room versions, all of which Chatalot creates and joins.
const (
	RoomV1  RoomVersion = "1"
	RoomV2  RoomVersion = "2"
	RoomV3  RoomVersion = "3"
	RoomV4  RoomVersion = "4"
	RoomV5  RoomVersion = "5"
	RoomV6  RoomVersion = "6"
	RoomV7  RoomVersion = "7"
	RoomV8  RoomVersion = "8"
	RoomV9  RoomVersion = "9"
	RoomV10 RoomVersion = "10"
	RoomV11 RoomVersion = "11"
	RoomV12 RoomVersion = "12"

	// DefaultRoomVersion is the version of new rooms unless the server is
	// configured otherwise, as the spec recommends.
	DefaultRoomVersion = RoomV12
)

// SupportedRoomVersions lists every version, oldest first.
var SupportedRoomVersions = []RoomVersion{
	RoomV1, RoomV2, RoomV3, RoomV4, RoomV5, RoomV6, RoomV7, RoomV8, RoomV9, RoomV10, RoomV11, RoomV12,
}

// number is the version as an integer, 0 for a version Chatalot does not
// know. Every feature test below is a comparison on it: a room version
// check on a hot path costs a string switch.
func (v RoomVersion) number() int {
	switch v {
	case RoomV1:
		return 1
	case RoomV2:
		return 2
	case RoomV3:
		return 3
	case RoomV4:
		return 4
	case RoomV5:
		return 5
	case RoomV6:
		return 6
	case RoomV7:
		return 7
	case RoomV8:
		return 8
	case RoomV9:
		return 9
	case RoomV10:
		return 10
	case RoomV11:
		return 11
	case RoomV12:
		return 12
	}
	return 0
}

// Supported reports whether Chatalot implements the version.
func (v RoomVersion) Supported() bool { return v.number() > 0 }

// AtLeast reports whether v is a known version at or after n. An unknown
// version is at least nothing, so a feature test on it is always false.
func (v RoomVersion) AtLeast(n int) bool { n0 := v.number(); return n0 > 0 && n0 >= n }

// before reports whether v is a known version before n.
func (v RoomVersion) before(n int) bool { n0 := v.number(); return n0 > 0 && n0 < n }

// EventIDInEvent reports whether events carry their own "event_id" of the
// form $opaque:server and list prev_events and auth_events as
// [event ID, hashes] pairs (rooms/v1, v2). From v3 the event ID is the
// reference hash.
func (v RoomVersion) EventIDInEvent() bool { return v.before(3) }

// URLSafeEventIDs reports whether reference-hash event IDs use URL-safe
// base64 (rooms/v4+); v3 uses standard base64.
func (v RoomVersion) URLSafeEventIDs() bool { return v.AtLeast(4) }

// StrictCanonicalJSON reports whether events must be canonical JSON with
// integers in range and no floats (rooms/v6+). Before, servers must not
// enforce it on events they receive.
func (v RoomVersion) StrictCanonicalJSON() bool { return v.AtLeast(6) }

// RedactionAuthRule reports whether the auth rules check m.room.redaction
// (rooms/v1, v2 rule 11); from v3 redactions are checked when applied.
func (v RoomVersion) RedactionAuthRule() bool { return v.before(3) }

// AliasesAuthRule reports whether m.room.aliases has its own auth rule and
// keeps content.aliases through redaction (rooms/v1 to v5).
func (v RoomVersion) AliasesAuthRule() bool { return v.before(6) }

// NotificationsAuthRule reports whether the power levels auth rules check
// changes to content.notifications (rooms/v6+).
func (v RoomVersion) NotificationsAuthRule() bool { return v.AtLeast(6) }

// Knocking reports whether the knock join rule and membership exist
// (rooms/v7+).
func (v RoomVersion) Knocking() bool { return v.AtLeast(7) }

// RestrictedJoins reports whether the restricted join rule and
// join_authorised_via_users_server exist (rooms/v8+).
func (v RoomVersion) RestrictedJoins() bool { return v.AtLeast(8) }

// KnockRestricted reports whether the knock_restricted join rule exists
// (rooms/v10+).
func (v RoomVersion) KnockRestricted() bool { return v.AtLeast(10) }

// IntegerPowerLevels reports whether power levels must be JSON integers
// (rooms/v10+). Before, a string holding an integer is accepted, and before
// v6 also a float, truncated.
func (v RoomVersion) IntegerPowerLevels() bool { return v.AtLeast(10) }

// StateResV2 reports whether the room uses the second state resolution
// algorithm (rooms/v2+). Only federation resolves state.
func (v RoomVersion) StateResV2() bool { return v.AtLeast(2) }

// AtLeast11 reports whether the version has the v11 changes (MSC2174
// "redacts" in content, MSC2175 no "creator", MSC3821, MSC3989 redaction).
func (v RoomVersion) AtLeast11() bool { return v.AtLeast(11) }

// AtLeast12 reports whether the version has the v12 changes: room IDs derived
// from the create event, creators with unlimited power (MSC4289, MSC4291,
// MSC4297).
func (v RoomVersion) AtLeast12() bool { return v.AtLeast(12) }

// Event types the server itself reads.
const (
	MRoomCreate            = "m.room.create"
	MRoomMember            = "m.room.member"
	MRoomPowerLevels       = "m.room.power_levels"
	MRoomJoinRules         = "m.room.join_rules"
	MRoomHistoryVisibility = "m.room.history_visibility"
	MRoomGuestAccess       = "m.room.guest_access"
	MRoomName              = "m.room.name"
	MRoomTopic             = "m.room.topic"
	MRoomAliases           = "m.room.aliases" // historical: auth rule and redaction before v6
	MRoomAvatar            = "m.room.avatar"
	MRoomCanonicalAlias    = "m.room.canonical_alias"
	MRoomEncryption        = "m.room.encryption"
	MRoomEncrypted         = "m.room.encrypted"
	MRoomMessage           = "m.room.message"
	MRoomRedaction         = "m.room.redaction"
	MRoomTombstone         = "m.room.tombstone"
	MRoomThirdPartyInvite  = "m.room.third_party_invite"
	MRoomServerACL         = "m.room.server_acl"
	MRoomPinnedEvents      = "m.room.pinned_events"
	MSticker               = "m.sticker"
	MReaction              = "m.reaction"
	MSpaceChild            = "m.space.child"
	MSpaceParent           = "m.space.parent"
)

// Membership values of m.room.member.
const (
	Join   = "join"
	Invite = "invite"
	Leave  = "leave"
	Ban    = "ban"
	Knock  = "knock"
)
