// Package wake names what a change that /sync delivers is about: which
// room, if any, and which part of a sync answer it touches. The packages
// that commit changes (rooms, keys, auth, push, sync itself) say it when
// they notify; sync's notifier decides from it which long-polls to wake.
// A /v3/sync long-poll is woken by every change of its user; a sliding sync
// connection only by a change that can alter its answer. It is a leaf
// package so that the packages beneath sync can name it.
package wake

import "github.com/chatalot/chatalot/spec"

// Kind is the part of a sync answer a change touches.
type Kind uint8

const (
	// Any is a change of no stated kind: it wakes every long-poll of its
	// users (the zero value, so that a change never goes unwoken).
	Any Kind = iota
	// Timeline is events committed in Room: timeline and state.
	Timeline
	// Typing is a change of who is typing in Room.
	Typing
	// Receipts is a read receipt in Room.
	Receipts
	// AccountData is the user's account data: global when Room is "",
	// else of Room.
	AccountData
	// UnreadCounts is a change of the user's notification or highlight
	// counts in Room (a read receipt moved them).
	UnreadCounts
	// ToDevice is a to-device message for the user (for Device, or for
	// any of their devices when Device is "").
	ToDevice
	// DeviceLists is a change of the devices or keys of a user the user
	// shares a room with, or of their own.
	DeviceLists
	// Presence is a presence change of a user the user shares a room with.
	Presence
)

// Change is one change to tell the users it concerns.
type Change struct {
	Kind Kind
	Room spec.RoomID // the room of Timeline, Typing, Receipts, UnreadCounts and room account data
	// Timeline only: what, beyond the room itself, the events can move in
	// a room list. Bump: they raise the room's bump_stamp, so the room
	// rises to the top of a list sorted by recency. Membership: they change
	// the membership in Room of the users told (a join, invite, leave,
	// kick), so a list's count and contents can change. FilterState: they
	// change state a list filter reads (encryption, room type, a space's
	// children), so rooms can enter or leave a filtered list.
	Bump, Membership, FilterState bool
	// Device is the one device a ToDevice change is for; "" for any.
	Device string
}

// Of is a change of a kind that concerns no one room (or, for AccountData,
// the global account data).
func Of(k Kind) Change { return Change{Kind: k} }

// InRoom is a change of a kind in room.
func InRoom(k Kind, room spec.RoomID) Change { return Change{Kind: k, Room: room} }
