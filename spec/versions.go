package spec

// RoomVersion names a room version: the event format, auth rules, redaction
// algorithm and state resolution a room follows.
type RoomVersion string

// The room versions Chatalot creates and joins. Earlier versions are refused:
// they predate integer-only power levels and the v4+ event ID format.
const (
	RoomV10 RoomVersion = "10"
	RoomV11 RoomVersion = "11"
	RoomV12 RoomVersion = "12"

	// DefaultRoomVersion is the version of new rooms, as the spec recommends.
	DefaultRoomVersion = RoomV12
)

// SupportedRoomVersions lists every version, oldest first.
var SupportedRoomVersions = []RoomVersion{RoomV10, RoomV11, RoomV12}

// Supported reports whether Chatalot implements the version.
func (v RoomVersion) Supported() bool {
	return v == RoomV10 || v == RoomV11 || v == RoomV12
}

// AtLeast11 reports whether the version has the v11 changes (MSC2174
// "redacts" in content, MSC2175 no "creator", MSC3821, MSC3989 redaction).
func (v RoomVersion) AtLeast11() bool { return v == RoomV11 || v == RoomV12 }

// AtLeast12 reports whether the version has the v12 changes: room IDs derived
// from the create event, creators with unlimited power (MSC4289, MSC4291,
// MSC4297).
func (v RoomVersion) AtLeast12() bool { return v == RoomV12 }

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
