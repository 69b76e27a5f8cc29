package sync

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/sync/wake"
)

// interest is what can change a sliding sync connection's answer, as of the
// build that left it waiting: a waiting connection is woken only by a
// change it covers (Notifier.wake). Precision is by room and kind of
// change; when a change may matter it wakes (a spurious wake costs one
// build that answers nothing, a missed one a message never shown).
//
// A room's change matters when the room is in view (in a list's window or
// subscribed to). A room outside every window can still enter one: when its
// bump_stamp rises it goes to the top of a list sorted by recency, so a
// bump wakes every connection with a non-empty window unless every such
// list's filters left the room out; a change of the user's membership (a
// new room, a leave) moves a list's count and contents, and state a filter
// reads moves rooms in and out of filtered lists. One over-wake is left on
// purpose: a bump in a room ranked above the first range of a window that
// does not start at 0 cannot change it, yet wakes (the SDKs' windows start
// at 0).
type interest struct {
	device string
	rooms  map[spec.RoomID]bool // in view: in a window, or subscribed to (shown or not)
	// lists: the connection has lists (their counts move with the user's
	// memberships); filtered: one of them filters (on state, tags or
	// m.direct).
	lists, filtered bool
	// bumps: some list has a window a bumped room can rise into, except
	// the rooms in notInLists, which every such list's filters leave out.
	bumps      bool
	notInLists map[spec.RoomID]bool
	// The rooms whose typing, receipts and account data the extensions
	// cover (nil: the extension is off).
	typing, receipts, accountData map[spec.RoomID]bool
	// globalAccountData: the account_data extension is on, or a list reads
	// global account data (m.direct for is_dm, m.ignored_user_list for
	// invites); roomAccountData: a list filters on tags, any room's m.tag.
	globalAccountData, roomAccountData bool
	toDevice, e2ee                     bool
}

// wokenBy reports whether the change can alter the connection's answer.
func (in *interest) wokenBy(c wake.Change) bool {
	switch c.Kind {
	case wake.Timeline:
		switch {
		case in.rooms[c.Room]:
			return true
		case c.Membership && in.lists, c.FilterState && in.filtered:
			return true
		}
		return c.Bump && in.bumps && !in.notInLists[c.Room]
	case wake.UnreadCounts:
		return in.rooms[c.Room]
	case wake.Typing:
		return in.typing[c.Room]
	case wake.Receipts:
		return in.receipts[c.Room]
	case wake.AccountData:
		if c.Room == "" {
			return in.globalAccountData
		}
		return in.accountData[c.Room] || in.roomAccountData
	case wake.ToDevice:
		return in.toDevice && (c.Device == "" || c.Device == in.device)
	case wake.DeviceLists:
		return in.e2ee
	case wake.Presence:
		return false // sliding sync serves no presence
	}
	return true // a kind this does not know: wake
}

// interestOf is what the built answer watches: view is the rooms in view,
// inList the rooms of each list's windows, matched the rooms each list's
// filters let through (only for lists with a window), in the build's
// candidates.
func (b *slidingBuild) interestOf(view map[spec.RoomID]*viewRoom, inList map[string][]spec.RoomID, matched map[string][]candidate) *interest {
	q := b.q
	in := &interest{device: b.device, rooms: make(map[spec.RoomID]bool, len(view)+len(b.subs)),
		lists: len(q.lists) > 0, toDevice: q.ext.toDevice != nil, e2ee: q.ext.e2ee,
		globalAccountData: q.ext.accountData != nil || len(q.lists) > 0}
	for id := range view {
		in.rooms[id] = true
	}
	for id := range b.subs {
		in.rooms[id] = true // a room not the user's yet is in view once joined
	}
	var through map[spec.RoomID]bool // rooms a filtered list with a window lets through
	unfiltered := false              // a list with a window lets every room through
	for _, name := range q.listOrder {
		f := q.lists[name].filters
		if f.any() {
			in.filtered = true
		}
		if len(f.tags) > 0 || len(f.notTags) > 0 {
			in.roomAccountData = true
		}
		m, ok := matched[name]
		if !ok {
			continue // no window
		}
		in.bumps = true
		if !f.any() {
			unfiltered = true
			continue
		}
		if through == nil {
			through = map[spec.RoomID]bool{}
		}
		for _, c := range m {
			through[c.ID] = true
		}
	}
	if in.bumps && !unfiltered {
		in.notInLists = map[spec.RoomID]bool{}
		for _, c := range b.candidates {
			if !through[c.ID] && !in.rooms[c.ID] {
				in.notInLists[c.ID] = true
			}
		}
	}
	scope := func(sc *roomScope) map[spec.RoomID]bool {
		if sc == nil {
			return nil
		}
		out := map[spec.RoomID]bool{}
		for _, id := range b.scope(sc, view, inList) {
			out[id] = true
		}
		return out
	}
	in.typing, in.receipts, in.accountData = scope(q.ext.typing), scope(q.ext.receipts), scope(q.ext.accountData)
	return in
}
