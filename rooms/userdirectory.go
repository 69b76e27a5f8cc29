package rooms

import "github.com/chatalot/chatalot/spec"

// DirectoryUsers returns, in a new map, the users a user may find in the
// user directory (POST /user_directory/search), from memory: those joined
// to a room the user is joined to, and those joined to a room whose join
// rule is public or whose history is world_readable — the minimum the spec
// sets, and no more.
func (s *Service) DirectoryUsers(user spec.UserID) map[spec.UserID]bool {
	s.mu.RLock()
	mine := s.userRooms[user]
	var visible []*liveRoom
	for id, r := range s.rooms {
		if mine[id] == spec.Join || r.membersPublic() {
			visible = append(visible, r)
		}
	}
	s.mu.RUnlock()
	out := map[spec.UserID]bool{}
	for _, r := range visible {
		for _, u := range r.cur.Load().joined() {
			out[u] = true
		}
	}
	return out
}

// membersPublic reports whether the room counts as public for the user
// directory: its join rule is public or its history is world_readable
// (spec v1.15's wording of the directory's minimum). Anyone may see who
// is in such a room.
func (r *liveRoom) membersPublic() bool {
	ev := r.cur.Load().get(spec.MRoomJoinRules, "")
	if ev != nil && ev.Content().Get("join_rule").String() == "public" {
		return true
	}
	return r.worldReadableNow()
}

// InDirectoryOf reports whether target is one of DirectoryUsers(user),
// without building the set: a profile lookup (GET /profile) answers for
// exactly the users the directory would show.
func (s *Service) InDirectoryOf(user, target spec.UserID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	mine := s.userRooms[user]
	for id, m := range s.userRooms[target] {
		if m != spec.Join {
			continue
		}
		if mine[id] == spec.Join {
			return true
		}
		if r := s.rooms[id]; r != nil && r.membersPublic() {
			return true
		}
	}
	return false
}
