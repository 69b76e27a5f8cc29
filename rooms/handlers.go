package rooms

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

type handlers struct {
	s       *Service
	delayer Delayer // routes.go
}

func roomIDParam(c *gin.Context) (spec.RoomID, bool) {
	id, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		c.Error(spec.InvalidParam("room ID: %v", err))
		return "", false
	}
	return id, true
}

func eventIDParam(c *gin.Context) (spec.EventID, bool) {
	id, err := spec.ParseEventID(c.Param("eventId"))
	if err != nil {
		c.Error(spec.InvalidParam("event ID: %v", err))
		return "", false
	}
	return id, true
}

func clientState(pdus []*events.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		out[i] = events.ClientEvent(p, nil)
	}
	return out
}

// POST /_matrix/client/v3/createRoom
func (h *handlers) createRoom(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	var req CreateRequest
	if err := api.ReadJSON(c, &req); err != nil {
		c.Error(err)
		return
	}
	id, _, err := h.s.CreateRoom(c.Request.Context(), dev.UserID, req)
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"room_id": id})
}

type membershipBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func (h *handlers) readMembershipBody(c *gin.Context, needUser bool) (*membershipBody, spec.UserID, bool) {
	var body membershipBody
	if err := api.ReadJSON(c, &body); err != nil {
		c.Error(err)
		return nil, "", false
	}
	if !needUser {
		return &body, "", true
	}
	if body.UserID == "" {
		c.Error(spec.MissingParam("user_id is required"))
		return nil, "", false
	}
	u, err := spec.ParseUserID(body.UserID)
	if err != nil {
		c.Error(spec.InvalidParam("user_id: %v", err))
		return nil, "", false
	}
	return &body, u, true
}

// resolveRoom turns a room ID or alias into a room ID.
func (h *handlers) resolveRoom(c *gin.Context, idOrAlias string) (spec.RoomID, bool) {
	if strings.HasPrefix(idOrAlias, "#") {
		alias, err := spec.ParseRoomAlias(idOrAlias)
		if err != nil {
			c.Error(spec.InvalidParam("room alias: %v", err))
			return "", false
		}
		id, err := h.s.ResolveAlias(c.Request.Context(), alias)
		if err != nil {
			c.Error(err)
			return "", false
		}
		if id == "" {
			c.Error(spec.NotFound("room alias %s is not known", alias))
			return "", false
		}
		return id, true
	}
	id, err := spec.ParseRoomID(idOrAlias)
	if err != nil {
		c.Error(spec.InvalidParam("room ID or alias: %v", err))
		return "", false
	}
	return id, true
}

// doJoin joins the caller to the room. Keys of the body other than reason
// are kept in the member event's content, as clients that set a per-room
// profile at join expect (the body's schema leaves them open).
func (h *handlers) doJoin(c *gin.Context, id spec.RoomID) {
	dev := auth.DeviceFrom(c)
	var body map[string]json.RawMessage
	if err := api.ReadJSON(c, &body); err != nil {
		c.Error(err)
		return
	}
	var reason string
	if raw, ok := body["reason"]; ok {
		if err := json.Unmarshal(raw, &reason); err != nil {
			c.Error(spec.BadJSON("reason must be a string"))
			return
		}
		delete(body, "reason")
	}
	ch := MembershipChange{Target: dev.UserID, Membership: spec.Join, Reason: reason, Content: body}
	if _, err := h.s.Change(c.Request.Context(), Sender{User: dev.UserID, Device: dev.DeviceID}, id, ch); err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"room_id": id})
}

// POST /_matrix/client/v3/join/{roomIdOrAlias}
func (h *handlers) joinByIDOrAlias(c *gin.Context) {
	if id, ok := h.resolveRoom(c, c.Param("roomIdOrAlias")); ok {
		h.doJoin(c, id)
	}
}

// POST /_matrix/client/v3/rooms/{roomId}/join
func (h *handlers) join(c *gin.Context) {
	if id, ok := roomIDParam(c); ok {
		h.doJoin(c, id)
	}
}

// POST /_matrix/client/v3/knock/{roomIdOrAlias}
func (h *handlers) knock(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	id, ok := h.resolveRoom(c, c.Param("roomIdOrAlias"))
	if !ok {
		return
	}
	body, _, ok := h.readMembershipBody(c, false)
	if !ok {
		return
	}
	if _, err := h.s.ChangeMembership(c.Request.Context(), Sender{User: dev.UserID}, id, dev.UserID, spec.Knock, body.Reason, false); err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"room_id": id})
}

// membershipOf returns a handler that changes another user's membership
// (invite, kick, ban, unban) or the caller's own (leave).
func (h *handlers) membershipOf(membership string, needUser, unban bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		dev := auth.DeviceFrom(c)
		id, ok := roomIDParam(c)
		if !ok {
			return
		}
		body, target, ok := h.readMembershipBody(c, needUser)
		if !ok {
			return
		}
		if !needUser {
			target = dev.UserID
		}
		if _, err := h.s.ChangeMembership(c.Request.Context(), Sender{User: dev.UserID}, id, target, membership, body.Reason, unban); err != nil {
			c.Error(err)
			return
		}
		c.JSON(http.StatusOK, gin.H{})
	}
}

// POST /_matrix/client/v3/rooms/{roomId}/invite
func (h *handlers) invite(c *gin.Context) { h.membershipOf(spec.Invite, true, false)(c) }

// POST /_matrix/client/v3/rooms/{roomId}/leave
func (h *handlers) leave(c *gin.Context) { h.membershipOf(spec.Leave, false, false)(c) }

// POST /_matrix/client/v3/rooms/{roomId}/kick
func (h *handlers) kick(c *gin.Context) { h.membershipOf(spec.Leave, true, false)(c) }

// POST /_matrix/client/v3/rooms/{roomId}/ban
func (h *handlers) ban(c *gin.Context) { h.membershipOf(spec.Ban, true, false)(c) }

// POST /_matrix/client/v3/rooms/{roomId}/unban
func (h *handlers) unban(c *gin.Context) { h.membershipOf(spec.Leave, true, true)(c) }

// POST /_matrix/client/v3/rooms/{roomId}/forget
func (h *handlers) forget(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	if err := h.s.Forget(c.Request.Context(), dev.UserID, id); err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// GET /_matrix/client/v3/joined_rooms
func (h *handlers) joinedRooms(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"joined_rooms": h.s.JoinedRooms(auth.DeviceFrom(c).UserID)})
}

// validEventType refuses empty and overlong event types, and types that
// are not UTF-8 or hold control characters (a NUL can make a client show
// "m.room.message\x00" as the m.room.message the policy refuses).
func validEventType(t string) error {
	if t == "" || len(t) > 255 {
		return spec.InvalidParam("the event type must be 1 to 255 bytes")
	}
	if !utf8.ValidString(t) {
		return spec.InvalidParam("the event type must be UTF-8")
	}
	for _, r := range t {
		if unicode.IsControl(r) {
			return spec.InvalidParam("the event type must not contain control characters")
		}
	}
	return nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
func (h *handlers) send(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	typ := c.Param("eventType")
	if err := validEventType(typ); err != nil {
		c.Error(err)
		return
	}
	from := Sender{User: dev.UserID, Device: dev.DeviceID}
	if h.delayed(c, DelayedSend{From: from, Room: id, Type: typ, TxnID: c.Param("txnId")}) {
		return
	}
	content, err := events.ReadContent(c.Request.Body, maxPDUSize)
	if err != nil {
		c.Error(err)
		return
	}
	eid, err := h.s.Send(c.Request.Context(), from, id, typ, nil, c.Param("txnId"), content)
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"event_id": eid})
}

func stateKeyParam(c *gin.Context) string {
	return strings.TrimPrefix(c.Param("stateKey"), "/")
}

// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
func (h *handlers) putState(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	typ := c.Param("eventType")
	if err := validEventType(typ); err != nil {
		c.Error(err)
		return
	}
	key := stateKeyParam(c)
	from := Sender{User: dev.UserID, Device: dev.DeviceID}
	if h.delayed(c, DelayedSend{From: from, Room: id, Type: typ, StateKey: &key}) {
		return
	}
	content, err := events.ReadContent(c.Request.Body, maxPDUSize)
	if err != nil {
		c.Error(err)
		return
	}
	eid, err := h.s.Send(c.Request.Context(), from, id, typ, &key, "", content)
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"event_id": eid})
}

// delayed hands a request with MSC4140's delay parameter to the scheduler
// and reports whether it did.
func (h *handlers) delayed(c *gin.Context, d DelayedSend) bool {
	delay, ok := c.GetQuery(DelayParam)
	if !ok || h.delayer == nil {
		return false
	}
	d.Delay = delay
	h.delayer.ServeDelayed(c, d)
	return true
}

// GET /_matrix/client/v3/rooms/{roomId}/state
func (h *handlers) getAllState(c *gin.Context) {
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	state, err := h.s.State(c.Request.Context(), auth.DeviceFrom(c).UserID, id)
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, clientState(state))
}

// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}:
// the content, or with format=event the whole event.
func (h *handlers) getState(c *gin.Context) {
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	ev, err := h.s.StateEvent(c.Request.Context(), auth.DeviceFrom(c).UserID, id, c.Param("eventType"), stateKeyParam(c))
	if err != nil {
		c.Error(err)
		return
	}
	if c.Query("format") == "event" {
		c.Data(http.StatusOK, "application/json", events.ClientEvent(ev, nil))
		return
	}
	c.Data(http.StatusOK, "application/json", []byte(ev.Content().Raw))
}

// GET /_matrix/client/v3/rooms/{roomId}/members
func (h *handlers) members(c *gin.Context) {
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	var at *Token
	if s := c.Query("at"); s != "" {
		t, err := ParseToken(s)
		if err != nil {
			c.Error(err)
			return
		}
		at = &t
	}
	for _, q := range []string{"membership", "not_membership"} {
		switch c.Query(q) {
		case "", spec.Join, spec.Invite, spec.Leave, spec.Ban, spec.Knock:
		default:
			c.Error(spec.InvalidParam("%s must be join, invite, leave, ban or knock", q))
			return
		}
	}
	evs, err := h.s.Members(c.Request.Context(), auth.DeviceFrom(c).UserID, id, at, c.Query("membership"), c.Query("not_membership"))
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"chunk": clientState(evs)})
}

// GET /_matrix/client/v3/rooms/{roomId}/joined_members
func (h *handlers) joinedMembers(c *gin.Context) {
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	evs, err := h.s.JoinedMembersOf(auth.DeviceFrom(c).UserID, id)
	if err != nil {
		c.Error(err)
		return
	}
	// Both keys are always there, null when the member event has none, as
	// clients (and the suite) read them; a string otherwise, as the spec's
	// RoomMember gives.
	joined := map[string]any{}
	for _, ev := range evs {
		sk, _ := ev.StateKey()
		joined[sk] = map[string]any{
			"display_name": stringOrNil(ev.Content().Get("displayname")),
			"avatar_url":   stringOrNil(ev.Content().Get("avatar_url")),
		}
	}
	c.JSON(http.StatusOK, gin.H{"joined": joined})
}

// stringOrNil is a JSON string's value, or nil for anything else.
func stringOrNil(v gjson.Result) any {
	if v.Type == gjson.String {
		return v.String()
	}
	return nil
}

// parseFilterParam reads the filter query parameter (a JSON RoomEventFilter).
func parseFilterParam(c *gin.Context) (*RoomEventFilter, bool) {
	raw := c.Query("filter")
	if raw == "" {
		return nil, true
	}
	var f RoomEventFilter
	if err := api.DecodeJSON([]byte(raw), &f); err != nil {
		c.Error(spec.InvalidParam("filter: %v", err))
		return nil, false
	}
	if err := f.Validate(); err != nil {
		c.Error(err)
		return nil, false
	}
	return &f, true
}

func limitParam(c *gin.Context, def int) (int, bool) {
	s := c.Query("limit")
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		c.Error(spec.InvalidParam("limit must be a non-negative integer"))
		return 0, false
	}
	return n, true
}

// GET /_matrix/client/v3/rooms/{roomId}/messages. Whether the user may read
// the room is answered first: a room they may not read (never joined,
// forgotten) is a 403 whatever the parameters, then dir (required) and the
// rest are checked.
func (h *handlers) messages(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	if _, err := h.s.readAccess(dev.UserID, id); err != nil {
		c.Error(err)
		return
	}
	var from, to *Token
	for _, p := range []struct {
		name string
		dst  **Token
	}{{"from", &from}, {"to", &to}} {
		if s := c.Query(p.name); s != "" {
			t, err := ParseToken(s)
			if err != nil {
				c.Error(err)
				return
			}
			*p.dst = &t
		}
	}
	dir := c.Query("dir")
	if dir != "b" && dir != "f" {
		c.Error(spec.InvalidParam("dir must be b or f"))
		return
	}
	limit, ok := limitParam(c, 10)
	if !ok {
		return
	}
	f, ok := parseFilterParam(c)
	if !ok {
		return
	}
	page, err := h.s.Messages(c.Request.Context(), dev.UserID, id, from, to, dir == "b", limit, f)
	if err != nil {
		c.Error(err)
		return
	}
	chunk, ok := h.renderFor(c, page.Events) // with bundled aggregations (relations.go)
	if !ok {
		return
	}
	c.Data(http.StatusOK, "application/json", page.appendJSON(make([]byte, 0, rawSize(chunk)+64), chunk))
}

// appendJSON writes a /messages answer by hand, as sync/encode.go does:
// the events are already canonical JSON, and encoding/json would scan each
// of them again.
func (p *Page) appendJSON(b []byte, chunk []json.RawMessage) []byte {
	b = append(b, `{"chunk":`...)
	b = appendRawList(b, chunk)
	b = append(b, `,"start":"`...)
	b = append(b, p.Start.String()...)
	if p.HasEnd {
		b = append(b, `","end":"`...)
		b = append(b, p.End.String()...)
	}
	b = append(b, '"')
	if len(p.State) > 0 {
		b = append(b, `,"state":`...)
		b = appendRawList(b, clientState(p.State))
	}
	return append(b, '}')
}

// rawSize is the length of a JSON array of the values, to size a buffer.
func rawSize(list []json.RawMessage) int {
	n := len(list) + 2
	for _, v := range list {
		n += len(v)
	}
	return n
}

// appendRawList appends a JSON array of JSON values.
func appendRawList(b []byte, list []json.RawMessage) []byte {
	b = append(b, '[')
	for i, v := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, v...)
	}
	return append(b, ']')
}

// GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
func (h *handlers) context(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	eid, ok := eventIDParam(c)
	if !ok {
		return
	}
	limit, ok := limitParam(c, 10)
	if !ok {
		return
	}
	f, ok := parseFilterParam(c)
	if !ok {
		return
	}
	res, err := h.s.Context(c.Request.Context(), dev.UserID, id, eid, limit, f)
	if err != nil {
		c.Error(err)
		return
	}
	// With bundled aggregations (relations.go).
	all := append(append([]*Event{res.Event}, res.Before...), res.After...)
	rendered, ok := h.renderFor(c, all)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, gin.H{
		"event":         rendered[0],
		"events_before": rendered[1 : 1+len(res.Before)],
		"events_after":  rendered[1+len(res.Before):],
		"start":         res.Start.String(),
		"end":           res.End.String(),
		"state":         clientState(res.State),
	})
}

// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
func (h *handlers) event(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	eid, ok := eventIDParam(c)
	if !ok {
		return
	}
	ev, err := h.s.Event(c.Request.Context(), dev.UserID, id, eid)
	if err != nil {
		c.Error(err)
		return
	}
	rendered, ok := h.renderFor(c, []*Event{ev}) // with bundled aggregations (relations.go)
	if !ok {
		return
	}
	c.Data(http.StatusOK, "application/json", rendered[0])
}

// PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
func (h *handlers) redact(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	id, ok := roomIDParam(c)
	if !ok {
		return
	}
	eid, ok := eventIDParam(c)
	if !ok {
		return
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		c.Error(err)
		return
	}
	rid, err := h.s.Redact(c.Request.Context(), Sender{User: dev.UserID, Device: dev.DeviceID}, id, eid, c.Param("txnId"), body.Reason)
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"event_id": rid})
}
