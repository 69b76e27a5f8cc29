package rooms

import (
	"strings"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// RoomEventFilter is the spec's RoomEventFilter, used by /messages,
// /context and /sync. A nil filter matches everything.
type RoomEventFilter struct {
	Limit                   *int     `json:"limit,omitempty"`
	Types                   []string `json:"types,omitempty"`
	NotTypes                []string `json:"not_types,omitempty"`
	Senders                 []string `json:"senders,omitempty"`
	NotSenders              []string `json:"not_senders,omitempty"`
	Rooms                   []string `json:"rooms,omitempty"`
	NotRooms                []string `json:"not_rooms,omitempty"`
	ContainsURL             *bool    `json:"contains_url,omitempty"`
	LazyLoadMembers         bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool     `json:"include_redundant_members,omitempty"`
	UnreadThreadNotes       bool     `json:"unread_thread_notifications,omitempty"`
	// MSC3874: events by the rel_type of their m.relates_to; an event
	// without a relation passes not_rel_types and fails rel_types.
	RelTypes    []string `json:"org.matrix.msc3874.rel_types,omitempty"`
	NotRelTypes []string `json:"org.matrix.msc3874.not_rel_types,omitempty"`
}

// Validate refuses values the spec does not allow.
func (f *RoomEventFilter) Validate() error {
	if f == nil {
		return nil
	}
	if f.Limit != nil && *f.Limit < 0 {
		return spec.BadJSON("filter limit must not be negative")
	}
	for _, list := range [][]string{f.Senders, f.NotSenders} {
		for _, u := range list {
			if _, err := spec.ParseUserID(u); err != nil {
				return spec.BadJSON("filter senders must be user IDs")
			}
		}
	}
	return ValidateRoomIDs(f.Rooms, f.NotRooms)
}

// ValidateRoomIDs checks a filter's rooms and not_rooms lists: an entry that
// is not a room ID could never match, so the filter is refused (M_BAD_JSON)
// rather than silently matching nothing.
func ValidateRoomIDs(lists ...[]string) error {
	for _, list := range lists {
		for _, r := range list {
			if _, err := spec.ParseRoomID(r); err != nil {
				return spec.BadJSON("filter rooms must be room IDs")
			}
		}
	}
	return nil
}

// HidesEvents reports whether the filter leaves out some events of a room
// by type, sender or URL (not only by count).
func (f *RoomEventFilter) HidesEvents() bool {
	return f != nil && (f.Types != nil || len(f.NotTypes) > 0 || f.Senders != nil || len(f.NotSenders) > 0 || f.ContainsURL != nil ||
		f.RelTypes != nil || len(f.NotRelTypes) > 0)
}

// MatchesRoom reports whether events of the room pass rooms/not_rooms.
func (f *RoomEventFilter) MatchesRoom(id spec.RoomID) bool {
	if f == nil {
		return true
	}
	if contains(f.NotRooms, string(id)) {
		return false
	}
	return f.Rooms == nil || contains(f.Rooms, string(id))
}

// Matches reports whether an event passes the filter's type, sender and
// URL conditions (rooms are checked by MatchesRoom).
func (f *RoomEventFilter) Matches(p *events.PDU) bool {
	if f == nil {
		return true
	}
	if !f.MatchesRoom(p.RoomID()) {
		return false
	}
	if contains(f.NotSenders, string(p.Sender())) {
		return false
	}
	if f.Senders != nil && !contains(f.Senders, string(p.Sender())) {
		return false
	}
	for _, t := range f.NotTypes {
		if Glob(t, p.Type()) {
			return false
		}
	}
	if f.Types != nil {
		ok := false
		for _, t := range f.Types {
			if Glob(t, p.Type()) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if f.ContainsURL != nil {
		hasURL := p.Content().Get("url").Type == 3 // gjson.String
		if hasURL != *f.ContainsURL {
			return false
		}
	}
	return f.matchesRelation(p)
}

// matchesRelation checks rel_types and not_rel_types (MSC3874). The relation
// is outside the ciphertext of an encrypted event, so this works in
// encrypted rooms too.
func (f *RoomEventFilter) matchesRelation(p *events.PDU) bool {
	if f.RelTypes == nil && len(f.NotRelTypes) == 0 {
		return true
	}
	rel := p.Content().Get(`m\.relates_to.rel_type`).Str
	if rel != "" && contains(f.NotRelTypes, rel) {
		return false
	}
	return f.RelTypes == nil || (rel != "" && contains(f.RelTypes, rel))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Glob matches s against a pattern where '*' is any run of characters and
// '?' any one character. It runs in O(len(pattern)·len(s)) at worst, never
// exponential time, whatever the pattern.
func Glob(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == s
	}
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*': // before the literal case: "*" in s is no wildcard
			star, mark = p, i
			p++
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
