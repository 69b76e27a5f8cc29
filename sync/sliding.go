package sync

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Sliding sync (MSC4186, "simplified sliding sync"), the sync Element X and
// every matrix-rust-sdk client use. It runs on the engine of /v3/sync: the
// same notifier wakes it (though only for changes that can alter a
// connection's answer, slidingwake.go), the same in-memory room state and timelines feed
// it, the same visibility rules (history visibility, ignored users, a left
// room's history ending at the leave) decide what it shows, and the pieces
// that build a room (timeline, state, own leave, unread counts, typing,
// receipts, keys) are /v3/sync's functions. What is its own: a request
// names windows ("lists") on the user's rooms sorted by recency and rooms
// by ID ("room_subscriptions"), and the server remembers per connection
// what it has sent (slidingconn.go), so each response carries only what is
// new to that connection.

// maxSlidingBody bounds a request body: the SDKs send a few KiB.
const maxSlidingBody = 1 << 20

// SlidingSyncPath is the unstable endpoint the SDKs call.
const SlidingSyncPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// SlidingRoutes mounts sliding sync.
func (s *Service) SlidingRoutes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	r.POST(SlidingSyncPath, requireAuth, api.Handle(s.slidingSync))
}

// slidingResponse is the body of an answer, in the field names and types
// ruma's sync_events::v5 decodes (one mistyped field and the SDK drops the
// whole response).
type slidingResponse struct {
	TxnID      string                           `json:"txn_id,omitempty"`
	Pos        string                           `json:"pos"`
	Lists      map[string]slidingListResponse   `json:"lists"`
	Rooms      map[spec.RoomID]*slidingRoomResp `json:"rooms"`
	Extensions slidingExtResponse               `json:"extensions"`
}

type slidingListResponse struct {
	Count int `json:"count"`
}

// slidingRoomResp is one room of the answer.
type slidingRoomResp struct {
	Name              *string           `json:"name,omitempty"`
	Avatar            json.RawMessage   `json:"avatar,omitempty"` // a URL, or null once removed
	Heroes            []slidingHero     `json:"heroes,omitempty"`
	Initial           bool              `json:"initial,omitempty"`
	IsDM              *bool             `json:"is_dm,omitempty"`
	InviteState       []json.RawMessage `json:"invite_state,omitempty"`
	NotificationCount *int64            `json:"notification_count,omitempty"`
	HighlightCount    *int64            `json:"highlight_count,omitempty"`
	Timeline          []json.RawMessage `json:"timeline,omitempty"`
	RequiredState     []json.RawMessage `json:"required_state,omitempty"`
	PrevBatch         string            `json:"prev_batch,omitempty"`
	Limited           bool              `json:"limited,omitempty"`
	JoinedCount       *int              `json:"joined_count,omitempty"`
	InvitedCount      *int              `json:"invited_count,omitempty"`
	NumLive           *int              `json:"num_live,omitempty"`
	BumpStamp         *int64            `json:"bump_stamp,omitempty"`
}

type slidingHero struct {
	UserID      spec.UserID `json:"user_id"`
	DisplayName string      `json:"displayname,omitempty"`
	AvatarURL   string      `json:"avatar_url,omitempty"`
}

type slidingExtResponse struct {
	ToDevice    *toDeviceResponse    `json:"to_device,omitempty"`
	E2EE        *e2eeResponse        `json:"e2ee,omitempty"`
	AccountData *accountDataResponse `json:"account_data,omitempty"`
	Receipts    *roomEventsResponse  `json:"receipts,omitempty"`
	Typing      *roomEventsResponse  `json:"typing,omitempty"`
}

type toDeviceResponse struct {
	NextBatch string            `json:"next_batch"`
	Events    []json.RawMessage `json:"events"`
}

type e2eeResponse struct {
	DeviceLists *DeviceLists   `json:"device_lists,omitempty"`
	OTKCounts   map[string]int `json:"device_one_time_keys_count"`
	// Always present: missing means "the server does not support fallback
	// keys" to the SDK.
	FallbackKeyTypes []string `json:"device_unused_fallback_key_types"`
}

type accountDataResponse struct {
	Global []json.RawMessage                 `json:"global,omitempty"`
	Rooms  map[spec.RoomID][]json.RawMessage `json:"rooms,omitempty"`
}

type roomEventsResponse struct {
	Rooms map[spec.RoomID]json.RawMessage `json:"rooms,omitempty"`
}

// POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync: what is
// new to this connection since pos; with nothing new, it waits until
// something arrives or the timeout.
func (s *Service) slidingSync(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	body, err := api.ReadBody(c, maxSlidingBody)
	if err != nil {
		return err
	}
	var w wireSlidingRequest
	if err := api.DecodeJSON(body, &w); err != nil {
		return err
	}
	q, err := decodeUnstable(&w, body)
	if err != nil {
		return err
	}
	timeout := time.Duration(0)
	if v := c.Query("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return spec.InvalidParam("timeout must be a non-negative integer of milliseconds")
		}
		timeout = min(time.Duration(ms)*time.Millisecond, maxTimeout)
	}
	switch p := c.Query("set_presence"); p {
	case "", "online", "unavailable":
		if p == "" {
			p = "online"
		}
		s.setPresence(dev.UserID, p, nil, false)
	case "offline":
	default:
		return spec.InvalidParam("set_presence must be online, offline or unavailable")
	}
	key := connKey{user: dev.UserID, device: dev.DeviceID, connID: q.connID}
	now := time.Now()
	var conn *slidingConn
	var prev *connState
	if pos := c.Query("pos"); pos != "" {
		if conn, prev, err = s.conns.resume(key, pos, now); err != nil {
			return err
		}
	} else {
		conn = s.conns.start(key, now)
	}
	// The first request of a connection, and one that adds a room
	// subscription (the user opened a room), are answered at once: the
	// client waits on them to show something.
	if prev == nil {
		timeout = 0
	} else {
		for id := range q.subs {
			if _, had := prev.subs[id]; !had {
				timeout = 0
			}
		}
	}
	if q.ext.toDevice != nil && q.ext.toDevice.since > 0 && s.keys != nil {
		// The client holds every message up to its since: delete them
		// (DESIGN: to-device messages are kept only until delivered).
		if err := s.keys.AckToDevice(c.Request.Context(), dev.UserID, dev.DeviceID, q.ext.toDevice.since); err != nil {
			return err
		}
	}

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		// Subscribe to every change of the user before building, so that
		// one committed during the build is not missed; once built, wait
		// only for what can change this connection's answer.
		waiter := s.notifier.subscribe(dev.UserID, nil)
		b := &slidingBuild{s: s, user: dev.UserID, device: dev.DeviceID, q: q, prev: prev}
		resp, next, empty, err := b.run(c.Request.Context())
		if err != nil {
			waiter.cancel()
			return err
		}
		if !empty || timeout == 0 {
			waiter.cancel()
			return s.answerSliding(c, conn, prev, resp, next, empty, w.TxnID)
		}
		waiter.narrow(next.wakes)
		select {
		case <-waiter.woken():
			waiter.cancel()
		case <-deadline.C:
			waiter.cancel()
			timeout = 0 // build once more and answer, empty or not
		case <-s.stopping:
			waiter.cancel()
			return s.answerSliding(c, conn, prev, resp, next, empty, w.TxnID)
		case <-c.Request.Context().Done():
			waiter.cancel()
			return nil // the client went away
		}
	}
}

// answerSliding stores the connection's new state and writes the answer. An
// empty answer keeps the pos it was asked with: nothing changed for the
// connection, and nothing is stored.
func (s *Service) answerSliding(c *gin.Context, conn *slidingConn, prev *connState, resp *slidingResponse, next *connState, empty bool, txnID *string) error {
	if empty && prev != nil && next.shape == prev.shape {
		resp.Pos = conn.pos(prev.n)
	} else {
		resp.Pos = conn.save(next)
	}
	if txnID != nil {
		resp.TxnID = *txnID
	}
	body, err := resp.encode()
	if err != nil {
		return err
	}
	c.Data(http.StatusOK, "application/json", body)
	return nil
}

// slidingBuild is one build of an answer.
type slidingBuild struct {
	s      *Service
	user   spec.UserID
	device string
	q      *slidingQuery
	prev   *connState // nil: a new connection
	now    Token
	req    *request // the /v3/sync request the shared functions read
	// candidates are the user's rooms a list may show, in no order.
	candidates []candidate
	ignored    map[spec.UserID]bool
	subs       map[spec.RoomID]roomConfig // the connection's subscriptions, this request's included
	// dm is the user's direct chats (m.direct), read only when a list
	// filters on it.
	dm map[spec.RoomID]bool
}

// candidate is one room a list may show.
type candidate = rooms.ListEntry

func (b *slidingBuild) sinceToken() *Token {
	if b.prev == nil {
		return nil
	}
	t := b.prev.token
	return &t
}

// run builds the answer and the connection's next state; empty reports
// that it carries nothing new.
func (b *slidingBuild) run(ctx context.Context) (*slidingResponse, *connState, bool, error) {
	s := b.s
	b.now = Token{Pos: s.db.Position(), Serial: s.serial.Load()}
	b.req = &request{user: b.user, device: b.device, since: b.sinceToken(), filter: &Filter{},
		viewer: s.rooms.ViewerOf(b.user, b.device)}
	resp := &slidingResponse{Lists: map[string]slidingListResponse{}, Rooms: map[spec.RoomID]*slidingRoomResp{}}
	if b.quiet() {
		return b.quietAnswer(ctx)
	}
	next := &connState{token: b.now, rooms: map[spec.RoomID]sentRoom{}, subs: map[spec.RoomID]roomConfig{}, lists: map[string]int{},
		shape: b.q.shape}
	if b.prev != nil {
		for id, r := range b.prev.rooms {
			next.rooms[id] = r
		}
		for id, c := range b.prev.subs {
			next.subs[id] = c
		}
	}
	for _, id := range b.q.unsub {
		delete(next.subs, id)
	}
	for id, c := range b.q.subs {
		next.subs[id] = c
	}
	if len(next.subs) > maxSlidingSubscriptions {
		return nil, nil, false, spec.InvalidParam("at most %d room subscriptions per connection", maxSlidingSubscriptions)
	}
	b.subs = next.subs
	empty := true

	// Which rooms are in view, and with what config: the windows of the
	// lists, then the subscriptions.
	if err := b.loadCandidates(ctx); err != nil {
		return nil, nil, false, err
	}
	view := map[spec.RoomID]*viewRoom{}
	var order []spec.RoomID
	inList := map[string][]spec.RoomID{}
	windowed := map[string][]candidate{} // what each list with a window matched
	for _, name := range b.q.listOrder {
		l := b.q.lists[name]
		matched, err := b.filter(ctx, l.filters)
		if err != nil {
			return nil, nil, false, err
		}
		window := 0 // rooms up to the end of the last range, capped at the count
		for _, r := range l.ranges {
			window = max(window, int(min(r[1], int64(len(matched))-1))+1)
		}
		firstByRecency(matched, window)
		if window > 0 {
			windowed[name] = matched
		}
		resp.Lists[name] = slidingListResponse{Count: len(matched)}
		next.lists[name] = len(matched)
		if sent, had := b.prev.listCount(name); !had || sent != len(matched) {
			empty = false // a new list, or its count moved: news
		}
		for _, r := range l.ranges {
			if len(matched) == 0 || r[0] >= int64(len(matched)) {
				continue
			}
			end := min(r[1], int64(len(matched)-1)) // the growing range is capped at count-1
			for _, cand := range matched[r[0] : end+1] {
				if view[cand.ID] == nil {
					view[cand.ID] = &viewRoom{cand: cand}
					order = append(order, cand.ID)
				}
				view[cand.ID].merge(l.config)
				inList[name] = append(inList[name], cand.ID)
			}
		}
	}
	for _, id := range sortedRoomIDs(b.subs) {
		cand, ok := b.subscribable(id)
		if !ok {
			continue // not the user's room: nothing to show, nothing said
		}
		if view[id] == nil {
			view[id] = &viewRoom{cand: cand}
			order = append(order, id)
		}
		view[id].merge(b.subs[id])
	}

	for _, id := range order {
		v := view[id]
		room, sent, store, err := b.room(ctx, v)
		if err != nil {
			return nil, nil, false, err
		}
		if store {
			next.rooms[id] = sent
		}
		if room != nil {
			resp.Rooms[id] = room
			empty = false
		}
	}

	extEmpty, err := b.extensions(ctx, resp, view, inList)
	if err != nil {
		return nil, nil, false, err
	}
	next.wakes = b.interestOf(view, inList, windowed)
	return resp, next, empty && extEmpty, nil
}

// quiet reports, from memory alone, that the connection has nothing new:
// the same request as last time, and nothing told to the user since (the
// notifier records every change that concerns them), no unread count or
// account data changed, no to-device message waiting. It may say no when
// nothing changed, never yes when something did.
func (b *slidingBuild) quiet() bool {
	s, p := b.s, b.prev
	if p == nil || p.shape != b.q.shape || !s.notifier.quietSince(b.user, p.token.Pos, p.token.Serial) {
		return false
	}
	if s.unread != nil && s.unread.Position(b.user) > p.token.Pos {
		return false
	}
	if s.acct != nil && b.q.ext.accountData != nil && s.acct.AccountDataPosition(b.user) > p.token.Pos {
		return false
	}
	if td := b.q.ext.toDevice; td != nil && s.keys != nil && s.keys.ToDevicePosition(b.user, b.device) > td.since {
		return false
	}
	if b.q.ext.e2ee && s.keys != nil && s.keys.DeviceListPosition() > p.token.Pos {
		return false
	}
	return true
}

// quietAnswer is the empty answer: the lists' counts as last sent, the
// extensions that always answer (to-device's next batch, key counts).
func (b *slidingBuild) quietAnswer(ctx context.Context) (*slidingResponse, *connState, bool, error) {
	resp := &slidingResponse{Lists: map[string]slidingListResponse{}, Rooms: map[spec.RoomID]*slidingRoomResp{}}
	for name, n := range b.prev.lists {
		resp.Lists[name] = slidingListResponse{Count: n}
	}
	if td := b.q.ext.toDevice; td != nil && b.s.keys != nil {
		resp.Extensions.ToDevice = &toDeviceResponse{NextBatch: positionString(td.since), Events: []json.RawMessage{}}
	}
	if b.q.ext.e2ee && b.s.keys != nil {
		e := &e2eeResponse{}
		var err error
		if e.OTKCounts, e.FallbackKeyTypes, err = b.s.keyCounts(ctx, b.user, b.device); err != nil {
			return nil, nil, false, err
		}
		resp.Extensions.E2EE = e
	}
	return resp, b.prev, true, nil
}

// viewRoom is a room in view and the config it is shown with: the most any
// of its lists or its subscription asks for.
type viewRoom struct {
	cand   candidate
	config roomConfig // shared with a list or subscription: read only
	merged bool
}

func (v *viewRoom) merge(c roomConfig) {
	if !v.merged {
		// Most rooms are in one list: they share its config, unchanged.
		v.config, v.merged = c, true
		return
	}
	var rs requiredState
	for _, e := range v.config.required.entries {
		rs.add(e[0], e[1])
	}
	for _, e := range c.required.entries {
		rs.add(e[0], e[1])
	}
	rs.sortKeys()
	v.config = roomConfig{timelineLimit: max(v.config.timelineLimit, c.timelineLimit), required: rs}
}

// loadCandidates lists the user's rooms a list may show: joined, invited
// and knocked rooms, bans, rooms the user was kicked from, and rooms they
// left themselves since the connection's last answer (or that it last sent
// as joined), so that it learns of the leave.
func (b *slidingBuild) loadCandidates(ctx context.Context) error {
	s := b.s
	b.ignored = s.ignoredUsers(b.user)
	list := s.rooms.RoomList(b.user, b.now.Pos)
	b.candidates = list[:0] // filtered in place
	for _, e := range list {
		switch e.Membership {
		case spec.Join, spec.Knock, spec.Ban:
		case spec.Invite:
			if ev := s.rooms.CurrentState(e.ID, spec.MRoomMember, string(b.user)); ev != nil && b.ignored[ev.Sender()] {
				continue
			}
		default:
			ev := s.rooms.CurrentState(e.ID, spec.MRoomMember, string(b.user))
			kicked := ev != nil && ev.Sender() != b.user
			newly := b.prev != nil && e.MemberPos > b.prev.token.Pos
			wasJoined := b.prev != nil && b.prev.rooms[e.ID].membership != "" && b.prev.rooms[e.ID].membership != spec.Leave
			if !kicked && !newly && !wasJoined {
				continue
			}
		}
		b.candidates = append(b.candidates, e)
	}
	return nil
}

// byRecency orders rooms newest activity first, then by room ID.
func byRecency(a, c candidate) int {
	if a.Bump != c.Bump {
		return cmp.Compare(c.Bump, a.Bump)
	}
	return cmp.Compare(a.ID, c.ID)
}

// firstByRecency sorts the first k rooms by recency, leaving the rest in
// no order: a window of 20 on 500 rooms needs the newest 20 only.
func firstByRecency(list []candidate, k int) {
	if k <= 0 {
		return
	}
	if k*8 >= len(list) {
		slices.SortFunc(list, byRecency)
		return
	}
	// Keep the k newest in list[:k], sorted, looking at each room once.
	top := list[:k]
	slices.SortFunc(top, byRecency)
	for i := k; i < len(list); i++ {
		c := list[i]
		if byRecency(c, top[k-1]) >= 0 {
			continue
		}
		j, _ := slices.BinarySearchFunc(top, c, byRecency)
		list[i] = top[k-1]
		copy(top[j+1:], top[j:k-1])
		top[j] = c
	}
}

// subscribable is the candidate for a subscribed room: only the user's own
// rooms (joined, invited, left) can be subscribed to.
func (b *slidingBuild) subscribable(id spec.RoomID) (candidate, bool) {
	if i := slices.IndexFunc(b.candidates, func(c candidate) bool { return c.ID == id }); i >= 0 {
		return b.candidates[i], true
	}
	pos, m := b.s.rooms.MembershipEvent(b.user, id)
	if m == "" || pos > b.now.Pos || b.s.rooms.Forgotten(b.user, id) {
		return candidate{}, false
	}
	bump := pos
	if m == spec.Leave || m == spec.Ban {
		bump = b.s.rooms.BumpStamp(id, pos)
	}
	return candidate{ID: id, Membership: m, MemberPos: pos, Bump: bump}, true
}

// filter keeps the candidates a list's filters let through.
func (b *slidingBuild) filter(ctx context.Context, f listFilters) ([]candidate, error) {
	s := b.s
	if f.isDM != nil && b.dm == nil {
		if err := b.loadDMs(ctx); err != nil {
			return nil, err
		}
	}
	var inSpaces map[spec.RoomID]bool
	if f.spaces != nil {
		inSpaces = map[spec.RoomID]bool{}
		for _, sp := range f.spaces {
			if s.rooms.Membership(b.user, sp) != spec.Join {
				continue // a space the user is not in says nothing
			}
			for _, child := range s.rooms.SpaceChildren(sp) {
				inSpaces[child] = true
			}
		}
	}
	if !f.any() {
		return b.candidates, nil // every room; their order is free to change
	}
	out := make([]candidate, 0, len(b.candidates))
	for _, c := range b.candidates {
		if f.isInvite != nil && (c.Membership == spec.Invite) != *f.isInvite {
			continue
		}
		if f.isDM != nil && b.dm[c.ID] != *f.isDM {
			continue
		}
		if f.isEncrypted != nil && (s.rooms.CurrentState(c.ID, spec.MRoomEncryption, "") != nil) != *f.isEncrypted {
			continue
		}
		if f.hasRoomTypes || len(f.notRoomTypes) > 0 {
			typ := s.rooms.RoomType(c.ID)
			if f.hasRoomTypes && !typeIn(typ, f.roomTypes) || typeIn(typ, f.notRoomTypes) {
				continue
			}
		}
		if inSpaces != nil && !inSpaces[c.ID] {
			continue
		}
		if len(f.tags) > 0 || len(f.notTags) > 0 {
			ok, err := b.tagsMatch(ctx, c.ID, f)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// any reports whether the list filters at all. (A spaces filter naming
// only spaces the user is not in lets nothing through: it filters.)
func (f listFilters) any() bool {
	return f.isInvite != nil || f.isDM != nil || f.isEncrypted != nil || f.hasRoomTypes || len(f.notRoomTypes) > 0 ||
		f.spaces != nil || len(f.tags) > 0 || len(f.notTags) > 0
}

// typeIn reports whether a room type is in a filter's list, where null
// stands for a room without a type.
func typeIn(typ string, list []*string) bool {
	for _, t := range list {
		if t == nil && typ == "" || t != nil && *t == typ {
			return true
		}
	}
	return false
}

// loadDMs reads the user's direct chats: m.direct, and invites marked
// is_direct.
func (b *slidingBuild) loadDMs(ctx context.Context) error {
	b.dm = map[spec.RoomID]bool{}
	if b.s.acct != nil {
		content, ok, err := b.s.acct.GetAccountData(ctx, b.user, "", "m.direct")
		if err != nil {
			return err
		}
		if ok {
			var direct map[string][]string
			if json.Unmarshal(content, &direct) == nil {
				for _, ids := range direct {
					for _, id := range ids {
						b.dm[spec.RoomID(id)] = true
					}
				}
			}
		}
	}
	for _, c := range b.candidates {
		if c.Membership == spec.Invite {
			if ev := b.s.rooms.CurrentState(c.ID, spec.MRoomMember, string(b.user)); ev != nil && ev.Content().Get("is_direct").Bool() {
				b.dm[c.ID] = true
			}
		}
	}
	return nil
}

// tagsMatch tests a room's m.tag against a list's tags and not_tags.
func (b *slidingBuild) tagsMatch(ctx context.Context, id spec.RoomID, f listFilters) (bool, error) {
	var tags struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if b.s.acct != nil {
		content, ok, err := b.s.acct.GetAccountData(ctx, b.user, id, "m.tag")
		if err != nil {
			return false, err
		}
		if ok {
			_ = json.Unmarshal(content, &tags)
		}
	}
	for _, t := range f.notTags {
		if _, ok := tags.Tags[t]; ok {
			return false, nil
		}
	}
	if len(f.tags) == 0 {
		return true, nil
	}
	for _, t := range f.tags {
		if _, ok := tags.Tags[t]; ok {
			return true, nil
		}
	}
	return false, nil
}

func sortStrings(s []string) { sort.Strings(s) }
