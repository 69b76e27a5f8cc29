package sync

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// request is one /sync call, parsed.
type request struct {
	user       spec.UserID
	device     string
	since      *Token
	filter     *Filter
	fullState  bool
	stateAfter bool // use_state_after (spec v1.16, MSC4222)
	// viewer renders events for the user; one per build, so that the
	// membership it reads from memory covers the response's position.
	viewer *rooms.Viewer
	// newlyShared are the users who began to share a room with the user
	// since the token (joinedRoom): their presence is sent even if it did
	// not change, or the user would not learn it until it does.
	newlyShared map[spec.UserID]bool
	// changes caches each room's membership changes in (since, now]:
	// presence (noteNewlyShared) and device_lists both need them.
	changes map[spec.RoomID]map[spec.UserID]string
}

func (r *request) initial() bool { return r.since == nil }

// membershipChanges is rooms' MembershipChanges of the room in (since,
// until], read once per response (until is the response's position).
func (s *Service) membershipChanges(req *request, id spec.RoomID, until int64) map[spec.UserID]string {
	if c, ok := req.changes[id]; ok {
		return c
	}
	c := s.rooms.MembershipChanges(id, req.sincePos(), until)
	if req.changes == nil {
		req.changes = map[spec.RoomID]map[spec.UserID]string{}
	}
	req.changes[id] = c
	return c
}

func (r *request) sincePos() int64 {
	if r.since == nil {
		return 0
	}
	return r.since.Pos
}

func (r *request) sinceSerial() int64 {
	if r.since == nil {
		return 0
	}
	return r.since.Serial
}

// maxTimeout caps a long-poll; clients re-poll.
const maxTimeout = 5 * time.Minute

// Request is a GET /sync as the client asked it.
type Request struct {
	Since      *Token        // nil for an initial sync
	Timeout    time.Duration // how long to wait for news; at most maxTimeout
	Filter     *Filter
	FullState  bool
	StateAfter bool // use_state_after (spec v1.16, MSC4222)
	// SetPresence is the presence the request sets, online or
	// unavailable; "" (set_presence=offline) leaves it as it is.
	SetPresence string
}

// GET /_matrix/client/v3/sync: every change for the user since the token;
// with nothing new, it waits until something arrives or the timeout.
func (s *Service) sync(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	ctx := c.Request.Context()
	req, err := s.parseRequest(c, dev.UserID)
	if err != nil {
		return err
	}
	resp, err := s.Sync(ctx, dev, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil // the client went away: there is no one to answer
		}
		return err
	}
	c.Data(http.StatusOK, "application/json", resp.encode())
	return nil
}

// parseRequest reads the query of a GET /sync; a filter ID is looked up.
func (s *Service) parseRequest(c *gin.Context, user spec.UserID) (Request, error) {
	var req Request
	if v := c.Query("since"); v != "" {
		t, err := ParseToken(v)
		if err != nil {
			return req, err
		}
		req.Since = &t
	}
	if v := c.Query("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return req, spec.InvalidParam("timeout must be a non-negative integer of milliseconds")
		}
		req.Timeout = min(time.Duration(ms)*time.Millisecond, maxTimeout)
	}
	var err error
	if req.Filter, err = s.resolveFilter(c.Request.Context(), user, c.Query("filter")); err != nil {
		return req, err
	}
	if req.FullState, err = boolParam(c, "full_state"); err != nil {
		return req, err
	}
	if req.StateAfter, err = boolParam(c, "use_state_after"); err != nil {
		return req, err
	}
	switch p := c.Query("set_presence"); p {
	case "":
		req.SetPresence = "online"
	case "online", "unavailable":
		req.SetPresence = p
	case "offline":
	default:
		return req, spec.InvalidParam("set_presence must be online, offline or unavailable")
	}
	return req, nil
}

// Sync answers one /sync of the device: it sets the presence the request
// asks for, deletes the to-device messages the since token acknowledges,
// and builds the response, waiting up to r.Timeout for news when nothing
// is new since the token. If ctx ends while it waits, it returns ctx.Err().
func (s *Service) Sync(ctx context.Context, dev *auth.Device, r Request) (*Response, error) {
	if r.SetPresence != "" {
		s.setPresence(dev.UserID, r.SetPresence, nil, false)
	}
	req := &request{user: dev.UserID, device: dev.DeviceID, since: r.Since, filter: r.Filter,
		fullState: r.FullState, stateAfter: r.StateAfter}
	if req.since != nil && s.keys != nil {
		// The client has everything up to its token: delivered to-device
		// messages are deleted now (DESIGN: kept only until delivered).
		if err := s.keys.AckToDevice(ctx, req.user, req.device, req.since.Pos); err != nil {
			return nil, err
		}
	}
	return s.longPoll(ctx, req, r.Timeout)
}

// longPoll builds the response; when it has nothing new since the token,
// it waits for a change, the timeout or shutdown, and then answers.
func (s *Service) longPoll(ctx context.Context, req *request, timeout time.Duration) (*Response, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		// Subscribe before reading, so a change committed while the
		// response is built still wakes this request.
		w := s.notifier.subscribe(req.user, nil) // every change of the user
		cancel := w.cancel
		resp, empty, err := s.build(ctx, req)
		if err != nil {
			cancel()
			return nil, err
		}
		if !empty || req.since == nil || timeout == 0 {
			cancel()
			return resp, nil
		}
		s.log.Debug().Msg("sync: long-poll waiting")
		select {
		case <-w.woken():
		case <-deadline.C:
			timeout = 0 // build once more and answer, empty or not
		case <-s.stopping:
			cancel()
			return resp, nil
		case <-ctx.Done():
			cancel() // the client went away: free the waiter
			return nil, ctx.Err()
		}
		cancel()
	}
}

// addLeftRoom adds one room to rooms.leave if leftRoom has it to say.
func (s *Service) addLeftRoom(ctx context.Context, req *request, rs *Rooms, id spec.RoomID, now Token, kind leftKind) error {
	lr, err := s.leftRoom(ctx, req, id, now, kind)
	if err != nil || lr == nil {
		return err
	}
	if rs.Leave == nil {
		rs.Leave = map[spec.RoomID]*LeftRoom{}
	}
	rs.Leave[id] = lr
	return nil
}

func boolParam(c *gin.Context, name string) (bool, error) {
	switch c.Query(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, spec.InvalidParam("%s must be true or false", name)
}

// Response is the body of a /sync answer.
type Response struct {
	NextBatch        string         `json:"next_batch"`
	Rooms            *Rooms         `json:"rooms,omitempty"`
	AccountData      *EventList     `json:"account_data,omitempty"`
	Presence         *EventList     `json:"presence,omitempty"`
	ToDevice         *EventList     `json:"to_device,omitempty"`
	DeviceLists      *DeviceLists   `json:"device_lists,omitempty"`
	OTKCounts        map[string]int `json:"device_one_time_keys_count,omitempty"`
	FallbackKeyTypes *[]string      `json:"device_unused_fallback_key_types,omitempty"`
}

// EventList is {"events": [...]}.
type EventList struct {
	Events []json.RawMessage `json:"events"`
}

// Rooms is the rooms part of a sync.
type Rooms struct {
	Join   map[spec.RoomID]*JoinedRoom  `json:"join,omitempty"`
	Invite map[spec.RoomID]*InvitedRoom `json:"invite,omitempty"`
	Knock  map[spec.RoomID]*KnockedRoom `json:"knock,omitempty"`
	Leave  map[spec.RoomID]*LeftRoom    `json:"leave,omitempty"`
}

// Timeline is a room's timeline in a sync.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// RoomSummary is the summary of a joined room.
type RoomSummary struct {
	Heroes  []spec.UserID `json:"m.heroes,omitempty"`
	Joined  *int          `json:"m.joined_member_count,omitempty"`
	Invited *int          `json:"m.invited_member_count,omitempty"`
}

// JoinedRoom is one room in rooms.join.
type JoinedRoom struct {
	Timeline    Timeline     `json:"timeline"`
	State       *EventList   `json:"state,omitempty"`
	StateAfter  *EventList   `json:"state_after,omitempty"`
	Ephemeral   EventList    `json:"ephemeral"`
	AccountData EventList    `json:"account_data"`
	Summary     *RoomSummary `json:"summary,omitempty"`
	// Unread counts: of the whole room, or of the main timeline when the
	// filter asks for unread_thread_notifications (then per thread too).
	UnreadNotifications       *UnreadCounts           `json:"unread_notifications,omitempty"`
	UnreadThreadNotifications map[string]UnreadCounts `json:"unread_thread_notifications,omitempty"`
}

// UnreadCounts is {notification_count, highlight_count}.
type UnreadCounts struct {
	NotificationCount int64 `json:"notification_count"`
	HighlightCount    int64 `json:"highlight_count"`
}

// InvitedRoom is one room in rooms.invite.
type InvitedRoom struct {
	InviteState EventList `json:"invite_state"`
}

// KnockedRoom is one room in rooms.knock.
type KnockedRoom struct {
	KnockState EventList `json:"knock_state"`
}

// LeftRoom is one room in rooms.leave.
type LeftRoom struct {
	Timeline    Timeline   `json:"timeline"`
	State       *EventList `json:"state,omitempty"`
	StateAfter  *EventList `json:"state_after,omitempty"`
	AccountData EventList  `json:"account_data"`
}

// DeviceLists is device_lists.
type DeviceLists struct {
	Changed []spec.UserID `json:"changed,omitempty"`
	Left    []spec.UserID `json:"left,omitempty"`
}

// defaultTimelineLimit is the timeline limit without a filter.
const defaultTimelineLimit = 10

// build assembles the response for (since, now]. empty reports whether it
// carries nothing new, so that a long-poll keeps waiting.
func (s *Service) build(ctx context.Context, req *request) (*Response, bool, error) {
	now := Token{Pos: s.db.Position(), Serial: s.serial.Load()}
	if req.since != nil && req.since.Pos > now.Pos {
		// A token from the future: answer from now rather than fail.
		req.since.Pos = now.Pos
	}
	resp := &Response{NextBatch: now.String()}
	req.viewer = s.rooms.ViewerOf(req.user, req.device)
	req.newlyShared = nil

	roomAccountData, err := s.accountDataPart(ctx, req, now, resp)
	if err != nil {
		return nil, false, err
	}
	empty := resp.AccountData == nil
	// Nothing told to the user since the token, no room account data and
	// no count changed: no room has anything to say, and the per-room look
	// is skipped (an empty sync then costs the same with 10 rooms or 500).
	quiet := !req.initial() && !req.fullState && s.notifier.quietSince(req.user, req.sincePos(), req.sinceSerial())
	skipRooms := quiet && len(roomAccountData) == 0 && (s.unread == nil || s.unread.Position(req.user) <= req.sincePos())
	if !skipRooms {
		rs, err := s.roomsPart(ctx, req, now, roomAccountData)
		if err != nil {
			return nil, false, err
		}
		if rs.Join != nil || rs.Invite != nil || rs.Knock != nil || rs.Leave != nil {
			resp.Rooms = rs
			empty = false
		}
	}

	if s.cfg.Presence {
		if evs := s.presenceSince(req.user, req.sinceSerial(), req.filter.Presence, req.newlyShared); len(evs) > 0 {
			resp.Presence = &EventList{Events: evs}
			empty = false
		}
	}

	if s.keys != nil {
		if err := s.keysPart(ctx, req, now, resp, quiet, &empty); err != nil {
			return nil, false, err
		}
	}
	return resp, empty, nil
}

// accountDataPart fills the global account_data and returns the rooms'
// account data, each read only if the in-memory position says it changed.
func (s *Service) accountDataPart(ctx context.Context, req *request, now Token, resp *Response) (map[spec.RoomID][]json.RawMessage, error) {
	if s.acct == nil || !req.initial() && s.acct.AccountDataPosition(req.user) <= req.sincePos() {
		return nil, nil
	}
	global, perRoom, err := s.acct.AccountData(ctx, req.user, req.sincePos(), now.Pos)
	if err != nil {
		return nil, err
	}
	global = filterEvents(global, req.filter.AccountData)
	if len(global) > 0 {
		resp.AccountData = &EventList{Events: global}
	}
	return perRoom, nil
}

// roomsPart builds rooms.join, invite, knock and leave from the rooms the
// user has a membership in, and the rooms forgotten since the token.
func (s *Service) roomsPart(ctx context.Context, req *request, now Token, roomAccountData map[spec.RoomID][]json.RawMessage) (*Rooms, error) {
	rs := &Rooms{}
	rf := req.filter.Room
	ignored := s.ignoredUsers(req.user)
	for id, membership := range s.rooms.RoomsOf(req.user) {
		if !rf.matchesRoom(id) {
			continue
		}
		switch membership {
		case spec.Join:
			jr, err := s.joinedRoom(ctx, req, id, now, roomAccountData[id], ignored)
			if err != nil {
				return nil, err
			}
			if jr != nil {
				if rs.Join == nil {
					rs.Join = map[spec.RoomID]*JoinedRoom{}
				}
				rs.Join[id] = jr
			}
		case spec.Invite, spec.Knock:
			s.addStrippedRoom(req, rs, id, membership, now, ignored)
		default: // leave, ban
			if err := s.addLeftRoom(ctx, req, rs, id, now, leftKept); err != nil {
				return nil, err
			}
		}
	}
	if !req.initial() {
		// A room left and forgotten since the token: the leave still
		// reaches the user's other devices, or they would never learn it.
		for _, id := range s.rooms.ForgottenRooms(req.user) {
			if !rf.matchesRoom(id) {
				continue
			}
			if err := s.addLeftRoom(ctx, req, rs, id, now, leftForgotten); err != nil {
				return nil, err
			}
		}
	}
	return rs, nil
}

// addStrippedRoom adds a room the user is invited to or knocks on, with
// its stripped state, if the membership is new since the token; an invite
// from an ignored user is left out.
func (s *Service) addStrippedRoom(req *request, rs *Rooms, id spec.RoomID, membership string, now Token, ignored map[spec.UserID]bool) {
	pos, _ := s.rooms.MembershipEvent(req.user, id)
	if !req.initial() && pos <= req.sincePos() || pos > now.Pos {
		return
	}
	if membership == spec.Knock {
		if rs.Knock == nil {
			rs.Knock = map[spec.RoomID]*KnockedRoom{}
		}
		rs.Knock[id] = &KnockedRoom{KnockState: EventList{Events: s.rooms.StrippedState(id, req.user)}}
		return
	}
	if ev := s.rooms.CurrentState(id, spec.MRoomMember, string(req.user)); ev != nil && ignored[ev.Sender()] {
		return
	}
	if rs.Invite == nil {
		rs.Invite = map[spec.RoomID]*InvitedRoom{}
	}
	rs.Invite[id] = &InvitedRoom{InviteState: EventList{Events: s.rooms.StrippedState(id, req.user)}}
}

// keysPart fills to_device, device_lists and the key counts.
func (s *Service) keysPart(ctx context.Context, req *request, now Token, resp *Response, quiet bool, empty *bool) error {
	if req.initial() || s.keys.ToDevicePosition(req.user, req.device) > req.sincePos() {
		msgs, _, err := s.keys.ToDevice(ctx, req.user, req.device, req.sincePos(), now.Pos, 0)
		if err != nil {
			return err
		}
		if len(msgs) > 0 {
			resp.ToDevice = &EventList{Events: msgs}
			*empty = false
		}
	}
	if !req.initial() {
		dl, err := s.deviceLists(ctx, req, now, quiet)
		if err != nil {
			return err
		}
		if dl != nil {
			resp.DeviceLists = dl
			*empty = false
		}
	}
	counts, err := s.keys.OneTimeKeyCounts(ctx, req.user, req.device)
	if err != nil {
		return err
	}
	if counts == nil {
		counts = map[string]int{}
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	resp.OTKCounts = counts
	fb, err := s.keys.UnusedFallbackKeyTypes(ctx, req.user, req.device)
	if err != nil {
		return err
	}
	if fb == nil {
		fb = []string{}
	}
	resp.FallbackKeyTypes = &fb
	return nil
}

// deviceLists computes device_lists for an incremental sync: users whose
// devices changed and who share a room with the user, users who newly share
// a room (their devices are news to this client), and users who no longer
// share any room.
func (s *Service) deviceLists(ctx context.Context, req *request, now Token, quiet bool) (*DeviceLists, error) {
	since := req.sincePos()
	shares := func(u spec.UserID) bool { return u == req.user || s.rooms.ShareARoom(req.user, u) }
	changed := map[spec.UserID]bool{}
	if s.keys.DeviceListPosition() > since {
		users, err := s.keys.DeviceListChanges(ctx, since, now.Pos)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			if shares(u) {
				changed[u] = true
			}
		}
	}
	left := map[spec.UserID]bool{}
	var roomsOf map[spec.RoomID]string
	if !quiet { // quiet: no membership changed in the user's rooms
		roomsOf = s.rooms.RoomsOf(req.user)
	}
	for id := range roomsOf {
		if s.rooms.Position(id) <= since {
			continue
		}
		changes := s.membershipChanges(req, id, now.Pos)
		if m, ok := changes[req.user]; ok {
			// The user's own membership changed: every member is news.
			for _, u := range s.rooms.JoinedMembers(id) {
				if m == spec.Join && u != req.user {
					changed[u] = true
				} else if m != spec.Join && !shares(u) {
					left[u] = true
				}
			}
		}
		for u, m := range changes {
			if u == req.user {
				continue
			}
			if m == spec.Join && shares(u) {
				changed[u] = true
			} else if m != spec.Join && !shares(u) {
				left[u] = true
			}
		}
	}
	if len(changed) == 0 && len(left) == 0 {
		return nil, nil
	}
	dl := &DeviceLists{}
	for u := range changed {
		dl.Changed = append(dl.Changed, u)
	}
	for u := range left {
		if !changed[u] {
			dl.Left = append(dl.Left, u)
		}
	}
	return dl, nil
}

// ignoredUsers returns the user's m.ignored_user_list (kept in memory by
// the account data's owner).
func (s *Service) ignoredUsers(user spec.UserID) map[spec.UserID]bool {
	if s.acct == nil {
		return nil
	}
	return s.acct.IgnoredUsers(user)
}

func filterEvents(evs []json.RawMessage, f *EventFilter) []json.RawMessage {
	if f == nil {
		return evs
	}
	out := evs[:0:0]
	for _, ev := range evs {
		var head struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(ev, &head)
		if f.Matches(head.Type, "") {
			out = append(out, ev)
		}
	}
	if f.Limit != nil && len(out) > *f.Limit {
		out = out[:*f.Limit]
	}
	return out
}

// timelineFilter returns the room timeline filter and its limit.
func (req *request) timelineFilter() (*rooms.RoomEventFilter, int) {
	limit := defaultTimelineLimit
	var f *rooms.RoomEventFilter
	if req.filter.Room != nil && req.filter.Room.Timeline != nil {
		f = req.filter.Room.Timeline
		if f.Limit != nil {
			limit = *f.Limit
		}
	}
	if limit > 1000 {
		limit = 1000
	}
	return f, limit
}

func (req *request) stateFilter() *rooms.RoomEventFilter {
	if req.filter.Room == nil {
		return nil
	}
	return req.filter.Room.State
}

// renderEvent renders a timeline event in the requested format and fields.
func (req *request) renderEvent(ev *rooms.Event) json.RawMessage {
	var out []byte
	if req.filter.EventFormat == "federation" {
		out = ev.PDU.JSON()
	} else {
		out = rooms.ClientEvent(ev, req.viewer)
	}
	if len(req.filter.EventFields) > 0 {
		out = events.FilterFields(out, req.filter.EventFields)
	}
	return out
}

func (req *request) renderState(p *events.PDU) json.RawMessage {
	return req.renderEvent(&rooms.Event{PDU: p})
}
