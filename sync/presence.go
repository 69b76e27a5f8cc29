package sync

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	stdsync "sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
)

// presenceState is each user's presence, in memory only: it is never
// written to disk, and with presence off it is not kept at all.
type presenceState struct {
	mu    stdsync.Mutex
	users map[spec.UserID]*presence
	// latest is the serial of the latest change: a sync whose token is
	// past it has no presence to look at.
	latest int64
	// changes lists who changed, in serial order, so that a sync looks at
	// the users changed since its token rather than at every user. A user
	// may appear more than once; the list is compacted as it grows.
	changes []presenceChange
}

type presenceChange struct {
	serial int64
	user   spec.UserID
}

type presence struct {
	state      string
	statusMsg  *string
	lastActive time.Time
	serial     int64
}

func newPresenceState() *presenceState {
	return &presenceState{users: map[spec.UserID]*presence{}}
}

var presenceStates = map[string]bool{"online": true, "offline": true, "unavailable": true}

// setPresence records a local user's presence and wakes those who share a
// room with them, if it changed; the change goes to other servers too
// (federation decides whether presence leaves the server).
func (s *Service) setPresence(user spec.UserID, state string, statusMsg *string, explicit bool) {
	if s.recordPresence(user, state, statusMsg, explicit, time.Now()) && s.out != nil {
		s.out.Presence(user, state, statusMsg, 0, state == "online")
	}
}

// RemotePresence records the presence of another server's user, as its
// server sent it (federation, m.presence).
func (s *Service) RemotePresence(user spec.UserID, state string, statusMsg *string, lastActiveAgo int64) {
	s.recordPresence(user, state, statusMsg, true, time.Now().Add(-time.Duration(max(lastActiveAgo, 0))*time.Millisecond))
}

// recordPresence records a presence and reports whether it changed.
func (s *Service) recordPresence(user spec.UserID, state string, statusMsg *string, explicit bool, lastActive time.Time) bool {
	if !s.cfg.Presence {
		return false
	}
	p := s.presence
	p.mu.Lock()
	cur := p.users[user]
	changed := cur == nil || cur.state != state || (explicit && !sameString(cur.statusMsg, statusMsg))
	if cur == nil {
		cur = &presence{}
		p.users[user] = cur
	}
	cur.state = state
	if explicit {
		cur.statusMsg = statusMsg
	}
	cur.lastActive = lastActive
	if changed {
		cur.serial = s.nextSerial()
		p.latest = cur.serial
		p.logChange(user, cur.serial)
	}
	p.mu.Unlock()
	if changed {
		s.notifier.Notify(0, wake.Of(wake.Presence), s.rooms.UsersSharingRoomsWith(user)...)
	}
	return changed
}

func sameString(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// presenceSince returns the presence events of users who share a room with
// the viewer and changed after the serial, and of the users newly sharing
// a room with them (whatever their serial). It looks only at those users.
func (s *Service) presenceSince(viewer spec.UserID, serial int64, f *EventFilter, newlyShared map[spec.UserID]bool) []json.RawMessage {
	p := s.presence
	p.mu.Lock()
	if p.latest <= serial && len(newlyShared) == 0 {
		p.mu.Unlock()
		return nil
	}
	var changed []spec.UserID
	first := sort.Search(len(p.changes), func(i int) bool { return p.changes[i].serial > serial })
	for _, c := range p.changes[first:] {
		if p.users[c.user].serial == c.serial && !newlyShared[c.user] { // the user's latest change
			changed = append(changed, c.user)
		}
	}
	p.mu.Unlock()
	var out []json.RawMessage
	for _, u := range changed {
		if !f.Matches("m.presence", u) || (u != viewer && !s.rooms.ShareARoom(viewer, u)) {
			continue
		}
		if ev := s.presenceEvent(u, serial); ev != nil {
			out = append(out, ev)
		}
	}
	for u := range newlyShared {
		if f.Matches("m.presence", u) {
			if ev := s.presenceEvent(u, 0); ev != nil {
				out = append(out, ev)
			}
		}
	}
	return out
}

// noteNewlyShared records, for an incremental sync, who began to share the
// room with the user since the token: everyone joined when the user just
// joined, else the members who joined since.
func (s *Service) noteNewlyShared(req *request, id spec.RoomID, joinPos int64, now Token) {
	if !s.cfg.Presence || req.initial() {
		return
	}
	add := func(u spec.UserID) {
		if u == req.user {
			return
		}
		if req.newlyShared == nil {
			req.newlyShared = map[spec.UserID]bool{}
		}
		req.newlyShared[u] = true
	}
	if joinPos > req.sincePos() {
		for _, u := range s.rooms.JoinedMembers(id) {
			add(u)
		}
		return
	}
	for u, m := range s.membershipChanges(req, id, now.Pos) {
		if m == spec.Join {
			add(u)
		}
	}
}

// logChange records a change at serial; mu is held. When the list holds
// twice as many entries as there are users, it keeps each user's latest.
func (p *presenceState) logChange(user spec.UserID, serial int64) {
	p.changes = append(p.changes, presenceChange{serial, user})
	if len(p.changes) < 64 || len(p.changes) < 2*len(p.users) {
		return
	}
	kept := p.changes[:0:0]
	for _, c := range p.changes {
		if p.users[c.user].serial == c.serial {
			kept = append(kept, c)
		}
	}
	p.changes = kept
}

// presenceEvent renders a user's presence, or nil. It is written by hand:
// a presence change goes to everyone who shares a room with the user.
func (s *Service) presenceEvent(user spec.UserID, sinceSerial int64) json.RawMessage {
	p := s.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.users[user]
	if cur == nil || cur.serial <= sinceSerial {
		return nil
	}
	b := append(make([]byte, 0, 160), `{"type":"m.presence","sender":`...)
	b = appendString(b, string(user))
	b = append(b, `,"content":`...)
	return append(appendPresenceContent(b, cur), '}')
}

// appendPresenceContent writes a presence's content object.
func appendPresenceContent(b []byte, cur *presence) []byte {
	b = append(b, `{"presence":`...)
	b = appendString(b, cur.state)
	b = append(b, `,"last_active_ago":`...)
	b = strconv.AppendInt(b, time.Since(cur.lastActive).Milliseconds(), 10)
	b = append(b, `,"currently_active":`...)
	b = strconv.AppendBool(b, cur.state == "online")
	if cur.statusMsg != nil {
		b = append(b, `,"status_msg":`...)
		b = appendString(b, *cur.statusMsg)
	}
	return append(b, '}')
}

// GET /_matrix/client/v3/presence/{userId}/status
func (s *Service) getPresence(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	user, err := spec.ParseUserID(c.Param("userId"))
	if err != nil {
		return spec.InvalidParam("user ID: %v", err)
	}
	if user != dev.UserID && !s.sharesRoom(dev.UserID, user) {
		return spec.Forbidden("you do not share a room with %s", user)
	}
	if !s.cfg.Presence {
		c.JSON(http.StatusOK, gin.H{"presence": "offline"})
		return nil
	}
	s.presence.mu.Lock()
	content := []byte(`{"presence":"offline"}`)
	if cur := s.presence.users[user]; cur != nil {
		content = appendPresenceContent(nil, cur)
	}
	s.presence.mu.Unlock()
	c.Data(http.StatusOK, "application/json", content)
	return nil
}

func (s *Service) sharesRoom(a, b spec.UserID) bool { return s.rooms.ShareARoom(a, b) }

// PUT /_matrix/client/v3/presence/{userId}/status
func (s *Service) putPresence(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	if c.Param("userId") != string(dev.UserID) {
		return spec.Forbidden("you can only set your own presence")
	}
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	if !presenceStates[body.Presence] {
		return spec.InvalidParam("presence must be online, offline or unavailable")
	}
	if body.StatusMsg != nil && len(*body.StatusMsg) > 1024 {
		return spec.TooLarge("status_msg is over 1024 bytes")
	}
	s.setPresence(dev.UserID, body.Presence, body.StatusMsg, true)
	c.JSON(http.StatusOK, gin.H{})
	return nil
}
